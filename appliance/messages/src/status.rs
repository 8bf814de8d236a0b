//! The status document both modes report (the forwarder from its own tables, IPVS mode from
//! the kernel's), and its text form: a table in the style of `ipvsadm -L -n --stats`, plus the
//! drop counters and warnings an operator should see (unresolved real servers, VIP conflicts).
//! The console, `netfw status` and the web page all show this one document.

use std::collections::BTreeMap;
use std::fmt::Write;

use netfw_core::counters::{DropReason, Event};
use netfw_core::model::{DataPlaneSpec, Forwarding, Ports};
use serde::{Deserialize, Serialize};

/// One real server's line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServerStatus {
    /// RIP.
    pub address: String,
    /// Resolved MAC, if any.
    pub mac: Option<String>,
    /// Answers ARP recently enough for new flows.
    pub reachable: bool,
    /// Weight.
    pub weight: u16,
    /// Established flows.
    pub active: u32,
    /// Other flows.
    pub inactive: u32,
    /// Flows scheduled.
    pub conns: u64,
    /// Frames forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// The kernel's rate estimates (IPVS mode); in forwarder mode rates are the difference of
    /// two reports.
    pub rates: Option<Rates>,
    /// Its health check's view (absent when the service has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ServerHealth>,
    /// What the box can see is wrong with its setup, in the seeds' terms (the doctor).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnosis: Vec<String>,
}

impl ServiceStatus {
    /// How metrics and the charts name it: "tcp 203.0.113.10:80" ("…:10000-20000" for a range,
    /// "…:0" for every port, as ipvsadm shows it).
    pub fn name(&self) -> String {
        format!("{} {}:{}", self.protocol, self.vip, self.ports())
    }

    /// Its ports.
    pub fn ports(&self) -> Ports {
        Ports { first: self.port, last: self.port_last.unwrap_or(if self.port == 0 { u16::MAX } else { self.port }) }
    }

    /// A checked service's rows from the kernel's table as its config names them (in ipvs
    /// mode the health checker changes IPVS): `sorry` as the service's sorry server, not among
    /// its real servers, and each configured server (address, weight) IPVS does not hold now
    /// (the checker took it out) with a row of its own.
    pub fn as_configured(&mut self, servers: impl IntoIterator<Item = (String, u16)>, sorry: Option<String>) {
        if let Some(s) = sorry {
            self.real_servers.retain(|r| r.address != s);
            self.sorry_server = Some(s);
        }
        for (address, weight) in servers {
            if !self.real_servers.iter().any(|r| r.address == address) {
                self.real_servers.push(RealServerStatus::absent(address, weight));
            }
        }
    }
}

impl RealServerStatus {
    /// The row of a configured real server the data plane does not hold now (the health
    /// checks took it out of IPVS): its weight as configured, no traffic.
    pub fn absent(address: String, weight: u16) -> RealServerStatus {
        RealServerStatus {
            address,
            mac: None,
            reachable: false,
            weight,
            active: 0,
            inactive: 0,
            conns: 0,
            packets: 0,
            bytes: 0,
            rates: None,
            health: None,
            diagnosis: Vec::new(),
        }
    }
}

/// A checked real server's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealth {
    /// "up" or "down".
    pub state: String,
    /// The last probe's result in words ("check passed", "connection refused", …; "not
    /// checked yet").
    pub last: String,
    /// When it entered its state (Unix time, ms).
    pub since_unix_ms: u64,
    /// What is probed: "tcp 203.0.113.10:80 via the DR path", "http … via the RIP".
    pub check: String,
}

/// A real server changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEvent {
    /// When (Unix time, ms).
    pub at_unix_ms: u64,
    /// The service ("tcp 203.0.113.10:80").
    pub service: String,
    /// The real server's address.
    pub server: String,
    /// "up" or "down" before.
    pub from: String,
    /// And after.
    pub to: String,
    /// The probe result that decided it, in words.
    pub reason: String,
}

