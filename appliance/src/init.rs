//! PID 1: bring the box up, run the forwarder, keep it running, shut down cleanly.
//!
//! Order: mount the kernel filesystems, load the modules, find the NICs, mount the config
//! partition and read the config, give each NIC its role, start netfw under supervision,
//! print the banner and the ready marker, then serve: reap children, restart what died, obey
//! the console, the power button and signals (SIGTERM/SIGUSR2: poweroff; SIGINT, which
//! ctrl-alt-del sends, and SIGUSR1: reboot). A bad config or a failing child is logged and
//! survived; the init never panics and never exits.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netfw::config::{Config, Mode};

use crate::console::{self, Command};
use crate::nics::{self, Nic, Roles};
use crate::power::{self, Action};
use crate::supervise::Supervisor;
use crate::{dhcp, log, mounts, sys};
use netfw::netconf;

/// The line tests and operators wait for.
pub const READY_MARKER: &str = "director: ready";
/// The config file on the config partition.
pub const CONFIG_FILE: &str = "/mnt/config/director.json";
/// The effective config netfw runs with (NIC references resolved to names).
pub const RUN_CONFIG: &str = "/run/netfw.json";

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::Relaxed);
}

fn load_modules() {
    let order = std::fs::read_to_string("/lib/modules/load-order").unwrap_or_default();
    let (mut ok, mut absent, mut failed) = (0, Vec::new(), Vec::new());
    for name in order.lines().filter(|l| !l.is_empty()) {
        match std::fs::read(format!("/lib/modules/{name}.ko"))
            .map_err(|e| e.to_string())
            .and_then(|b| sys::load_module(&b).map_err(|e| e.to_string()))
        {
            Ok(()) => ok += 1,
            Err(e) if e.contains("File exists") => ok += 1,
            // ENODEV: the module is for hardware (or a CPU feature) this box does not have.
            Err(e) if e.contains("os error 19") => absent.push(name.to_string()),
            Err(e) => failed.push(format!("{name} ({e})")),
        }
    }
    let absent = if absent.is_empty() { String::new() } else { format!("; not for this hardware: {}", absent.join(", ")) };
    let failed = if failed.is_empty() { String::new() } else { format!("; FAILED: {}", failed.join(", ")) };
    log::init(&format!("loaded {ok} kernel modules{absent}{failed}"));
}

/// Run `/bin/netfw ARGS` to completion, each line of its output on the console as `who`.
fn run_logged(who: &str, args: &[&str]) {
    match std::process::Command::new("/bin/netfw").args(args).output() {
        Ok(o) => {
            for l in String::from_utf8_lossy(&o.stdout).lines().chain(String::from_utf8_lossy(&o.stderr).lines()) {
                log::line(who, l);
            }
        }
        Err(e) => log::init(&format!("netfw {}: {e}", args.join(" "))),
    }
}

/// The kernel's IPVS table as the status table, naming NICs and DIP from the running config.
fn ipvs_status(who: &str) {
    if std::path::Path::new(RUN_CONFIG).exists() {
        run_logged(who, &["ipvs", "status", "--config", RUN_CONFIG]);
    } else {
        run_logged(who, &["ipvs", "status"]);
    }
}

