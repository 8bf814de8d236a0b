//! `netfw run`: open the dedicated NICs, then forward until told to stop.
//!
//! One worker thread per group of receive queues (`workers`: AF_XDP on a NIC with several
//! queues; one worker otherwise), each running the poll loop (`pump::turn`) over its part of
//! the NICs. This thread coordinates: it serves the control socket and the signals. A reload
//! (`netfw reload`, SIGHUP) is prepared on another thread (`reload`) and only installed by the
//! workers, so a large config does not stall forwarding. SIGTERM/SIGINT stop.

use crate::capture;
use director_messages::init::{CaptureNic, CaptureSpec, CAPTURE_FILE};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use director_config::{Config, ConfigError, Mode};
use director_messages::connections::{ConnectionFilter, Connections};
use director_messages::netfw::{NetfwAnswer, NetfwRequest};
use director_messages::status::Status;
use director_messages::{one_line, Problem};
use netfw_core::forward::{Forwarder, PlanError, SharedLoad, Side};
use netfw_core::model::DataPlaneSpec;
use netfw_core::time::Millis;

use crate::ctl::Control;
use crate::health::{HealthBoard, Prober, Probes, RELAY_QUEUE};
use crate::io::backend::{self, InKernel, KernelSetup, OpenError, Opened};
use crate::io::kernel_flows::{monotonic_ns, KernelFlows};
use crate::io::membership::{self, Membership};
use crate::io::nic::{fmt_mac, mtu, NicError};
use crate::io::xsk::XdpPort;
use crate::io::{nic_mac, Port};
use crate::pair::{Pair, Serving};
use crate::pump::Nic;
use crate::reload::{self, Prepared, Reloading};
use crate::stack::{ControlStack, Roles};
use crate::status;
use crate::workers::{Install, Order, Worker};

pub(crate) static RELOAD: AtomicBool = AtomicBool::new(false);
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hup(_: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}
extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Why `netfw run` stopped with an error.
#[derive(Debug)]
pub enum RunError {
    /// The config is unreadable or invalid.
    Config(ConfigError),
    /// The config asks for IPVS mode.
    NotForwarderMode,
    /// A NIC reference names no NIC of this system.
    NicRefs(Vec<Problem>),
    /// A NIC cannot be used.
    Nic(NicError),
    /// A NIC's sockets cannot be opened.
    Open(OpenError),
    /// The control socket cannot be opened.
    Control(PathBuf, std::io::Error),
    /// A dedicated NIC exists but the forwarder cannot serve it.
    NicUnusable(String),
    /// The flow table does not fit in this box's memory.
    Memory(Problem),
    /// The tables could not be built.
    Tables(PlanError),
}

/// The exit status of `netfw run` when its NICs cannot be used: the appliance falls back to
/// IPVS mode on it.
pub const EXIT_NICS_UNUSABLE: u8 = 3;

/// Largest MTU the rings carry (a 2 KiB slot holds a 1514-byte frame and the ring's headers).
pub const MAX_MTU: u32 = 1500;

impl RunError {
    /// The NICs (not the config) are the problem: another mode may still work.
    pub fn nics_unusable(&self) -> bool {
        matches!(self, RunError::Nic(_) | RunError::Open(_) | RunError::NicUnusable(_))
    }
}

/// A NIC's MTU; refused if the rings cannot carry its frames, or if it cannot be read.
pub fn check_mtu(nic: &str) -> Result<usize, RunError> {
    let mtu = mtu(nic).map_err(|e| RunError::NicUnusable(e.to_string()))?;
    if mtu > MAX_MTU {
        return Err(RunError::NicUnusable(format!(
            "NIC {nic} has MTU {mtu}: netfw's rings carry standard Ethernet frames (MTU at most {MAX_MTU}); use ipvs mode for jumbo frames"
        )));
    }
    Ok(usize::try_from(mtu).unwrap_or(1500))
}

