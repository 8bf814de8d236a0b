//! ipvs mode's firewall-mark services: the services IPVS cannot hold as one VIP:port.
//!
//! IPVS looks a packet up by its firewall mark first, then by VIP:port, then (with
//! persistence) by VIP:0. So a port range, an every-port service without persistence (IPVS
//! drops the packets of a non-persistent port-0 service), and a persistence group (one
//! template per client across several ports: the kernel keeps it per service, so a group must
//! be one service) each become one firewall-mark service, and a tc program on the VIP-facing
//! NIC's ingress gives their packets its mark (`programs::mark`). A persistent every-port
//! service outside a group stays IPVS's own port-0 service (seed 001's `-p` on port 0).
//!
//! The program tests a VIP's services the way the forwarder looks them up: its own ports
//! first, then ranges, then every port; a service of its own port is a rule without a mark,
//! so an every-port or range mark never takes its packets. Marks are derived from the group's
//! name or the service's VIP, protocol and ports, so a reload that keeps a service keeps its
//! mark (IPVS keeps its connections and templates).

use std::collections::BTreeMap;
use std::fmt;

use netfw_core::model::ServiceSpec;

use crate::bpf::{BpfError, Program, ProgramKind};
use crate::programs::{self, MarkRule};
use crate::rtnl::{self, RtnlError};

/// The marks this box gives: `MARK_BASE` and 16 bits of the service's name.
pub const MARK_BASE: u32 = 0x4c56_0000;

/// One firewall-mark service: its mark and the config's services it carries (indices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// The mark.
    pub mark: u32,
    /// The services (indices into the config's), in config order.
    pub members: Vec<usize>,
}

/// Whether IPVS needs a firewall mark for `s`.
pub fn needs_mark(s: &ServiceSpec) -> bool {
    let ports = s.ports();
    s.persistence_group.is_some() || (ports.several() && !(ports.all() && s.persistence_s > 0))
}

/// What names a unit: its group, or the service itself.
fn name(s: &ServiceSpec) -> String {
    match &s.persistence_group {
        Some(g) => format!("group {g}"),
        None => format!("{} {}:{}", s.proto.name(), s.vip, s.ports()),
    }
}

/// What each mark serves, as the connection list names it: the group, or the service's
/// VIP:ports (the forwarder names its templates the same way).
pub fn names(services: &[ServiceSpec]) -> Vec<(u32, String)> {
    plan(services)
        .into_iter()
        .filter_map(|u| {
            let s = services.get(*u.members.first()?)?;
            Some((u.mark, s.persistence_group.clone().unwrap_or_else(|| format!("{}:{}", s.vip, s.ports()))))
        })
        .collect()
}

