//! The appliance's running state and how a new config takes effect: validate, apply live
//! (netfw reloads, or IPVS reconciles, or the mode switches), save power-loss safe. A change
//! of the management address is applied but not saved until confirmed; unconfirmed after 60 s
//! it is rolled back. Also the status report for the web page, in both modes.

use std::time::Instant;

use netfw::config::{Config, Management, Mode};
use netfw::netconf;

use crate::init::{self, CONFIRM_WINDOW, PREV_RUN_CONFIG, RUN_CONFIG};
use crate::log;
use crate::nics::{Nic, Roles};
use crate::supervise::Supervisor;

/// What is forwarding now.
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

/// Everything the init owns after boot.
#[derive(Debug)]
pub struct State {
    /// The box's NICs.
    pub nics: Vec<Nic>,
    /// Their roles (fixed until reboot).
    pub roles: Roles,
    /// The forwarding mode in force.
    pub running: Running,
    /// Whether `running` is ipvs because the forwarder could not run.
    pub fallback: bool,
    /// Supervised children.
    pub sup: Supervisor,
    /// Whether the config partition is mounted (saves possible).
    pub config_mounted: bool,
    /// The document in force, as written.
    pub text: Option<String>,
    /// It, parsed (NIC references resolved).
    pub cfg: Option<Config>,
    /// A management change awaiting confirmation.
    pub pending: Option<Pending>,
    /// A saved config that only a reboot applies (why).
    pub reboot_needed: Option<String>,
}

/// The netfw command line the supervisor runs.
pub fn netfw_argv() -> Vec<String> {
    vec!["/bin/netfw".into(), "run".into(), "--config".into(), RUN_CONFIG.into(), "--control".into(), "/run/netfw.sock".into()]
}

/// Leave the running mode (removing everything it set up) and enter `want`.
pub fn switch(from: Running, want: Running, sup: &mut Supervisor) {
    match from {
        Running::Forwarder if want != Running::Forwarder => sup.remove("netfw"),
        Running::Ipvs if want != Running::Ipvs => init::run_logged("ipvs", &["ipvs", "clear", "--config", PREV_RUN_CONFIG]),
        _ => {}
    }
    match want {
        Running::Forwarder if from != Running::Forwarder => sup.add("netfw", netfw_argv()),
        Running::Ipvs => init::run_logged("ipvs", &["ipvs", "apply", "--config", RUN_CONFIG, "--fallback"]),
        _ => {}
    }
}

/// Static management address and gateway of a management section.
fn static_of(m: Option<&Management>) -> Option<(String, Option<String>)> {
    m.and_then(|m| m.address.clone().map(|a| (a, m.gateway.clone())))
}

/// Give the management NIC its new static address (and gateway); with `drop_old`, remove the
/// old address too.
fn move_management(
    nic: &str,
    from: Option<&(String, Option<String>)>,
    to: &(String, Option<String>),
    drop_old: bool,
) -> Result<(), String> {
    let new = netfw::config::parse_cidr(&to.0).map_err(|e| format!("management.address: {e}"))?;
    // Both addresses may share a subnet, where the new one is a secondary: removing the old
    // primary would take every secondary with it unless the kernel promotes them.
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{nic}/promote_secondaries"), "1");
    netconf::add_address(nic, new.addr, new.prefix)?;
    if let Some((old, _)) = from.filter(|(a, _)| drop_old && *a != to.0) {
        remove_address(nic, old)?;
    }
    if let Some(gw) = to.1.as_deref().and_then(|g| g.parse().ok()) {
        netconf::set_default_route(gw)?;
    }
    Ok(())
}

fn remove_address(nic: &str, cidr: &str) -> Result<(), String> {
    match netfw::config::parse_cidr(cidr) {
        Ok(o) => netconf::del_address(nic, o.addr, o.prefix),
        Err(_) => Ok(()),
    }
}

impl State {
    /// Apply a new config document. Ok: what happened, in a sentence; Err: why nothing did.
    pub fn apply(&mut self, json: &str) -> Result<String, String> {
        let r = self.apply_inner(json, false);
        match &r {
            Ok(m) => log::init(m),
            Err(e) => log::init(&format!("apply-config refused, the running config stays in force: {e}")),
        }
        r
    }

