//! A service's `health_check` as written in the document, and its rules: each problem names
//! its field (`services[0].health_check.timeout_ms`) and says what would be right.

use serde::{Deserialize, Serialize};

use netfw_core::model::{CheckKind, Forwarding, HealthCheck, Via};

/// Defaults: a dead server is out within about a second (two probes 500 ms apart).
pub const DEFAULT_INTERVAL_MS: u32 = 500;
/// Default probe timeout.
pub const DEFAULT_TIMEOUT_MS: u32 = 500;
/// Default consecutive successes to come up, and failures to go down.
pub const DEFAULT_RISE_FALL: u8 = 2;
/// Longest HTTP path or UDP payload accepted.
const MAX_PATH: usize = 256;
/// Longest UDP payload or expected reply, in bytes.
const MAX_PAYLOAD: usize = 512;

/// `health_check` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckDoc {
    /// "tcp", "http", "https", "udp" or "none".
    #[serde(rename = "type")]
    pub kind: String,
    /// Port probed (default: the service's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// HTTP: request path (default "/").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP: Host header (default: the address probed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// HTTP: statuses that pass, "200" or "200-399" (default "200-399").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<String>,
    /// UDP: payload sent, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// UDP: expected reply (its first bytes), hex; empty = any reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Milliseconds between probes of one server (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<i64>,
    /// Milliseconds a probe waits for its answer (default 500, at most `interval_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// Consecutive successes that bring a server back (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<i64>,
    /// Consecutive failures that take it down (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<i64>,
    /// "vip" (through the DR path, default) or "rip" (to the real server's own address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// Parse hex ("" is empty); `None` if it is not whole bytes of hex digits.
fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

/// "200" or "200-399", statuses 100–599.
fn status_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
    ((100..=599).contains(&a) && (100..=599).contains(&b) && a <= b).then_some((a, b))
}

fn printable(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_graphic())
}

impl HealthCheckDoc {
    /// Does it ask for checks (any type but "none")?
    pub fn checks(&self) -> bool {
        self.kind != "none"
    }