impl HealthEvent {
    /// One line: "2026-11-22 09:30:01 UTC tcp 203.0.113.10:80 198.18.0.11 up -> down: connection refused".
    pub fn line(&self) -> String {
        format!("{} {} {} {} -> {}: {}", utc(self.at_unix_ms), self.service, self.server, self.from, self.to, self.reason)
    }
}

/// Unix milliseconds as "YYYY-MM-DD hh:mm:ss UTC".
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Rates over the last seconds, as IPVS's estimator reports them.
#[derive(Debug, Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    /// New connections per second.
    pub cps: u64,
    /// Packets per second (director-bound direction).
    pub pps: u64,
    /// Bytes per second (director-bound direction).
    pub bps: u64,
}

/// One service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// "tcp"/"udp".
    pub protocol: String,
    /// VIP.
    pub vip: String,
    /// Port, or the first of its range (0: every port).
    pub port: u16,
    /// The last port of its range (absent: one port, or every port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_last: Option<u16>,
    /// Scheduler.
    pub scheduler: String,
    /// Forwarding method.
    pub forwarding: Forwarding,
    /// Persistence.
    pub persistence_s: u32,
    /// The persistence group it shares its clients' servers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_group: Option<String>,
    /// Flows scheduled.
    pub conns: u64,
    /// Frames forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Real servers.
    pub real_servers: Vec<RealServerStatus>,
    /// Its health: "up" (a real server may take new flows), "sorry" (none may: the sorry
    /// server takes them) or "down" (none may, no sorry server: new flows are dropped).
    /// Absent without a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Its sorry server, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<String>,
}

/// One forwarding worker (forwarder mode with several: one per group of receive queues).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its number (0: the one that sends ARP).
    pub worker: usize,
    /// The VIP-facing NIC's receive queues it serves ("0,2"; "all" for one worker).
    pub queues: String,
    /// Frames it received (those the kernel forwarded itself are not among them).
    pub rx_frames: u64,
    /// Flows in its share of the table.
    pub flows: usize,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// "forwarder" or "ipvs".
    pub mode: String,
    /// "one-arm"/"two-arm".
    pub layout: String,
    /// NIC names.
    pub vip_side: String,
    /// NIC names.
    pub rs_side: String,
    /// DIP.
    pub dip: String,
    /// Flows in the table.
    pub flows: usize,
    /// Capacity (0: the kernel's table, no fixed limit).
    pub flow_capacity: usize,
    /// Memory per flow slot pair.
    pub bytes_per_flow: usize,
    /// Services.
    pub services: Vec<ServiceStatus>,
    /// Drop counters by reason key.
    pub drops: BTreeMap<String, u64>,
    /// Event counters by key.
    pub events: BTreeMap<String, u64>,
    /// Warnings for the operator.
    pub warnings: Vec<String>,
    /// The forwarding workers, when there are several (how the receive queues share the work).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerStatus>,
    /// Real servers' health changes, oldest first (the last ones kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_events: Vec<HealthEvent>,
    /// This box's place in its HA pair, if it is one of a pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
}

/// One box of an HA pair, as it sees the pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    /// "master", "backup" or "fault" (a dedicated NIC has no link).
    pub state: String,
    /// Virtual router ID.
    pub vrid: u8,
    /// The MAC the VIPs live on.
    pub virtual_mac: String,
    /// This box's priority.
    pub priority: u8,
    /// Its advert interval, ms.
    pub advert_ms: u32,
    /// Whether it takes the master role back when it outranks the master.
    pub preempt: bool,
    /// The peer's DIP.
    pub peer: String,
    /// The peer's last authenticated advert, if one came.
    pub peer_advert: Option<PeerAdvert>,
    /// The last change of role, if any.
    pub last_transition: Option<HaTransition>,
    /// The last time both boxes were master at once (the peers could not hear each other).
    pub split_brain: Option<SplitBrain>,
    /// Adverts sent.
    pub adverts_sent: u64,
    /// Authenticated adverts from the peer taken.
    pub adverts_received: u64,
    /// Adverts ignored, by why ("wrong_key", "replayed", …).
    pub adverts_ignored: BTreeMap<String, u64>,
    /// Who sent the last ignored advert, and why it was ignored.
    pub last_ignored: Option<String>,
    /// Flow sync with the peer.
    #[serde(default)]
    pub flow_sync: FlowSync,
}

