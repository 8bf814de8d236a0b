//! The forwarder on byte fixtures: what each kind of frame becomes (issue 2 §3, §4, §6.7-8).

#![allow(clippy::cast_possible_truncation, reason = "fixture values are small")]

mod common;

use common::*;
use netfw_core::counters::{DropReason, Event};
use netfw_core::forward::{Forwarder, Side, Verdict};
use netfw_core::model::{Protocol, SchedKind, Timeouts};
use netfw_core::time::Millis;

fn drop_of(v: Verdict) -> DropReason {
    match v {
        Verdict::Drop(r) => r,
        other => panic!("expected a drop, got {other:?}"),
    }
}

#[test]
fn syn_is_forwarded_with_only_the_macs_rewritten() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1, 1], 0));
    let orig = client_tcp(40000, SYN);
    let mut fr = orig.clone();
    assert_eq!(f.process(Side::Vip, &mut fr, Millis(10)), Verdict::Forward);
    assert_eq!(&fr[0..6], &rs_mac(1));
    assert_eq!(went_to(&fr), 1);
    assert_eq!(&fr[12..], &orig[12..], "DR: the IP packet is not touched");
    // The next packets of that flow follow it; new flows go round.
    for flags in [ACK, ACK, FIN | ACK] {
        let mut fr = client_tcp(40000, flags);
        assert_eq!(f.process(Side::Vip, &mut fr, Millis(20)), Verdict::Forward);
        assert_eq!(went_to(&fr), 1);
    }
    for (port, rs) in [(40001, 2), (40002, 3), (40003, 1)] {
        let mut fr = client_tcp(port, SYN);
        assert_eq!(f.process(Side::Vip, &mut fr, Millis(30)), Verdict::Forward);
        assert_eq!(went_to(&fr), rs);
    }
    assert_eq!(f.counters().events(Event::FlowsCreated), 4);
}

#[test]
fn tcp_without_a_flow_is_resumed_by_consistent_hashing_unless_it_is_a_reset() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1, 1], 0));
    // A packet of a connection this director has no flow for (its flow expired, or another
    // director scheduled it): it goes where consistent hashing says, every time, and is
    // tracked again.
    let mut a = client_tcp(1, ACK);
    assert_eq!(f.process(Side::Vip, &mut a, Millis(0)), Verdict::Forward);
    let first = went_to(&a);
    let mut b = client_tcp(1, ACK);
    assert_eq!(f.process(Side::Vip, &mut b, Millis(1)), Verdict::Forward);
    assert_eq!(went_to(&b), first);
    assert_eq!(f.counters().events(Event::FlowsResumed), 1);
    // A reset or a SYN-ACK without a flow has nowhere to go.
    assert_eq!(drop_of(f.process(Side::Vip, &mut client_tcp(2, RST), Millis(0))), DropReason::TcpNoFlow);
    assert_eq!(drop_of(f.process(Side::Vip, &mut client_tcp(3, SYN | ACK), Millis(0))), DropReason::TcpNoFlow);
    assert_eq!(f.counters().drops(DropReason::TcpNoFlow), 2);
}

#[test]
fn flow_state_follows_client_flags_and_counts_active_inactive() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1], 0));
    f.process(Side::Vip, &mut client_tcp(5, SYN), Millis(0));
    assert_eq!((f.backends()[0].active, f.backends()[0].inactive), (0, 1), "SYN_RECV is inactive");
    f.process(Side::Vip, &mut client_tcp(5, ACK), Millis(1));
    assert_eq!((f.backends()[0].active, f.backends()[0].inactive), (1, 0), "established is active");
    f.process(Side::Vip, &mut client_tcp(5, FIN | ACK), Millis(2));
    assert_eq!((f.backends()[0].active, f.backends()[0].inactive), (0, 1));
    // FIN_WAIT lives 120 s: after that the sweeper removes it and the counters drop.
    f.poll_timers(Millis(2 + 120_000), |_, _| true);
    assert_eq!((f.backends()[0].active, f.backends()[0].inactive), (0, 0));
    assert_eq!(f.counters().events(Event::FlowsExpired), 1);
}