/// Wait (briefly) for devices that appear after module load.
fn settle(what: impl Fn() -> bool, limit: Duration) {
    let end = Instant::now() + limit;
    while !what() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_sysctl(path: &str, value: &str) {
    let _ = std::fs::write(path, value);
}

/// Parse and validate a config document; resolve NIC references (names or MACs) to names.
fn prepare_config(text: &str, nics: &[Nic]) -> Result<(Config, Roles), String> {
    let mut cfg = Config::parse(text).map_err(|e| e.to_string())?;
    let resolve = |r: &str, field: &str| nics::resolve(nics, r).ok_or_else(|| format!("{field}: no NIC named or with MAC {r}"));
    cfg.nics.vip_side = resolve(&cfg.nics.vip_side, "nics.vip_side")?;
    cfg.nics.rs_side = resolve(&cfg.nics.rs_side, "nics.rs_side")?;
    if let Some(m) = cfg.management.as_mut() {
        m.nic = resolve(&m.nic, "management.nic")?;
    }
    cfg.validate().map_err(|e| e.to_string())?;
    let roles = Roles {
        management: cfg.management.as_ref().map(|m| m.nic.clone()),
        vip_side: Some(cfg.nics.vip_side.clone()),
        rs_side: Some(cfg.nics.rs_side.clone()),
    };
    Ok((cfg, roles))
}

/// Write the effective config (resolved NIC names) where netfw reads it.
fn write_run_config(cfg: &Config) -> Result<(), String> {
    let text = serde_json::to_string_pretty(cfg).map_err(|e| e.to_string())?;
    std::fs::write(RUN_CONFIG, text).map_err(|e| format!("{RUN_CONFIG}: {e}"))
}

/// Read and validate the config partition's document; write the effective config for netfw.
fn load_config(nics: &[Nic]) -> Result<(Config, Roles), String> {
    let text = std::fs::read_to_string(CONFIG_FILE).map_err(|e| format!("no config at {CONFIG_FILE}: {e}"))?;
    let (cfg, roles) = prepare_config(&text, nics)?;
    write_run_config(&cfg)?;
    Ok((cfg, roles))
}

/// Save a document on the config partition so that a power cut leaves the old or the new one:
/// write a temporary file, fsync it, rename it over the old, fsync the directory.
fn save_config(text: &str) -> Result<(), String> {
    use std::io::Write;
    let tmp = format!("{CONFIG_FILE}.new");
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{tmp}: {e}"))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, CONFIG_FILE).map_err(|e| format!("{CONFIG_FILE}: {e}"))?;
    std::fs::File::open(mounts::CONFIG_DIR).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", mounts::CONFIG_DIR))
}

/// What is forwarding now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Running {
    /// Nothing (no valid config).
    Nothing,
    /// netfw, supervised.
    Forwarder,
    /// The kernel's IPVS (by config or by fallback).
    Ipvs,
}

const PREV_RUN_CONFIG: &str = "/run/netfw.prev.json";

fn netfw_argv() -> Vec<String> {
    vec!["/bin/netfw".into(), "run".into(), "--config".into(), RUN_CONFIG.into(), "--control".into(), "/run/netfw.sock".into()]
}

/// Leave the running mode (removing everything it set up) and enter `want`.
fn switch(from: Running, want: Running, sup: &mut Supervisor) {
    match from {
        Running::Forwarder if want != Running::Forwarder => sup.remove("netfw"),
        Running::Ipvs if want != Running::Ipvs => run_logged("ipvs", &["ipvs", "clear", "--config", PREV_RUN_CONFIG]),
        _ => {}
    }
    match want {
        Running::Forwarder if from != Running::Forwarder => sup.add("netfw", netfw_argv()),
        Running::Ipvs => run_logged("ipvs", &["ipvs", "apply", "--config", RUN_CONFIG, "--fallback"]),
        _ => {}
    }
}

/// `apply-config`: validate, save, apply without reboot. Returns the new running state.
fn apply_config(json: &str, nics: &[Nic], roles: &Roles, running: Running, sup: &mut Supervisor, config_mounted: bool) -> Running {
    let (cfg, new_roles) = match prepare_config(json, nics) {
        Ok(x) => x,
        Err(e) => {
            log::init(&format!("apply-config refused, the running config stays in force: {e}"));
            return running;
        }
    };
    if new_roles.vip_side != roles.vip_side || new_roles.rs_side != roles.rs_side || new_roles.management != roles.management {
        log::init("apply-config refused: NIC roles changed; save the config to the partition and reboot");
        return running;
    }
    if !config_mounted {
        log::init("apply-config refused: there is no config partition to save it on");
        return running;
    }
    if let Err(e) = save_config(json) {
        log::init(&format!("apply-config refused, nothing changed: cannot save: {e}"));
        return running;
    }
    let _ = std::fs::copy(RUN_CONFIG, PREV_RUN_CONFIG);
    if let Err(e) = write_run_config(&cfg) {
        log::init(&e);
        return running;
    }
    let want = if cfg.mode == Mode::Ipvs { Running::Ipvs } else { Running::Forwarder };
    if want == Running::Forwarder && running == Running::Forwarder {
        match netfw::ctl::request(std::path::Path::new("/run/netfw.sock"), "reload") {
            Ok(reply) => log::line("netfw", reply.trim()),
            Err(e) => log::init(&format!("netfw reload: {e}")),
        }
    } else {
        switch(running, want, sup);
    }
    log::init(&format!("config saved and applied: mode {}", if want == Running::Ipvs { "ipvs" } else { "forwarder" }));
    want
}

