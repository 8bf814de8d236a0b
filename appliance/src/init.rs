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

use director_config::{paths, store, Config};
use director_messages::init::InitAnswer;
use director_messages::one_line;
use netfw_kernel::{mode, rtnl};

use crate::apply::{self, Appliance, Book, InForce, Plant, Running};
use crate::console::{self, Command};
use crate::control::{self, Request};
use crate::nics::{self, Nic, Roles};
use crate::power::{self, Action};
use crate::slots::TrialCheck;
use crate::supervise::Supervisor;
use crate::{dhcp, events, log, modules, mounts, slots, sys};
use director_messages::events::{EventKind, Severity};

/// The line tests and operators wait for.
pub const READY_MARKER: &str = "director: ready";
/// How long a change that touches management waits for confirmation before it is undone.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(60);

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::Relaxed);
}

/// Parameters a module is loaded with.
fn module_params(name: &str) -> &'static str {
    match name {
        // Once a trial opens the watchdog, nothing can stop it until the box resets (the
        // hardware lock): it survives the kexec into the trial system, which must keep it fed.
        "i6300esb" | "iTCO_wdt" => crate::slots::WATCHDOG_PARAMS,
        _ => "",
    }
}

/// Load the kernel modules the plan chooses for the PCI devices `pci` (their modaliases).
fn load_modules(pci: &[String]) {
    let (order, no_device) = match std::fs::read_to_string("/lib/modules/index") {
        Ok(text) => {
            let plan = modules::Plan::parse(&text);
            if plan.bad_lines > 0 {
                log::init(&format!("the module plan has {} lines this init does not understand; they are ignored", plan.bad_lines));
            }
            plan.choose(pci)
        }
        Err(_) => {
            let order = std::fs::read_to_string("/lib/modules/load-order").unwrap_or_default();
            (order.lines().filter(|l| !l.is_empty()).map(str::to_string).collect(), Vec::new())
        }
    };
    let (mut ok, mut absent, mut failed) = (0, Vec::new(), Vec::new());
    for name in &order {
        match std::fs::read(format!("/lib/modules/{name}.ko"))
            .map_err(|e| e.to_string())
            .and_then(|b| sys::load_module(&b, module_params(name)).map_err(|e| e.to_string()))
        {
            Ok(()) => ok += 1,
            Err(e) if e.contains("File exists") => ok += 1,
            // ENODEV: the module is for hardware (or a CPU feature) this box does not have.
            Err(e) if e.contains("os error 19") => absent.push(name.to_string()),
            Err(e) => failed.push(format!("{name} ({e})")),
        }
    }
    let no_device = if no_device.is_empty() { String::new() } else { format!("; no device for: {}", no_device.join(", ")) };
    let absent = if absent.is_empty() { String::new() } else { format!("; not for this hardware: {}", absent.join(", ")) };
    let failed = if failed.is_empty() { String::new() } else { format!("; FAILED: {}", failed.join(", ")) };
    log::init(&format!("loaded {ok} kernel modules{no_device}{absent}{failed}"));
}

