//! `netfw ipvs watch`: the health checker of ipvs mode. The kernel forwards (IPVS); this
//! process checks each real server of a service with a `health_check` exactly as the
//! forwarder's prober does, and applies the verdicts to IPVS (`netfw_kernel::verdicts`): a
//! down server leaves the table, a sorry server joins it while no real server is usable.
//!
//! - Probes through the DR path (to VIP:port, sent to the server's MAC from the DIP; for TUN,
//!   inside IPIP to the RIP as IPVS sends) leave on an AF_PACKET socket on the RS-facing NIC
//!   (`io::watch_socket`), whose filter passes only ARP and frames from a VIP: the servers'
//!   replies come from the VIP, which the kernel drops as martian (the VIP is its own
//!   address), so only the prober answers them. Probes to a server's own address go on the
//!   kernel's sockets (`health::kernel_probe`): the kernel holds the DIP.
//! - The doctor: a forwarder that forwards nothing watches the same frames, sends ARP from
//!   the DIP for each real server (so a MAC that does not resolve is seen), and notes a VIP
//!   claimed by a server's MAC and a server's replies coming back through the director.
//! - It answers `status` (the kernel's table with health, reasons, events and diagnoses) and
//!   `reload` on the control socket the forwarder uses in forwarder mode; SIGHUP reloads too.
//! - The HA pair's election (`ipvs_pair`), when the config has one.
//!   The init supervises it in ipvs mode whenever a service has a check or a sorry server, or
//!   the box is one of a pair.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use director_config::Config;
use director_messages::netfw::{NetfwAnswer, NetfwRequest};
use director_messages::status::Status;
use director_messages::Problem;
use netfw_core::forward::{Forwarder, Side};
use netfw_core::model::DataPlaneSpec;
use netfw_core::time::Millis;
use netfw_core::wire::csum;
use netfw_core::wire::segment::{split_tcp, MAX_SEGMENT_FRAME};
use netfw_core::wire::ETH_HDR_LEN;
use netfw_kernel::ipvs::Ipvs;
use netfw_kernel::{mode, reconcile, verdicts};

use crate::ctl::Control;
use crate::health::{is_probe_reply, HealthBoard, Prober, RipProbes};
use crate::io::nic_mac;
use crate::io::watch_socket::WatchSocket;
use crate::ipvs_pair::IpvsPair;
use crate::run::{install_signals, seed, RELOAD, STOP};
use crate::status;

/// How often IPVS is read and brought in line with the verdicts even when none changed (an
/// operator's `ipvsadm`, or the init's reconcile of a new config, may have changed it).
const RESYNC_MS: u64 = 1_000;
/// The largest frame read: a merged one of 64 KiB with its Ethernet header.
const RX_FRAME: usize = 65_536 + ETH_HDR_LEN;
/// The observing forwarder's flow table: it forwards nothing.
const OBSERVER_FLOWS: u32 = 64;

/// Options of `netfw ipvs watch`.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The config file (re-read on reload).
    pub config: PathBuf,
    /// The control socket.
    pub control: PathBuf,
}

/// The checker's state.
struct Watch {
    cfg: Config,
    spec: DataPlaneSpec,
    /// Sees what the checks' socket sees: real servers' MACs, VIP claims, replies on the
    /// wrong path. Forwards nothing.
    observer: Forwarder,
    rx_side: Side,
    prober: Prober,
    board: Arc<HealthBoard>,
    seen: u64,
    socket: WatchSocket,
    /// A received frame (the largest merged one fits).
    rx_buf: Box<[u8]>,
    ipvs: Ipvs,
    next_sync: Millis,
    /// The HA pair's election, if the box is one of a pair.
    pair: Option<IpvsPair>,
}

fn observed(spec: &DataPlaneSpec) -> DataPlaneSpec {
    DataPlaneSpec { flow_capacity: OBSERVER_FLOWS, ..spec.clone() }
}

impl Watch {
    fn open(opts: &WatchOptions, now: Millis) -> Result<Watch, String> {
        let (cfg, spec) = Config::load(&opts.config).map_err(|e| e.to_string())?;
        let rs_mac = nic_mac(&cfg.nics.rs_side).map_err(|e| e.to_string())?;
        let vip_mac = nic_mac(&cfg.nics.vip_side).map_err(|e| e.to_string())?;
        let one_arm = cfg.one_arm();
        let observer = Forwarder::try_new(observed(&spec), vip_mac, rs_mac, one_arm, seed(), now).map_err(|e| e.to_string())?;
        let board = Arc::new(HealthBoard::new(spec.backend_count()));
        let prober = Prober::with_rip_probes(&spec, rs_mac, Arc::clone(&board), seed(), now, RipProbes::Kernel);
        let socket = WatchSocket::open(&cfg.nics.rs_side, &spec.vips()).map_err(|e| e.to_string())?;
        let ipvs = Ipvs::open().map_err(|e| e.to_string())?;
        let pair = IpvsPair::open(&spec, &cfg.nics.vip_side, &cfg.nics.rs_side, now)?;
        Ok(Watch {
            pair,
            rx_side: if one_arm { Side::Vip } else { Side::Rs },
            cfg,
            spec,
            observer,
            prober,
            board,
            seen: 0,
            socket,
            rx_buf: vec![0; RX_FRAME].into_boxed_slice(),
            ipvs,
            next_sync: now,
        })
    }