/// The flow table shared with the peer (forwarder mode).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSync {
    /// Flow changes sent to the peer (as master).
    pub flows_sent: u64,
    /// Flow changes taken from the peer (as backup).
    pub flows_received: u64,
    /// Flow changes not sent: the queue was full, or the peer's MAC was not known.
    pub flows_unsent: u64,
    /// Sync datagrams ignored (wrong key, not from the peer, replayed, malformed).
    pub batches_ignored: u64,
    /// The last whole-table transfer, in words.
    pub last_table: Option<String>,
}

/// What the peer last advertised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAdvert {
    /// Its priority (0: it was leaving the master role).
    pub priority: u8,
    /// Its advert interval, ms.
    pub advert_ms: u32,
    /// How long ago, ms.
    pub age_ms: u64,
    /// Whether its services are the same as this box's (the digest in its adverts).
    pub same_services: bool,
}

/// A change of role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaTransition {
    /// "master" or "backup".
    pub to: String,
    /// Why, in words.
    pub why: String,
    /// When (Unix time, ms).
    pub at_unix_ms: u64,
}

/// Both boxes master at once, then resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBrain {
    /// For about how long, ms.
    pub duration_ms: u64,
    /// When it ended (Unix time, ms).
    pub resolved_unix_ms: u64,
}

impl HaStatus {
    /// The lines `render` shows, and the warnings an operator must see.
    pub fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "HA: {} (vrid {}, virtual MAC {}, priority {}, adverts every {} ms{}), peer {}",
            self.state.to_uppercase(),
            self.vrid,
            self.virtual_mac,
            self.priority,
            self.advert_ms,
            if self.preempt { ", preempt" } else { "" },
            self.peer
        );
        match &self.peer_advert {
            Some(p) => {
                let _ = writeln!(o, "  peer's last advert: priority {}, every {} ms, {} ms ago", p.priority, p.advert_ms, p.age_ms);
            }
            None => {
                let _ = writeln!(o, "  no advert from the peer yet");
            }
        }
        if let Some(t) = &self.last_transition {
            let _ = writeln!(o, "  became {} at {}: {}", t.to, utc(t.at_unix_ms), t.why);
        }
        let f = &self.flow_sync;
        let _ = writeln!(
            o,
            "  flow sync: {} sent, {} received, {} unsent, {} datagrams ignored",
            f.flows_sent, f.flows_received, f.flows_unsent, f.batches_ignored
        );
        if let Some(t) = &f.last_table {
            let _ = writeln!(o, "  {t}");
        }
        let ignored: Vec<String> = self.adverts_ignored.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            o,
            "  adverts sent {}, received {}, ignored {}",
            self.adverts_sent,
            self.adverts_received,
            if ignored.is_empty() { "0".into() } else { ignored.join(", ") }
        );
    }

    /// What the operator must be told about the pair.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(s) = &self.split_brain {
            w.push(format!(
                "split brain: both boxes of the pair were master for about {:.1} s (they could not hear each other's adverts), resolved at {}; check the link between them",
                s.duration_ms as f64 / 1000.0,
                utc(s.resolved_unix_ms)
            ));
        }
        if self.peer_advert.as_ref().is_some_and(|p| !p.same_services) {
            w.push("the peer's services differ from this box's: after a failover clients would be served differently; apply the same services on both".into());
        }
        if let Some(l) = &self.last_ignored {
            w.push(format!("adverts were ignored: {l}"));
        }
        if self.state == "fault" {
            let why = self.last_transition.as_ref().map_or("a dedicated NIC has no link", |t| t.why.as_str());
            w.push(format!("HA fault: {why}: this box serves nothing and stands aside for its peer until the link is back"));
        }
        w
    }
}