#[test]
fn weight_zero_drains_and_reload_keeps_flows_of_remaining_servers() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    let mut a = client_tcp(100, SYN);
    f.process(Side::Vip, &mut a, Millis(0));
    assert_eq!(went_to(&a), 1);
    f.process(Side::Vip, &mut client_tcp(100, ACK), Millis(1));
    // Drain rs1.
    f.apply(spec(SchedKind::Rr, Protocol::Tcp, 80, &[0, 1], 0), Millis(2)).unwrap();
    let mut more = client_tcp(100, ACK);
    assert_eq!(f.process(Side::Vip, &mut more, Millis(3)), Verdict::Forward);
    assert_eq!(went_to(&more), 1, "the established flow stays on the drained server");
    for p in 200..210 {
        let mut s = client_tcp(p, SYN);
        f.process(Side::Vip, &mut s, Millis(4));
        assert_eq!(went_to(&s), 2, "new flows avoid weight 0");
    }
    // Remove rs1 entirely: its flow goes; the connection's next packet is resumed on the
    // server consistent hashing gives it (rs2, the only one; it will reset it).
    let mut one = spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0);
    one.services[0].real_servers.remove(0);
    f.apply(one, Millis(5)).unwrap();
    assert_eq!(f.counters().events(Event::FlowsDroppedOnReload), 1);
    let mut orphan = client_tcp(100, ACK);
    assert_eq!(f.process(Side::Vip, &mut orphan, Millis(6)), Verdict::Forward);
    assert_eq!(went_to(&orphan), 2);
    assert_eq!(f.counters().events(Event::FlowsResumed), 1);
    let mut s = client_tcp(201, ACK);
    assert_eq!(f.process(Side::Vip, &mut s, Millis(6)), Verdict::Forward, "flows of the server that stays survive the reload");
}

#[test]
fn unresolved_real_server_gets_no_new_flows() {
    let s = spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0);
    let mut f = Forwarder::new(s, VIP_MAC, RS_SIDE_MAC, false, 1, Millis(0));
    assert_eq!(drop_of(f.process(Side::Vip, &mut client_tcp(1, SYN), Millis(0))), DropReason::NoUsableServer);
    let mut a = arp(2, rs_mac(2), rip(2), RS_SIDE_MAC, DIP);
    f.process(Side::Rs, &mut a, Millis(0));
    for p in 0..4 {
        let mut s = client_tcp(10 + p, SYN);
        f.process(Side::Vip, &mut s, Millis(1));
        assert_eq!(went_to(&s), 2);
    }
    // ARP replies are only learned on the DIP's side.
    let mut a = arp(2, rs_mac(1), rip(1), VIP_MAC, DIP);
    f.process(Side::Vip, &mut a, Millis(1));
    assert!(f.neighbours().mac(f.backends()[0].neigh).is_none());
}

#[test]
fn timers_send_arp_from_the_dip_and_announce_vips() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    let mut sent: Vec<(Side, Vec<u8>)> = Vec::new();
    f.poll_timers(Millis(0), |s, fr| {
        sent.push((s, fr.to_vec()));
        true
    });
    let reqs: Vec<_> = sent.iter().filter(|(s, fr)| *s == Side::Rs && fr[21] == 1).collect();
    assert_eq!(reqs.len(), 2, "one request per real server");
    for (_, fr) in &reqs {
        assert_eq!(&fr[0..6], &[0xff; 6]);
        assert_eq!(&fr[22..28], &RS_SIDE_MAC);
        assert_eq!(&fr[28..32], &DIP.octets(), "sender IP is the DIP, never the VIP (seed 001)");
    }
    let garp: Vec<_> = sent.iter().filter(|(s, _)| *s == Side::Vip).collect();
    assert_eq!(garp.len(), 1);
    assert_eq!(&garp[0].1[28..32], &VIP.octets());
    assert_eq!(&garp[0].1[38..42], &VIP.octets(), "gratuitous: target = sender = VIP");
    assert_eq!(&garp[0].1[22..28], &VIP_MAC);
}

