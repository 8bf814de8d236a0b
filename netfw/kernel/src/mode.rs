//! IPVS mode in one call each: enter it (the director's side, then reconcile the kernel's
//! table to the config), read it (the status document), verify it (what the kernel holds
//! equals what was asked), leave it (every service and this mode's addresses removed).

use std::fmt;

use director_config::Config;
use director_messages::status::Status;
use netfw_core::model::DataPlaneSpec;

use crate::director::{self, DirectorError};
use crate::ipvs::{Ipvs, IpvsError};
use crate::marks::{self, MarkError};
use crate::reconcile::{self, Wanted};

/// Why IPVS mode could not be entered, read or left.
#[derive(Debug)]
pub enum ModeError {
    /// The kernel's IPVS refused or is missing.
    Ipvs(IpvsError),
    /// The director's addresses or sysctls.
    Director(DirectorError),
    /// The firewall marks of port ranges and persistence groups.
    Marks(MarkError),
}

impl fmt::Display for ModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModeError::Ipvs(e) => e.fmt(f),
            ModeError::Director(e) => e.fmt(f),
            ModeError::Marks(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ModeError {}

impl From<IpvsError> for ModeError {
    fn from(e: IpvsError) -> Self {
        ModeError::Ipvs(e)
    }
}

/// The services the config wants.
pub fn wanted(spec: &DataPlaneSpec) -> Vec<Wanted> {
    Wanted::all(&spec.services)
}

/// Enter (or update) IPVS mode for `cfg`; every step is reported to `log` as it happens.
/// Returns the number of changes made to the kernel's table.
pub fn enter(cfg: &Config, spec: &DataPlaneSpec, log: &mut dyn FnMut(String)) -> Result<usize, ModeError> {
    // A forwarder that was killed before it could clean up leaves its XDP program on the NICs
    // (it keeps the NIC's receive offloads off), or its tc program (it would go on forwarding
    // the flows it knew, beside IPVS). The VIP-facing NIC's tc program is replaced by this
    // mode's marks at the end (or taken off), in one step: a reload leaves no moment unmarked.
    for nic in [&cfg.nics.vip_side, &cfg.nics.rs_side] {
        for m in [crate::rtnl::XdpMode::Driver, crate::rtnl::XdpMode::Generic] {
            let _ = crate::rtnl::detach_xdp(nic, m);
        }
    }
    if cfg.nics.rs_side != cfg.nics.vip_side {
        let _ = crate::rtnl::detach_tc(&cfg.nics.rs_side);
    }
    director::setup(cfg, spec, log).map_err(ModeError::Director)?;
    let mut ipvs = Ipvs::open()?;
    if let Some(h) = &spec.ha {
        // Both roles on both boxes: the master sends its connections, the backup takes the
        // peer's; whichever is master, the other has its connections.
        for master in [true, false] {
            ipvs.start_sync_daemon(master, &cfg.nics.rs_side, h.vrid)?;
        }
        log(format!("HA: the kernel's connection sync daemon (master and backup) on {}, sync ID {}", cfg.nics.rs_side, h.vrid));
    }
    let have = reconcile::read(&mut ipvs)?;
    let mut want = wanted(spec);
    crate::verdicts::leave_to_checker(&have, spec, &mut want);
    let changes = reconcile::diff(&have, &want);
    for c in &changes {
        log(c.to_string());
    }
    reconcile::apply(&mut ipvs, &changes)?;
    log(format!("IPVS matches the config ({} change{})", changes.len(), if changes.len() == 1 { "" } else { "s" }));
    // The marks after the services: a marked packet always finds its service.
    let rules = marks::install(&cfg.nics.vip_side, &spec.services).map_err(ModeError::Marks)?;
    if rules > 0 {
        log(format!("firewall marks for port ranges and persistence groups: {rules} rules on {}'s ingress", cfg.nics.vip_side));
    }
    Ok(changes.len())
}

/// The kernel's table with its counters as the status document; `cfg` (the config and its
/// validated spec) names the NICs, the DIP and the services behind each firewall mark.
pub fn status(cfg: Option<(&Config, &DataPlaneSpec)>) -> Result<Status, ModeError> {
    let mut ipvs = Ipvs::open()?;
    let table = reconcile::read(&mut ipvs)?;
    let arp = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    Ok(crate::report::collect(cfg, &table, &arp))
}

/// How the kernel's table differs from what `spec` asks (empty: it holds exactly that).
/// The real servers of a checked service are the health checker's to take out and put back
/// (`verdicts`): one it took out (down) is not a difference, nor is its sorry server in.
pub fn verify(cfg: &Config, spec: &DataPlaneSpec) -> Result<Vec<String>, ModeError> {
    let mut st = status(Some((cfg, spec)))?;
    for w in spec.services.iter().filter(|s| crate::verdicts::adjusted(s)) {
        if let Some(ss) = st.service_mut(w.proto.name(), &w.vip.to_string(), w.port) {
            ss.as_configured(w.real_servers.iter().map(|r| (r.addr.to_string(), r.weight)), w.sorry_server.map(|a| a.to_string()));
        }
    }
    Ok(st.differences(spec, false))
}

/// Leave IPVS mode: delete every service the kernel has and the addresses of this mode.
pub fn leave(cfg: &Config, spec: &DataPlaneSpec, log: &mut dyn FnMut(String)) -> Result<(), ModeError> {
    let mut ipvs = Ipvs::open()?;
    let have = reconcile::read(&mut ipvs)?;
    let changes = reconcile::diff(&have, &[]);
    for c in &changes {
        log(c.to_string());
    }
    reconcile::apply(&mut ipvs, &changes)?;
    if let Err(e) = crate::rtnl::detach_tc(&cfg.nics.vip_side) {
        log(format!("the firewall-mark program stays on {}: {e}", cfg.nics.vip_side));
    }
    if spec.ha.is_some() {
        for master in [true, false] {
            if let Err(e) = ipvs.stop_sync_daemon(master) {
                log(e.to_string());
            }
        }
    }
    director::teardown(cfg, spec, log);
    Ok(())
}
