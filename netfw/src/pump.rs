//! One turn of the forwarder's loop: receive a batch from each NIC, decide each frame (core),
//! queue forwarded frames on the RS-facing NIC and control frames to the smoltcp stack of the
//! NIC they came in on, release held fragments, run the timers and the control stacks, flush.
//!
//! A running packet capture (`capture`) sees each frame received and each frame sent, at the
//! cost of one relaxed load and a branch per frame while none runs.
//!
//! Every frame that does not go out is counted with its reason: a full transmit ring
//! (`tx_ring_full`) whoever sent it (the fast path, ARP, gratuitous ARP, the control stack,
//! released fragments), a frame the kernel dropped at flush (`tx_error`), a flush that failed
//! otherwise (`tx_flush_failed`), and receive-ring statistics that could not be read
//! (`ring_stats_unreadable`).

use netfw_core::counters::{DropReason, Event};
use netfw_core::flow::Idle;
use netfw_core::forward::{Forwarder, Side, Verdict};
use netfw_core::time::Millis;
use netfw_core::wire::{csum, segment, ETH_HDR_LEN};

use crate::capture;
use crate::flow_sync::is_sync;
use crate::health::{is_probe_reply, Probes};
use crate::io::kernel_flows::KernelFlows;
use crate::io::{Port, Receive, Transmit};
use crate::pair::{is_advert, Pair};
use crate::stack::{ControlStack, CONTROL_MTU};

/// Batches taken from one NIC per turn, so the others and transmit get their turn.
pub const RX_BUDGET: usize = 64;

/// A dedicated NIC in the loop: its port, the control stack that owns its addresses, and its
/// role.
#[derive(Debug)]
pub struct Nic<P> {
    /// The NIC's I/O.
    pub port: P,
    /// Its control stack.
    pub stack: ControlStack,
    /// VIP-facing or RS-facing (one-arm: one NIC, `Side::Vip`).
    pub side: Side,
    /// The NIC's MTU: larger frames it would send are split first.
    pub mtu: usize,
}

/// A NIC's bit in a capture's mask.
fn tap_bit(side: Side) -> u8 {
    if side == Side::Rs {
        capture::RS_NIC
    } else {
        capture::VIP_NIC
    }
}

/// Hand `frame` to a running capture of the NIC with bit `bit`.
#[inline]
fn tap(bit: u8, frame: &[u8]) {
    if capture::tapping(bit) {
        capture::offer(bit, frame);
    }
}

/// Send a forwarded frame out of a NIC with `mtu` (capture bit `bit`): whole if it fits,
/// else (a merged TCP frame) split into the segments its sender would have sent. Whatever
/// does not go out is counted.
fn send_forwarded<T: Transmit>(tx: &mut T, mtu: usize, bit: u8, frame: &[u8], fwd: &mut Forwarder) {
    tap(bit, frame);
    if frame.len() <= mtu + ETH_HDR_LEN {
        if !tx.send(frame) {
            fwd.count_drop(DropReason::TxRingFull);
        }
        return;
    }
    match segment::split_tcp(frame, mtu, |s| tx.send(s)) {
        Ok(split) => {
            fwd.count_events(Event::FramesSplit, 1);
            fwd.count_drops(DropReason::TxRingFull, split.unsent as u64);
        }
        Err(_) => fwd.count_drop(DropReason::Oversize),
    }
}

/// The NIC at `i` and, if there is one, the other NIC (where forwarded frames go when `i` is
/// the VIP-facing NIC of a two-arm layout).
fn split<P>(nics: &mut [Nic<P>], i: usize) -> Option<(&mut Nic<P>, Option<&mut Nic<P>>)> {
    let (_, b) = nics.split_at_mut(i);
    let (me, rest) = b.split_first_mut()?;
    let other = if me.side == Side::Vip { rest.first_mut() } else { None };
    Some((me, other))
}

/// What a turn serves besides forwarding: the health probes and the HA pair's election (or
/// where their frames go, on a worker that does not run them).
#[derive(Debug)]
pub struct Services<'a> {
    /// Health probes' replies, and the probes.
    pub probes: &'a mut Probes,
    /// The pair's adverts, and its election.
    pub pair: &'a mut Pair,
}