impl Status {
    /// The service `protocol` `vip`:`port`, if the report has it.
    pub fn service_mut(&mut self, protocol: &str, vip: &str, port: u16) -> Option<&mut ServiceStatus> {
        self.services.iter_mut().find(|s| s.protocol == protocol && s.vip == vip && s.port == port)
    }

    /// How the data plane's report differs from what `spec` asks (empty: it runs exactly
    /// that): services, schedulers, persistence, forwarding methods, real servers and weights;
    /// with `capacity`, the flow table's size too (the kernel's table has none).
    pub fn differences(&self, spec: &DataPlaneSpec, capacity: bool) -> Vec<String> {
        let mut out = Vec::new();
        if capacity && self.flow_capacity != spec.flow_capacity as usize {
            out.push(format!("the flow table holds {} flows, not the {} asked", self.flow_capacity, spec.flow_capacity));
        }
        let key = |proto: &str, vip: &str, ports: Ports| format!("{proto} {vip}:{ports}");
        let have: BTreeMap<String, &ServiceStatus> = self.services.iter().map(|s| (key(&s.protocol, &s.vip, s.ports()), s)).collect();
        for w in &spec.services {
            let k = key(w.proto.name(), &w.vip.to_string(), w.ports());
            let Some(h) = have.get(&k) else {
                out.push(format!("service {k} is missing"));
                continue;
            };
            if h.scheduler != w.sched.name() || h.persistence_s != w.persistence_s || h.forwarding != w.forwarding {
                out.push(format!(
                    "service {k} runs {} persistence {} {}, not {} persistence {} {}",
                    h.scheduler,
                    h.persistence_s,
                    h.forwarding.name(),
                    w.sched.name(),
                    w.persistence_s,
                    w.forwarding.name()
                ));
            }
            let rs: BTreeMap<String, u16> = h.real_servers.iter().map(|r| (r.address.clone(), r.weight)).collect();
            let want: BTreeMap<String, u16> = w.real_servers.iter().map(|r| (r.addr.to_string(), r.weight)).collect();
            if rs != want {
                out.push(format!("service {k} has real servers {rs:?}, not {want:?}"));
            }
        }
        if self.services.len() != spec.services.len() {
            out.push(format!("{} services run, {} asked", self.services.len(), spec.services.len()));
        }
        out
    }

