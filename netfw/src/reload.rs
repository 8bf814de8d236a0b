//! Reloading without stalling forwarding: the new config is read, checked against what the
//! running forwarder can take (same NICs, forwarder mode, a flow table that fits in memory)
//! and its tables built (`netfw_core::forward::Plan`) on a thread of its own; the loop then
//! only installs the result (each worker its own share: `share`). Anything refused leaves the
//! running config in force.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, TryRecvError};

use director_config::{nic, Config, Mode};
use director_messages::Problem;
use netfw_core::flow::FlowTable;
use netfw_core::forward::Plan;
use netfw_core::model::DataPlaneSpec;

use crate::ctl::Client;

/// Memory the rest of the box keeps beside the flow table.
pub const MEMORY_RESERVE: usize = 64 << 20;

/// A config ready to install.
#[derive(Debug)]
pub struct Prepared {
    /// The document, NIC references resolved.
    pub cfg: Config,
    /// Its tables, one set per worker (each with its share of the flow table).
    pub plans: Vec<Plan>,
}

/// Can `flow_capacity` flows be shared among `workers` (each needs at least one)? A problem
/// naming `flow_capacity` if not.
pub fn check_shares(flow_capacity: u32, workers: usize) -> Result<(), Problem> {
    if usize::try_from(flow_capacity).unwrap_or(usize::MAX) < workers {
        return Err(Problem::at(
            "flow_capacity",
            format!("{flow_capacity} flow(s) cannot be shared among netfw's {workers} forwarding workers (one per receive queue); ask for at least {workers}"),
        ));
    }
    Ok(())
}

/// Worker `w`'s share of `spec` among `workers`: the same services, and its part of the flow
/// table (the parts add up to `flow_capacity` when it is at least `workers`: `check_shares`).
pub fn share(spec: &DataPlaneSpec, workers: usize, w: usize) -> DataPlaneSpec {
    let n = u32::try_from(workers.max(1)).unwrap_or(1);
    let w = u32::try_from(w).unwrap_or(0);
    let cap = spec.flow_capacity / n + u32::from(w < spec.flow_capacity % n);
    DataPlaneSpec { flow_capacity: cap.max(1), ..spec.clone() }
}

/// `MemAvailable` from /proc/meminfo, in bytes (None if it cannot be read).
pub fn memory_available() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: usize = text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    kb.checked_mul(1024)
}

/// Can a flow table of `flows` be had now (`available` bytes free, the running one staying
/// until it is replaced)? A problem naming `flow_capacity` if not.
pub fn check_memory(flows: u32, available: Option<usize>) -> Result<(), Problem> {
    let need = FlowTable::bytes_for(flows as usize);
    match available {
        Some(avail) if need > avail.saturating_sub(MEMORY_RESERVE) => Err(Problem::at(
            "flow_capacity",
            format!(
                "a flow table of {flows} flows needs {} MiB, but this box has only {} MiB available (keeping {} MiB for the rest of the system); lower flow_capacity",
                need.div_ceil(1 << 20),
                avail >> 20,
                MEMORY_RESERVE >> 20
            ),
        )),
        _ => Ok(()),
    }
}

/// Resolve the config's NIC references (names or MACs) to the names this system uses.
pub fn resolve_nics(cfg: &mut Config) -> Result<(), Vec<Problem>> {
    let nics = nic::system_nics();
    let mut problems = Vec::new();
    match nic::resolve(&nics, &cfg.nics.vip_side) {
        Ok(n) => cfg.nics.vip_side = n,
        Err(e) => problems.push(Problem::at("nics.vip_side", e)),
    }
    match nic::resolve(&nics, &cfg.nics.rs_side) {
        Ok(n) => cfg.nics.rs_side = n,
        Err(e) => problems.push(Problem::at("nics.rs_side", e)),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Read `path` and build its tables for workers running `running` (one spec each, their
/// shares) on `running_cfg`'s NICs.
pub fn prepare(path: &std::path::Path, running_cfg: &Config, running: &[DataPlaneSpec], seed: u64) -> Result<Prepared, Vec<Problem>> {
    let (mut cfg, spec) = Config::load(path).map_err(director_messages::problems)?;
    if cfg.mode == Mode::Ipvs {
        return Err(vec![Problem::at("mode", "the new config's mode is \"ipvs\"; switching modes is the appliance's job")]);
    }
    resolve_nics(&mut cfg)?;
    if cfg.nics != running_cfg.nics {
        return Err(vec![Problem::at("nics", "NIC roles changed; restart netfw to move to other NICs")]);
    }
    if cfg.io != running_cfg.io {
        return Err(vec![Problem::at("io", "the I/O backend changed; restart netfw to open its NICs the new way")]);
    }
    check_shares(spec.flow_capacity, running.len()).map_err(|p| vec![p])?;
    let running_capacity: u32 = running.iter().map(|r| r.flow_capacity).sum();
    if spec.flow_capacity != running_capacity {
        check_memory(spec.flow_capacity, memory_available()).map_err(|p| vec![p])?;
    }
    let plans = running
        .iter()
        .enumerate()
        .map(|(w, r)| Plan::new(r, share(&spec, running.len(), w), seed))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| vec![Problem::at("flow_capacity", e.to_string())])?;
    Ok(Prepared { cfg, plans })
}

/// A reload under way on its own thread, and the clients waiting for its answer.
#[derive(Debug)]
pub struct Reloading {
    result: Receiver<Result<Prepared, Vec<Problem>>>,
    /// Clients to answer when it is done.
    pub clients: Vec<Client>,
    /// Another reload was asked for meanwhile (the file may have changed again).
    pub again: bool,
}

impl Reloading {
    /// Start preparing `path` beside the running forwarder.
    pub fn start(path: PathBuf, running_cfg: Config, running: Vec<DataPlaneSpec>, seed: u64) -> Reloading {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(prepare(&path, &running_cfg, &running, seed));
        });
        Reloading { result: rx, clients: Vec::new(), again: false }
    }

    /// The result, once it is there (a user-space check: no syscall).
    pub fn poll(&self) -> Option<Result<Prepared, Vec<Problem>>> {
        match self.result.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(vec![Problem::general("the reload thread died")])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_shares_of_the_flow_table_add_up_to_what_the_config_asks() {
        let spec = crate::testing::one_service(1001);
        let parts: Vec<u32> = (0..3).map(|w| share(&spec, 3, w).flow_capacity).collect();
        assert_eq!(parts, vec![334, 334, 333]);
        assert_eq!(share(&spec, 1, 0), spec);
        assert_eq!(share(&spec, 0, 0).flow_capacity, 1001);
        let p = check_shares(1, 2).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("flow_capacity"));
        assert!(p.message.contains("1 flow(s) cannot be shared among netfw's 2 forwarding workers"), "{}", p.message);
        check_shares(2, 2).unwrap();
    }

    #[test]
    fn a_flow_table_larger_than_the_free_memory_is_refused_naming_the_field() {
        let p = check_memory(1 << 24, Some(512 << 20)).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("flow_capacity"));
        assert!(p.message.contains("16777216 flows needs 768 MiB, but this box has only 512 MiB available"), "{}", p.message);
        check_memory(1 << 20, Some(512 << 20)).unwrap();
        check_memory(1 << 24, None).unwrap();
    }
}
