//! `netfw run`: open the dedicated NICs, then forward until told to stop.
//!
//! One thread, one poll loop (`pump::turn`) over the NICs; the control socket is served from
//! the same loop. A reload (`netfw reload`, SIGHUP) is prepared on another thread
//! (`reload`) and only installed here, so a large config does not stall forwarding.
//! SIGTERM/SIGINT stop.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use director_config::{Config, ConfigError, Mode};
use director_messages::netfw::{NetfwAnswer, NetfwRequest};
use director_messages::{one_line, Problem};
use netfw_core::forward::{Forwarder, PlanError, Side};
use netfw_core::time::Millis;

use crate::ctl::Control;
use crate::io::backend::{self, InKernel, KernelSetup, OpenError, Opened};
use crate::io::kernel_flows::{monotonic_ns, KernelFlows};
use crate::io::nic::{fmt_mac, mtu, NicError};
use crate::io::{nic_mac, Port};
use crate::pump::{self, Nic};
use crate::reload::{self, Prepared, Reloading};
use crate::stack::{ControlStack, Roles};
use crate::status;

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

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        b = (u64::from(t) ^ u64::from(std::process::id())).to_le_bytes();
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

/// The forwarder's running state.
struct Running<P> {
    cfg: Config,
    fwd: Forwarder,
    nics: Vec<Nic<P>>,
    /// The kernel's part in forwarding (XDP or tc).
    kernel: Option<KernelFlows>,
    reloading: Option<Reloading>,
    seed: u64,
}

impl<P: Port> Running<P> {
    fn start_reload(&mut self, path: &std::path::Path) {
        match &mut self.reloading {
            Some(r) => r.again = true,
            None => {
                self.reloading = Some(Reloading::start(path.to_path_buf(), self.cfg.clone(), self.fwd.spec().clone(), self.seed));
            }
        }
    }

    /// A prepared reload is done: install it (or report why not) and answer who asked.
    fn finish_reload(&mut self, path: &std::path::Path, now: Millis) {
        let Some(result) = self.reloading.as_ref().and_then(Reloading::poll) else { return };
        let Some(r) = self.reloading.take() else { return };
        let answer = match result {
            Ok(Prepared { cfg, plan }) => {
                let spec = plan.spec().clone();
                let t = Instant::now();
                if let Some(k) = self.kernel.as_mut() {
                    k.before_install(&mut self.fwd);
                }
                let done = self.fwd.install(plan, now);
                if let Some(k) = self.kernel.as_mut() {
                    if let Err(e) = k.after_install(&mut self.fwd, &done) {
                        eprintln!("netfw: {e}: the kernel may forward flows of the old config to real servers that stay");
                    }
                }
                for n in &mut self.nics {
                    n.stack.configure(&spec);
                }
                let paused_us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.cfg = cfg;
                NetfwAnswer::Reloaded { services: spec.services.len(), flows_kept: done.flows_kept, paused_us }
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
    let now = || Millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
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
    install_signals();

    let fwd = Forwarder::try_new(spec.clone(), vip_mac, rs_mac, one_arm, seed, now()).map_err(RunError::Tables)?;
    let vip = NicSetup { mac: vip_mac, roles: Roles { vips: true, dip: one_arm }, side: Side::Vip, mtu: vip_mtu, seed };
    let rs = NicSetup { mac: rs_mac, roles: Roles { vips: false, dip: true }, side: Side::Rs, mtu: rs_mtu, seed: seed ^ 1 };
    eprintln!(
        "netfw: forwarding ({}) vip_side={} ({}, {}) rs_side={} ({}, {}) DIP {}/{}; {} service(s); flow table {} flows, {} bytes/flow; control socket {}; {}",
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
        fwd.flows().capacity(),
        fwd.flows().bytes_per_flow(),
        opts.control.display(),
        offloads.join("; ")
    );
    eprintln!("netfw: {}", opened.in_kernel().describe());
    let setup = [vip, rs];
    let mut fwd = fwd;
    let kernel = |k: InKernel, fwd: &mut Forwarder| match k {
        InKernel::Yes(k) => {
            fwd.enable_kernel_flows();
            Some(k)
        }
        InKernel::No(_) => None,
    };
    match opened {
        Opened::Xdp(ports, in_kernel) => {
            let nics = nics(ports, &setup, &spec, now());
            let kernel = kernel(in_kernel, &mut fwd);
            serve(Running { cfg, fwd, nics, kernel, reloading: None, seed }, &control, opts, now);
        }
        Opened::Packet(rings, _, in_kernel) => {
            let nics = nics(rings, &setup, &spec, now());
            let kernel = kernel(in_kernel, &mut fwd);
            serve(Running { cfg, fwd, nics, kernel, reloading: None, seed }, &control, opts, now);
        }
    }
    eprintln!("netfw: stopping");
    let _ = std::fs::remove_file(&opts.control);
    Ok(())
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
fn nics<P>(ports: Vec<P>, setup: &[NicSetup], spec: &netfw_core::model::DataPlaneSpec, now: Millis) -> Vec<Nic<P>> {
    ports
        .into_iter()
        .zip(setup)
        .map(|(port, s)| Nic { port, stack: ControlStack::new(s.mac, s.roles, spec, s.seed, now), side: s.side, mtu: s.mtu })
        .collect()
}

/// The poll loop, until SIGTERM/SIGINT.
fn serve<P: Port>(mut st: Running<P>, control: &Control, opts: &RunOptions, now: impl Fn() -> Millis) {
    let mut pfds: Vec<libc::pollfd> =
        st.nics.iter().flat_map(|n| n.port.fds()).map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    pfds.push(libc::pollfd { fd: control.fd(), events: libc::POLLIN, revents: 0 });
    let nfds = libc::nfds_t::try_from(pfds.len()).unwrap_or(0);

    let mut next_stats = now();
    while !STOP.load(Ordering::Relaxed) {
        // SAFETY: `pfds` is a live array of `nfds` pollfd structs.
        unsafe { libc::poll(pfds.as_mut_ptr(), nfds, 5) };
        let t = now();
        pump::turn(&mut st.nics, &mut st.fwd, st.kernel.as_mut(), t);
        if t >= next_stats {
            next_stats = t.plus(1_000);
            pump::kernel_drops(&mut st.nics, &mut st.fwd);
        }
        // The control socket is asked only when it has a caller (no syscall per turn).
        let callers = pfds.last().is_some_and(|p| p.revents & libc::POLLIN != 0);
        while let Some((client, req)) = callers.then(|| control.accept()).flatten() {
            match req {
                Ok(NetfwRequest::Status) => {
                    if let Some(k) = st.kernel.as_mut() {
                        k.take_counts(&mut st.fwd);
                    }
                    let s = status::collect(&st.fwd, &st.cfg.nics.vip_side, &st.cfg.nics.rs_side, now());
                    client.answer(&NetfwAnswer::Status { status: Box::new(s) });
                }
                Ok(NetfwRequest::Reload) => {
                    st.start_reload(&opts.config);
                    if let Some(r) = st.reloading.as_mut() {
                        r.clients.push(client);
                    }
                }
                Err(e) => client.answer(&NetfwAnswer::Error { message: e.to_string() }),
            }
        }
        if RELOAD.swap(false, Ordering::Relaxed) {
            eprintln!("netfw: SIGHUP: reloading {}", opts.config.display());
            st.start_reload(&opts.config);
        }
        st.finish_reload(&opts.config, now());
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