#[test]
fn another_host_claiming_the_vip_is_reported() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1], 0));
    let rogue = [2, 0, 0, 0, 9, 9];
    // Seed 000: a real server with arp_announce=0 asks for its gateway with the VIP as sender.
    let mut a = arp(1, rogue, VIP, [0; 6], std::net::Ipv4Addr::new(203, 0, 113, 1));
    assert_eq!(f.process(Side::Vip, &mut a, Millis(5)), Verdict::Control);
    assert_eq!(f.counters().events(Event::VipConflict), 1);
    let c = f.last_vip_conflict().unwrap();
    assert_eq!((c.vip, c.mac), (VIP, rogue));
    // The director answers with a gratuitous ARP for the VIP (seed 002: the VIP was stolen).
    let mut sent = Vec::new();
    for t in [0, 1_000, 2_000, 3_000, 4_000] {
        f.poll_timers(Millis(1_000_000 + t), |_, _| true); // the start-up announcements are done
    }
    let mut b = arp(1, rogue, VIP, [0; 6], std::net::Ipv4Addr::new(203, 0, 113, 1));
    f.process(Side::Vip, &mut b, Millis(1_004_001));
    f.poll_timers(Millis(1_004_002), |side, fr| {
        sent.push((side, fr.to_vec()));
        true
    });
    assert!(
        sent.iter().any(|(side, fr)| *side == Side::Vip && fr[28..32] == VIP.octets() && fr[38..42] == VIP.octets()),
        "no gratuitous ARP after the conflict"
    );
    // A flooded unicast reply claiming the VIP (arp_ignore=0) is seen too, though not ours.
    let mut r = arp(2, rogue, VIP, ROUTER_MAC, std::net::Ipv4Addr::new(203, 0, 113, 1));
    assert_eq!(drop_of(f.process(Side::Vip, &mut r, Millis(6))), DropReason::NotForUs);
    assert_eq!(f.counters().events(Event::VipConflict), 3);
    // Our own announcements are not conflicts.
    let mut own = arp(1, VIP_MAC, VIP, [0; 6], VIP);
    f.process(Side::Vip, &mut own, Millis(7));
    assert_eq!(f.counters().events(Event::VipConflict), 3);
}

#[test]
fn frames_that_are_not_ours_are_dropped_with_reasons() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1], 0));
    // Replies from the VIP must never reach the director.
    let mut r = ipv4(VIP_MAC, Ip::new(VIP, CLIENT, 6), &tcp(80, 5, ACK));
    assert_eq!(drop_of(f.process(Side::Vip, &mut r, Millis(0))), DropReason::SrcIsVip);
    // Unicast for another MAC.
    let mut o = ipv4([2, 9, 9, 9, 9, 9], Ip::new(CLIENT, VIP, 6), &tcp(1, 80, SYN));
    assert_eq!(drop_of(f.process(Side::Vip, &mut o, Millis(0))), DropReason::NotForUs);
    // Two-arm: VIP traffic on the RS-facing NIC; DIP traffic on the VIP-facing NIC.
    let mut v = ipv4(RS_SIDE_MAC, Ip::new(CLIENT, VIP, 6), &tcp(1, 80, SYN));
    assert_eq!(drop_of(f.process(Side::Rs, &mut v, Millis(0))), DropReason::VipOnRsSide);
    let mut d = ipv4(VIP_MAC, Ip::new(CLIENT, DIP, 1), &[8, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(drop_of(f.process(Side::Vip, &mut d, Millis(0))), DropReason::NotOurAddress);
    let mut d = ipv4(RS_SIDE_MAC, Ip::new(rip(1), DIP, 1), &[8, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(f.process(Side::Rs, &mut d, Millis(0)), Verdict::Control, "ICMP to the DIP goes to the stack");
    // Port without a service; protocol without a service.
    let mut p = ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 6), &tcp(1, 22, SYN));
    assert_eq!(drop_of(f.process(Side::Vip, &mut p, Millis(0))), DropReason::NoService);
    let mut g = ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 47), &[0; 8]);
    assert_eq!(drop_of(f.process(Side::Vip, &mut g, Millis(0))), DropReason::OtherProtocol);
    // Echo to the VIP goes to the control stack.
    let mut e = ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 1), &[8, 0, 0, 0, 0, 1, 0, 1]);
    assert_eq!(f.process(Side::Vip, &mut e, Millis(0)), Verdict::Control);
}

