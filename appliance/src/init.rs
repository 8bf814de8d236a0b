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

use crate::apply::{self, Running, State};
use crate::console::{self, Command};
use crate::control::{self, Request};
use crate::nics::{self, Nic, Roles};
use crate::power::{self, Action};
use crate::supervise::Supervisor;
use crate::{dhcp, log, mounts, sys};
use netfw::netconf;

/// The line tests and operators wait for.
pub const READY_MARKER: &str = "director: ready";
/// The operator's config file on the config partition (`image config-set` writes it).
pub const CONFIG_FILE: &str = "/mnt/config/director.json";
/// The appliance's own saves: two checksummed slots (`netfw::store`); the newest intact one
/// wins over `director.json`, which `image config-set` makes win again by emptying them.
pub const CONFIG_STORE: &str = "/mnt/config/director.slots";
/// How long a change that touches management waits for confirmation before it is undone.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(60);
/// The effective config netfw runs with (NIC references resolved to names).
pub const RUN_CONFIG: &str = "/run/netfw.json";
/// The effective config before the last change (what leaving a mode clears).
pub const PREV_RUN_CONFIG: &str = "/run/netfw.prev.json";

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
pub fn run_logged(who: &str, args: &[&str]) {
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
pub fn prepare_config(text: &str, nics: &[Nic]) -> Result<(Config, Roles), String> {
    let mut cfg = Config::parse(text).map_err(|e| e.to_string())?;
    let resolve = |r: &str, field: &str| nics::resolve(nics, r).ok_or_else(|| format!("{field}: no NIC named or with MAC {r}"));
    cfg.nics.vip_side = resolve(&cfg.nics.vip_side, "nics.vip_side")?;
    cfg.nics.rs_side = resolve(&cfg.nics.rs_side, "nics.rs_side")?;
    if let Some(m) = cfg.management.as_mut() {
        m.nic = resolve(&m.nic, "management.nic")?;
    }
    cfg.validate().map_err(|e| e.to_string())?;
    // Without a management section the box stays manageable: the first NIC that is neither
    // VIP- nor RS-facing is management (DHCP), as without any config.
    let spare = nics.iter().map(|n| n.name.clone()).find(|n| *n != cfg.nics.vip_side && *n != cfg.nics.rs_side);
    let roles = Roles {
        management: cfg.management.as_ref().map(|m| m.nic.clone()).or(spare),
        vip_side: Some(cfg.nics.vip_side.clone()),
        rs_side: Some(cfg.nics.rs_side.clone()),
    };
    Ok((cfg, roles))
}

/// Write the effective config (resolved NIC names) where netfw reads it.
pub fn write_run_config(cfg: &Config) -> Result<(), String> {
    let text = serde_json::to_string_pretty(cfg).map_err(|e| e.to_string())?;
    std::fs::write(RUN_CONFIG, text).map_err(|e| format!("{RUN_CONFIG}: {e}"))
}

/// The config document the box boots with: the newest intact saved slot, else the
/// operator's `director.json`.
fn read_config_text() -> Result<String, String> {
    match netfw::store::load(std::path::Path::new(CONFIG_STORE)) {
        Ok(Some((_, body))) => return String::from_utf8(body).map_err(|_| format!("{CONFIG_STORE}: the saved config is not UTF-8")),
        Ok(None) => {}
        Err(e) => log::init(&format!("{e}; trying {CONFIG_FILE}")),
    }
    std::fs::read_to_string(CONFIG_FILE).map_err(|e| format!("no config at {CONFIG_FILE}: {e}"))
}

/// Read and validate the config partition's document; write the effective config for netfw.
fn load_config(nics: &[Nic]) -> Result<(Config, Roles, String), String> {
    let text = read_config_text()?;
    let (cfg, roles) = prepare_config(&text, nics)?;
    write_run_config(&cfg)?;
    Ok((cfg, roles, text))
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

fn banner(nics: &[Nic], roles: &Roles, mgmt_addr: &str, web: &[String], cfg_state: &str, mode: &str) {
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
    for l in web {
        log::init(l);
    }
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
    let (cfg, roles, text, cfg_state) = match load_config(&nics) {
        Ok((c, r, t)) => {
            let state = format!("{} service(s)", c.services.len());
            (Some(c), r, Some(t), state)
        }
        Err(e) => {
            log::init(&format!("CONFIG PROBLEM: {e}"));
            log::init("not forwarding until the config is fixed; NIC roles are the defaults");
            (None, nics::default_roles(&nics), None, format!("INVALID OR MISSING: {e}"))
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
    let running = match &cfg {
        Some(c) if c.mode == Mode::Ipvs => {
            // The kernel forwards: program IPVS once (reconcile), logging each change.
            run_logged("ipvs", &["ipvs", "apply", "--config", RUN_CONFIG]);
            Running::Ipvs
        }
        Some(_) => {
            sup.add("netfw", apply::netfw_argv());
            Running::Forwarder
        }
        None => Running::Nothing,
    };
    let web = start_web(&roles, &mgmt_addr, config_mounted, &mut sup);
    let (tx, rx) = mpsc::channel::<Request>();
    console::listen(tx.clone());
    control::listen(tx.clone());
    power::watch_power_button(tx);
    banner(&nics, &roles, &mgmt_addr, &web, &cfg_state, running.name());
    let mut st = State { nics, roles, running, fallback: false, sup, config_mounted, text, cfg, pending: None, reboot_needed: None };

    loop {
        match SIGNAL.swap(0, Ordering::Relaxed) {
            libc::SIGTERM | libc::SIGUSR2 => power::shutdown(Action::Poweroff, &mut st.sup, st.config_mounted),
            libc::SIGINT | libc::SIGUSR1 => power::shutdown(Action::Reboot, &mut st.sup, st.config_mounted),
            _ => {}
        }
        while let Some((pid, status)) = sys::reap() {
            let netfw_nics_unusable = st.sup.exited(pid, status).as_deref() == Some("netfw")
                && libc::WIFEXITED(status)
                && libc::WEXITSTATUS(status) == i32::from(netfw::run::EXIT_NICS_UNUSABLE);
            if netfw_nics_unusable && st.running == Running::Forwarder {
                log::init(
                    "FALLBACK: the forwarder cannot use its NICs (see its last line); the kernel's IPVS takes over with the same config",
                );
                let _ = std::fs::copy(RUN_CONFIG, PREV_RUN_CONFIG);
                apply::switch(Running::Forwarder, Running::Ipvs, &mut st.sup);
                st.running = Running::Ipvs;
                st.fallback = true;
                log::init(&format!("mode: {} (fallback)", st.running.name()));
            }
        }
        st.sup.tick();
        st.tick();
        if let Ok(req) = rx.recv_timeout(Duration::from_millis(100)) {
            handle(&mut st, &req);
        }
    }
}

/// Carry out one console command or control request.
fn handle(st: &mut State, req: &Request) {
    match &req.cmd {
        Command::Status => {
            for l in st.sup.describe() {
                log::init(&l);
            }
            log::init(&format!("mode: {}{}", st.running.name(), if st.fallback { " (fallback)" } else { "" }));
            match st.running {
                Running::Ipvs => ipvs_status("status"),
                Running::Forwarder => run_logged("status", &["status", "--control", "/run/netfw.sock"]),
                Running::Nothing => {}
            }
        }
        Command::StatusJson => req.answer(st.status_json()),
        Command::GetConfig => req.answer(st.text.clone().unwrap_or_default()),
        Command::Confirm => req.answer(match st.confirm() {
            Ok(m) => format!("ok {m}"),
            Err(e) => format!("error {e}"),
        }),
        Command::Restart(name) => {
            if st.sup.kill(name) {
                log::init(&format!("killed {name} on request; the supervisor restarts it"));
            } else {
                log::init(&format!("no running child named {name}"));
            }
        }
        Command::Reboot | Command::Poweroff => {
            let (action, said) =
                if req.cmd == Command::Reboot { (Action::Reboot, "rebooting") } else { (Action::Poweroff, "powering off") };
            if req.reply.is_some() {
                req.answer(format!("ok {said}"));
                // Let web-config pass the answer on before the shutdown stops it.
                std::thread::sleep(Duration::from_secs(1));
            }
            power::shutdown(action, &mut st.sup, st.config_mounted);
        }
        Command::Ipvs => ipvs_status("ipvs"),
        Command::ApplyConfig(json) => req.answer(match st.apply(json) {
            Ok(m) => format!("ok {m}"),
            Err(e) => format!("error {e}"),
        }),
        Command::Unknown(l) => {
            log::init(&format!("unknown command \"{l}\" (status, ipvs, restart netfw, apply-config {{…}}, reboot, poweroff)"));
            req.answer(format!("error unknown request \"{l}\""));
        }
    }
}

/// Prepare and start the web page on the management NIC (never on the forwarding NICs):
/// returns the banner's lines (address, certificate fingerprint, first-boot setup code).
fn start_web(roles: &Roles, mgmt_addr: &str, config_mounted: bool, sup: &mut Supervisor) -> Vec<String> {
    let Some(nic) = roles.management.clone() else {
        return vec!["web page: none (no management NIC); use the console: status, apply-config, reboot, poweroff".into()];
    };
    if !config_mounted {
        return vec!["web page: not started: no config partition to keep its password and certificate on".into()];
    }
    let mut lines = web_config::server::prepare(std::path::Path::new(mounts::CONFIG_DIR))
        .unwrap_or_else(|e| vec![format!("web page: cannot prepare the certificate or setup code: {e}")]);
    sup.add(
        "web-config",
        ["/bin/web-config", "serve", "--state", mounts::CONFIG_DIR, "--nic", &nic, "--control", control::SOCKET].map(String::from).to_vec(),
    );
    let host = mgmt_addr.split(['/', ' ']).next().filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok()).unwrap_or("<management address>");
    lines.insert(0, format!("web page: https://{host}/ on {nic} (plain HTTP redirects to it)"));
    lines
}
