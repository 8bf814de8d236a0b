//! Services of a port range and of every port, and persistence groups (seed 001's FTP: the
//! control port and the passive range keep a client on one real server), in one forwarder
//! and across the forwarders of a box.

#![allow(clippy::cast_possible_truncation, reason = "fixture values are small")]

mod common;

use std::collections::BTreeSet;

use common::*;
use netfw_core::counters::DropReason;
use netfw_core::forward::{Forwarder, Plan, Side, Verdict};
use netfw_core::model::{DataPlaneSpec, Protocol, SchedKind};
use netfw_core::time::Millis;

const SYN: u8 = 0x02;

/// Three real servers, rr: port 21 and the range 10000–20000, grouped or not, and every port
/// of VIP .11.
fn ftp_spec(group: bool) -> DataPlaneSpec {
    let mut s = spec(SchedKind::Rr, Protocol::Tcp, 21, &[1, 1, 1], 300);
    let mut passive = s.services[0].clone();
    (passive.port, passive.port_last) = (10000, 20000);
    if group {
        s.services[0].persistence_group = Some("ftp".into());
        passive.persistence_group = Some("ftp".into());
    }
    let mut all = s.services[0].clone();
    (all.vip, all.port, all.port_last, all.persistence_s, all.persistence_group) =
        (std::net::Ipv4Addr::new(203, 0, 113, 11), 0, u16::MAX, 0, None);
    s.services.extend([passive, all]);
    s
}

fn syn_from(client: u8, sport: u16, vip: std::net::Ipv4Addr, dport: u16) -> Vec<u8> {
    ipv4(VIP_MAC, Ip::new(std::net::Ipv4Addr::new(198, 51, 100, client), vip, 6), &tcp(sport, dport, SYN))
}

/// Where `client`'s connection to `dport` goes (None: dropped).
fn send(f: &mut Forwarder, client: u8, sport: u16, vip: std::net::Ipv4Addr, dport: u16, now: u64) -> Option<u8> {
    let mut s = syn_from(client, sport, vip, dport);
    (f.process(Side::Vip, &mut s, Millis(now)) == Verdict::Forward).then(|| went_to(&s))
}

#[test]
fn a_port_range_spreads_clients_by_its_scheduler_and_ends_at_its_last_port() {
    let mut f = forwarder(ftp_spec(false));
    let servers: Vec<Option<u8>> = (0..6).map(|c| send(&mut f, 10 + c, 40000, VIP, 10000 + u16::from(c) * 2000, 0)).collect();
    assert_eq!(servers, [Some(1), Some(2), Some(3), Some(1), Some(2), Some(3)], "rr over the range's clients");
    assert!(send(&mut f, 1, 40001, VIP, 20000, 0).is_some(), "the last port is in");
    let mut out = syn_from(1, 40002, VIP, 20001);
    assert_eq!(f.process(Side::Vip, &mut out, Millis(0)), Verdict::Drop(DropReason::NoService), "one past the range");
    let mut below = syn_from(1, 40003, VIP, 9999);
    assert_eq!(f.process(Side::Vip, &mut below, Millis(0)), Verdict::Drop(DropReason::NoService));
}

#[test]
fn a_service_of_every_port_forwards_any_port_of_its_vip_only() {
    let mut f = forwarder(ftp_spec(false));
    let vip2 = std::net::Ipv4Addr::new(203, 0, 113, 11);
    let reached: BTreeSet<u8> =
        [1u16, 22, 80, 443, 8080, 65535].iter().filter_map(|&p| send(&mut f, 7, 30000 + p % 1000, vip2, p, 0)).collect();
    assert_eq!(reached.len(), 3, "every port forwarded, spread by rr: {reached:?}");
    let mut udp = ipv4(VIP_MAC, Ip::new(CLIENT, vip2, 17), &udp(5000, 53, b"q"));
    assert_eq!(f.process(Side::Vip, &mut udp, Millis(0)), Verdict::Drop(DropReason::NoService), "tcp only");
}

#[test]
fn a_persistence_group_keeps_ftp_data_on_the_control_connections_server() {
    let mut grouped = forwarder(ftp_spec(true));
    let mut apart = forwarder(ftp_spec(false));
    // Another client's control connection that opened no data connection (a failed login)
    // puts the two services' round robins one apart, as interleaved clients do.
    send(&mut grouped, 99, 50000, VIP, 21, 0);
    send(&mut apart, 99, 50000, VIP, 21, 0);
    let (mut kept, mut split) = (0, 0);
    for c in 0..30u8 {
        // A client's control connection, then its passive data connection to a port of the range.
        let data_port = 10000 + u16::from(c) * 331;
        let ctl = send(&mut grouped, 20 + c, 50000, VIP, 21, 0);
        let data = send(&mut grouped, 20 + c, 50001, VIP, data_port, 0);
        kept += usize::from(ctl.is_some() && ctl == data);
        let ctl = send(&mut apart, 20 + c, 50000, VIP, 21, 0);
        let data = send(&mut apart, 20 + c, 50001, VIP, data_port, 0);
        split += usize::from(ctl != data);
    }
    assert_eq!(kept, 30, "grouped: every data connection went to its control connection's server");
    assert_eq!(split, 30, "without the group the two are scheduled apart");
}

