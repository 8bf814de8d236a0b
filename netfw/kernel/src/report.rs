//! The status report in IPVS mode: the kernel's services, real servers and counters (its own
//! connection, packet and byte counters and rate estimates) in the same `Status` the forwarder
//! reports, so the console, `netfw status` and the web page show one table in both modes. The
//! real servers' MACs come from the kernel's neighbour table. A firewall-mark service (`marks`)
//! is listed under each of the config's services it carries.

use std::collections::BTreeMap;

use crate::ipvs::{Dest, Service};
use crate::reconcile::Wanted;
use director_config::Config;
use director_messages::status::{Rates, RealServerStatus, ServiceStatus, Status};
use netfw_core::model::{DataPlaneSpec, Forwarding, ServiceSpec};

/// One entry of `/proc/net/arp`: (IP, MAC, complete).
fn neighbours(text: &str) -> BTreeMap<String, (String, bool)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
            Some((f.first()?.to_string(), (f.get(3)?.to_string(), flags & 0x2 != 0)))
        })
        .collect()
}

/// The warning when a config's real servers should be checked in ipvs mode but the checker
/// (`netfw ipvs watch`) does not answer: said, so that no one believes them checked.
pub fn unchecked_warning(cfg: &Config, why: &str) -> Option<String> {
    let unchecked: Vec<String> = cfg
        .services
        .iter()
        .filter(|s| s.health_check.as_ref().is_some_and(director_config::health::HealthCheckDoc::checks))
        .map(|s| format!("{}:{}", s.vip, s.ports_label()))
        .collect();
    (!unchecked.is_empty()).then(|| {
        format!(
            "the health checker does not answer ({why}): the real servers of {} are not being checked, and a dead one keeps its share of new connections",
            unchecked.join(", ")
        )
    })
}

/// One row of the report: IPVS's service `s` under the config service `m`'s name (a
/// firewall-mark service is listed under each service it carries, with its counters).
fn row(s: &Service, m: Option<&ServiceSpec>, real_servers: &[RealServerStatus], fwd: Forwarding) -> ServiceStatus {
    let (protocol, vip, port, port_last, persistence_group) = match m {
        Some(m) => (
            m.proto.name().to_string(),
            m.vip.to_string(),
            m.port,
            (m.port_last != m.port && m.port != 0).then_some(m.port_last),
            m.persistence_group.clone(),
        ),
        // A mark this config does not give (another tool's, or a config that failed).
        None if s.key.fwmark != 0 => ("fwmark".to_string(), format!("{:#x}", s.key.fwmark), 0, None, None),
        None => (s.key.proto.name().to_string(), s.key.vip.to_string(), s.key.port, None, None),
    };
    ServiceStatus {
        protocol,
        vip,
        port,
        port_last,
        persistence_group,
        scheduler: s.sched.clone(),
        forwarding: fwd,
        persistence_s: s.persistence_s,
        conns: s.stats.conns,
        packets: s.stats.inpkts,
        bytes: s.stats.inbytes,
        real_servers: real_servers.to_vec(),
        state: None,
        sorry_server: None,
    }
}

