//! Installing a configuration without stalling forwarding.
//!
//! `Plan::new` builds every new table (services, schedulers with their Maglev and
//! source-hash tables, backends, the real servers to resolve, a new flow table when the
//! capacity changes) and the maps from the running layout to the new one. It needs only the
//! spec in force and the new one, so it can run on another thread while the old tables keep
//! forwarding; it costs O(n log n) in real servers. `install` then swaps the tables in:
//! counters and resolved MACs carry over, flows follow their real server (the flow table is
//! walked only when backends moved or the capacity changed), and flows whose real server left
//! are dropped.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

use super::{release, Backend, Forwarder, Service, GARP_ROUNDS, SYNC_QUEUE};
use crate::counters::Event;
use crate::flow::{FlowTable, FlowVal};
use crate::model::{DataPlaneSpec, ServiceSpec};
use crate::neigh::{Neighbours, Targets};
use crate::sched::{Candidate, Scheduler};
use crate::time::Millis;

/// Why a configuration cannot be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The flow table's memory could not be had.
    FlowTableMemory {
        /// Flows asked for.
        flows: usize,
        /// Bytes that takes.
        bytes: usize,
    },
    /// More services or real servers than the tables index (65536 backends).
    TooManyBackends,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::FlowTableMemory { flows, bytes } => {
                write!(f, "a flow table of {flows} flows needs {} MiB, which this box could not allocate", bytes.div_ceil(1 << 20))
            }
            PlanError::TooManyBackends => write!(f, "more than 65536 (service, real server) pairs"),
        }
    }
}

/// What `install` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    /// Flows in the table afterwards.
    pub flows_kept: usize,
    /// Flows dropped because their real server left (or a smaller table had no room).
    pub flows_dropped: u64,
    /// Backend indices changed meaning: the caller must empty the kernel's flow map (netfw
    /// forwards those flows itself until they are handed over again).
    pub kernel_reset: bool,
}

/// A service's identity: (VIP, protocol number, port).
type SvcKey = (Ipv4Addr, u8, u16);

fn key(s: &ServiceSpec) -> SvcKey {
    (s.vip, s.proto.number(), s.port)
}

/// The new tables and how the running ones map onto them.
pub struct Plan {
    spec: DataPlaneSpec,
    services: Vec<Service>,
    index: super::index::ServiceIndex,
    /// New service → the running service it continues.
    service_from: Vec<Option<usize>>,
    /// Running service → its new index.
    service_to: Vec<Option<u16>>,
    backends: Vec<Backend>,
    /// New backend → the running backend it continues.
    backend_from: Vec<Option<usize>>,
    /// Running backend → its new index.
    backend_to: Vec<Option<u16>>,
    /// Every backend keeps its index: flows need no rewrite.
    same_backends: bool,
    targets: Targets,
    /// New neighbour entry → the running entry of the same address.
    neigh_from: Vec<Option<usize>>,
    /// A new flow table (the capacity changed).
    flows: Option<FlowTable>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan").field("services", &self.services.len()).field("backends", &self.backends.len()).finish()
    }
}

