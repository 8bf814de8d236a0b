//! The sections about watching the box from outside: `metrics` (the bearer token Prometheus
//! sends to `GET /metrics`) and `syslog` (where every event is sent, RFC 5424 over UDP or
//! TCP), and their rules. Each problem names its field and says what would be right.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::document::Config;
use crate::net::{parse_cidr, parse_unicast, Subnet};

/// Shortest metrics token accepted.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest metrics token accepted.
const MAX_TOKEN_LEN: usize = 256;

/// `metrics` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsDoc {
    /// What a scraper sends as `Authorization: Bearer <token>`.
    pub token: String,
}

impl MetricsDoc {
    /// The problem with the token, if any.
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.token;
        if t.len() < MIN_TOKEN_LEN || t.len() > MAX_TOKEN_LEN {
            return Err(format!("the token must have {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters (it has {})", t.chars().count()));
        }
        if !t.chars().all(|c| c.is_ascii_graphic()) {
            return Err("the token may hold only visible ASCII characters (no spaces): it travels in an HTTP header".into());
        }
        Ok(())
    }
}

/// How syslog lines travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyslogProtocol {
    /// One datagram per event (RFC 5426).
    #[default]
    Udp,
    /// A stream of octet-counted messages (RFC 6587).
    Tcp,
}

/// The facilities an operator may pick (RFC 5424 numbers).
pub const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// `syslog` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogDoc {
    /// The log server's IPv4 address, reached through the management NIC.
    pub server: String,
    /// Its port (default 514).
    #[serde(default = "default_port")]
    pub port: i64,
    /// udp (default) or tcp.
    #[serde(default)]
    pub protocol: SyslogProtocol,
    /// The facility (default local0).
    #[serde(default = "default_facility")]
    pub facility: String,
}

fn default_port() -> i64 {
    514
}

fn default_facility() -> String {
    "local0".into()
}

/// Where and how to send, once checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyslogTarget {
    /// The server.
    pub server: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// UDP or TCP.
    pub protocol: SyslogProtocol,
    /// The facility's number.
    pub facility: u8,
}

impl Config {
    /// The `syslog` section (none without one) checked against what the management NIC
    /// reaches: its subnet, and beyond it with a gateway or by DHCP (whose gateway the
    /// document does not know). Validation reports the problems; the init sends to the target.
    pub fn syslog_target(&self) -> Option<Result<SyslogTarget, Vec<(&'static str, String)>>> {
        let s = self.syslog.as_ref()?;
        let m = self.management.as_ref();
        let subnet = m.and_then(|m| m.address.as_deref()).and_then(|a| parse_cidr(a).ok());
        let beyond = m.is_some_and(|m| m.gateway.is_some() || m.address.is_none());
        Some(s.validate(subnet, beyond))
    }
}

impl SyslogDoc {
    /// Check it against the management subnet (and whether it has a gateway); the problems as
    /// (field, message), or the target.
    pub fn validate(&self, management: Option<Subnet>, has_gateway: bool) -> Result<SyslogTarget, Vec<(&'static str, String)>> {
        let mut p = Vec::new();
        let server = match parse_unicast(&self.server) {
            Ok(ip) if management.is_some_and(|m| !m.contains(ip)) && !has_gateway => {
                p.push(("server", format!("{ip} is outside the management subnet and management has no gateway: the box cannot reach it")));
                None
            }
            Ok(ip) => Some(ip),
            Err(m) => {
                p.push(("server", m));
                None
            }
        };
        let port = u16::try_from(self.port).ok().filter(|p| *p != 0);
        if port.is_none() {
            p.push(("port", format!("{} is not a port (1-65535)", self.port)));
        }
        let facility = FACILITIES.iter().find(|(n, _)| *n == self.facility).map(|(_, f)| *f);
        if facility.is_none() {
            let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
            p.push(("facility", format!("\"{}\" is not a facility; one of {}", self.facility.escape_debug(), names.join(", "))));
        }
        match (server, port, facility) {
            (Some(server), Some(port), Some(facility)) if p.is_empty() => {
                Ok(SyslogTarget { server, port, protocol: self.protocol, facility })
            }
            _ => Err(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::parse_cidr;

    #[test]
    fn tokens_must_be_long_and_header_safe() {
        assert!(MetricsDoc { token: "short".into() }.validate().is_err_and(|e| e.contains("16 to 256")));
        assert!(MetricsDoc { token: "a token with spaces in it".into() }.validate().is_err_and(|e| e.contains("no spaces")));
        assert_eq!(MetricsDoc { token: "0123456789abcdef".into() }.validate(), Ok(()));
    }

    #[test]
    fn syslog_names_each_bad_field() {
        let m = parse_cidr("198.19.0.10/24").ok();
        let doc = |server: &str, port: i64, facility: &str| SyslogDoc {
            server: server.into(),
            port,
            protocol: SyslogProtocol::Udp,
            facility: facility.into(),
        };
        let t = doc("198.19.0.1", 514, "local3").validate(m, false).unwrap();
        assert_eq!((t.port, t.facility), (514, 19));
        let e = doc("203.0.113.9", 0, "local9").validate(m, false).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["server", "port", "facility"], "{e:?}");
        assert!(e[0].1.contains("no gateway"), "{e:?}");
        assert!(doc("203.0.113.9", 514, "daemon").validate(m, true).is_ok(), "through the management gateway");
    }
}
