//! Flow sync in forwarder mode. The master streams its flow changes to the backup: every turn,
//! the changes its workers queued go out as batches (`netfw_core::ha::sync`), UDP from the DIP
//! to the peer's DIP on the RS-facing NIC. A backup adopts what it receives into every
//! worker's forwarder, so after a takeover an established flow keeps its real server.
//!
//! A backup that hears a master asks it once for its whole table; every worker of the master
//! walks its share a slice per turn (`TableWalk`), and the master ends with `TableDone`. So a
//! box that returns learns the flows made while it was away, and with `preempt` it takes the
//! master role back only once it has them (or after `TABLE_WAIT_MS`).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr};

use director_messages::status::FlowSync;
use netfw_core::forward::Forwarder;
use netfw_core::ha::sync::{self, Batch, Kind, SyncEntry, MAX_ENTRIES, MAX_PAYLOAD, SYNC_PORT};
use netfw_core::time::Millis;

/// Flow changes waiting to go to the peer; more are counted as unsent.
pub const OUTBOX: usize = 65_536;
/// Changes a worker passes to the first one per turn (the channel's size).
pub const CHANGES_QUEUE: usize = 16_384;
/// A returning box with `preempt` waits this long at most for the master's table.
pub const TABLE_WAIT_MS: u64 = 10_000;
/// How often a backup asks again for a table that did not come.
const ASK_AGAIN_MS: u64 = 1_000;
/// Slots of a worker's flow table walked per turn while the peer takes the table.
const WALK_SLOTS: usize = 2_048;
/// Sync datagrams received per turn, at most (the rest wait).
pub const INBOX: usize = 256;
/// A sequence number not above the last one taken is taken anyway after this much silence
/// (the peer restarted with its clock set back).
const REPLAY_MEMORY_MS: u64 = 60_000;

/// Is this Ethernet frame a UDP datagram to `dip`'s sync port?
pub fn is_sync(frame: &[u8], dip: Ipv4Addr) -> bool {
    let Some(&vihl) = frame.get(14) else { return false };
    let ihl = usize::from(vihl & 0x0f) * 4;
    frame.get(12..14) == Some(&[0x08, 0x00])
        && vihl >> 4 == 4
        && frame.get(23) == Some(&17)
        && frame.get(30..34) == Some(&dip.octets())
        && frame.get(14 + ihl + 2..14 + ihl + 4) == Some(&SYNC_PORT.to_be_bytes())
}

/// The walk of every worker's flow table that the peer's `TableRequest` starts.
#[derive(Debug)]
pub struct TableWalk {
    /// Bumped to start a walk.
    generation: AtomicU64,
    /// Per worker, the last generation it finished.
    done: Vec<AtomicU64>,
}

impl TableWalk {
    /// A walk over `workers` workers' tables (none under way).
    pub fn new(workers: usize) -> TableWalk {
        TableWalk { generation: AtomicU64::new(0), done: (0..workers).map(|_| AtomicU64::new(0)).collect() }
    }

    fn start(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn finished(&self, generation: u64) -> bool {
        self.done.iter().all(|d| d.load(Ordering::Acquire) >= generation)
    }
}

/// One worker's place in the walk.
#[derive(Debug, Default)]
pub struct Cursor {
    generation: u64,
    next: Option<usize>,
}

impl Cursor {
    /// If a walk is under way that worker `index` has not finished, visit the next slice of
    /// `fwd`'s table; its flows go to `f`.
    pub fn step(&mut self, walk: &TableWalk, index: usize, fwd: &Forwarder, f: impl FnMut(SyncEntry)) {
        let g = walk.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.next = Some(0);
        }
        let Some(from) = self.next else { return };
        self.next = fwd.walk_flows(from, WALK_SLOTS, f);
        if self.next.is_none() {
            if let Some(d) = walk.done.get(index) {
                d.store(g, Ordering::Release);
            }
        }
    }
}

/// The first worker's end of the sync with the peer.
#[derive(Debug)]
pub struct Link {
    key: Vec<u8>,
    dip: Ipv4Addr,
    peer: Ipv4Addr,
    outbox: VecDeque<SyncEntry>,
    inbox: Vec<Vec<u8>>,
    sequence: u64,
    /// The last sequence number taken from the peer, and when.
    last_in: Option<(u64, Millis)>,
    /// Serving the peer's request for the table: the walk's generation, when it started.
    table_out: Option<(u64, Millis)>,
    /// Asked the peer for its table (when first, when last) and flows taken since.
    asked: Option<(Millis, Millis, u64)>,
    /// The peer's table came (`TableDone`) since asking.
    got_table: bool,
    /// A `TableRequest` is to be sent.
    want_table: bool,
    stats: FlowSync,
}

