//! `netfw run`: open the dedicated NICs, then forward until told to stop.
//!
//! One thread, one poll loop: receive a batch from each NIC ring, decide each frame, queue
//! forwarded frames on the RS-facing transmit ring and control frames to the smoltcp stack of
//! the NIC they came in on, run timers, flush the transmit rings (one syscall per batch), and
//! serve the control socket. SIGHUP reloads the config file; SIGTERM/SIGINT stop.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::{Config, ConfigError, Mode};
use crate::counters::DropReason;
use crate::ctl::{Control, Request};
use crate::forward::{Forwarder, Side, Verdict};
use crate::io::nic::{fmt_mac, NicError};
use crate::io::{nic_mac, PacketRing, RingError, TxRing};
use crate::stack::{ControlStack, Roles};
use crate::status::Status;
use crate::time::Millis;
use crate::wire::csum;

static RELOAD: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

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
    /// A NIC cannot be used.
    Nic(NicError),
    /// A NIC's ring cannot be opened.
    Ring(RingError),
    /// The control socket cannot be opened.
    Control(PathBuf, std::io::Error),
    /// A dedicated NIC exists but the forwarder cannot serve it.
    NicUnusable(String),
}

/// The exit status of `netfw run` when its NICs cannot be used: the appliance falls back to
/// IPVS mode on it.
pub const EXIT_NICS_UNUSABLE: u8 = 3;

/// Largest MTU the rings carry (a 2 KiB slot holds a 1514-byte frame and the ring's headers).
pub const MAX_MTU: u32 = 1500;

impl RunError {
    /// The NICs (not the config) are the problem: another mode may still work.
    pub fn nics_unusable(&self) -> bool {
        matches!(self, RunError::Nic(_) | RunError::Ring(_) | RunError::NicUnusable(_))
    }
}