    fn apply_inner(&mut self, json: &str, rollback: bool) -> Result<String, String> {
        if self.pending.is_some() && !rollback {
            return Err("a management change is waiting for confirmation: confirm it (or let it roll back) first".into());
        }
        let (cfg, new_roles) = init::prepare_config(json, &self.nics)?;
        let old_mgmt = static_of(self.cfg.as_ref().and_then(|c| c.management.as_ref()));
        let new_mgmt = static_of(cfg.management.as_ref());
        let mgmt_changes = old_mgmt != new_mgmt;
        // What only a reboot can change: the NICs' roles (the forwarder's rings, the web
        // page's sockets are bound to them) and DHCP versus a static management address. A
        // config without a management section keeps the NIC the box is managed through.
        let reboot_for = if new_roles.vip_side != self.roles.vip_side || new_roles.rs_side != self.roles.rs_side {
            Some("the VIP-facing and RS-facing NICs change")
        } else if cfg.management.is_some() && new_roles.management != self.roles.management {
            Some("the management NIC changes")
        } else if mgmt_changes && (old_mgmt.is_none() || new_mgmt.is_none()) {
            Some("the management address switches between DHCP and static")
        } else {
            None
        };
        if !self.config_mounted {
            return Err("there is no config partition to save it on".into());
        }
        if let Some(why) = reboot_for.filter(|_| !rollback) {
            save_config(json)?;
            self.reboot_needed = Some(format!("{why}: saved, takes effect at the next reboot"));
            return Ok(format!(
                "config saved, NOT applied: {why}, which takes a reboot; the running config stays in force until then (check the management NIC and address: the page is reached through them)"
            ));
        }
        if !mgmt_changes || rollback {
            save_config(json)?;
        }
        let _ = std::fs::copy(RUN_CONFIG, PREV_RUN_CONFIG);
        init::write_run_config(&cfg)?;
        if let (true, Some(nic), Some(to)) = (mgmt_changes, self.roles.management.as_deref(), new_mgmt.as_ref()) {
            // A rollback drops the address that was being tried; a new change keeps the old one
            // until it is confirmed.
            move_management(nic, old_mgmt.as_ref(), to, rollback)?;
        }
        let want = if cfg.mode == Mode::Ipvs { Running::Ipvs } else { Running::Forwarder };
        if want == Running::Forwarder && self.running == Running::Forwarder {
            match netfw::ctl::request(std::path::Path::new("/run/netfw.sock"), "reload") {
                Ok(reply) => log::line("netfw", reply.trim()),
                Err(e) => log::init(&format!("netfw reload: {e}")),
            }
        } else {
            switch(self.running, want, &mut self.sup);
        }
        self.running = want;
        self.fallback = false;
        self.reboot_needed = None;
        let previous = self.text.replace(json.to_string()).unwrap_or_default();
        self.cfg = Some(cfg);
        let mode = if want == Running::Ipvs { "ipvs" } else { "forwarder" };
        if mgmt_changes && !rollback {
            let retire = old_mgmt.zip(self.roles.management.clone()).map(|((a, _), nic)| (nic, a));
            self.pending = Some(Pending { previous, new: json.to_string(), deadline: Instant::now() + CONFIRM_WINDOW, retire });
            return Ok(format!(
                "config applied: mode {mode}; the management address changed to {}: confirm within {} s from the new address or it is rolled back (the old address answers until then)",
                new_mgmt.map(|m| m.0).unwrap_or_default(),
                CONFIRM_WINDOW.as_secs()
            ));
        }
        Ok(format!("config saved and applied: mode {mode}"))
    }

    /// Keep a pending management change: save it.
    pub fn confirm(&mut self) -> Result<String, String> {
        let Some(p) = self.pending.take() else { return Err("there is no change waiting for confirmation".into()) };
        if let Err(e) = save_config(&p.new) {
            self.pending = Some(p);
            return Err(e);
        }
        if let Some((nic, old)) = &p.retire {
            if let Err(e) = remove_address(nic, old) {
                log::init(&format!("removing the old management address {old}: {e}"));
            }
        }
        let m = "management change confirmed and saved".to_string();
        log::init(&m);
        Ok(m)
    }

    /// Roll back a pending change whose window has passed.
    pub fn tick(&mut self) {
        if self.pending.as_ref().is_some_and(|p| Instant::now() >= p.deadline) {
            if let Some(p) = self.pending.take() {
                log::init("ROLLBACK: the management change was not confirmed within 60 s; restoring the previous config");
                match self.apply_inner(&p.previous, true) {
                    Ok(m) => log::init(&format!("rolled back: {m}")),
                    Err(e) => log::init(&format!("rollback failed: {e}")),
                }
            }
        }
    }

    /// The status report for the web page: mode, fallback, pending change, and the same
    /// status table in both modes.
    pub fn status_json(&self) -> String {
        let status: serde_json::Value = match self.running {
            Running::Forwarder => netfw::ctl::request(std::path::Path::new("/run/netfw.sock"), "status-json")
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null),
            Running::Ipvs => netfw::ipvs::cli::status(Some(std::path::Path::new(RUN_CONFIG)), true)
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null),
            Running::Nothing => serde_json::Value::Null,
        };
        serde_json::json!({
            "mode": match self.running { Running::Forwarder => "forwarder", Running::Ipvs => "ipvs", Running::Nothing => "none" },
            "fallback": self.fallback,
            "confirm_within_s": self.pending.as_ref().map(|p| p.deadline.saturating_duration_since(Instant::now()).as_secs()),
            "config_valid": self.cfg.is_some(),
            "reboot_needed": self.reboot_needed,
            "status": status,
        })
        .to_string()
    }
}

/// Save a document on the config partition so that a power cut leaves the old or the new one
/// (two checksummed slots, overwritten in place and synced).
pub fn save_config(text: &str) -> Result<(), String> {
    netfw::store::save(std::path::Path::new(init::CONFIG_STORE), text.as_bytes()).map(|_| ()).map_err(|e| format!("cannot save: {e}"))
}
