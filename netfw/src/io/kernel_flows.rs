//! Established flows forwarded in the kernel: netfw's side of the program `programs::forward`
//! (in XDP with AF_XDP, in tc with AF_PACKET).
//!
//! netfw decides every flow (scheduling, state, persistence) as before; once a flow is
//! confirmed (TCP established, UDP that saw a second packet) the core asks for it to be added
//! to the kernel's flow map, and from then on its plain packets are forwarded by the
//! program on the VIP-facing NIC without a copy to netfw, a socket buffer or a syscall. netfw
//! still sees its SYN, FIN and RST (the core then asks for the entry to go), and every packet
//! of a flow that is not there.
//!
//! What stays netfw's, through memory both share (the backends array, mapped here):
//! - the backends: each entry says where a backend's frames go (MACs, out NIC) and whether it
//!   may be used now; rewritten when a real server's MAC changes or a reload moves them;
//! - the counters: the program counts frames and bytes per backend, and each turn netfw takes
//!   them into its own (status shows one set of figures; `forwarded_in_kernel` says how many);
//! - idleness: the program stamps each flow with the time of its last packet, which the sweep
//!   reads when a flow it has not seen lately would expire.
//!
//! One system call per flow added or removed, none per packet.
//!
//! A packet capture sees only what netfw handles: while one runs, the flows its filter
//! matches are held (`capture::kernel_hold`): their entries name no backend (`HELD`, the real
//! one kept beside it), the program misses, and their frames come to netfw, which has the
//! flow and forwards it. Flows added meanwhile that match are added held; the capture's end
//! puts the backends back (a walk over the map when it starts and when it ends).
//!
//! Workers (one per group of receive queues) each have a handle on the same maps
//! (`KernelFlows::worker`): each adds and removes its own flows and takes counts; only the
//! first writes the backends array (its forwarder announces and learns every MAC).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use netfw_core::flow::{FlowKey, Idle};
use netfw_core::forward::{Forwarder, Installed, KernelOp};
use netfw_core::time::Millis;

use super::bpf::{BpfError, Map, MmapArray};
use super::programs::{
    ForwardMaps, BACKEND, BACKEND_BYTES, BACKEND_DST_MAC, BACKEND_FRAMES, BACKEND_SRC_MAC, BACKEND_VALID, FLOW_KEY, FLOW_SEEN, FLOW_VALUE,
};
use super::tc_path::TcPath;
use crate::capture::{self, Filter};

/// A held flow's backend index (no backend has it: the program leaves its frames to netfw);
/// the real index waits in the value's spare word (`FLOW_HELD_BACKEND`).
const HELD: u32 = u32::MAX;
/// Where in a flow value a held flow's real backend index waits.
const FLOW_HELD_BACKEND: usize = 4;

/// At most this many flows are forwarded in the kernel at once (the rest by netfw).
pub const KERNEL_FLOWS: u32 = 65536;
/// How often the kernel's counts are taken into the core's (a walk over the backends).
pub const COUNT_EVERY_MS: u64 = 100;
/// Backends the array holds (every backend a valid config can have).
#[allow(clippy::cast_possible_truncation, reason = "64 × 1024")]
pub const BACKENDS: u32 = (director_config::document::MAX_SERVICES * director_config::document::MAX_REAL_SERVERS) as u32;

/// The kernel's flow map and backends array.
#[derive(Debug)]
pub struct KernelFlows {
    flows: Arc<Map>,
    backends: Arc<MmapArray>,
    /// This handle writes the backends array (the first worker's).
    writer: bool,
    /// Where forwarded frames leave (the RS-facing NIC).
    out_ifindex: u32,
    /// The core's `targets_version` the array was last written for.
    version: Option<u32>,
    /// Entries written so far (the rest were never valid).
    written: usize,
    /// When `sync` next takes the kernel's counts.
    next_count: Millis,
    /// CLOCK_MONOTONIC, in ns, at netfw's time zero.
    zero_ns: u64,
    capacity: u32,
    /// The tc programs using the maps, when it is tc that forwards (taken off when dropped).
    tc: Option<TcPath>,
    /// The capture filter whose flows the writer holds now (the others add held flows as
    /// `capture::kernel_hold` says at the time).
    holding: Option<Filter>,
}

/// CLOCK_MONOTONIC in ns (the clock the forwarding program stamps flows with).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn key_bytes(k: &FlowKey) -> [u8; FLOW_KEY] {
    let mut b = [0u8; FLOW_KEY];
    b[0..4].copy_from_slice(&k.client().octets());
    b[4..8].copy_from_slice(&k.vip().octets());
    b[8..10].copy_from_slice(&k.cport().to_be_bytes());
    b[10..12].copy_from_slice(&k.vport().to_be_bytes());
    b[12] = k.proto();
    b
}