    /// The check, or the problems as (field under `health_check`, message). `None` with no
    /// problems: `"type": "none"`. `service_port` is the default port (`None`: the service
    /// covers several ports, and a check must name the one it probes).
    pub fn validate(&self, service_port: Option<u16>, forwarding: Forwarding) -> Result<Option<HealthCheck>, Vec<(String, String)>> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut add = |f: &str, m: String| p.push((f.to_string(), m));
        let is = |k: &str| self.kind == k;
        if !["tcp", "http", "https", "udp", "none"].contains(&self.kind.as_str()) {
            add(
                "type",
                format!("\"{}\" is not a check type; use \"tcp\", \"http\", \"https\", \"udp\" or \"none\"", self.kind.escape_debug()),
            );
        }
        for (field, given) in
            [("path", self.path.is_some()), ("host", self.host.is_some()), ("expect_status", self.expect_status.is_some())]
        {
            if given && !is("http") && !is("https") {
                add(field, format!("\"{field}\" belongs to \"http\" checks, not \"{}\"", self.kind.escape_debug()));
            }
        }
        for (field, given) in [("send", self.send.is_some()), ("expect", self.expect.is_some())] {
            if given && !is("udp") {
                add(field, format!("\"{field}\" belongs to \"udp\" checks, not \"{}\"", self.kind.escape_debug()));
            }
        }
        let port = match self.port {
            None if self.kind == "none" => Some(0),
            None => {
                if service_port.is_none() {
                    add("port", "the service covers several ports: name the one to probe (e.g. 21 for FTP's control port)".into());
                }
                service_port
            }
            Some(n) => {
                let port = u16::try_from(n).ok().filter(|p| *p >= 1);
                if port.is_none() {
                    add("port", format!("{n} is not a port; use 1 to 65535"));
                }
                port
            }
        };
        let interval = self.interval_ms.map_or(Ok(DEFAULT_INTERVAL_MS), |v| u32::try_from(v).map_err(|_| v));
        let interval = match interval {
            Ok(v) if (100..=3_600_000).contains(&v) => Some(v),
            Ok(v) => {
                add("interval_ms", format!("{v} must be 100 to 3600000 (an hour)"));
                None
            }
            Err(v) => {
                add("interval_ms", format!("{v} must be 100 to 3600000 (an hour)"));
                None
            }
        };
        let timeout = self.timeout_ms.unwrap_or(i64::from(DEFAULT_TIMEOUT_MS));
        let timeout = match (u32::try_from(timeout), interval) {
            (Ok(t), _) if t < 50 => {
                add("timeout_ms", format!("{t} is too short to hear an answer; use at least 50"));
                None
            }
            (Ok(t), Some(i)) if t > i => {
                add("timeout_ms", format!("{t} must not exceed interval_ms ({i}): a probe must end before the next one starts"));
                None
            }
            (Ok(t), _) => Some(t),
            (Err(_), _) => {
                add("timeout_ms", format!("{timeout} must be 50 to interval_ms"));
                None
            }
        };
        let mut count = |field: &str, v: Option<i64>| {
            let v = v.unwrap_or(i64::from(DEFAULT_RISE_FALL));
            let ok = u8::try_from(v).ok().filter(|n| (1..=10).contains(n));
            if ok.is_none() {
                add(field, format!("{v} must be 1 to 10 consecutive probes"));
            }
            ok
        };
        let rise = count("rise", self.rise);
        let fall = count("fall", self.fall);
        let via = match self.via.as_deref() {
            None | Some("vip") => Some(Via::Vip),
            Some("rip") => Some(Via::Rip),
            Some(other) => {
                add("via", format!("\"{}\" is not a probe path; use \"vip\" (through the DR path) or \"rip\"", other.escape_debug()));
                None
            }
        };
        if via == Some(Via::Vip) && forwarding == Forwarding::Nat {
            add("via", "a NAT service's real servers do not hold the VIP: \"rip\" is the only choice for NAT".into());
        }
        let kind = match self.kind.as_str() {
            "tcp" => Some(CheckKind::Tcp),
            "http" | "https" => {
                let path = self.path.clone().unwrap_or_else(|| "/".into());
                if !path.starts_with('/') || path.len() > MAX_PATH || !printable(&path) {
                    add(
                        "path",
                        format!(
                            "\"{}\" must start with '/', hold no spaces or control characters, and be at most {MAX_PATH} characters",
                            path.escape_debug()
                        ),
                    );
                }
                if let Some(h) = self.host.as_deref().filter(|h| h.is_empty() || h.len() > 253 || !printable(h)) {
                    add("host", format!("\"{}\" is not a host name (no spaces or control characters, at most 253)", h.escape_debug()));
                }
                let range = self.expect_status.as_deref().map_or(Some((200, 399)), status_range);
                if range.is_none() {
                    add(
                        "expect_status",
                        format!(
                            "\"{}\" is not a status or range; write \"200\" or \"200-399\" (100 to 599)",
                            self.expect_status.as_deref().unwrap_or_default().escape_debug()
                        ),
                    );
                }
                let (status_min, status_max) = range.unwrap_or((200, 399));
                Some(CheckKind::Http { tls: is("https"), path, host: self.host.clone(), status_min, status_max })
            }
            "udp" => {
                let mut bytes = |field: &str, v: &Option<String>| {
                    let b = hex(v.as_deref().unwrap_or_default());
                    match b {
                        Some(b) if b.len() <= MAX_PAYLOAD => b,
                        _ => {
                            add(field, format!("must be hex bytes (e.g. \"0a1b\"), at most {MAX_PAYLOAD} of them"));
                            Vec::new()
                        }
                    }
                };
                let send = bytes("send", &self.send);
                let expect = bytes("expect", &self.expect);
                Some(CheckKind::Udp { send, expect })
            }
            _ => None,
        };
        if !p.is_empty() {
            return Err(p);
        }
        Ok(match (kind, port, interval, timeout, rise, fall, via) {
            (Some(kind), Some(port), Some(interval_ms), Some(timeout_ms), Some(rise), Some(fall), Some(via)) => {
                Some(HealthCheck { kind, port, via, interval_ms, timeout_ms, rise, fall })
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> HealthCheckDoc {
        serde_json::from_str(json).unwrap()
    }

    fn problems(json: &str, fwd: Forwarding) -> Vec<String> {
        doc(json).validate(Some(80), fwd).unwrap_err().into_iter().map(|(f, m)| format!("{f}: {m}")).collect()
    }

    #[test]
    fn the_defaults_make_a_dead_server_go_within_a_second() {
        let c = doc(r#"{"type":"tcp"}"#).validate(Some(80), Forwarding::Dr).unwrap().unwrap();
        assert_eq!(c, HealthCheck { kind: CheckKind::Tcp, port: 80, via: Via::Vip, interval_ms: 500, timeout_ms: 500, rise: 2, fall: 2 });
        let h = doc(r#"{"type":"http","path":"/health","expect_status":"200","port":8080,"via":"rip"}"#).validate(Some(80), Forwarding::Dr);
        let h = h.unwrap().unwrap();
        assert_eq!(h.kind, CheckKind::Http { tls: false, path: "/health".into(), host: None, status_min: 200, status_max: 200 });
        let s = doc(r#"{"type":"https","host":"shop.example"}"#).validate(Some(443), Forwarding::Dr).unwrap().unwrap();
        assert_eq!(
            (s.kind, s.port),
            (CheckKind::Http { tls: true, path: "/".into(), host: Some("shop.example".into()), status_min: 200, status_max: 399 }, 443)
        );
        assert_eq!((h.port, h.via), (8080, Via::Rip));
        let u = doc(r#"{"type":"udp","send":"0a0B","expect":""}"#).validate(Some(53), Forwarding::Dr).unwrap().unwrap();
        assert_eq!(u.kind, CheckKind::Udp { send: vec![0x0a, 0x0b], expect: vec![] });
        assert_eq!(doc(r#"{"type":"none"}"#).validate(Some(80), Forwarding::Dr).unwrap(), None);
    }

    #[test]
    fn every_wrong_field_is_named_and_explained() {
        let p = problems(r#"{"type":"tcp","interval_ms":500,"timeout_ms":800}"#, Forwarding::Dr);
        assert_eq!(p, vec!["timeout_ms: 800 must not exceed interval_ms (500): a probe must end before the next one starts"]);
        let p = problems(r#"{"type":"tcp","via":"vip"}"#, Forwarding::Nat);
        assert!(p[0].starts_with("via: ") && p[0].contains("\"rip\" is the only choice for NAT"), "{p:?}");
        let p = problems(r#"{"type":"icmp","rise":0,"fall":11,"port":70000,"interval_ms":-1}"#, Forwarding::Dr);
        let fields: Vec<&str> = p.iter().map(|m| m.split(':').next().unwrap()).collect();
        assert_eq!(fields, vec!["type", "port", "interval_ms", "rise", "fall"], "{p:?}");
        let p = problems(r#"{"type":"http","path":"no slash","expect_status":"600","send":"00"}"#, Forwarding::Dr);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("send: \"send\" belongs to \"udp\" checks")), "{p:?}");
        let p = problems(r#"{"type":"udp","send":"abc"}"#, Forwarding::Dr);
        assert!(p[0].starts_with("send: must be hex bytes"), "{p:?}");
        let p = problems(r#"{"type":"https","send":"00"}"#, Forwarding::Dr);
        assert_eq!(p, vec!["send: \"send\" belongs to \"udp\" checks, not \"https\""]);
    }

    #[test]
    fn unknown_fields_are_refused_by_the_parser() {
        let e = serde_json::from_str::<HealthCheckDoc>(r#"{"type":"tcp","intervall_ms":5}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `intervall_ms`"), "{e}");
    }
}
