//! Fixtures for the runtime's unit tests: a config with one TCP service on port 80 of
//! 198.18.0.10 and one real server, 198.18.0.11; DIP 198.18.0.2.

use std::net::Ipv4Addr;

use netfw_core::model::{DataPlaneSpec, Forwarding, Protocol, RealServerSpec, SchedKind, ServiceSpec, Timeouts};

/// The DIP.
pub const DIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// The config, with a flow table of `flow_capacity`.
pub fn one_service(flow_capacity: u32) -> DataPlaneSpec {
    DataPlaneSpec {
        dip: DIP,
        dip_prefix: 24,
        vip_prefix: 24,
        gateway: None,
        services: vec![ServiceSpec {
            vip: Ipv4Addr::new(198, 18, 0, 10),
            proto: Protocol::Tcp,
            port: 80,
            port_last: 80,
            sched: SchedKind::Rr,
            persistence_s: 0,
            persistence_group: None,
            forwarding: Forwarding::Dr,
            real_servers: vec![RealServerSpec { addr: Ipv4Addr::new(198, 18, 0, 11), weight: 1 }],
            health: None,
            sorry_server: None,
        }],
        flow_capacity,
        timeouts: Timeouts::default(),
        arp_refresh_ms: 1_000,
        ha: None,
    }
}
