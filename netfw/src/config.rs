//! The configuration document: one JSON file, schema version 1, parsed and validated.
//!
//! Validation speaks the seeds' rules and names the field: every RIP inside the DIP's subnet
//! (DR rewrites only the MAC, so real servers must share the director's L2 segment), VIP
//! distinct from the DIP and every RIP, no duplicate services or real servers, ports 1–65535,
//! weights 0–65535, known scheduler and protocol. Unknown fields and malformed JSON are errors
//! with line and column. The full reference is `docs/config.md`.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{DataPlaneSpec, Protocol, RealServerSpec, SchedKind, ServiceSpec, Timeouts};

/// The only schema version this build reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Most virtual services.
pub const MAX_SERVICES: usize = 64;
/// Most real servers per service.
pub const MAX_REAL_SERVERS: usize = 1024;
/// Most distinct VIPs (the control stack holds each as an address, plus the DIP).
pub const MAX_VIPS: usize = 7;
/// Default flow table capacity.
pub const DEFAULT_FLOW_CAPACITY: u32 = 1 << 20;
/// Largest flow table capacity.
pub const MAX_FLOW_CAPACITY: u32 = 1 << 24;

/// Forwarding mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The userspace DR forwarder on dedicated NICs.
    #[default]
    Forwarder,
    /// The in-kernel IPVS, programmed over netlink.
    Ipvs,
}

/// Which NIC plays which role. Equal names mean one-arm (seed 001's layout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nics {
    /// Towards the router: carries the VIP.
    pub vip_side: String,
    /// Towards the real servers: carries the DIP.
    pub rs_side: String,
}

/// Flow timeouts in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsDoc {
    /// After SYN.
    pub tcp_syn_s: u32,
    /// Established.
    pub tcp_established_s: u32,
    /// After FIN.
    pub tcp_fin_s: u32,
    /// After RST.
    pub tcp_close_s: u32,
    /// UDP.
    pub udp_s: u32,
}

impl Default for TimeoutsDoc {
    fn default() -> Self {
        let t = Timeouts::default();
        TimeoutsDoc {
            tcp_syn_s: t.tcp_syn_s,
            tcp_established_s: t.tcp_established_s,
            tcp_fin_s: t.tcp_fin_s,
            tcp_close_s: t.tcp_close_s,
            udp_s: t.udp_s,
        }
    }
}

/// The management NIC: where the web page is served. Never one of the dedicated NICs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Management {
    /// Interface name or MAC.
    pub nic: String,
    /// Static address with prefix, e.g. "198.19.0.10/24"; absent means DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Default gateway for management traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A real server as written in the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealServerDoc {
    /// RIP.
    pub address: String,
    /// Weight 0–65535 (0 drains).
    #[serde(default = "one")]
    pub weight: i64,
}

fn one() -> i64 {
    1
}

/// A virtual service as written in the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDoc {
    /// VIP.
    pub vip: String,
    /// "tcp" or "udp".
    pub protocol: String,
    /// 1–65535.
    pub port: i64,
    /// rr, wrr, lc, wlc, sh, mh.
    #[serde(default = "default_sched")]
    pub scheduler: String,
    /// Client-IP affinity, seconds (0 = off).
    #[serde(default)]
    pub persistence_s: u32,
    /// How real servers are reached: "dr" (default), "tun" or "nat" (the last two in ipvs mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<String>,
    /// Real servers.
    pub real_servers: Vec<RealServerDoc>,
}

fn default_sched() -> String {
    "wlc".into()
}

