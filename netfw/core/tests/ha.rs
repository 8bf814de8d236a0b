//! One box of an HA pair: the VIPs live on the virtual MAC and only while it is the master;
//! the backup answers no ARP for them, forwards nothing and says so in its counters, and the
//! pair's adverts reach the control path.

#![allow(clippy::cast_possible_truncation, reason = "fixture values are small")]

mod common;

use common::*;
use netfw_core::counters::{DropReason, Event};
use netfw_core::forward::{Forwarder, Side, Verdict};
use netfw_core::ha::advert::{emit, Ours, VRRP_GROUP};
use netfw_core::model::{HaSpec, Protocol, SchedKind};
use netfw_core::time::Millis;

const VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 51];

fn paired() -> Forwarder {
    let mut s = spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0);
    s.ha = Some(HaSpec {
        peer: std::net::Ipv4Addr::new(198, 18, 0, 3),
        vrid: 51,
        priority: 200,
        advert_ms: 200,
        preempt: true,
        key: b"a shared secret".to_vec(),
    });
    forwarder(s)
}

fn garps(f: &mut Forwarder, now: Millis) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    f.poll_timers(now, |side, frame| {
        if side == Side::Vip {
            out.push(frame.to_vec());
        }
        true
    });
    out
}

#[test]
fn a_backup_is_silent_and_forwards_nothing_a_master_serves_on_the_virtual_mac() {
    let mut f = paired();
    assert!(!f.serving(), "a box joins its pair as backup");
    let who_has_vip = || arp(1, ROUTER_MAC, std::net::Ipv4Addr::new(203, 0, 113, 1), [0; 6], VIP);
    assert_eq!(f.process(Side::Vip, &mut who_has_vip(), Millis(1)), Verdict::Drop(DropReason::Standby));
    let mut syn = ipv4(VMAC, Ip::new(CLIENT, VIP, 6), &tcp(40_000, 80, SYN));
    assert_eq!(f.process(Side::Vip, &mut syn.clone(), Millis(1)), Verdict::Drop(DropReason::Standby));
    let mut to_nic = client_tcp(40_000, SYN);
    assert_eq!(f.process(Side::Vip, &mut to_nic, Millis(1)), Verdict::Drop(DropReason::Standby), "nor at its own MAC");
    assert!(garps(&mut f, Millis(2)).is_empty(), "a backup announces nothing");

    // The peer's adverts reach the control path (the HA driver) on the VIP-facing NIC only.
    let mut payload = [0u8; 128];
    let n = emit(
        &mut payload,
        std::net::Ipv4Addr::new(198, 18, 0, 3),
        &Ours { vrid: 51, priority: 100, interval_cs: 20, vips: &[VIP], sequence: 1, digest: 0 },
        b"a shared secret",
    )
    .unwrap();
    let mut advert = ipv4([1, 0, 0x5e, 0, 0, 18], Ip::new(std::net::Ipv4Addr::new(198, 18, 0, 3), VRRP_GROUP, 112), &payload[..n]);
    assert_eq!(f.process(Side::Vip, &mut advert.clone(), Millis(3)), Verdict::Control);
    assert_eq!(f.process(Side::Rs, &mut advert, Millis(3)), Verdict::Drop(DropReason::NotOurAddress));

    // Master: gratuitous ARP from the virtual MAC at once; ARP for the VIP goes to the stack;
    // clients' frames to the virtual MAC are forwarded (fast path included).
    f.set_serving(true, Millis(10));
    let g = garps(&mut f, Millis(10));
    assert_eq!(g.len(), 1, "one VIP, one announcement");
    assert_eq!(&g[0][6..12], &VMAC, "from the virtual MAC");
    assert_eq!(&g[0][22..28], &VMAC, "the VIP is at the virtual MAC");
    assert_eq!(f.process(Side::Vip, &mut who_has_vip(), Millis(11)), Verdict::Control);
    assert_eq!(f.process(Side::Vip, &mut syn, Millis(11)), Verdict::Forward);
    let mut ack = ipv4(VMAC, Ip::new(CLIENT, VIP, 6), &tcp(40_000, 80, ACK));
    assert_eq!(f.process(Side::Vip, &mut ack, Millis(12)), Verdict::Forward);
    // The peer announcing the VIP on the virtual MAC is the pair, not a thief.
    let mut peer_garp = arp(1, VMAC, VIP, [0; 6], VIP);
    let _ = f.process(Side::Vip, &mut peer_garp, Millis(13));
    assert_eq!(f.counters().events(Event::VipConflict), 0);

    // Back to backup: silent again, and the flow's next packet is not forwarded.
    f.set_serving(false, Millis(20));
    let mut ack = ipv4(VMAC, Ip::new(CLIENT, VIP, 6), &tcp(40_000, 80, ACK));
    assert_eq!(f.process(Side::Vip, &mut ack, Millis(21)), Verdict::Drop(DropReason::Standby));
    assert!(garps(&mut f, Millis(1_500)).is_empty());
    assert_eq!(f.counters().drops(DropReason::Standby), 4);
}

#[test]
fn without_a_pair_nothing_changes_and_adverts_are_not_ours() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1], 0));
    assert!(f.serving());
    f.set_serving(false, Millis(1));
    assert!(f.serving(), "only a pair has a backup");
    let mut advert = ipv4([1, 0, 0x5e, 0, 0, 18], Ip::new(std::net::Ipv4Addr::new(198, 18, 0, 3), VRRP_GROUP, 112), &[0; 40]);
    assert_eq!(f.process(Side::Vip, &mut advert, Millis(2)), Verdict::Drop(DropReason::NotOurAddress));
    assert_eq!(f.process(Side::Vip, &mut client_tcp(40_000, SYN), Millis(3)), Verdict::Forward);
}