/// One turn of the loop at time `now`; `kernel`: the kernel's flow map, when netfw's program
/// (XDP or tc) forwards established flows; `svc`: where health probes' replies and the pair's
/// adverts go, and the probes and the election themselves if this loop runs them.
pub fn turn<P: Port>(nics: &mut [Nic<P>], fwd: &mut Forwarder, mut kernel: Option<&mut KernelFlows>, svc: Services<'_>, now: Millis) {
    let Services { probes, pair } = svc;
    let dip = fwd.spec().dip;
    for i in 0..nics.len() {
        let Some((me, other)) = split(nics, i) else { continue };
        let side = me.side;
        let own_bit = tap_bit(side);
        let own_mtu = me.mtu;
        let stack = &mut me.stack;
        let (rx, own_tx) = me.port.halves();
        let mut other_tx = other.map(|o| (o.mtu, o.port.halves().1));
        // Forwarded frames leave by the other NIC (two-arm, VIP side) or this one.
        let room = match other_tx.as_mut() {
            Some((_, tx)) => tx.room(),
            None => own_tx.room(),
        };
        rx.receive(RX_BUDGET, room, |frame| {
            tap(own_bit, frame.data);
            if frame.vlan_tagged {
                fwd.count_drop(DropReason::VlanTagged);
                return;
            }
            if frame.truncated {
                fwd.count_drop(DropReason::Oversize);
                return;
            }
            // A merged frame gets its checksums when it is split.
            if frame.csum_not_ready && frame.data.len() <= own_mtu + ETH_HDR_LEN {
                csum::complete_l4_checksum(frame.data);
            }
            match fwd.process(side, frame.data, now) {
                Verdict::Forward => match other_tx.as_mut() {
                    Some((mtu, tx)) => send_forwarded(*tx, *mtu, capture::RS_NIC, frame.data, fwd),
                    None => send_forwarded(&mut *own_tx, own_mtu, own_bit, frame.data, fwd),
                },
                Verdict::Control if frame.data.len() > CONTROL_MTU => fwd.count_drop(DropReason::Oversize),
                Verdict::Control if is_probe_reply(frame.data, dip) => {
                    if !probes.take(frame.data) {
                        fwd.count_drop(DropReason::ControlQueueFull);
                    }
                }
                Verdict::Control if (side == Side::Vip && is_advert(frame.data)) || is_sync(frame.data, dip) => {
                    if !pair.take(frame.data, now) {
                        fwd.count_drop(DropReason::ControlQueueFull);
                    }
                }
                Verdict::Control => {
                    if !stack.push_rx(frame.data) {
                        fwd.count_drop(DropReason::ControlQueueFull);
                    }
                }
                Verdict::Held | Verdict::Drop(_) => {}
            }
        });
    }

    let rs = nics.len().saturating_sub(1);
    if let Some(n) = nics.get_mut(rs) {
        let bit = tap_bit(n.side);
        let tx = n.port.halves().1;
        fwd.drain_released(|f| {
            tap(bit, f);
            tx.send(f)
        });
    }
    if let Some(k) = kernel.as_deref_mut() {
        k.sync(fwd, now);
    }
    fwd.poll_timers_with(
        now,
        |side, f| {
            let i = if side == Side::Rs { rs } else { 0 };
            nics.get_mut(i).is_some_and(|n| {
                tap(tap_bit(n.side), f);
                n.port.halves().1.send(f)
            })
        },
        |key| kernel.as_deref().map_or(Idle::Gone, |k| k.idle(key)),
    );
    if let Some(n) = nics.get_mut(rs) {
        let bit = tap_bit(n.side);
        let tx = n.port.halves().1;
        let mut unsent = 0;
        probes.poll(now, fwd, |f| {
            tap(bit, f);
            let sent = tx.send(f);
            unsent += u64::from(!sent);
            sent
        });
        fwd.count_drops(DropReason::TxRingFull, unsent);
    }
    if let Some(n) = nics.first_mut() {
        let tx = n.port.halves().1;
        let mut unsent = 0;
        pair.poll(now, |f| {
            tap(capture::VIP_NIC, f);
            let sent = tx.send(f);
            unsent += u64::from(!sent);
            sent
        });
        fwd.count_drops(DropReason::TxRingFull, unsent);
    }
    if let Some(n) = nics.get_mut(rs) {
        let bit = tap_bit(n.side);
        let tx = n.port.halves().1;
        pair.sync(now, fwd, |f| {
            tap(bit, f);
            tx.send(f)
        });
    }
    for n in nics.iter_mut() {
        let bit = tap_bit(n.side);
        let tx = n.port.halves().1;
        let mut unsent = 0;
        n.stack.poll(now, |f| {
            tap(bit, f);
            if !tx.send(f) {
                unsent += 1;
            }
        });
        fwd.count_drops(DropReason::TxRingFull, unsent);
        let flushed = tx.flush();
        fwd.count_drops(DropReason::TxError, flushed.dropped);
        if flushed.failed.is_some() {
            fwd.count_events(Event::TxFlushFailed, 1);
        }
    }
}