    /// One turn: frames in, timers, probes, verdicts to IPVS, the pair's election.
    fn turn(&mut self, now: Millis) {
        if let Some(p) = self.pair.as_mut() {
            p.turn(now);
        }
        while let Some(r) = self.socket.recv(&mut self.rx_buf) {
            // Longer than the largest merged frame: not ours to read.
            let Some(frame) = self.rx_buf.get_mut(..r.len) else { continue };
            if !is_probe_reply(frame, self.spec.dip) {
                let _ = self.observer.process(self.rx_side, frame, now);
            } else if frame.len() > MAX_SEGMENT_FRAME {
                // The kernel owns this NIC and merges received segments (GRO): the prober's
                // stack takes them one by one, as they were sent (checksums computed anew).
                let prober = &mut self.prober;
                let _ = split_tcp(frame, MAX_SEGMENT_FRAME - ETH_HDR_LEN, |seg| prober.push_rx(seg));
            } else {
                if r.csum_not_ready {
                    csum::complete_l4_checksum(frame);
                }
                let _ = self.prober.push_rx(frame);
            }
        }
        let socket = &self.socket;
        // ARP requests for the real servers, from the DIP; nothing for the VIP side (the
        // kernel answers for the VIP in this mode).
        self.observer.poll_timers(now, |side, f| side == Side::Rs && socket.send(f));
        self.prober.poll(now, &self.observer, |f| socket.send(f));
        let before = self.seen;
        self.board.sync(&mut self.observer, &mut self.seen);
        if self.seen != before || now >= self.next_sync {
            self.next_sync = now.plus(RESYNC_MS);
            self.sync_ipvs();
        }
    }

    /// Bring IPVS in line with the verdicts.
    fn sync_ipvs(&mut self) {
        let have = match reconcile::read(&mut self.ipvs) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("netfw: health: cannot read IPVS: {e}");
                return;
            }
        };
        let known: std::collections::HashMap<u16, Option<bool>> = self.prober.verdicts().collect();
        let o = &self.observer;
        // A server of a service without checks (one with only a sorry server) is up.
        let up = |si: usize, ri: usize| {
            o.services().get(si).and_then(|s| s.backends.get(ri)).map_or(Some(true), |b| known.get(b).copied().unwrap_or(Some(true)))
        };
        // Each change is said once it is made: what the console says, IPVS holds.
        for c in verdicts::changes(&have, &self.spec, up) {
            match reconcile::apply(&mut self.ipvs, std::slice::from_ref(&c)) {
                Ok(()) => eprintln!("netfw: health: ipvs: {c}"),
                Err(e) => eprintln!("netfw: health: IPVS refused to {c}: {e}"),
            }
        }
    }

    /// The kernel's table, with what the checks and the doctor know.
    fn status(&self, now: Millis) -> Result<Status, String> {
        let mut s = mode::status(Some((&self.cfg, &self.spec))).map_err(|e| e.to_string())?;
        self.prober.annotate(&mut s, &self.observer);
        let o = &self.observer;
        for svc in o.services() {
            let Some(ss) = s.service_mut(svc.proto.name(), &svc.vip.to_string(), svc.port) else { continue };
            for b in svc.backends.iter().filter_map(|&b| o.backends().get(usize::from(b))) {
                let Some(row) = ss.real_servers.iter_mut().find(|r| r.address == b.rip.to_string()) else { continue };
                if row.mac.is_none() {
                    row.mac = o.neighbours().mac(b.neigh).map(|m| crate::io::nic::fmt_mac(&m));
                }
                for d in status::diagnose(o, b, now) {
                    if !row.diagnosis.contains(&d) {
                        row.diagnosis.push(d);
                    }
                }
            }
        }
        s.warnings.extend(status::seen_on_the_wire(o, now));
        if let Some(p) = &self.pair {
            p.annotate(&mut s, now);
        }
        Ok(s)
    }

    /// Re-read the config: servers that stay, with the same check, keep their state.
    fn reload(&mut self, opts: &WatchOptions, now: Millis) -> NetfwAnswer {
        let (cfg, spec) = match Config::load(&opts.config) {
            Ok(c) => c,
            Err(e) => return NetfwAnswer::Refused { problems: vec![Problem::general(e.to_string())] },
        };
        if cfg.nics.rs_side != self.cfg.nics.rs_side || spec.vips() != self.spec.vips() {
            match WatchSocket::open(&cfg.nics.rs_side, &spec.vips()) {
                Ok(s) => self.socket = s,
                Err(e) => return NetfwAnswer::Refused { problems: vec![Problem::general(e.to_string())] },
            }
        }
        if let Err(e) = self.observer.apply(observed(&spec), now) {
            return NetfwAnswer::Refused { problems: vec![Problem::general(e.to_string())] };
        }
        self.board = Arc::new(HealthBoard::new(spec.backend_count()));
        self.prober.configure(&spec, Arc::clone(&self.board), now);
        self.seen = 0;
        self.board.sync(&mut self.observer, &mut self.seen);
        match (self.pair.as_mut(), spec.ha.is_some()) {
            (Some(p), true) => p.configure(&spec, now),
            (Some(p), false) => {
                p.leave();
                self.pair = None;
            }
            (None, true) => match IpvsPair::open(&spec, &cfg.nics.vip_side, &cfg.nics.rs_side, now) {
                Ok(p) => self.pair = p,
                Err(e) => return NetfwAnswer::Refused { problems: vec![Problem::general(e)] },
            },
            (None, false) => {}
        }
        let services = spec.services.len();
        (self.cfg, self.spec) = (cfg, spec);
        self.sync_ipvs();
        eprintln!("netfw: health: reloaded: {services} service(s)");
        NetfwAnswer::Reloaded { services, flows_kept: 0, paused_us: 0 }
    }
}

