//! The status document in Prometheus' text exposition format (version 0.0.4), as
//! `GET /metrics` serves it. The same names in both modes: every drop reason and every event
//! counter is its own family with the reason's sentence as HELP, present (at 0) whether or
//! not the mode counts it; per service and per real server the connections, packets, bytes,
//! health and the doctor's findings; the HA pair; the flow table; the box and the process
//! that serves the page. Label values are escaped as the format says; no input can break a
//! line.

use std::fmt::Write;

use netfw_core::counters::{DropReason, Event};

use crate::init::BoxStatus;
use crate::status::{RealServerStatus, ServiceStatus};

/// What the status document does not carry: the box and the serving process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The software's version.
    pub version: String,
    /// When the box booted (Unix seconds).
    pub boot_time_s: f64,
    /// Memory the kernel reports as total and available (bytes).
    pub memory_total: u64,
    /// Available memory.
    pub memory_available: u64,
    /// The serving process: start (Unix seconds), resident memory (bytes), CPU (seconds).
    pub process: Option<(f64, u64, f64)>,
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// HELP text: `\` and newlines escaped.
fn help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, text: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}\n# TYPE {name} {kind}", help(text));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, text: &str, value: impl std::fmt::Display) {
        self.family(name, kind, text);
        self.sample(name, &[], value);
    }
}

/// A counter's key as a metric name part: Prometheus reads `_us_` as microseconds, so the
/// one key that has it is spelled out.
fn metric_key(key: &str) -> &str {
    match key {
        "not_for_us" => "not_for_this_box",
        k => k,
    }
}

/// Whether a real server may take new flows as far as its health goes: up when checked and
/// passing, or not checked at all.
fn up(r: &RealServerStatus) -> u8 {
    u8::from(r.health.as_ref().is_none_or(|h| h.state == "up"))
}

/// Per-service counter families: (name, help, value).
type ServiceFamily = (&'static str, &'static str, fn(&ServiceStatus) -> u64);