impl Link {
    /// The link from `dip` to `peer`, signed with `key`; `sequence` starts above every number
    /// sent before.
    pub fn new(key: Vec<u8>, dip: Ipv4Addr, peer: Ipv4Addr, sequence: u64) -> Link {
        Link {
            key,
            dip,
            peer,
            outbox: VecDeque::with_capacity(OUTBOX),
            inbox: Vec::with_capacity(INBOX),
            sequence,
            last_in: None,
            table_out: None,
            asked: None,
            got_table: false,
            want_table: false,
            stats: FlowSync::default(),
        }
    }

    /// New settings (a reload): the pair's key and addresses.
    pub fn configure(&mut self, key: &[u8], dip: Ipv4Addr, peer: Ipv4Addr) {
        if key != self.key.as_slice() || dip != self.dip || peer != self.peer {
            self.key = key.to_vec();
            self.dip = dip;
            self.peer = peer;
            self.last_in = None;
        }
    }

    /// Queue a flow change for the peer (a full queue counts it as unsent).
    pub fn queue(&mut self, e: SyncEntry) {
        if self.outbox.len() < OUTBOX {
            self.outbox.push_back(e);
        } else {
            self.stats.flows_unsent += 1;
        }
    }

    /// Take a received sync frame (`is_sync`) for the next `exchange`; false if too many wait.
    pub fn take(&mut self, frame: &[u8]) -> bool {
        if self.inbox.len() >= INBOX {
            return false;
        }
        self.inbox.push(frame.to_vec());
        true
    }

    /// A backup heard the master: ask for its table (once per master; again if the master was
    /// silent and came back, `forget_table`).
    pub fn want_table(&mut self, now: Millis) {
        if self.asked.is_none() {
            self.asked = Some((now, now, 0));
            self.got_table = false;
            self.want_table = true;
        }
    }

    /// The master went away (or this box became master): the next master's table is asked for.
    pub fn forget_table(&mut self) {
        self.asked = None;
        self.got_table = false;
        self.want_table = false;
    }

    /// Still waiting for the master's table (asked, not come, and not for too long)?
    pub fn waiting_for_table(&self, now: Millis) -> bool {
        self.asked.is_some_and(|(first, _, _)| !self.got_table && now.since(first) < TABLE_WAIT_MS)
    }

    /// Received datagrams: a backup adopts flows (`adopt`, each one once), a master starts
    /// walking its table for a request.
    pub fn receive(&mut self, serving: bool, walk: &TableWalk, now: Millis, mut adopt: impl FnMut(SyncEntry)) {
        let inbox = std::mem::take(&mut self.inbox);
        for frame in &inbox {
            self.receive_one(frame, serving, walk, now, &mut adopt);
        }
        self.inbox = inbox;
        self.inbox.clear();
    }

    fn ignore(&mut self) {
        self.stats.batches_ignored += 1;
    }

    fn receive_one(&mut self, frame: &[u8], serving: bool, walk: &TableWalk, now: Millis, adopt: &mut impl FnMut(SyncEntry)) {
        let parsed = EthernetFrame::new_checked(frame).ok().and_then(|e| {
            Ipv4Packet::new_checked(e.payload())
                .ok()
                .filter(|p| p.verify_checksum())
                .map(|p| (p.src_addr(), p.dst_addr(), p.payload().to_vec()))
        });
        let Some((src, dst, l4)) = parsed else { return self.ignore() };
        let Ok(udp) = UdpPacket::new_checked(&l4[..]) else { return self.ignore() };
        if src != self.peer || dst != self.dip || !udp.verify_checksum(&src.into(), &dst.into()) {
            return self.ignore();
        }
        let Ok(batch) = Batch::parse(src, dst, udp.payload(), &self.key) else { return self.ignore() };
        let fresh = self.last_in.is_none_or(|(seq, at)| batch.sequence() > seq || now.since(at) > REPLAY_MEMORY_MS);
        if !fresh {
            return self.ignore();
        }
        self.last_in = Some((batch.sequence(), now));
        match batch.kind() {
            Kind::Flows if !serving => {
                for e in batch.entries() {
                    adopt(e);
                    self.stats.flows_received += 1;
                    if let Some((_, _, n)) = self.asked.as_mut() {
                        *n += 1;
                    }
                }
            }
            // Both master for a while (split brain): each keeps its own flows.
            Kind::Flows => {}
            Kind::TableRequest if serving => {
                eprintln!("netfw: HA: the peer asked for the flow table: sending it");
                self.table_out = Some((walk.start(), now));
            }
            Kind::TableRequest => {}
            Kind::TableDone => {
                if let Some((first, _, n)) = self.asked.filter(|_| !self.got_table) {
                    self.got_table = true;
                    let line = format!("took the master's flow table: {n} flows in {} ms", now.since(first));
                    eprintln!("netfw: HA: {line}");
                    self.stats.last_table = Some(line);
                }
            }
        }
    }