/// Turn off receive merging on a NIC netfw owns; the start line says what became of it.
fn merging_off(nic: &str) -> String {
    match netfw_kernel::ethtool::receive_merging_off(nic) {
        Ok(r) if r.all_off() => r.to_string(),
        Ok(r) => format!("WARNING {r}: merged TCP frames are split in software, other merged frames are dropped (oversize)"),
        Err(e) => format!("WARNING {nic}: {e}; merged TCP frames are split in software"),
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Config(e) => e.fmt(f),
            RunError::NotForwarderMode => write!(f, "the config's mode is \"ipvs\": netfw forwards only in \"forwarder\" mode; IPVS mode is programmed into the kernel by the appliance"),
            RunError::NicRefs(p) => f.write_str(&one_line(p)),
            RunError::Nic(e) => e.fmt(f),
            RunError::Open(e) => e.fmt(f),
            RunError::Control(p, e) => write!(f, "cannot open the control socket {}: {e}", p.display()),
            RunError::NicUnusable(m) => f.write_str(m),
            RunError::Memory(p) => p.fmt(f),
            RunError::Tables(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RunError {}

/// Options of `netfw run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The config file (re-read on reload).
    pub config: PathBuf,
    /// The control socket.
    pub control: PathBuf,
}

pub(crate) fn seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        b = (u64::from(t) ^ u64::from(std::process::id())).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

pub(crate) fn install_signals() {
    // SAFETY: installing async-signal-safe handlers that only store to atomics.
    unsafe {
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
    }
    // SAFETY: as above.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
    // SAFETY: as above.
    unsafe {
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }
}

/// The coordinator's state: the config in force, each worker's share of it, the workers'
/// order channels, and a reload under way.
struct Coordinator {
    cfg: Config,
    /// The pair's virtual MAC and the VRRP group, received on the VIP-facing NIC while this
    /// box is one of a pair.
    pair_macs: Option<Membership>,
    running: Vec<DataPlaneSpec>,
    workers: Vec<Sender<Order>>,
    reloading: Option<Reloading>,
    seed: u64,
}

/// How long the coordinator waits for the workers (they answer within a turn).
const WORKER_WAIT: Duration = Duration::from_secs(10);

impl Coordinator {
    fn start_reload(&mut self, path: &std::path::Path) {
        match &mut self.reloading {
            Some(r) => r.again = true,
            None => {
                self.reloading = Some(Reloading::start(path.to_path_buf(), self.cfg.clone(), self.running.clone(), self.seed));
            }
        }
    }

    /// The box's status: every worker's, added up.
    fn status(&self) -> Result<Status, String> {
        let (tx, rx) = mpsc::channel();
        for w in &self.workers {
            w.send(Order::Status(tx.clone())).map_err(|_| "a forwarding worker has stopped".to_string())?;
        }
        let parts = (0..self.workers.len())
            .map(|_| rx.recv_timeout(WORKER_WAIT))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "a forwarding worker did not answer".to_string())?;
        status::merge(parts).ok_or_else(|| "no forwarding worker".to_string())
    }

    /// The box's connection list: every worker's flows, the templates once.
    fn connections(&self, filter: &ConnectionFilter) -> Result<Connections, String> {
        let (tx, rx) = mpsc::channel();
        for w in &self.workers {
            w.send(Order::Connections(filter.clone(), tx.clone())).map_err(|_| "a forwarding worker has stopped".to_string())?;
        }
        let parts = (0..self.workers.len())
            .map(|_| rx.recv_timeout(WORKER_WAIT))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "a forwarding worker did not answer".to_string())?;
        Ok(Connections::merge(parts, filter.limit()))
    }

    /// A prepared reload is done: have the workers install it (or report why not) and answer
    /// who asked.
    fn finish_reload(&mut self, path: &std::path::Path) {
        let Some(result) = self.reloading.as_ref().and_then(Reloading::poll) else { return };
        let Some(r) = self.reloading.take() else { return };
        let answer = match result {
            Ok(Prepared { cfg, plans }) => {
                let specs: Vec<DataPlaneSpec> = plans.iter().map(|p| p.spec().clone()).collect();
                let Some(spec) = specs.first().cloned() else { return };
                let t = Instant::now();
                let (tx, rx) = mpsc::channel();
                let install = Arc::new(Install::new(plans, spec.clone(), tx));
                let sent = self.workers.iter().all(|w| w.send(Order::Install(Arc::clone(&install))).is_ok());
                drop(install);
                let done = (0..self.workers.len()).map(|_| rx.recv_timeout(WORKER_WAIT)).collect::<Result<Vec<_>, _>>();
                match done {
                    Ok(done) if sent => {
                        let paused_us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        if spec.ha != self.running.first().and_then(|s| s.ha.clone()) {
                            self.pair_macs = None;
                            match pair_macs(&cfg.nics.vip_side, &spec) {
                                Ok(m) => self.pair_macs = m,
                                Err(e) => eprintln!("netfw: WARNING {e}: this box will not hear its peer nor take the VIPs' frames"),
                            }
                        }
                        self.cfg = cfg;
                        self.running = specs;
                        let flows_kept = done.iter().map(|d| d.flows_kept).sum();
                        NetfwAnswer::Reloaded { services: spec.services.len(), flows_kept, paused_us }
                    }
                    _ => NetfwAnswer::Error { message: "a forwarding worker did not install the new config".into() },
                }
            }
            Err(problems) => NetfwAnswer::Refused { problems },
        };
        eprintln!("netfw: {}", answer.human());
        for c in r.clients {
            c.answer(&answer);
        }
        if r.again {
            self.start_reload(path);
        }
    }
}

