//! The prober: a smoltcp interface of its own (medium IP, the DIP as its address) with one
//! socket per checked real server. Each probe takes a local port from `PROBE_PORTS`; every
//! packet it sends leaves with the MAC of the server that port belongs to, whatever its IP
//! destination, so a probe to VIP:port takes exactly the path a client's packet takes after
//! the director (seed 001: the server must hold the VIP on `lo` and answer from it), and a
//! probe to the RIP the server's own address. The server's replies come back to the DIP.
//!
//! Results feed each server's `CheckState` (core); a change of state is an event (console,
//! status) and goes on the health board, which every worker's forwarder follows.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use director_messages::status::{HealthEvent, ServerHealth, Status};
use netfw_core::forward::Forwarder;
use netfw_core::health::{CheckState, Failure, Health, Outcome, PROBE_PORTS};
use netfw_core::model::{CheckKind, DataPlaneSpec, Forwarding, HealthCheck, Via};
use netfw_core::time::Millis;
use netfw_core::wire::Mac;

use super::http_check::{Exchange, Pipe, HTTP_READ};
use super::kernel_probe::KernelProbe;
use super::HealthBoard;
use crate::stack::ts;

/// Health events kept for status.
pub const EVENTS_KEPT: usize = 64;
/// How long after a config is installed a server's unknown MAC is not yet held against it
/// (ARP from the DIP is still being answered).
const MAC_GRACE_MS: u64 = 3_000;
/// The prober runs at most this often (smoltcp's poll walks every socket: with 1,000 servers
/// that is tens of microseconds, too much for every turn of a busy loop); replies wait in its
/// queue meanwhile.
pub const POLL_EVERY_MS: u64 = 5;
/// IP packets queued each way (replies between two polls; probes smoltcp sends in one poll).
pub const PROBE_QUEUE: usize = 1024;
/// Largest IP packet the prober takes or sends.
const PROBE_MTU: usize = 1500;

/// The prober's device: two queues of IP packets, on the heap (the prober is not on the
/// fast path; its queues are deep enough for a few thousand servers' replies between polls).
#[derive(Debug, Default)]
struct IpQueues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

