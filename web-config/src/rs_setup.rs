//! What each real server needs, as commands to paste into its shell, from the seeds:
//! DR (seeds 000, 001, 003): never answer ARP for the VIP nor announce it (`arp_ignore=1`,
//! `arp_announce=2`, kept in a `sysctl.d` file), the VIP on `lo` as /32, the router (never the
//! DIP) as gateway. TUN (seed 002): the same ARP rules, `tunl0` up with the VIP, `rp_filter=0`
//! on `tunl0` and `all` (the kernel uses the larger of the two). NAT: the DIP as gateway.

use std::collections::BTreeMap;

use director_config::{Config, Forwarding};
use serde::Serialize;

/// One real server's instructions.
#[derive(Debug, Serialize)]
pub struct Setup {
    /// RIP.
    pub address: String,
    /// How the director reaches it.
    pub forwarding: Forwarding,
    /// The VIPs it serves.
    pub vips: Vec<String>,
    /// Shell commands, ready to copy.
    pub commands: String,
}

const ARP: &str = "net.ipv4.conf.all.arp_ignore = 1\nnet.ipv4.conf.all.arp_announce = 2\nnet.ipv4.conf.lo.arp_ignore = 1\nnet.ipv4.conf.lo.arp_announce = 2\n";

/// Instructions for every real server of the config.
pub fn for_config(cfg: &Config) -> Vec<Setup> {
    let mut by_rs: BTreeMap<(String, Forwarding), Vec<String>> = BTreeMap::new();
    for s in &cfg.services {
        let fwd = s.forwarding.unwrap_or_default();
        for r in &s.real_servers {
            let vips = by_rs.entry((r.address.clone(), fwd)).or_default();
            if !vips.contains(&s.vip) {
                vips.push(s.vip.clone());
            }
        }
    }
    let dip = cfg.dip.split('/').next().unwrap_or_default().to_string();
    by_rs
        .into_iter()
        .map(|((address, forwarding), vips)| {
            let mut c = String::new();
            match forwarding {
                Forwarding::Nat => {
                    c.push_str(&format!("# NAT: replies must return through the director: its DIP is this server's gateway\nip route replace default via {dip}\n"));
                }
                method => {
                    let tun = method == Forwarding::Tun;
                    c.push_str("# never answer ARP for the VIP, never announce it (kept across reboots)\n");
                    c.push_str("cat > /etc/sysctl.d/90-lvs-real-server.conf <<'EOF'\n");
                    c.push_str(ARP);
                    if tun {
                        c.push_str("net.ipv4.conf.tunl0.arp_ignore = 1\nnet.ipv4.conf.tunl0.arp_announce = 2\n");
                        c.push_str("# the kernel applies the larger of all and tunl0: both must be 0\nnet.ipv4.conf.tunl0.rp_filter = 0\nnet.ipv4.conf.all.rp_filter = 0\n");
                    }
                    c.push_str("EOF\n");
                    if tun {
                        c.push_str("modprobe ipip\necho ipip > /etc/modules-load.d/ipip.conf\n");
                    }
                    c.push_str("sysctl -p /etc/sysctl.d/90-lvs-real-server.conf\n");
                    let dev = if tun { "tunl0" } else { "lo" };
                    if tun {
                        c.push_str("ip link set tunl0 up\n");
                    }
                    c.push_str(&format!("# the VIP on {dev} as /32 (add these to the network configuration too, so they survive a reboot)\n"));
                    for v in &vips {
                        c.push_str(&format!("ip addr add {v}/32 dev {dev}\n"));
                    }
                    c.push_str(&format!("# replies go straight to the client: the gateway is the router, never the DIP {dip}\n"));
                    if tun {
                        c.push_str("# allow IP protocol 4 (IPIP) from the DIP through any firewall\n");
                    }
                }
            }
            Setup { address, forwarding, vips, commands: c }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dr_and_tun_servers_get_the_seeds_commands() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/example-config.json")).unwrap();
        let mut cfg = Config::parse(&text).unwrap();
        let dr = for_config(&cfg);
        assert_eq!(dr.len(), 3);
        let c = &dr[0].commands;
        for want in [
            "net.ipv4.conf.all.arp_ignore = 1",
            "net.ipv4.conf.all.arp_announce = 2",
            "ip addr add 203.0.113.10/32 dev lo",
            "/etc/sysctl.d/",
        ] {
            assert!(c.contains(want), "{want}: {c}");
        }
        assert_eq!(c.matches("ip addr add").count(), 1, "one VIP, once, although two services use it");
        for s in &mut cfg.services {
            s.forwarding = Some(Forwarding::Tun);
        }
        let tun = for_config(&cfg);
        let c = &tun[0].commands;
        for want in ["net.ipv4.conf.tunl0.rp_filter = 0", "net.ipv4.conf.all.rp_filter = 0", "ip link set tunl0 up", "dev tunl0"] {
            assert!(c.contains(want), "{want}: {c}");
        }
    }
}
