//! The connection list: live flows and persistence templates, as `ipvsadm -L -n -c` lists
//! them (seed 001 watches `ipvsadm -L -n -c | grep NONE` for the templates), in both modes:
//! the forwarder's flow table and templates, or the kernel's `/proc/net/ip_vs_conn`.
//! Filtered by VIP, real server or client, and bounded: a box with a million flows answers
//! with the first `limit` that match and says how many more there were.

use std::fmt::Write;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The most entries one answer carries (well under the messages' size cap).
pub const MAX_LIMIT: usize = 2000;
/// Entries when the asker names no limit.
pub const DEFAULT_LIMIT: usize = 200;

/// Which entries to list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionFilter {
    /// Only those to this VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    /// Only those on this real server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Ipv4Addr>,
    /// Only those of this client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Ipv4Addr>,
    /// At most this many (capped at `MAX_LIMIT`; absent: `DEFAULT_LIMIT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl ConnectionFilter {
    /// Whether an entry of `client` to `vip` (none for a group's template) on `server` is asked for.
    pub fn matches(&self, client: Ipv4Addr, vip: Option<Ipv4Addr>, server: Ipv4Addr) -> bool {
        self.client.is_none_or(|c| c == client) && self.server.is_none_or(|s| s == server) && self.vip.is_none_or(|v| Some(v) == vip)
    }

    /// How many entries to list.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT)
    }

    /// From `name=value` pairs (`vip`, `server`, `client`, `limit`), as the CLI's flags, the
    /// console's words and the page's query give them; an unknown name or a bad value is an
    /// error that says which.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<ConnectionFilter, String> {
        let mut f = ConnectionFilter::default();
        for (k, v) in pairs {
            let addr = || v.parse::<Ipv4Addr>().map_err(|_| format!("{k}: \"{}\" is not an IPv4 address", v.escape_debug()));
            match k {
                "vip" => f.vip = Some(addr()?),
                "server" => f.server = Some(addr()?),
                "client" => f.client = Some(addr()?),
                "limit" => {
                    let n = v.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n));
                    f.limit = Some(n.ok_or_else(|| format!("limit: \"{}\" is not 1 to {MAX_LIMIT}", v.escape_debug()))?);
                }
                other => return Err(format!("\"{}\" is not a filter; use vip, server, client or limit", other.escape_debug())),
            }
        }
        Ok(f)
    }
}

/// One flow or template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// "TCP", "UDP", or "IP" for a template shared by a persistence group (IPVS: a
    /// firewall-mark template).
    pub protocol: String,
    /// Seconds until it expires unless renewed.
    pub expires_s: u64,
    /// ESTABLISHED, SYN_RECV, FIN_WAIT, CLOSE, UDP…, or NONE for a persistence template.
    pub state: String,
    /// Client address.
    pub client: Ipv4Addr,
    /// Client port (0 for a template).
    pub client_port: u16,
    /// The VIP:port it came to, "VIP:0" for a template of a service of every port, or the
    /// persistence group's name.
    pub virtual_service: String,
    /// The real server.
    pub server: Ipv4Addr,
    /// The real server's port (the virtual port under DR; 0 for a template).
    pub server_port: u16,
}

impl Connection {
    /// A persistence template (seed 001's `NONE` lines).
    pub fn is_template(&self) -> bool {
        self.state == "NONE" || self.state == "ASSURED"
    }
}

