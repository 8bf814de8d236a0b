//! The HA pair in forwarder mode: the first worker runs the election (`netfw_core::ha`),
//! sends this box's adverts on the VIP-facing NIC while it is master, takes the peer's, and
//! publishes the role every worker follows (`Role::serving`, read once per turn). The other
//! workers pass the adverts they receive to it (`Pair::Relay`).
//!
//! An advert is taken only if it is for this virtual router, arrived with TTL 255 (it was not
//! routed), carries the pair's authenticator, comes from the configured peer and is newer than
//! the last one taken from it; everything else is counted by why, and the last one named in
//! the status.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv4Repr};

use director_messages::status::{HaStatus, HaTransition, PeerAdvert, SplitBrain, Status};
use netfw_core::counters::Event;
use netfw_core::forward::Forwarder;
use netfw_core::ha::advert::{self, Advert, Ours, PROTO_VRRP, VRRP_GROUP};
use netfw_core::ha::election::{Election, Role, Settings, Turn};
use netfw_core::ha::sync::SyncEntry;
use netfw_core::model::{DataPlaneSpec, HaSpec};
use netfw_core::time::Millis;

use crate::flow_sync::{self, Cursor, Link, TableWalk};

/// Adverts queued from the other workers (and from this one's receive path) per turn.
pub const ADVERT_QUEUE: usize = 64;
/// How long an ignored advert stays a warning.
const IGNORED_WARNING_MS: u64 = 60_000;
/// A sequence number this far behind the last one taken from the peer is taken anyway after
/// the peer was silent this long (its clock was set back, or it was replaced).
const REPLAY_MEMORY_MS: u64 = 60_000;
/// The Ethernet address of the VRRP group 224.0.0.18.
const GROUP_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];

/// Is this Ethernet frame an IPv4 VRRP packet to the VRRP group?
pub fn is_advert(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x00])
        && frame.get(14).is_some_and(|v| v >> 4 == 4)
        && frame.get(23) == Some(&PROTO_VRRP)
        && frame.get(30..34) == Some(&VRRP_GROUP.octets())
}

/// The role every worker follows: whether this box serves the VIPs.
#[derive(Debug, Clone, Default)]
pub struct Serving(Arc<AtomicBool>);

impl Serving {
    /// Serving (no pair, or master)?
    pub fn serving(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Set by the election (and at start: serving unless the box is one of a pair).
    pub fn set(&self, serving: bool) {
        self.0.store(serving, Ordering::Relaxed);
    }
}

/// What a worker does about the pair: its part in the election and the flow sync.
#[derive(Debug)]
pub struct Pair {
    /// This worker's index.
    index: usize,
    /// The table walk for a peer that asks for the table.
    walk: Arc<TableWalk>,
    /// This worker's place in it.
    cursor: Cursor,
    part: Part,
}

#[derive(Debug)]
enum Part {
    /// This worker runs the election and the sync (the first one, also with no pair
    /// configured: a reload may add one).
    Run {
        /// The election, its adverts and the sync (`None` without a pair).
        driver: Option<Box<Driver>>,
        /// Adverts and sync datagrams other workers received.
        relayed: Receiver<Vec<u8>>,
        /// Flow changes of the other workers, for the peer.
        changes: Receiver<SyncEntry>,
        /// Flows taken from the peer, for the other workers.
        adopt: Vec<SyncSender<SyncEntry>>,
    },
    /// Another worker does: what is received here for the pair goes to it.
    Relay { frames: SyncSender<Vec<u8>>, changes: SyncSender<SyncEntry>, adopt: Receiver<SyncEntry> },
}

impl Pair {
    /// One for each of `workers` workers, the first running the election (with `spec`'s pair,
    /// if it has one) and publishing the role in `role`.
    pub fn for_workers(workers: usize, spec: &DataPlaneSpec, role: &Serving, now: Millis) -> Vec<Pair> {
        let walk = Arc::new(TableWalk::new(workers.max(1)));
        let (frames_tx, frames_rx) = sync_channel(ADVERT_QUEUE + flow_sync::INBOX);
        let (changes_tx, changes_rx) = sync_channel(flow_sync::CHANGES_QUEUE);
        let mut adopt = Vec::new();
        let mut pairs = Vec::with_capacity(workers.max(1));
        for index in 1..workers {
            let (tx, rx) = sync_channel(flow_sync::CHANGES_QUEUE);
            adopt.push(tx);
            let part = Part::Relay { frames: frames_tx.clone(), changes: changes_tx.clone(), adopt: rx };
            pairs.push(Pair { index, walk: Arc::clone(&walk), cursor: Cursor::default(), part });
        }
        let driver = Driver::new(spec, role.clone(), now).map(Box::new);
        let part = Part::Run { driver, relayed: frames_rx, changes: changes_rx, adopt };
        pairs.insert(0, Pair { index: 0, walk, cursor: Cursor::default(), part });
        pairs
    }