impl Plan {
    /// Build the tables for `next`, replacing a forwarder that runs `current`.
    pub fn new(current: &DataPlaneSpec, next: DataPlaneSpec, seed: u64) -> Result<Plan, PlanError> {
        let old_services: BTreeMap<SvcKey, usize> = current.services.iter().enumerate().map(|(i, s)| (key(s), i)).collect();
        let mut old_backends: BTreeMap<(SvcKey, Ipv4Addr), usize> = BTreeMap::new();
        let mut old_targets = Targets::default();
        for s in &current.services {
            for addr in s.real_servers.iter().map(|r| r.addr).chain(s.sorry_server) {
                let n = old_backends.len();
                old_backends.insert((key(s), addr), n);
                old_targets.id(addr).ok_or(PlanError::TooManyBackends)?;
            }
        }
        if let Some(h) = &current.ha {
            old_targets.id(h.peer).ok_or(PlanError::TooManyBackends)?;
        }
        let old_backend_count = current.backend_count();

        let mut targets = Targets::default();
        let mut services = Vec::with_capacity(next.services.len());
        let mut service_from = Vec::with_capacity(next.services.len());
        let mut backends: Vec<Backend> = Vec::new();
        let mut backend_from = Vec::new();
        for (si, s) in next.services.iter().enumerate() {
            let service = u16::try_from(si).map_err(|_| PlanError::TooManyBackends)?;
            let mut ids = Vec::with_capacity(s.real_servers.len());
            let mut sorry = None;
            let regular = s.real_servers.iter().map(|r| (r.addr, r.weight, false));
            for (addr, weight, is_sorry) in regular.chain(s.sorry_server.map(|a| (a, 1, true))) {
                let neigh = targets.id(addr).ok_or(PlanError::TooManyBackends)?;
                let index = u16::try_from(backends.len()).map_err(|_| PlanError::TooManyBackends)?;
                if is_sorry {
                    sorry = Some(index);
                } else {
                    ids.push(index);
                }
                backend_from.push(old_backends.get(&(key(s), addr)).copied());
                backends.push(Backend {
                    service,
                    rip: addr,
                    weight,
                    neigh,
                    mac: None,
                    header: [0; 12],
                    up: true,
                    sorry: is_sorry,
                    sendable: false,
                    active: 0,
                    inactive: 0,
                    conns: 0,
                    packets: 0,
                    bytes: 0,
                });
            }
            let servers: Vec<(Ipv4Addr, u16)> = s.real_servers.iter().map(|r| (r.addr, r.weight)).collect();
            service_from.push(old_services.get(&key(s)).copied());
            services.push(Service {
                vip: s.vip,
                proto: s.proto,
                port: s.port,
                port_last: s.port_last,
                sched_kind: s.sched,
                persistence_s: s.persistence_s,
                scope: super::persist::Scope::of(s),
                backends: ids,
                sorry,
                sched: Scheduler::new(s.sched, &servers),
                stateless: crate::sched::MaglevTable::new(&servers),
                cands: vec![Candidate::default(); servers.len()],
                conns: 0,
                retired_packets: 0,
                retired_bytes: 0,
            });
        }
        // The pair's peer is resolved like a real server (flow sync goes to its MAC).
        if let Some(h) = &next.ha {
            targets.id(h.peer).ok_or(PlanError::TooManyBackends)?;
        }
        let index = super::index::ServiceIndex::build(&services);
        let backend_to = inverse(&backend_from, old_backend_count);
        let service_to = inverse(&service_from, current.services.len());
        let same_backends = backends.len() == old_backend_count && backend_from.iter().enumerate().all(|(i, f)| *f == Some(i));
        let neigh_from = Neighbours::carry(old_targets.ips(), &targets);
        let flows = if next.flow_capacity == current.flow_capacity {
            None
        } else {
            let flows = next.flow_capacity as usize;
            Some(
                FlowTable::try_new(flows, seed.rotate_left(17) ^ u64::from(next.flow_capacity), next.timeouts)
                    .map_err(|e| PlanError::FlowTableMemory { flows, bytes: e.bytes })?,
            )
        };
        Ok(Plan {
            spec: next,
            services,
            index,
            service_from,
            service_to,
            backends,
            backend_from,
            backend_to,
            same_backends,
            targets,
            neigh_from,
            flows,
        })
    }

    /// The configuration this plan installs.
    pub fn spec(&self) -> &DataPlaneSpec {
        &self.spec
    }
}

/// `from[new] = Some(old)` turned into `to[old] = Some(new)`.
fn inverse(from: &[Option<usize>], old_len: usize) -> Vec<Option<u16>> {
    let mut to = vec![None; old_len];
    for (new, old) in from.iter().enumerate() {
        if let (Some(slot), Ok(n)) = (old.and_then(|o| to.get_mut(o)), u16::try_from(new)) {
            *slot = Some(n);
        }
    }
    to
}