    /// Send what is due to the peer through `send` (the RS-facing NIC): as master the queued
    /// changes and the end of a table walk, as backup a request for the table. `peer_mac`:
    /// the peer's MAC, once it answered ARP; `mac`: this NIC's.
    pub fn send(
        &mut self,
        serving: bool,
        walk: &TableWalk,
        peer_mac: Option<[u8; 6]>,
        mac: [u8; 6],
        now: Millis,
        mut send: impl FnMut(&[u8]) -> bool,
    ) {
        if !serving {
            // A backup's queue holds nothing worth sending (it became backup: the master sends).
            self.stats.flows_unsent += self.outbox.len() as u64;
            self.outbox.clear();
            self.table_out = None;
        }
        let Some(peer_mac) = peer_mac else {
            return;
        };
        if !serving && self.want_table {
            if self.emit(Kind::TableRequest, 0, peer_mac, mac, &mut send) {
                self.want_table = false;
                if let Some(a) = self.asked.as_mut() {
                    a.1 = now;
                }
            }
            return;
        }
        if !serving {
            if let Some((_, last, _)) = self.asked {
                if self.waiting_for_table(now) && now.since(last) >= ASK_AGAIN_MS {
                    self.want_table = true;
                }
            }
            return;
        }
        while !self.outbox.is_empty() {
            let n = self.outbox.len().min(MAX_ENTRIES);
            if !self.emit(Kind::Flows, n, peer_mac, mac, &mut send) {
                return;
            }
            self.stats.flows_sent += n as u64;
            self.outbox.drain(..n);
        }
        if let Some((g, started)) = self.table_out {
            if walk.finished(g) && self.emit(Kind::TableDone, 0, peer_mac, mac, &mut send) {
                eprintln!("netfw: HA: sent the flow table to the peer in {} ms", now.since(started));
                self.stats.last_table = Some(format!("sent the flow table to the peer in {} ms", now.since(started)));
                self.table_out = None;
            }
        }
    }

