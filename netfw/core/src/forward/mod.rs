//! The forwarder: one decision per received frame, no allocation, no syscall.
//!
//! ```text
//! frame ─► classify ─(VIP:port TCP/UDP)─► flow lookup ─hit─► rewrite MACs ─► Forward
//!              │                              └miss─► persistence / scheduler ─► new flow ─┘
//!              ├─(ICMP error about a flow)─► that flow's real server
//!              ├─(later fragment)─► the real server of its first fragment (held until known)
//!              └─(ARP, ICMP echo, anything for the DIP, VRRP adverts)─► Control (the smoltcp stack;
//!                 adverts to the HA driver)
//! ```
//!
//! In an HA pair (`spec.ha`) the VIPs live on the virtual MAC, and only while this box is the
//! master (`set_serving`): the backup drops what reaches it for a VIP (`standby`), never
//! passes an ARP request for a VIP to its stack, and sends no gratuitous ARP.
//!
//! - `plan`: a new configuration is built beside the running one and swapped in.
//! - `frag`: fragments follow their datagram's first fragment.
//!
//! Frames the caller could not send (a full transmit ring) are counted here too: every callback
//! that hands out a frame returns whether it went out.

mod frag;
mod index;
mod load;
pub mod persist;
mod plan;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

pub use frag::{FRAG_GROUPS, FRAG_HOLD_BYTES, FRAG_HOLD_MS, FRAG_HOLD_SLOTS, FRAG_TIMEOUT_MS};
pub use load::SharedLoad;
pub use plan::{Installed, Plan, PlanError};

use crate::counters::{Counters, DropReason, Event};
use crate::flow::{FlowKey, FlowState, FlowTable, FlowVal, Hit, Idle};
use crate::model::{DataPlaneSpec, Protocol, SchedKind};
use crate::neigh::{NeighId, Neighbours};
use crate::sched::{Candidate, Scheduler};
use crate::time::Millis;
use crate::wire::fast::Packet;
use crate::wire::frame::{self, ArpOp, Frame, Ipv4Info, L4Info, PROTO_ICMP};
use crate::wire::{arp, Mac};

/// Which dedicated NIC a frame came in on. In one-arm layouts both roles are one NIC and
/// every frame is `Side::Vip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Side {
    /// The VIP-facing NIC (towards the router).
    Vip,
    /// The RS-facing NIC (towards the real servers; owns the DIP).
    Rs,
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// MACs rewritten in place: send it out of the RS-facing NIC.
    Forward,
    /// Hand it to the control stack of the NIC it came in on.
    Control,
    /// Held (an early fragment); it comes out later through `drain_released`.
    Held,
    /// Dropped and counted.
    Drop(DropReason),
}

/// A change to the kernel's flow map (netfw's XDP or tc program forwards the established flows
/// in it without netfw), for the I/O layer to apply after the batch that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelOp {
    /// Forward this flow to this backend in the kernel from now on.
    Add(FlowKey, u16),
    /// Stop forwarding it there (it is closing, or gone).
    Remove(FlowKey),
}

/// Kernel flow-map changes queued between two drains (more wait for the next packet or sweep).
pub const KERNEL_OPS: usize = 1024;

/// Flow changes queued for the HA peer between two `take_sync` calls (more in one turn are
/// counted as `sync_dropped`; consistent hashing covers those flows).
pub const SYNC_QUEUE: usize = 4096;

/// Persistence templates per box (client-IP affinity entries).
pub const PERSIST_CAPACITY: usize = persist::CAPACITY;
/// Slots of the flow table examined per `poll_timers` call.
const SWEEP_BUDGET: usize = 4096;
/// How many gratuitous ARP rounds follow a config change (1 s apart).
const GARP_ROUNDS: u8 = 3;
/// ARP observations kept for the other forwarders between two `take_arp_seen` calls (more in
/// one turn, an ARP flood, are not passed on: the next refresh teaches the MAC again).
pub const ARP_RELAY: usize = 256;

/// An ARP frame a forwarder saw, for forwarders that share its NICs but not its receive
/// queues (`enable_arp_relay`, `learn_arp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpSeen {
    /// The NIC it came in on.
    pub side: Side,
    /// Request or reply.
    pub op: ArpOp,
    /// Its sender's MAC.
    pub mac: Mac,
    /// Its sender's address.
    pub ip: Ipv4Addr,
}

/// One (service, real server) pair: what a flow points at.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Index of the service.
    pub service: u16,
    /// Real server address.
    pub rip: Ipv4Addr,
    /// Weight (0 = drain).
    pub weight: u16,
    /// Its entry in the neighbour table (always the entry of `rip`).
    pub neigh: NeighId,
    /// That entry's MAC, kept here for the fast path (the last one it answered with). Set
    /// with `set_mac`, which keeps `header` with it.
    pub mac: Option<Mac>,
    /// The Ethernet addresses a frame to it gets (its MAC, then the RS-facing NIC's), written
    /// in one copy.
    pub(crate) header: [u8; 12],
    /// Its health check's verdict (true when the service has no check): a server that is down
    /// gets no new flows, and its flows move on their next packet (`set_health`).
    pub up: bool,
    /// The service's sorry server: gets new flows only while no real server is usable.
    pub sorry: bool,
    /// Frames may go to it: its MAC is known and it is up (kept with `set_mac`/`set_health`,
    /// so the fast path reads one byte).
    pub(crate) sendable: bool,
    /// Established flows.
    pub active: u32,
    /// Other live flows.
    pub inactive: u32,
    /// Flows ever scheduled here.
    pub conns: u64,
    /// Frames forwarded.
    pub packets: u64,
    /// Bytes forwarded (IP length).
    pub bytes: u64,
}

impl Backend {
    /// Its real server's MAC (or none yet), frames leaving from `src`.
    pub(crate) fn set_mac(&mut self, mac: Option<Mac>, src: Mac) {
        self.mac = mac;
        self.sendable = mac.is_some() && self.up;
        let dst = mac.unwrap_or_default();
        self.header = [dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], src[0], src[1], src[2], src[3], src[4], src[5]];
    }
}

/// A virtual service.
#[derive(Debug)]
pub struct Service {
    /// VIP.
    pub vip: Ipv4Addr,
    /// Protocol.
    pub proto: Protocol,
    /// Port, or the first of its range (0: every port).
    pub port: u16,
    /// The last port it covers.
    pub port_last: u16,
    /// Scheduler kind.
    pub sched_kind: SchedKind,
    /// Persistence timeout (0 = none).
    pub persistence_s: u32,
    /// Whose persistence templates it uses: its own, or its group's.
    pub scope: persist::Scope,
    /// Its real servers' backends (indices into `Forwarder::backends`).
    pub backends: Vec<u16>,
    /// Its sorry server's backend, if it has one.
    pub sorry: Option<u16>,
    sched: Scheduler,
    cands: Vec<Candidate>,
    /// Maglev over the service's servers, for flows without a table entry.
    stateless: crate::sched::MaglevTable,
    /// Flows ever scheduled.
    pub conns: u64,
    /// Frames forwarded to real servers that have left the service (the ones that stay keep
    /// their own counts: `Forwarder::service_traffic` adds them up).
    pub retired_packets: u64,
    /// Bytes likewise.
    pub retired_bytes: u64,
}

