//! Frame fixtures for the forwarder tests: real byte layouts, built by hand so every field
//! is visible in the test that uses it.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use netfw_core::forward::{Forwarder, Side, Verdict};
use netfw_core::model::{DataPlaneSpec, Forwarding, Protocol, RealServerSpec, SchedKind, ServiceSpec, Timeouts};
use netfw_core::time::Millis;

pub const VIP_MAC: [u8; 6] = [2, 0, 0, 0, 0xd0, 1];
pub const RS_SIDE_MAC: [u8; 6] = [2, 0, 0, 0, 0xd0, 2];
pub const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const DIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

pub fn rip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i)
}
pub fn rs_mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 1, i]
}

pub fn spec(sched: SchedKind, proto: Protocol, port: u16, weights: &[u16], persistence_s: u32) -> DataPlaneSpec {
    DataPlaneSpec {
        dip: DIP,
        dip_prefix: 24,
        vip_prefix: 24,
        gateway: None,
        services: vec![ServiceSpec {
            vip: VIP,
            proto,
            port,
            port_last: port,
            sched,
            persistence_s,
            persistence_group: None,
            forwarding: Forwarding::Dr,
            real_servers: weights.iter().enumerate().map(|(i, &w)| RealServerSpec { addr: rip(i as u8 + 1), weight: w }).collect(),
            health: None,
            sorry_server: None,
        }],
        flow_capacity: 1024,
        timeouts: Timeouts::default(),
        arp_refresh_ms: 5_000,
        ha: None,
    }
}

/// A two-arm forwarder whose real servers have all answered ARP.
pub fn forwarder(spec: DataPlaneSpec) -> Forwarder {
    let n = spec.services[0].real_servers.len();
    let mut f = Forwarder::new(spec, VIP_MAC, RS_SIDE_MAC, false, 42, Millis(0));
    for i in 1..=n as u8 {
        let mut a = arp(2, rs_mac(i), rip(i), RS_SIDE_MAC, DIP);
        assert_eq!(f.process(Side::Rs, &mut a, Millis(0)), Verdict::Control);
    }
    f
}

/// Real servers 1..=n answer ARP at `now` (keeps them fresh on a fake clock).
pub fn answer_arp(f: &mut Forwarder, n: u8, now: Millis) {
    for i in 1..=n {
        let mut a = arp(2, rs_mac(i), rip(i), RS_SIDE_MAC, DIP);
        assert_eq!(f.process(Side::Rs, &mut a, now), Verdict::Control);
    }
}

pub fn arp(op: u16, smac: [u8; 6], sip: Ipv4Addr, tmac: [u8; 6], tip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(if op == 1 { &[0xff; 6] } else { &tmac });
    f.extend_from_slice(&smac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&smac);
    f.extend_from_slice(&sip.octets());
    f.extend_from_slice(&tmac);
    f.extend_from_slice(&tip.octets());
    f
}

pub fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Options for `ipv4`.
#[derive(Clone, Copy)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ident: u16,
    pub more_frags: bool,
    pub frag_offset: u16,
    pub options: usize,
}

impl Ip {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Ip {
        Ip { src, dst, proto, ident: 7, more_frags: false, frag_offset: 0, options: 0 }
    }
}

pub fn ipv4(dst_mac: [u8; 6], ip: Ip, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&ROUTER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let hl = 20 + ip.options;
    let total = (hl + payload.len()) as u16;
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&ip.ident.to_be_bytes());
    let frag = (ip.frag_offset / 8) | if ip.more_frags { 0x2000 } else { 0 };
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, ip.proto, 0, 0]);
    h.extend_from_slice(&ip.src.octets());
    h.extend_from_slice(&ip.dst.octets());
    h.extend(std::iter::repeat_n(1u8, ip.options)); // NOP options
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&h);
    f.extend_from_slice(payload);
    f
}

pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t
}

pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(data);
    u
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

/// A client TCP frame to the VIP.
pub fn client_tcp(sport: u16, flags: u8) -> Vec<u8> {
    ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 6), &tcp(sport, 80, flags))
}

/// Which real server a forwarded frame went to (by its new destination MAC).
pub fn went_to(frame: &[u8]) -> u8 {
    assert_eq!(&frame[6..12], &RS_SIDE_MAC, "source MAC must be the egress NIC's");
    frame[5]
}