/// The whole document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version (1).
    pub version: u32,
    /// forwarder or ipvs.
    #[serde(default)]
    pub mode: Mode,
    /// NIC roles.
    pub nics: Nics,
    /// DIP with prefix, e.g. "198.18.0.2/24".
    pub dip: String,
    /// Prefix length of the VIP-facing segment (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_prefix_len: Option<u8>,
    /// Upstream router for the director's own replies (ICMP) to off-link hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Flow table capacity (default 1048576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_capacity: Option<u32>,
    /// Flow timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsDoc>,
    /// Seconds between ARP refreshes of each real server (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp_refresh_s: Option<u32>,
    /// Virtual services.
    pub services: Vec<ServiceDoc>,
    /// The management NIC (the appliance's init reads this; netfw ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<Management>,
    /// The appliance's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// One rule broken, naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path, e.g. `services[0].real_servers[1].address`.
    pub field: String,
    /// What is wrong, in an operator's words.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a configuration was not accepted.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// Path.
        path: String,
        /// OS error.
        error: std::io::Error,
    },
    /// Not valid JSON, or not the schema (unknown field, wrong type), at a line and column.
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde's description.
        message: String,
    },
    /// Valid JSON that breaks the rules.
    Invalid(Vec<FieldError>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => write!(f, "cannot read config {path}: {error}"),
            ConfigError::Syntax { line, column, message } => write!(f, "config line {line}, column {column}: {message}"),
            ConfigError::Invalid(errs) => {
                write!(f, "config rejected ({} problem{}):", errs.len(), if errs.len() == 1 { "" } else { "s" })?;
                for e in errs {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// An IPv4 subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// An address in it (the DIP itself for the DIP's subnet).
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
    /// Network address.
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    /// Broadcast address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    /// Is `ip` inside?
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// Parse "a.b.c.d/len".
pub fn parse_cidr(s: &str) -> Result<Subnet, String> {
    let (a, p) = s.split_once('/').ok_or_else(|| format!("\"{s}\" needs a prefix length, e.g. \"198.18.0.2/24\""))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| format!("\"{a}\" is not an IPv4 address"))?;
    let prefix: u8 = p.parse().ok().filter(|p| (1..=30).contains(p)).ok_or_else(|| format!("prefix length \"{p}\" must be 1 to 30"))?;
    Ok(Subnet { addr, prefix })
}

fn parse_unicast(s: &str) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = s.parse().map_err(|_| format!("\"{s}\" is not an IPv4 address"))?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(format!("{ip} is not a unicast host address"));
    }
    Ok(ip)
}

fn nic_name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("a NIC name is required".into())
    } else if name.len() > 15 {
        Some(format!("\"{name}\" is longer than 15 characters, the kernel's limit"))
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        Some(format!("\"{name}\" is not a valid interface name"))
    } else {
        None
    }
}