/// The data plane's status table on the console, each line under `who`: for `status`, the
/// table of the mode in force; for `ipvs`, the kernel's IPVS table whatever the mode. The last
/// line says `end of table`.
fn show_table(book: &Book, sup: &Supervisor, who: &str) {
    let table = match (book.running, who) {
        (Running::Forwarder, "status") => apply::netfw_status().map_err(|p| p.to_string()),
        (Running::Ipvs, "status") => apply::ipvs_status(sup, book.current.as_ref()),
        (Running::Nothing, "status") => return,
        _ => mode::status(book.current.as_ref().map(|c| (&c.cfg, &c.spec))).map_err(|e| e.to_string()),
    };
    match table {
        Ok(t) => {
            for l in t.render().lines() {
                log::line(who, l);
            }
            // A reader of the console (an operator's script, the tests) knows the table is whole.
            log::line(who, "end of table");
        }
        Err(e) => {
            log::line(who, &e);
            // The error is the whole answer: a reader waiting for the end is not left hanging.
            log::line(who, "end of table");
        }
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

/// The config document the box boots with: the newest intact saved slot, else the
/// operator's `director.json`. A saved document this version cannot read (written by a newer
/// version, before a rollback) gives way to the newest one it can, and the console says so.
fn read_config_text() -> Result<String, String> {
    let slots = paths::on_partition(paths::CONFIG_STORE);
    let saved = store::load_all(&slots).unwrap_or_else(|e| {
        log::init(&format!("{e}; trying {}", paths::OPERATOR_CONFIG));
        Vec::new()
    });
    let mut texts: Vec<(String, String)> =
        saved.into_iter().map(|(g, b)| (format!("the saved config (generation {g})"), String::from_utf8_lossy(&b).into_owned())).collect();
    let file = paths::on_partition(paths::OPERATOR_CONFIG);
    if let Ok(t) = std::fs::read_to_string(&file) {
        texts.push((file.display().to_string(), t));
    }
    let (text, said) = choose_config(texts).ok_or_else(|| format!("no config at {}", file.display()))?;
    if let Some(s) = said {
        log::init(&s);
    }
    Ok(text)
}

/// The first of `texts` (newest first: name, document) that this version understands, with
/// what to say when it is not the first; the first when none is understood (its errors are
/// then reported as usual).
fn choose_config(texts: Vec<(String, String)>) -> Option<(String, Option<String>)> {
    let (first_name, first) = texts.first().cloned()?;
    let Err(not_understood) = Config::parse(&first) else { return Some((first, None)) };
    match texts.into_iter().skip(1).find(|(_, t)| Config::parse(t).is_ok()) {
        Some((name, t)) => Some((
            t,
            Some(format!(
                "CONFIG: {first_name} is not understood by this version ({not_understood}): a newer version wrote it; running {name}, the last config this version understands"
            )),
        )),
        None => Some((first, None)),
    }
}

/// Validate the config document read from the partition (`read_config_text`); write the
/// effective config for netfw.
fn load_config(text: Result<String, String>, nics: &[Nic]) -> Result<InForce, String> {
    let text = text?;
    let c = apply::prepare(&text, nics).map_err(|p| one_line(&p))?;
    apply::write_run_config(&c.cfg).map_err(|p| p.to_string())?;
    Ok(c)
}

/// The management NIC's address: static from the config, else DHCP (with a link-local
/// fallback while no server answers). Returns the banner's description.
fn configure_management(nics: &[Nic], roles: &Roles, cfg: Option<&Config>) -> String {
    let Some(nic) = roles.management.clone() else { return "none (no management NIC)".into() };
    let mac = nics.iter().find(|n| n.name == nic).map(|n| n.mac.clone()).unwrap_or_default();
    let m = cfg.and_then(|c| c.management.as_ref());
    match m.and_then(|m| m.address.as_deref()) {
        Some(a) => {
            let Ok(net) = director_config::parse_cidr(a) else { return format!("none (bad address {a})") };
            let mut said = format!("{a} on {nic} (static)");
            if let Err(e) = rtnl::add_address(&nic, net.addr(), net.prefix()) {
                log::init(&e.to_string());
                said = format!("none ({e})");
            }
            if let Some(gw) = m.and_then(|m| m.gateway.as_deref()).and_then(|g| g.parse().ok()) {
                if let Err(e) = rtnl::set_default_route(gw) {
                    log::init(&e.to_string());
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
    let pci = modules::present_pci();
    load_modules(&pci);
    // The NICs and the disk appear as their drivers probe: wait for as many NICs as the PCI
    // bus has (not a fixed three: a one-arm box has two, seed 001's one) and the config
    // partition, three seconds at most.
    let expected = nics::network_functions(&pci);
    settle(|| nics::list().len() >= expected && mounts::find_config_partition().is_some(), Duration::from_secs(3));
    let nics = nics::list();
    // A pending trial starts here (kexec) before anything else is set up.
    let mut slots = slots::at_boot();

    let config_mounted = mounts::mount_config().is_some();
    let text = read_config_text();
    let config_present = text.is_ok();
    let (current, roles, cfg_state) = match load_config(text, &nics) {
        Ok(c) => {
            let state = format!("{} service(s)", c.spec.services.len());
            let roles = c.roles.clone();
            (Some(c), roles, state)
        }
        Err(e) => {
            log::init(&format!("CONFIG PROBLEM: {e}"));
            log::init("not forwarding until the config is fixed; NIC roles are the defaults");
            (None, nics::default_roles(&nics), format!("INVALID OR MISSING: {e}"))
        }
    };
    let cfg = current.as_ref().map(|c| &c.cfg);
    sys::set_hostname(cfg.and_then(|c| c.hostname.as_deref()).unwrap_or("director"));

    for n in [&roles.vip_side, &roles.rs_side, &roles.management].into_iter().flatten() {
        if let Err(e) = rtnl::set_link_up(n) {
            log::init(&e.to_string());
        }
    }
    // The dedicated NICs carry no kernel address: no IPv6 autoconfiguration on them either.
    for n in [&roles.vip_side, &roles.rs_side].into_iter().flatten() {
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{n}/disable_ipv6"), "1");
    }
    let mgmt_addr = configure_management(&nics, &roles, cfg);

    let mut sup = Supervisor::default();
    let running = match &current {
        Some(c) if c.mode == Running::Ipvs => {
            // The kernel forwards: program IPVS once (reconcile), logging each change.
            if let Err(e) = mode::enter(&c.cfg, &c.spec, &mut |l| log::line("ipvs", &l)) {
                log::line("ipvs", &e.to_string());
            }
            if apply::needs_checker(&c.spec) {
                sup.add(apply::HEALTH, apply::watch_argv());
            }
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
    events::configure(current.as_ref().map(|c| &c.cfg));
    events::record(EventKind::Box, Severity::Notice, &format!("booted: mode {}, config {cfg_state}", running.name()));
    events::watch_data_plane(|| apply::netfw_status().ok());
    if let Some(o) = slots::unreported_outcome() {
        events::record(EventKind::Update, if o.ok { Severity::Notice } else { Severity::Warning }, &o.message);
    }
    let mut book = Book { nics, roles, running, fallback: false, config_mounted, current, pending: None, reboot_needed: None };

    loop {
        match SIGNAL.swap(0, Ordering::Relaxed) {
            libc::SIGTERM | libc::SIGUSR2 => power::shutdown(Action::Poweroff, &mut sup, book.config_mounted),
            libc::SIGINT | libc::SIGUSR1 => power::shutdown(Action::Reboot, &mut sup, book.config_mounted),
            _ => {}
        }
        while let Some((pid, status)) = sys::reap() {
            let netfw_nics_unusable = sup.exited(pid, status).as_deref() == Some("netfw")
                && libc::WIFEXITED(status)
                && libc::WEXITSTATUS(status) == i32::from(netfw::run::EXIT_NICS_UNUSABLE);
            if netfw_nics_unusable && book.running == Running::Forwarder {
                fall_back(&mut book, &mut sup);
            }
        }
        sup.tick();
        book.tick(&mut Appliance { sup: &mut sup });
        if let Some((ok, message, reboot)) = slots.tick(|| trial_check(&book, &sup, config_present)) {
            events::record(EventKind::Update, if ok { Severity::Notice } else { Severity::Warning }, &message);
            if reboot {
                power::shutdown(Action::Reboot, &mut sup, book.config_mounted);
            }
        }
        if let Ok(req) = rx.recv_timeout(Duration::from_millis(100)) {
            handle(&mut book, &mut sup, &req);
        }
    }
}

/// Whether a trial system is ready and forwarding with the config: the config is in force
/// (when there is one), the data plane answers with every service, and each service with a
/// health check has a real server taking flows.
fn trial_check(book: &Book, sup: &Supervisor, config_present: bool) -> TrialCheck {
    let Some(c) = book.current.as_ref() else {
        return if config_present { TrialCheck::NotYet("the saved config is not in force".into()) } else { TrialCheck::Ready };
    };
    let status = match book.running {
        Running::Forwarder => apply::netfw_status().map_err(|p| p.to_string()),
        Running::Ipvs => apply::ipvs_status(sup, Some(c)),
        Running::Nothing => Err("no data plane is running".into()),
    };
    let s = match status {
        Ok(s) => s,
        Err(e) => return TrialCheck::NotYet(format!("the data plane does not answer: {e}")),
    };
    if s.services.len() < c.spec.services.len() {
        return TrialCheck::NotYet(format!("{} of {} services in force", s.services.len(), c.spec.services.len()));
    }
    if let Some(down) = s.services.iter().find(|v| v.state.as_deref().is_some_and(|st| st != "up")) {
        return TrialCheck::NotYet(format!("service {}:{} has no healthy real server", down.vip, down.port));
    }
    TrialCheck::Ready
}

/// The forwarder cannot use its NICs: the kernel's IPVS takes over with the same config.
fn fall_back(book: &mut Book, sup: &mut Supervisor) {
    events::record(
        EventKind::Mode,
        Severity::Warning,
        "FALLBACK: the forwarder cannot use its NICs (see its last line); the kernel's IPVS takes over with the same config",
    );
    let Some(c) = book.current.clone() else { return };
    let ipvs = InForce { mode: Running::Ipvs, ..c.clone() };
    match (Appliance { sup }).switch(Some(&c), Some(&ipvs)) {
        Ok(m) => {
            book.running = m;
            book.fallback = true;
            book.current = Some(ipvs);
        }
        Err(p) => log::init(&format!("the fallback to IPVS failed: {}", one_line(&p))),
    }
    log::init(&format!("mode: {} (fallback)", book.running.name()));
}

/// Carry out one console command or control request.
fn handle(book: &mut Book, sup: &mut Supervisor, req: &Request) {
    match &req.cmd {
        Command::Status => {
            for l in sup.describe() {
                log::init(&l);
            }
            log::init(&format!("mode: {}{}", book.running.name(), if book.fallback { " (fallback)" } else { "" }));
            show_table(book, sup, "status");
        }
        Command::BoxStatus => {
            let table = match book.running {
                Running::Forwarder => apply::netfw_status().ok(),
                Running::Ipvs => apply::ipvs_status(sup, book.current.as_ref()).ok(),
                Running::Nothing => None,
            };
            req.answer(InitAnswer::Status { status: Box::new(book.status(table)) });
        }
        Command::GetConfig => req.answer(InitAnswer::Config { document: book.current.as_ref().map(|c| c.text.clone()) }),
        Command::Confirm => req.answer(match book.confirm(&mut Appliance { sup }) {
            Ok(message) => InitAnswer::Done { message },
            Err(message) => InitAnswer::Error { message },
        }),
        Command::Restart(name) => {
            if sup.kill(name) {
                log::init(&format!("killed {name} on request; the supervisor restarts it"));
            } else {
                log::init(&format!("no running child named {name}"));
            }
        }
        Command::Reboot | Command::Poweroff => {
            let (action, said) =
                if req.cmd == Command::Reboot { (Action::Reboot, "rebooting") } else { (Action::Poweroff, "powering off") };
            let from = if req.reply.is_some() { "the web page" } else { "the console" };
            events::record(EventKind::Box, Severity::Notice, &format!("{said} (asked from {from})"));
            if req.reply.is_some() {
                req.answer(InitAnswer::Done { message: said.into() });
                // Let web-config pass the answer on before the shutdown stops it.
                std::thread::sleep(Duration::from_secs(1));
            }
            power::shutdown(action, sup, book.config_mounted);
        }
        Command::Ipvs => show_table(book, sup, "ipvs"),
        Command::Event(kind, severity, message) => {
            events::record(*kind, *severity, message);
            req.answer(InitAnswer::Done { message: "recorded".into() });
        }
        Command::History => req.answer(InitAnswer::History { series: crate::history::all() }),
        Command::Connections(filter) => match (
            apply::connections(book.running, filter, book.current.as_ref().map_or(&[][..], |c| &c.spec.services[..])),
            req.reply.is_some(),
        ) {
            (Ok(list), true) => req.answer(InitAnswer::Connections { list }),
            (Err(message), true) => req.answer(InitAnswer::Error { message }),
            (result, false) => {
                let text = result.map_or_else(|e| e, |l| l.render());
                for l in text.lines() {
                    log::line("connections", l);
                }
                log::line("connections", "end of table");
            }
        },
        Command::Capture(spec) => crate::capture::start(spec, &book.roles, book.running, req.reply.clone()),
        Command::Events if req.reply.is_some() => req.answer(InitAnswer::Events { events: events::all() }),
        Command::Events => {
            let all = events::all();
            for e in &all[all.len().saturating_sub(50)..] {
                log::line("events", &e.line());
            }
            log::line("events", "end of table");
        }
        Command::ApplyConfig(json) => req.answer(match book.apply(&mut Appliance { sup }, json) {
            Ok(applied) => InitAnswer::Applied { applied },
            Err(failure) => InitAnswer::Refused { failure },
        }),
        Command::Unknown(l) => {
            log::init(&format!(
                "unknown command \"{l}\" (status, status --connections, ipvs, events, restart netfw, apply-config {{…}}, reboot, poweroff)"
            ));
            req.answer(InitAnswer::Error { message: format!("unknown request \"{l}\"") });
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
        ["/bin/web-config", "serve", "--state", mounts::CONFIG_DIR, "--nic", &nic, "--control", director_messages::INIT_SOCKET]
            .map(String::from)
            .to_vec(),
    );
    let host = mgmt_addr.split(['/', ' ']).next().filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok()).unwrap_or("<management address>");
    lines.insert(0, format!("web page: https://{host}/ on {nic} (plain HTTP redirects to it)"));
    lines
}

#[cfg(test)]
mod tests {
    use super::choose_config;

    #[test]
    fn after_a_rollback_the_last_config_this_version_understands_runs_and_the_console_says_so() {
        let old = include_str!("../../docs/example-config.json").to_string();
        let newer = old.replacen('{', "{\"a_field_from_a_newer_version\": 1,", 1);
        let (text, said) = choose_config(vec![("generation 8".into(), newer.clone()), ("generation 7".into(), old.clone())]).unwrap();
        assert_eq!(text, old);
        let said = said.unwrap();
        assert!(said.contains("generation 8 is not understood") && said.contains("running generation 7"), "{said}");
        assert_eq!(choose_config(vec![("g".into(), old.clone())]).unwrap(), (old, None));
        // Nothing understood: the newest, whose errors the boot reports.
        assert_eq!(choose_config(vec![("g".into(), newer.clone())]).unwrap(), (newer, None));
        assert!(choose_config(Vec::new()).is_none());
    }
}