/// A live flow `key` (value `v`) of `service` on backend `b` holds its client's persistence
/// template until `persistence_s` past its own expiry (IPVS keeps a template while connections
/// it controls live); nothing for a service without persistence or a sorry server's flow.
fn hold_template(templates: &persist::Templates, service: &Service, b: &Backend, key: &FlowKey, v: &FlowVal) {
    if service.persistence_s > 0 && !b.sorry {
        let until = Millis(u64::from(v.expires) * 100).plus(u64::from(service.persistence_s) * 1000);
        templates.hold(service.scope, key.client(), b.rip, until);
    }
}

/// A conflicting ARP claim of a VIP, as last seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipConflict {
    /// The VIP claimed.
    pub vip: Ipv4Addr,
    /// Who claimed it.
    pub mac: Mac,
    /// When.
    pub at: Millis,
    /// How: a reply (it answers ARP for the VIP: `arp_ignore` is not 1) or a request (it
    /// announces the VIP as its sender address: `arp_announce` is not 2).
    pub op: ArpOp,
}

/// Backends kept as suspects between two `take_suspects` calls.
pub const SUSPECTS: usize = 64;

/// Hosts remembered per kind of misbehaviour (the doctor's evidence).
pub const DOCTOR_KEPT: usize = 16;

/// The forwarder.
pub struct Forwarder {
    spec: DataPlaneSpec,
    vip_mac: Mac,
    rs_mac: Mac,
    one_arm: bool,
    /// Per side, the destination MAC the fast path takes clients' packets on, as a 48-bit
    /// word (`Packet::dst_mac_word`); a value no frame carries where it takes none (the
    /// RS-facing NIC of a two-arm layout).
    fast_macs: [u64; 2],
    seed: u64,
    vips: Vec<Ipv4Addr>,
    services: Vec<Service>,
    index: index::ServiceIndex,
    backends: Vec<Backend>,
    flows: FlowTable,
    /// The box's persistence templates (shared with the other forwarders: `share_templates`).
    templates: Arc<persist::Templates>,
    templates_cursor: usize,
    frags: frag::Fragments,
    neigh: Neighbours,
    counters: Counters,
    garp_left: u8,
    garp_next: Millis,
    last_conflict: Option<VipConflict>,
    /// Every host seen claiming a VIP, by MAC and how (the last `DOCTOR_KEPT`).
    claims: Vec<VipConflict>,
    /// Hosts whose frames from a VIP reached the director (a real server whose replies take
    /// the wrong path), by MAC, and when last.
    wrong_path: Vec<(Mac, Millis)>,
    /// Backends a client had to send its SYN to twice (`take_suspects`).
    suspects: Vec<u16>,
    /// Whether confirmed flows are handed to the kernel (`enable_kernel_flows`).
    kernel_flows: bool,
    kernel_ops: Vec<KernelOp>,
    /// Bumped whenever what a backend index means or its MAC changes.
    targets_version: u32,
    /// The last `now` seen, and it in flow-table ticks.
    ticks_at: Millis,
    ticks_now: u32,
    /// The box's connection counts, when other forwarders share its flows (`share_load`).
    shared: Option<Arc<SharedLoad>>,
    /// ARP frames seen, kept for the other forwarders (`enable_arp_relay`).
    arp_seen: Option<Vec<ArpSeen>>,
    /// Whether this forwarder sends the ARP requests and gratuitous ARP (`stay_quiet`).
    announces: bool,
    /// The HA pair's virtual MAC, when this box is one of a pair.
    ha_mac: Option<Mac>,
    /// Whether the VIPs are served here: always without a pair, only as its master with one.
    serving: bool,
    /// The pair's peer (its DIP), resolved like a real server.
    peer: Option<Ipv4Addr>,
    /// Flow changes for the peer (a pair's master), until `take_sync`.
    sync: Option<Vec<crate::ha::sync::SyncEntry>>,
}

impl core::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Forwarder").field("services", &self.services.len()).field("flows", &self.flows.len()).finish()
    }
}

impl Forwarder {
    /// Build a forwarder, allocating every table now (the flow table at its full capacity);
    /// an error if the memory cannot be had.
    pub fn try_new(spec: DataPlaneSpec, vip_mac: Mac, rs_mac: Mac, one_arm: bool, seed: u64, now: Millis) -> Result<Self, PlanError> {
        let capacity = spec.flow_capacity as usize;
        let flows = FlowTable::try_new(capacity, seed, spec.timeouts)
            .map_err(|e| PlanError::FlowTableMemory { flows: capacity, bytes: e.bytes })?;
        let empty = DataPlaneSpec { services: Vec::new(), ..spec.clone() };
        let mut f = Forwarder {
            vips: Vec::new(),
            services: Vec::new(),
            index: index::ServiceIndex::build(&[]),
            backends: Vec::new(),
            flows,
            templates: Arc::new(persist::Templates::new(seed ^ 0x5555)),
            templates_cursor: 0,
            frags: frag::Fragments::new(seed),
            neigh: Neighbours::default(),
            counters: Counters::default(),
            garp_left: 0,
            garp_next: now,
            last_conflict: None,
            claims: Vec::new(),
            wrong_path: Vec::new(),
            suspects: Vec::with_capacity(SUSPECTS),
            kernel_flows: false,
            kernel_ops: Vec::new(),
            targets_version: 1,
            ticks_at: Millis(u64::MAX),
            ticks_now: 0,
            shared: None,
            arp_seen: None,
            announces: true,
            ha_mac: None,
            serving: true,
            peer: None,
            sync: None,
            spec: empty,
            vip_mac,
            rs_mac,
            one_arm,
            fast_macs: [mac_word(vip_mac), if one_arm { mac_word(rs_mac) } else { u64::MAX }],
            seed,
        };
        let plan = Plan::new(&f.spec, spec, seed)?;
        f.install(plan, now);
        Ok(f)
    }

