//! Every rule of the document, in the seeds' words, each problem naming its field: every RIP
//! inside the DIP's subnet (DR rewrites only the MAC, so real servers share the director's L2
//! segment), the VIP distinct from the DIP and every RIP, no duplicate services or real
//! servers, ports 1–65535, weights 0–65535, known scheduler and protocol, NIC references that
//! are names or MACs. Every problem is reported at once. Validation never panics, whatever the
//! document holds (a property test feeds it damaged documents).

use std::net::Ipv4Addr;

use netfw_core::model::{DataPlaneSpec, Forwarding, HealthCheck, Ports, Protocol, RealServerSpec, SchedKind, ServiceSpec, Timeouts};

use crate::document::{
    Config, Mode, ServiceDoc, DEFAULT_FLOW_CAPACITY, MAX_FLOW_CAPACITY, MAX_REAL_SERVERS, MAX_SERVICES, MAX_VIPS, SCHEMA_VERSION,
};
use crate::error::{ConfigError, FieldError};
use crate::net::{parse_cidr, parse_unicast, Subnet};
use crate::nic::NicRef;

/// Problems found so far.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }
}

fn hostname_ok(h: &str) -> bool {
    !h.is_empty() && h.len() <= 63 && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl Config {
    /// Check every rule; on success, the data plane's view of this config.
    pub fn validate(&self) -> Result<DataPlaneSpec, ConfigError> {
        let mut p = Problems::default();

        if self.version != SCHEMA_VERSION {
            p.add("version", format!("version {} is not supported; this build reads version {SCHEMA_VERSION}", self.version));
        }
        let vip_side = NicRef::parse(&self.nics.vip_side).map_err(|m| p.add("nics.vip_side", m)).ok();
        let rs_side = NicRef::parse(&self.nics.rs_side).map_err(|m| p.add("nics.rs_side", m)).ok();
        let dip = match parse_cidr(&self.dip) {
            Ok(d) => {
                if d.addr() == d.network() || d.addr() == d.broadcast() {
                    p.add("dip", format!("{} is the network or broadcast address of {d}", d.addr()));
                }
                if let Err(m) = parse_unicast(&d.addr().to_string()) {
                    p.add("dip", m);
                }
                Some(d)
            }
            Err(m) => {
                p.add("dip", m);
                None
            }
        };
        if let Some(m) = &self.management {
            match NicRef::parse(&m.nic) {
                Ok(r) if Some(&r) == vip_side.as_ref() || Some(&r) == rs_side.as_ref() => {
                    p.add("management.nic", format!("{r} is a dedicated forwarding NIC; management needs its own NIC"));
                }
                Ok(_) => {}
                Err(e) => p.add("management.nic", e),
            }
            let net = m.address.as_deref().and_then(|a| parse_cidr(a).map_err(|e| p.add("management.address", e)).ok());
            if let Some(g) = &m.gateway {
                match parse_unicast(g) {
                    Ok(ip) if net.is_some_and(|n| !n.contains(ip)) => {
                        p.add("management.gateway", format!("{ip} is outside the management subnet"));
                    }
                    Ok(_) => {}
                    Err(e) => p.add("management.gateway", e),
                }
            }
        }
        if let Some(e) = self.metrics.as_ref().and_then(|m| m.validate().err()) {
            p.add("metrics.token", e);
        }
        if let Some(Err(problems)) = self.syslog_target() {
            for (f, m) in problems {
                p.add(format!("syslog.{f}"), m);
            }
        }
        if let Some(h) = self.hostname.as_deref().filter(|h| !hostname_ok(h)) {
            p.add("hostname", format!("\"{}\" is not a host name (letters, digits and '-', at most 63)", h.escape_debug()));
        }
        let vip_prefix = self.vip_prefix_len.unwrap_or(24);
        let vip_prefix_ok = (1..=32).contains(&vip_prefix);
        if !vip_prefix_ok {
            p.add("vip_prefix_len", format!("{vip_prefix} must be 1 to 32"));
        }
        let capacity = self.flow_capacity.unwrap_or(DEFAULT_FLOW_CAPACITY);
        if !(1..=MAX_FLOW_CAPACITY).contains(&capacity) {
            p.add("flow_capacity", format!("{capacity} must be 1 to {MAX_FLOW_CAPACITY}"));
        }
        let t = self.timeouts.unwrap_or_default();
        for (name, v) in [
            ("tcp_syn_s", t.tcp_syn_s),
            ("tcp_unconfirmed_s", t.tcp_unconfirmed_s),
            ("tcp_established_s", t.tcp_established_s),
            ("tcp_fin_s", t.tcp_fin_s),
            ("tcp_close_s", t.tcp_close_s),
            ("udp_s", t.udp_s),
            ("udp_new_s", t.udp_new_s),
        ] {
            if v == 0 {
                p.add(format!("timeouts.{name}"), "a timeout of 0 would expire every flow at once; use at least 1");
            }
        }
        let refresh = self.arp_refresh_s.unwrap_or(5);
        if !(1..=3600).contains(&refresh) {
            p.add("arp_refresh_s", format!("{refresh} must be 1 to 3600 seconds"));
        }
        if self.services.len() > MAX_SERVICES {
            p.add("services", format!("{} services; at most {MAX_SERVICES}", self.services.len()));
        }

        let (services, vips) = self.services(&mut p, dip);
        if vips.len() > MAX_VIPS {
            p.add("services", format!("{} distinct VIPs; at most {MAX_VIPS}", vips.len()));
        }
        let gateway = self.gateway.as_deref().and_then(|g| match parse_unicast(g) {
            Ok(ip) => {
                let on_vip_side = vip_prefix_ok && vips.iter().any(|v| Subnet::new(*v, vip_prefix).is_some_and(|s| s.contains(ip)));
                if vip_prefix_ok && !on_vip_side && !dip.is_some_and(|d| d.contains(ip)) {
                    p.add(
                        "gateway",
                        format!("{ip} is on neither the DIP's subnet nor a VIP's /{vip_prefix} segment; the director could not reach it"),
                    );
                }
                Some(ip)
            }
            Err(m) => {
                p.add("gateway", m);
                None
            }
        });

        let ha = self.ha.as_ref().and_then(|h| match h.validate(dip, self.one_arm()) {
            Ok(spec) => Some(spec),
            Err(problems) => {
                for (f, m) in problems {
                    p.add(if f == "ha" { "ha".to_string() } else { format!("ha.{f}") }, m);
                }
                None
            }
        });
        if let Some(h) = &ha {
            let serves = services
                .iter()
                .any(|s| s.vip == h.peer || s.sorry_server == Some(h.peer) || s.real_servers.iter().any(|r| r.addr == h.peer));
            if serves {
                p.add(
                    "ha.peer",
                    format!("{} is a VIP, real server or sorry server of a service here; the peer is the other director's DIP", h.peer),
                );
            }
        }

        match dip {
            Some(d) if p.0.is_empty() => Ok(DataPlaneSpec {
                dip: d.addr(),
                dip_prefix: d.prefix(),
                vip_prefix,
                gateway,
                services,
                flow_capacity: capacity,
                timeouts: Timeouts {
                    tcp_syn_s: t.tcp_syn_s,
                    tcp_unconfirmed_s: t.tcp_unconfirmed_s,
                    tcp_established_s: t.tcp_established_s,
                    tcp_fin_s: t.tcp_fin_s,
                    tcp_close_s: t.tcp_close_s,
                    udp_s: t.udp_s,
                    udp_new_s: t.udp_new_s,
                },
                arp_refresh_ms: u64::from(refresh) * 1000,
                ha,
            }),
            _ => Err(ConfigError::Invalid(p.0)),
        }
    }

    /// A service's health check and sorry server.
    #[allow(clippy::too_many_arguments, reason = "the parts of one service already parsed by `services`")]
    fn checks(
        &self,
        p: &mut Problems,
        si: usize,
        s: &crate::document::ServiceDoc,
        port: Option<u16>,
        forwarding: Forwarding,
        dip: Option<Subnet>,
        rss: &[RealServerSpec],
        vip: Ipv4Addr,
    ) -> (Option<HealthCheck>, Option<Ipv4Addr>) {
        let at = |f: &str| format!("services[{si}].{f}");
        let health = s.health_check.as_ref().and_then(|h| match h.validate(port, forwarding) {
            Ok(c) => c,
            Err(problems) => {
                for (f, m) in problems {
                    p.add(at(&format!("health_check.{f}")), m);
                }
                None
            }
        });
        let sorry = s.sorry_server.as_deref().and_then(|a| {
            let Ok(ip) = parse_unicast(a).map_err(|m| p.add(at("sorry_server"), m)) else { return None };
            if dip.is_some_and(|d| !d.contains(ip) || ip == d.addr()) {
                p.add(
                    at("sorry_server"),
                    format!(
                        "{ip} must be a host on the DIP's subnet (the director reaches it by MAC address, like a real server), not the DIP"
                    ),
                );
            } else if ip == vip || rss.iter().any(|r| r.addr == ip) {
                p.add(
                    at("sorry_server"),
                    format!("{ip} is the VIP or one of the service's real servers; the sorry server is a host of its own"),
                );
            }
            Some(ip)
        });
        (health, sorry)
    }

    /// The services' rules; returns the valid services and the distinct VIPs.
    fn services(&self, p: &mut Problems, dip: Option<Subnet>) -> (Vec<ServiceSpec>, Vec<Ipv4Addr>) {
        let mut services: Vec<ServiceSpec> = Vec::new();
        let mut all_rips: Vec<(String, Ipv4Addr)> = Vec::new();
        let mut vips: Vec<Ipv4Addr> = Vec::new();
        for (si, s) in self.services.iter().enumerate() {
            let at = |f: &str| format!("services[{si}].{f}");
            let vip = parse_unicast(&s.vip).map_err(|m| p.add(at("vip"), m)).ok();
            if let Some(v) = vip.filter(|v| !vips.contains(v)) {
                vips.push(v);
            }
            if let (Some(v), Some(d)) = (vip, dip) {
                if v == d.addr() {
                    p.add(at("vip"), format!("VIP {v} equals the DIP; the director needs both (seed 001: ARP for real servers must come from the DIP, not the VIP)"));
                }
            }
            let proto = match s.protocol.as_str() {
                "tcp" => Some(Protocol::Tcp),
                "udp" => Some(Protocol::Udp),
                other => {
                    p.add(at("protocol"), format!("\"{}\" is not a protocol; use \"tcp\" or \"udp\"", other.escape_debug()));
                    None
                }
            };
            let ports = service_ports(s).map_err(|(f, m)| p.add(at(f), m)).ok();
            let sched = SchedKind::ALL.iter().find(|(n, _)| *n == s.scheduler).map(|(_, k)| *k);
            if sched.is_none() {
                p.add(
                    at("scheduler"),
                    format!("\"{}\" is not a scheduler; use one of rr, wrr, lc, wlc, sh, mh", s.scheduler.escape_debug()),
                );
            }
            let forwarding = s.forwarding.unwrap_or_default();
            if forwarding != Forwarding::Dr && self.mode == Mode::Forwarder {
                p.add(at("forwarding"), format!("\"{}\" needs mode \"ipvs\" (the forwarder does direct routing only)", forwarding.name()));
            }
            if s.real_servers.len() > MAX_REAL_SERVERS {
                p.add(at("real_servers"), format!("{} real servers; at most {MAX_REAL_SERVERS}", s.real_servers.len()));
            }
            let mut rss: Vec<RealServerSpec> = Vec::new();
            for (ri, r) in s.real_servers.iter().enumerate() {
                let rat = |f: &str| format!("services[{si}].real_servers[{ri}].{f}");
                let weight = u16::try_from(r.weight).ok();
                if weight.is_none() {
                    p.add(rat("weight"), format!("{} is not a weight; use 0 to 65535 (0 drains the server)", r.weight));
                }
                let Ok(rip) = parse_unicast(&r.address).map_err(|m| p.add(rat("address"), m)) else { continue };
                if let Some(d) = dip {
                    if !d.contains(rip) {
                        p.add(rat("address"), format!("{rip} is outside the DIP's subnet {d}; in DR mode the director reaches real servers by MAC address, so every RIP must be on the DIP's L2 segment"));
                    } else if rip == d.network() || rip == d.broadcast() {
                        p.add(rat("address"), format!("{rip} is the network or broadcast address of {d}"));
                    } else if rip == d.addr() {
                        p.add(rat("address"), format!("{rip} is the DIP itself"));
                    }
                }
                if Some(rip) == vip {
                    p.add(
                        rat("address"),
                        format!("{rip} equals the service's VIP; a real server holds the VIP on lo, with its own RIP on the NIC"),
                    );
                }
                if s.real_servers[..ri].iter().any(|x| x.address.parse::<Ipv4Addr>().ok() == Some(rip)) {
                    p.add(rat("address"), format!("{rip} is listed twice in this service"));
                }
                all_rips.push((rat("address"), rip));
                if let Some(weight) = weight {
                    rss.push(RealServerSpec { addr: rip, weight });
                }
            }
            if let (Some(vip), Some(proto), Some(ports), Some(sched)) = (vip, proto, ports, sched) {
                for (field, m) in clashes(&services, &self.services, vip, proto, ports) {
                    p.add(at(field), m);
                }
                let one_port = (!ports.several()).then_some(ports.first);
                let (health, sorry_server) = self.checks(p, si, s, one_port, forwarding, dip, &rss, vip);
                services.push(ServiceSpec {
                    vip,
                    proto,
                    port: ports.first,
                    port_last: ports.last,
                    sched,
                    persistence_s: s.persistence_s,
                    persistence_group: s.persistence_group.clone(),
                    forwarding,
                    real_servers: rss,
                    health,
                    sorry_server,
                });
            }
        }
        groups(p, &self.services, self.mode == Mode::Ipvs);
        // A VIP must not be any service's RIP either.
        for (field, rip) in &all_rips {
            if vips.contains(rip) {
                p.add(field.clone(), format!("{rip} is a VIP of this director; a RIP must not be a VIP"));
            }
        }
        // Nor a sorry server: the director holds its VIPs itself.
        for (si, s) in self.services.iter().enumerate() {
            if let Some(ip) = s.sorry_server.as_deref().and_then(|a| a.parse::<Ipv4Addr>().ok()).filter(|ip| vips.contains(ip)) {
                if s.vip.parse::<Ipv4Addr>().ok() != Some(ip) {
                    p.add(
                        format!("services[{si}].sorry_server"),
                        format!("{ip} is a VIP of this director; the sorry server is a host of its own"),
                    );
                }
            }
        }
        (services, vips)
    }
}

/// The ports a service covers, from its `port` or `ports`; else the field at fault and why.
fn service_ports(s: &ServiceDoc) -> Result<Ports, (&'static str, String)> {
    match (s.port, s.ports.as_deref()) {
        (Some(_), Some(_)) => Err(("ports", "give \"port\" or \"ports\", not both".into())),
        (None, None) => Err((
            "port",
            "missing: give \"port\" (1 to 65535, or 0 for every port of the VIP) or \"ports\" (a range such as \"10000-20000\")".into(),
        )),
        (Some(0), None) => Ok(Ports::ALL),
        (Some(n), None) => match u16::try_from(n) {
            Ok(p) => Ok(Ports::one(p)),
            Err(_) => Err(("port", format!("{n} is not a port; use 1 to 65535, or 0 for every port of the VIP"))),
        },
        (None, Some(r)) => {
            let bad = || {
                (
                    "ports",
                    format!("\"{}\" is not a port range; write it as \"10000-20000\" (1 to 65535, first below last)", r.escape_debug()),
                )
            };
            let (a, b) = r.split_once('-').ok_or_else(bad)?;
            let (Ok(first), Ok(last)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) else { return Err(bad()) };
            if first == 0 || first > last {
                return Err(bad());
            }
            if first == last {
                return Err(("ports", format!("\"{r}\" is one port: write \"port\": {first}")));
            }
            Ok(Ports { first, last })
        }
    }
}

/// How a new service's ports clash with the services before it on the same VIP and protocol:
/// a service of every port is the VIP's fallback and clashes only with another one; ranges
/// must not overlap each other or hold a port that has a service of its own.
fn clashes(before: &[ServiceSpec], docs: &[ServiceDoc], vip: Ipv4Addr, proto: Protocol, ports: Ports) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for x in before.iter().filter(|x| x.vip == vip && x.proto == proto) {
        let theirs = x.ports();
        let name = || {
            let i = docs
                .iter()
                .position(|d| d.vip == vip.to_string() && d.protocol == proto.name() && service_ports(d).ok() == Some(theirs))
                .unwrap_or(0);
            format!("services[{i}]")
        };
        let field = if ports.several() && !ports.all() { "ports" } else { "port" };
        if theirs == ports {
            out.push((field, format!("service {} {vip}:{ports} is defined twice", proto.name())));
            continue;
        }
        if ports.all() || theirs.all() || !theirs.overlaps(ports) {
            continue;
        }
        if ports.several() && theirs.several() {
            out.push((
                field,
                format!(
                    "{vip} {} ports {ports} overlap {}'s {theirs}: a packet must have one service; make the ranges disjoint",
                    proto.name(),
                    name()
                ),
            ));
        } else {
            let what = if ports.several() {
                format!("{vip} {} port {theirs} is {}'s own service and inside this range {ports}", proto.name(), name())
            } else {
                format!("{vip} {} port {ports} is its own service and inside the range {theirs} of {}", proto.name(), name())
            };
            out.push((field, format!("{what}: which of the two serves it would be unclear; take it out of the range or drop one")));
        }
    }
    out
}

