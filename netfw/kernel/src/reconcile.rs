//! What must change in the kernel's IPVS table to match the config: a pure function from
//! (what the kernel has, what is wanted) to a list of changes, applied in order. Never a
//! flush: a service or real server that stays is left alone, a weight change is a weight
//! change.

use std::fmt;
use std::net::Ipv4Addr;

use crate::ipvs::{Dest, Ipvs, IpvsError, Service, SvcKey};
use crate::marks::{self, Unit};
use netfw_core::model::{Forwarding, ServiceSpec};

/// One wanted service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Identity.
    pub key: SvcKey,
    /// Scheduler.
    pub sched: String,
    /// Persistence.
    pub persistence_s: u32,
    /// Real servers: address, method, weight.
    pub dests: Vec<(Ipv4Addr, Forwarding, u32)>,
    /// The config's services it carries (indices): one, or a firewall-mark service's
    /// (`marks`), whose settings and real servers are its first's (validation makes them
    /// the same in all).
    pub members: Vec<usize>,
}

impl Wanted {
    /// The config's service `index`, `s`, as IPVS's service of its VIP and port.
    pub fn from_spec(index: usize, s: &ServiceSpec) -> Wanted {
        Wanted {
            key: SvcKey::port(s.proto, s.vip, s.port),
            sched: s.sched.name().to_string(),
            persistence_s: s.persistence_s,
            dests: s.real_servers.iter().map(|r| (r.addr, s.forwarding, u32::from(r.weight))).collect(),
            members: vec![index],
        }
    }

    /// The firewall-mark service `unit` of the config's `services`.
    pub fn from_unit(unit: &Unit, services: &[ServiceSpec]) -> Option<Wanted> {
        let (&first, _) = unit.members.split_first()?;
        let s = services.get(first)?;
        Some(Wanted { key: SvcKey::fwmark(unit.mark), members: unit.members.clone(), ..Wanted::from_spec(first, s) })
    }

    /// Every service of IPVS the config's `services` need: one per service, but one per
    /// firewall-mark unit for those that need a mark.
    pub fn all(services: &[ServiceSpec]) -> Vec<Wanted> {
        let units = marks::plan(services);
        let marked = |i: usize| units.iter().any(|u| u.members.contains(&i));
        let mut out: Vec<Wanted> = services.iter().enumerate().filter(|(i, _)| !marked(*i)).map(|(i, s)| Wanted::from_spec(i, s)).collect();
        out.extend(units.iter().filter_map(|u| Wanted::from_unit(u, services)));
        out
    }
}

/// One change to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add a service.
    AddService(SvcKey, String, u32),
    /// Change scheduler/persistence.
    SetService(SvcKey, String, u32),
    /// Delete a service.
    DelService(SvcKey),
    /// Add a real server.
    AddDest(SvcKey, Ipv4Addr, Forwarding, u32),
    /// Change a real server's weight or method.
    SetDest(SvcKey, Ipv4Addr, Forwarding, u32),
    /// Delete a real server.
    DelDest(SvcKey, Ipv4Addr),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddService(k, s, p) => {
                write!(f, "add service {k} scheduler {s}{}", if *p > 0 { format!(" persistent {p}") } else { String::new() })
            }
            Change::SetService(k, s, p) => {
                write!(f, "change service {k} to scheduler {s}{}", if *p > 0 { format!(" persistent {p}") } else { String::new() })
            }
            Change::DelService(k) => write!(f, "delete service {k}"),
            Change::AddDest(k, a, m, w) => write!(f, "add real server {a} to {k} ({}, weight {w})", m.name()),
            Change::SetDest(k, a, m, w) => write!(f, "set real server {a} of {k} to {}, weight {w}", m.name()),
            Change::DelDest(k, a) => write!(f, "delete real server {a} from {k}"),
        }
    }
}