    /// `try_new` for tests and benchmarks, where the memory is known to be there.
    ///
    /// # Panics
    /// If the tables cannot be allocated.
    pub fn new(spec: DataPlaneSpec, vip_mac: Mac, rs_mac: Mac, one_arm: bool, seed: u64, now: Millis) -> Self {
        match Self::try_new(spec, vip_mac, rs_mac, one_arm, seed, now) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    /// Apply a (validated) configuration: `Plan::new` then `install`, in one go (tests, and
    /// callers that do not mind building the new tables where they forward).
    pub fn apply(&mut self, spec: DataPlaneSpec, now: Millis) -> Result<Installed, PlanError> {
        let plan = Plan::new(&self.spec, spec, self.seed)?;
        Ok(self.install(plan, now))
    }

    /// Decide what to do with a frame received on `side`. `frame` is rewritten in place when
    /// the verdict is `Forward`.
    pub fn process(&mut self, side: Side, frame: &mut [u8], now: Millis) -> Verdict {
        self.counters.event(Event::RxFrames);
        match self.fast(side, frame, now) {
            Some(v) => v,
            None => self.slow(side, frame, now),
        }
    }

    /// Everything the fast path leaves: classified in full, decided, counted.
    #[inline(never)]
    fn slow(&mut self, side: Side, frame: &mut [u8], now: Millis) -> Verdict {
        let v = self.decide(side, frame, now);
        self.count_verdict(v);
        v
    }

    #[inline(always)]
    fn count_verdict(&mut self, v: Verdict) {
        match v {
            Verdict::Drop(r) => self.counters.drop(r),
            Verdict::Control => self.counters.event(Event::ToControl),
            Verdict::Forward => self.counters.event(Event::Forwarded),
            Verdict::Held => self.counters.event(Event::FragmentsHeld),
        }
    }

    fn my_mac(&self, side: Side) -> Mac {
        match side {
            Side::Vip => self.vip_mac,
            Side::Rs => self.rs_mac,
        }
    }

    /// The MAC clients' frames for a VIP arrive at: the pair's virtual MAC, or the VIP-facing
    /// NIC's own.
    fn vip_dst_mac(&self) -> Mac {
        self.ha_mac.unwrap_or(self.vip_mac)
    }

    /// Where the fast path takes clients' frames: nowhere on the VIP side while a backup.
    pub(crate) fn set_fast_macs(&mut self) {
        self.fast_macs[Side::Vip as usize] = if self.serving { mac_word(self.vip_dst_mac()) } else { u64::MAX };
    }

    /// HA: serve the VIPs (this box became master: gratuitous ARP for them from the virtual
    /// MAC at once, then twice more a second apart) or stop (backup). No effect without a pair.
    pub fn set_serving(&mut self, serving: bool, now: Millis) {
        if self.ha_mac.is_none() || serving == self.serving {
            return;
        }
        self.serving = serving;
        self.set_fast_macs();
        if serving {
            self.garp_left = GARP_ROUNDS;
            self.garp_next = now;
        } else {
            self.garp_left = 0;
        }
    }

    /// Whether this box serves the VIPs (no pair, or its master).
    pub fn serving(&self) -> bool {
        self.serving
    }

    fn owns_dip(&self, side: Side) -> bool {
        self.one_arm || side == Side::Rs
    }

    /// The common case: a client's TCP/UDP packet to a service, read through the lean view
    /// and decided without the full classification. The flow table is asked first (hashed
    /// once): a live flow needs no service lookup, since a reload drops the flows of services
    /// it removes. A packet of a live flow goes on as the kernel's path (`programs::forward`
    /// in netfw) sends it, without its IPv4 header checksum checked: DR changes no byte of
    /// the IP packet, the real server checks it, and it protects nothing the flow's state
    /// reads (the TCP flags are not under it). A packet that would create a flow is checked.
    /// `None` leaves the frame to `decide` (anything else, including every case that is
    /// dropped before a flow is looked up, so the drop reasons stay its).
    #[inline(always)]
    fn fast(&mut self, side: Side, frame: &mut [u8], now: Millis) -> Option<Verdict> {
        let p = Packet::parse(frame)?;
        if p.dst_mac_word() != self.fast_macs[side as usize] {
            return None;
        }
        let key = p.flow_key();
        let ip_len = p.ip_len();
        let tcp_flags = p.tcp_flags();
        if let Some(backend) = self.live_flow(key, tcp_flags, now) {
            let v = self.send_to(frame, backend, ip_len);
            self.count_verdict(v);
            return Some(v);
        }
        self.unlisted_flow(frame, key, tcp_flags, ip_len, now)
    }

    /// A packet the fast path found no live flow for: a new flow of its service, or `None`
    /// when it is for no service (`decide` says why).
    #[inline(never)]
    fn unlisted_flow(&mut self, frame: &mut [u8], key: FlowKey, tcp_flags: u8, ip_len: usize, now: Millis) -> Option<Verdict> {
        // A packet from a VIP never starts a flow (`decide` drops it as `src_is_vip`: a real
        // server's reply on the wrong path). Asked only here: no flow is created for a VIP, and
        // a live flow whose client a reload has since made a VIP goes on, as in the kernel's
        // path.
        if self.index.maybe_vip(u32::from(key.client())) || !Packet::parse(frame).is_some_and(|p| p.header_checksum_ok()) {
            return None;
        }
        let si = self.index.get(u32::from(key.vip()), key.proto(), key.vport())?;
        let v = match self.new_flow(si, key, tcp_flags, now) {
            Ok(backend) => self.send_to(frame, backend, ip_len),
            Err(r) => Verdict::Drop(r),
        };
        self.count_verdict(v);
        Some(v)
    }

    fn decide(&mut self, side: Side, frame: &mut [u8], now: Millis) -> Verdict {
        let parsed = match frame::classify(frame) {
            Ok(p) => p,
            Err(e) => return Verdict::Drop(e.into()),
        };
        let dst = frame::dst_mac(frame);
        let to_vmac = side == Side::Vip && Some(dst) == self.ha_mac;
        if to_vmac && !self.serving {
            return Verdict::Drop(DropReason::Standby);
        }
        let for_us = dst == self.my_mac(side) || dst[0] & 1 == 1 || to_vmac;
        match parsed {
            // Every ARP frame we see tells us something: a real server's MAC, or another host
            // claiming a VIP (even a flooded unicast reply not meant for us).
            Frame::Arp { op, sender_mac, sender_ip, target_ip } => {
                self.observe_arp(side, op, sender_mac, sender_ip, now);
                if let Some(seen) = self.arp_seen.as_mut().filter(|s| s.len() < ARP_RELAY && op != ArpOp::Other) {
                    seen.push(ArpSeen { side, op, mac: sender_mac, ip: sender_ip });
                }
                if !self.serving && self.vips.contains(&target_ip) {
                    Verdict::Drop(DropReason::Standby)
                } else if for_us {
                    Verdict::Control
                } else {
                    Verdict::Drop(DropReason::NotForUs)
                }
            }
            Frame::Ipv4(_) if !for_us => Verdict::Drop(DropReason::NotForUs),
            Frame::Ipv4(ip) => self.ipv4(side, frame, &ip, now),
        }
    }

    fn observe_arp(&mut self, side: Side, op: ArpOp, mac: Mac, ip: Ipv4Addr, now: Millis) {
        let (conflict, changed) = self.learn(side, op, mac, ip, now);
        if conflict {
            self.counters.event(Event::VipConflict);
        }
        if changed {
            self.counters.event(Event::RsMacChanged);
        }
    }

    /// What an ARP frame teaches: a VIP claimed by another host (true, first), a real
    /// server's MAC learned or changed (true, second). Counted by the caller.
    fn learn(&mut self, side: Side, op: ArpOp, mac: Mac, ip: Ipv4Addr, now: Millis) -> (bool, bool) {
        if op == ArpOp::Other {
            return (false, false);
        }
        // The pair's virtual MAC is no thief: the master (this box or its peer) announces it.
        let conflict = self.vips.contains(&ip) && mac != self.vip_mac && mac != self.rs_mac && Some(mac) != self.ha_mac;
        if conflict {
            let claim = VipConflict { vip: ip, mac, at: now, op };
            self.last_conflict = Some(claim);
            remember(&mut self.claims, claim, |c| c.mac == mac && c.op == op);
            // Defend the VIP: neighbours that just learned the wrong MAC relearn ours. Linux
            // ignores a new MAC for an entry updated less than `locktime` (1 s) ago, so one
            // announcement right after the thief's would be lost: send a round per second for
            // three seconds. At most one per second, however fast the other host talks. A
            // backup defends nothing: its master does.
            self.garp_left = if self.serving { GARP_ROUNDS } else { 0 };
        }
        let changed = self.owns_dip(side) && self.neigh.observe(ip, mac, now);
        if changed {
            // A new or changed MAC: the backends of that real server use it from now on.
            if let Some(i) = self.neigh.index(ip) {
                let src = self.rs_mac;
                for b in self.backends.iter_mut().filter(|b| b.neigh.index() == i) {
                    b.set_mac(Some(mac), src);
                }
                self.targets_version = self.targets_version.wrapping_add(1);
            }
        }
        (conflict, changed)
    }

    /// Keep every ARP frame this forwarder sees (up to `ARP_RELAY` between two calls of
    /// `take_arp_seen`) for forwarders that share its NICs: a reply to one forwarder's request
    /// may arrive on another's receive queue.
    pub fn enable_arp_relay(&mut self) {
        self.arp_seen = Some(Vec::with_capacity(ARP_RELAY));
    }

    /// The ARP frames seen since the last call (`enable_arp_relay`), in order.
    pub fn take_arp_seen(&mut self, mut f: impl FnMut(ArpSeen)) {
        for s in self.arp_seen.iter_mut().flat_map(|v| v.drain(..)) {
            f(s);
        }
    }

    /// Learn from an ARP frame another forwarder saw, as if it had come here: real servers'
    /// MACs, and a claim of a VIP (which the announcing forwarder answers with gratuitous
    /// ARP). Not counted again: the forwarder that saw it counted it.
    pub fn learn_arp(&mut self, seen: ArpSeen, now: Millis) {
        let _ = self.learn(seen.side, seen.op, seen.mac, seen.ip, now);
    }

    /// Send no ARP requests and no gratuitous ARP: another forwarder on the same NICs does
    /// (their answers reach this one through `learn_arp`).
    pub fn stay_quiet(&mut self) {
        self.announces = false;
    }

    /// Keep and find persistence templates in `templates`, the box's (shared by every
    /// forwarder of the box, so a client's connections that RSS puts on different queues keep
    /// one real server). Once, before forwarding: templates held so far are not carried over.
    pub fn share_templates(&mut self, templates: Arc<persist::Templates>) {
        self.templates = templates;
    }

    /// The persistence templates this forwarder uses (to share with the others of the box).
    pub fn templates(&self) -> Arc<persist::Templates> {
        Arc::clone(&self.templates)
    }

    /// Schedule by the connection counts on `board` (every forwarder sharing this box's flows
    /// adds its own to it): this forwarder's counts go on it now, and every change from now
    /// on. Called again after each `install`, with a board for the new backends.
    pub fn share_load(&mut self, board: Arc<SharedLoad>) {
        for (i, b) in self.backends.iter().enumerate() {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            board.add(i, true, i32::try_from(b.active).unwrap_or(i32::MAX));
            board.add(i, false, i32::try_from(b.inactive).unwrap_or(i32::MAX));
        }
        self.shared = Some(board);
    }

    fn ipv4(&mut self, side: Side, frame: &mut [u8], ip: &Ipv4Info, now: Millis) -> Verdict {
        if self.vips.contains(&ip.src) && !probe_reply(ip) {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(frame.get(6..12).unwrap_or(&[0; 6]));
            remember(&mut self.wrong_path, (mac, now), |w| w.0 == mac);
            return Verdict::Drop(DropReason::SrcIsVip);
        }
        if ip.dst == self.spec.dip {
            return if self.owns_dip(side) { Verdict::Control } else { Verdict::Drop(DropReason::NotOurAddress) };
        }
        if ip.dst == crate::ha::advert::VRRP_GROUP && ip.proto == crate::ha::advert::PROTO_VRRP {
            return if self.ha_mac.is_some() && side == Side::Vip { Verdict::Control } else { Verdict::Drop(DropReason::NotOurAddress) };
        }
        if !self.vips.contains(&ip.dst) {
            return Verdict::Drop(DropReason::NotOurAddress);
        }
        if !self.serving {
            return Verdict::Drop(DropReason::Standby);
        }
        if side == Side::Rs && !self.one_arm {
            return Verdict::Drop(DropReason::VipOnRsSide);
        }
        match ip.l4 {
            L4Info::Ports { src, dst, tcp_flags } => {
                let key = FlowKey::new(ip.src, ip.dst, src, dst, ip.proto);
                let Some(si) = self.index.get(u32::from(key.vip()), key.proto(), key.vport()) else {
                    return Verdict::Drop(DropReason::NoService);
                };
                let backend = match self.backend_for(si, key, tcp_flags, now) {
                    Ok(b) => b,
                    Err(r) => return Verdict::Drop(r),
                };
                let v = self.send_to(frame, backend, ip.total_len);
                if ip.more_frags && v == Verdict::Forward {
                    self.first_fragment(ip, backend, now);
                }
                v
            }
            L4Info::Fragment => self.later_fragment(frame, ip, now),
            L4Info::Icmp { icmp_type: 3 | 4 | 11 | 12, .. } => self.icmp_error(frame, ip, now),
            L4Info::Icmp { .. } => Verdict::Control,
            L4Info::Other => Verdict::Drop(DropReason::OtherProtocol),
        }
    }

    /// The backend for a packet of flow `key` of service `si`: its flow's (the table is
    /// hashed once), or a newly scheduled one.
    fn backend_for(&mut self, si: usize, key: FlowKey, tcp_flags: u8, now: Millis) -> Result<u16, DropReason> {
        match self.live_flow(key, tcp_flags, now) {
            Some(b) => Ok(b),
            None => self.new_flow(si, key, tcp_flags, now),
        }
    }

    /// The backend of flow `key` if it is live, its entry moved on by this packet; `None` if
    /// there is none (an expired entry is removed and released now).
    #[inline(always)]
    fn live_flow(&mut self, key: FlowKey, tcp_flags: u8, now: Millis) -> Option<u16> {
        let is_tcp = key.proto() == frame::PROTO_TCP;
        let t = self.ticks(now);
        match self.flows.hit(&key, t) {
            Hit::Live(v, life) => {
                let old_state = v.state;
                let new_state = if is_tcp { old_state.next_tcp(tcp_flags) } else { old_state.next_udp() };
                v.state = new_state;
                v.expires = t.saturating_add(life[new_state as usize]);
                let backend = v.backend;
                if self.kernel_flows && kernel_wanted(new_state) != v.kernel {
                    queue_kernel_op(&mut self.kernel_ops, key, v);
                }
                if new_state != old_state {
                    self.state_changed(key, backend, old_state, new_state);
                }
                Some(backend)
            }
            Hit::Expired(v) => {
                self.expired(&v);
                None
            }
            Hit::Miss => None,
        }
    }

    /// `now` in the flow table's ticks, worked out once per distinct `now` (the loop passes
    /// the same time for a whole burst).
    #[inline(always)]
    fn ticks(&mut self, now: Millis) -> u32 {
        if now != self.ticks_at {
            self.ticks_at = now;
            self.ticks_now = crate::flow::table::ticks(now);
        }
        self.ticks_now
    }

    /// An expired flow was removed from the table.
    #[cold]
    fn expired(&mut self, v: &FlowVal) {
        release(&mut self.backends, self.shared.as_deref(), v);
        self.counters.event(Event::FlowsExpired);
    }

    #[cold]
    fn state_changed(&mut self, key: FlowKey, backend: u16, old: FlowState, new: FlowState) {
        self.queue_sync(key, backend, new);
        if new == FlowState::SynAgain && self.suspects.len() < SUSPECTS && !self.suspects.contains(&backend) {
            self.suspects.push(backend);
        }
        let shared = self.shared.as_deref();
        account(&mut self.backends, shared, backend, old, -1);
        account(&mut self.backends, shared, backend, new, 1);
    }

    /// A packet with no flow. A SYN (or a UDP packet) opens one: its real server is
    /// scheduled. Another TCP packet belongs to a connection this director does not track
    /// (the flow expired, or was never kept because the table was full): it goes where
    /// consistent hashing puts its 5-tuple, and is tracked again. When the table is full of
    /// confirmed flows, a new flow is forwarded without an entry by the same hashing, so its
    /// later packets find the same server: a full table never refuses a client.
    #[inline(never)]
    fn new_flow(&mut self, si: usize, key: FlowKey, tcp_flags: u8, now: Millis) -> Result<u16, DropReason> {
        use crate::wire::frame::tcp_flags::{ACK, FIN, RST, SYN};
        let (state, resumed) = if key.proto() != frame::PROTO_TCP {
            (FlowState::UdpNew, false)
        } else if tcp_flags & SYN != 0 && tcp_flags & (ACK | RST | FIN) == 0 {
            (FlowState::SynRecv, false)
        } else if tcp_flags & (SYN | RST) == 0 {
            (FlowState::Unconfirmed, true)
        } else {
            return Err(DropReason::TcpNoFlow);
        };
        let pick = if resumed { self.stateless_pick(si, &key, now) } else { self.schedule(si, key.client(), now) };
        let Some(b) = pick else {
            return Err(DropReason::NoUsableServer);
        };
        let backends = &mut self.backends;
        let counters = &mut self.counters;
        let shared = self.shared.as_deref();
        let inserted = self.flows.insert(key, b, state, now, |v| {
            release(backends, shared, v);
            counters.event(Event::FlowsEvicted);
        });
        if inserted.is_err() {
            let b = if resumed { b } else { self.stateless_pick(si, &key, now).ok_or(DropReason::NoUsableServer)? };
            self.counters.event(Event::FlowsStateless);
            if let Some(be) = self.backends.get_mut(usize::from(b)) {
                be.conns += u64::from(!resumed);
            }
            return Ok(b);
        }
        account(&mut self.backends, self.shared.as_deref(), b, state, 1);
        self.queue_sync(key, b, state);
        let be = &mut self.backends[usize::from(b)];
        if be.sorry {
            self.counters.event(Event::SorryFlows);
        }
        if resumed {
            self.counters.event(Event::FlowsResumed);
        } else {
            be.conns += 1;
            self.services[si].conns += 1;
            self.counters.event(Event::FlowsCreated);
        }
        Ok(b)
    }

    /// A pair's master: tell the peer that flow `key` is on backend `b` in `state` (queued
    /// without allocating; a full queue is counted).
    #[inline]
    fn queue_sync(&mut self, key: FlowKey, b: u16, state: FlowState) {
        let Some(q) = self.sync.as_mut().filter(|_| self.serving) else { return };
        let Some(rip) = self.backends.get(usize::from(b)).map(|be| be.rip) else { return };
        if q.len() < SYNC_QUEUE {
            q.push(crate::ha::sync::SyncEntry { key, rip, state });
        } else {
            self.counters.event(Event::SyncDropped);
        }
    }

    /// The flow changes queued for the peer since the last call, in order.
    pub fn take_sync(&mut self, mut f: impl FnMut(crate::ha::sync::SyncEntry)) {
        for e in self.sync.iter_mut().flat_map(|q| q.drain(..)) {
            f(e);
        }
    }

    /// Visit this forwarder's flows in up to `budget` slots of its table from slot `from`, as
    /// sync entries (the whole table for a returning peer, a slice per turn); where to go on
    /// from, or `None` when done.
    pub fn walk_flows(&self, from: usize, budget: usize, mut f: impl FnMut(crate::ha::sync::SyncEntry)) -> Option<usize> {
        let backends = &self.backends;
        self.flows.walk(from, budget, |k, v| {
            if let Some(b) = backends.get(usize::from(v.backend)) {
                f(crate::ha::sync::SyncEntry { key: *k, rip: b.rip, state: v.state });
            }
        })
    }

    /// A flow the peer synced: kept here on the same real server (found by the service's VIP,
    /// port and protocol and the server's address), with its state's full timeout. False if
    /// this box has no such service or server, or no room.
    pub fn adopt_synced(&mut self, e: crate::ha::sync::SyncEntry, now: Millis) -> bool {
        let Some(si) = self.index.get(u32::from(e.key.vip()), e.key.proto(), e.key.vport()) else { return false };
        let Some(svc) = self.services.get(si) else { return false };
        let found =
            svc.backends.iter().chain(&svc.sorry).copied().find(|&b| self.backends.get(usize::from(b)).is_some_and(|be| be.rip == e.rip));
        let Some(b) = found else { return false };
        if let Some(old) = self.flows.remove(&e.key) {
            release(&mut self.backends, self.shared.as_deref(), &old);
        }
        let backends = &mut self.backends;
        let counters = &mut self.counters;
        let shared = self.shared.as_deref();
        let inserted = self.flows.insert(e.key, b, e.state, now, |v| {
            release(backends, shared, v);
            counters.event(Event::FlowsEvicted);
        });
        if inserted.is_err() {
            return false;
        }
        account(&mut self.backends, self.shared.as_deref(), b, e.state, 1);
        self.counters.event(Event::FlowsAdopted);
        // The peer's template comes with the flow: after a takeover, the client's next
        // connection (FTP's passive data) goes where this one went.
        if let (Some(v), Some(be), Some(s)) = (self.flows.peek(&e.key, now), self.backends.get(usize::from(b)), self.services.get(si)) {
            hold_template(&self.templates, s, be, &e.key, &v);
        }
        true
    }

    /// The pair's peer's MAC, once it answered ARP.
    pub fn peer_mac(&self) -> Option<Mac> {
        let i = self.neigh.index(self.peer?)?;
        self.neigh.entries().get(i).and_then(|n| n.mac)
    }

    /// May backend `bi` take a new flow (not drained to weight 0, not down, not a sorry server, its
    /// MAC fresh)?
    fn usable(&self, bi: u16, now: Millis) -> bool {
        self.backends.get(usize::from(bi)).is_some_and(|b| b.weight > 0 && b.up && !b.sorry && self.neigh.fresh(b.neigh, now))
    }

    /// The server consistent hashing gives a flow of service `si` (usable servers only; when
    /// the few it tries are not, the next usable one after the hash's; the sorry server when
    /// none is).
    fn stateless_pick(&self, si: usize, key: &FlowKey, now: Millis) -> Option<u16> {
        let svc = self.services.get(si)?;
        let [a, b] = crate::flow::map::MapKey::words(key);
        let h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.rotate_left(29);
        let usable = |i: usize| svc.backends.get(i).is_some_and(|&bi| self.usable(bi, now));
        let n = svc.backends.len();
        let start = usize::try_from(h % (n.max(1) as u64)).unwrap_or(0);
        let i = svc.stateless.lookup_flow(h, usable).or_else(|| (0..n).map(|k| (start + k) % n).find(|&i| usable(i)));
        match i {
            Some(i) => svc.backends.get(i).copied(),
            None => self.sorry_pick(si, now),
        }
    }

    /// The sorry server of service `si`, if it has one that may take flows.
    fn sorry_pick(&self, si: usize, now: Millis) -> Option<u16> {
        self.services.get(si)?.sorry.filter(|&b| self.backends.get(usize::from(b)).is_some_and(|b| b.up && self.neigh.fresh(b.neigh, now)))
    }

    /// A packet of a flow whose real server went down: the flow is forgotten and scheduled
    /// afresh (a TCP packet other than a SYN resumes by consistent hashing, so the new server
    /// answers it with a reset at once instead of the client waiting on a dead one).
    fn move_flow(&mut self, frame: &mut [u8], key: FlowKey, tcp_flags: u8, backend: u16, ip_len: usize, now: Millis) -> Verdict {
        let Some(si) = self.backends.get(usize::from(backend)).map(|b| usize::from(b.service)) else {
            return Verdict::Drop(DropReason::NoUsableServer);
        };
        if let Some(v) = self.flows.remove(&key) {
            release(&mut self.backends, self.shared.as_deref(), &v);
            if v.kernel && self.kernel_ops.len() < KERNEL_OPS {
                self.kernel_ops.push(KernelOp::Remove(key));
            }
        }
        self.counters.event(Event::FlowsMoved);
        match self.new_flow(si, key, tcp_flags, now) {
            Ok(b) => self.send_to(frame, b, ip_len),
            Err(r) => Verdict::Drop(r),
        }
    }

    /// Rewrite the frame towards a backend's MAC and count it.
    fn send_to(&mut self, frame: &mut [u8], backend: u16, ip_len: usize) -> Verdict {
        let Some(b) = self.backends.get_mut(usize::from(backend)) else {
            return Verdict::Drop(DropReason::NoUsableServer);
        };
        if !b.sendable {
            return self.unsendable(frame, backend, ip_len);
        }
        rewrite(b, frame, ip_len)
    }

    /// A frame for a backend that may not take it: its MAC is unknown (dropped), or it is
    /// down: a TCP/UDP packet of its flow moves the flow (read back from the frame, so the
    /// fast path carries nothing extra for this), anything else (a fragment, an ICMP error)
    /// is dropped as `server_down`.
    #[cold]
    #[inline(never)]
    fn unsendable(&mut self, frame: &mut [u8], backend: u16, ip_len: usize) -> Verdict {
        if self.backends.get(usize::from(backend)).is_none_or(|b| b.mac.is_none()) {
            return Verdict::Drop(DropReason::RsMacUnknown);
        }
        let Ok(Frame::Ipv4(Ipv4Info { src, dst, proto, l4: L4Info::Ports { src: sport, dst: dport, tcp_flags }, .. })) =
            frame::classify(frame)
        else {
            return Verdict::Drop(DropReason::ServerDown);
        };
        let key = FlowKey::new(src, dst, sport, dport, proto);
        // `live_flow` has just seen this packet's time.
        let now = self.ticks_at;
        match self.flows.peek(&key, now) {
            Some(v) if v.backend == backend => self.move_flow(frame, key, tcp_flags, backend, ip_len, now),
            _ => Verdict::Drop(DropReason::ServerDown),
        }
    }

    fn schedule(&mut self, si: usize, client: Ipv4Addr, now: Millis) -> Option<u16> {
        let svc = self.services.get(si)?;
        let (scope, persistence_ms) = (svc.scope, u64::from(svc.persistence_s) * 1000);
        if persistence_ms > 0 {
            // The client's template in the service's scope, if its server is one of this
            // service's and may take the flow (else it is scheduled afresh, and the template
            // follows the new pick).
            let kept = self
                .templates
                .get(scope, client, now)
                .and_then(|t| svc.backends.iter().copied().find(|&b| self.backends.get(usize::from(b)).is_some_and(|be| be.rip == t.rip)));
            if let Some(b) = kept.filter(|&b| self.usable(b, now)) {
                self.templates.put(scope, client, self.backends[usize::from(b)].rip, now.plus(persistence_ms));
                return Some(b);
            }
        }
        let svc = &mut self.services[si];
        let shared = self.shared.as_deref();
        for (c, &bi) in svc.cands.iter_mut().zip(svc.backends.iter()) {
            let b = &self.backends[usize::from(bi)];
            let (active, inactive) = shared.and_then(|s| s.get(bi)).unwrap_or((b.active, b.inactive));
            *c = Candidate { weight: b.weight, reachable: b.up && self.neigh.fresh(b.neigh, now), active, inactive };
        }
        let Some(pick) = svc.sched.pick(&svc.cands, client) else {
            return self.sorry_pick(si, now);
        };
        let b = *svc.backends.get(pick)?;
        if persistence_ms > 0 && !self.templates.put(scope, client, self.backends[usize::from(b)].rip, now.plus(persistence_ms)) {
            // Persistence table full: the flow is still served, only without affinity.
            self.counters.event(Event::PersistenceFull);
        }
        Some(b)
    }

    fn icmp_error(&mut self, frame: &mut [u8], ip: &Ipv4Info, now: Millis) -> Verdict {
        if ip.proto != PROTO_ICMP {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        }
        let Some((inner_src, inner_dst, proto, sport, dport)) = frame::icmp_embedded(frame, ip) else {
            return Verdict::Drop(DropReason::TruncatedL4);
        };
        // The embedded packet is a reply the real server sent from VIP:port to the client.
        let key = FlowKey::new(inner_dst, inner_src, dport, sport, proto);
        let Some(v) = self.flows.peek(&key, now) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        self.send_to(frame, v.backend, ip.total_len)
    }

    /// Timers: expire flows, persistence and fragment state a slice at a time; send ARP
    /// requests for real servers (from the DIP) and gratuitous ARP for VIPs. Frames to send are
    /// passed to `emit` with the side to send them on; `emit` says whether the frame went out
    /// (a frame that did not is counted as `tx_ring_full`).
    pub fn poll_timers(&mut self, now: Millis, emit: impl FnMut(Side, &[u8]) -> bool) {
        self.poll_timers_with(now, emit, |_| Idle::Gone);
    }

    /// `poll_timers`, asking `kernel` when the kernel last forwarded a packet of an expired
    /// flow it forwards (`enable_kernel_flows`).
    pub fn poll_timers_with(&mut self, now: Millis, mut emit: impl FnMut(Side, &[u8]) -> bool, mut kernel: impl FnMut(&FlowKey) -> Idle) {
        // Both the live and the removed flows' callbacks read the backends, one at a time.
        let backends = core::cell::RefCell::new(&mut self.backends);
        let shared = self.shared.as_deref();
        let ops = &mut self.kernel_ops;
        // Room for the removals of kernel flows: one that cannot be queued stays for now.
        let room = core::cell::Cell::new(KERNEL_OPS.saturating_sub(ops.len()));
        let mut expired = 0;
        let (services, templates) = (&self.services, &self.templates);
        self.flows.sweep_with(
            now,
            SWEEP_BUDGET,
            |k| if room.get() > 0 { kernel(k) } else { Idle::Keep },
            |k, v| {
                // A live flow of a persistent service holds its client's template.
                let backends = backends.borrow();
                let Some(b) = backends.get(usize::from(v.backend)) else { return };
                if let Some(s) = services.get(usize::from(b.service)) {
                    hold_template(templates, s, b, k, v);
                }
            },
            |k, v| {
                release(&mut backends.borrow_mut(), shared, v);
                if v.kernel {
                    room.set(room.get().saturating_sub(1));
                    ops.push(KernelOp::Remove(*k));
                }
                expired += 1;
            },
        );
        self.counters.add(Event::FlowsExpired, expired);
        self.templates.sweep(&mut self.templates_cursor, 1024, now);
        let timed_out = self.frags.expire(now);
        self.counters.drop_n(DropReason::FragmentNoFirst, timed_out);

        if !self.announces {
            return;
        }
        let mut buf = [0u8; 60];
        let (dip, rs_mac) = (self.spec.dip, self.rs_mac);
        let (mut sent, mut unsent) = (0, 0);
        self.neigh.due(now, |rip| {
            if arp::request(&mut buf, rs_mac, dip, rip).is_some() {
                if emit(Side::Rs, &buf) {
                    sent += 1;
                } else {
                    unsent += 1;
                }
            }
        });
        self.counters.add(Event::ArpRequestsSent, sent);
        self.counters.drop_n(DropReason::TxRingFull, unsent);

        if self.garp_left > 0 && self.garp_next <= now && self.serving {
            self.garp_left -= 1;
            self.garp_next = now.plus(1_000);
            let mac = self.vip_dst_mac();
            for &vip in &self.vips {
                let mut buf = [0u8; 60];
                if arp::gratuitous(&mut buf, mac, vip).is_some() {
                    if emit(Side::Vip, &buf) {
                        self.counters.event(Event::GratuitousArpSent);
                    } else {
                        self.counters.drop(DropReason::TxRingFull);
                    }
                }
            }
        }
    }

    /// Hand confirmed flows (TCP established, UDP that saw a second packet) to the kernel:
    /// from now on `drain_kernel_ops` says which to add to and remove from the kernel's flow
    /// map, and the kernel forwards their plain packets itself (netfw still sees SYN, FIN,
    /// RST, fragments, and everything of other flows).
    pub fn enable_kernel_flows(&mut self) {
        self.kernel_flows = true;
        self.kernel_ops = Vec::with_capacity(KERNEL_OPS);
    }

    /// The kernel flow-map changes queued since the last call, in order.
    pub fn drain_kernel_ops(&mut self, mut f: impl FnMut(KernelOp)) {
        for op in self.kernel_ops.drain(..) {
            f(op);
        }
    }

    /// The kernel could not take `Add(key, _)`: netfw keeps forwarding that flow itself.
    pub fn kernel_refused(&mut self, _key: &FlowKey) {
        self.counters.event(Event::KernelFlowsRefused);
    }

    /// Frames and bytes the kernel forwarded for `backend` (added to its counters and to
    /// `forwarded`).
    pub fn add_kernel_traffic(&mut self, backend: u16, packets: u64, bytes: u64) {
        if let Some(b) = self.backends.get_mut(usize::from(backend)) {
            b.packets += packets;
            b.bytes += bytes;
            self.counters.add(Event::Forwarded, packets);
            self.counters.add(Event::ForwardedInKernel, packets);
        }
    }

    /// Changes whenever a backend index comes to mean another server (a reload) or a real
    /// server's MAC changes: the kernel's copy of the backends must be rewritten.
    pub fn targets_version(&self) -> u32 {
        self.targets_version
    }

    /// The MAC frames to real servers leave with (the RS-facing NIC's).
    pub fn rs_mac(&self) -> Mac {
        self.rs_mac
    }

    /// Count a drop decided outside the core (ring full, VLAN metadata, control queue full).
    pub fn count_drop(&mut self, r: DropReason) {
        self.counters.drop(r);
    }

    /// Count `n` drops of one reason decided outside the core.
    pub fn count_drops(&mut self, r: DropReason, n: u64) {
        self.counters.drop_n(r, n);
    }

    /// Count `n` events that happened outside the core.
    pub fn count_events(&mut self, e: Event, n: u64) {
        self.counters.add(e, n);
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// Services.
    pub fn services(&self) -> &[Service] {
        &self.services
    }
    /// Backends.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }
    /// Real servers' link-layer state.
    pub fn neighbours(&self) -> &Neighbours {
        &self.neigh
    }
    /// The flow table.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }
    /// The configuration in force.
    pub fn spec(&self) -> &DataPlaneSpec {
        &self.spec
    }
    /// The backends whose clients sent a SYN again since the last call (no SYN-ACK came back
    /// in time: a passive sign of a dead server, for the health checks to probe at once).
    pub fn take_suspects(&mut self, mut f: impl FnMut(u16)) {
        for b in self.suspects.drain(..) {
            f(b);
        }
    }

    /// Every host seen claiming a VIP, and how (the last `DOCTOR_KEPT`).
    pub fn vip_claims(&self) -> &[VipConflict] {
        &self.claims
    }

    /// Hosts whose frames from a VIP reached the director, and when last.
    pub fn wrong_path(&self) -> &[(Mac, Millis)] {
        &self.wrong_path
    }

    /// The last ARP claim of a VIP by another host, if any.
    pub fn last_vip_conflict(&self) -> Option<VipConflict> {
        self.last_conflict
    }
    /// Frames and bytes a service forwarded: its real servers' plus those of servers that
    /// left it.
    pub fn service_traffic(&self, s: &Service) -> (u64, u64) {
        s.backends
            .iter()
            .chain(&s.sorry)
            .filter_map(|&b| self.backends.get(usize::from(b)))
            .fold((s.retired_packets, s.retired_bytes), |(p, y), b| (p + b.packets, y + b.bytes))
    }

    /// A health check's verdict on backend `backend`: a server that is down gets no new
    /// flows, its flows move to another server with their next packet, and the kernel stops
    /// forwarding them (its backends array is rewritten). Returns whether anything changed.
    pub fn set_health(&mut self, backend: u16, up: bool) -> bool {
        let src = self.rs_mac;
        let Some(b) = self.backends.get_mut(usize::from(backend)).filter(|b| b.up != up) else { return false };
        b.up = up;
        let mac = b.mac;
        b.set_mac(mac, src);
        self.targets_version = self.targets_version.wrapping_add(1);
        true
    }

    /// Is this backend's MAC fresh enough for new flows?
    pub fn backend_reachable(&self, b: &Backend, now: Millis) -> bool {
        self.neigh.fresh(b.neigh, now)
    }
}

/// A real server's answer to a health probe through the DR path: from VIP:port to one of the
/// probes' ports on the DIP (the caller checks the destination is the DIP).
fn probe_reply(ip: &Ipv4Info) -> bool {
    matches!(ip.l4, L4Info::Ports { dst, .. } if crate::health::PROBE_PORTS.contains(&dst))
}

/// Rewrite a frame towards a backend that may take it (`sendable`), and count it.
#[inline(always)]
fn rewrite(b: &mut Backend, frame: &mut [u8], ip_len: usize) -> Verdict {
    if let Some(h) = frame.get_mut(..12) {
        h.copy_from_slice(&b.header);
    }
    b.packets += 1;
    b.bytes += ip_len as u64;
    Verdict::Forward
}

/// Keep `item` in a short list: replacing the entry `same` finds, else added (the oldest goes
/// when it is full).
fn remember<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T) -> bool) {
    if let Some(x) = list.iter_mut().find(|x| same(x)) {
        *x = item;
        return;
    }
    if list.len() >= DOCTOR_KEPT {
        list.remove(0);
    }
    list.push(item);
}