impl KernelFlows {
    /// The maps for up to `flows` kernel flows (at most `KERNEL_FLOWS`), forwarding out of
    /// `out_ifindex`; `zero_ns` is CLOCK_MONOTONIC at netfw's time zero.
    #[allow(clippy::cast_possible_truncation, reason = "entry sizes of 16 and 40 bytes")]
    pub fn new(flows: u32, out_ifindex: u32, zero_ns: u64) -> Result<KernelFlows, BpfError> {
        let capacity = flows.clamp(1, KERNEL_FLOWS);
        let flows = Map::hash(FLOW_KEY as u32, FLOW_VALUE as u32, capacity, "netfw_flows")?;
        let backends = MmapArray::new(Map::mmapable_array(BACKEND as u32, BACKENDS, "netfw_backends")?, BACKENDS)?;
        Ok(KernelFlows {
            flows: Arc::new(flows),
            backends: Arc::new(backends),
            writer: true,
            out_ifindex,
            version: None,
            written: 0,
            next_count: Millis(0),
            zero_ns,
            capacity,
            tc: None,
            holding: None,
        })
    }

    /// A handle on the same maps for another worker: it adds and removes its forwarder's
    /// flows and takes counts, and leaves the backends array to this one.
    pub fn worker(&self) -> KernelFlows {
        KernelFlows {
            flows: Arc::clone(&self.flows),
            backends: Arc::clone(&self.backends),
            writer: false,
            out_ifindex: self.out_ifindex,
            version: None,
            written: 0,
            next_count: Millis(0),
            zero_ns: self.zero_ns,
            capacity: self.capacity,
            tc: None,
            holding: None,
        }
    }

    /// The maps, for the VIP-facing NIC's programs.
    pub fn maps(&self, mac: [u8; 6]) -> ForwardMaps {
        ForwardMaps { flows: self.flows.fd(), backends: self.backends.map().fd(), mac }
    }

    /// Keep the tc path that forwards with these maps (it goes when they go).
    pub fn keep(&mut self, path: TcPath) {
        self.tc = Some(path);
    }