    /// Write and send one datagram of `kind` with the first `n` queued entries.
    fn emit(&mut self, kind: Kind, n: usize, peer_mac: [u8; 6], mac: [u8; 6], send: &mut impl FnMut(&[u8]) -> bool) -> bool {
        const L2_L4: usize = 14 + 20 + 8;
        let mut frame = [0u8; L2_L4 + MAX_PAYLOAD];
        let entries = &self.outbox.make_contiguous()[..n];
        let seq = self.sequence + 1;
        let Some(len) = sync::emit(&mut frame[L2_L4..], self.dip, self.peer, kind, seq, entries, &self.key) else { return false };
        let caps = ChecksumCapabilities::default();
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(EthernetAddress(peer_mac));
        eth.set_src_addr(EthernetAddress(mac));
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let ip = Ipv4Repr { src_addr: self.dip, dst_addr: self.peer, next_header: IpProtocol::Udp, payload_len: 8 + len, hop_limit: 64 };
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut frame[14..34]), &caps);
        let udp = UdpRepr { src_port: SYNC_PORT, dst_port: SYNC_PORT };
        udp.emit(&mut UdpPacket::new_unchecked(&mut frame[34..L2_L4 + len]), &self.dip.into(), &self.peer.into(), len, |_| {}, &caps);
        if send(&frame[..L2_L4 + len]) {
            self.sequence = seq;
            true
        } else {
            false
        }
    }

    /// The status's view.
    pub fn stats(&self) -> FlowSync {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use netfw_core::flow::{FlowKey, FlowState};

    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0xd0, 2];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0xd1, 2];
    const KEY: &[u8] = b"a shared secret";

    fn entry(port: u16) -> SyncEntry {
        let key = FlowKey::new(Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(203, 0, 113, 10), port, 80, 6);
        SyncEntry { key, rip: Ipv4Addr::new(198, 18, 0, 11), state: FlowState::Established }
    }

    /// What `link` sends now (as master if `serving`).
    fn sent(link: &mut Link, serving: bool, walk: &TableWalk, now: Millis) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let (peer, mac) = if link.dip == A { (MAC_B, MAC_A) } else { (MAC_A, MAC_B) };
        link.send(serving, walk, Some(peer), mac, now, |f| {
            out.push(f.to_vec());
            true
        });
        out
    }

    /// Deliver `frames` to `link`; the flows it adopts.
    fn deliver(link: &mut Link, frames: &[Vec<u8>], serving: bool, walk: &TableWalk, now: Millis) -> Vec<SyncEntry> {
        let mut got = Vec::new();
        for f in frames {
            assert!(is_sync(f, link.dip), "a sync datagram to {}", link.dip);
            assert!(link.take(f));
        }
        link.receive(serving, walk, now, |e| got.push(e));
        got
    }

    #[test]
    fn the_master_streams_changes_in_batches_and_only_a_signed_fresh_batch_is_taken() {
        let walk = TableWalk::new(1);
        let mut master = Link::new(KEY.to_vec(), A, B, 100);
        let mut backup = Link::new(KEY.to_vec(), B, A, 100);
        for p in 0..100 {
            master.queue(entry(1000 + p));
        }
        let frames = sent(&mut master, true, &walk, Millis(0));
        assert_eq!(frames.len(), 2, "100 changes: a batch of 64 and one of 36");
        let got = deliver(&mut backup, &frames, false, &walk, Millis(1));
        assert_eq!(got, (0..100).map(|p| entry(1000 + p)).collect::<Vec<_>>());
        // The same datagrams again: replays.
        assert!(deliver(&mut backup, &frames, false, &walk, Millis(2)).is_empty());
        assert_eq!(backup.stats().batches_ignored, 2);
        // Another key, or from a third address: ignored.
        let mut stray = Link::new(b"another secret!".to_vec(), A, B, 10_000);
        stray.queue(entry(7));
        let f = sent(&mut stray, true, &walk, Millis(3));
        assert!(deliver(&mut backup, &f, false, &walk, Millis(3)).is_empty());
        assert_eq!(backup.stats().batches_ignored, 3);
        // A box that is master itself keeps its own flows (split brain).
        master.queue(entry(9));
        let f = sent(&mut master, true, &walk, Millis(4));
        assert!(deliver(&mut backup, &f, true, &walk, Millis(4)).is_empty());
        // A backup sends no changes.
        backup.queue(entry(10));
        assert!(sent(&mut backup, false, &walk, Millis(5)).is_empty());
        assert_eq!(master.stats().flows_sent, 101);
        assert_eq!(backup.stats().flows_received, 100);
    }

    #[test]
    fn a_returning_box_asks_for_the_table_and_waits_for_it() {
        let walk = TableWalk::new(1);
        let mut master = Link::new(KEY.to_vec(), A, B, 100);
        let mut back = Link::new(KEY.to_vec(), B, A, 100);
        back.want_table(Millis(0));
        assert!(back.waiting_for_table(Millis(0)));
        let ask = sent(&mut back, false, &walk, Millis(0));
        assert_eq!(ask.len(), 1, "one TableRequest");
        deliver(&mut master, &ask, true, &walk, Millis(1));
        // The walk is under way until every worker finished it: no TableDone yet.
        master.queue(entry(1));
        let f = sent(&mut master, true, &walk, Millis(2));
        assert_eq!(f.len(), 1);
        walk.done[0].store(walk.generation.load(Ordering::Acquire), Ordering::Release);
        let done = sent(&mut master, true, &walk, Millis(3));
        assert_eq!(done.len(), 1, "TableDone");
        assert_eq!(deliver(&mut back, &f, false, &walk, Millis(4)).len(), 1);
        assert!(back.waiting_for_table(Millis(4)));
        deliver(&mut back, &done, false, &walk, Millis(5));
        assert!(!back.waiting_for_table(Millis(5)));
        assert!(back.stats().last_table.unwrap().contains("1 flows"));
        // A table that never comes is waited for only so long, asked for again meanwhile.
        let mut patient = Link::new(KEY.to_vec(), B, A, 100);
        patient.want_table(Millis(0));
        assert_eq!(sent(&mut patient, false, &walk, Millis(0)).len(), 1);
        assert!(sent(&mut patient, false, &walk, Millis(500)).is_empty());
        sent(&mut patient, false, &walk, Millis(1000));
        assert_eq!(sent(&mut patient, false, &walk, Millis(1001)).len(), 1, "asked again");
        assert!(!patient.waiting_for_table(Millis(TABLE_WAIT_MS)));
    }
}
