//! Installing configurations: large ones without quadratic work, flows kept across capacity
//! changes, every backend pointing at its own real server's neighbour entry, and frames the
//! caller could not send counted.

#![allow(clippy::cast_possible_truncation, reason = "fixture values are small")]

mod common;

use std::net::Ipv4Addr;
use std::time::Instant;

use common::*;
use netfw_core::counters::{DropReason, Event};
use netfw_core::forward::{Forwarder, Plan, Side, Verdict};
use netfw_core::model::{DataPlaneSpec, Forwarding, Protocol, RealServerSpec, SchedKind, ServiceSpec};
use netfw_core::time::Millis;

/// 64 services × 1024 real servers (the config's limits), on 8 VIPs' ports; `weight` for all.
fn big(weight: u16, capacity: u32) -> DataPlaneSpec {
    let mut s = spec(SchedKind::Mh, Protocol::Tcp, 80, &[], 0);
    s.flow_capacity = capacity;
    s.dip_prefix = 16;
    s.services = (0..64u16)
        .map(|i| ServiceSpec {
            vip: VIP,
            proto: Protocol::Tcp,
            port: 1000 + i,
            port_last: 1000 + i,
            sched: if i % 2 == 0 { SchedKind::Mh } else { SchedKind::Wlc },
            persistence_s: 0,
            persistence_group: None,
            forwarding: Forwarding::Dr,
            real_servers: (0..1024u32)
                .map(|r| RealServerSpec { addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 4, 0)) + r), weight })
                .collect(),
            health: None,
            sorry_server: None,
        })
        .collect();
    s
}

#[test]
fn the_largest_config_installs_without_quadratic_work_and_keeps_flows() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(big(1, 1 << 16), VIP_MAC, RS_SIDE_MAC, false, 7, Millis(0));
    let first = t0.elapsed();
    // A flow on port 80 of rs1 would need a service there; use the big config's first service.
    let syn = |port: u16| ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 6), &tcp(port, 1000, SYN));
    let mut rip_mac = Vec::new();
    for r in 0..1024u32 {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 4, 0)) + r);
        let mac = [2, 0, 0, 4, (r >> 8) as u8, r as u8];
        rip_mac.push((ip, mac));
        let mut a = arp(2, mac, ip, RS_SIDE_MAC, DIP);
        assert_eq!(f.process(Side::Rs, &mut a, Millis(0)), Verdict::Control);
    }
    for p in 0..200 {
        assert_eq!(f.process(Side::Vip, &mut syn(p), Millis(1)), Verdict::Forward);
    }
    // A reload that changes every weight: built beside the running tables, then installed.
    let t1 = Instant::now();
    let plan = Plan::new(f.spec(), big(2, 1 << 16), 7).unwrap();
    let built = t1.elapsed();
    let t2 = Instant::now();
    let done = f.install(plan, Millis(2));
    let paused = t2.elapsed();
    println!(
        "64 services x 1024 real servers: first install {first:?}; reload built in {built:?} beside the running tables, forwarding paused {paused:?}"
    );
    assert_eq!(done.flows_kept, 200);
    assert_eq!(done.flows_dropped, 0);
    assert_eq!(f.backends().len(), 64 * 1024);
    assert!(f.backends().iter().all(|b| b.weight == 2));
    // The flows still go where they went, and counters carried over.
    for p in 0..200 {
        let mut fr = ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 6), &tcp(p, 1000, ACK));
        assert_eq!(f.process(Side::Vip, &mut fr, Millis(3)), Verdict::Forward);
    }
    assert_eq!(f.services()[0].conns, 200);
}