/// The management NIC's address: static from the config, else DHCP (with a link-local
/// fallback while no server answers). Returns the banner's description.
fn configure_management(nics: &[Nic], roles: &Roles, cfg: Option<&Config>) -> String {
    let Some(nic) = roles.management.clone() else { return "none (no management NIC)".into() };
    let mac = nics.iter().find(|n| n.name == nic).map(|n| n.mac.clone()).unwrap_or_default();
    let m = cfg.and_then(|c| c.management.as_ref());
    match m.and_then(|m| m.address.as_deref()) {
        Some(a) => {
            let Ok(net) = netfw::config::parse_cidr(a) else { return format!("none (bad address {a})") };
            let mut said = format!("{a} on {nic} (static)");
            if let Err(e) = netconf::add_address(&nic, net.addr, net.prefix) {
                log::init(&e);
                said = format!("none ({e})");
            }
            if let Some(gw) = m.and_then(|m| m.gateway.as_deref()).and_then(|g| g.parse().ok()) {
                if let Err(e) = netconf::set_default_route(gw) {
                    log::init(&e);
                }
            }
            said
        }
        None => {
            let said = dhcp::start(nic.clone(), mac, Duration::from_secs(6));
            format!("{said} on {nic}")
        }
    }
}

fn mode_name(r: Running) -> &'static str {
    match r {
        Running::Ipvs => "ipvs (the kernel forwards)",
        Running::Forwarder => "forwarder (netfw)",
        Running::Nothing => "none",
    }
}

fn banner(nics: &[Nic], roles: &Roles, mgmt_addr: &str, cfg_state: &str, mode: &str) {
    let release = std::fs::read_to_string("/etc/director-release").unwrap_or_default();
    log::init("================================================================");
    log::init(release.trim());
    let role_of = |n: &str| {
        if roles.management.as_deref() == Some(n) {
            "management"
        } else if roles.vip_side.as_deref() == Some(n) && roles.rs_side.as_deref() == Some(n) {
            "VIP+RS (one-arm)"
        } else if roles.vip_side.as_deref() == Some(n) {
            "VIP-facing"
        } else if roles.rs_side.as_deref() == Some(n) {
            "RS-facing"
        } else {
            "unused"
        }
    };
    for n in nics {
        log::init(&format!("NIC {:<8} {}  {}", n.name, n.mac, role_of(&n.name)));
    }
    log::init(&format!("management address: {mgmt_addr}"));
    log::init("web page: not built yet (issue 5); use the console: status, restart netfw, reboot, poweroff");
    log::init(&format!("config: {cfg_state}"));
    log::init(&format!("mode: {mode}"));
    log::init("================================================================");
    log::init(READY_MARKER);
}

