//! The director's own network side in IPVS mode: the kernel owns the NICs.
//!
//! - The DIP on the RS-facing NIC. The VIPs on the VIP-facing NIC: with the VIP-facing prefix
//!   in two-arm, but as /32 in one-arm, so the route to the real servers' subnet keeps the DIP
//!   as its source and ARP for real servers goes out from the DIP (seed 001, question 3).
//! - ARP sysctls: `arp_announce=2` (ARP requests carry the address of the outgoing NIC's
//!   subnet: the DIP, seed 001 question 1) and `arp_ignore=1` (answer only for addresses of the
//!   NIC the request came in on: the VIP is not answered on the RS-facing NIC in two-arm).
//! - IPVS sysctls for drain and failure: `expire_nodest_conn=1` (connections to a removed real
//!   server are dropped at once instead of hanging), `expire_quiescent_template=1` (a
//!   persistent client whose real server has weight 0 is rescheduled).

use std::net::Ipv4Addr;

use crate::config::{Config, Subnet};
use crate::model::DataPlaneSpec;
use crate::netconf;

/// The sysctls this mode sets, with why.
pub const SYSCTLS: &[(&str, &str, &str)] = &[
    ("net/ipv4/conf/all/arp_announce", "2", "ARP requests for real servers carry the DIP (seed 001 Q1)"),
    ("net/ipv4/conf/all/arp_ignore", "1", "answer ARP only for addresses of the incoming NIC"),
    ("net/ipv4/vs/expire_nodest_conn", "1", "drop connections to a removed real server at once"),
    ("net/ipv4/vs/expire_quiescent_template", "1", "reschedule persistent clients of a weight-0 server"),
];

/// The addresses the director holds in this mode: (NIC, address, prefix).
pub fn addresses(cfg: &Config, spec: &DataPlaneSpec) -> Vec<(String, Ipv4Addr, u8)> {
    let mut out = vec![(cfg.nics.rs_side.clone(), spec.dip, spec.dip_prefix)];
    let one_arm = cfg.one_arm();
    let dip_net = Subnet { addr: spec.dip, prefix: spec.dip_prefix };
    for v in spec.vips() {
        let prefix = if one_arm || dip_net.contains(v) { 32 } else { spec.vip_prefix };
        out.push((cfg.nics.vip_side.clone(), v, prefix));
    }
    out
}

/// Set up the director's side. Returns what was done, one line each.
pub fn setup(cfg: &Config, spec: &DataPlaneSpec) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    for (key, value, why) in SYSCTLS {
        let path = format!("/proc/sys/{key}");
        std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
        done.push(format!("sysctl {}={value} ({why})", key.replace('/', ".")));
    }
    // NAT needs the director to route the real servers' replies back (they use the DIP as
    // their gateway); DR and TUN do not (seed 002), so forwarding stays off for them.
    let nat = cfg.services.iter().any(|s| s.forwarding.as_deref() == Some("nat"));
    std::fs::write("/proc/sys/net/ipv4/ip_forward", if nat { "1" } else { "0" }).map_err(|e| format!("sysctl net.ipv4.ip_forward: {e}"))?;
    done.push(format!(
        "sysctl net.ipv4.ip_forward={} ({})",
        u8::from(nat),
        if nat { "NAT: replies return through the director" } else { "DR/TUN: the director routes nothing" }
    ));
    for (nic, addr, prefix) in addresses(cfg, spec) {
        netconf::add_address(&nic, addr, prefix)?;
        done.push(format!("address {addr}/{prefix} on {nic}"));
    }
    if let Some(gw) = spec.gateway {
        netconf::set_default_route(gw)?;
        done.push(format!("default route via {gw}"));
    }
    Ok(done)
}

/// Remove the addresses `setup` added (leaving IPVS mode).
pub fn teardown(cfg: &Config, spec: &DataPlaneSpec) -> Vec<String> {
    addresses(cfg, spec)
        .into_iter()
        .map(|(nic, addr, prefix)| match netconf::del_address(&nic, addr, prefix) {
            Ok(()) => format!("removed {addr}/{prefix} from {nic}"),
            Err(e) => e,
        })
        .collect()
}