/// Build the report from the kernel's table, the config in force and its spec (NICs, DIP,
/// and the services behind each firewall mark) and `/proc/net/arp`.
pub fn collect(in_force: Option<(&Config, &DataPlaneSpec)>, table: &[(Service, Vec<Dest>)], arp: &str) -> Status {
    let neigh = neighbours(arp);
    let mut warnings = Vec::new();
    let (cfg, spec) = (in_force.map(|(c, _)| c), in_force.map(|(_, s)| s));
    let wanted = spec.map(|s| Wanted::all(&s.services)).unwrap_or_default();
    let mut services: Vec<ServiceStatus> = Vec::new();
    for (s, dests) in table {
        let real_servers: Vec<RealServerStatus> = dests
            .iter()
            .map(|d| {
                let n = neigh.get(&d.addr.to_string());
                RealServerStatus {
                    address: d.addr.to_string(),
                    mac: n.filter(|(_, ok)| *ok).map(|(m, _)| m.clone()),
                    reachable: n.is_some_and(|(_, ok)| *ok),
                    weight: u16::try_from(d.weight).unwrap_or(u16::MAX),
                    active: d.active,
                    inactive: d.inactive,
                    conns: d.stats.conns,
                    packets: d.stats.inpkts,
                    bytes: d.stats.inbytes,
                    rates: Some(Rates { cps: d.stats.cps, pps: d.stats.inpps, bps: d.stats.inbps }),
                    health: None,
                    diagnosis: Vec::new(),
                }
            })
            .collect();
        let fwd = dests.first().map_or(Forwarding::Dr, |d| d.fwd);
        let members: Vec<&ServiceSpec> = match (s.key.fwmark, spec) {
            (0, _) | (_, None) => Vec::new(),
            (mark, Some(spec)) => wanted
                .iter()
                .find(|w| w.key.fwmark == mark)
                .map(|w| w.members.iter().filter_map(|&i| spec.services.get(i)).collect())
                .unwrap_or_default(),
        };
        if members.is_empty() {
            services.push(row(s, None, &real_servers, fwd));
        }
        services.extend(members.into_iter().map(|m| row(s, Some(m), &real_servers, fwd)));
    }
    for s in &services {
        for r in &s.real_servers {
            if neigh.get(&r.address).is_some_and(|(_, ok)| !ok) {
                warnings.push(format!(
                    "real server {} does not answer the kernel's ARP: connections scheduled to it fail (is it on the DIP's segment and up?)",
                    r.address
                ));
            }
        }
    }
    if cfg.is_some_and(|c| !c.services.is_empty()) && services.is_empty() {
        warnings.push("the config has services but the kernel's IPVS table is empty: run apply-config again and read its errors".into());
    }
    let (vip_side, rs_side, dip) = cfg.map_or_else(
        || ("?".to_string(), "?".to_string(), "?".to_string()),
        |c| (c.nics.vip_side.clone(), c.nics.rs_side.clone(), c.dip.clone()),
    );
    Status {
        mode: "ipvs".into(),
        layout: if vip_side == rs_side { "one-arm" } else { "two-arm" }.into(),
        vip_side,
        rs_side,
        dip,
        flows: table.iter().flat_map(|(_, d)| d).map(|d| d.active as usize + d.inactive as usize).sum(),
        flow_capacity: 0,
        bytes_per_flow: 0,
        services,
        drops: BTreeMap::new(),
        events: BTreeMap::new(),
        warnings,
        workers: Vec::new(),
        health_events: Vec::new(),
        ha: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_whose_checker_does_not_answer_says_its_servers_are_not_checked() {
        let doc = r#"{"version": 1, "mode": "ipvs", "nics": {"vip_side": "eth1", "rs_side": "eth2"}, "dip": "198.18.0.2/24",
            "services": [{"vip": "203.0.113.10", "protocol": "tcp", "port": 80, "health_check": {"type": "tcp"},
                          "real_servers": [{"address": "198.18.0.11"}]},
                         {"vip": "203.0.113.10", "protocol": "tcp", "port": 81, "real_servers": [{"address": "198.18.0.11"}]}]}"#;
        let cfg = Config::parse(doc).unwrap();
        let w = unchecked_warning(&cfg, "it is restarting").unwrap();
        assert!(
            w.starts_with(
                "the health checker does not answer (it is restarting): the real servers of 203.0.113.10:80 are not being checked"
            ),
            "{w}"
        );
        assert!(!w.contains(":81"), "{w}");
        let unchecked = Config::parse(&doc.replace(r#""health_check": {"type": "tcp"},"#, "")).unwrap();
        assert_eq!(unchecked_warning(&unchecked, "x"), None);
    }

    #[test]
    fn reads_complete_and_incomplete_neighbours() {
        let arp = "IP address       HW type     Flags       HW address            Mask     Device\n\
                   198.18.0.11      0x1         0x2         02:00:00:00:01:01     *        eth2\n\
                   198.18.0.12      0x1         0x0         00:00:00:00:00:00     *        eth2\n\
                   garbage\n";
        let n = neighbours(arp);
        assert_eq!(n["198.18.0.11"], ("02:00:00:00:01:01".to_string(), true));
        assert!(!n["198.18.0.12"].1);
        assert_eq!(n.len(), 2);
    }
}