/// What two services of one group differ in that one IPVS service cannot carry (ipvs mode):
/// scheduler, forwarding, real servers' weights, sorry server.
fn ipvs_group_differences(lead: &ServiceDoc, s: &ServiceDoc) -> Vec<String> {
    let mut out = Vec::new();
    if lead.scheduler != s.scheduler {
        out.push(format!("scheduler ({} there)", lead.scheduler.escape_debug()));
    }
    if lead.forwarding.unwrap_or_default() != s.forwarding.unwrap_or_default() {
        out.push(format!("forwarding ({} there)", lead.forwarding.unwrap_or_default().name()));
    }
    for r in &s.real_servers {
        if let Some(l) = lead.real_servers.iter().find(|l| l.address == r.address && l.weight != r.weight) {
            out.push(format!("the weight of {} ({} there)", r.address.escape_debug(), l.weight));
        }
    }
    if lead.sorry_server != s.sorry_server {
        out.push(format!("sorry_server ({} there)", lead.sorry_server.as_deref().unwrap_or("none").escape_debug()));
    }
    out
}

/// Persistence groups: each needs a persistence time, one for all its services, and the same
/// real servers in each (a client kept on a server by one service must find it in the others);
/// in ipvs mode (`ipvs`) a group is one IPVS service, so its services must agree on the rest.
fn groups(p: &mut Problems, docs: &[ServiceDoc], ipvs: bool) {
    for (si, s) in docs.iter().enumerate() {
        let Some(g) = s.persistence_group.as_deref() else { continue };
        let at = format!("services[{si}].persistence_group");
        if g.is_empty() || g.len() > 32 || !g.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            p.add(at, format!("\"{}\" is not a group name; use 1 to 32 letters, digits, - or _", g.escape_debug()));
            continue;
        }
        if s.persistence_s == 0 {
            p.add(
                format!("services[{si}].persistence_s"),
                format!("service is in persistence group \"{g}\" but keeps no client (persistence_s 0); set the time a client stays on its server, e.g. 300"),
            );
        }
        // The group's first service is the one the others are held to.
        let Some(first) = docs.iter().position(|d| d.persistence_group.as_deref() == Some(g)).filter(|&f| f < si) else { continue };
        let lead = &docs[first];
        if lead.persistence_s != s.persistence_s {
            p.add(
                format!("services[{si}].persistence_s"),
                format!(
                    "{} differs from services[{first}]'s {} in group \"{g}\": a group keeps a client for one time",
                    s.persistence_s, lead.persistence_s
                ),
            );
        }
        let rips = |d: &ServiceDoc| {
            let mut v: Vec<Ipv4Addr> = d.real_servers.iter().filter_map(|r| r.address.parse().ok()).collect();
            v.sort();
            v
        };
        let (mine, theirs) = (rips(s), rips(lead));
        if mine != theirs {
            let missing: Vec<String> = theirs.iter().filter(|a| !mine.contains(a)).map(ToString::to_string).collect();
            let extra: Vec<String> = mine.iter().filter(|a| !theirs.contains(a)).map(ToString::to_string).collect();
            let mut why = Vec::new();
            if !missing.is_empty() {
                why.push(format!("lacks {}", missing.join(", ")));
            }
            if !extra.is_empty() {
                why.push(format!("adds {}", extra.join(", ")));
            }
            p.add(
                format!("services[{si}].real_servers"),
                format!(
                    "differ from services[{first}]'s in group \"{g}\" (this service {}): a client kept on a server by one service of a group must find it in the others; give them the same real servers",
                    why.join(" and ")
                ),
            );
        }
        if ipvs {
            let differs = ipvs_group_differences(lead, s);
            if !differs.is_empty() {
                p.add(
                    format!("services[{si}]"),
                    format!(
                        "in mode \"ipvs\" persistence group \"{g}\" is one IPVS service (a firewall mark), so its services must agree, but this one differs from services[{first}] in {}",
                        differs.join(", ")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/example-config.json");

    fn invalid(text: &str) -> Vec<FieldError> {
        match Config::parse(text).and_then(|c| c.validate()) {
            Err(ConfigError::Invalid(e)) => e,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn with(f: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        f(&mut v);
        v.to_string()
    }

    fn has(errs: &[FieldError], field: &str, needle: &str) -> bool {
        errs.iter().any(|e| e.field == field && e.message.contains(needle))
    }

    #[test]
    fn the_documented_example_is_valid() {
        let c = Config::parse(EXAMPLE).unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.dip, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.flow_capacity, DEFAULT_FLOW_CAPACITY);
        assert!(!c.one_arm());
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        match Config::parse("{\n  \"version\": 1,\n  \"bogus\": 2\n}") {
            Err(ConfigError::Syntax { line, column, message }) => {
                assert_eq!(line, 3);
                assert!(column > 1);
                assert!(message.contains("unknown field `bogus`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match Config::parse("{\"version\": 1,") {
            Err(ConfigError::Syntax { line: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        let e = Config::parse(&with(|v| v["services"][0]["real_servers"][0]["wieght"] = 1.into())).unwrap_err();
        assert!(e.to_string().contains("unknown field `wieght`"), "{e}");
    }

    #[test]
    fn rip_outside_dip_subnet_is_named() {
        let e = invalid(&with(|v| v["services"][0]["real_servers"][1]["address"] = "198.18.1.12".into()));
        assert!(has(&e, "services[0].real_servers[1].address", "outside the DIP's subnet 198.18.0.0/24"), "{e:?}");
    }

    #[test]
    fn vip_must_differ_from_dip_and_rips() {
        let e = invalid(&with(|v| v["services"][0]["vip"] = "198.18.0.2".into()));
        assert!(has(&e, "services[0].vip", "equals the DIP"), "{e:?}");
        let e = invalid(&with(|v| v["services"][0]["real_servers"][0]["address"] = v["services"][0]["vip"].clone()));
        assert!(has(&e, "services[0].real_servers[0].address", "equals the service's VIP"), "{e:?}");
    }

    #[test]
    fn duplicates_ranges_and_names() {
        let e = invalid(&with(|v| {
            let rs = v["services"][0]["real_servers"][0].clone();
            v["services"][0]["real_servers"].as_array_mut().unwrap().push(rs);
        }));
        assert!(has(&e, "services[0].real_servers[3].address", "listed twice"), "{e:?}");
        let e = invalid(&with(|v| {
            let s = v["services"][0].clone();
            v["services"].as_array_mut().unwrap().push(s);
        }));
        assert!(has(&e, "services[2].port", "defined twice"), "{e:?}");
        let e = invalid(&with(|v| v["services"][0]["port"] = (-1).into()));
        assert!(has(&e, "services[0].port", "1 to 65535, or 0 for every port"), "{e:?}");
        let e = invalid(&with(|v| v["services"][0]["port"] = 65536.into()));
        assert!(has(&e, "services[0].port", "1 to 65535"), "{e:?}");
        let e = invalid(&with(|v| v["services"][0]["real_servers"][0]["weight"] = 65536.into()));
        assert!(has(&e, "services[0].real_servers[0].weight", "0 to 65535"), "{e:?}");
        let e = invalid(&with(|v| v["services"][0]["real_servers"][0]["weight"] = (-1).into()));
        assert!(has(&e, "services[0].real_servers[0].weight", "0 to 65535"), "{e:?}");
        let e = invalid(&with(|v| v["services"][0]["scheduler"] = "fastest".into()));
        assert!(has(&e, "services[0].scheduler", "rr, wrr, lc, wlc, sh, mh"), "{e:?}");
        let e = invalid(&with(|v| v["services"][0]["protocol"] = "sctp".into()));
        assert!(has(&e, "services[0].protocol", "\"tcp\" or \"udp\""), "{e:?}");
        let e = invalid(&with(|v| v["dip"] = "198.18.0.2".into()));
        assert!(has(&e, "dip", "needs a prefix length"), "{e:?}");
        let e = invalid(&with(|v| v["version"] = 2.into()));
        assert!(has(&e, "version", "not supported"), "{e:?}");
        let e = invalid(&with(|v| v["nics"]["vip_side"] = "".into()));
        assert!(has(&e, "nics.vip_side", "required"), "{e:?}");
        let e = invalid(&with(|v| v["gateway"] = "192.0.2.1".into()));
        assert!(has(&e, "gateway", "neither"), "{e:?}");
    }

    #[test]
    fn management_must_be_its_own_nic() {
        let e = invalid(&with(|v| v["management"] = serde_json::json!({"nic": "eth1", "address": "198.19.0.10/24"})));
        assert!(has(&e, "management.nic", "dedicated forwarding NIC"), "{e:?}");
        let e =
            invalid(&with(|v| v["management"] = serde_json::json!({"nic": "eth0", "address": "198.19.0.10/24", "gateway": "198.18.0.1"})));
        assert!(has(&e, "management.gateway", "outside the management subnet"), "{e:?}");
        let ok = with(|v| {
            v["management"] = serde_json::json!({"nic": "52:54:00:12:34:56", "address": "198.19.0.10/24", "gateway": "198.19.0.1"})
        });
        Config::parse(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn tun_and_nat_need_ipvs_mode() {
        let e = invalid(&with(|v| v["services"][0]["forwarding"] = "tun".into()));
        assert!(has(&e, "services[0].forwarding", "needs mode \"ipvs\""), "{e:?}");
        let e = Config::parse(&with(|v| v["services"][0]["forwarding"] = "fullnat".into())).unwrap_err();
        assert!(e.to_string().contains("unknown variant `fullnat`, expected one of `dr`, `tun`, `nat`"), "{e}");
        let ok = with(|v| {
            v["mode"] = "ipvs".into();
            v["services"][0]["forwarding"] = "nat".into();
        });
        Config::parse(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn a_sorry_server_is_a_host_of_its_own_not_another_services_vip() {
        let e = invalid(&with(|v| {
            v["services"][1]["vip"] = "198.18.0.50".into();
            v["services"][0]["sorry_server"] = "198.18.0.50".into();
        }));
        assert!(has(&e, "services[0].sorry_server", "198.18.0.50 is a VIP of this director"), "{e:?}");
        // In both modes, with checks.
        let ok = with(|v| {
            v["mode"] = "ipvs".into();
            v["services"][0]["sorry_server"] = "198.18.0.99".into();
            v["services"][0]["health_check"] = serde_json::json!({"type": "https"});
        });
        Config::parse(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn an_ha_section_is_checked_field_by_field() {
        let ha = |v: &mut serde_json::Value, h: serde_json::Value| v["ha"] = h;
        let good = serde_json::json!({"peer": "198.18.0.3", "vrid": 51, "priority": 200, "key": "a shared secret"});
        let text = with(|v| ha(v, good.clone()));
        let spec = Config::parse(&text).unwrap().validate().unwrap();
        let h = spec.ha.unwrap();
        assert_eq!((h.vrid, h.priority, h.advert_ms, h.preempt), (51, 200, 200, true), "defaults: 200 ms adverts, preempt");
        assert_eq!(h.virtual_mac(), [0, 0, 0x5e, 0, 1, 51]);
        let e = invalid(&with(|v| {
            ha(v, serde_json::json!({"peer": "198.18.0.2", "vrid": 0, "priority": 255, "advert_ms": 15, "key": "short"}))
        }));
        assert!(has(&e, "ha.peer", "this box's own DIP"), "{e:?}");
        assert!(has(&e, "ha.vrid", "1 to 255"), "{e:?}");
        assert!(has(&e, "ha.priority", "1 to 254"), "{e:?}");
        assert!(has(&e, "ha.advert_ms", "multiple of 10"), "{e:?}");
        assert!(has(&e, "ha.key", "12 to 256 bytes"), "{e:?}");
        let e = invalid(&with(|v| {
            let mut g = good.clone();
            g["peer"] = "10.9.9.9".into();
            ha(v, g);
        }));
        assert!(has(&e, "ha.peer", "outside the DIP's subnet"), "{e:?}");
        let e = invalid(&with(|v| {
            let mut g = good.clone();
            g["peer"] = "198.18.0.11".into();
            ha(v, g);
        }));
        assert!(has(&e, "ha.peer", "real server"), "{e:?}");
        let ipvs = with(|v| {
            ha(v, good.clone());
            v["mode"] = "ipvs".into();
        });
        assert!(Config::parse(&ipvs).unwrap().validate().unwrap().ha.is_some(), "ipvs mode pairs too");
        let e = invalid(&with(|v| {
            ha(v, good.clone());
            v["nics"]["rs_side"] = v["nics"]["vip_side"].clone();
        }));
        assert!(has(&e, "ha", "two-arm layout"), "{e:?}");
    }

    /// Seed 001's FTP: the control port and the passive range, one persistence group.
    fn ftp(v: &mut serde_json::Value, control: serde_json::Value, passive: serde_json::Value) {
        let rs = v["services"][0]["real_servers"].clone();
        let svc = |extra: serde_json::Value| {
            let mut s = serde_json::json!({"vip": "203.0.113.10", "protocol": "tcp", "scheduler": "rr", "real_servers": rs});
            s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            s
        };
        v["services"] = serde_json::json!([svc(control), svc(passive)]);
    }

    #[test]
    fn ports_ranges_and_every_port_become_the_spans_the_forwarder_serves() {
        let text = with(|v| {
            ftp(
                v,
                serde_json::json!({"port": 21, "persistence_s": 300, "persistence_group": "ftp"}),
                serde_json::json!({"ports": "10000-20000", "persistence_s": 300, "persistence_group": "ftp"}),
            );
            let mut all = v["services"][0].clone();
            all["vip"] = "203.0.113.11".into();
            all["port"] = 0.into();
            all.as_object_mut().unwrap().remove("persistence_group");
            v["services"].as_array_mut().unwrap().push(all);
        });
        let spec = Config::parse(&text).unwrap().validate().unwrap();
        let spans: Vec<(u16, u16, Option<&str>)> =
            spec.services.iter().map(|s| (s.port, s.port_last, s.persistence_group.as_deref())).collect();
        assert_eq!(spans, [(21, 21, Some("ftp")), (10000, 20000, Some("ftp")), (0, 65535, None)]);
        assert_eq!(spec.services[1].ports().to_string(), "10000-20000");
        assert_eq!(spec.services[2].ports().to_string(), "0");
    }

    #[test]
    fn port_clashes_are_explained() {
        let clash = |a: serde_json::Value, b: serde_json::Value| invalid(&with(|v| ftp(v, a, b)));
        let e = clash(serde_json::json!({"ports": "10000-20000"}), serde_json::json!({"ports": "15000-25000"}));
        assert!(has(&e, "services[1].ports", "ports 15000-25000 overlap services[0]'s 10000-20000"), "{e:?}");
        let e = clash(serde_json::json!({"ports": "10000-20000"}), serde_json::json!({"port": 12000}));
        assert!(has(&e, "services[1].port", "port 12000 is its own service and inside the range 10000-20000 of services[0]"), "{e:?}");
        let e = clash(serde_json::json!({"port": 21}), serde_json::json!({"ports": "1-1024"}));
        assert!(has(&e, "services[1].ports", "port 21 is services[0]'s own service and inside this range 1-1024"), "{e:?}");
        let e = clash(serde_json::json!({"port": 0}), serde_json::json!({"port": 0}));
        assert!(has(&e, "services[1].port", "tcp 203.0.113.10:0 is defined twice"), "{e:?}");
        let e = clash(serde_json::json!({"port": 21, "ports": "1-2"}), serde_json::json!({}));
        assert!(has(&e, "services[0].ports", "not both"), "{e:?}");
        assert!(has(&e, "services[1].port", "missing"), "{e:?}");
        for bad in ["20000-10000", "0-5", "x-y", "10000", "1-70000"] {
            let e = clash(serde_json::json!({"port": 21}), serde_json::json!({"ports": bad}));
            assert!(has(&e, "services[1].ports", "not a port range"), "{bad}: {e:?}");
        }
        let e = clash(serde_json::json!({"port": 21}), serde_json::json!({"ports": "7-7"}));
        assert!(has(&e, "services[1].ports", "is one port"), "{e:?}");
        // Every port is the VIP's fallback: it may sit beside the VIP's other services.
        let ok = with(|v| ftp(v, serde_json::json!({"port": 0}), serde_json::json!({"ports": "10000-20000"})));
        Config::parse(&ok).unwrap().validate().unwrap();
        // A check of a service of several ports names its port.
        let e = clash(serde_json::json!({"port": 21}), serde_json::json!({"ports": "10000-20000", "health_check": {"type": "tcp"}}));
        assert!(has(&e, "services[1].health_check.port", "name the one to probe"), "{e:?}");
    }

    #[test]
    fn persistence_groups_that_cannot_keep_a_client_are_explained() {
        let group = |p: u32| serde_json::json!({"persistence_s": p, "persistence_group": "ftp"});
        let both = |a: serde_json::Value, b: serde_json::Value, f: &dyn Fn(&mut serde_json::Value)| {
            let mut a = a;
            let mut b = b;
            a.as_object_mut().unwrap().extend(group(300).as_object().unwrap().clone());
            b.as_object_mut().unwrap().extend(group(300).as_object().unwrap().clone());
            invalid(&with(|v| {
                ftp(v, a, b);
                f(v);
            }))
        };
        let e = both(serde_json::json!({"port": 21}), serde_json::json!({"ports": "10000-20000"}), &|v| {
            v["services"][1]["persistence_s"] = 60.into();
            v["services"][0]["persistence_s"] = 60.into();
            v["services"][1]["persistence_s"] = 0.into();
        });
        assert!(has(&e, "services[1].persistence_s", "keeps no client"), "{e:?}");
        assert!(has(&e, "services[1].persistence_s", "0 differs from services[0]'s 60"), "{e:?}");
        let e = both(serde_json::json!({"port": 21}), serde_json::json!({"ports": "10000-20000"}), &|v| {
            v["services"][1]["real_servers"][0]["address"] = "198.18.0.99".into();
        });
        assert!(has(&e, "services[1].real_servers", "lacks 198.18.0.11 and adds 198.18.0.99"), "{e:?}");
        let e = both(serde_json::json!({"port": 21}), serde_json::json!({"ports": "10000-20000"}), &|v| {
            v["services"][1]["persistence_group"] = "f t p".into();
        });
        assert!(has(&e, "services[1].persistence_group", "not a group name"), "{e:?}");
        // tcp and udp may share a group (a template keeps the client, whatever the protocol).
        let ok = with(|v| {
            ftp(v, group(300), group(300));
            v["services"][0]["port"] = 5060.into();
            v["services"][1]["port"] = 5060.into();
            v["services"][1]["protocol"] = "udp".into();
        });
        Config::parse(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn ipvs_mode_runs_ranges_and_groups_but_a_group_must_agree_on_what_one_ipvs_service_holds() {
        let ok = with(|v| {
            v["mode"] = "ipvs".into();
            ftp(
                v,
                serde_json::json!({"port": 21, "persistence_s": 300, "persistence_group": "ftp"}),
                serde_json::json!({"ports": "10000-20000", "persistence_s": 300, "persistence_group": "ftp"}),
            );
            let mut all = v["services"][0].clone();
            all["port"] = 0.into();
            all["persistence_s"] = 0.into();
            all.as_object_mut().unwrap().remove("persistence_group");
            v["services"].as_array_mut().unwrap().push(all);
        });
        Config::parse(&ok).unwrap().validate().unwrap();
        let e = invalid(&with(|v| {
            v["mode"] = "ipvs".into();
            ftp(
                v,
                serde_json::json!({"port": 21, "persistence_s": 300, "persistence_group": "ftp"}),
                serde_json::json!({"ports": "10000-20000", "persistence_s": 300, "persistence_group": "ftp", "scheduler": "wlc"}),
            );
            v["services"][1]["real_servers"][0]["weight"] = 5.into();
        }));
        assert!(
            has(&e, "services[1]", "in mode \"ipvs\" persistence group \"ftp\" is one IPVS service (a firewall mark), so its services must agree, but this one differs from services[0] in scheduler (rr there), the weight of"),
            "{e:?}"
        );
        // The forwarder keeps each service's scheduler and weights.
        let forwarder = with(|v| {
            ftp(
                v,
                serde_json::json!({"port": 21, "persistence_s": 300, "persistence_group": "ftp"}),
                serde_json::json!({"ports": "10000-20000", "persistence_s": 300, "persistence_group": "ftp", "scheduler": "wlc"}),
            );
        });
        Config::parse(&forwarder).unwrap().validate().unwrap();
    }

    #[test]
    fn mode_must_be_known() {
        let e = Config::parse(&with(|v| v["mode"] = "nat".into())).unwrap_err();
        assert!(e.to_string().contains("unknown variant `nat`"), "{e}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let e = invalid(&with(|v| {
            v["services"][0]["port"] = 70000.into();
            v["services"][1]["scheduler"] = "x".into();
        }));
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn dedicated_nics_may_be_named_by_mac_like_management() {
        let ok = with(|v| {
            v["nics"] = serde_json::json!({"vip_side": "02:00:00:00:D0:01", "rs_side": "02:00:00:00:d0:02"});
        });
        Config::parse(&ok).unwrap().validate().unwrap();
        let e = invalid(&with(|v| {
            v["nics"]["vip_side"] = "02:00:00:00:d0:01".into();
            v["management"] = serde_json::json!({"nic": "02:00:00:00:D0:01"});
        }));
        assert!(has(&e, "management.nic", "dedicated forwarding NIC"), "the same NIC by MAC in either case: {e:?}");
        let e = invalid(&with(|v| v["nics"]["rs_side"] = "02:00:00:00:d0".into()));
        assert!(has(&e, "nics.rs_side", "neither an interface name nor a MAC"), "{e:?}");
    }

    #[test]
    fn control_characters_are_refused_and_never_echoed() {
        let esc = r"eth\u001b[2J";
        for field in ["vip_side", "rs_side"] {
            let e = invalid(&with(|v| v["nics"][field] = serde_json::from_str(&format!("\"{esc}\"")).unwrap()));
            assert!(has(&e, &format!("nics.{field}"), "control characters"), "{e:?}");
            assert!(e.iter().all(|x| !crate::nic::has_control(&x.message)), "{e:?}");
        }
        let e = invalid(&with(|v| v["hostname"] = "box\u{1b}]0;pwned\u{7}".into()));
        assert!(has(&e, "hostname", "is not a host name"), "{e:?}");
        let e = invalid(&with(|v| v["services"][0]["scheduler"] = "r\u{1b}[31mr".into()));
        assert!(e.iter().all(|x| !crate::nic::has_control(&x.message)), "{e:?}");
    }

    #[test]
    fn a_vip_prefix_out_of_range_is_an_error_not_a_panic() {
        for len in [0u8, 33, 40, 255] {
            let e = invalid(&with(|v| v["vip_prefix_len"] = len.into()));
            assert!(has(&e, "vip_prefix_len", "must be 1 to 32"), "{len}: {e:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Any document of the right shape with any values: validation answers, never panics.
        #[test]
        fn validation_never_panics(
            prefix in proptest::option::of(proptest::num::u8::ANY),
            dip in "[0-9./]{0,20}",
            vip in "[0-9.]{0,16}",
            rip in "[0-9.]{0,16}",
            gw in proptest::option::of("[0-9.]{0,16}"),
            port in proptest::num::i64::ANY,
            weight in proptest::num::i64::ANY,
            cap in proptest::option::of(proptest::num::u32::ANY),
            refresh in proptest::option::of(proptest::num::u32::ANY),
            nic in "(?s).{0,20}",
            timeout in proptest::num::u32::ANY,
        ) {
            let doc = with(|v| {
                v["vip_prefix_len"] = serde_json::to_value(prefix).unwrap();
                v["dip"] = dip.into();
                v["services"][0]["vip"] = vip.into();
                v["services"][0]["port"] = port.into();
                v["services"][0]["real_servers"][0]["address"] = rip.into();
                v["services"][0]["real_servers"][0]["weight"] = weight.into();
                v["gateway"] = serde_json::to_value(gw).unwrap();
                v["flow_capacity"] = serde_json::to_value(cap).unwrap();
                v["arp_refresh_s"] = serde_json::to_value(refresh).unwrap();
                v["nics"]["rs_side"] = nic.into();
                v["timeouts"] = serde_json::json!({"udp_s": timeout});
            });
            if let Ok(c) = Config::parse(&doc) {
                let _ = c.validate();
            }
        }
    }
}