#[test]
fn a_groups_template_survives_a_reload_and_follows_the_server_not_the_index() {
    let mut f = forwarder(ftp_spec(true));
    let first = send(&mut f, 40, 50000, VIP, 21, 0).unwrap();
    // A reload that drops another server (indices shift) keeps the client on its server.
    let mut next = ftp_spec(true);
    let other = (1..=3).find(|&i| i != first).unwrap();
    for s in &mut next.services {
        s.real_servers.retain(|r| r.addr != rip(other));
    }
    let plan = Plan::new(f.spec(), next, 7).unwrap();
    f.install(plan, Millis(1));
    assert_eq!(send(&mut f, 40, 50002, VIP, 15000, 2), Some(first));
}

#[test]
fn forwarders_sharing_templates_keep_a_client_whichever_sees_its_connections() {
    // RSS puts a client's control and data connections on different queues, so on different
    // forwarders: with the box's templates shared, the group still holds.
    let mut a = forwarder(ftp_spec(true));
    let mut b = forwarder(ftp_spec(true));
    b.share_templates(a.templates());
    for c in 0..10u8 {
        let ctl = send(&mut a, 60 + c, 50000, VIP, 21, 0);
        // b's rr starts where a's did: without the shared templates most would differ.
        let data = send(&mut b, 60 + c, 50001, VIP, 12345, 0);
        assert_eq!(ctl, data, "client {c}");
    }
}

#[test]
fn a_template_lives_while_its_clients_connections_do_as_ipvs_keeps_it() {
    let mut f = forwarder(ftp_spec(true));
    // The two services' round robins one apart (see above): a fresh pick for the range would
    // not be the control connection's server.
    send(&mut f, 99, 50000, VIP, 21, 0);
    let server = send(&mut f, 41, 50000, VIP, 21, 0).unwrap();
    // The FTP session sits on its control connection, idle but for keepalives, for 1000 s:
    // more than three times the group's 300 s, with no new connection to renew the template.
    let client = std::net::Ipv4Addr::new(198, 51, 100, 41);
    // The handshake's ACK, then a packet that confirms the connection (established).
    let mut ack = ipv4(VIP_MAC, Ip::new(client, VIP, 6), &tcp(50000, 21, 0x10));
    assert_eq!(f.process(Side::Vip, &mut ack, Millis(0)), Verdict::Forward);
    for t in (0..=1_000_000).step_by(50_000) {
        answer_arp(&mut f, 3, Millis(t));
        let mut ack = ipv4(VIP_MAC, Ip::new(client, VIP, 6), &tcp(50000, 21, 0x10));
        assert_eq!(f.process(Side::Vip, &mut ack, Millis(t)), Verdict::Forward, "at {t} ms");
        assert_eq!(went_to(&ack), server, "at {t} ms");
        f.poll_timers(Millis(t), |_, _| true);
    }
    // Its next passive data connection still goes to the control connection's server.
    assert_eq!(send(&mut f, 41, 50003, VIP, 12345, 1_000_000), Some(server));
    // A client whose connections all ended keeps its template for the persistence, not longer.
    let other = send(&mut f, 42, 50000, VIP, 21, 1_000_000).unwrap();
    answer_arp(&mut f, 3, Millis(1_200_000));
    assert_eq!(send(&mut f, 42, 50001, VIP, 12346, 1_200_000), Some(other), "within 300 s of its last connection");
    // Its flows ended (unanswered SYNs: 60 s); 300 s after that its template is gone.
    f.poll_timers(Millis(1_300_000), |_, _| true);
    let mut left = Vec::new();
    f.templates().for_each(Millis(1_560_001), |t| left.push(t.client));
    assert!(!left.contains(&std::net::Ipv4Addr::new(198, 51, 100, 42)), "{left:?}");
    assert!(left.contains(&client), "the session's template is held by its live control connection: {left:?}");
}

#[test]
fn a_flow_synced_from_the_peer_brings_its_clients_template() {
    use netfw_core::flow::{FlowKey, FlowState};
    use netfw_core::ha::sync::SyncEntry;
    // The master sent a client's FTP control connection to rs3; this box (the backup) adopts it.
    let mut backup = forwarder(ftp_spec(true));
    let client = std::net::Ipv4Addr::new(198, 51, 100, 43);
    let control = SyncEntry { key: FlowKey::new(client, VIP, 50000, 21, 6), rip: rip(3), state: FlowState::Established };
    assert!(backup.adopt_synced(control, Millis(0)));
    // After the takeover, the client's passive data connection goes to rs3 too (a fresh round
    // robin would start at rs1).
    assert_eq!(send(&mut backup, 43, 50001, VIP, 14000, 1_000), Some(3));
    assert_eq!(send(&mut backup, 44, 50001, VIP, 14000, 1_000), Some(1), "another client is scheduled");
}