    /// Take an advert (`is_advert`) or sync datagram (`flow_sync::is_sync`) received here;
    /// false if it had to be dropped.
    pub fn take(&mut self, frame: &[u8], now: Millis) -> bool {
        match &mut self.part {
            Part::Run { driver: Some(d), .. } => d.take(frame, now),
            Part::Run { driver: None, .. } => false,
            Part::Relay { frames, .. } => match frames.try_send(frame.to_vec()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
        }
    }

    /// The driver, if this worker runs one.
    pub fn driver(&mut self) -> Option<&mut Driver> {
        match &mut self.part {
            Part::Run { driver, .. } => driver.as_deref_mut(),
            Part::Relay { .. } => None,
        }
    }

    /// Run the election (if this worker does): adverts relayed, timers; an advert to send goes
    /// to `send` (the VIP-facing NIC), which says whether it went out.
    pub fn poll(&mut self, now: Millis, send: impl FnMut(&[u8]) -> bool) {
        if let Part::Run { driver, relayed, .. } = &mut self.part {
            while let Ok(f) = relayed.try_recv() {
                if let Some(d) = driver.as_deref_mut() {
                    let _ = d.take(&f, now);
                }
            }
            if let Some(d) = driver.as_deref_mut() {
                d.poll(now, send);
            }
        }
    }

    /// The flow sync's turn: this worker's flow changes (and its slice of a table walk) go to
    /// the peer, flows taken from the peer into `fwd`; datagrams for the peer go to `send` (the
    /// RS-facing NIC).
    pub fn sync(&mut self, now: Millis, fwd: &mut Forwarder, send: impl FnMut(&[u8]) -> bool) {
        let (walk, cursor, index) = (&self.walk, &mut self.cursor, self.index);
        match &mut self.part {
            Part::Run { driver: Some(d), changes, adopt, .. } => {
                let link = &mut d.link;
                fwd.take_sync(|e| link.queue(e));
                cursor.step(walk, index, fwd, |e| link.queue(e));
                while let Ok(e) = changes.try_recv() {
                    link.queue(e);
                }
                let serving = fwd.serving();
                let mut lost = 0;
                link.receive(serving, walk, now, |e| {
                    let _ = fwd.adopt_synced(e, now);
                    for a in adopt.iter() {
                        lost += u64::from(a.try_send(e).is_err());
                    }
                });
                fwd.count_events(Event::SyncDropped, lost);
                link.send(serving, walk, fwd.peer_mac(), fwd.rs_mac(), now, send);
            }
            Part::Run { driver: None, changes, .. } => {
                fwd.take_sync(|_| {});
                while changes.try_recv().is_ok() {}
            }
            Part::Relay { changes, adopt, .. } => {
                let mut lost = 0;
                fwd.take_sync(|e| lost += u64::from(changes.try_send(e).is_err()));
                cursor.step(walk, index, fwd, |e| lost += u64::from(changes.try_send(e).is_err()));
                fwd.count_events(Event::SyncDropped, lost);
                while let Ok(e) = adopt.try_recv() {
                    let _ = fwd.adopt_synced(e, now);
                }
            }
        }
    }

    /// A reload: the pair as `spec` has it (started, changed, or gone: then this box serves).
    pub fn configure(&mut self, spec: &DataPlaneSpec, role: &Serving, now: Millis) {
        if let Part::Run { driver, .. } = &mut self.part {
            match (spec.ha.as_ref(), driver.as_deref_mut()) {
                (None, _) => {
                    *driver = None;
                    role.set(true);
                }
                (Some(_), Some(d)) => d.configure(spec, now),
                (Some(_), None) => *driver = Driver::new(spec, role.clone(), now).map(Box::new),
            }
        }
    }
}

/// Why an advert was ignored (the status's keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ignored {
    /// Not IPv4 with TTL 255, or cut short.
    Malformed,
    /// Another virtual router on the segment (not a problem).
    OtherVrid,
    /// The VRRP message is not valid.
    Invalid(advert::AdvertError),
    /// Authenticated, but not from the configured peer.
    NotPeer,
    /// Not newer than the last one taken from the peer.
    Replayed,
}

impl Ignored {
    fn key(self) -> &'static str {
        match self {
            Ignored::Malformed => "malformed",
            Ignored::OtherVrid => "other_vrid",
            Ignored::Invalid(advert::AdvertError::Auth) => "wrong_key",
            Ignored::Invalid(advert::AdvertError::Checksum) => "bad_checksum",
            Ignored::Invalid(_) => "invalid",
            Ignored::NotPeer => "not_peer",
            Ignored::Replayed => "replayed",
        }
    }