/// Run as PID 1. Never returns.
pub fn run() -> ! {
    mounts::early();
    log::init("director appliance starting");
    // ctrl-alt-del sends SIGINT to us instead of an immediate reboot.
    sys::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF);
    for s in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2] {
        sys::on_signal(s, on_signal);
    }
    load_modules();
    settle(|| nics::list().len() >= 3 && mounts::find_config_partition().is_some(), Duration::from_secs(3));
    let nics = nics::list();

    let config_mounted = mounts::mount_config().is_some();
    let (cfg, roles, cfg_state) = match load_config(&nics) {
        Ok((c, r)) => {
            let state = format!("{CONFIG_FILE} ({} service(s))", c.services.len());
            (Some(c), r, state)
        }
        Err(e) => {
            log::init(&format!("CONFIG PROBLEM: {e}"));
            log::init("not forwarding until the config is fixed; NIC roles are the defaults");
            (None, nics::default_roles(&nics), format!("INVALID OR MISSING: {e}"))
        }
    };
    sys::set_hostname(cfg.as_ref().and_then(|c| c.hostname.as_deref()).unwrap_or("director"));

    for n in [&roles.vip_side, &roles.rs_side, &roles.management].into_iter().flatten() {
        if let Err(e) = netconf::set_link_up(n) {
            log::init(&e);
        }
    }
    // The dedicated NICs carry no kernel address: no IPv6 autoconfiguration on them either.
    for n in [&roles.vip_side, &roles.rs_side].into_iter().flatten() {
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{n}/disable_ipv6"), "1");
    }
    let mgmt_addr = configure_management(&nics, &roles, cfg.as_ref());

    let mut sup = Supervisor::default();
    let mut running = match &cfg {
        Some(c) if c.mode == Mode::Ipvs => {
            // The kernel forwards: program IPVS once (reconcile), logging each change.
            run_logged("ipvs", &["ipvs", "apply", "--config", RUN_CONFIG]);
            Running::Ipvs
        }
        Some(_) => {
            sup.add("netfw", netfw_argv());
            Running::Forwarder
        }
        None => Running::Nothing,
    };
    let (tx, rx) = mpsc::channel();
    console::listen(tx.clone());
    power::watch_power_button(tx);
    banner(&nics, &roles, &mgmt_addr, &cfg_state, mode_name(running));

    loop {
        match SIGNAL.swap(0, Ordering::Relaxed) {
            libc::SIGTERM | libc::SIGUSR2 => power::shutdown(Action::Poweroff, &mut sup, config_mounted),
            libc::SIGINT | libc::SIGUSR1 => power::shutdown(Action::Reboot, &mut sup, config_mounted),
            _ => {}
        }
        while let Some((pid, status)) = sys::reap() {
            let netfw_nics_unusable = sup.exited(pid, status).as_deref() == Some("netfw")
                && libc::WIFEXITED(status)
                && libc::WEXITSTATUS(status) == i32::from(netfw::run::EXIT_NICS_UNUSABLE);
            if netfw_nics_unusable && running == Running::Forwarder {
                log::init(
                    "FALLBACK: the forwarder cannot use its NICs (see its last line); the kernel's IPVS takes over with the same config",
                );
                let _ = std::fs::copy(RUN_CONFIG, PREV_RUN_CONFIG);
                switch(Running::Forwarder, Running::Ipvs, &mut sup);
                running = Running::Ipvs;
                log::init(&format!("mode: {} (fallback)", mode_name(running)));
            }
        }
        sup.tick();
        if let Ok(cmd) = rx.recv_timeout(Duration::from_millis(100)) {
            match cmd {
                Command::Status => {
                    for l in sup.describe() {
                        log::init(&l);
                    }
                    log::init(&format!("mode: {}", mode_name(running)));
                    match running {
                        Running::Ipvs => ipvs_status("status"),
                        Running::Forwarder => run_logged("status", &["status", "--control", "/run/netfw.sock"]),
                        Running::Nothing => {}
                    }
                }
                Command::Restart(name) => {
                    if sup.kill(&name) {
                        log::init(&format!("killed {name} on request; the supervisor restarts it"));
                    } else {
                        log::init(&format!("no running child named {name}"));
                    }
                }
                Command::Reboot => power::shutdown(Action::Reboot, &mut sup, config_mounted),
                Command::Poweroff => power::shutdown(Action::Poweroff, &mut sup, config_mounted),
                Command::Ipvs => ipvs_status("ipvs"),
                Command::ApplyConfig(json) => running = apply_config(&json, &nics, &roles, running, &mut sup, config_mounted),
                Command::Unknown(l) => {
                    log::init(&format!("unknown command \"{l}\" (status, ipvs, restart netfw, apply-config {{…}}, reboot, poweroff)"))
                }
            }
        }
    }
}