impl Forwarder {
    /// Swap in the tables of `plan`. Counters and resolved MACs carry over; flows keep their
    /// real server if it stays and are dropped if it left. The pause this causes is a copy of
    /// the counters, plus a walk of the flow table when backends moved or the capacity changed.
    pub fn install(&mut self, plan: Plan, now: Millis) -> Installed {
        let Plan {
            spec,
            mut services,
            index,
            service_from,
            service_to,
            mut backends,
            backend_from,
            backend_to,
            same_backends,
            targets,
            neigh_from,
            flows,
        } = plan;
        for (b, from) in backends.iter_mut().zip(&backend_from) {
            if let Some(o) = from.and_then(|o| self.backends.get(o)) {
                (b.active, b.inactive, b.conns, b.packets, b.bytes, b.up) = (o.active, o.inactive, o.conns, o.packets, o.bytes, o.up);
            }
        }
        for (s, from) in services.iter_mut().zip(&service_from) {
            if let Some(o) = from.and_then(|o| self.services.get(o)) {
                (s.conns, s.retired_packets, s.retired_bytes) = (o.conns, o.retired_packets, o.retired_bytes);
            }
        }
        // The traffic of real servers that leave a service that stays stays in its totals.
        for (o, b) in self.backends.iter().enumerate() {
            if backend_to.get(o).copied().flatten().is_none() {
                if let Some(s) = service_to.get(usize::from(b.service)).copied().flatten().and_then(|n| services.get_mut(usize::from(n))) {
                    s.retired_packets += b.packets;
                    s.retired_bytes += b.bytes;
                }
            }
        }
        self.neigh.install(&targets, &neigh_from, spec.arp_refresh_ms, now);
        for b in &mut backends {
            b.set_mac(self.neigh.mac(b.neigh), self.rs_mac);
        }

        let mut dropped = 0u64;
        let moved_table = flows.is_some();
        if let Some(mut table) = flows {
            // A new capacity: every flow moves into the new table (one that no longer fits is
            // dropped, and no longer counts on its real server).
            for (k, v) in self.flows.iter() {
                let Some(nb) = backend_to.get(usize::from(v.backend)).copied().flatten() else {
                    dropped += 1;
                    continue;
                };
                let moved = FlowVal { backend: nb, ..*v };
                if !table.adopt(*k, moved) {
                    release(&mut backends, None, &moved);
                    dropped += 1;
                }
            }
            self.flows = table;
        } else if !same_backends && !self.flows.is_empty() {
            self.flows.remap(|b| backend_to.get(usize::from(b)).copied().flatten(), |_| dropped += 1);
        }
        self.flows.set_timeouts(spec.timeouts);
        // Backend indices changed meaning: the kernel's flow map (which holds them) is emptied
        // by the caller, and every flow it forwarded is netfw's again.
        let kernel_reset = self.kernel_flows && (moved_table || !same_backends);
        if kernel_reset {
            self.flows.forget_kernel(now);
            self.kernel_ops.clear();
        }
        self.targets_version = self.targets_version.wrapping_add(1);
        let same_services = service_to.iter().enumerate().all(|(i, t)| t.map(usize::from) == Some(i));
        // Persistence templates name servers by address and services by scope: they need no
        // remapping (one whose server left its service is passed over when next asked).
        if !same_backends || !same_services {
            self.frags.remap(&backend_to);
        }
        self.counters.add(Event::FlowsDroppedOnReload, dropped);
        self.services = services;
        self.index = index;
        self.backends = backends;
        self.vips = spec.vips();
        let ha_mac = spec.ha.as_ref().map(crate::model::HaSpec::virtual_mac);
        self.peer = spec.ha.as_ref().map(|h| h.peer);
        if ha_mac.is_some() && self.sync.is_none() {
            self.sync = Some(Vec::with_capacity(SYNC_QUEUE));
        } else if ha_mac.is_none() {
            self.sync = None;
        }
        if ha_mac != self.ha_mac {
            // Joining a pair starts as backup (the election decides); leaving one serves.
            self.ha_mac = ha_mac;
            self.serving = ha_mac.is_none();
        }
        self.spec = spec;
        self.set_fast_macs();
        self.garp_left = GARP_ROUNDS;
        self.garp_next = now;
        self.counters.event(Event::Reloads);
        Installed { flows_kept: self.flows.len(), flows_dropped: dropped, kernel_reset }
    }
}
