//! The status report: a table in the style of `ipvsadm -L -n --stats`, plus the drop counters
//! and warnings an operator should see (unresolved real servers, VIP conflicts).

use std::fmt::Write;

use serde::Serialize;

use crate::counters::{DropReason, Event};
use crate::forward::Forwarder;
use crate::io::nic::fmt_mac;
use crate::time::Millis;

/// One real server's line.
#[derive(Debug, Serialize)]
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
}

/// Rates over the last seconds, as IPVS's estimator reports them.
#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct Rates {
    /// New connections per second.
    pub cps: u64,
    /// Packets per second (director-bound direction).
    pub pps: u64,
    /// Bytes per second (director-bound direction).
    pub bps: u64,
}

/// One service.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// "tcp"/"udp".
    pub protocol: &'static str,
    /// VIP.
    pub vip: String,
    /// Port.
    pub port: u16,
    /// Scheduler.
    pub scheduler: String,
    /// Forwarding method: "dr", "tun" or "nat".
    pub forwarding: &'static str,
    /// Persistence.
    pub persistence_s: u32,
    /// Flows scheduled.
    pub conns: u64,
    /// Frames forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Real servers.
    pub real_servers: Vec<RealServerStatus>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Status {
    /// "forwarder" or "ipvs".
    pub mode: &'static str,
    /// "one-arm"/"two-arm".
    pub layout: &'static str,
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
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// Event counters by key.
    pub events: std::collections::BTreeMap<&'static str, u64>,
    /// Warnings for the operator.
    pub warnings: Vec<String>,
}

impl Status {
    /// Gather the report.
    pub fn collect(f: &Forwarder, vip_side: &str, rs_side: &str, now: Millis) -> Status {
        let spec = f.spec();
        let mut warnings = Vec::new();
        let services = f
            .services()
            .iter()
            .map(|s| ServiceStatus {
                protocol: s.proto.name(),
                vip: s.vip.to_string(),
                port: s.port,
                scheduler: s.sched_kind.name().into(),
                forwarding: "dr",
                persistence_s: s.persistence_s,
                conns: s.conns,
                packets: s.packets,
                bytes: s.bytes,
                real_servers: s
                    .backends
                    .iter()
                    .filter_map(|&b| f.backends().get(usize::from(b)))
                    .map(|b| {
                        let mac = f.neighbours().mac(usize::from(b.neigh));
                        let reachable = f.backend_reachable(b, now);
                        RealServerStatus {
                            address: b.rip.to_string(),
                            mac: mac.map(|m| fmt_mac(&m)),
                            reachable,
                            weight: b.weight,
                            active: b.active,
                            inactive: b.inactive,
                            conns: b.conns,
                            packets: b.packets,
                            bytes: b.bytes,
                            rates: None,
                        }
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        for n in f.neighbours().entries() {
            if n.mac.is_none() {
                warnings.push(format!(
                    "real server {} does not answer ARP from the DIP {}: it gets no traffic (is it on the DIP's segment and up?)",
                    n.ip, spec.dip
                ));
            }
        }
        if let Some(c) = f.last_vip_conflict() {
            warnings.push(format!(
                "host {} sent ARP claiming VIP {} ({} s ago): set arp_ignore=1 and arp_announce=2 on it, or it will steal the VIP",
                fmt_mac(&c.mac),
                c.vip,
                now.since(c.at) / 1000
            ));
        }
        let src_vip = f.counters().drops(DropReason::SrcIsVip);
        if src_vip > 0 {
            warnings.push(format!("{src_vip} frames with source IP = VIP reached the director: replies must go from the real servers to the router, not through the director"));
        }
        Status {
            mode: "forwarder",
            layout: if vip_side == rs_side { "one-arm" } else { "two-arm" },
            vip_side: vip_side.into(),
            rs_side: rs_side.into(),
            dip: format!("{}/{}", spec.dip, spec.dip_prefix),
            flows: f.flows().len(),
            flow_capacity: f.flows().capacity(),
            bytes_per_flow: f.flows().bytes_per_flow(),
            services,
            drops: DropReason::ALL.iter().map(|r| (r.key(), f.counters().drops(*r))).collect(),
            events: Event::ALL.iter().map(|e| (e.key(), f.counters().events(*e))).collect(),
            warnings,
        }
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
            let persist = if s.persistence_s > 0 { format!(" persistent {}", s.persistence_s) } else { String::new() };
            let fwd = if s.forwarding == "dr" { String::new() } else { format!(" {}", s.forwarding) };
            let _ = writeln!(
                o,
                "{:<4} {}:{} {}{}{}  (conns {} pkts {} bytes {})",
                s.protocol.to_uppercase(),
                s.vip,
                s.port,
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
                let _ = writeln!(
                    o,
                    "  -> {:<25} {:<18} {:>6} {:>10} {:>9} {:>10} {:>9} {:>11}{rate}",
                    format!("{}:{}", r.address, s.port),
                    mac,
                    r.weight,
                    r.active,
                    r.inactive,
                    r.conns,
                    r.packets,
                    r.bytes
                );
            }
        }
        if self.mode == "ipvs" {
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
        let _ = writeln!(o, "Events:");
        for e in Event::ALL {
            let _ = writeln!(o, "  {:<24} {:>10}", e.key(), self.events.get(e.key()).copied().unwrap_or(0));
        }
        for w in &self.warnings {
            let _ = writeln!(o, "WARNING: {w}");
        }
        o
    }
}
