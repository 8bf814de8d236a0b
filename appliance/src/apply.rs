//! How a new config takes effect: one transaction, validate → apply → verify → save.
//!
//! - validate: the document's rules, its NIC references resolved on this box;
//! - apply: the data plane takes it (netfw reloads, IPVS is reconciled, or the mode switches;
//!   a management address change moves the address);
//! - verify: what the data plane reports (netfw's status, the kernel's IPVS table) equals
//!   what was asked;
//! - save: written to the config partition, power-loss safe.
//!
//! A failure at any step restores the config that was running (the data plane is switched
//! back to it) and leaves the saved one untouched; the answer names the step and why. A change
//! of the management address is applied but saved only once confirmed from the new address;
//! unconfirmed after 60 s it is rolled back. NIC roles change only with a reboot: such a
//! config is saved, not applied, and the status says so.
//!
//! The transaction talks to the box through `Plant`, so it is tested with a fake one.

use crate::events;
use director_messages::events::{EventKind, Severity};
use std::time::{Duration, Instant};

use director_config::{nic, paths, store, Config, Management, Mode};
use director_messages::connections::{ConnectionFilter, Connections};
use director_messages::framing::{call, NETFW_SOCKET};
use director_messages::init::{Applied, ApplyFailure, BoxStatus, Step};
use director_messages::netfw::{NetfwAnswer, NetfwRequest};
use director_messages::status::Status;
use director_messages::{one_line, MessageError, Problem};
use netfw_core::model::{DataPlaneSpec, ServiceSpec};
use netfw_kernel::{director, mode, rtnl};

use crate::init::CONFIRM_WINDOW;
use crate::log;
use crate::nics::{Nic, Roles};
use crate::supervise::Supervisor;
use crate::sys;

/// What is forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Running {
    /// Nothing (no valid config).
    Nothing,
    /// netfw, supervised.
    Forwarder,
    /// The kernel's IPVS (by config or by fallback).
    Ipvs,
}

impl Running {
    /// As the banner and status say it.
    pub fn name(self) -> &'static str {
        match self {
            Running::Ipvs => "ipvs (the kernel forwards)",
            Running::Forwarder => "forwarder (netfw)",
            Running::Nothing => "none",
        }
    }
    /// The short name ("forwarder", "ipvs", "none").
    pub fn short(self) -> &'static str {
        match self {
            Running::Ipvs => "ipvs",
            Running::Forwarder => "forwarder",
            Running::Nothing => "none",
        }
    }
}

/// A config in force (or about to be): the document as written, parsed with its NIC
/// references resolved, the data plane's view of it, the NIC roles, and the mode it runs in.
#[derive(Debug, Clone)]
pub struct InForce {
    /// The document as the operator wrote it (what is saved).
    pub text: String,
    /// Parsed, NIC references resolved to names.
    pub cfg: Config,
    /// The data plane's view.
    pub spec: DataPlaneSpec,
    /// NIC roles.
    pub roles: Roles,
    /// The mode it runs in.
    pub mode: Running,
}