    /// Where the kernel forwards: in XDP, or in tc.
    pub fn hook(&self) -> &'static str {
        if self.tc.is_some() {
            "tc"
        } else {
            "XDP"
        }
    }

    /// How many flows the kernel can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// After a batch: apply the core's flow-map changes, rewrite the backends if they changed,
    /// and every `COUNT_EVERY_MS` take the kernel's counts into the core (status takes them
    /// first too: `take_counts`).
    pub fn sync(&mut self, fwd: &mut Forwarder, now: Millis) {
        let flows = &self.flows;
        let backends = self.backends.len();
        let mut refused = Vec::new();
        // A capture's filter, asked once per batch that adds flows.
        let mut hold: Option<Option<Filter>> = None;
        fwd.drain_kernel_ops(|op| match op {
            KernelOp::Add(k, b) => {
                let held =
                    hold.get_or_insert_with(capture::kernel_hold).is_some_and(|f| f.holds(k.client(), k.vip(), k.cport(), k.vport()));
                let mut v = [0u8; FLOW_VALUE];
                v[0..4].copy_from_slice(&if held { HELD } else { u32::from(b) }.to_ne_bytes());
                v[FLOW_HELD_BACKEND..FLOW_HELD_BACKEND + 4].copy_from_slice(&u32::from(b).to_ne_bytes());
                v[FLOW_SEEN..FLOW_SEEN + 8].copy_from_slice(&monotonic_ns().to_ne_bytes());
                if usize::from(b) >= backends || flows.update(&key_bytes(&k), &v).is_err() {
                    refused.push(k);
                }
            }
            KernelOp::Remove(k) => {
                let _ = flows.delete(&key_bytes(&k));
            }
        });
        for k in &refused {
            fwd.kernel_refused(k);
        }
        if now >= self.next_count {
            self.next_count = now.plus(COUNT_EVERY_MS);
            self.take_counts(fwd);
            if self.writer {
                self.hold_for_capture(capture::kernel_hold());
            }
        }
        if self.writer && self.version != Some(fwd.targets_version()) {
            self.write_backends(fwd);
        }
    }

    /// A capture began, ended or changed: hold the flows in the map that `filter` matches and
    /// put back the ones held for a capture that is over (one walk over the map). An entry
    /// that goes meanwhile (its flow ended) is not brought back.
    fn hold_for_capture(&mut self, filter: Option<Filter>) {
        if filter == self.holding {
            return;
        }
        self.holding = filter;
        let (mut key, mut prev) = ([0u8; FLOW_KEY], None::<[u8; FLOW_KEY]>);
        let mut v = [0u8; FLOW_VALUE];
        // A key deleted under the walk restarts it from the first: bounded all the same.
        for _ in 0..2 * self.capacity {
            match self.flows.next_key(prev.as_ref().map(|p| &p[..]), &mut key) {
                Ok(true) => {}
                _ => break,
            }
            prev = Some(key);
            if !matches!(self.flows.lookup(&key, &mut v), Ok(true)) {
                continue;
            }
            let word = |v: &[u8; FLOW_VALUE], at: usize| u32::from_ne_bytes([v[at], v[at + 1], v[at + 2], v[at + 3]]);
            let (backend, spare) = (word(&v, 0), word(&v, FLOW_HELD_BACKEND));
            let ip = |at: usize| std::net::Ipv4Addr::new(key[at], key[at + 1], key[at + 2], key[at + 3]);
            let port = |at: usize| u16::from_be_bytes([key[at], key[at + 1]]);
            let wanted = filter.is_some_and(|f| f.holds(ip(0), ip(4), port(8), port(10)));
            let now_held = backend == HELD;
            if wanted == now_held {
                continue;
            }
            let (to, keep) = if wanted { (HELD, backend) } else { (spare, spare) };
            v[0..4].copy_from_slice(&to.to_ne_bytes());
            v[FLOW_HELD_BACKEND..FLOW_HELD_BACKEND + 4].copy_from_slice(&keep.to_ne_bytes());
            let _ = self.flows.update_existing(&key, &v);
        }
    }

    /// The kernel's frame and byte counts since the last call, into the core's backends.
    pub fn take_counts(&self, fwd: &mut Forwarder) {
        for i in 0..fwd.backends().len().min(self.backends.len()) {
            let (Some(f), Some(b)) = (self.backends.u64_at(i, BACKEND_FRAMES), self.backends.u64_at(i, BACKEND_BYTES)) else {
                continue;
            };
            if f.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let frames = f.swap(0, Ordering::Relaxed);
            let bytes = b.swap(0, Ordering::Relaxed);
            fwd.add_kernel_traffic(u16::try_from(i).unwrap_or(u16::MAX), frames, bytes);
        }
    }

    /// Write each backend's entry: not valid while it is rewritten, valid again if its real
    /// server's MAC is known and it is up.
    fn write_backends(&mut self, fwd: &Forwarder) {
        let src = fwd.rs_mac();
        let n = fwd.backends().len().min(self.backends.len());
        for i in 0..n.max(self.written) {
            let Some(w0) = self.backends.u64_at(i, BACKEND_VALID) else { continue };
            // A server that is down is no valid target: its flows' frames come to netfw, which moves them.
            let mac = fwd.backends().get(i).filter(|b| b.up).and_then(|b| b.mac);
            w0.store(self.first_word(false), Ordering::Release);
            let Some(mac) = mac else { continue };
            let mut w1 = [0u8; 8];
            let d = BACKEND_DST_MAC % 8;
            w1[d..d + 6].copy_from_slice(&mac);
            let mut w2 = [0u8; 8];
            let r = BACKEND_SRC_MAC % 8;
            w2[r..r + 6].copy_from_slice(&src);
            let words = (self.backends.u64_at(i, BACKEND_DST_MAC - d), self.backends.u64_at(i, BACKEND_SRC_MAC - r));
            if let (Some(a), Some(b)) = words {
                a.store(u64::from_le_bytes(w1), Ordering::Relaxed);
                b.store(u64::from_le_bytes(w2), Ordering::Relaxed);
            }
            w0.store(self.first_word(true), Ordering::Release);
        }
        self.version = Some(fwd.targets_version());
        self.written = n;
    }

    /// A backend entry's first word: the valid flag (u32 at `BACKEND_VALID`) and the out
    /// NIC's ifindex (the next u32), as one store so the program never sees half of it.
    fn first_word(&self, valid: bool) -> u64 {
        (u64::from(self.out_ifindex) << 32) | u64::from(valid)
    }

    /// Before a reload is installed: no backend is valid (the kernel leaves every frame to
    /// netfw until `after_install`), and the counts so far go to the backends they belong to.
    pub fn before_install(&mut self, fwd: &mut Forwarder) {
        for i in 0..self.written {
            if let Some(w0) = self.backends.u64_at(i, BACKEND_VALID) {
                w0.store(self.first_word(false), Ordering::Release);
            }
        }
        self.take_counts(fwd);
    }

    /// After a reload: empty the flow map if the backends moved (its entries name them by
    /// index), and write the new backends.
    pub fn after_install(&mut self, fwd: &mut Forwarder, done: &Installed) -> Result<(), BpfError> {
        let cleared = if done.kernel_reset { self.flows.clear().map(|_| ()) } else { Ok(()) };
        self.take_counts(fwd);
        self.write_backends(fwd);
        cleared
    }

    /// What the kernel knows of a flow that would expire: when it last forwarded a packet of it.
    pub fn idle(&self, key: &FlowKey) -> Idle {
        let mut v = [0u8; FLOW_VALUE];
        match self.flows.lookup(&key_bytes(key), &mut v) {
            Ok(true) => {
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&v[FLOW_SEEN..FLOW_SEEN + 8]);
                let seen = u64::from_ne_bytes(stamp);
                Idle::SeenAt(Millis(seen.saturating_sub(self.zero_ns) / 1_000_000))
            }
            Ok(false) => Idle::Gone,
            Err(_) => Idle::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_flow_key_is_laid_out_as_the_program_reads_the_packet() {
        let k = FlowKey::new(Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(203, 0, 113, 10), 40000, 80, 6);
        assert_eq!(key_bytes(&k), [198, 51, 100, 7, 203, 0, 113, 10, 0x9c, 0x40, 0, 80, 6, 0, 0, 0]);
    }
}