/// FNV-1a, 32 bits.
fn hash(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The firewall-mark services `services` need, by name; marks unique, from the names.
pub fn plan(services: &[ServiceSpec]) -> Vec<Unit> {
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in services.iter().enumerate().filter(|(_, s)| needs_mark(s)) {
        by_name.entry(name(s)).or_default().push(i);
    }
    let mut used: Vec<u32> = Vec::new();
    let mut units: Vec<Unit> = by_name
        .into_iter()
        .map(|(n, members)| {
            let mut low = hash(&n) & 0xffff;
            while low == 0 || used.contains(&(MARK_BASE | low)) {
                low = (low + 1) & 0xffff;
            }
            used.push(MARK_BASE | low);
            Unit { mark: MARK_BASE | low, members }
        })
        .collect();
    units.sort_by_key(|u| u.members[0]);
    units
}

/// The marking program's rules: for each VIP and protocol with a marked service, every
/// service there, its own ports first, then ranges, then every port.
pub fn rules(services: &[ServiceSpec], units: &[Unit]) -> Vec<MarkRule> {
    let mark_of = |i: usize| units.iter().find(|u| u.members.contains(&i)).map_or(0, |u| u.mark);
    let mut out = Vec::new();
    let mut places: Vec<_> = services.iter().enumerate().filter(|(i, _)| mark_of(*i) != 0).map(|(_, s)| (s.vip, s.proto)).collect();
    places.sort_by_key(|&(vip, proto)| (vip, proto.number()));
    places.dedup();
    for (vip, proto) in places {
        let mut here: Vec<(usize, &ServiceSpec)> = services.iter().enumerate().filter(|(_, s)| s.vip == vip && s.proto == proto).collect();
        here.sort_by_key(|(_, s)| (s.ports().all(), s.ports().several(), s.port));
        out.extend(here.into_iter().map(|(i, s)| MarkRule {
            vip: vip.octets(),
            proto: proto.number(),
            first: s.port,
            last: s.port_last,
            mark: mark_of(i),
        }));
    }
    out
}

/// Why the marks could not be put in place.
#[derive(Debug)]
pub enum MarkError {
    /// The kernel refused the program.
    Bpf(BpfError),
    /// tc refused it.
    Attach(RtnlError),
}

impl fmt::Display for MarkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the firewall-mark program for port ranges and persistence groups: ")?;
        match self {
            MarkError::Bpf(e) => e.fmt(f),
            MarkError::Attach(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for MarkError {}

/// Put the marking program for `services` on `nic`'s ingress in place of the one there (none
/// needed: take it off). Returns the number of rules.
pub fn install(nic: &str, services: &[ServiceSpec]) -> Result<usize, MarkError> {
    let units = plan(services);
    if units.is_empty() {
        rtnl::detach_tc(nic).map_err(MarkError::Attach)?;
        return Ok(0);
    }
    let rules = rules(services, &units);
    let program = Program::load(ProgramKind::SchedCls, &programs::mark(&rules)).map_err(MarkError::Bpf)?;
    // tc holds the program from here on: it outlives this process (`detach_tc` removes it).
    rtnl::replace_tc_ingress(nic, program.fd(), "netfw_marks").map_err(MarkError::Attach)?;
    Ok(rules.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netfw_core::model::{Forwarding, Protocol, RealServerSpec, SchedKind};
    use std::net::Ipv4Addr;

    fn svc(proto: Protocol, port: u16, port_last: u16, persistence_s: u32, group: Option<&str>) -> ServiceSpec {
        ServiceSpec {
            vip: Ipv4Addr::new(203, 0, 113, 10),
            proto,
            port,
            port_last,
            sched: SchedKind::Rr,
            persistence_s,
            persistence_group: group.map(Into::into),
            forwarding: Forwarding::Dr,
            real_servers: vec![RealServerSpec { addr: Ipv4Addr::new(198, 18, 0, 11), weight: 1 }],
            health: None,
            sorry_server: None,
        }
    }

    /// Seed 001's FTP as one group: port 21 and the passive range, `n` real servers.
    pub(crate) fn ftp_group(n: u8) -> Vec<ServiceSpec> {
        let mut control = svc(Protocol::Tcp, 21, 21, 300, Some("ftp"));
        control.real_servers = (0..n).map(|i| RealServerSpec { addr: Ipv4Addr::new(198, 18, 0, 11 + i), weight: 1 }).collect();
        let passive = ServiceSpec { port: 10000, port_last: 20000, ..control.clone() };
        vec![control, passive]
    }

    #[test]
    fn ranges_groups_and_plain_every_port_services_are_marked_and_a_persistent_port_0_is_not() {
        use Protocol::{Tcp, Udp};
        let services = vec![
            svc(Tcp, 80, 80, 0, None),
            svc(Tcp, 21, 21, 300, Some("ftp")),
            svc(Tcp, 10000, 20000, 300, Some("ftp")),
            svc(Udp, 5000, 5100, 0, None),
            svc(Udp, 0, u16::MAX, 0, None),
            svc(Tcp, 0, u16::MAX, 600, None),
        ];
        let units = plan(&services);
        assert_eq!(units.iter().map(|u| u.members.clone()).collect::<Vec<_>>(), [vec![1, 2], vec![3], vec![4]]);
        assert!(units.iter().all(|u| u.mark & 0xffff_0000 == MARK_BASE && u.mark != MARK_BASE));
        // The marks follow the names: the same config gives the same marks, in any order.
        let mut reversed = services.clone();
        reversed.reverse();
        let again = plan(&reversed);
        assert_eq!(again.iter().find(|u| u.members == [3, 4]).map(|u| u.mark), Some(units[0].mark));
        // TCP: port 80 and 21 first (80 unmarked), then the range, then the port-0 service's
        // own rule (unmarked: IPVS's VIP:0 takes it). UDP: the range, then every port.
        let r = rules(&services, &units);
        let seen: Vec<(u8, u16, u16, u32)> = r.iter().map(|r| (r.proto, r.first, r.last, r.mark)).collect();
        let (g, range, all) = (units[0].mark, units[1].mark, units[2].mark);
        assert_eq!(
            seen,
            [(6, 21, 21, g), (6, 80, 80, 0), (6, 10000, 20000, g), (6, 0, 65535, 0), (17, 5000, 5100, range), (17, 0, 65535, all)]
        );
        // Nothing marked: no rules, no program.
        assert!(rules(&services[..1], &plan(&services[..1])).is_empty());
    }

    #[test]
    fn colliding_names_still_get_distinct_marks() {
        let names: Vec<String> = (0..3000).map(|i| format!("g{i}")).collect();
        let services: Vec<ServiceSpec> = names.iter().map(|n| svc(Protocol::Tcp, 21, 21, 300, Some(n))).collect();
        let mut marks: Vec<u32> = plan(&services).iter().map(|u| u.mark).collect();
        let n = marks.len();
        marks.sort_unstable();
        marks.dedup();
        assert_eq!(marks.len(), n);
    }
}