/// Validate a document on this box: parse, resolve NIC references (names or MACs), check every
/// rule. The mode is the config's (the caller may impose the fallback).
pub fn prepare(text: &str, nics: &[Nic]) -> Result<InForce, Vec<Problem>> {
    let mut cfg = Config::parse(text).map_err(director_messages::problems)?;
    // The rules first (they say what a NIC reference may be), then whether this box has it.
    let spec = cfg.validate().map_err(director_messages::problems)?;
    let mut problems = Vec::new();
    let mut resolve = |r: &mut String, field: &str| match nic::resolve(nics, r) {
        Ok(n) => *r = n,
        Err(e) => problems.push(Problem::at(field, e)),
    };
    resolve(&mut cfg.nics.vip_side, "nics.vip_side");
    resolve(&mut cfg.nics.rs_side, "nics.rs_side");
    if let Some(m) = cfg.management.as_mut() {
        resolve(&mut m.nic, "management.nic");
    }
    if let Some(m) = cfg.management.as_ref().filter(|m| m.nic == cfg.nics.vip_side || m.nic == cfg.nics.rs_side) {
        problems.push(Problem::at("management.nic", format!("{} is a dedicated forwarding NIC; management needs its own NIC", m.nic)));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // Without a management section the box stays manageable: the first NIC that is neither
    // VIP- nor RS-facing is management (DHCP), as without any config.
    let spare = nics.iter().map(|n| n.name.clone()).find(|n| *n != cfg.nics.vip_side && *n != cfg.nics.rs_side);
    let roles = Roles {
        management: cfg.management.as_ref().map(|m| m.nic.clone()).or(spare),
        vip_side: Some(cfg.nics.vip_side.clone()),
        rs_side: Some(cfg.nics.rs_side.clone()),
    };
    let mode = if cfg.mode == Mode::Ipvs { Running::Ipvs } else { Running::Forwarder };
    Ok(InForce { text: text.to_string(), cfg, spec, roles, mode })
}

/// A static management address and its gateway.
pub type Static = (String, Option<String>);

fn static_of(m: Option<&Management>) -> Option<Static> {
    m.and_then(|m| m.address.clone().map(|a| (a, m.gateway.clone())))
}

/// The parts of the box a config change touches.
pub trait Plant {
    /// Make the data plane leave `from` and run `to` (either may be none). Returns the mode
    /// actually entered: IPVS when the forwarder cannot use its NICs (the fallback).
    fn switch(&mut self, from: Option<&InForce>, to: Option<&InForce>) -> Result<Running, Vec<Problem>>;
    /// Does the data plane, running in `mode`, report exactly what `to` asks?
    fn verify(&mut self, to: &InForce, mode: Running) -> Result<(), Vec<Problem>>;
    /// Give the management NIC its new static address; with `drop_old`, remove the old one.
    fn management(&mut self, nic: &str, from: Option<&Static>, to: &Static, drop_old: bool) -> Result<(), Problem>;
    /// Remove an address from the management NIC.
    fn retire(&mut self, nic: &str, cidr: &str) -> Result<(), Problem>;
    /// Save a document on the config partition.
    fn save(&mut self, text: &str) -> Result<(), Problem>;
}

/// A management change waiting for confirmation.
#[derive(Debug)]
pub struct Pending {
    /// The document in force before it (restored on rollback).
    previous: String,
    /// The new document (saved on confirm).
    new: String,
    /// When it is rolled back.
    deadline: Instant,
    /// The old management address, kept during the window so the operator's page still gets
    /// its answer; removed on confirmation.
    retire: Option<(String, String)>,
}

/// Moving the management address back when a change that moved it is undone.
struct Undo {
    moved: bool,
    nic: Option<String>,
    new: Option<Static>,
    old: Option<Static>,
}

impl Undo {
    fn run(&self, plant: &mut impl Plant) {
        if let (true, Some(nic), Some(old)) = (self.moved, self.nic.as_deref(), self.old.as_ref()) {
            if let Err(p) = plant.management(nic, self.new.as_ref(), old, true) {
                log::init(&format!("moving the management address back failed: {p}"));
            }
        }
    }
}

/// What the init knows about the config and the forwarding mode.
#[derive(Debug)]
pub struct Book {
    /// The box's NICs.
    pub nics: Vec<Nic>,
    /// Their roles (fixed until reboot).
    pub roles: Roles,
    /// The forwarding mode in force.
    pub running: Running,
    /// Whether `running` is ipvs because the forwarder could not run.
    pub fallback: bool,
    /// Whether the config partition is mounted (saves possible).
    pub config_mounted: bool,
    /// The config in force.
    pub current: Option<InForce>,
    /// A management change awaiting confirmation.
    pub pending: Option<Pending>,
    /// A saved config that only a reboot applies (why).
    pub reboot_needed: Option<String>,
}

fn fail(step: Step, problems: Vec<Problem>) -> ApplyFailure {
    ApplyFailure { step, problems }
}

impl Book {
    /// Apply a new config document, logging the outcome on the console.
    pub fn apply(&mut self, plant: &mut impl Plant, json: &str) -> Result<Applied, ApplyFailure> {
        let before = self.running;
        let r = self.transaction(plant, json, false);
        match &r {
            Ok(a) => {
                events::record(EventKind::Config, Severity::Info, &a.message);
                if self.running != before {
                    events::record(EventKind::Mode, Severity::Notice, &format!("mode: {} -> {}", before.name(), self.running.name()));
                }
                events::configure(self.current.as_ref().map(|c| &c.cfg));
            }
            Err(f) => events::record(EventKind::Config, Severity::Warning, &f.to_string()),
        }
        r
    }

    fn transaction(&mut self, plant: &mut impl Plant, json: &str, rollback: bool) -> Result<Applied, ApplyFailure> {
        if self.pending.is_some() && !rollback {
            return Err(fail(
                Step::Validate,
                vec![Problem::general("a management change is waiting for confirmation: confirm it (or let it roll back) first")],
            ));
        }
        let mut next = prepare(json, &self.nics).map_err(|p| fail(Step::Validate, p))?;
        if self.fallback {
            // The forwarder cannot use this box's NICs: every config runs in IPVS.
            next.mode = Running::Ipvs;
        }
        if !self.config_mounted {
            return Err(fail(Step::Save, vec![Problem::general("there is no config partition to save it on")]));
        }
        let old_mgmt = static_of(self.current.as_ref().and_then(|c| c.cfg.management.as_ref()));
        let new_mgmt = static_of(next.cfg.management.as_ref());
        let mgmt_changes = old_mgmt != new_mgmt;
        // What only a reboot can change: the NICs' roles (the forwarder's rings, the web
        // page's sockets are bound to them) and DHCP versus a static management address. A
        // config without a management section keeps the NIC the box is managed through.
        let reboot_for = if next.roles.vip_side != self.roles.vip_side || next.roles.rs_side != self.roles.rs_side {
            Some("the VIP-facing and RS-facing NICs change")
        } else if next.cfg.management.is_some() && next.roles.management != self.roles.management {
            Some("the management NIC changes")
        } else if mgmt_changes && (old_mgmt.is_none() || new_mgmt.is_none()) {
            Some("the management address switches between DHCP and static")
        } else {
            None
        };
        if let Some(why) = reboot_for.filter(|_| !rollback) {
            plant.save(json).map_err(|p| fail(Step::Save, vec![p]))?;
            self.reboot_needed = Some(format!("{why}: saved, takes effect at the next reboot"));
            return Ok(Applied {
                message: format!(
                    "config saved, NOT applied: {why}, which takes a reboot; the running config stays in force until then (check the management NIC and address: the page is reached through them)"
                ),
                mode: self.running.short().into(),
                confirm_within_s: None,
                reboot_needed: self.reboot_needed.clone(),
            });
        }

        // Apply.
        let mgmt_nic = self.roles.management.clone();
        let moved = match (mgmt_changes, mgmt_nic.as_deref(), new_mgmt.as_ref()) {
            (true, Some(nic), Some(to)) => {
                // A rollback drops the address that was being tried; a new change keeps the old
                // one until it is confirmed.
                plant.management(nic, old_mgmt.as_ref(), to, rollback).map_err(|p| fail(Step::Apply, vec![p]))?;
                true
            }
            _ => false,
        };
        let undo = Undo { moved, nic: mgmt_nic.clone(), new: new_mgmt.clone(), old: old_mgmt.clone() };
        let previous = self.current.clone();
        let entered = match plant.switch(previous.as_ref(), Some(&next)) {
            Ok(m) => m,
            Err(problems) => {
                let problems = self.restore(plant, &next, previous.as_ref(), problems);
                undo.run(plant);
                return Err(fail(Step::Apply, problems));
            }
        };
        let fell_back = entered != next.mode;
        next.mode = entered;

        // Verify.
        if let Err(problems) = plant.verify(&next, entered) {
            let problems = self.restore(plant, &next, previous.as_ref(), problems);
            undo.run(plant);
            return Err(fail(Step::Verify, problems));
        }

        // Save (a management change is saved once confirmed).
        if !mgmt_changes || rollback {
            if let Err(p) = plant.save(json) {
                let problems = self.restore(plant, &next, previous.as_ref(), vec![p]);
                undo.run(plant);
                return Err(fail(Step::Save, problems));
            }
        }

        self.running = entered;
        self.fallback |= fell_back;
        self.reboot_needed = None;
        self.current = Some(next);
        let mode_name = if entered == Running::Ipvs { "ipvs" } else { "forwarder" };
        let fallback_note = if fell_back { " (fallback: the forwarder cannot use its NICs)" } else { "" };
        if mgmt_changes && !rollback {
            let retire = old_mgmt.zip(mgmt_nic).map(|((a, _), nic)| (nic, a));
            self.pending = Some(Pending {
                previous: previous.map(|p| p.text).unwrap_or_default(),
                new: json.to_string(),
                deadline: Instant::now() + CONFIRM_WINDOW,
                retire,
            });
            return Ok(Applied {
                message: format!(
                    "config applied: mode {mode_name}{fallback_note}; the management address changed to {}: confirm within {} s from the new address or it is rolled back (the old address answers until then)",
                    new_mgmt.map(|m| m.0).unwrap_or_default(),
                    CONFIRM_WINDOW.as_secs()
                ),
                mode: mode_name.into(),
                confirm_within_s: Some(CONFIRM_WINDOW.as_secs()),
                reboot_needed: None,
            });
        }
        Ok(Applied {
            message: format!("config saved and applied: mode {mode_name}{fallback_note}"),
            mode: mode_name.into(),
            confirm_within_s: None,
            reboot_needed: None,
        })
    }

    /// Switch the data plane back from `failed` to the config that was running. Returns the
    /// problems to report (with the restore's own, if it failed too).
    fn restore(&self, plant: &mut impl Plant, failed: &InForce, previous: Option<&InForce>, mut problems: Vec<Problem>) -> Vec<Problem> {
        if let Err(p) = plant.switch(Some(failed), previous) {
            let msg = format!("RESTORING THE PREVIOUS CONFIG FAILED TOO: {}", one_line(&p));
            log::init(&msg);
            problems.push(Problem::general(msg));
        }
        problems
    }

    /// Keep a pending management change: save it.
    pub fn confirm(&mut self, plant: &mut impl Plant) -> Result<String, String> {
        let Some(p) = self.pending.take() else { return Err("there is no change waiting for confirmation".into()) };
        if let Err(e) = plant.save(&p.new) {
            self.pending = Some(p);
            return Err(e.to_string());
        }
        if let Some((nic, old)) = &p.retire {
            if let Err(e) = plant.retire(nic, old) {
                log::init(&format!("removing the old management address {old}: {e}"));
            }
        }
        let m = "management change confirmed and saved".to_string();
        events::record(EventKind::Config, Severity::Notice, &m);
        Ok(m)
    }

    /// Roll back a pending change whose window has passed.
    pub fn tick(&mut self, plant: &mut impl Plant) {
        if self.pending.as_ref().is_some_and(|p| Instant::now() >= p.deadline) {
            if let Some(p) = self.pending.take() {
                events::record(
                    EventKind::Config,
                    Severity::Warning,
                    "ROLLBACK: the management change was not confirmed within 60 s; restoring the previous config",
                );
                match self.transaction(plant, &p.previous, true) {
                    Ok(a) => {
                        log::init(&format!("rolled back: {}", a.message));
                        events::configure(self.current.as_ref().map(|c| &c.cfg));
                    }
                    Err(e) => log::init(&format!("rollback failed: {e}")),
                }
            }
        }
    }

    /// The box's status document, with the data plane's table.
    pub fn status(&self, table: Option<Status>) -> BoxStatus {
        BoxStatus {
            mode: self.running.short().into(),
            fallback: self.fallback,
            confirm_within_s: self.pending.as_ref().map(|p| p.deadline.saturating_duration_since(Instant::now()).as_secs()),
            config_valid: self.current.is_some(),
            reboot_needed: self.reboot_needed.clone(),
            status: table,
        }
    }
}

/// The netfw command line the supervisor runs.
pub fn netfw_argv() -> Vec<String> {
    vec!["/bin/netfw".into(), "run".into(), "--config".into(), paths::RUN_CONFIG.into(), "--control".into(), NETFW_SOCKET.into()]
}

/// The supervised name of ipvs mode's health checker.
pub const HEALTH: &str = "netfw-health";

/// ipvs mode's health checker's command line (it answers on netfw's control socket).
pub fn watch_argv() -> Vec<String> {
    ["/bin/netfw", "ipvs", "watch", "--config", paths::RUN_CONFIG, "--control", NETFW_SOCKET].map(String::from).to_vec()
}

/// Whether ipvs mode needs `netfw ipvs watch` for `spec`: a service with a check or a sorry
/// server, or an HA pair (the watch runs its election).
pub fn needs_checker(spec: &netfw_core::model::DataPlaneSpec) -> bool {
    spec.ha.is_some() || spec.services.iter().any(netfw_kernel::verdicts::adjusted)
}

/// The status in ipvs mode: the checker's (the kernel's table with health) when it runs, else
/// the kernel's table, warning if the config's servers should be checked.
pub fn ipvs_status(sup: &Supervisor, current: Option<&InForce>) -> Result<Status, String> {
    let in_force = current.map(|c| (&c.cfg, &c.spec));
    if sup.has(HEALTH) {
        match netfw_status() {
            Ok(s) => return Ok(s),
            Err(p) => {
                let mut s = mode::status(in_force).map_err(|e| e.to_string())?;
                s.warnings.extend(current.and_then(|c| netfw_kernel::report::unchecked_warning(&c.cfg, &p.message)));
                return Ok(s);
            }
        }
    }
    mode::status(in_force).map_err(|e| e.to_string())
}

/// Write the effective config (resolved NIC names) where netfw reads it.
pub fn write_run_config(cfg: &Config) -> Result<(), Problem> {
    let text = serde_json::to_string_pretty(cfg).map_err(|e| Problem::general(e.to_string()))?;
    std::fs::write(paths::RUN_CONFIG, text).map_err(|e| Problem::general(format!("{}: {e}", paths::RUN_CONFIG)))
}

/// How long a starting netfw has to answer on its control socket.
const NETFW_START: Duration = Duration::from_secs(20);

/// The real box: the supervisor (netfw), the kernel (IPVS, addresses), the config partition.
#[derive(Debug)]
pub struct Appliance<'a> {
    /// The supervisor.
    pub sup: &'a mut Supervisor,
}