impl Config {
    /// Parse a document (syntax and schema only).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        })
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<(Config, DataPlaneSpec), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.display().to_string(), error })?;
        let c = Config::parse(&text)?;
        let spec = c.validate()?;
        Ok((c, spec))
    }

    /// One-arm (one NIC carries VIP and DIP)?
    pub fn one_arm(&self) -> bool {
        self.nics.vip_side == self.nics.rs_side
    }

    /// Check every rule; on success, the data plane's view of this config.
    pub fn validate(&self) -> Result<DataPlaneSpec, ConfigError> {
        let mut errs: Vec<FieldError> = Vec::new();
        let mut err = |field: String, message: String| errs.push(FieldError { field, message });

        if self.version != SCHEMA_VERSION {
            err("version".into(), format!("version {} is not supported; this netfw reads version {SCHEMA_VERSION}", self.version));
        }
        if let Some(m) = nic_name_error(&self.nics.vip_side) {
            err("nics.vip_side".into(), m);
        }
        if let Some(m) = nic_name_error(&self.nics.rs_side) {
            err("nics.rs_side".into(), m);
        }
        let dip = match parse_cidr(&self.dip) {
            Ok(d) => {
                if d.addr == d.network() || d.addr == d.broadcast() {
                    err("dip".into(), format!("{} is the network or broadcast address of {d}", d.addr));
                }
                if let Err(m) = parse_unicast(&d.addr.to_string()) {
                    err("dip".into(), m);
                }
                Some(d)
            }
            Err(m) => {
                err("dip".into(), m);
                None
            }
        };
        if let Some(m) = &self.management {
            if let Some(e) = nic_name_error(&m.nic).filter(|_| !m.nic.contains(':') || m.nic.len() != 17) {
                err("management.nic".into(), e);
            }
            if m.nic == self.nics.vip_side || m.nic == self.nics.rs_side {
                err("management.nic".into(), format!("{} is a dedicated forwarding NIC; management needs its own NIC", m.nic));
            }
            let net = m.address.as_deref().map(|a| parse_cidr(a).map_err(|e| err("management.address".into(), e)).ok()).unwrap_or(None);
            if let Some(g) = &m.gateway {
                match parse_unicast(g) {
                    Ok(ip) if net.is_some_and(|n| !n.contains(ip)) => {
                        err("management.gateway".into(), format!("{ip} is outside the management subnet"))
                    }
                    Ok(_) => {}
                    Err(e) => err("management.gateway".into(), e),
                }
            }
        }
        if let Some(h) = &self.hostname {
            if h.is_empty() || h.len() > 63 || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                err("hostname".into(), format!("\"{h}\" is not a host name (letters, digits and '-', at most 63)"));
            }
        }
        let vip_prefix = self.vip_prefix_len.unwrap_or(24);
        if !(1..=32).contains(&vip_prefix) {
            err("vip_prefix_len".into(), format!("{vip_prefix} must be 1 to 32"));
        }
        let capacity = self.flow_capacity.unwrap_or(DEFAULT_FLOW_CAPACITY);
        if !(1..=MAX_FLOW_CAPACITY).contains(&capacity) {
            err("flow_capacity".into(), format!("{capacity} must be 1 to {MAX_FLOW_CAPACITY}"));
        }
        let t = self.timeouts.unwrap_or_default();
        for (name, v) in [
            ("tcp_syn_s", t.tcp_syn_s),
            ("tcp_established_s", t.tcp_established_s),
            ("tcp_fin_s", t.tcp_fin_s),
            ("tcp_close_s", t.tcp_close_s),
            ("udp_s", t.udp_s),
        ] {
            if v == 0 {
                err(format!("timeouts.{name}"), "a timeout of 0 would expire every flow at once; use at least 1".into());
            }
        }
        let refresh = self.arp_refresh_s.unwrap_or(5);
        if !(1..=3600).contains(&refresh) {
            err("arp_refresh_s".into(), format!("{refresh} must be 1 to 3600 seconds"));
        }
        if self.services.len() > MAX_SERVICES {
            err("services".into(), format!("{} services; at most {MAX_SERVICES}", self.services.len()));
        }

        let mut services = Vec::new();
        let mut all_rips: Vec<(String, Ipv4Addr)> = Vec::new();
        let mut spec_vips: Vec<Ipv4Addr> = Vec::new();
        for (si, s) in self.services.iter().enumerate() {
            let at = |f: &str| format!("services[{si}].{f}");
            let vip = parse_unicast(&s.vip).map_err(|m| err(at("vip"), m)).ok();
            if let Some(v) = vip.filter(|v| !spec_vips.contains(v)) {
                spec_vips.push(v);
            }
            if let (Some(v), Some(d)) = (vip, dip) {
                if v == d.addr {
                    err(at("vip"), format!("VIP {v} equals the DIP; the director needs both (seed 001: ARP for real servers must come from the DIP, not the VIP)"));
                }
            }
            let proto = match s.protocol.as_str() {
                "tcp" => Some(Protocol::Tcp),
                "udp" => Some(Protocol::Udp),
                other => {
                    err(at("protocol"), format!("\"{other}\" is not a protocol; use \"tcp\" or \"udp\""));
                    None
                }
            };
            let port = u16::try_from(s.port).ok().filter(|p| *p >= 1);
            if port.is_none() {
                err(at("port"), format!("{} is not a port; use 1 to 65535", s.port));
            }
            let sched = SchedKind::ALL.iter().find(|(n, _)| *n == s.scheduler).map(|(_, k)| *k);
            if sched.is_none() {
                err(at("scheduler"), format!("\"{}\" is not a scheduler; use one of rr, wrr, lc, wlc, sh, mh", s.scheduler));
            }
            match (s.forwarding.as_deref().unwrap_or("dr"), self.mode) {
                ("dr", _) | ("tun" | "nat", Mode::Ipvs) => {}
                ("tun" | "nat", Mode::Forwarder) => err(
                    at("forwarding"),
                    format!(
                        "\"{}\" needs mode \"ipvs\" (the forwarder does direct routing only)",
                        s.forwarding.as_deref().unwrap_or_default()
                    ),
                ),
                (other, _) => err(at("forwarding"), format!("\"{other}\" is not a forwarding method; use \"dr\", \"tun\" or \"nat\"")),
            }
            if s.real_servers.len() > MAX_REAL_SERVERS {
                err(at("real_servers"), format!("{} real servers; at most {MAX_REAL_SERVERS}", s.real_servers.len()));
            }
            let mut rss = Vec::new();
            for (ri, r) in s.real_servers.iter().enumerate() {
                let rat = |f: &str| format!("services[{si}].real_servers[{ri}].{f}");
                let weight = u16::try_from(r.weight).ok();
                if weight.is_none() {
                    err(rat("weight"), format!("{} is not a weight; use 0 to 65535 (0 drains the server)", r.weight));
                }
                let Ok(rip) = parse_unicast(&r.address).map_err(|m| err(rat("address"), m)) else { continue };
                if let Some(d) = dip {
                    if !d.contains(rip) {
                        err(rat("address"), format!("{rip} is outside the DIP's subnet {d}; in DR mode the director reaches real servers by MAC address, so every RIP must be on the DIP's L2 segment"));
                    } else if rip == d.network() || rip == d.broadcast() {
                        err(rat("address"), format!("{rip} is the network or broadcast address of {d}"));
                    } else if rip == d.addr {
                        err(rat("address"), format!("{rip} is the DIP itself"));
                    }
                }
                if Some(rip) == vip {
                    err(
                        rat("address"),
                        format!("{rip} equals the service's VIP; a real server holds the VIP on lo, with its own RIP on the NIC"),
                    );
                }
                if rss.iter().any(|x: &RealServerSpec| x.addr == rip) {
                    err(rat("address"), format!("{rip} is listed twice in this service"));
                }
                all_rips.push((rat("address"), rip));
                if let Some(weight) = weight {
                    rss.push(RealServerSpec { addr: rip, weight });
                }
            }
            if let (Some(vip), Some(proto), Some(port), Some(sched)) = (vip, proto, port, sched) {
                if services.iter().any(|x: &ServiceSpec| x.vip == vip && x.proto == proto && x.port == port) {
                    err(at("port"), format!("service {}:{vip}:{port} is defined twice", proto.name()));
                }
                services.push(ServiceSpec { vip, proto, port, sched, persistence_s: s.persistence_s, real_servers: rss });
            }
        }
        // A VIP must not be any service's RIP either.
        for (field, rip) in &all_rips {
            if spec_vips.contains(rip) {
                err(field.clone(), format!("{rip} is a VIP of this director; a RIP must not be a VIP"));
            }
        }
        if spec_vips.len() > MAX_VIPS {
            err("services".into(), format!("{} distinct VIPs; at most {MAX_VIPS}", spec_vips.len()));
        }
        let gateway = match &self.gateway {
            None => None,
            Some(g) => {
                match parse_unicast(g) {
                    Ok(ip) => {
                        let on_vip_side = spec_vips.iter().any(|v| Subnet { addr: *v, prefix: vip_prefix }.contains(ip));
                        if !on_vip_side && !dip.is_some_and(|d| d.contains(ip)) {
                            err("gateway".into(), format!("{ip} is on neither the DIP's subnet nor a VIP's /{vip_prefix} segment; the director could not reach it"));
                        }
                        Some(ip)
                    }
                    Err(m) => {
                        err("gateway".into(), m);
                        None
                    }
                }
            }
        };

        match dip {
            Some(d) if errs.is_empty() => Ok(DataPlaneSpec {
                dip: d.addr,
                dip_prefix: d.prefix,
                vip_prefix,
                gateway,
                services,
                flow_capacity: capacity,
                timeouts: Timeouts {
                    tcp_syn_s: t.tcp_syn_s,
                    tcp_established_s: t.tcp_established_s,
                    tcp_fin_s: t.tcp_fin_s,
                    tcp_close_s: t.tcp_close_s,
                    udp_s: t.udp_s,
                },
                arp_refresh_ms: u64::from(refresh) * 1000,
            }),
            _ => Err(ConfigError::Invalid(errs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../docs/example-config.json");

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
        let e = invalid(&with(|v| v["services"][0]["port"] = 0.into()));
        assert!(has(&e, "services[0].port", "1 to 65535"), "{e:?}");
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
        let e = invalid(&with(|v| v["services"][0]["forwarding"] = "fullnat".into()));
        assert!(has(&e, "services[0].forwarding", "not a forwarding method"), "{e:?}");
        let ok = with(|v| {
            v["mode"] = "ipvs".into();
            v["services"][0]["forwarding"] = "nat".into();
        });
        Config::parse(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn mode_must_be_known() {
        let e = Config::parse(&with(|v| v["mode"] = "nat".into())).unwrap_err();
        assert!(e.to_string().contains("unknown variant `nat`"), "{e}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let e = invalid(&with(|v| {
            v["services"][0]["port"] = 0.into();
            v["services"][1]["scheduler"] = "x".into();
        }));
        assert_eq!(e.len(), 2, "{e:?}");
    }
}