/// Each probe to a real server's own address holds a kernel socket while it runs: with a
/// thousand servers more than the usual 1,024 descriptors. The soft limit goes to the hard one.
fn raise_descriptor_limit() {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r) } == 0 && r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: `r` is a valid rlimit for the kernel to read.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const r) };
    }
}

/// Run until SIGTERM/SIGINT.
pub fn watch(opts: &WatchOptions) -> Result<(), String> {
    install_signals();
    raise_descriptor_limit();
    let start = Instant::now();
    let now = || Millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut w = Watch::open(opts, now())?;
    let control = Control::bind(&opts.control).map_err(|e| format!("cannot open the control socket {}: {e}", opts.control.display()))?;
    let checked = w.spec.services.iter().filter(|s| verdicts::adjusted(s)).count();
    eprintln!(
        "netfw: health: checking the real servers of {checked} service(s) from {} on {}; verdicts go to IPVS",
        w.spec.dip, w.cfg.nics.rs_side
    );
    while !STOP.load(Ordering::Relaxed) {
        let mut pfds = [
            libc::pollfd { fd: w.socket.fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: control.fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: w.pair.as_ref().map_or(-1, IpvsPair::fd), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: three live pollfd structs (a negative fd is ignored). 5 ms: the prober's pace.
        unsafe { libc::poll(pfds.as_mut_ptr(), 3, 5) };
        w.turn(now());
        let callers = pfds[1].revents & libc::POLLIN != 0;
        while let Some((client, req)) = callers.then(|| control.accept()).flatten() {
            client.answer(&match req {
                Ok(NetfwRequest::Status) => match w.status(now()) {
                    Ok(s) => NetfwAnswer::Status { status: Box::new(s) },
                    Err(message) => NetfwAnswer::Error { message },
                },
                Ok(NetfwRequest::Reload) => w.reload(opts, now()),
                Ok(NetfwRequest::Connections { filter }) => match netfw_kernel::conns::read(&filter, &w.spec.services) {
                    Ok(list) => NetfwAnswer::Connections { list },
                    Err(message) => NetfwAnswer::Error { message },
                },
                Ok(NetfwRequest::Capture { .. } | NetfwRequest::CaptureResult) => {
                    NetfwAnswer::Error { message: "in ipvs mode the kernel owns the NICs: the init captures them".into() }
                }
                Err(e) => NetfwAnswer::Error { message: e.to_string() },
            });
        }
        if RELOAD.swap(false, Ordering::Relaxed) {
            eprintln!("netfw: health: SIGHUP: reloading {}", opts.config.display());
            let _ = w.reload(opts, now());
        }
    }
    if let Some(p) = w.pair.as_mut() {
        p.leave();
    }
    eprintln!("netfw: health: stopped");
    Ok(())
}