/// netfw's status document, asked on its control socket.
pub fn netfw_status() -> Result<Status, Problem> {
    match call::<_, NetfwAnswer>(std::path::Path::new(NETFW_SOCKET), &NetfwRequest::Status, Duration::from_secs(5)) {
        Ok(NetfwAnswer::Status { status }) => Ok(*status),
        Ok(other) => Err(Problem::general(format!("netfw answered: {}", other.human()))),
        Err(e) => Err(Problem::general(format!("netfw: {e}"))),
    }
}

/// The connection list of the mode in force: netfw's flows and templates (forwarder), the
/// kernel's `/proc/net/ip_vs_conn` (ipvs; `services`, those in force, name its firewall marks).
pub fn connections(running: Running, filter: &ConnectionFilter, services: &[ServiceSpec]) -> Result<Connections, String> {
    match running {
        Running::Forwarder => {
            let req = NetfwRequest::Connections { filter: filter.clone() };
            match call::<_, NetfwAnswer>(std::path::Path::new(NETFW_SOCKET), &req, Duration::from_secs(5)) {
                Ok(NetfwAnswer::Connections { list }) => Ok(list),
                Ok(other) => Err(format!("netfw answered: {}", other.human())),
                Err(e) => Err(format!("netfw: {e}")),
            }
        }
        Running::Ipvs => netfw_kernel::conns::read(filter, services),
        Running::Nothing => Err("nothing forwards yet: no config is in force".into()),
    }
}