/// The list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    /// "forwarder" or "ipvs".
    pub mode: String,
    /// The entries listed (at most the filter's limit), flows before templates.
    pub entries: Vec<Connection>,
    /// Entries that matched the filter but were not listed (over the limit).
    pub more: usize,
    /// Rows the kernel's table had that could not be read (ipvs mode; IPv6 rows, say).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Connections {
    /// Add an entry, or count it as one more when the list is full.
    pub fn push(&mut self, c: Connection, limit: usize) {
        if self.entries.len() < limit {
            self.entries.push(c);
        } else {
            self.more += 1;
        }
    }

    /// Add up the lists of several forwarders (the box's).
    pub fn merge(parts: impl IntoIterator<Item = Connections>, limit: usize) -> Connections {
        let mut out = Connections::default();
        for p in parts {
            if out.mode.is_empty() {
                out.mode = p.mode;
            }
            out.more += p.more;
            out.unreadable += p.unreadable;
            for c in p.entries {
                out.push(c, limit);
            }
        }
        out.order();
        out
    }

    /// Flows first, then templates, each by expiry (soonest last; ipvsadm has no order).
    pub fn order(&mut self) {
        self.entries.sort_by_key(|c| (c.is_template(), std::cmp::Reverse(c.expires_s)));
    }

    /// The table as `ipvsadm -L -n -c` prints it, with the filter's count under it.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{} connection entries", if self.mode == "ipvs" { "IPVS" } else { "netfw" });
        let _ = writeln!(o, "pro expire state       source                virtual               destination");
        for c in &self.entries {
            let _ = writeln!(
                o,
                "{:<3} {:02}:{:02}  {:<11} {:<21} {:<21} {}:{}",
                c.protocol,
                c.expires_s / 60,
                c.expires_s % 60,
                c.state,
                format!("{}:{}", c.client, c.client_port),
                c.virtual_service,
                c.server,
                c.server_port
            );
        }
        if self.more > 0 {
            let _ = writeln!(o, "… and {} more that match (raise limit, or filter by vip, server or client)", self.more);
        }
        if self.unreadable > 0 {
            let _ = writeln!(o, "({} rows of the kernel's table could not be read)", self.unreadable);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: &str, expires_s: u64) -> Connection {
        Connection {
            protocol: "TCP".into(),
            expires_s,
            state: state.into(),
            client: Ipv4Addr::new(198, 51, 100, 2),
            client_port: if state == "NONE" { 0 } else { 40000 },
            virtual_service: "203.0.113.10:21".into(),
            server: Ipv4Addr::new(198, 18, 0, 11),
            server_port: if state == "NONE" { 0 } else { 21 },
        }
    }

    #[test]
    fn filters_parse_from_words_and_refuse_what_they_do_not_know() {
        let f = ConnectionFilter::parse([("vip", "203.0.113.10"), ("limit", "5")]).unwrap();
        assert_eq!((f.vip, f.limit()), (Some(Ipv4Addr::new(203, 0, 113, 10)), 5));
        assert!(f.matches(Ipv4Addr::new(1, 2, 3, 4), Some(Ipv4Addr::new(203, 0, 113, 10)), Ipv4Addr::new(198, 18, 0, 11)));
        assert!(!f.matches(Ipv4Addr::new(1, 2, 3, 4), None, Ipv4Addr::new(198, 18, 0, 11)), "a group's template has no VIP");
        assert!(ConnectionFilter::parse([("server", "x")]).unwrap_err().contains("server: \"x\" is not an IPv4 address"));
        assert!(ConnectionFilter::parse([("limit", "0")]).unwrap_err().contains("1 to 2000"));
        assert!(ConnectionFilter::parse([("port", "21")]).unwrap_err().contains("\"port\" is not a filter"));
        assert_eq!(ConnectionFilter::default().limit(), DEFAULT_LIMIT);
    }

    #[test]
    fn merged_lists_stay_bounded_and_render_like_ipvsadm() {
        let a =
            Connections { mode: "forwarder".into(), entries: vec![entry("NONE", 299), entry("ESTABLISHED", 899)], more: 1, unreadable: 0 };
        let b = Connections { mode: "forwarder".into(), entries: vec![entry("FIN_WAIT", 119)], more: 0, unreadable: 0 };
        let m = Connections::merge([a, b], 2);
        assert_eq!(m.entries.iter().map(|c| c.state.as_str()).collect::<Vec<_>>(), ["ESTABLISHED", "NONE"]);
        assert_eq!(m.more, 2);
        let text = m.render();
        assert!(text.contains("TCP 14:59  ESTABLISHED 198.51.100.2:40000    203.0.113.10:21       198.18.0.11:21"), "{text}");
        assert!(text.contains("TCP 04:59  NONE        198.51.100.2:0"), "{text}");
        assert!(text.contains("and 2 more"), "{text}");
    }
}