#[test]
fn malformed_frames_are_dropped_with_their_reason() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1], 0));
    let good = client_tcp(9, SYN);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..10].to_vec(), DropReason::TruncatedEthernet),
        (good[..30].to_vec(), DropReason::BadIpv4Header),
        (good[..14 + 20 + 10].to_vec(), DropReason::BadIpv4Header), // total length beyond the frame
        (
            {
                let mut v = good.clone();
                v[14 + 10] ^= 0xff;
                v
            },
            DropReason::BadIpv4Checksum,
        ),
        (
            {
                let mut v = good.clone();
                v.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
                v
            },
            DropReason::VlanTagged,
        ),
        (
            {
                let mut v = good.clone();
                v[12..14].copy_from_slice(&[0x86, 0xdd]);
                v
            },
            DropReason::Ipv6,
        ),
        (
            {
                let mut v = good.clone();
                v[12..14].copy_from_slice(&[0x88, 0xcc]);
                v
            },
            DropReason::UnknownEthertype,
        ),
        (arp(1, ROUTER_MAC, CLIENT, [0; 6], VIP)[..30].to_vec(), DropReason::BadArp),
        (ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 6), &tcp(1, 80, SYN)[..10]), DropReason::TruncatedL4),
    ];
    for (mut fr, want) in cases {
        let before = f.counters().drops(want);
        assert_eq!(drop_of(f.process(Side::Vip, &mut fr, Millis(0))), want, "{fr:02x?}");
        assert_eq!(f.counters().drops(want), before + 1);
    }
}

/// The IPv4 header checksum is checked where a packet would create a flow; a packet of a
/// live flow goes on as the kernel's path forwards it (the real server checks it).
#[test]
fn the_header_checksum_guards_new_flows_and_live_flows_go_on_as_in_the_kernel() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1], 0));
    let damaged = |mut v: Vec<u8>| {
        v[14 + 8] ^= 0x01; // the TTL: the checksum no longer matches
        v
    };
    let mut syn = damaged(client_tcp(9, SYN));
    assert_eq!(drop_of(f.process(Side::Vip, &mut syn, Millis(0))), DropReason::BadIpv4Checksum);
    assert_eq!(f.flows().len(), 0, "no flow from a damaged header");
    let mut syn = client_tcp(9, SYN);
    assert_eq!(f.process(Side::Vip, &mut syn, Millis(0)), Verdict::Forward);
    let mut ack = damaged(client_tcp(9, ACK));
    assert_eq!(f.process(Side::Vip, &mut ack, Millis(1)), Verdict::Forward);
    assert_eq!(went_to(&ack), 1);
    assert_eq!(f.counters().drops(DropReason::BadIpv4Checksum), 1);
}

#[test]
fn ip_options_do_not_hide_the_ports() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    let mut ip = Ip::new(CLIENT, VIP, 6);
    ip.options = 8;
    let mut fr = ipv4(VIP_MAC, ip, &tcp(777, 80, SYN));
    assert_eq!(f.process(Side::Vip, &mut fr, Millis(0)), Verdict::Forward);
    let mut other = ipv4(VIP_MAC, ip, &tcp(777, 81, SYN));
    assert_eq!(drop_of(f.process(Side::Vip, &mut other, Millis(0))), DropReason::NoService, "port read after the options");
}

#[test]
fn udp_flows_use_the_udp_timeout() {
    let mut s = spec(SchedKind::Rr, Protocol::Udp, 53, &[1, 1], 0);
    s.timeouts = Timeouts { udp_s: 30, ..Timeouts::default() };
    let mut f = forwarder(s);
    let mut a = ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 17), &udp(5353, 53, b"q"));
    assert_eq!(f.process(Side::Vip, &mut a, Millis(0)), Verdict::Forward);
    let first = went_to(&a);
    // Its second packet confirms it (a first packet alone lives udp_new_s, 10 s) ...
    let mut b = ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 17), &udp(5353, 53, b"q"));
    f.process(Side::Vip, &mut b, Millis(1_000));
    assert_eq!(went_to(&b), first, "same flow");
    // ... and from then on it lives udp_s (30 s) from its last packet.
    let mut c = ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 17), &udp(5353, 53, b"q"));
    f.process(Side::Vip, &mut c, Millis(30_000));
    assert_eq!(went_to(&c), first, "same flow within the timeout");
    answer_arp(&mut f, 2, Millis(30_000 + 30_000));
    let mut d = ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 17), &udp(5353, 53, b"q"));
    f.process(Side::Vip, &mut d, Millis(30_000 + 30_000));
    assert_ne!(went_to(&d), first, "expired: rescheduled round-robin");
}