    fn words(self) -> String {
        match self {
            Ignored::Malformed => "not an IPv4 VRRP packet with TTL 255 (routed, or cut short)".into(),
            Ignored::OtherVrid => "for another virtual router".into(),
            Ignored::Invalid(e) => e.to_string(),
            Ignored::NotPeer => {
                "signed with the pair's key but not from the configured peer (a third box with the same key and vrid?)".into()
            }
            Ignored::Replayed => "a replay (its sequence number is not newer than the peer's last)".into(),
        }
    }
}

/// What the peer last said.
#[derive(Clone, Copy, Debug)]
struct PeerSeen {
    priority: u8,
    interval_ms: u64,
    at: Millis,
    digest: u64,
    sequence: u64,
}

/// The election and its adverts.
#[derive(Debug)]
pub struct Driver {
    spec: HaSpec,
    dip: Ipv4Addr,
    vips: Vec<Ipv4Addr>,
    digest: u64,
    election: Election,
    sequence: u64,
    role: Serving,
    inbox: Vec<Vec<u8>>,
    peer: Option<PeerSeen>,
    sent: u64,
    received: u64,
    ignored: BTreeMap<&'static str, u64>,
    last_ignored: Option<(String, Millis)>,
    transition: Option<HaTransition>,
    split: Option<SplitBrain>,
    /// This clock's zero in Unix milliseconds.
    zero_unix_ms: u64,
    /// The flow sync with the peer.
    link: Link,
    /// Whether this box syncs flows itself (forwarder mode) or the kernel does (ipvs mode).
    flow_sync: bool,
    /// Why this box cannot serve (a dedicated NIC without link): it is in fault, neither
    /// master nor backup, until the link is back.
    fault: Option<String>,
    /// When the NICs' links were last read.
    links_read: Option<Millis>,
}

/// How often the dedicated NICs' links are read (a file read each: not per packet).
const LINKS_EVERY_MS: u64 = 200;

/// Why `nics` cannot serve: the first without link (`/sys/class/net/<nic>/carrier`).
pub fn links_fault(nics: &[&str]) -> Option<String> {
    nics.iter().find_map(|n| {
        let up = std::fs::read_to_string(format!("/sys/class/net/{n}/carrier")).is_ok_and(|c| c.trim() == "1");
        (!up).then(|| format!("{n} has no link"))
    })
}

fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

fn settings(h: &HaSpec, dip: Ipv4Addr) -> Settings {
    Settings { address: dip, priority: h.priority, advert_ms: u64::from(h.advert_ms), preempt: h.preempt }
}

impl Driver {
    /// A driver for `spec`'s pair (`None` without one), starting as backup; `role` is what
    /// the workers follow.
    pub fn new(spec: &DataPlaneSpec, role: Serving, now: Millis) -> Option<Driver> {
        let h = spec.ha.clone()?;
        role.set(false);
        let unix = unix_now();
        let zero_unix_ms = u64::try_from(unix.as_millis()).unwrap_or(0).saturating_sub(now.0);
        let link = Link::new(h.key.clone(), spec.dip, h.peer, u64::try_from(unix.as_micros()).unwrap_or(0));
        Some(Driver {
            election: Election::new(settings(&h, spec.dip), now),
            spec: h,
            dip: spec.dip,
            vips: spec.vips(),
            digest: spec.services_digest(),
            // Microseconds since 1970: above every number this box sent before, across
            // restarts, at five adverts a second.
            sequence: u64::try_from(unix.as_micros()).unwrap_or(0),
            link,
            flow_sync: true,
            fault: None,
            links_read: None,
            role,
            inbox: Vec::with_capacity(ADVERT_QUEUE),
            peer: None,
            sent: 0,
            received: 0,
            ignored: BTreeMap::new(),
            last_ignored: None,
            transition: None,
            split: None,
            zero_unix_ms,
        })
    }

    /// In ipvs mode: the kernel's sync daemon carries the connections, so a returning box
    /// asks for no table and preempts when the election says.
    pub fn without_flow_sync(mut self) -> Driver {
        self.flow_sync = false;
        self
    }

    /// Whether this box is master now.
    pub fn is_master(&self) -> bool {
        self.election.role() == Role::Master
    }

    /// A reload with the pair still configured: new VIPs and services' digest; new settings
    /// keep the role this box has.
    pub fn configure(&mut self, spec: &DataPlaneSpec, now: Millis) {
        self.vips = spec.vips();
        self.digest = spec.services_digest();
        let Some(h) = spec.ha.clone() else { return };
        self.link.configure(&h.key, spec.dip, h.peer);
        if h != self.spec || spec.dip != self.dip {
            let was = self.election.role();
            self.election = Election::new(settings(&h, spec.dip), now);
            if was == Role::Master {
                self.election.resume_master(now);
            }
            self.spec = h;
            self.dip = spec.dip;
        }
    }

    /// Queue an advert frame for the next `poll`, or a sync datagram for the next `sync`;
    /// false if the queue is full.
    pub fn take(&mut self, frame: &[u8], _now: Millis) -> bool {
        if !is_advert(frame) {
            return self.link.take(frame);
        }
        if self.inbox.len() >= ADVERT_QUEUE {
            return false;
        }
        self.inbox.push(frame.to_vec());
        true
    }

    fn ignore(&mut self, why: Ignored, from: Option<Ipv4Addr>, now: Millis) {
        *self.ignored.entry(why.key()).or_default() += 1;
        if why != Ignored::OtherVrid {
            let n = self.ignored.get(why.key()).copied().unwrap_or(0);
            let from = from.map(|a| format!(" from {a}")).unwrap_or_default();
            self.last_ignored = Some((format!("{n} {}{from}: {}", why.key(), why.words()), now));
        }
    }

