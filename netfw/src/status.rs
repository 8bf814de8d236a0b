//! The forwarder's tables as the status document (`director_messages::status::Status`): the
//! same document IPVS mode reports, so the console, `netfw status` and the web page show one
//! table in both modes.

use director_config::nic::fmt_mac;
use director_messages::status::{RealServerStatus, ServiceStatus, Status};
use netfw_core::counters::{Counters, DropReason, Event};
use netfw_core::forward::{Backend, Forwarder};
use netfw_core::model::Forwarding;
use netfw_core::time::Millis;
use netfw_core::wire::frame::ArpOp;

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
            port_last: (s.port_last != s.port && s.port != 0).then_some(s.port_last),
            scheduler: s.sched_kind.name().into(),
            forwarding: Forwarding::Dr,
            persistence_s: s.persistence_s,
            persistence_group: spec
                .services
                .iter()
                .find(|x| x.vip == s.vip && x.proto == s.proto && x.port == s.port)
                .and_then(|x| x.persistence_group.clone()),
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
                    health: None,
                    diagnosis: diagnose(f, b, now),
                })
                .collect(),
            state: None,
            sorry_server: s.sorry.and_then(|b| f.backends().get(usize::from(b))).map(|b| b.rip.to_string()),
        })
        .collect::<Vec<_>>();
    for n in f.neighbours().entries() {
        if n.mac.is_some() {
            continue;
        }
        if spec.ha.as_ref().is_some_and(|h| h.peer == n.ip) {
            warnings.push(format!(
                "the HA peer {} does not answer ARP from the DIP {}: flow sync cannot reach it (is it up, on the DIP's segment?)",
                n.ip, spec.dip
            ));
        } else {
            warnings.push(format!(
                "real server {} does not answer ARP from the DIP {}: it gets no traffic (is it on the DIP's segment and up?)",
                n.ip, spec.dip
            ));
        }
    }
    warnings.extend(seen_on_the_wire(f, now));
    let c = f.counters();
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
        workers: Vec::new(),
        health_events: Vec::new(),
        ha: None,
    }
}

/// What a forwarder saw on the wire that the operator must fix, whichever mode the box is
/// in: a host claiming a VIP, replies coming back through the director.
pub fn seen_on_the_wire(f: &Forwarder, now: Millis) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = f.last_vip_conflict() {
        out.push(format!(
            "host {} sent ARP claiming VIP {} ({} s ago): set arp_ignore=1 and arp_announce=2 on it, or it will steal the VIP",
            fmt_mac(&c.mac),
            c.vip,
            now.since(c.at) / 1000
        ));
    }
    let src_vip = f.counters().drops(DropReason::SrcIsVip);
    if src_vip > 0 {
        out.push(format!("{src_vip} frames with source IP = VIP reached the director: replies must go from the real servers to the router, not through the director"));
    }
    out
}

/// How long the doctor holds what it saw against a server (fixed, it stops being said).
pub const DOCTOR_RECENT_MS: u64 = 600_000;

/// What the forwarder has seen of a real server's setup, in the seeds' terms (the doctor; the
/// health checks add what they see, `Prober::diagnose`).
pub fn diagnose(f: &Forwarder, b: &Backend, now: Millis) -> Vec<String> {
    let mut out = Vec::new();
    let Some(mac) = f.neighbours().mac(b.neigh) else {
        out.push(format!(
            "its MAC does not resolve: ARP from the DIP {} gets no answer (is it on the DIP's segment, and up?)",
            f.spec().dip
        ));
        return out;
    };
    for c in f.vip_claims().iter().filter(|c| c.mac == mac && now.since(c.at) <= DOCTOR_RECENT_MS) {
        let ago = now.since(c.at) / 1000;
        out.push(if c.op == ArpOp::Reply {
            format!("it answers ARP for the VIP {} ({ago} s ago): set arp_ignore=1 on it (seed 000), or it steals the VIP", c.vip)
        } else {
            format!(
                "it announces the VIP {} as the sender of its ARP requests ({ago} s ago): set arp_announce=2 on it (seeds 000/002: the stolen VIP)",
                c.vip
            )
        });
    }
    if let Some((_, at)) = f.wrong_path().iter().find(|(m, at)| *m == mac && now.since(*at) <= DOCTOR_RECENT_MS) {
        out.push(format!(
            "its replies come back through the director ({} s ago, counted in src_is_vip): its default gateway is the director; it must be the router (seed 001, rule 7)",
            now.since(*at) / 1000
        ));
    }
    out
}