#[test]
fn fragments_follow_their_first_fragment_even_out_of_order() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Udp, 53, &[1, 1, 1], 0));
    // Datagram 1: in order.
    let mut ip = Ip::new(CLIENT, VIP, 17);
    ip.ident = 100;
    ip.more_frags = true;
    let mut first = ipv4(VIP_MAC, ip, &udp(999, 53, &[0u8; 32]));
    assert_eq!(f.process(Side::Vip, &mut first, Millis(0)), Verdict::Forward);
    let rs = went_to(&first);
    let mut later = ip;
    later.more_frags = false;
    later.frag_offset = 40;
    let mut second = ipv4(VIP_MAC, later, &[1u8; 16]);
    assert_eq!(f.process(Side::Vip, &mut second, Millis(1)), Verdict::Forward);
    assert_eq!(went_to(&second), rs);

    // Datagram 2 from another port (rr would pick another server): its later fragment first.
    let mut ip2 = Ip::new(CLIENT, VIP, 17);
    ip2.ident = 200;
    ip2.frag_offset = 40;
    let mut early = ipv4(VIP_MAC, ip2, &[2u8; 16]);
    assert_eq!(f.process(Side::Vip, &mut early, Millis(2)), Verdict::Held);
    let mut out = Vec::new();
    f.drain_released(|fr| {
        out.push(fr.to_vec());
        true
    });
    assert!(out.is_empty(), "held until the first fragment comes");
    ip2.frag_offset = 0;
    ip2.more_frags = true;
    let mut head = ipv4(VIP_MAC, ip2, &udp(1000, 53, &[0u8; 32]));
    assert_eq!(f.process(Side::Vip, &mut head, Millis(3)), Verdict::Forward);
    f.drain_released(|fr| {
        out.push(fr.to_vec());
        true
    });
    assert_eq!(out.len(), 1);
    assert_eq!(went_to(&out[0]), went_to(&head), "the early fragment went to its datagram's server");

    // A later fragment whose first never comes is dropped after the hold time, counted.
    let mut ip3 = Ip::new(CLIENT, VIP, 17);
    ip3.ident = 300;
    ip3.frag_offset = 80;
    assert_eq!(f.process(Side::Vip, &mut ipv4(VIP_MAC, ip3, &[3u8; 8]), Millis(10)), Verdict::Held);
    f.poll_timers(Millis(10 + 2_000), |_, _| true);
    assert_eq!(f.counters().drops(DropReason::FragmentNoFirst), 1);
}

#[test]
fn icmp_errors_about_a_flow_go_to_its_real_server() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    f.process(Side::Vip, &mut client_tcp(1111, SYN), Millis(0)); // -> rs1
    let mut s2 = client_tcp(2222, SYN);
    f.process(Side::Vip, &mut s2, Millis(0)); // -> rs2
    assert_eq!(went_to(&s2), 2);
    // A router on the return path says "fragmentation needed" about rs2's reply VIP:80 -> client:2222.
    let inner = ipv4([0; 6], Ip::new(VIP, CLIENT, 6), &tcp(80, 2222, ACK));
    let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0xdc];
    icmp.extend_from_slice(&inner[14..14 + 28]);
    let mut err = ipv4(VIP_MAC, Ip::new(std::net::Ipv4Addr::new(198, 51, 100, 1), VIP, 1), &icmp);
    assert_eq!(f.process(Side::Vip, &mut err, Millis(1)), Verdict::Forward);
    assert_eq!(went_to(&err), 2);
    // About an unknown flow: dropped.
    let inner = ipv4([0; 6], Ip::new(VIP, CLIENT, 6), &tcp(80, 3333, ACK));
    let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0xdc];
    icmp.extend_from_slice(&inner[14..14 + 28]);
    let mut err = ipv4(VIP_MAC, Ip::new(std::net::Ipv4Addr::new(198, 51, 100, 1), VIP, 1), &icmp);
    assert_eq!(drop_of(f.process(Side::Vip, &mut err, Millis(1))), DropReason::IcmpNoFlow);
}

