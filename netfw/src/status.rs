//! The forwarder's tables as the status document (`director_messages::status::Status`): the
//! same document IPVS mode reports, so the console, `netfw status` and the web page show one
//! table in both modes.

use director_config::nic::fmt_mac;
use director_messages::status::{RealServerStatus, ServiceStatus, Status};
use netfw_core::counters::{Counters, DropReason, Event};
use netfw_core::forward::Forwarder;
use netfw_core::model::Forwarding;
use netfw_core::time::Millis;

/// Gather the report; `vip_side`/`rs_side` name the NICs.
pub fn collect(f: &Forwarder, vip_side: &str, rs_side: &str, now: Millis) -> Status {
    let spec = f.spec();
    let mut warnings = Vec::new();
    let services = f
        .services()
        .iter()
        .map(|s| (s, f.service_traffic(s)))
        .map(|(s, (packets, bytes))| ServiceStatus {
            protocol: s.proto.name().to_string(),
            vip: s.vip.to_string(),
            port: s.port,
            scheduler: s.sched_kind.name().into(),
            forwarding: Forwarding::Dr,
            persistence_s: s.persistence_s,
            conns: s.conns,
            packets,
            bytes,
            real_servers: s
                .backends
                .iter()
                .filter_map(|&b| f.backends().get(usize::from(b)))
                .map(|b| RealServerStatus {
                    address: b.rip.to_string(),
                    mac: f.neighbours().mac(b.neigh).map(|m| fmt_mac(&m)),
                    reachable: f.backend_reachable(b, now),
                    weight: b.weight,
                    active: b.active,
                    inactive: b.inactive,
                    conns: b.conns,
                    packets: b.packets,
                    bytes: b.bytes,
                    rates: None,
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
    let c = f.counters();
    let src_vip = c.drops(DropReason::SrcIsVip);
    if src_vip > 0 {
        warnings.push(format!("{src_vip} frames with source IP = VIP reached the director: replies must go from the real servers to the router, not through the director"));
    }
    if c.events(Event::RingStatsUnreadable) > 0 {
        warnings.push("the kernel's receive ring statistics could not be read: rx_ring_overflow may be undercounted".into());
    }
    Status {
        mode: "forwarder".into(),
        layout: if vip_side == rs_side { "one-arm" } else { "two-arm" }.into(),
        vip_side: vip_side.into(),
        rs_side: rs_side.into(),
        dip: format!("{}/{}", spec.dip, spec.dip_prefix),
        flows: f.flows().len(),
        flow_capacity: f.flows().capacity(),
        bytes_per_flow: f.flows().bytes_per_flow(),
        services,
        drops: drops(c),
        events: Event::ALL.iter().map(|e| (e.key().to_string(), c.events(*e))).collect(),
        warnings,
    }
}

fn drops(c: &Counters) -> std::collections::BTreeMap<String, u64> {
    DropReason::ALL.iter().map(|r| (r.key().to_string(), c.drops(*r))).collect()
}