/// Run the forwarder until SIGTERM/SIGINT.
pub fn run(opts: &RunOptions) -> Result<(), RunError> {
    let (mut cfg, spec) = Config::load(&opts.config).map_err(RunError::Config)?;
    if cfg.mode == Mode::Ipvs {
        return Err(RunError::NotForwarderMode);
    }
    reload::resolve_nics(&mut cfg).map_err(RunError::NicRefs)?;
    let one_arm = cfg.one_arm();
    let start = Instant::now();
    let zero_ns = monotonic_ns();
    let seed = seed();

    let vip_mtu = check_mtu(&cfg.nics.vip_side)?;
    let rs_mtu = check_mtu(&cfg.nics.rs_side)?;
    reload::check_memory(spec.flow_capacity, reload::memory_available()).map_err(RunError::Memory)?;
    let vip_mac = nic_mac(&cfg.nics.vip_side).map_err(RunError::Nic)?;
    let rs_mac = if one_arm { vip_mac } else { nic_mac(&cfg.nics.rs_side).map_err(RunError::Nic)? };
    let names: Vec<&str> = if one_arm { vec![&cfg.nics.vip_side] } else { vec![&cfg.nics.vip_side, &cfg.nics.rs_side] };
    // Merging off before XDP goes on (a NIC running XDP refuses feature changes).
    let tries_xdp = backend::plan(&names, cfg.io).is_ok();
    let mut offloads = if tries_xdp { names.iter().map(|n| merging_off(n)).collect() } else { Vec::new() };
    let kernel = KernelSetup { flows: spec.flow_capacity, vip_mac, zero_ns };
    let opened = backend::open(&names, cfg.io, kernel).map_err(RunError::Open)?;
    if !tries_xdp {
        match opened.in_kernel() {
            // tc forwards merged frames of established flows whole: merging stays as it is.
            InKernel::Yes(_) => offloads.extend(
                names
                    .iter()
                    .map(|n| format!("{n}: receive merging left as it is (tc forwards merged frames whole; netfw splits those it gets)")),
            ),
            InKernel::No(_) => offloads.extend(names.iter().map(|n| merging_off(n))),
        }
    }
    let control = Control::bind(&opts.control).map_err(|e| RunError::Control(opts.control.clone(), e))?;
    let pair_macs = pair_macs(&cfg.nics.vip_side, &spec).map_err(|e| RunError::NicUnusable(e.to_string()))?;
    install_signals();

    let vip = NicSetup { mac: vip_mac, roles: Roles { vips: true, dip: one_arm }, side: Side::Vip, mtu: vip_mtu, seed };
    let rs = NicSetup { mac: rs_mac, roles: Roles { vips: false, dip: true }, side: Side::Rs, mtu: rs_mtu, seed: seed ^ 1 };
    let names = (cfg.nics.vip_side.clone(), cfg.nics.rs_side.clone());
    let setup = Setup { nics: [vip, rs], vip_mac, rs_mac, one_arm, names, queues: vec!["all".into()] };
    let line = StartLine {
        head: format!(
            "netfw: forwarding ({}) vip_side={} ({}, {}) rs_side={} ({}, {}) DIP {}/{}; {} service(s)",
            if one_arm { "one-arm" } else { "two-arm" },
            cfg.nics.vip_side,
            fmt_mac(&vip_mac),
            opened.describe(0),
            cfg.nics.rs_side,
            fmt_mac(&rs_mac),
            opened.describe(if one_arm { 0 } else { 1 }),
            spec.dip,
            spec.dip_prefix,
            spec.services.len(),
        ),
        tail: format!(
            "control socket {}; {}{}",
            opts.control.display(),
            offloads.join("; "),
            spec.ha.as_ref().map_or(String::new(), |h| format!(
                "; HA pair: vrid {} priority {} (virtual MAC {}), peer {}, adverts every {} ms: backup until elected",
                h.vrid,
                h.priority,
                fmt_mac(&h.virtual_mac()),
                h.peer,
                h.advert_ms
            ))
        ),
    };
    let in_kernel = opened.in_kernel().describe();
    let (handles, senders, running) = match opened {
        Opened::Xdp(ports, k) => {
            // A worker per queue, as many as there are CPUs to run them, and no more than the
            // NIC with the fewest queues has (each worker transmits on a queue of its own).
            let queues = ports.iter().map(XdpPort::queue_count).min().unwrap_or(1);
            let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            // Each worker needs at least one flow of the table.
            let flows = usize::try_from(spec.flow_capacity).unwrap_or(usize::MAX);
            let workers = queues.min(cpus).min(flows).max(1);
            let mut parts: Vec<Vec<XdpPort>> = (0..workers).map(|_| Vec::new()).collect();
            for port in ports {
                for (w, part) in port.split(workers).into_iter().enumerate() {
                    if let Some(p) = parts.get_mut(w) {
                        p.push(part);
                    }
                }
            }
            let queue_lists: Vec<String> = parts.iter().map(|p| p.first().map(XdpPort::queue_list).unwrap_or_default()).collect();
            let what = format!(
                "{workers} worker{} (VIP-facing queues {})",
                if workers == 1 { "" } else { "s" },
                queue_lists.iter().map(|q| format!("[{q}]")).collect::<Vec<_>>().join(" ")
            );
            let setup = Setup { queues: queue_lists, ..setup };
            spawn(parts, k, &spec, &setup, seed, start, &what, &line, &in_kernel)?
        }
        Opened::Packet(rings, _, k) => spawn(vec![rings], k, &spec, &setup, seed, start, "1 worker", &line, &in_kernel)?,
    };
    let coordinator = Coordinator { cfg, pair_macs, running, workers: senders, reloading: None, seed };
    coordinate(coordinator, &control, opts);
    for h in handles {
        let _ = h.join();
    }
    eprintln!("netfw: stopping");
    let _ = std::fs::remove_file(&opts.control);
    Ok(())
}