fn ipvs_log(line: String) {
    log::line("ipvs", &line);
}

fn mode_problem(e: &impl std::fmt::Display) -> Vec<Problem> {
    vec![Problem::general(e.to_string())]
}

impl Appliance<'_> {
    fn leave(&mut self, from: &InForce) -> Result<(), Vec<Problem>> {
        match from.mode {
            Running::Forwarder => {
                self.stop_child("netfw");
                Ok(())
            }
            Running::Ipvs => {
                self.stop_child(HEALTH);
                mode::leave(&from.cfg, &from.spec, &mut ipvs_log).map_err(|e| mode_problem(&e))
            }
            Running::Nothing => Ok(()),
        }
    }

    /// Stop a supervised child, if it runs. Others that exit meanwhile are told to the
    /// supervisor, which restarts its own.
    fn stop_child(&mut self, name: &str) {
        let sup = &mut *self.sup;
        let mut others = Vec::new();
        sup.remove(name, |pid, st| others.push((pid, st)));
        for (pid, st) in others {
            sup.exited(pid, st);
        }
    }

    /// Enter (or update) ipvs mode for `to`, then start the health checker or have it re-read
    /// the config, if `to` needs one.
    fn enter_ipvs(&mut self, to: &InForce) -> Result<Running, Vec<Problem>> {
        if !needs_checker(&to.spec) {
            self.stop_child(HEALTH);
        }
        mode::enter(&to.cfg, &to.spec, &mut ipvs_log).map_err(|e| mode_problem(&e))?;
        if needs_checker(&to.spec) {
            if !self.sup.has(HEALTH) {
                self.sup.add(HEALTH, watch_argv());
            } else {
                match call::<_, NetfwAnswer>(std::path::Path::new(NETFW_SOCKET), &NetfwRequest::Reload, Duration::from_secs(30)) {
                    Ok(NetfwAnswer::Reloaded { .. }) => {}
                    // Refused, or not answering (starting, or failing): a fresh start reads
                    // the new config.
                    Ok(other) => {
                        log::init(&format!("the health checker refused the new config ({}); restarting it", other.human()));
                        self.sup.kill(HEALTH);
                    }
                    Err(e) => {
                        log::init(&format!("the health checker did not take the new config ({e}); restarting it"));
                        self.sup.kill(HEALTH);
                    }
                }
            }
        }
        Ok(Running::Ipvs)
    }

    fn enter(&mut self, to: &InForce) -> Result<Running, Vec<Problem>> {
        write_run_config(&to.cfg).map_err(|p| vec![p])?;
        match to.mode {
            Running::Forwarder => {
                self.sup.add("netfw", netfw_argv());
                match self.wait_netfw() {
                    Ok(()) => Ok(Running::Forwarder),
                    Err(Some(status))
                        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == i32::from(netfw::run::EXIT_NICS_UNUSABLE) =>
                    {
                        events::record(
                            EventKind::Mode,
                            Severity::Warning,
                            "FALLBACK: the forwarder cannot use its NICs (see its last line); the kernel's IPVS takes over with the same config",
                        );
                        self.sup.remove("netfw", |_, _| {});
                        self.enter_ipvs(to)
                    }
                    Err(Some(status)) => Err(vec![Problem::general(format!(
                        "netfw did not start: it {} (its last lines on the console say why)",
                        if libc::WIFSIGNALED(status) {
                            format!("was killed by signal {}", libc::WTERMSIG(status))
                        } else {
                            format!("exited with status {}", libc::WEXITSTATUS(status))
                        }
                    ))]),
                    Err(None) => {
                        Err(vec![Problem::general(format!("netfw did not answer within {} s of starting", NETFW_START.as_secs()))])
                    }
                }
            }
            Running::Ipvs => self.enter_ipvs(to),
            Running::Nothing => Ok(Running::Nothing),
        }
    }

    /// Wait until a starting netfw answers on its control socket. `Err(Some(status))` if it
    /// exited first, `Err(None)` if it never answered.
    fn wait_netfw(&mut self) -> Result<(), Option<i32>> {
        let deadline = Instant::now() + NETFW_START;
        while Instant::now() < deadline {
            while let Some((pid, status)) = sys::reap() {
                if self.sup.exited(pid, status).as_deref() == Some("netfw") {
                    return Err(Some(status));
                }
            }
            if netfw_status().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(None)
    }
}