/// Events every worker counts for the box as a whole (each installs every reload): the box's
/// figure is one worker's, not their sum.
const PER_BOX_EVENTS: [Event; 1] = [Event::Reloads];

/// The box's report from its workers' (same config, each its share of the flows): counts
/// added up, a real server reachable if any worker may use it, warnings once each, health as
/// the worker that probes reports it.
pub fn merge(parts: Vec<Status>) -> Option<Status> {
    let mut parts = parts.into_iter();
    let mut all = parts.next()?;
    for p in parts {
        all.flows += p.flows;
        all.flow_capacity += p.flow_capacity;
        for (a, b) in all.services.iter_mut().zip(p.services) {
            a.conns += b.conns;
            a.packets += b.packets;
            a.bytes += b.bytes;
            a.state = a.state.take().or(b.state);
            for (x, y) in a.real_servers.iter_mut().zip(b.real_servers) {
                x.health = x.health.take().or(y.health);
                for d in y.diagnosis {
                    if !x.diagnosis.contains(&d) {
                        x.diagnosis.push(d);
                    }
                }
                x.reachable |= y.reachable;
                x.mac = x.mac.take().or(y.mac);
                x.active += y.active;
                x.inactive += y.inactive;
                x.conns += y.conns;
                x.packets += y.packets;
                x.bytes += y.bytes;
            }
        }
        for (k, v) in p.drops {
            *all.drops.entry(k).or_default() += v;
        }
        for (k, v) in p.events {
            if !PER_BOX_EVENTS.iter().any(|e| e.key() == k) {
                *all.events.entry(k).or_default() += v;
            }
        }
        all.workers.extend(p.workers);
        if all.health_events.is_empty() {
            all.health_events = p.health_events;
        }
        all.ha = all.ha.take().or(p.ha);
        for w in p.warnings {
            if !all.warnings.contains(&w) {
                all.warnings.push(w);
            }
        }
    }
    all.workers.sort_by_key(|w| w.worker);
    Some(all)
}