/// In a pair, have the VIP-facing NIC receive the virtual MAC and the VRRP group.
fn pair_macs(vip_nic: &str, spec: &DataPlaneSpec) -> std::io::Result<Option<Membership>> {
    spec.ha.as_ref().map(|h| membership::hold(vip_nic, &[h.virtual_mac()], &[[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]])).transpose()
}

/// The start line, around what the workers say (how many, their queues, the flow table).
struct StartLine {
    head: String,
    tail: String,
}

/// What every worker's NICs and forwarder are made with.
struct Setup {
    nics: [NicSetup; 2],
    vip_mac: [u8; 6],
    rs_mac: [u8; 6],
    one_arm: bool,
    names: (String, String),
    /// Each worker's VIP-facing queues ("all" with one worker on AF_PACKET).
    queues: Vec<String>,
}

/// The workers' threads, their order channels, and the spec each runs (its share).
type Spawned = (Vec<std::thread::JoinHandle<()>>, Vec<Sender<Order>>, Vec<DataPlaneSpec>);

/// Build a worker for each part (`parts[w]`: worker `w`'s part of each NIC, VIP-facing
/// first), print the start line, and start them.
#[allow(clippy::too_many_arguments, reason = "the pieces `run` opened, handed over once")]
fn spawn<P: Port + Send + 'static>(
    parts: Vec<Vec<P>>,
    kernel: InKernel,
    spec: &DataPlaneSpec,
    setup: &Setup,
    seed: u64,
    start: Instant,
    workers_what: &str,
    line: &StartLine,
    in_kernel: &str,
) -> Result<Spawned, RunError> {
    let n = parts.len();
    let now = Millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
    let kernel = match kernel {
        InKernel::Yes(k) => Some(k),
        InKernel::No(_) => None,
    };
    let board = Arc::new(SharedLoad::new(spec.backend_count()));
    let mut fwds = Vec::with_capacity(n);
    for w in 0..n {
        let share = reload::share(spec, n, w);
        let mut fwd = Forwarder::try_new(share, setup.vip_mac, setup.rs_mac, setup.one_arm, seed, now).map_err(RunError::Tables)?;
        if kernel.is_some() {
            fwd.enable_kernel_flows();
        }
        if n > 1 {
            fwd.enable_arp_relay();
            fwd.share_load(Arc::clone(&board));
            if let Some(first) = fwds.first() {
                // RSS spreads a client's connections over the queues by their ports: one
                // table of persistence templates for the box keeps its groups together.
                fwd.share_templates(Forwarder::templates(first));
                fwd.stay_quiet();
            }
        }
        fwds.push(fwd);
    }
    let capacity: usize = fwds.iter().map(|f| f.flows().capacity()).sum();
    let bytes = fwds.first().map_or(0, |f| f.flows().bytes_per_flow());
    eprintln!("{}; {workers_what}; flow table {capacity} flows, {bytes} bytes/flow; {}", line.head, line.tail);
    eprintln!("netfw: {in_kernel}");
    let running: Vec<DataPlaneSpec> = fwds.iter().map(|f| f.spec().clone()).collect();
    let (arp_tx, arp_rx): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel()).unzip();
    // The first worker probes; the others relay the replies they receive to it.
    let health = Arc::new(HealthBoard::new(spec.backend_count()));
    let (relay_tx, relay_rx) = mpsc::sync_channel(RELAY_QUEUE);
    let prober = Prober::new(spec, setup.rs_mac, Arc::clone(&health), seed ^ 0x4ea1, now);
    let mut probes: Vec<Probes> = (1..n).map(|_| Probes::Relay(relay_tx.clone())).collect();
    probes.insert(0, Probes::Run { prober: Box::new(prober), relayed: relay_rx });
    // The first worker runs the pair's election; the others relay the adverts they receive.
    let serving = Serving::default();
    serving.set(spec.ha.is_none());
    let pairs = Pair::for_workers(n, spec, &serving, now);
    let mut kernels: Vec<Option<KernelFlows>> =
        (0..n).map(|w| if w == 0 { None } else { kernel.as_ref().map(KernelFlows::worker) }).collect();
    if let Some(k) = kernels.first_mut() {
        *k = kernel;
    }
    let mut handles = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    let it = parts.into_iter().zip(fwds).zip(kernels).zip(arp_rx).zip(probes).zip(pairs).enumerate();
    for (w, (((((ports, fwd), kernel), arp_in), probes), pair)) in it {
        let (tx, orders) = mpsc::channel();
        senders.push(tx);
        let arp_out = arp_tx.iter().enumerate().filter(|(o, _)| *o != w).map(|(_, t)| t.clone()).collect();
        let nics = nics(ports, &setup.nics, spec, seed ^ ((w as u64) << 8), now);
        let queues = setup.queues.get(w).cloned().unwrap_or_default();
        let worker = Worker {
            index: w,
            nics,
            fwd,
            kernel,
            orders,
            arp_in,
            arp_out,
            names: setup.names.clone(),
            queues,
            probes,
            health: Arc::clone(&health),
            health_seen: 0,
            pair,
            serving: serving.clone(),
        };
        let h = std::thread::Builder::new()
            .name(format!("netfw-worker{w}"))
            .spawn(move || worker.run(start, &STOP))
            .map_err(|e| RunError::NicUnusable(format!("cannot start a forwarding worker: {e}")))?;
        handles.push(h);
    }
    Ok((handles, senders, running))
}