impl Plant for Appliance<'_> {
    fn switch(&mut self, from: Option<&InForce>, to: Option<&InForce>) -> Result<Running, Vec<Problem>> {
        match (from, to) {
            // A new I/O backend means opening the NICs anew: netfw restarts (below).
            (Some(f), Some(t)) if f.mode == Running::Forwarder && t.mode == Running::Forwarder && f.cfg.io == t.cfg.io => {
                write_run_config(&t.cfg).map_err(|p| vec![p])?;
                match call::<_, NetfwAnswer>(std::path::Path::new(NETFW_SOCKET), &NetfwRequest::Reload, Duration::from_secs(60)) {
                    // netfw logs the reload itself.
                    Ok(NetfwAnswer::Reloaded { .. }) => Ok(Running::Forwarder),
                    Ok(NetfwAnswer::Refused { problems }) => Err(problems),
                    Ok(other) => Err(vec![Problem::general(format!("netfw answered: {}", other.human()))]),
                    // netfw is not running (it may be failing on the config in force): start
                    // it afresh on the new one instead.
                    Err(MessageError::Connect { .. } | MessageError::Closed) => {
                        self.leave(f)?;
                        self.enter(t)
                    }
                    Err(e) => Err(vec![Problem::general(format!("netfw reload: {e}"))]),
                }
            }
            (Some(f), Some(t)) if f.mode == Running::Ipvs && t.mode == Running::Ipvs => {
                write_run_config(&t.cfg).map_err(|p| vec![p])?;
                // Addresses of the old config that the new one does not keep go first.
                let keep = director::addresses(&t.cfg, &t.spec);
                for (nic, addr, prefix) in director::addresses(&f.cfg, &f.spec) {
                    if !keep.contains(&(nic.clone(), addr, prefix)) {
                        ipvs_log(match rtnl::del_address(&nic, addr, prefix) {
                            Ok(()) => format!("removed {addr}/{prefix} from {nic}"),
                            Err(e) => e.to_string(),
                        });
                    }
                }
                self.enter_ipvs(t)
            }
            (from, to) => {
                if let Some(f) = from {
                    self.leave(f)?;
                }
                match to {
                    Some(t) => self.enter(t),
                    None => Ok(Running::Nothing),
                }
            }
        }
    }

    fn verify(&mut self, to: &InForce, mode: Running) -> Result<(), Vec<Problem>> {
        let diffs = match mode {
            Running::Forwarder => netfw_status().map_err(|p| vec![p])?.differences(&to.spec, true),
            Running::Ipvs => mode::verify(&to.cfg, &to.spec).map_err(|e| mode_problem(&e))?,
            Running::Nothing => Vec::new(),
        };
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(diffs.into_iter().map(|d| Problem::general(format!("the data plane does not run what was asked: {d}"))).collect())
        }
    }

    fn management(&mut self, nic: &str, from: Option<&Static>, to: &Static, drop_old: bool) -> Result<(), Problem> {
        let new = director_config::parse_cidr(&to.0).map_err(|e| Problem::at("management.address", e))?;
        // Both addresses may share a subnet, where the new one is a secondary: removing the old
        // primary would take every secondary with it unless the kernel promotes them.
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{nic}/promote_secondaries"), "1");
        rtnl::add_address(nic, new.addr(), new.prefix()).map_err(|e| Problem::at("management.address", e.to_string()))?;
        if let Some((old, _)) = from.filter(|(a, _)| drop_old && *a != to.0) {
            self.retire(nic, old)?;
        }
        if let Some(gw) = to.1.as_deref().and_then(|g| g.parse().ok()) {
            rtnl::set_default_route(gw).map_err(|e| Problem::at("management.gateway", e.to_string()))?;
        }
        Ok(())
    }

    fn retire(&mut self, nic: &str, cidr: &str) -> Result<(), Problem> {
        match director_config::parse_cidr(cidr) {
            Ok(o) => rtnl::del_address(nic, o.addr(), o.prefix()).map_err(|e| Problem::general(e.to_string())),
            Err(_) => Ok(()),
        }
    }

    fn save(&mut self, text: &str) -> Result<(), Problem> {
        store::save(&paths::on_partition(paths::CONFIG_STORE), text.as_bytes())
            .map(|_| ())
            .map_err(|e| Problem::general(format!("cannot save: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = include_str!("../../docs/example-config.json");

    /// A box in memory: it records what the transaction asked, in order, and refuses what it
    /// is told to.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        refuse_switch_to: Option<u32>,
        refuse_verify: bool,
        refuse_save: bool,
        saved: Option<String>,
        running: Option<u32>,
        fall_back: bool,
    }

    fn weight(c: &InForce) -> u32 {
        u32::from(c.spec.services[0].real_servers[0].weight)
    }

    impl Plant for Fake {
        fn switch(&mut self, from: Option<&InForce>, to: Option<&InForce>) -> Result<Running, Vec<Problem>> {
            self.calls.push(format!("switch {:?} -> {:?}", from.map(weight), to.map(weight)));
            if to.map(weight) == self.refuse_switch_to && to.is_some() {
                return Err(vec![Problem::at("flow_capacity", "does not fit")]);
            }
            self.running = to.map(weight);
            Ok(match to {
                Some(_) if self.fall_back => Running::Ipvs,
                Some(t) => t.mode,
                None => Running::Nothing,
            })
        }
        fn verify(&mut self, to: &InForce, _: Running) -> Result<(), Vec<Problem>> {
            self.calls.push(format!("verify {}", weight(to)));
            if self.refuse_verify {
                Err(vec![Problem::general("the flow table holds 1024 flows, not the 2048 asked")])
            } else {
                Ok(())
            }
        }
        fn management(&mut self, _: &str, _: Option<&Static>, to: &Static, _: bool) -> Result<(), Problem> {
            self.calls.push(format!("management {}", to.0));
            Ok(())
        }
        fn retire(&mut self, _: &str, cidr: &str) -> Result<(), Problem> {
            self.calls.push(format!("retire {cidr}"));
            Ok(())
        }
        fn save(&mut self, text: &str) -> Result<(), Problem> {
            self.calls.push("save".into());
            if self.refuse_save {
                return Err(Problem::general("cannot save: I/O error"));
            }
            self.saved = Some(text.into());
            Ok(())
        }
    }

    fn doc(weight: u32) -> String {
        let mut v: serde_json::Value = serde_json::from_str(DOC).unwrap();
        v["services"][0]["real_servers"][0]["weight"] = weight.into();
        v.to_string()
    }

    fn nics() -> Vec<Nic> {
        ["eth0", "eth1", "eth2"].iter().enumerate().map(|(i, n)| Nic { name: (*n).into(), mac: format!("02:00:00:00:d0:0{i}") }).collect()
    }

    /// A box running weight 1, saved.
    fn book() -> (Book, Fake) {
        let mut b = Book {
            nics: nics(),
            roles: Roles::default(),
            running: Running::Nothing,
            fallback: false,
            config_mounted: true,
            current: None,
            pending: None,
            reboot_needed: None,
        };
        let first = prepare(&doc(1), &b.nics).unwrap();
        b.roles = first.roles.clone();
        b.running = first.mode;
        b.current = Some(first);
        (b, Fake { running: Some(1), saved: Some(doc(1)), ..Fake::default() })
    }

    #[test]
    fn a_change_is_applied_then_verified_then_saved() {
        let (mut b, mut p) = book();
        let a = b.apply(&mut p, &doc(2)).unwrap();
        assert_eq!(a.message, "config saved and applied: mode forwarder");
        assert_eq!(p.calls, ["switch Some(1) -> Some(2)", "verify 2", "save"]);
        assert_eq!(p.saved, Some(doc(2)));
        assert_eq!(b.current.as_ref().map(weight), Some(2));
    }

    #[test]
    fn a_change_the_data_plane_refuses_leaves_the_running_and_the_saved_config() {
        let (mut b, mut p) = book();
        p.refuse_switch_to = Some(3);
        let f = b.apply(&mut p, &doc(3)).unwrap_err();
        assert_eq!(f.step, Step::Apply);
        assert_eq!(f.problems, vec![Problem::at("flow_capacity", "does not fit")]);
        assert!(f.to_string().starts_with("config NOT applied (apply failed): flow_capacity: does not fit"), "{f}");
        assert_eq!(p.calls, ["switch Some(1) -> Some(3)", "switch Some(3) -> Some(1)"], "switched back, never saved");
        assert_eq!((p.running, p.saved.clone()), (Some(1), Some(doc(1))));
        assert_eq!(b.current.as_ref().map(weight), Some(1));
    }

    #[test]
    fn a_change_that_does_not_verify_or_cannot_be_saved_is_undone() {
        let (mut b, mut p) = book();
        p.refuse_verify = true;
        let f = b.apply(&mut p, &doc(4)).unwrap_err();
        assert_eq!(f.step, Step::Verify);
        assert_eq!(p.calls, ["switch Some(1) -> Some(4)", "verify 4", "switch Some(4) -> Some(1)"]);
        assert_eq!((p.running, p.saved.clone()), (Some(1), Some(doc(1))));

        let (mut b, mut p) = book();
        p.refuse_save = true;
        let f = b.apply(&mut p, &doc(5)).unwrap_err();
        assert_eq!(f.step, Step::Save);
        assert_eq!(f.problems[0].message, "cannot save: I/O error");
        assert_eq!(p.calls, ["switch Some(1) -> Some(5)", "verify 5", "save", "switch Some(5) -> Some(1)"]);
        assert_eq!((p.running, b.current.as_ref().map(weight)), (Some(1), Some(1)));
    }

    #[test]
    fn an_invalid_change_touches_nothing_and_names_its_fields() {
        let (mut b, mut p) = book();
        let mut v: serde_json::Value = serde_json::from_str(DOC).unwrap();
        v["services"][0]["real_servers"][1]["address"] = "198.18.7.12".into();
        v["nics"]["vip_side"] = "eth9".into();
        let f = b.apply(&mut p, &v.to_string()).unwrap_err();
        assert_eq!(f.step, Step::Validate);
        assert_eq!(f.problems[0].field.as_deref(), Some("services[0].real_servers[1].address"));
        let f = b.apply(&mut p, &doc(1).replace("\"eth1\"", "\"eth9\"")).unwrap_err();
        assert_eq!(f.problems, vec![Problem::at("nics.vip_side", "no NIC named or with MAC eth9")]);
        let f = b.apply(&mut p, "{\"version\": 1,").unwrap_err();
        assert_eq!((f.step, f.problems[0].field.clone()), (Step::Validate, None));
        assert!(p.calls.is_empty(), "{:?}", p.calls);
    }

    #[test]
    fn a_dedicated_nic_named_by_its_mac_is_resolved_like_a_name() {
        let (mut b, mut p) = book();
        let a = b.apply(&mut p, &doc(2).replace("\"eth1\"", "\"02:00:00:00:D0:01\"")).unwrap();
        assert!(a.message.starts_with("config saved and applied"), "{}", a.message);
        assert_eq!(b.current.unwrap().cfg.nics.vip_side, "eth1");
    }

    #[test]
    fn when_the_forwarder_cannot_run_the_change_runs_in_ipvs_and_says_so() {
        let (mut b, mut p) = book();
        p.fall_back = true;
        let a = b.apply(&mut p, &doc(2)).unwrap();
        assert_eq!(a.message, "config saved and applied: mode ipvs (fallback: the forwarder cannot use its NICs)");
        assert!(b.fallback && b.running == Running::Ipvs);
    }
}
