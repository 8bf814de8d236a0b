//! What each real server needs, as commands to paste into its shell, from the seeds:
//! DR (seeds 000, 001, 003): never answer ARP for the VIP nor announce it (`arp_ignore=1`,
//! `arp_announce=2`, kept in a `sysctl.d` file), the VIP on `lo` as /32, the router (never the
//! DIP) as gateway. TUN (seed 002): the same ARP rules, `tunl0` up with the VIP, `rp_filter=0`
//! on `tunl0` and `all` (the kernel uses the larger of the two). NAT: the DIP as gateway.
//! And the router's side (seed 001's DGW): a static ARP entry pinning each VIP to the
//! director's MAC (its "safest" fix: no real server can take the VIP from the router's cache),
//! and the route the real servers need (this router as their default gateway, rule 7).

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

/// What the router in front of the director needs.
#[derive(Debug, Serialize)]
pub struct Router {
    /// The MAC the VIPs live on: the VIP-side NIC's, or an HA pair's virtual MAC.
    pub director_mac: Option<String>,
    /// Shell commands for a Linux router, ready to copy.
    pub commands: String,
}

/// The router's side of the config: `vip_side_mac` is the VIP-side NIC's MAC, if known.
pub fn router(cfg: &Config, vip_side_mac: Option<String>) -> Router {
    let ha_mac = cfg.ha.as_ref().map(|h| format!("00:00:5e:00:01:{:02x}", h.vrid));
    let mac = ha_mac.clone().or(vip_side_mac);
    let shown = mac.clone().unwrap_or_else(|| "<the director's VIP-side MAC>".into());
    let dip = cfg.dip.split('/').next().unwrap_or_default();
    let mut vips: Vec<&str> = Vec::new();
    for s in &cfg.services {
        if !vips.contains(&s.vip.as_str()) {
            vips.push(&s.vip);
        }
    }
    let mut c = String::from(
        "# pin each VIP to the director's MAC: a real server that answers ARP for the VIP by mistake
# can then never take it from this router's cache (seed 001's safest fix)
",
    );
    if ha_mac.is_some() {
        c.push_str(
            "# (the HA pair's virtual MAC: it moves to whichever director is master)
",
        );
    }
    for v in &vips {
        c.push_str(&format!(
            "arp -s {v} {shown}
"
        ));
    }
    c.push_str(
        "# the same with iproute2, kept until removed (DEV: this router's NIC towards the director)
",
    );
    for v in &vips {
        c.push_str(&format!(
            "ip neigh replace {v} lladdr {shown} dev DEV nud permanent
"
        ));
    }
    c.push_str(&format!(
        "# the real servers' replies leave through this router: it is their default gateway, never the director's DIP {dip}
"
    ));
    Router { director_mac: mac, commands: c }
}

/// The VIP-side NIC's MAC on this box (the config names it by MAC, or by a name /sys knows).
pub fn vip_side_mac(cfg: &Config) -> Option<String> {
    match director_config::nic::NicRef::parse(&cfg.nics.vip_side).ok()? {
        director_config::nic::NicRef::Mac(m) => Some(m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")),
        director_config::nic::NicRef::Name(n) => {
            std::fs::read_to_string(format!("/sys/class/net/{n}/address")).ok().map(|a| a.trim().to_string()).filter(|a| a.len() == 17)
        }
    }
}

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
        let r = router(&cfg, Some("02:00:00:00:d0:01".into()));
        assert!(r.commands.contains("arp -s 203.0.113.10 02:00:00:00:d0:01\n"), "{}", r.commands);
        assert!(r.commands.contains("never the director's DIP 198.18.0.2"), "{}", r.commands);
        assert_eq!(r.commands.matches("arp -s").count(), 1, "one VIP, once");
        cfg.ha =
            serde_json::from_str(r#"{"peer": "198.18.0.3", "vrid": 51, "priority": 100, "key": "0123456789abcdef0123456789abcdef"}"#).ok();
        assert!(router(&cfg, None).commands.contains("arp -s 203.0.113.10 00:00:5e:00:01:33"), "the pair's virtual MAC");
        cfg.ha = None;
        assert!(router(&cfg, None).commands.contains("<the director's VIP-side MAC>"));
        let tun = for_config(&cfg);
        let c = &tun[0].commands;
        for want in ["net.ipv4.conf.tunl0.rp_filter = 0", "net.ipv4.conf.all.rp_filter = 0", "ip link set tunl0 up", "dev tunl0"] {
            assert!(c.contains(want), "{want}: {c}");
        }
    }
}