/// What a NIC's place in the loop is made of, besides its port.
#[derive(Clone, Copy)]
struct NicSetup {
    mac: [u8; 6],
    roles: Roles,
    side: Side,
    mtu: usize,
    seed: u64,
}

/// The loop's NICs: each port with its control stack and role (VIP-facing first).
fn nics<P>(ports: Vec<P>, setup: &[NicSetup], spec: &DataPlaneSpec, seed: u64, now: Millis) -> Vec<Nic<P>> {
    ports
        .into_iter()
        .zip(setup)
        .map(|(port, s)| Nic { port, stack: ControlStack::new(s.mac, s.roles, spec, s.seed ^ seed, now), side: s.side, mtu: s.mtu })
        .collect()
}

/// Start tapping the NIC a capture asks for (one-arm: the one NIC carries both roles).
fn start_capture(cfg: &Config, spec: &CaptureSpec) -> NetfwAnswer {
    let mask = match spec.nic {
        CaptureNic::VipSide => capture::VIP_NIC,
        CaptureNic::RsSide if cfg.one_arm() => capture::VIP_NIC,
        CaptureNic::RsSide => capture::RS_NIC,
        CaptureNic::Management => return NetfwAnswer::Error { message: "the management NIC is the kernel's: the init captures it".into() },
    };
    let started = capture::Filter::parse(&spec.filter, spec.value.as_deref())
        .and_then(|f| Ok((f, capture::Limits::new(spec.packets, spec.seconds)?)))
        .and_then(|(f, l)| capture::begin(mask, f, l));
    match started {
        Ok(()) => NetfwAnswer::CaptureStarted,
        Err(e) => NetfwAnswer::Error { message: e.to_string() },
    }
}