fn check_mtu(nic: &str) -> Result<(), RunError> {
    let mtu: u32 = std::fs::read_to_string(format!("/sys/class/net/{nic}/mtu")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if mtu > MAX_MTU {
        return Err(RunError::NicUnusable(format!(
            "NIC {nic} has MTU {mtu}: netfw's rings carry standard Ethernet frames (MTU at most {MAX_MTU}); use ipvs mode for jumbo frames"
        )));
    }
    Ok(())
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Config(e) => e.fmt(f),
            RunError::NotForwarderMode => write!(f, "the config's mode is \"ipvs\": netfw forwards only in \"forwarder\" mode; IPVS mode is programmed into the kernel by the appliance"),
            RunError::Nic(e) => e.fmt(f),
            RunError::Ring(e) => e.fmt(f),
            RunError::Control(p, e) => write!(f, "cannot open the control socket {}: {e}", p.display()),
            RunError::NicUnusable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RunError {}

struct Nic {
    ring: PacketRing,
    stack: ControlStack,
    side: Side,
}

/// Options of `netfw run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The config file (re-read on reload).
    pub config: PathBuf,
    /// The control socket.
    pub control: PathBuf,
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        b = (t as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

fn install_signals() {
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

/// Run the forwarder until SIGTERM/SIGINT.
pub fn run(opts: &RunOptions) -> Result<(), RunError> {
    let (cfg, spec) = Config::load(&opts.config).map_err(RunError::Config)?;
    if cfg.mode == Mode::Ipvs {
        return Err(RunError::NotForwarderMode);
    }
    let one_arm = cfg.one_arm();
    let start = Instant::now();
    let now = || Millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
    let seed = seed();

    check_mtu(&cfg.nics.vip_side)?;
    check_mtu(&cfg.nics.rs_side)?;
    let vip_mac = nic_mac(&cfg.nics.vip_side).map_err(RunError::Nic)?;
    let rs_mac = if one_arm { vip_mac } else { nic_mac(&cfg.nics.rs_side).map_err(RunError::Nic)? };
    let vip_ring = PacketRing::open(&cfg.nics.vip_side).map_err(RunError::Ring)?;
    let rs_ring = if one_arm { None } else { Some(PacketRing::open(&cfg.nics.rs_side).map_err(RunError::Ring)?) };
    let control = Control::bind(&opts.control).map_err(|e| RunError::Control(opts.control.clone(), e))?;
    install_signals();

    let mut fwd = Forwarder::new(spec.clone(), vip_mac, rs_mac, one_arm, seed, now());
    let mut nics: Vec<Nic> = Vec::new();
    nics.push(Nic {
        ring: vip_ring,
        stack: ControlStack::new(vip_mac, Roles { vips: true, dip: one_arm }, &spec, seed, now()),
        side: Side::Vip,
    });
    if let Some(r) = rs_ring {
        nics.push(Nic {
            ring: r,
            stack: ControlStack::new(rs_mac, Roles { vips: false, dip: true }, &spec, seed ^ 1, now()),
            side: Side::Rs,
        });
    }
    let mut cfg = cfg;
    eprintln!(
        "netfw: forwarding ({}) vip_side={} ({}) rs_side={} ({}) DIP {}/{}; {} service(s); flow table {} flows, {} bytes/flow; control socket {}",
        if one_arm { "one-arm" } else { "two-arm" },
        cfg.nics.vip_side,
        fmt_mac(&vip_mac),
        cfg.nics.rs_side,
        fmt_mac(&rs_mac),
        spec.dip,
        spec.dip_prefix,
        spec.services.len(),
        fwd.flows().capacity(),
        fwd.flows().bytes_per_flow(),
        opts.control.display()
    );

    let mut pfds: Vec<libc::pollfd> = nics.iter().map(|n| libc::pollfd { fd: n.ring.fd(), events: libc::POLLIN, revents: 0 }).collect();
    pfds.push(libc::pollfd { fd: control.fd(), events: libc::POLLIN, revents: 0 });
    let nfds = libc::nfds_t::try_from(pfds.len()).unwrap_or(0);

    let mut next_stats = now();
    while !STOP.load(Ordering::Relaxed) {
        // SAFETY: `pfds` is a live array of `nfds` pollfd structs.
        unsafe { libc::poll(pfds.as_mut_ptr(), nfds, 5) };
        let t = now();

        for i in 0..nics.len() {
            let (rx_nic, mut tx_ring) = split(&mut nics, i);
            let Nic { ring, stack, side } = rx_nic;
            let side = *side;
            let rx = &mut ring.rx;
            let own_tx = &mut ring.tx;
            rx.poll(64, |frame| {
                if frame.vlan_tagged {
                    fwd.count_drop(DropReason::VlanTagged);
                    return;
                }
                if frame.truncated {
                    fwd.count_drop(DropReason::Oversize);
                    return;
                }
                if frame.csum_not_ready {
                    csum::complete_l4_checksum(frame.data);
                }
                match fwd.process(side, frame.data, t) {
                    Verdict::Forward => {
                        let tx: &mut TxRing = match tx_ring.as_deref_mut() {
                            Some(other) => other,
                            None => own_tx,
                        };
                        if !tx.send(frame.data) {
                            fwd.count_drop(DropReason::TxRingFull);
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

        let rs_i = nics.len() - 1;
        {
            let tx = &mut nics[rs_i].ring.tx;
            fwd.drain_released(|f| {
                tx.send(f);
            });
        }
        fwd.poll_timers(t, |side, f| {
            let i = if side == Side::Rs { rs_i } else { 0 };
            nics[i].ring.tx.send(f);
        });
        for n in &mut nics {
            let tx = &mut n.ring.tx;
            n.stack.poll(t, |f| {
                tx.send(f);
            });
            n.ring.tx.flush();
        }

        if t >= next_stats {
            next_stats = t.plus(1_000);
            for n in &nics {
                fwd.count_drops(DropReason::RxRingOverflow, n.ring.take_kernel_drops());
            }
        }

        control.serve(|req| match req {
            Request::Status => Status::collect(&fwd, &cfg.nics.vip_side, &cfg.nics.rs_side, now()).render(),
            Request::StatusJson => {
                serde_json::to_string_pretty(&Status::collect(&fwd, &cfg.nics.vip_side, &cfg.nics.rs_side, now())).unwrap_or_default()
                    + "\n"
            }
            Request::Reload => reload(&opts.config, &mut cfg, &mut fwd, &mut nics, now()),
        });
        if RELOAD.swap(false, Ordering::Relaxed) {
            let msg = reload(&opts.config, &mut cfg, &mut fwd, &mut nics, now());
            eprint!("netfw: SIGHUP: {msg}");
        }
    }
    eprintln!("netfw: stopping");
    let _ = std::fs::remove_file(&opts.control);
    Ok(())
}

/// The NIC at `i` and, if there is one, the other NIC's transmit ring (where forwarded frames
/// go when `i` is the VIP-facing NIC of a two-arm layout).
fn split(nics: &mut [Nic], i: usize) -> (&mut Nic, Option<&mut TxRing>) {
    let (a, b) = nics.split_at_mut(i);
    let (me, rest) = b.split_first_mut().expect("index in range");
    let other = if me.side == Side::Vip { rest.first_mut().map(|n| &mut n.ring.tx) } else { None };
    let _ = a;
    (me, other)
}

/// Re-read and apply the config. An invalid config changes nothing.
fn reload(path: &Path, cfg: &mut Config, fwd: &mut Forwarder, nics: &mut [Nic], now: Millis) -> String {
    match Config::load(path) {
        Err(e) => format!("reload refused, the running config stays in force: {e}\n"),
        Ok((new, _)) if new.mode == Mode::Ipvs => {
            "reload refused, the running config stays in force: the new config's mode is \"ipvs\"; switching modes is the appliance's job\n"
                .into()
        }
        Ok((new, _)) if new.nics != cfg.nics => {
            "reload refused, the running config stays in force: NIC roles changed; restart netfw to move to other NICs\n".into()
        }
        Ok((new, spec)) => {
            fwd.apply(spec.clone(), now);
            for n in nics.iter_mut() {
                n.stack.configure(&spec);
            }
            *cfg = new;
            format!("reloaded: {} service(s), {} flow(s) kept\n", spec.services.len(), fwd.flows().len())
        }
    }
}