/// A MAC as `Packet::dst_mac_word` reads one.
fn mac_word(m: Mac) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]) << 16
}

/// Point `backend` at its index after a reload; false if its real server is gone.
fn remap_backend(remap: &[Option<u16>], backend: &mut u16) -> bool {
    match remap.get(usize::from(*backend)).copied().flatten() {
        Some(n) => {
            *backend = n;
            true
        }
        None => false,
    }
}

/// Should the kernel forward a flow in this state? Only confirmed ones: every packet of a
/// flow in another state may change it, so netfw must see them.
#[inline(always)]
fn kernel_wanted(s: FlowState) -> bool {
    matches!(s, FlowState::Established | FlowState::Udp)
}

/// Queue adding or removing the kernel's entry for a flow whose state says it should (not) be
/// there. A full queue leaves the flow as it is: its next packet (or the sweep) asks again.
#[cold]
fn queue_kernel_op(ops: &mut Vec<KernelOp>, key: FlowKey, v: &mut FlowVal) {
    if ops.len() >= KERNEL_OPS {
        return;
    }
    ops.push(if v.kernel { KernelOp::Remove(key) } else { KernelOp::Add(key, v.backend) });
    v.kernel = !v.kernel;
}

/// A flow in state `s` on backend `bi` came (`delta` 1) or went (-1): its count, and the
/// box's when forwarders share it.
fn account(backends: &mut [Backend], shared: Option<&SharedLoad>, bi: u16, s: FlowState, delta: i32) {
    if let Some(b) = backends.get_mut(usize::from(bi)) {
        let c = if s.is_active() { &mut b.active } else { &mut b.inactive };
        *c = c.saturating_add_signed(delta);
        if let Some(shared) = shared {
            shared.add(bi, s.is_active(), delta);
        }
    }
}

fn release(backends: &mut [Backend], shared: Option<&SharedLoad>, v: &crate::flow::FlowVal) {
    account(backends, shared, v.backend, v.state, -1);
}