/// The capture's file, written where the init hands it over, once it is done.
fn capture_result() -> NetfwAnswer {
    match capture::collect() {
        Some(pcap) => {
            let packets = pcap.packets();
            match std::fs::write(CAPTURE_FILE, pcap.into_bytes()) {
                Ok(()) => NetfwAnswer::Captured { file: CAPTURE_FILE.into(), packets },
                Err(e) => NetfwAnswer::Error { message: format!("{CAPTURE_FILE}: {e}") },
            }
        }
        None if capture::running() => NetfwAnswer::Capturing,
        None => NetfwAnswer::Error { message: "no capture is running".into() },
    }
}

/// The coordinator's loop, until SIGTERM/SIGINT: the control socket and the signals.
fn coordinate(mut c: Coordinator, control: &Control, opts: &RunOptions) {
    let mut pfd = libc::pollfd { fd: control.fd(), events: libc::POLLIN, revents: 0 };
    while !STOP.load(Ordering::Relaxed) {
        // SAFETY: `pfd` is one live pollfd struct.
        unsafe { libc::poll(&mut pfd, 1, 50) };
        // The control socket is asked only when it has a caller.
        let callers = pfd.revents & libc::POLLIN != 0;
        while let Some((client, req)) = callers.then(|| control.accept()).flatten() {
            match req {
                Ok(NetfwRequest::Status) => match c.status() {
                    Ok(s) => client.answer(&NetfwAnswer::Status { status: Box::new(s) }),
                    Err(message) => client.answer(&NetfwAnswer::Error { message }),
                },
                Ok(NetfwRequest::Reload) => {
                    c.start_reload(&opts.config);
                    if let Some(r) = c.reloading.as_mut() {
                        r.clients.push(client);
                    }
                }
                Ok(NetfwRequest::Capture { spec }) => client.answer(&start_capture(&c.cfg, &spec)),
                Ok(NetfwRequest::CaptureResult) => client.answer(&capture_result()),
                Ok(NetfwRequest::Connections { filter }) => match c.connections(&filter) {
                    Ok(list) => client.answer(&NetfwAnswer::Connections { list }),
                    Err(message) => client.answer(&NetfwAnswer::Error { message }),
                },
                Err(e) => client.answer(&NetfwAnswer::Error { message: e.to_string() }),
            }
        }
        if RELOAD.swap(false, Ordering::Relaxed) {
            eprintln!("netfw: SIGHUP: reloading {}", opts.config.display());
            c.start_reload(&opts.config);
        }
        c.finish_reload(&opts.config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_whose_mtu_cannot_be_read_is_refused_not_taken_as_zero() {
        let e = check_mtu("no-such-nic0").unwrap_err();
        assert!(e.nics_unusable());
        assert!(e.to_string().contains("cannot read the MTU of NIC \"no-such-nic0\""), "{e}");
        check_mtu("lo").unwrap_err(); // lo's MTU is 65536: more than the rings carry
    }
}