    /// Check one received advert frame; the election's answer if it is the peer's.
    fn check(&mut self, frame: &[u8], now: Millis) -> Option<Turn> {
        let parsed = EthernetFrame::new_checked(frame).ok().filter(|e| e.ethertype() == EthernetProtocol::Ipv4).and_then(|e| {
            Ipv4Packet::new_checked(e.payload())
                .ok()
                .map(|p| (p.src_addr(), p.dst_addr(), p.hop_limit(), p.verify_checksum(), p.payload().to_vec()))
        });
        let Some((src, dst, ttl, sum_ok, payload)) = parsed else {
            self.ignore(Ignored::Malformed, None, now);
            return None;
        };
        if src == self.dip {
            return None; // our own, looped back by a switch
        }
        if ttl != 255 || !sum_ok {
            self.ignore(Ignored::Malformed, Some(src), now);
            return None;
        }
        if payload.get(1) != Some(&self.spec.vrid) {
            self.ignore(Ignored::OtherVrid, Some(src), now);
            return None;
        }
        let a = match Advert::parse(src, dst, &payload, &self.spec.key) {
            Ok(a) => a,
            Err(e) => {
                self.ignore(Ignored::Invalid(e), Some(src), now);
                return None;
            }
        };
        if src != self.spec.peer {
            self.ignore(Ignored::NotPeer, Some(src), now);
            return None;
        }
        let fresh = self.peer.is_none_or(|p| a.sequence() > p.sequence || now.since(p.at) > REPLAY_MEMORY_MS);
        if !fresh {
            self.ignore(Ignored::Replayed, Some(src), now);
            return None;
        }
        let interval_ms = u64::from(a.interval_cs()) * 10;
        self.peer = Some(PeerSeen { priority: a.priority(), interval_ms, at: now, digest: a.digest(), sequence: a.sequence() });
        self.received += 1;
        if self.flow_sync && self.election.role() == Role::Backup && a.priority() != 0 {
            // A master: take its flow table (and, to preempt it, wait for it).
            self.link.want_table(now);
        }
        self.election.set_hold(self.link.waiting_for_table(now) && self.election.outranks(a.priority()));
        Some(self.election.advert(src, a.priority(), interval_ms, now))
    }

    /// Adverts received, then the timers; sends an advert when one is due.
    pub fn poll(&mut self, now: Millis, mut send: impl FnMut(&[u8]) -> bool) {
        if self.fault.is_some() {
            self.inbox.clear();
            return;
        }
        let inbox = std::mem::take(&mut self.inbox);
        for f in &inbox {
            if let Some(turn) = self.check(f, now) {
                self.follow(turn, now, &mut send);
            }
        }
        self.inbox = inbox;
        self.inbox.clear();
        let turn = self.election.tick(now);
        self.follow(turn, now, &mut send);
    }

    fn follow(&mut self, turn: Turn, now: Millis, send: &mut impl FnMut(&[u8]) -> bool) {
        if let Some(t) = turn.transition {
            let from = if t.to == Role::Master { "backup" } else { "master" };
            eprintln!("netfw: HA: {from} -> {}: {}", t.to.name(), t.why);
            self.transition = Some(HaTransition { to: t.to.name().into(), why: t.why.to_string(), at_unix_ms: self.zero_unix_ms + now.0 });
            self.role.set(t.to == Role::Master);
            self.link.forget_table();
        }
        if let Some(ms) = turn.split_brain_ms {
            eprintln!("netfw: HA: split brain resolved: both boxes were master for about {ms} ms");
            self.split = Some(SplitBrain { duration_ms: ms, resolved_unix_ms: self.zero_unix_ms + now.0 });
        }
        if turn.advertise {
            let priority = self.election.priority();
            self.advertise(priority, send);
        }
    }

