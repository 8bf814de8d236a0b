//! The status report in IPVS mode: the kernel's services, real servers and counters (its own
//! connection, packet and byte counters and rate estimates) in the same `Status` the forwarder
//! reports, so the console, `netfw status` and the web page show one table in both modes. The
//! real servers' MACs come from the kernel's neighbour table.

use std::collections::BTreeMap;

use crate::ipvs::{Dest, Service};
use director_config::Config;
use director_messages::status::{Rates, RealServerStatus, ServiceStatus, Status};
use netfw_core::model::Forwarding;

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

/// Build the report from the kernel's table, the config (NICs, DIP) and `/proc/net/arp`.
pub fn collect(cfg: Option<&Config>, table: &[(Service, Vec<Dest>)], arp: &str) -> Status {
    let neigh = neighbours(arp);
    let mut warnings = Vec::new();
    let services: Vec<ServiceStatus> = table
        .iter()
        .map(|(s, dests)| ServiceStatus {
            protocol: s.key.proto.name().to_string(),
            vip: s.key.vip.to_string(),
            port: s.key.port,
            port_last: None,
            persistence_group: None,
            scheduler: s.sched.clone(),
            forwarding: dests.first().map_or(Forwarding::Dr, |d| d.fwd),
            persistence_s: s.persistence_s,
            conns: s.stats.conns,
            packets: s.stats.inpkts,
            bytes: s.stats.inbytes,
            real_servers: dests
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
                .collect(),
            state: None,
            sorry_server: None,
        })
        .collect();
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
        flows: services.iter().flat_map(|s| &s.real_servers).map(|r| r.active as usize + r.inactive as usize).sum(),
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
