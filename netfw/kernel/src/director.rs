//! The director's own network side in IPVS mode: the kernel owns the NICs.
//!
//! - The DIP on the RS-facing NIC. The VIPs on the VIP-facing NIC: with the VIP-facing prefix
//!   in two-arm, but as /32 in one-arm, so the route to the real servers' subnet keeps the DIP
//!   as its source and ARP for real servers goes out from the DIP (seed 001, question 3).
//! - ARP sysctls: `arp_announce=2` (ARP requests carry the address of the outgoing NIC's
//!   subnet: the DIP, seed 001 question 1) and `arp_ignore=1` (answer only for addresses of the
//!   NIC the request came in on: the VIP is not answered on the RS-facing NIC in two-arm).
//! - One of an HA pair: the VIPs live on a macvlan `vrrp<vrid>` over the VIP-facing NIC with
//!   the virtual MAC, created down: `netfw ipvs watch` runs the election and brings it up only
//!   while this box is master (the kernel then answers ARP for the VIPs from the virtual MAC, and
//!   announces them as it comes up: `arp_notify`). The kernel's connection sync daemon runs as
//!   master and as backup on the RS-facing NIC with the vrid as its sync ID.
//! - IPVS sysctls for drain and failure: `expire_nodest_conn=1` (connections to a removed real
//!   server are dropped at once instead of hanging), `expire_quiescent_template=1` (a
//!   persistent client whose real server has weight 0 is rescheduled).

use std::fmt;
use std::net::Ipv4Addr;

use director_config::{Config, Subnet};
use netfw_core::model::{DataPlaneSpec, Forwarding};

use crate::rtnl::{self, RtnlError};

/// The sysctls this mode sets, with why.
pub const SYSCTLS: &[(&str, &str, &str)] = &[
    ("net/ipv4/conf/all/arp_announce", "2", "ARP requests for real servers carry the DIP (seed 001 Q1)"),
    ("net/ipv4/conf/all/arp_ignore", "1", "answer ARP only for addresses of the incoming NIC"),
    ("net/ipv4/vs/expire_nodest_conn", "1", "drop connections to a removed real server at once"),
    ("net/ipv4/vs/expire_quiescent_template", "1", "reschedule persistent clients of a weight-0 server"),
];

/// Why the director's side could not be set up.
#[derive(Debug)]
pub enum DirectorError {
    /// A sysctl could not be written.
    Sysctl {
        /// Its name, dotted.
        key: String,
        /// The value.
        value: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// An address or route was refused.
    Net(RtnlError),
}

impl fmt::Display for DirectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectorError::Sysctl { key, value, error } => write!(f, "sysctl {key}={value}: {error}"),
            DirectorError::Net(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DirectorError {}

fn sysctl(key: &str, value: &str) -> Result<(), DirectorError> {
    std::fs::write(format!("/proc/sys/{key}"), value).map_err(|error| DirectorError::Sysctl {
        key: key.replace('/', "."),
        value: value.to_string(),
        error,
    })
}

/// The link the VIPs of an HA pair live on (`vrrp<vrid>`), if `spec` has a pair.
pub fn pair_link(spec: &DataPlaneSpec) -> Option<String> {
    spec.ha.as_ref().map(|h| format!("vrrp{}", h.vrid))
}

/// The addresses the director holds in this mode: (NIC, address, prefix).
pub fn addresses(cfg: &Config, spec: &DataPlaneSpec) -> Vec<(String, Ipv4Addr, u8)> {
    let mut out = vec![(cfg.nics.rs_side.clone(), spec.dip, spec.dip_prefix)];
    let vip_nic = pair_link(spec).unwrap_or_else(|| cfg.nics.vip_side.clone());
    let one_arm = cfg.one_arm();
    let dip_net = Subnet::new(spec.dip, spec.dip_prefix);
    for v in spec.vips() {
        let prefix = if one_arm || dip_net.is_some_and(|n| n.contains(v)) { 32 } else { spec.vip_prefix };
        out.push((vip_nic.clone(), v, prefix));
    }
    out
}

/// Set up the director's side; each thing done is reported to `log` as it happens.
pub fn setup(cfg: &Config, spec: &DataPlaneSpec, log: &mut dyn FnMut(String)) -> Result<(), DirectorError> {
    for (key, value, why) in SYSCTLS {
        sysctl(key, value)?;
        log(format!("sysctl {}={value} ({why})", key.replace('/', ".")));
    }
    // NAT needs the director to route the real servers' replies back (they use the DIP as
    // their gateway); DR and TUN do not (seed 002), so forwarding stays off for them.
    let nat = spec.services.iter().any(|s| s.forwarding == Forwarding::Nat);
    sysctl("net/ipv4/ip_forward", if nat { "1" } else { "0" })?;
    log(format!(
        "sysctl net.ipv4.ip_forward={} ({})",
        u8::from(nat),
        if nat { "NAT: replies return through the director" } else { "DR/TUN: the director routes nothing" }
    ));
    // Another pair's link (its vrid changed, or the pair is gone) would still answer for VIPs.
    let keep = pair_link(spec);
    for old in stale_pair_links(keep.as_deref()) {
        rtnl::del_link(&old).map_err(DirectorError::Net)?;
        log(format!("removed the HA pair's old link {old}"));
    }
    if let (Some(h), Some(link)) = (&spec.ha, &keep) {
        if rtnl::ifindex(link).is_err() {
            rtnl::add_macvlan(link, &cfg.nics.vip_side, h.virtual_mac()).map_err(DirectorError::Net)?;
            log(format!(
                "HA: macvlan {link} on {} with the virtual MAC {}, down until this box is master",
                cfg.nics.vip_side,
                fmt_mac(&h.virtual_mac())
            ));
        }
        sysctl(&format!("net/ipv4/conf/{link}/arp_notify"), "1")?;
    }
    for (nic, addr, prefix) in addresses(cfg, spec) {
        rtnl::add_address(&nic, addr, prefix).map_err(DirectorError::Net)?;
        log(format!("address {addr}/{prefix} on {nic}"));
    }
    if let Some(gw) = spec.gateway {
        let dip_net = Subnet::new(spec.dip, spec.dip_prefix);
        if spec.ha.is_some() && !dip_net.is_some_and(|n| n.contains(gw)) {
            // The VIPs' link (with the gateway's subnet) is down on a backup.
            rtnl::set_default_route_onlink(gw, &cfg.nics.vip_side).map_err(DirectorError::Net)?;
            log(format!("default route via {gw} on {} (onlink)", cfg.nics.vip_side));
        } else {
            rtnl::set_default_route(gw).map_err(DirectorError::Net)?;
            log(format!("default route via {gw}"));
        }
    }
    Ok(())
}

/// Remove the addresses `setup` added (leaving IPVS mode), and an HA pair's link, reporting
/// each to `log`.
pub fn teardown(cfg: &Config, spec: &DataPlaneSpec, log: &mut dyn FnMut(String)) {
    for (nic, addr, prefix) in addresses(cfg, spec) {
        log(match rtnl::del_address(&nic, addr, prefix) {
            Ok(()) => format!("removed {addr}/{prefix} from {nic}"),
            Err(e) => e.to_string(),
        });
    }
    for link in stale_pair_links(None) {
        log(match rtnl::del_link(&link) {
            Ok(()) => format!("removed the HA pair's link {link}"),
            Err(e) => e.to_string(),
        });
    }
}

/// The `vrrp<n>` links this mode made, but `keep`.
fn stale_pair_links(keep: Option<&str>) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.strip_prefix("vrrp").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())))
        .filter(|n| Some(n.as_str()) != keep)
        .collect()
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
