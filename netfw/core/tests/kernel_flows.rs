//! Handing confirmed flows to the kernel (the XDP program forwards their plain packets): which
//! flows are added and removed, when, and what the kernel's last-seen time does to expiry.

#![allow(clippy::cast_possible_truncation, reason = "fixture values are small")]

mod common;

use common::*;
use netfw_core::counters::Event;
use netfw_core::flow::{FlowKey, Idle};
use netfw_core::forward::{Forwarder, KernelOp, Side, Verdict};
use netfw_core::model::{Protocol, SchedKind, Timeouts};
use netfw_core::time::Millis;

fn ops(f: &mut Forwarder) -> Vec<KernelOp> {
    let mut v = Vec::new();
    f.drain_kernel_ops(|op| v.push(op));
    v
}

fn key(cport: u16, proto: u8, vport: u16) -> FlowKey {
    FlowKey::new(CLIENT, VIP, cport, vport, proto)
}

fn send(f: &mut Forwarder, frame: Vec<u8>, at: u64) -> u8 {
    let mut fr = frame;
    assert_eq!(f.process(Side::Vip, &mut fr, Millis(at)), Verdict::Forward);
    went_to(&fr)
}

#[test]
fn a_tcp_flow_is_handed_over_once_established_and_taken_back_at_its_fin() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    f.enable_kernel_flows();
    let rs = send(&mut f, client_tcp(40000, SYN), 0);
    send(&mut f, client_tcp(40000, ACK), 1);
    assert_eq!(ops(&mut f), [], "a handshake alone is not trusted (a spoofer can send one)");
    send(&mut f, client_tcp(40000, ACK), 2);
    assert_eq!(ops(&mut f), [KernelOp::Add(key(40000, 6, 80), u16::from(rs - 1))], "established: the kernel takes it");
    // The kernel forwards the plain packets; one that still reaches netfw (the kernel could
    // not take the flow) does not ask again.
    send(&mut f, client_tcp(40000, ACK), 3);
    assert_eq!(ops(&mut f), []);
    // Its FIN comes to netfw, which takes it back, even long after netfw last saw a packet of
    // it (the kernel forwarded them all; 900 s is netfw's own established timeout).
    assert_eq!(send(&mut f, client_tcp(40000, FIN | ACK), 1_000_000), rs);
    assert_eq!(ops(&mut f), [KernelOp::Remove(key(40000, 6, 80))]);
    send(&mut f, client_tcp(40000, ACK), 1_000_001);
    assert_eq!(ops(&mut f), [], "closing flows stay netfw's");
}

#[test]
fn without_kernel_flows_nothing_is_asked() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1], 0));
    for (flags, at) in [(SYN, 0), (ACK, 1), (ACK, 2), (ACK, 3)] {
        send(&mut f, client_tcp(1, flags), at);
    }
    assert_eq!(ops(&mut f), []);
}

#[test]
fn a_udp_flow_is_handed_over_at_its_second_packet() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Udp, 53, &[1], 0));
    f.enable_kernel_flows();
    let q = || ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 17), &udp(5353, 53, b"q"));
    send(&mut f, q(), 0);
    assert_eq!(ops(&mut f), []);
    send(&mut f, q(), 1);
    assert_eq!(ops(&mut f), [KernelOp::Add(key(5353, 17, 53), 0)]);
}

#[test]
fn a_kernel_flow_lives_while_the_kernel_forwards_it_and_goes_when_idle_there() {
    let mut s = spec(SchedKind::Rr, Protocol::Udp, 53, &[1, 1], 0);
    s.timeouts = Timeouts { udp_s: 30, ..Timeouts::default() };
    let mut f = forwarder(s);
    f.enable_kernel_flows();
    let q = || ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 17), &udp(5353, 53, b"q"));
    let rs = send(&mut f, q(), 0);
    send(&mut f, q(), 1_000);
    ops(&mut f);
    // netfw sees nothing more; at 40 s its own timer has run out, but the kernel forwarded a
    // packet at 35 s: the flow lives until 65 s.
    let k = key(5353, 17, 53);
    let mut asked = Vec::new();
    f.poll_timers_with(
        Millis(40_000),
        |_, _| true,
        |key| {
            asked.push(*key);
            Idle::SeenAt(Millis(35_000))
        },
    );
    assert_eq!(asked, [k], "the sweep asks the kernel about its expired kernel flow");
    assert_eq!(f.flows().len(), 1);
    assert_eq!(ops(&mut f), []);
    // A packet that reaches netfw meanwhile (e.g. a fragment) still finds the flow and its server.
    answer_arp(&mut f, 1, Millis(40_000));
    answer_arp(&mut f, 2, Millis(40_000));
    assert_eq!(send(&mut f, q(), 40_000), rs, "a kernel flow past netfw's own timer is still live");
    // Idle in the kernel too: gone, and its kernel entry with it.
    f.poll_timers_with(Millis(200_000), |_, _| true, |_| Idle::SeenAt(Millis(60_000)));
    assert_eq!(f.flows().len(), 0);
    assert_eq!(ops(&mut f), [KernelOp::Remove(k)]);
}

#[test]
fn the_kernel_counts_add_to_the_servers_and_a_refused_flow_is_counted() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    f.enable_kernel_flows();
    let before = f.backends()[1].packets;
    f.add_kernel_traffic(1, 10, 1_000);
    assert_eq!(f.backends()[1].packets, before + 10);
    assert_eq!(f.backends()[1].bytes, 1_000);
    assert_eq!(f.counters().events(Event::ForwardedInKernel), 10);
    assert_eq!(f.counters().events(Event::Forwarded), 10);
    f.kernel_refused(&key(1, 6, 80));
    assert_eq!(f.counters().events(Event::KernelFlowsRefused), 1);
}

#[test]
fn a_reload_that_moves_servers_takes_every_flow_back_and_a_mac_change_is_announced() {
    let mut f = forwarder(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0));
    f.enable_kernel_flows();
    for p in [1, 2] {
        send(&mut f, client_tcp(p, SYN), 0);
        send(&mut f, client_tcp(p, ACK), 1);
        send(&mut f, client_tcp(p, ACK), 2);
    }
    assert_eq!(ops(&mut f).len(), 2);
    // Same servers, new weights: backend indices keep their meaning; the flows stay in the kernel.
    let v = f.targets_version();
    let done = f.apply(spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 2], 0), Millis(3)).unwrap();
    assert!(!done.kernel_reset);
    assert_ne!(f.targets_version(), v, "the kernel's backends are rewritten after every reload");
    // A server goes: indices move, the kernel's map must be emptied, and the flow of the server
    // that stays is netfw's until handed over again at its next packet.
    let mut one = spec(SchedKind::Rr, Protocol::Tcp, 80, &[1, 1], 0);
    one.services[0].real_servers.remove(0);
    let done = f.apply(one, Millis(4)).unwrap();
    assert!(done.kernel_reset);
    assert_eq!(f.flows().len(), 1);
    send(&mut f, client_tcp(2, ACK), 5);
    assert_eq!(ops(&mut f), [KernelOp::Add(key(2, 6, 80), 0)], "handed over again, under its new index");
    // A real server's new MAC changes what the kernel must write.
    let v = f.targets_version();
    f.process(Side::Rs, &mut arp(2, [2, 0, 0, 0, 9, 9], rip(2), VIP_MAC, DIP), Millis(6));
    assert_ne!(f.targets_version(), v);
}