    /// Write and send one advert with `priority`.
    fn advertise(&mut self, priority: u8, send: &mut impl FnMut(&[u8]) -> bool) {
        self.sequence += 1;
        let mut frame = [0u8; 14 + 20 + advert::HEADER + 4 * advert::MAX_VIPS + advert::TRAILER];
        let ours = Ours {
            vrid: self.spec.vrid,
            priority,
            interval_cs: u16::try_from(self.spec.advert_ms / 10).unwrap_or(20),
            vips: &self.vips,
            sequence: self.sequence,
            digest: self.digest,
        };
        let Some(n) = advert::emit(&mut frame[34..], self.dip, &ours, &self.spec.key) else { return };
        let repr = Ipv4Repr {
            src_addr: self.dip,
            dst_addr: VRRP_GROUP,
            next_header: IpProtocol::Unknown(PROTO_VRRP),
            payload_len: n,
            hop_limit: 255,
        };
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(EthernetAddress(GROUP_MAC));
        eth.set_src_addr(EthernetAddress(self.spec.virtual_mac()));
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
        repr.emit(&mut ip, &ChecksumCapabilities::default());
        if send(&frame[..34 + n]) {
            self.sent += 1;
        }
    }

    /// Every `LINKS_EVERY_MS`, read the links of `nics` (the dedicated NICs): a NIC without
    /// link puts this box in fault (a master hands over at once with priority 0, as when it
    /// stops); the link back, it starts again as backup.
    pub fn watch_links(&mut self, nics: &[&str], now: Millis, mut send: impl FnMut(&[u8]) -> bool) {
        if self.links_read.is_some_and(|t| now.since(t) < LINKS_EVERY_MS) {
            return;
        }
        self.links_read = Some(now);
        let fault = links_fault(nics);
        if fault == self.fault {
            return;
        }
        let at_unix_ms = self.zero_unix_ms + now.0;
        match &fault {
            Some(why) => {
                let was = self.election.role().name();
                if self.election.leave() {
                    self.advertise(0, &mut send);
                }
                self.role.set(false);
                eprintln!("netfw: HA: {was} -> fault: {why}");
                self.transition = Some(HaTransition { to: "fault".into(), why: why.clone(), at_unix_ms });
            }
            None => {
                self.election = Election::new(settings(&self.spec, self.dip), now);
                self.link.forget_table();
                eprintln!("netfw: HA: fault -> backup: the links are back");
                self.transition = Some(HaTransition { to: "backup".into(), why: "the links are back".into(), at_unix_ms });
            }
        }
        self.fault = fault;
    }

    /// Leaving (netfw stops): a master sends an advert of priority 0 so the backup takes over
    /// at once, and stops serving.
    pub fn leave(&mut self, mut send: impl FnMut(&[u8]) -> bool) {
        if self.election.leave() {
            self.advertise(0, &mut send);
            eprintln!("netfw: HA: master -> stopped: sent priority 0 so the backup takes over now");
        }
        self.role.set(false);
    }

    /// Put the pair's view into a status report, with its warnings.
    pub fn annotate(&self, s: &mut Status, now: Millis) {
        let st = HaStatus {
            state: if self.fault.is_some() { "fault" } else { self.election.role().name() }.into(),
            vrid: self.spec.vrid,
            virtual_mac: crate::io::nic::fmt_mac(&self.spec.virtual_mac()),
            priority: self.spec.priority,
            advert_ms: self.spec.advert_ms,
            preempt: self.spec.preempt,
            peer: self.spec.peer.to_string(),
            peer_advert: self.peer.map(|p| PeerAdvert {
                priority: p.priority,
                advert_ms: u32::try_from(p.interval_ms).unwrap_or(u32::MAX),
                age_ms: now.since(p.at),
                same_services: p.digest == self.digest,
            }),
            last_transition: self.transition.clone(),
            split_brain: self.split.clone(),
            adverts_sent: self.sent,
            adverts_received: self.received,
            adverts_ignored: self.ignored.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
            last_ignored: self.last_ignored.as_ref().filter(|(_, at)| now.since(*at) < IGNORED_WARNING_MS).map(|(w, _)| w.clone()),
            flow_sync: self.link.stats(),
        };
        for w in st.warnings() {
            if !s.warnings.contains(&w) {
                s.warnings.push(w);
            }
        }
        s.ha = Some(st);
    }
}