    /// The ipvsadm-style text table.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let flows = if self.flow_capacity > 0 {
            format!("flows {}/{} ({} bytes/flow)", self.flows, self.flow_capacity, self.bytes_per_flow)
        } else {
            format!("connections {} (the kernel's table)", self.flows)
        };
        let _ = writeln!(
            o,
            "netfw {} ({}: vip_side={} rs_side={}) DIP {}  {flows}",
            self.mode, self.layout, self.vip_side, self.rs_side, self.dip
        );
        let rates = self.services.iter().flat_map(|s| &s.real_servers).any(|r| r.rates.is_some());
        let _ = writeln!(o, "Prot LocalAddress:Port Scheduler Flags");
        let _ = writeln!(
            o,
            "  -> RemoteAddress:Port        MAC                Weight ActiveConn InActConn      Conns    InPkts     InBytes{}",
            if rates { "   CPS  InPPS   InBPS" } else { "" }
        );
        for s in &self.services {
            let persist = match (s.persistence_s, &s.persistence_group) {
                (0, _) => String::new(),
                (p, None) => format!(" persistent {p}"),
                (p, Some(g)) => format!(" persistent {p} group {g}"),
            };
            let fwd = if s.forwarding == Forwarding::Dr { String::new() } else { format!(" {}", s.forwarding.name()) };
            let state = s.state.as_deref().map(|st| format!(" {}", st.to_uppercase())).unwrap_or_default();
            let sorry = s.sorry_server.as_deref().map(|a| format!(" sorry {a}")).unwrap_or_default();
            let _ = writeln!(
                o,
                "{:<4} {}:{} {}{}{}{state}{sorry}  (conns {} pkts {} bytes {})",
                s.protocol.to_uppercase(),
                s.vip,
                s.ports(),
                s.scheduler,
                persist,
                fwd,
                s.conns,
                s.packets,
                s.bytes
            );
            for r in &s.real_servers {
                let mac = match (&r.mac, r.reachable) {
                    (Some(m), true) => m.clone(),
                    (Some(m), false) => format!("{m}?"),
                    (None, _) => "unresolved".into(),
                };
                let rate = r.rates.map(|x| format!(" {:>5} {:>6} {:>7}", x.cps, x.pps, x.bps)).unwrap_or_default();
                let health = r.health.as_ref().map(|h| format!("  {} ({})", h.state.to_uppercase(), h.last)).unwrap_or_default();
                let _ = writeln!(
                    o,
                    "  -> {:<25} {:<18} {:>6} {:>10} {:>9} {:>10} {:>9} {:>11}{rate}{health}",
                    format!("{}:{}", r.address, s.ports()),
                    mac,
                    r.weight,
                    r.active,
                    r.inactive,
                    r.conns,
                    r.packets,
                    r.bytes
                );
                for d in &r.diagnosis {
                    let _ = writeln!(o, "       ! {d}");
                }
            }
        }
        if let Some(h) = &self.ha {
            h.render(&mut o);
        }
        if self.mode == "ipvs" {
            self.render_health_events(&mut o);
            for w in &self.warnings {
                let _ = writeln!(o, "WARNING: {w}");
            }
            return o;
        }
        let _ = writeln!(o, "Drops:");
        let mut any = false;
        for r in DropReason::ALL {
            let n = self.drops.get(r.key()).copied().unwrap_or(0);
            if n > 0 {
                any = true;
                let _ = writeln!(o, "  {:<22} {:>10}  {}", r.key(), n, r.help());
            }
        }
        if !any {
            let _ = writeln!(o, "  none");
        }
        self.render_health_events(&mut o);
        if self.workers.len() > 1 {
            let _ = writeln!(o, "Workers:");
            for w in &self.workers {
                let _ = writeln!(o, "  worker {} (queues {}): rx_frames {}, flows {}", w.worker, w.queues, w.rx_frames, w.flows);
            }
        }
        let _ = writeln!(o, "Events:");
        for e in Event::ALL {
            let _ = writeln!(o, "  {:<24} {:>10}", e.key(), self.events.get(e.key()).copied().unwrap_or(0));
        }
        for w in &self.warnings {
            let _ = writeln!(o, "WARNING: {w}");
        }
        o
    }

    fn render_health_events(&self, o: &mut String) {
        if !self.health_events.is_empty() {
            let _ = writeln!(o, "Health events:");
            for e in &self.health_events {
                let _ = writeln!(o, "  {}", e.line());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_service_from_the_kernels_table_reads_as_its_config_names_it() {
        let row = |a: &str| RealServerStatus { active: 3, ..RealServerStatus::absent(a.into(), 1) };
        let mut s = ServiceStatus {
            protocol: "tcp".into(),
            vip: "203.0.113.10".into(),
            port: 80,
            port_last: None,
            persistence_group: None,
            scheduler: "rr".into(),
            forwarding: Forwarding::Dr,
            persistence_s: 0,
            conns: 0,
            packets: 0,
            bytes: 0,
            real_servers: vec![row("198.18.0.11"), row("198.18.0.99")],
            state: None,
            sorry_server: None,
        };
        let servers = [("198.18.0.11".to_string(), 1), ("198.18.0.12".to_string(), 4)];
        s.as_configured(servers, Some("198.18.0.99".into()));
        let rows: Vec<(&str, u16, u32)> = s.real_servers.iter().map(|r| (r.address.as_str(), r.weight, r.active)).collect();
        assert_eq!(rows, vec![("198.18.0.11", 1, 3), ("198.18.0.12", 4, 0)], "the sorry server out, the server IPVS lacks in");
        assert_eq!(s.sorry_server.as_deref(), Some("198.18.0.99"));
    }

    #[test]
    fn event_times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_340_401_000), "2026-11-22 09:40:01 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