/// The changes from `have` to `want`.
pub fn diff(have: &[(Service, Vec<Dest>)], want: &[Wanted]) -> Vec<Change> {
    let mut out = Vec::new();
    for (s, _) in have {
        if !want.iter().any(|w| w.key == s.key) {
            out.push(Change::DelService(s.key));
        }
    }
    for w in want {
        match have.iter().find(|(s, _)| s.key == w.key) {
            None => {
                out.push(Change::AddService(w.key, w.sched.clone(), w.persistence_s));
                for &(a, m, wt) in &w.dests {
                    out.push(Change::AddDest(w.key, a, m, wt));
                }
            }
            Some((s, dests)) => {
                if s.sched != w.sched || s.persistence_s != w.persistence_s {
                    out.push(Change::SetService(w.key, w.sched.clone(), w.persistence_s));
                }
                for d in dests {
                    if !w.dests.iter().any(|(a, _, _)| *a == d.addr) {
                        out.push(Change::DelDest(w.key, d.addr));
                    }
                }
                for &(a, m, wt) in &w.dests {
                    match dests.iter().find(|d| d.addr == a) {
                        None => out.push(Change::AddDest(w.key, a, m, wt)),
                        Some(d) if d.fwd != m || d.weight != wt => out.push(Change::SetDest(w.key, a, m, wt)),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    out
}

/// Read the kernel's table.
pub fn read(ipvs: &mut Ipvs) -> Result<Vec<(Service, Vec<Dest>)>, IpvsError> {
    let services = ipvs.services()?;
    services.into_iter().map(|s| ipvs.dests(&s.key).map(|d| (s, d))).collect()
}

/// Apply changes in order; stops at the first refusal (which names what was refused).
pub fn apply(ipvs: &mut Ipvs, changes: &[Change]) -> Result<(), IpvsError> {
    for c in changes {
        match c {
            Change::AddService(k, s, p) => ipvs.add_service(k, s, *p)?,
            Change::SetService(k, s, p) => ipvs.set_service(k, s, *p)?,
            Change::DelService(k) => ipvs.del_service(k)?,
            Change::AddDest(k, a, m, w) => ipvs.add_dest(k, *a, *m, *w)?,
            Change::SetDest(k, a, m, w) => ipvs.set_dest(k, *a, *m, *w)?,
            Change::DelDest(k, a) => ipvs.del_dest(k, *a)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::Stats;
    use netfw_core::model::Protocol;

    fn key(port: u16) -> SvcKey {
        SvcKey::port(Protocol::Tcp, Ipv4Addr::new(203, 0, 113, 10), port)
    }
    fn rip(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10 + i)
    }
    fn have(port: u16, sched: &str, dests: &[(u8, u32)]) -> (Service, Vec<Dest>) {
        (
            Service { key: key(port), sched: sched.into(), persistence_s: 0, stats: Stats::default() },
            dests
                .iter()
                .map(|&(i, w)| Dest { addr: rip(i), port, fwd: Forwarding::Dr, weight: w, active: 0, inactive: 0, stats: Stats::default() })
                .collect(),
        )
    }
    fn want(port: u16, sched: &str, dests: &[(u8, u32)]) -> Wanted {
        Wanted {
            key: key(port),
            sched: sched.into(),
            persistence_s: 0,
            dests: dests.iter().map(|&(i, w)| (rip(i), Forwarding::Dr, w)).collect(),
            members: vec![0],
        }
    }

    #[test]
    fn nothing_to_do_when_equal() {
        assert!(diff(&[have(80, "rr", &[(1, 1), (2, 1)])], &[want(80, "rr", &[(1, 1), (2, 1)])]).is_empty());
    }

    #[test]
    fn a_weight_change_is_a_weight_change_and_servers_that_stay_are_untouched() {
        let c = diff(&[have(80, "rr", &[(1, 1), (2, 1), (3, 1)])], &[want(80, "rr", &[(1, 1), (2, 0), (4, 1)])]);
        assert_eq!(
            c,
            vec![
                Change::DelDest(key(80), rip(3)),
                Change::SetDest(key(80), rip(2), Forwarding::Dr, 0),
                Change::AddDest(key(80), rip(4), Forwarding::Dr, 1)
            ]
        );
    }

    #[test]
    fn services_come_and_go_and_change_scheduler() {
        let c = diff(&[have(80, "rr", &[(1, 1)]), have(8080, "rr", &[(1, 1)])], &[want(80, "wlc", &[(1, 1)]), want(443, "sh", &[(2, 3)])]);
        assert_eq!(
            c,
            vec![
                Change::DelService(key(8080)),
                Change::SetService(key(80), "wlc".into(), 0),
                Change::AddService(key(443), "sh".into(), 0),
                Change::AddDest(key(443), rip(2), Forwarding::Dr, 3),
            ]
        );
    }
}