fn drops(c: &Counters) -> std::collections::BTreeMap<String, u64> {
    DropReason::ALL.iter().map(|r| (r.key().to_string(), c.drops(*r))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use director_messages::status::WorkerStatus;
    use netfw_core::forward::Side;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0xd0, 1];

    fn worker(capacity: u32) -> Forwarder {
        Forwarder::new(crate::testing::one_service(capacity), MAC, MAC, true, 1, Millis(0))
    }

    /// A worker's report, as the worker makes it.
    fn report(f: &Forwarder, n: usize) -> Status {
        let mut s = collect(f, "eth1", "eth1", Millis(0));
        s.workers = vec![WorkerStatus {
            worker: n,
            queues: n.to_string(),
            rx_frames: f.counters().events(Event::RxFrames),
            flows: f.flows().len(),
        }];
        s
    }

    /// The real server answers ARP, then a client opens a connection from `port`.
    fn connection(f: &mut Forwarder, port: u16) {
        let mut arp = vec![2, 0, 0, 0, 0xd0, 1, 2, 0, 0, 0, 1, 1, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2, 2, 0, 0, 0, 1, 1, 198, 18, 0, 11];
        arp.extend_from_slice(&MAC);
        arp.extend_from_slice(&[198, 18, 0, 2]);
        f.process(Side::Vip, &mut arp, Millis(0));
        let mut syn = MAC.to_vec();
        syn.extend_from_slice(&[2, 0, 0, 0, 0, 0xfe, 0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 51, 100, 2, 198, 18, 0, 10];
        let sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        let sum = (sum & 0xffff) + (sum >> 16);
        ip[10..12].copy_from_slice(&(!u16::try_from(sum).unwrap_or(0)).to_be_bytes());
        syn.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&port.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x02;
        syn.extend_from_slice(&tcp);
        assert_eq!(f.process(Side::Vip, &mut syn, Millis(0)), netfw_core::forward::Verdict::Forward);
    }

    /// An ARP frame from the real server (MAC 02:00:00:00:01:01) with `sender_ip`.
    fn arp_from_rs(op: u8, sender_ip: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0xff; 6];
        a.extend_from_slice(&[2, 0, 0, 0, 1, 1, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, op, 2, 0, 0, 0, 1, 1]);
        a.extend_from_slice(&sender_ip);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&[198, 18, 0, 1]);
        a
    }

    #[test]
    fn the_doctor_names_a_real_server_that_does_not_resolve_answers_or_announces_the_vip() {
        let mut f = worker(64);
        let said = |f: &Forwarder, now: u64| diagnose(f, &f.backends()[0], Millis(now)).join(" | ");
        assert!(said(&f, 0).contains("its MAC does not resolve: ARP from the DIP 198.18.0.2 gets no answer"), "{}", said(&f, 0));
        connection(&mut f, 1000);
        assert_eq!(said(&f, 0), "", "resolved and quiet: nothing to say");
        // It answers ARP for the VIP (arp_ignore is not 1), then asks with the VIP as sender
        // (arp_announce is not 2).
        f.process(Side::Vip, &mut arp_from_rs(2, [198, 18, 0, 10]), Millis(1000));
        assert!(said(&f, 2000).contains("it answers ARP for the VIP 198.18.0.10 (1 s ago): set arp_ignore=1"), "{}", said(&f, 2000));
        f.process(Side::Vip, &mut arp_from_rs(1, [198, 18, 0, 10]), Millis(1000));
        assert!(said(&f, 2000).contains("it announces the VIP 198.18.0.10 as the sender of its ARP requests"), "{}", said(&f, 2000));
        assert_eq!(diagnose(&f, &f.backends()[0], Millis(1000 + DOCTOR_RECENT_MS + 1)).len(), 0, "old news is not repeated forever");
    }

    #[test]
    fn the_boxs_status_adds_up_its_workers_and_says_each_warning_once() {
        let (mut a, mut b) = (worker(600), worker(400));
        a.count_drops(DropReason::TxRingFull, 2);
        b.count_drops(DropReason::TxRingFull, 3);
        a.count_events(Event::Reloads, 1);
        b.count_events(Event::Reloads, 1);
        let alone = [&a, &b].map(|f| collect(f, "eth1", "eth1", Millis(0)));
        assert_eq!(alone[0].warnings.len(), 1, "the real server has not answered ARP: {:?}", alone[0].warnings);
        let all = merge(alone.to_vec()).unwrap();
        assert_eq!(all.warnings.len(), 1, "said once: {:?}", all.warnings);
        connection(&mut a, 1000);
        connection(&mut b, 2000);
        connection(&mut b, 2001);
        let all = merge(vec![report(&b, 1), report(&a, 0)]).unwrap();
        assert_eq!((all.flows, all.flow_capacity), (3, 1000));
        assert_eq!(all.drops["tx_ring_full"], 5);
        assert_eq!(all.events["reloads"], b.counters().events(Event::Reloads), "a reload is one, whichever worker counts it");
        assert_eq!(all.events["flows_created"], 3);
        let rs = &all.services[0].real_servers[0];
        assert_eq!((rs.conns, rs.inactive, rs.packets), (3, 3, 3), "{rs:?}");
        assert_eq!(all.services[0].conns, 3);
        assert!(all.warnings.is_empty(), "{:?}", all.warnings);
        assert_eq!(all.workers.iter().map(|w| (w.worker, w.flows)).collect::<Vec<_>>(), vec![(0, 1), (1, 2)]);
        assert!(merge(Vec::new()).is_none());
    }
}
