//! Fast-path micro-benchmark: N flows opened (SYN), then R rounds of one established packet
//! per flow, through `Forwarder::process` exactly as the NIC loop calls it. Prints the time per
//! packet; `bench/callgrind` runs it twice under callgrind and prints instructions per packet.
//!
//! usage: fastpath [ROUNDS] [FLOWS] [PERSISTENCE_S]
//!
//! With a persistence time the service keeps each of the 200 clients on its server: a new
//! flow looks up and renews the client's template in the box's shared table.
#![allow(clippy::cast_possible_truncation, reason = "benchmark fixture values are small")]

use std::net::Ipv4Addr;
use std::time::Instant;

use netfw_core::forward::{Forwarder, Side, Verdict};
use netfw_core::model::{DataPlaneSpec, Forwarding, Protocol, RealServerSpec, SchedKind, ServiceSpec, Timeouts};
use netfw_core::time::Millis;

const VIP_MAC: [u8; 6] = [2, 0, 0, 0, 0xd0, 1];
const RS_MAC: [u8; 6] = [2, 0, 0, 0, 0xd0, 2];

fn frame(client: u32, sport: u16, flags: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(74);
    f.extend_from_slice(&VIP_MAC);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0xfe, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 60, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&client.to_be_bytes());
    ip.extend_from_slice(&[203, 0, 113, 10]);
    let mut s: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 40];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 0xa0;
    tcp[13] = flags;
    f.extend_from_slice(&tcp);
    f
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rounds = args.first().copied().unwrap_or(100);
    let flows = args.get(1).copied().unwrap_or(10_000) as u32;
    let persistence_s = args.get(2).copied().unwrap_or(0) as u32;
    let spec = DataPlaneSpec {
        dip: Ipv4Addr::new(198, 18, 0, 2),
        dip_prefix: 24,
        vip_prefix: 24,
        gateway: None,
        services: vec![ServiceSpec {
            vip: Ipv4Addr::new(203, 0, 113, 10),
            proto: Protocol::Tcp,
            port: 80,
            port_last: 80,
            sched: SchedKind::Wlc,
            persistence_s,
            persistence_group: None,
            forwarding: Forwarding::Dr,
            real_servers: (1..=8).map(|i| RealServerSpec { addr: Ipv4Addr::new(198, 18, 0, 10 + i), weight: 1 }).collect(),
            health: None,
            sorry_server: None,
        }],
        flow_capacity: 1 << 20,
        timeouts: Timeouts::default(),
        arp_refresh_ms: 3_600_000,
        ha: None,
    };
    let mut f = Forwarder::new(spec, VIP_MAC, RS_MAC, false, 7, Millis(0));
    for i in 1..=8u8 {
        let mut a =
            [RS_MAC.to_vec(), vec![2, 0, 0, 0, 1, i, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2, 2, 0, 0, 0, 1, i, 198, 18, 0, 10 + i]].concat();
        a.extend_from_slice(&RS_MAC);
        a.extend_from_slice(&[198, 18, 0, 2]);
        f.process(Side::Rs, &mut a, Millis(0));
    }
    let client = |i: u32| 0xc633_6400u32 + (i % 200);
    let port = |i: u32| 1024 + (i / 200) as u16;
    let t0 = Instant::now();
    for i in 0..flows {
        let mut s = frame(client(i), port(i), 0x02);
        assert_eq!(f.process(Side::Vip, &mut s, Millis(1)), Verdict::Forward);
    }
    let new_ns = t0.elapsed().as_nanos() as f64 / f64::from(flows);
    let mut acks: Vec<Vec<u8>> = (0..flows).map(|i| frame(client(i), port(i), 0x10)).collect();
    let t1 = Instant::now();
    let mut fwd = 0u64;
    for r in 0..rounds {
        for a in &mut acks {
            a[0..6].copy_from_slice(&VIP_MAC); // the previous round rewrote it
            if f.process(Side::Vip, a, Millis(2 + r)) == Verdict::Forward {
                fwd += 1;
            }
        }
    }
    let n = rounds * u64::from(flows);
    let hit_ns = t1.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("flows {flows}, rounds {rounds}: new flow {new_ns:.0} ns, established packet {hit_ns:.0} ns ({:.2} Mpps on one core), forwarded {fwd}/{n}", 1e3 / hit_ns);
    println!("flow table: {} bytes per flow at capacity {}", f.flows().bytes_per_flow(), f.flows().capacity());
}
