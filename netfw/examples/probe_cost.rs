//! What health checks cost the worker that runs them: 1,000 checked real servers probed every
//! 500 ms (tcp, through the DR path), the prober called every millisecond as a busy
//! forwarding loop calls it (it works at most every 5 ms), over 20 simulated seconds. No server answers, so every probe's SYN waits out its
//! timeout, and every server also gets the doctor's probe of its RIP: the most work a
//! probe makes. Prints the CPU time per simulated second (the share of a core the worker gives
//! up to probing; the fast path itself never runs probe code: `netfw/bench/callgrind`).
//!
//! usage: probe_cost [SERVERS]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use netfw::health::{HealthBoard, Prober};
use netfw_core::forward::{Forwarder, Side};
use netfw_core::model::{
    CheckKind, DataPlaneSpec, Forwarding, HealthCheck, Protocol, RealServerSpec, SchedKind, ServiceSpec, Timeouts, Via,
};
use netfw_core::time::Millis;

const MAC: [u8; 6] = [2, 0, 0, 0, 0xd0, 1];

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rip = |i: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 4, 0)) + i);
    let per_service = 1000u32;
    let services = n.div_ceil(per_service);
    let spec = DataPlaneSpec {
        dip: Ipv4Addr::new(198, 18, 0, 2),
        dip_prefix: 16,
        vip_prefix: 24,
        gateway: None,
        services: (0..services)
            .map(|s| ServiceSpec {
                vip: Ipv4Addr::new(203, 0, 113, 10),
                proto: Protocol::Tcp,
                port: 80 + u16::try_from(s).unwrap_or(0),
                port_last: 80 + u16::try_from(s).unwrap_or(0),
                sched: SchedKind::Rr,
                persistence_s: 0,
                persistence_group: None,
                forwarding: Forwarding::Dr,
                real_servers: (s * per_service..((s + 1) * per_service).min(n))
                    .map(|i| RealServerSpec { addr: rip(i), weight: 1 })
                    .collect(),
                health: Some(HealthCheck {
                    kind: CheckKind::Tcp,
                    port: 80,
                    via: Via::Vip,
                    interval_ms: 500,
                    timeout_ms: 500,
                    rise: 2,
                    fall: 2,
                }),
                sorry_server: None,
            })
            .collect(),
        flow_capacity: 1024,
        timeouts: Timeouts::default(),
        arp_refresh_ms: 3_600_000,
        ha: None,
    };
    let mut fwd = Forwarder::new(spec.clone(), MAC, MAC, true, 1, Millis(0));
    // Every server has answered ARP: probes can be sent.
    for i in 0..n {
        let mut a = vec![0xff; 6];
        let [_, _, hi, lo] = i.to_be_bytes();
        let mac = [2, 0, 0, 1, hi, lo];
        a.extend_from_slice(&mac);
        a.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        a.extend_from_slice(&mac);
        a.extend_from_slice(&rip(i).octets());
        a.extend_from_slice(&MAC);
        a.extend_from_slice(&[198, 18, 0, 2]);
        fwd.process(Side::Vip, &mut a, Millis(0));
    }
    let board = Arc::new(HealthBoard::new(spec.backend_count()));
    let mut prober = Prober::new(&spec, MAC, Arc::clone(&board), 7, Millis(0));
    let seconds = 20u64;
    let mut frames = 0u64;
    let start = Instant::now();
    // The loop calls the prober every turn; a busy loop turns thousands of times a second, so
    // call it every simulated millisecond (it runs at most every `POLL_EVERY_MS`).
    for t in 0..seconds * 1000 {
        prober.poll(Millis(t), &fwd, |_| {
            frames += 1;
            true
        });
    }
    let cpu = start.elapsed();
    let per_s = cpu.as_secs_f64() / seconds as f64;
    println!(
        "prober: {n} servers probed every 500 ms (none answers): {} frames sent per second, {:.1} ms of CPU per second ({:.1} % of one core)",
        frames / seconds,
        per_s * 1000.0,
        per_s * 100.0
    );
}