#[test]
fn persistence_keeps_a_client_on_its_server_until_it_expires() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1, 1], 60));
    let mut first = client_tcp(1, SYN);
    f.process(Side::Vip, &mut first, Millis(0));
    let rs = went_to(&first);
    for p in 2..10 {
        let mut s = client_tcp(p, SYN);
        f.process(Side::Vip, &mut s, Millis(u64::from(p) * 1000));
        assert_eq!(went_to(&s), rs, "persistent client moved");
    }
    // A different client is scheduled normally.
    let mut other = ipv4(VIP_MAC, Ip::new(std::net::Ipv4Addr::new(198, 51, 100, 3), VIP, 6), &tcp(5, 80, SYN));
    f.process(Side::Vip, &mut other, Millis(10_000));
    assert_ne!(went_to(&other), rs);
    // The affinity lasts 60 s from its last use (9 s): just before it ends the client still
    // sticks (which renews it to 128.9 s) ...
    answer_arp(&mut f, 3, Millis(68_000));
    let mut s = client_tcp(20, SYN);
    f.process(Side::Vip, &mut s, Millis(68_900));
    assert_eq!(went_to(&s), rs, "within the persistence timeout");
    // ... and once it has passed, the client is scheduled afresh: rr's next server (rs1 took
    // the first client, rs2 the other one).
    answer_arp(&mut f, 3, Millis(129_000));
    let mut s = client_tcp(21, SYN);
    f.process(Side::Vip, &mut s, Millis(129_000));
    assert_eq!((rs, went_to(&s)), (1, 3), "after the persistence timeout the scheduler decides again");
}

#[test]
fn lc_sends_new_flows_to_the_least_loaded() {
    let mut f = forwarder(spec(SchedKind::Lc, Protocol::Tcp, 80, &[1, 1], 0));
    // Three established flows end up spread 2/1; the next goes to the one with fewer.
    let mut to = Vec::new();
    for p in 0..3 {
        let mut s = client_tcp(p, SYN);
        f.process(Side::Vip, &mut s, Millis(0));
        f.process(Side::Vip, &mut client_tcp(p, ACK), Millis(0));
        to.push(went_to(&s));
    }
    let ones = to.iter().filter(|&&x| x == 1).count();
    let fewer = if ones < 2 { 1 } else { 2 };
    let mut s = client_tcp(99, SYN);
    f.process(Side::Vip, &mut s, Millis(0));
    assert_eq!(went_to(&s), fewer, "{to:?}");
}

/// An rr forwarder over two servers whose flow table holds 16 flows, filled with 16
/// handshakes (SYN, then ACK: unconfirmed) from made-up clients 0..16.
fn full_table_of_handshakes() -> Forwarder {
    let mut s = spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0);
    s.flow_capacity = 16;
    let mut f = forwarder(s);
    for p in 0..16 {
        f.process(Side::Vip, &mut client_tcp(p, SYN), Millis(0));
        f.process(Side::Vip, &mut client_tcp(p, ACK), Millis(0));
    }
    f
}

#[test]
fn a_full_table_keeps_established_flows_and_still_serves_new_clients() {
    let mut f = full_table_of_handshakes();
    for p in 0..16 {
        f.process(Side::Vip, &mut client_tcp(p, ACK), Millis(0)); // confirmed
    }
    assert_eq!(f.flows().len(), 16);
    // A new client: no room, nothing evictable. It is served all the same, statelessly, and
    // its later packets go to the same server by the same hashing.
    let mut syn = client_tcp(500, SYN);
    assert_eq!(f.process(Side::Vip, &mut syn, Millis(1)), Verdict::Forward);
    for _ in 0..3 {
        let mut more = client_tcp(500, ACK);
        assert_eq!(f.process(Side::Vip, &mut more, Millis(2)), Verdict::Forward);
        assert_eq!(went_to(&more), went_to(&syn), "the stateless flow keeps its server");
    }
    assert_eq!(f.counters().events(Event::FlowsStateless), 4);
    for p in 0..16 {
        assert_eq!(f.process(Side::Vip, &mut client_tcp(p, ACK), Millis(2)), Verdict::Forward);
    }
    assert_eq!(f.flows().len(), 16, "memory stays fixed");
}

#[test]
fn spoofed_handshakes_and_single_udp_packets_age_out_fast_and_make_room() {
    // SYN then ACK from made-up clients: unconfirmed, 10 s.
    let mut f = full_table_of_handshakes();
    assert_eq!(f.flows().len(), 16);
    // A real client still gets a flow: an unconfirmed one makes room.
    f.process(Side::Vip, &mut client_tcp(1000, SYN), Millis(1));
    assert_eq!(f.counters().events(Event::FlowsEvicted), 1);
    assert_eq!(f.counters().events(Event::FlowsStateless), 0);
    // And what is left of the spoofed ones is gone after 10 s.
    f.poll_timers(Millis(10_000), |_, _| true);
    assert!(f.flows().len() <= 1, "{}", f.flows().len());
}