/// Per-real-server families: (name, type, help, value).
type RsFamily = (&'static str, &'static str, &'static str, fn(&RealServerStatus) -> u64);

const RS_FAMILIES: &[RsFamily] = &[
    ("director_real_server_connections_total", "counter", "connections (flows) scheduled to the real server", |r| r.conns),
    ("director_real_server_packets_total", "counter", "frames forwarded to the real server", |r| r.packets),
    ("director_real_server_bytes_total", "counter", "bytes forwarded to the real server", |r| r.bytes),
    ("director_real_server_weight", "gauge", "the real server's weight (0: drained)", |r| u64::from(r.weight)),
    ("director_real_server_reachable", "gauge", "1 if the real server's MAC is resolved (it answers ARP from the DIP)", |r| {
        u64::from(r.reachable)
    }),
    ("director_real_server_up", "gauge", "1 if the real server's health check passes (or it has none), 0 if it is down", |r| {
        u64::from(up(r))
    }),
    ("director_real_server_findings", "gauge", "how many problems the doctor sees with the real server's setup", |r| {
        r.diagnosis.len() as u64
    }),
];

/// Render the whole exposition.
pub fn render(b: &BoxStatus, f: &Facts) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    let st = b.status.as_ref();
    let mode = st.map_or(b.mode.as_str(), |s| s.mode.as_str());
    o.family("director_info", "gauge", "the box: its forwarding mode and software version (always 1)");
    o.sample("director_info", &[("mode", mode), ("version", &f.version)], 1);
    o.one("director_boot_time_seconds", "gauge", "when the box booted (Unix time)", f.boot_time_s);
    o.one("director_memory_total_bytes", "gauge", "memory the kernel manages", f.memory_total);
    o.one("director_memory_available_bytes", "gauge", "memory available for new work", f.memory_available);
    o.one("director_config_valid", "gauge", "1 if a valid config is in force", u8::from(b.config_valid));
    o.one(
        "director_ipvs_fallback",
        "gauge",
        "1 if the box fell back to IPVS because the forwarder could not use its NICs",
        u8::from(b.fallback),
    );
    o.one("director_reboot_needed", "gauge", "1 if a saved config waits for a reboot", u8::from(b.reboot_needed.is_some()));
    o.one("director_flows", "gauge", "flows in the table (IPVS mode: the kernel's connections)", st.map_or(0, |s| s.flows));
    o.one("director_flow_capacity", "gauge", "flows the table holds at most", st.map_or(0, |s| s.flow_capacity));
    o.one(
        "director_warnings",
        "gauge",
        "warnings the status shows (unresolved servers, VIP conflicts, HA, ...)",
        st.map_or(0, |s| s.warnings.len()),
    );

    let services: &[ServiceStatus] = st.map_or(&[], |s| &s.services);
    let per_service: [ServiceFamily; 3] = [
        ("director_service_connections_total", "connections (flows) scheduled for the virtual service", |s| s.conns),
        ("director_service_packets_total", "frames forwarded for the virtual service", |s| s.packets),
        ("director_service_bytes_total", "bytes forwarded for the virtual service", |s| s.bytes),
    ];
    for (name, text, value) in per_service {
        o.family(name, "counter", text);
        for s in services {
            o.sample(name, &[("service", &s.name())], value(s));
        }
    }
    o.family(
        "director_service_up",
        "gauge",
        "1 if a real server of the service may take new flows (0: the sorry server or nothing takes them)",
    );
    for s in services {
        o.sample("director_service_up", &[("service", &s.name())], u8::from(s.state.as_deref().is_none_or(|v| v == "up")));
    }
    o.family("director_real_server_connections", "gauge", "the real server's flows now, established (active) or not (inactive)");
    for s in services {
        let svc = s.name();
        for r in &s.real_servers {
            o.sample("director_real_server_connections", &[("service", &svc), ("server", &r.address), ("state", "active")], r.active);
            o.sample("director_real_server_connections", &[("service", &svc), ("server", &r.address), ("state", "inactive")], r.inactive);
        }
    }
    for (name, kind, text, value) in RS_FAMILIES {
        o.family(name, kind, text);
        for s in services {
            let svc = s.name();
            for r in &s.real_servers {
                o.sample(name, &[("service", &svc), ("server", &r.address)], value(r));
            }
        }
    }
    o.family("director_finding", "gauge", "one problem the doctor sees with a real server's setup, in the seeds' words (always 1)");
    for s in services {
        let svc = s.name();
        for r in &s.real_servers {
            for d in &r.diagnosis {
                o.sample("director_finding", &[("service", &svc), ("server", &r.address), ("finding", d)], 1);
            }
        }
    }

    for d in DropReason::ALL {
        let name = format!("director_dropped_{}_total", metric_key(d.key()));
        o.one(&name, "counter", &format!("frames dropped: {}", d.help()), st.and_then(|s| s.drops.get(d.key())).copied().unwrap_or(0));
    }
    for e in Event::ALL {
        let name = format!("director_{}_total", metric_key(e.key()));
        o.one(&name, "counter", e.help(), st.and_then(|s| s.events.get(e.key())).copied().unwrap_or(0));
    }

    let ha = st.and_then(|s| s.ha.as_ref());
    o.one("director_ha_configured", "gauge", "1 if the box is one of an HA pair", u8::from(ha.is_some()));
    o.family("director_ha_state", "gauge", "the box's HA state: 1 for the one it is in (master, backup or fault)");
    if let Some(h) = ha {
        for state in ["master", "backup", "fault"] {
            o.sample("director_ha_state", &[("state", state)], u8::from(h.state == state));
        }
    }
    let ha_counters: [(&str, &str, u64); 5] = [
        ("director_ha_adverts_sent_total", "VRRP adverts this box sent", ha.map_or(0, |h| h.adverts_sent)),
        ("director_ha_adverts_received_total", "valid VRRP adverts from the peer", ha.map_or(0, |h| h.adverts_received)),
        ("director_ha_flows_sent_total", "flow changes sent to the HA peer", ha.map_or(0, |h| h.flow_sync.flows_sent)),
        ("director_ha_flows_received_total", "flow changes received from the HA peer", ha.map_or(0, |h| h.flow_sync.flows_received)),
        (
            "director_ha_flows_unsent_total",
            "flow changes that could not be sent to the HA peer",
            ha.map_or(0, |h| h.flow_sync.flows_unsent),
        ),
    ];
    for (name, text, v) in ha_counters {
        o.one(name, "counter", text, v);
    }
    o.family("director_ha_adverts_ignored_total", "counter", "VRRP adverts ignored, by reason (wrong key, not the peer, replayed, ...)");
    for (reason, n) in ha.map(|h| &h.adverts_ignored).into_iter().flatten() {
        o.sample("director_ha_adverts_ignored_total", &[("reason", reason)], n);
    }

    if let Some((start, rss, cpu)) = f.process {
        o.one("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", start);
        o.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss);
        o.one("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpu);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ServerHealth, Status};

    fn rs(addr: &str, health: Option<&str>) -> RealServerStatus {
        let mut r = RealServerStatus::absent(addr.into(), 1);
        r.conns = 7;
        r.active = 2;
        r.health = health.map(|s| ServerHealth { state: s.into(), last: "x".into(), since_unix_ms: 0, check: "tcp".into() });
        r
    }

    fn boxed(status: Option<Status>) -> BoxStatus {
        BoxStatus { mode: "forwarder".into(), fallback: false, confirm_within_s: None, config_valid: true, reboot_needed: None, status }
    }

    fn status() -> Status {
        let mut s: Status = serde_json::from_value(serde_json::json!({
            "mode": "forwarder", "layout": "two-arm", "vip_side": "eth1", "rs_side": "eth2", "dip": "198.18.0.2/24",
            "flows": 3, "flow_capacity": 1024, "bytes_per_flow": 48, "services": [], "drops": {"no_service": 4},
            "events": {}, "warnings": []
        }))
        .unwrap();
        let mut svc: ServiceStatus = serde_json::from_value(serde_json::json!({
            "protocol": "tcp", "vip": "203.0.113.10", "port": 80, "scheduler": "rr", "forwarding": "dr",
            "persistence_s": 0, "conns": 7, "packets": 70, "bytes": 7000, "real_servers": []
        }))
        .unwrap();
        let mut liar = rs("198.18.0.12", Some("down"));
        liar.diagnosis.push("the VIP \"is not\" on lo\nsecond line".into());
        svc.real_servers = vec![rs("198.18.0.11", None), liar];
        s.services.push(svc);
        s
    }

    #[test]
    fn the_exposition_has_every_family_in_both_modes_and_escapes_labels() {
        let f = Facts { version: "0.1.0".into(), boot_time_s: 1.5e9, ..Facts::default() };
        let text = render(&boxed(Some(status())), &f);
        assert!(
            text.contains("director_real_server_connections_total{service=\"tcp 203.0.113.10:80\",server=\"198.18.0.11\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("director_real_server_connections{service=\"tcp 203.0.113.10:80\",server=\"198.18.0.11\",state=\"active\"} 2\n")
        );
        assert!(text.contains("director_real_server_up{service=\"tcp 203.0.113.10:80\",server=\"198.18.0.12\"} 0\n"));
        assert!(text.contains("director_dropped_no_service_total 4\n"));
        assert!(text.contains("# HELP director_dropped_src_is_vip_total frames dropped: frame with source IP = VIP"));
        assert!(text.contains("finding=\"the VIP \\\"is not\\\" on lo\\nsecond line\"} 1\n"), "{text}");
        // Nothing forwards (no config yet): the same unlabelled families, at 0.
        let empty = render(&boxed(None), &f);
        let names = |t: &str| t.lines().filter(|l| l.starts_with("# TYPE")).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(names(&text), names(&empty), "the same families with or without a data plane");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