/// Receive token.
struct QRx(Vec<u8>);
/// Transmit token.
struct QTx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for QRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for QTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len.min(PROBE_MTU)];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl Device for IpQueues {
    type RxToken<'a> = QRx;
    type TxToken<'a> = QTx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(QRx, QTx<'_>)> {
        if self.tx.len() >= PROBE_QUEUE {
            return None;
        }
        let f = self.rx.pop_front()?;
        Some((QRx(f), QTx(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<QTx<'_>> {
        (self.tx.len() < PROBE_QUEUE).then_some(QTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = PROBE_MTU;
        c
    }
}

/// A probe under way.
#[derive(Debug)]
struct Probe {
    started: Millis,
    /// Its local port.
    port: u16,
    /// HTTP(S): the exchange (`None`: TLS could not begin).
    http: Option<Exchange>,
    /// TCP: the connection was open at some point (a reset before that is a refusal).
    opened: bool,
}

impl Probe {
    fn new(kind: &CheckKind, dst: Ipv4Addr, started: Millis, port: u16) -> Probe {
        let http = match kind {
            CheckKind::Http { tls, path, host, status_min, status_max } => {
                Exchange::new(*tls, path, host.as_deref(), dst, *status_min, *status_max).ok()
            }
            _ => None,
        };
        Probe { started, port, http, opened: false }
    }
}

/// A smoltcp TCP socket as an HTTP check's pipe.
struct SmolPipe<'a, 'b>(&'a mut tcp::Socket<'b>);

impl Pipe for SmolPipe<'_, '_> {
    fn send(&mut self, data: &[u8]) -> Result<usize, Failure> {
        Ok(if self.0.may_send() { self.0.send_slice(data).unwrap_or(0) } else { 0 })
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Failure> {
        if self.0.can_recv() {
            return Ok(self.0.recv_slice(buf).ok().filter(|n| *n > 0));
        }
        Ok((!self.0.may_recv()).then_some(0))
    }
}

/// How probes to a real server's own address go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RipProbes {
    /// On the prober's smoltcp interface (forwarder mode: smoltcp holds the DIP).
    Smoltcp,
    /// On the kernel's sockets (ipvs mode: the kernel holds the DIP, and would reset a
    /// handshake smoltcp began from it).
    Kernel,
}

/// One socket's probes to one address.
#[derive(Debug)]
struct Slot {
    /// Where its probes are addressed (VIP or RIP).
    dst: Ipv4Addr,
    /// Its smoltcp socket; `None`: its probes go on the kernel's sockets.
    socket: Option<SocketHandle>,
    probe: Option<Probe>,
    /// The kernel's socket of a probe under way (or the result it met at once).
    kernel: Option<Result<KernelProbe, Outcome>>,
    /// The prober's poll count when its socket was last closed (a new probe waits for a poll
    /// in between, so the reset of the last one goes out first).
    closed_at: u64,
    /// Its last result.
    last: Option<Outcome>,
}

/// One checked real server of one service.
#[derive(Debug)]
struct Target {
    /// The service and server it checks (to carry its state over a reload).
    key: (Ipv4Addr, u8, u16, Ipv4Addr),
    backend: u16,
    service: String,
    check: HealthCheck,
    state: CheckState,
    /// The check as configured (through the DR path, or to the RIP).
    main: Slot,
    /// For a check through the DR path: the same check to the RIP, run after each failure,
    /// so the doctor can tell "the VIP is not on lo" from "the server is down".
    rip: Option<Slot>,
    /// A failure of `main` asks for a probe of `rip`.
    rip_wanted: bool,
    /// TUN through the DR path: probes to the VIP go inside IPIP to this address (the RIP),
    /// as IPVS sends clients' packets.
    tunnel: Option<Ipv4Addr>,
}

/// Which of a target's slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Main,
    Rip,
}

impl Target {
    fn slot(&mut self, w: Which) -> Option<&mut Slot> {
        match w {
            Which::Main => Some(&mut self.main),
            Which::Rip => self.rip.as_mut(),
        }
    }
}

/// The health prober.
pub struct Prober {
    iface: Interface,
    rip_probes: RipProbes,
    dip: Ipv4Addr,
    sockets: SocketSet<'static>,
    dev: IpQueues,
    rs_mac: Mac,
    targets: Vec<Target>,
    /// Local port (from `PROBE_PORTS.start`) → the target that used it last.
    ports: Vec<Option<usize>>,
    next_port: u16,
    polls: u64,
    /// Probes under way (each holds a port).
    under_way: usize,
    next_poll: Millis,
    configured_at: Millis,
    events: VecDeque<HealthEvent>,
    board: Arc<HealthBoard>,
    /// Unix time (ms) at `Millis(0)`.
    zero_unix_ms: u64,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").field("targets", &self.targets.len()).finish()
    }
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// "tcp 203.0.113.10:80".
fn service_name(proto: &str, vip: Ipv4Addr, port: u16) -> String {
    format!("{proto} {vip}:{port}")
}

impl Prober {
    /// A prober for `spec`'s checked servers, sending from `rs_mac`; verdicts go on `board`.
    pub fn new(spec: &DataPlaneSpec, rs_mac: Mac, board: Arc<HealthBoard>, seed: u64, now: Millis) -> Prober {
        Prober::with_rip_probes(spec, rs_mac, board, seed, now, RipProbes::Smoltcp)
    }

    /// `new`, with probes to real servers' own addresses going as `rip_probes` says.
    pub fn with_rip_probes(
        spec: &DataPlaneSpec,
        rs_mac: Mac,
        board: Arc<HealthBoard>,
        seed: u64,
        now: Millis,
        rip_probes: RipProbes,
    ) -> Prober {
        let mut dev = IpQueues::default();
        let mut cfg = IfaceConfig::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let iface = Interface::new(cfg, &mut dev, ts(now));
        let zero_unix_ms = unix_ms_now().saturating_sub(now.0);
        let mut p = Prober {
            iface,
            rip_probes,
            dip: spec.dip,
            sockets: SocketSet::new(Vec::new()),
            dev,
            rs_mac,
            targets: Vec::new(),
            ports: vec![None; usize::from(PROBE_PORTS.end - PROBE_PORTS.start)],
            next_port: 0,
            polls: 0,
            under_way: 0,
            next_poll: now,
            configured_at: now,
            events: VecDeque::new(),
            board,
            zero_unix_ms,
        };
        p.configure(spec, Arc::clone(&p.board), now);
        p
    }

    /// Check the servers of a new config (servers that stay, with the same check, keep their
    /// state); verdicts go on `board` from now on.
    pub fn configure(&mut self, spec: &DataPlaneSpec, board: Arc<HealthBoard>, now: Millis) {
        self.iface.update_ip_addrs(|a| {
            a.clear();
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(spec.dip), spec.dip_prefix));
        });
        // Medium IP needs no neighbour, only a route for addresses off the DIP's subnet (VIPs).
        let _ = self.iface.routes_mut().add_default_ipv4_route(spec.dip);
        self.dip = spec.dip;
        let mut old: Vec<Target> = std::mem::take(&mut self.targets);
        for t in &old {
            for s in [Some(&t.main), t.rip.as_ref()].into_iter().flatten().filter_map(|s| s.socket) {
                self.sockets.remove(s);
            }
        }
        self.under_way = 0;
        let mut backend = 0u16;
        for s in &spec.services {
            let first = backend;
            backend =
                backend.saturating_add(u16::try_from(s.real_servers.len() + usize::from(s.sorry_server.is_some())).unwrap_or(u16::MAX));
            let Some(check) = &s.health else { continue };
            for (i, r) in s.real_servers.iter().enumerate() {
                let key = (s.vip, s.proto.number(), s.port, r.addr);
                let carried = old.iter_mut().find(|t| t.key == key && t.check == *check).map(|t| t.state);
                let (main, rip) = match check.via {
                    Via::Vip => (self.slot(s.vip, &check.kind, false), Some(self.slot(r.addr, &check.kind, true))),
                    Via::Rip => (self.slot(r.addr, &check.kind, true), None),
                };
                self.targets.push(Target {
                    key,
                    backend: first.saturating_add(u16::try_from(i).unwrap_or(u16::MAX)),
                    service: service_name(s.proto.name(), s.vip, s.port),
                    check: check.clone(),
                    state: carried.unwrap_or_else(|| CheckState::new(now)),
                    main,
                    rip,
                    rip_wanted: false,
                    tunnel: (s.forwarding == Forwarding::Tun && check.via == Via::Vip).then_some(r.addr),
                });
            }
        }
        old.clear();
        self.ports.iter_mut().for_each(|p| *p = None);
        self.configured_at = now;
        for t in &self.targets {
            board.set(t.backend, t.state.health == Health::Up);
        }
        self.board = board;
    }

    /// A slot for probes of `kind` to `dst` (`to_rip`: a real server's own address), with a
    /// smoltcp socket of its own unless its probes go on the kernel's sockets.
    fn slot(&mut self, dst: Ipv4Addr, kind: &CheckKind, to_rip: bool) -> Slot {
        if to_rip && self.rip_probes == RipProbes::Kernel {
            return Slot { dst, socket: None, probe: None, kernel: None, closed_at: 0, last: None };
        }
        let socket = match kind {
            CheckKind::Udp { .. } => self.sockets.add(udp::Socket::new(
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 2048]),
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 2048]),
            )),
            // TLS: room for a server's first flight (its certificates) in one window.
            CheckKind::Http { tls: true, .. } => {
                self.sockets.add(tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 4 * HTTP_READ]), tcp::SocketBuffer::new(vec![0; 2048])))
            }
            _ => self.sockets.add(tcp::Socket::new(tcp::SocketBuffer::new(vec![0; HTTP_READ]), tcp::SocketBuffer::new(vec![0; 1024]))),
        };
        Slot { dst, socket: Some(socket), probe: None, kernel: None, closed_at: 0, last: None }
    }

    /// Queue a probe reply (an Ethernet frame, `is_probe_reply`); false if the queue is full.
    pub fn push_rx(&mut self, frame: &[u8]) -> bool {
        let Some(ip) = frame.get(14..).filter(|ip| ip.len() <= PROBE_MTU) else { return false };
        if self.dev.rx.len() >= PROBE_QUEUE {
            return false;
        }
        self.dev.rx.push_back(ip.to_vec());
        true
    }

    /// Start the probes that are due, let smoltcp work, send what it sends, and take the
    /// results of the probes under way.
    pub fn poll(&mut self, now: Millis, fwd: &Forwarder, mut send: impl FnMut(&[u8]) -> bool) {
        if self.targets.is_empty() {
            self.dev.rx.clear();
            return;
        }
        if now < self.next_poll {
            return;
        }
        self.next_poll = now.plus(POLL_EVERY_MS);
        self.polls += 1;
        for t in &mut self.targets {
            if self.board.take_suspect(t.backend) {
                t.state.expedite(now);
            }
        }
        for i in 0..self.targets.len() {
            self.start_if_due(i, now, fwd);
            self.start_rip_if_wanted(i, now);
        }
        let _ = self.iface.poll(ts(now), &mut self.dev, &mut self.sockets);
        let mut frame = [0u8; 14 + 20 + PROBE_MTU];
        while let Some(pkt) = self.dev.tx.pop_front() {
            let Some((mac, tunnel)) = self.mac_for(&pkt, fwd) else { continue };
            let outer = if tunnel.is_some() { 20 } else { 0 };
            let n = 14 + outer + pkt.len();
            if let Some(f) = frame.get_mut(..n) {
                f[0..6].copy_from_slice(&mac);
                f[6..12].copy_from_slice(&self.rs_mac);
                f[12..14].copy_from_slice(&[0x08, 0x00]);
                if let Some(rip) = tunnel {
                    f[14..34].copy_from_slice(&ipip_header(self.dip, rip, pkt.len()));
                }
                f[14 + outer..].copy_from_slice(&pkt);
                let _ = send(f);
            }
        }
        for i in 0..self.targets.len() {
            if let Some(outcome) = self.progress(i, Which::Main, now) {
                self.finish(i, outcome, now);
            }
            if let Some(outcome) = self.progress(i, Which::Rip, now) {
                self.close(i, Which::Rip, outcome);
            }
        }
    }

    /// The MAC of the server a probe packet (IP, from the DIP) is for, by its source port;
    /// and for TUN through the DR path, the RIP to tunnel it to.
    fn mac_for(&self, pkt: &[u8], fwd: &Forwarder) -> Option<(Mac, Option<Ipv4Addr>)> {
        let ihl = usize::from(pkt.first()? & 0x0f) * 4;
        let sport = u16::from_be_bytes([*pkt.get(ihl)?, *pkt.get(ihl + 1)?]);
        let t = self.ports.get(usize::from(sport.checked_sub(PROBE_PORTS.start)?))?.and_then(|t| self.targets.get(t))?;
        let to_vip = pkt.get(16..20) == Some(&t.main.dst.octets()[..]);
        Some((fwd.backends().get(usize::from(t.backend))?.mac?, t.tunnel.filter(|_| to_vip)))
    }

    fn start_if_due(&mut self, i: usize, now: Millis, fwd: &Forwarder) {
        let polls = self.polls;
        let Some(t) = self.targets.get_mut(i) else { return };
        if t.main.probe.is_some() || !t.state.due(now) || t.main.closed_at >= polls {
            return;
        }
        let interval = t.check.interval_ms;
        if fwd.backends().get(usize::from(t.backend)).and_then(|b| b.mac).is_none() {
            t.state.started(now, interval);
            // No probe can reach it. Held against it once ARP has had its time.
            if now.since(self.configured_at) >= MAC_GRACE_MS {
                self.finish(i, Outcome::Fail(Failure::NoMac), now);
            }
            return;
        }
        // Without a free port it stays due, and is tried at the next poll.
        if self.start(i, Which::Main, now) {
            if let Some(t) = self.targets.get_mut(i) {
                t.state.started(now, interval);
            }
        }
    }

    /// After a failure through the DR path, the same check to the server's own address.
    fn start_rip_if_wanted(&mut self, i: usize, now: Millis) {
        let polls = self.polls;
        let Some(t) = self.targets.get_mut(i) else { return };
        let Some(r) = t.rip.as_ref() else { return };
        if t.rip_wanted && r.probe.is_none() && r.closed_at < polls && self.start(i, Which::Rip, now) {
            if let Some(t) = self.targets.get_mut(i) {
                t.rip_wanted = false;
            }
        }
    }

    /// Start a probe on target `i`'s slot `w`; false if it could not (no free port).
    fn start(&mut self, i: usize, w: Which, now: Millis) -> bool {
        let dip = self.dip;
        let Some(t) = self.targets.get_mut(i) else { return false };
        let (check_port, timeout_ms) = (t.check.port, t.check.timeout_ms);
        let kind = t.check.kind.clone();
        if let Some(slot) = t.slot(w).filter(|s| s.socket.is_none()) {
            slot.kernel = Some(KernelProbe::start(&kind, dip, SocketAddrV4::new(slot.dst, check_port), timeout_ms));
            slot.probe = Some(Probe::new(&kind, slot.dst, now, 0));
            return true;
        }
        let Some(port) = self.take_port(i) else { return false };
        let Some(slot) = self.targets.get_mut(i).and_then(|t| t.slot(w)) else { return false };
        let Some(socket) = slot.socket else { return false };
        let remote = IpEndpoint::new(IpAddress::Ipv4(slot.dst), check_port);
        let started = match &kind {
            CheckKind::Udp { send, .. } => {
                let s = self.sockets.get_mut::<udp::Socket>(socket);
                s.close();
                s.bind(port).is_ok() && s.send_slice(send, remote).is_ok()
            }
            _ => self.sockets.get_mut::<tcp::Socket>(socket).connect(self.iface.context(), remote, port).is_ok(),
        };
        if started {
            slot.probe = Some(Probe::new(&kind, slot.dst, now, port));
            self.under_way += 1;
        }
        started
    }

    /// The next probe port no probe under way uses, now belonging to target `i` (ports are
    /// taken in turn, so one is reused as late as possible; `None` if every one is busy).
    fn take_port(&mut self, i: usize) -> Option<u16> {
        let n = self.ports.len();
        if self.under_way >= n {
            return None;
        }
        for _ in 0..n {
            let slot = usize::from(self.next_port) % n;
            self.next_port = u16::try_from((slot + 1) % n).unwrap_or(0);
            let port = PROBE_PORTS.start.checked_add(u16::try_from(slot).ok()?)?;
            let busy = self.ports.get(slot).copied().flatten().and_then(|t| self.targets.get(t)).is_some_and(|t| {
                [Some(&t.main), t.rip.as_ref()].into_iter().flatten().any(|s| s.probe.as_ref().is_some_and(|p| p.port == port))
            });
            if !busy {
                *self.ports.get_mut(slot)? = Some(i);
                return Some(port);
            }
        }
        None
    }

    /// A probe's result, if it has one now.
    fn progress(&mut self, i: usize, w: Which, now: Millis) -> Option<Outcome> {
        let t = self.targets.get_mut(i)?;
        let check = &t.check;
        let timeout_ms = check.timeout_ms;
        // Through the DR path, the server's own address (a reply from it is on the wrong path).
        let own = t.rip.as_ref().map(|r| r.dst).filter(|_| w == Which::Main);
        let slot = match w {
            Which::Main => &mut t.main,
            Which::Rip => t.rip.as_mut()?,
        };
        let dst = slot.dst;
        let p = slot.probe.as_mut()?;
        let timed_out = now.since(p.started) >= u64::from(timeout_ms);
        let socket = match (slot.socket, slot.kernel.as_mut()) {
            (Some(s), _) => s,
            (None, Some(Ok(k))) => return k.progress(&check.kind, timeout_ms, timed_out),
            (None, Some(Err(o))) => return Some(*o),
            (None, None) => return None,
        };
        let no_answer = Outcome::Fail(Failure::NoAnswer(timeout_ms));
        match &check.kind {
            CheckKind::Udp { expect, .. } => {
                let s = self.sockets.get_mut::<udp::Socket>(socket);
                while let Ok((data, meta)) = s.recv() {
                    if meta.endpoint.port != check.port {
                        continue;
                    }
                    if meta.endpoint.addr == IpAddress::Ipv4(dst) {
                        return Some(if data.starts_with(expect) { Outcome::Pass } else { Outcome::Fail(Failure::WrongReply) });
                    }
                    if own.is_some_and(|o| meta.endpoint.addr == IpAddress::Ipv4(o)) {
                        return Some(Outcome::Fail(Failure::ReplyFromRip));
                    }
                }
                timed_out.then_some(no_answer)
            }
            CheckKind::Tcp => {
                let s = self.sockets.get_mut::<tcp::Socket>(socket);
                match s.state() {
                    tcp::State::SynSent | tcp::State::SynReceived => timed_out.then_some(no_answer),
                    tcp::State::Closed => Some(Outcome::Fail(Failure::Refused)),
                    _ => Some(Outcome::Pass),
                }
            }
            CheckKind::Http { .. } => {
                let s = self.sockets.get_mut::<tcp::Socket>(socket);
                match s.state() {
                    tcp::State::SynSent | tcp::State::SynReceived => return timed_out.then_some(no_answer),
                    tcp::State::Closed if !p.opened => return Some(Outcome::Fail(Failure::Refused)),
                    _ => p.opened = true,
                }
                let Some(x) = p.http.as_mut() else { return Some(Outcome::Fail(Failure::Tls)) };
                x.step(&mut SmolPipe(s)).or_else(|| timed_out.then_some(no_answer))
            }
        }
    }

    /// A probe of target `i` ended with `outcome` (or none could be sent): close its socket,
    /// record the result, and on a change of state tell the board, the console and status.
    fn finish(&mut self, i: usize, outcome: Outcome, now: Millis) {
        self.close(i, Which::Main, outcome);
        let Some(t) = self.targets.get_mut(i) else { return };
        match outcome {
            Outcome::Pass => {
                if let Some(r) = t.rip.as_mut() {
                    r.last = None;
                }
            }
            Outcome::Fail(Failure::NoMac) => {}
            Outcome::Fail(_) => t.rip_wanted = t.rip.is_some(),
        }
        let Some(tr) = t.state.record(outcome, t.check.rise, t.check.fall, now) else { return };
        self.board.set(t.backend, tr.to == Health::Up);
        let e = HealthEvent {
            at_unix_ms: self.zero_unix_ms + now.0,
            service: t.service.clone(),
            server: t.key.3.to_string(),
            from: tr.from.name().into(),
            to: tr.to.name().into(),
            reason: format!("{} ({})", tr.reason, describe(&t.check, t.main.dst)),
        };
        eprintln!("netfw: health: {}", e.line());
        if self.events.len() >= EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Target `i`'s probe on slot `w` ended with `outcome`: its socket closed (a TCP reset
    /// goes out with the next poll), the result kept.
    fn close(&mut self, i: usize, w: Which, outcome: Outcome) {
        let polls = self.polls;
        let Some(t) = self.targets.get_mut(i) else { return };
        let udp = matches!(t.check.kind, CheckKind::Udp { .. });
        let Some(slot) = t.slot(w) else { return };
        slot.last = Some(outcome);
        if slot.probe.take().is_some() {
            slot.closed_at = polls;
            let Some(socket) = slot.socket else {
                // The kernel's socket closes (with a reset) as it is dropped.
                slot.kernel = None;
                return;
            };
            self.under_way = self.under_way.saturating_sub(1);
            if udp {
                self.sockets.get_mut::<udp::Socket>(socket).close();
            } else {
                self.sockets.get_mut::<tcp::Socket>(socket).abort();
            }
        }
    }

    /// What the checks tell of a checked server's setup, in the seeds' terms: a check
    /// through the DR path that fails while the same check to its own address passes.
    fn diagnose(t: &Target) -> Option<String> {
        let r = t.rip.as_ref()?;
        match (t.main.last, r.last) {
            (Some(Outcome::Fail(why)), Some(Outcome::Pass)) if why != Failure::NoMac && t.tunnel.is_some() => Some(format!(
                "the check through the IPIP tunnel fails ({why}) while the same check to its own address {} passes: its tunl0 is down or lacks the VIP {}, or its reverse-path filter drops what arrives on tunl0 (set rp_filter=0 on tunl0 and all, seed 002)",
                r.dst, t.main.dst
            )),
            (Some(Outcome::Fail(why)), Some(Outcome::Pass)) if why != Failure::NoMac => Some(format!(
                "the check through the DR path fails ({why}) while the same check to its own address {} passes: the VIP {} is not on its lo, or its service does not listen on the VIP (seed 001, real-server step 2)",
                r.dst, t.main.dst
            )),
            _ => None,
        }
    }

    /// Each checked backend's verdict: `Some(up)` once its check has a result, `None` before.
    pub fn verdicts(&self) -> impl Iterator<Item = (u16, Option<bool>)> + '_ {
        self.targets.iter().map(|t| (t.backend, t.state.last.map(|_| t.state.health == Health::Up)))
    }

    /// Add the checks' view to a status report of the same config: each checked server's
    /// health, each checked service's state, and the events. Services and servers are found
    /// by address, so the report may be the kernel's (ipvs mode): there a server the checks
    /// took out of IPVS still has its row (weight as configured, no traffic), and a sorry
    /// server in IPVS is named as the service's sorry server, not among its real servers.
    pub fn annotate(&self, status: &mut Status, fwd: &Forwarder) {
        let by_backend: std::collections::BTreeMap<u16, &Target> = self.targets.iter().map(|t| (t.backend, t)).collect();
        let backend = |b: u16| fwd.backends().get(usize::from(b));
        for svc in fwd.services() {
            let Some(ss) = status.service_mut(svc.proto.name(), &svc.vip.to_string(), svc.port) else { continue };
            ss.as_configured(
                svc.backends.iter().filter_map(|&b| backend(b)).map(|b| (b.rip.to_string(), b.weight)),
                svc.sorry.and_then(backend).map(|b| b.rip.to_string()),
            );
            let mut any = false;
            let mut any_up = false;
            for &b in &svc.backends {
                let (Some(&t), Some(be)) = (by_backend.get(&b), backend(b)) else { continue };
                let address = be.rip.to_string();
                let Some(rs) = ss.real_servers.iter_mut().find(|r| r.address == address) else { continue };
                any = true;
                any_up |= t.state.health == Health::Up && rs.weight > 0;
                rs.diagnosis.extend(Self::diagnose(t));
                rs.health = Some(ServerHealth {
                    state: t.state.health.name().into(),
                    last: t.state.last.map_or_else(|| "not checked yet".to_string(), |o| o.to_string()),
                    since_unix_ms: self.zero_unix_ms + t.state.since.0,
                    check: describe(&t.check, t.main.dst),
                });
            }
            if any {
                ss.state = Some(
                    if any_up {
                        "up"
                    } else if svc.sorry.is_some() {
                        "sorry"
                    } else {
                        "down"
                    }
                    .into(),
                );
            }
        }
        status.health_events = self.events.iter().cloned().collect();
    }
}

