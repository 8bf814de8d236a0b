//! Forwarders that split one box's flows (one per group of receive queues): what one learns
//! from ARP reaches the other, only one announces, and lc/wlc schedule by the box's counts.

#![allow(clippy::cast_possible_truncation, reason = "fixture values are small")]

mod common;

use std::sync::Arc;

use common::*;
use netfw_core::counters::Event;
use netfw_core::forward::{Forwarder, SharedLoad, Side, Verdict};
use netfw_core::model::{Protocol, SchedKind};
use netfw_core::time::Millis;

/// Two forwarders over one config: the first announces, the second stays quiet; both relay
/// what ARP they see.
fn pair(sched: SchedKind, servers: usize) -> (Forwarder, Forwarder) {
    let s = spec(sched, Protocol::Tcp, 80, &vec![1; servers], 0);
    let mut a = Forwarder::new(s.clone(), VIP_MAC, RS_SIDE_MAC, false, 42, Millis(0));
    let mut b = Forwarder::new(s, VIP_MAC, RS_SIDE_MAC, false, 42, Millis(0));
    a.enable_arp_relay();
    b.enable_arp_relay();
    b.stay_quiet();
    (a, b)
}

/// Pass what `from` saw to `to`.
fn relay(from: &mut Forwarder, to: &mut Forwarder, now: Millis) {
    from.take_arp_seen(|s| to.learn_arp(s, now));
}

#[test]
fn a_real_servers_arp_reply_on_one_queue_teaches_both_forwarders_counted_once() {
    let (mut a, mut b) = pair(SchedKind::Rr, 1);
    // The first forwarder asks; the reply comes in on the second one's queue.
    let mut asked = 0;
    a.poll_timers(Millis(0), |side, _| {
        asked += usize::from(side == Side::Rs);
        true
    });
    let mut quiet = 0;
    b.poll_timers(Millis(0), |_, _| {
        quiet += 1;
        true
    });
    assert_eq!((asked, quiet), (1, 0), "only the announcing forwarder sends ARP");
    let mut reply = arp(2, rs_mac(1), rip(1), RS_SIDE_MAC, DIP);
    assert_eq!(b.process(Side::Rs, &mut reply, Millis(1)), Verdict::Control);
    let mut syn = client_tcp(1000, SYN);
    assert!(matches!(a.process(Side::Vip, &mut syn, Millis(2)), Verdict::Drop(_)), "not learned yet");
    relay(&mut b, &mut a, Millis(2));
    let mut syn = client_tcp(1001, SYN);
    assert_eq!(a.process(Side::Vip, &mut syn, Millis(3)), Verdict::Forward);
    assert_eq!(went_to(&syn), 1);
    let learned = a.counters().events(Event::RsMacChanged) + b.counters().events(Event::RsMacChanged);
    assert_eq!(learned, 1, "the box learned one MAC once");
    // Nothing is relayed twice.
    relay(&mut b, &mut a, Millis(4));
    assert_eq!(a.counters().events(Event::RsMacChanged), 0);
}

#[test]
fn a_vip_claimed_on_the_quiet_forwarders_queue_is_defended_by_the_announcing_one() {
    let (mut a, mut b) = pair(SchedKind::Rr, 1);
    for t in [0, 1_000, 2_000, 3_000] {
        a.poll_timers(Millis(t), |_, _| true); // the start-up announcements are done
    }
    let rogue = [2, 0, 0, 0, 9, 9];
    let mut claim = arp(1, rogue, VIP, [0; 6], std::net::Ipv4Addr::new(203, 0, 113, 1));
    b.process(Side::Vip, &mut claim, Millis(10_000));
    relay(&mut b, &mut a, Millis(10_000));
    let mut garp = 0;
    a.poll_timers(Millis(10_001), |side, f| {
        garp += usize::from(side == Side::Vip && f[28..32] == VIP.octets());
        true
    });
    assert_eq!(garp, 1, "the announcing forwarder answers a claim another one saw");
    assert_eq!(a.counters().events(Event::VipConflict) + b.counters().events(Event::VipConflict), 1);
}

/// Clients `ports` open connections through `f` (SYN then ACK); where each went.
fn connect(f: &mut Forwarder, ports: std::ops::Range<u16>) -> Vec<u8> {
    ports
        .map(|p| {
            let mut s = client_tcp(p, SYN);
            assert_eq!(f.process(Side::Vip, &mut s, Millis(5)), Verdict::Forward);
            f.process(Side::Vip, &mut client_tcp(p, ACK), Millis(5));
            went_to(&s)
        })
        .collect()
}

/// Three connections on the first forwarder's queue, then one on the second's: how many
/// each server got, with and without a shared board.
fn three_then_one(board: bool) -> (usize, usize, Forwarder) {
    let (mut a, mut b) = pair(SchedKind::Lc, 2);
    answer_arp(&mut a, 2, Millis(0));
    answer_arp(&mut b, 2, Millis(0));
    if board {
        let board = Arc::new(SharedLoad::new(2));
        a.share_load(board.clone());
        b.share_load(board);
    }
    let mut all = connect(&mut a, 0..3);
    all.extend(connect(&mut b, 100..101));
    let count = |s: u8| all.iter().filter(|&&x| x == s).count();
    (count(1), count(2), b)
}

#[test]
fn lc_balances_the_boxs_connections_not_each_forwarders_share() {
    // Alone, the second forwarder sees no connections and picks as if the box were idle.
    let (one, two, _) = three_then_one(false);
    assert_eq!((one, two), (3, 1), "without the board the second forwarder adds to the busier server");
    let (one, two, mut b) = three_then_one(true);
    assert_eq!((one, two), (2, 2), "with it, the box's counts decide");
    // A reset takes the flow off the board too; each forwarder's own counts stay its own.
    let before: u32 = b.backends().iter().map(|x| x.active).sum();
    b.process(Side::Vip, &mut client_tcp(100, RST), Millis(6));
    let own: u32 = b.backends().iter().map(|x| x.active).sum();
    assert_eq!((before, own), (1, 0));
}

#[test]
fn a_board_counts_what_a_forwarder_had_before_it_joined() {
    // After a reload each forwarder puts its flows on the new board: nothing is forgotten.
    let (mut a, _) = pair(SchedKind::Lc, 2);
    answer_arp(&mut a, 2, Millis(0));
    connect(&mut a, 0..3);
    let board = Arc::new(SharedLoad::new(2));
    a.share_load(board.clone());
    assert_eq!(board.get(0).unwrap().0 + board.get(1).unwrap().0, 3);
}
