//! What a health check's verdict does to forwarding: a server that is down gets no new flows,
//! its flows move with their next packet, the sorry server takes new flows while no server is
//! up, and without one they are dropped and counted.

#![allow(clippy::cast_possible_truncation, reason = "fixture values are small")]

mod common;

use common::*;
use netfw_core::counters::{DropReason, Event};
use netfw_core::forward::{Side, Verdict};
use netfw_core::model::{Protocol, SchedKind};
use netfw_core::time::Millis;

fn send(f: &mut netfw_core::forward::Forwarder, sport: u16, flags: u8, now: u64) -> Option<u8> {
    let mut fr = client_tcp(sport, flags);
    match f.process(Side::Vip, &mut fr, Millis(now)) {
        Verdict::Forward => Some(went_to(&fr)),
        _ => None,
    }
}

#[test]
fn a_down_server_gets_no_new_flows_and_its_flows_move_on_their_next_packet() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1, 1], 0));
    // One connection per server.
    let first: Vec<u8> = (0..3).map(|i| send(&mut f, 1000 + i, SYN, 0).unwrap()).collect();
    let on_2 = 1000 + first.iter().position(|&s| s == 2).unwrap() as u16;
    assert_eq!(send(&mut f, on_2, ACK, 1), Some(2));
    let b2 = f.backends().iter().position(|b| b.rip == rip(2)).unwrap() as u16;
    assert!(f.set_health(b2, false));
    assert!(!f.set_health(b2, false), "no change, nothing to do");
    // New flows avoid it.
    for i in 0..30 {
        assert_ne!(send(&mut f, 2000 + i, SYN, 2), Some(2));
    }
    // Its flow's next packet goes to another server (which resets the connection at once), and
    // stays there.
    let moved = send(&mut f, on_2, ACK, 3).unwrap();
    assert_ne!(moved, 2);
    assert_eq!(send(&mut f, on_2, ACK, 4), Some(moved));
    assert_eq!(f.counters().events(Event::FlowsMoved), 1);
    assert_eq!(
        f.backends()[usize::from(b2)].active + f.backends()[usize::from(b2)].inactive,
        0,
        "the moved flow no longer counts on the dead server"
    );
    // Back up: new flows reach it again.
    assert!(f.set_health(b2, true));
    assert!((0..6).any(|i| send(&mut f, 3000 + i, SYN, 5) == Some(2)));
}

#[test]
fn a_drained_server_keeps_its_flows_but_a_down_one_does_not() {
    let mut s = spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0);
    let mut f = forwarder(s.clone());
    let a = send(&mut f, 1000, SYN, 0).unwrap();
    let b = send(&mut f, 1001, SYN, 0).unwrap();
    assert_ne!(a, b);
    let on_1 = if a == 1 { 1000 } else { 1001 };
    s.services[0].real_servers[0].weight = 0;
    f.apply(s, Millis(1)).unwrap();
    assert_eq!(send(&mut f, on_1, ACK, 2), Some(1), "weight 0 drains: the flow stays");
    assert!(f.set_health(0, false));
    assert_eq!(send(&mut f, on_1, ACK, 3), Some(2), "down: the flow moves");
}

#[test]
fn with_every_server_down_the_sorry_server_takes_new_flows_and_without_one_they_are_counted() {
    let mut s = spec(SchedKind::Wlc, Protocol::Tcp, 80, &[1, 1], 0);
    s.services[0].sorry_server = Some(rip(3));
    let mut f = forwarder(s.clone());
    answer_arp(&mut f, 3, Millis(0));
    assert_eq!(f.services()[0].backends.len(), 2, "the sorry server is not one of the real servers");
    let sorry = f.services()[0].sorry.unwrap();
    assert!(f.backends()[usize::from(sorry)].sorry);
    for i in 0..10 {
        assert_ne!(send(&mut f, 1000 + i, SYN, 1), Some(3), "no sorry while a server is up");
    }
    f.set_health(0, false);
    f.set_health(1, false);
    assert_eq!(send(&mut f, 2000, SYN, 2), Some(3));
    assert_eq!(send(&mut f, 1000, ACK, 2), Some(3), "a flow of a dead server moves to the sorry server too");
    assert!(f.counters().events(Event::SorryFlows) >= 1);
    f.set_health(1, true);
    assert_eq!(send(&mut f, 2001, SYN, 3), Some(2), "a server is back: new flows go to it");
    assert_eq!(send(&mut f, 2000, ACK, 3), Some(3), "flows already on the sorry server stay");

    // No sorry server: dropped, counted.
    s.services[0].sorry_server = None;
    let mut f = forwarder(s);
    f.set_health(0, false);
    f.set_health(1, false);
    assert_eq!(send(&mut f, 2000, SYN, 1), None);
    assert_eq!(f.counters().drops(DropReason::NoUsableServer), 1);
}

#[test]
fn a_down_servers_probe_replies_reach_the_control_path_though_they_come_from_the_vip() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1], 0));
    // The real server answers a DR-path probe: from VIP:80 to the DIP's probe port.
    let mut reply = ipv4(RS_SIDE_MAC, Ip::new(VIP, DIP, 6), &tcp(80, 61_001, SYN | ACK));
    assert_eq!(f.process(Side::Rs, &mut reply, Millis(0)), Verdict::Control);
    // From the VIP to the DIP on another port is still a reply on the wrong path.
    let mut stray = ipv4(RS_SIDE_MAC, Ip::new(VIP, DIP, 6), &tcp(80, 40_000, SYN | ACK));
    assert_eq!(f.process(Side::Rs, &mut stray, Millis(0)), Verdict::Drop(DropReason::SrcIsVip));
}

#[test]
fn a_client_sending_its_syn_again_makes_its_server_a_suspect_once() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    let s = send(&mut f, 1000, SYN, 0).unwrap();
    let mut suspects = Vec::new();
    f.take_suspects(|b| suspects.push(b));
    assert!(suspects.is_empty(), "one SYN is no sign of anything");
    assert_eq!(send(&mut f, 1000, SYN, 1000), Some(s), "the retransmitted SYN goes to the same server");
    assert_eq!(send(&mut f, 1000, SYN, 3000), Some(s));
    f.take_suspects(|b| suspects.push(b));
    let b = f.backends().iter().position(|b| b.rip == rip(s)).unwrap() as u16;
    assert_eq!(suspects, vec![b], "suspected once per flow, however often it retries");
    assert_eq!(send(&mut f, 1000, ACK, 3001), Some(s), "and the handshake may still complete");
}