/// "tcp to 203.0.113.10:80 through the DR path", "http GET / to 198.18.0.11:80".
fn describe(c: &HealthCheck, dst: Ipv4Addr) -> String {
    let what = match &c.kind {
        CheckKind::Tcp => "tcp".to_string(),
        CheckKind::Http { tls, path, .. } => format!("{} GET {path}", if *tls { "https" } else { "http" }),
        CheckKind::Udp { .. } => "udp".to_string(),
    };
    let path = if c.via == Via::Vip { " through the DR path" } else { "" };
    format!("{what} to {dst}:{}{path}", c.port)
}

/// The outer IPv4 header of a probe tunnelled to `rip` (IPIP, as IPVS's TUN sends).
fn ipip_header(dip: Ipv4Addr, rip: Ipv4Addr, inner: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&u16::try_from(20 + inner).unwrap_or(u16::MAX).to_be_bytes());
    h[8] = 64;
    h[9] = 4;
    h[12..16].copy_from_slice(&dip.octets());
    h[16..20].copy_from_slice(&rip.octets());
    let c = netfw_core::wire::csum::ipv4_header_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use netfw_core::forward::Side;
    use netfw_core::model::{Forwarding, Protocol, RealServerSpec, SchedKind, ServiceSpec, Timeouts};

    /// Two services checked through the DR path, `slow` servers every 500 ms and `quick` ones
    /// every 100 ms (so probes end in another order than they began), every server resolved,
    /// none answering.
    fn silent_servers(slow: u32, quick: u32) -> (DataPlaneSpec, Forwarder) {
        let rip = |i: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 16, 0)) + i);
        let service = |port: u16, servers: core::ops::Range<u32>, ms: u32| ServiceSpec {
            vip: Ipv4Addr::new(203, 0, 113, 10),
            proto: Protocol::Tcp,
            port,
            port_last: port,
            sched: SchedKind::Rr,
            persistence_s: 0,
            persistence_group: None,
            forwarding: Forwarding::Dr,
            real_servers: servers.map(|i| RealServerSpec { addr: rip(i), weight: 1 }).collect(),
            health: Some(HealthCheck { kind: CheckKind::Tcp, port, via: Via::Vip, interval_ms: ms, timeout_ms: ms, rise: 2, fall: 2 }),
            sorry_server: None,
        };
        let spec = DataPlaneSpec {
            dip: Ipv4Addr::new(198, 18, 0, 2),
            dip_prefix: 16,
            vip_prefix: 24,
            gateway: None,
            services: vec![service(80, 0..slow, 500), service(81, slow..slow + quick, 100)],
            flow_capacity: 64,
            timeouts: Timeouts::default(),
            arp_refresh_ms: 3_600_000,
            ha: None,
        };
        let mac = [2, 0, 0, 0, 0xd0, 1];
        let mut fwd = Forwarder::new(spec.clone(), mac, mac, true, 1, Millis(0));
        for i in 0..slow + quick {
            let [_, _, hi, lo] = i.to_be_bytes();
            let mut a = vec![0xff; 6];
            a.extend_from_slice(&[2, 0, 0, 1, hi, lo, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2, 2, 0, 0, 1, hi, lo]);
            a.extend_from_slice(&rip(i).octets());
            a.extend_from_slice(&mac);
            a.extend_from_slice(&[198, 18, 0, 2]);
            fwd.process(Side::Vip, &mut a, Millis(0));
        }
        (spec, fwd)
    }

    #[test]
    fn more_servers_than_probe_ports_wait_their_turn_and_no_port_serves_two_probes() {
        // 2,200 silent servers: with the doctor's second probes, more probes are due at once
        // than there are ports (4,000), and the quick ones free theirs long before the slow.
        let (spec, fwd) = silent_servers(1700, 500);
        let mut p = Prober::new(&spec, [2, 0, 0, 0, 0xd0, 1], Arc::new(HealthBoard::new(spec.backend_count())), 1, Millis(0));
        let mut most = 0;
        for t in (0..3_000).step_by(5) {
            p.poll(Millis(t), &fwd, |_| true);
            let ports: Vec<u16> = p
                .targets
                .iter()
                .flat_map(|t| [Some(&t.main), t.rip.as_ref()])
                .flatten()
                .filter_map(|s| s.probe.as_ref().map(|x| x.port))
                .collect();
            let mut unique = ports.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), ports.len(), "two probes under way on one port at {t} ms");
            assert_eq!(ports.len(), p.under_way);
            most = most.max(ports.len());
        }
        assert_eq!(most, p.ports.len(), "every port was used at once");
        assert!(p.targets.iter().all(|t| t.state.last.is_some()), "every server was probed in the end");
    }
}