#[test]
fn a_capacity_change_carries_flows_into_the_new_table() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    assert_eq!(f.flows().capacity(), 1024);
    for p in 0..40 {
        f.process(Side::Vip, &mut client_tcp(p, SYN), Millis(1));
        f.process(Side::Vip, &mut client_tcp(p, ACK), Millis(1));
    }
    let before: Vec<u8> = (0..40)
        .map(|p| {
            let mut fr = client_tcp(p, ACK);
            f.process(Side::Vip, &mut fr, Millis(2));
            went_to(&fr)
        })
        .collect();
    let mut bigger = spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0);
    bigger.flow_capacity = 4096;
    let done = f.apply(bigger, Millis(3)).unwrap();
    assert_eq!((f.flows().capacity(), done.flows_kept, done.flows_dropped), (4096, 40, 0));
    for (p, rs) in before.iter().enumerate() {
        let mut fr = client_tcp(p as u16, ACK);
        assert_eq!(f.process(Side::Vip, &mut fr, Millis(4)), Verdict::Forward);
        assert_eq!(went_to(&fr), *rs, "flow {p} kept its real server");
    }
    // Smaller than the flows it holds: the ones that do not fit are dropped and counted, and
    // no longer count as connections of their real server.
    let mut smaller = spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0);
    smaller.flow_capacity = 10;
    let done = f.apply(smaller, Millis(5)).unwrap();
    assert_eq!((f.flows().capacity(), done.flows_kept, done.flows_dropped), (10, 10, 30));
    assert_eq!(f.counters().events(Event::FlowsDroppedOnReload), 30);
    let active: u32 = f.backends().iter().map(|b| b.active).sum();
    assert_eq!(active, 10);
}

#[test]
fn an_impossible_flow_table_is_refused_and_changes_nothing() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1], 0));
    let mut huge = spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0);
    huge.flow_capacity = u32::MAX;
    let e = f.apply(huge, Millis(1)).unwrap_err();
    assert!(e.to_string().contains("flow table of 4294967295 flows needs"), "{e}");
    assert_eq!((f.flows().capacity(), f.backends().len()), (1024, 1), "the running config stays");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever sequence of configs is installed, every backend's neighbour entry is its own
    /// real server's (a backend can never be sent to another server's MAC).
    #[test]
    fn every_backend_points_at_its_own_neighbour_entry(
        configs in proptest::collection::vec(
            proptest::collection::vec((proptest::collection::vec(1u8..40, 0..12), 1u16..4), 1..5), 1..6)
    ) {
        let mut f = Forwarder::new(spec(SchedKind::Rr, Protocol::Tcp, 80, &[], 0), VIP_MAC, RS_SIDE_MAC, false, 3, Millis(0));
        for (n, services) in configs.iter().enumerate() {
            let mut s = spec(SchedKind::Rr, Protocol::Tcp, 80, &[], 0);
            s.services = services.iter().enumerate().map(|(i, (rs, w))| ServiceSpec {
                vip: VIP, proto: Protocol::Udp, port: 1000 + i as u16, port_last: 1000 + i as u16, sched: SchedKind::Wrr, persistence_s: 0, persistence_group: None,
                forwarding: Forwarding::Dr,
                real_servers: rs.iter().map(|&r| RealServerSpec { addr: rip(r), weight: *w }).collect(), health: None, sorry_server: None,
            }).collect();
            f.apply(s, Millis(n as u64)).unwrap();
            for b in f.backends() {
                proptest::prop_assert_eq!(f.neighbours().entry(b.neigh).map(|e| e.ip), Some(b.rip));
            }
        }
    }
}

#[test]
fn frames_the_caller_could_not_send_are_counted() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    // ARP requests for the real servers and the start-up announcements of the VIP, with a
    // transmit ring that takes nothing.
    let mut offered = 0;
    f.poll_timers(Millis(0), |_, _| {
        offered += 1;
        false
    });
    assert!(offered >= 3, "two ARP requests and a gratuitous ARP were due: {offered}");
    assert_eq!(f.counters().drops(DropReason::TxRingFull), offered);
    assert_eq!(f.counters().events(Event::ArpRequestsSent) + f.counters().events(Event::GratuitousArpSent), 0);
    // A held fragment released towards a full ring.
    let frag = |offset: u16, more: bool| {
        let mut ip = Ip::new(CLIENT, VIP, 6);
        (ip.ident, ip.frag_offset, ip.more_frags) = (77, offset, more);
        let mut payload = tcp(5000, 80, SYN);
        payload.resize(40, 0);
        ipv4(VIP_MAC, ip, if offset == 0 { &payload } else { &[9u8; 16] })
    };
    let mut later = frag(40, false);
    assert_eq!(f.process(Side::Vip, &mut later, Millis(1)), Verdict::Held);
    let mut first = frag(0, true);
    assert_eq!(f.process(Side::Vip, &mut first, Millis(1)), Verdict::Forward);
    f.drain_released(|_| false);
    assert_eq!(f.counters().drops(DropReason::TxRingFull), offered + 1);
}