/// The kernel's receive-ring drop counters (one syscall per NIC: call it once a second).
pub fn kernel_drops<P: Port>(nics: &mut [Nic<P>], fwd: &mut Forwarder) {
    for n in nics.iter_mut() {
        match n.port.kernel_drops() {
            Ok(d) => {
                fwd.count_drops(DropReason::RxRingOverflow, d.ring_overflow);
                fwd.count_drops(DropReason::Oversize, d.oversize);
            }
            Err(_) => fwd.count_events(Event::RingStatsUnreadable, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::os::fd::RawFd;

    use netfw_core::model::{DataPlaneSpec, Protocol};

    use super::*;
    use crate::io::{Flushed, KernelDrops, RxFrame};
    use crate::stack::Roles;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0xd0, 1];
    use crate::testing::DIP;

    /// A NIC in memory: frames to receive, a transmit ring of `room` frames, and what its
    /// flush and statistics report.
    #[derive(Default)]
    struct Fake {
        rx: FakeRx,
        tx: FakeTx,
        stats: Option<u64>,
    }
    #[derive(Default)]
    struct FakeRx(VecDeque<Vec<u8>>);
    #[derive(Default)]
    struct FakeTx {
        room: usize,
        sent: Vec<Vec<u8>>,
        flush_drops: u64,
        flush_fails: bool,
    }
    impl Receive for FakeRx {
        fn receive(&mut self, _: usize, _: usize, mut f: impl FnMut(RxFrame<'_>)) -> usize {
            let n = self.0.len();
            while let Some(mut fr) = self.0.pop_front() {
                f(RxFrame { data: &mut fr, vlan_tagged: false, csum_not_ready: false, truncated: false });
            }
            n
        }
    }
    impl Transmit for FakeTx {
        fn send(&mut self, frame: &[u8]) -> bool {
            if self.sent.len() >= self.room {
                return false;
            }
            self.sent.push(frame.to_vec());
            true
        }
        fn flush(&mut self) -> Flushed {
            Flushed {
                dropped: std::mem::take(&mut self.flush_drops),
                failed: self.flush_fails.then(|| std::io::Error::from_raw_os_error(libc::ENETDOWN)),
            }
        }
    }
    impl Port for Fake {
        type Rx = FakeRx;
        type Tx = FakeTx;
        fn halves(&mut self) -> (&mut FakeRx, &mut FakeTx) {
            (&mut self.rx, &mut self.tx)
        }
        fn fds(&self) -> Vec<RawFd> {
            Vec::new()
        }
        fn kernel_drops(&mut self) -> std::io::Result<KernelDrops> {
            self.stats
                .map(|ring_overflow| KernelDrops { ring_overflow, oversize: 1 })
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EBADF))
        }
    }

    fn spec() -> DataPlaneSpec {
        crate::testing::one_service(64)
    }

    /// No probes, no pair.
    fn off() -> Services<'static> {
        let pair = Pair::for_workers(1, &spec(), &crate::pair::Serving::default(), Millis(0)).pop().unwrap();
        Services { probes: Box::leak(Box::new(Probes::Off)), pair: Box::leak(Box::new(pair)) }
    }

    /// A one-arm box whose NIC's transmit ring holds `room` frames.
    fn one_arm(room: usize) -> (Vec<Nic<Fake>>, Forwarder) {
        let s = spec();
        let fwd = Forwarder::new(s.clone(), MAC, MAC, true, 1, Millis(0));
        let stack = ControlStack::new(MAC, Roles { vips: true, dip: true }, &s, 1, Millis(0));
        let port = Fake { tx: FakeTx { room, ..FakeTx::default() }, stats: Some(0), ..Fake::default() };
        (vec![Nic { port, stack, side: Side::Vip, mtu: 1500 }], fwd)
    }

    /// "who has the DIP" from a real server.
    fn arp_for_dip() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 1, 1, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1, 2, 0, 0, 0, 1, 1, 198, 18, 0, 11]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&DIP.octets());
        f
    }

    #[test]
    fn every_frame_that_cannot_be_sent_is_counted() {
        // Room for nothing: the ARP request for the real server and the announcements of the
        // VIP (timers), and the control stack's ARP reply, all find the ring full.
        let (mut nics, mut fwd) = one_arm(0);
        nics[0].port.rx.0.push_back(arp_for_dip());
        turn(&mut nics, &mut fwd, None, off(), Millis(0));
        let c = fwd.counters();
        assert_eq!(c.events(Event::ToControl), 1, "the ARP request went to the control stack");
        assert_eq!(c.drops(DropReason::TxRingFull), 3, "ARP request + gratuitous ARP + the stack's ARP reply");
        assert!(nics[0].port.tx.sent.is_empty());

        // With room, the same frames go out and nothing more is counted.
        let (mut nics, mut fwd) = one_arm(16);
        nics[0].port.rx.0.push_back(arp_for_dip());
        turn(&mut nics, &mut fwd, None, off(), Millis(0));
        assert_eq!(fwd.counters().drops(DropReason::TxRingFull), 0);
        assert_eq!(nics[0].port.tx.sent.len(), 3);
    }

    #[test]
    fn flush_drops_failures_and_unreadable_statistics_are_counted() {
        let (mut nics, mut fwd) = one_arm(16);
        nics[0].port.tx.flush_drops = 2;
        nics[0].port.tx.flush_fails = true;
        turn(&mut nics, &mut fwd, None, off(), Millis(0));
        assert_eq!(fwd.counters().drops(DropReason::TxError), 2);
        assert_eq!(fwd.counters().events(Event::TxFlushFailed), 1);
        nics[0].port.stats = Some(5);
        kernel_drops(&mut nics, &mut fwd);
        assert_eq!(fwd.counters().drops(DropReason::RxRingOverflow), 5);
        assert_eq!(fwd.counters().drops(DropReason::Oversize), 1);
        nics[0].port.stats = None;
        kernel_drops(&mut nics, &mut fwd);
        assert_eq!(fwd.counters().events(Event::RingStatsUnreadable), 1);
        let status = crate::status::collect(&fwd, "eth1", "eth1", Millis(0));
        assert!(status.warnings.iter().any(|w| w.contains("statistics could not be read")), "{:?}", status.warnings);
    }

    /// A client's TCP frame to the VIP with `payload` bytes of data.
    fn client_tcp(flags: u8, payload: usize) -> Vec<u8> {
        let mut f = MAC.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0xfe, 0x08, 0x00]);
        let total = u16::try_from(40 + payload).unwrap();
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 51, 100, 2, 198, 18, 0, 10];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!u16::try_from(sum).unwrap()).to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20 + payload];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = flags;
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn a_merged_frame_goes_out_as_mtu_sized_segments_and_what_cannot_be_split_is_counted() {
        let (mut nics, mut fwd) = one_arm(64);
        // The real server answers ARP; a client opens a connection, then a merged frame of
        // 4000 bytes of its data arrives (GRO, or a veth peer's TSO).
        let mut reply =
            vec![2, 0, 0, 0, 0xd0, 1, 2, 0, 0, 0, 1, 1, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2, 2, 0, 0, 0, 1, 1, 198, 18, 0, 11];
        reply.extend_from_slice(&MAC);
        reply.extend_from_slice(&DIP.octets());
        nics[0].port.rx.0.extend([reply, client_tcp(0x02, 0), client_tcp(0x10, 4000)]);
        turn(&mut nics, &mut fwd, None, off(), Millis(0));
        let out: Vec<usize> = nics[0].port.tx.sent.iter().filter(|f| f[12..14] == [0x08, 0x00]).map(Vec::len).collect();
        assert_eq!(out, vec![54, 1514, 1514, 14 + 40 + 1080], "the SYN, then the merged frame as three segments");
        assert_eq!(fwd.counters().events(Event::FramesSplit), 1);
        // A merged frame that is not TCP cannot be split: counted, not sent cut.
        let mut udp = client_tcp(0x10, 4000);
        udp[14 + 9] = 17;
        udp[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let mut sum: u32 = udp[14..34].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let c = !u16::try_from(sum).unwrap();
        udp[24..26].copy_from_slice(&c.to_be_bytes());
        let mut s = spec();
        s.services[0].proto = Protocol::Udp;
        fwd.apply(s, Millis(1)).unwrap();
        nics[0].port.rx.0.push_back(udp);
        turn(&mut nics, &mut fwd, None, off(), Millis(1));
        assert_eq!(fwd.counters().drops(DropReason::Oversize), 1);
    }
}
