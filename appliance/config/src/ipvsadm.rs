//! Interoperability with ipvsadm: read the rules `ipvsadm -S -n` saves into our config's
//! services, and write services (from a config or the running kernel) in that format, so an
//! operator can move an existing LVS setup onto the appliance and back.
//!
//! Lines: `-A -t|-u VIP:PORT -s SCHED [-p TIMEOUT] [-M NETMASK]` and
//! `-a -t|-u VIP:PORT -r RIP:PORT -g|-i|-m -w WEIGHT [-x U] [-y L]`. Port 0 is a service of
//! every port (ipvsadm's persistent port-0 service) both ways. Port ranges and persistence
//! groups have no ipvsadm form of their own (LVS needs firewall-mark rules for them): the
//! export names each one it leaves out in a comment line.

use std::net::Ipv4Addr;

use crate::document::{RealServerDoc, ServiceDoc};
pub use crate::error::ImportError;
use netfw_core::model::Forwarding;

fn vip_port(s: &str) -> Option<(Ipv4Addr, u16)> {
    let (a, p) = s.rsplit_once(':')?;
    Some((a.parse().ok()?, p.parse().ok()?))
}

/// Services from `ipvsadm -S -n` output.
pub fn import(text: &str) -> Result<Vec<ServiceDoc>, ImportError> {
    let mut out: Vec<ServiceDoc> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |m: String| ImportError { file: "ipvsadm rules", line, message: m };
        let w: Vec<&str> = raw.split_whitespace().collect();
        if w.is_empty() || w[0].starts_with('#') {
            continue;
        }
        let opt = |flag: &str| w.iter().position(|x| *x == flag).and_then(|i| w.get(i + 1)).copied();
        let (proto, addr) = if let Some(a) = opt("-t") {
            ("tcp", a)
        } else if let Some(a) = opt("-u") {
            ("udp", a)
        } else if opt("-f").is_some() {
            return Err(err("firewall-mark services (-f) cannot be read: what the mark matches lives in iptables, not in these rules; \
                 write the service as a port range (\"ports\") or services sharing a \"persistence_group\""
                .into()));
        } else {
            return Err(err(format!("no -t or -u service in \"{}\"", raw.escape_debug())));
        };
        let (vip, port) = vip_port(addr).ok_or_else(|| err(format!("\"{}\" is not VIP:PORT (save with -n)", addr.escape_debug())))?;
        match w[0] {
            "-A" => {
                let sched = opt("-s").unwrap_or("wlc").to_string();
                let persistence_s = match (w.contains(&"-p"), opt("-p")) {
                    (true, Some(p)) if !p.starts_with('-') => {
                        p.parse().map_err(|_| err(format!("bad persistence \"{}\"", p.escape_debug())))?
                    }
                    (true, _) => 300,
                    _ => 0,
                };
                if let Some(m) = opt("-M") {
                    if m != "255.255.255.255" {
                        return Err(err(format!(
                            "persistence netmask {}: only per-client (255.255.255.255) affinity is supported",
                            m.escape_debug()
                        )));
                    }
                }
                out.push(ServiceDoc {
                    vip: vip.to_string(),
                    protocol: proto.into(),
                    port: Some(i64::from(port)),
                    ports: None,
                    scheduler: sched,
                    persistence_s,
                    persistence_group: None,
                    forwarding: None,
                    real_servers: Vec::new(),
                    health_check: None,
                    sorry_server: None,
                });
            }
            "-a" => {
                let rs = opt("-r").ok_or_else(|| err("a real server line without -r".into()))?;
                let (rip, rport) = vip_port(rs)
                    .or_else(|| rs.parse().ok().map(|a| (a, port)))
                    .ok_or_else(|| err(format!("\"{}\" is not RIP:PORT", rs.escape_debug())))?;
                if rport != port {
                    return Err(err(format!(
                        "real server port {rport} differs from the service port {port}: port mapping is NAT-only and not supported"
                    )));
                }
                let method = if w.contains(&"-i") {
                    Forwarding::Tun
                } else if w.contains(&"-m") {
                    Forwarding::Nat
                } else {
                    Forwarding::Dr
                };
                let weight = opt("-w").map(|x| x.parse::<i64>()).transpose().map_err(|_| err("bad weight".into()))?.unwrap_or(1);
                let svc = out
                    .iter_mut()
                    .find(|s| s.vip == vip.to_string() && s.protocol == proto && s.port == Some(i64::from(port)))
                    .ok_or_else(|| err(format!("real server for {proto} {vip}:{port} before its service (-A)")))?;
                // Our config carries one method per service; ipvsadm allows one per server.
                let current = svc.forwarding.unwrap_or_default();
                if svc.real_servers.is_empty() {
                    svc.forwarding = (method != Forwarding::Dr).then_some(method);
                } else if current != method {
                    return Err(err(format!(
                        "{proto} {vip}:{port} mixes forwarding methods ({} and {}); the config has one per service",
                        current.name(),
                        method.name()
                    )));
                }
                svc.real_servers.push(RealServerDoc { address: rip.to_string(), weight });
            }
            other => return Err(err(format!("\"{}\" is not -A or -a", other.escape_debug()))),
        }
    }
    Ok(out)
}

/// Services in `ipvsadm -S -n` format.
pub fn export(services: &[ServiceDoc]) -> String {
    let mut o = String::new();
    for s in services {
        let p = if s.protocol == "udp" { "-u" } else { "-t" };
        let port = match (s.port, &s.ports, &s.persistence_group) {
            (Some(port), None, None) => port,
            (_, ports, group) => {
                let what = match (ports, group) {
                    (Some(r), _) => format!("ports {r}"),
                    _ => format!("port {}", s.port.unwrap_or_default()),
                };
                let why = if group.is_some() { "shares a persistence group" } else { "covers a port range" };
                o.push_str(&format!(
                    "# not exported: {} {} {what} {why}; ipvsadm has no rule for it (LVS needs a firewall mark set by iptables and an -f service)\n",
                    s.protocol, s.vip
                ));
                continue;
            }
        };
        let persist = if s.persistence_s > 0 { format!(" -p {}", s.persistence_s) } else { String::new() };
        o.push_str(&format!("-A {p} {}:{port} -s {}{persist}\n", s.vip, s.scheduler));
        let m = match s.forwarding.unwrap_or_default() {
            Forwarding::Tun => "-i",
            Forwarding::Nat => "-m",
            Forwarding::Dr => "-g",
        };
        for r in &s.real_servers {
            o.push_str(&format!("-a {p} {}:{port} -r {}:{port} {m} -w {}\n", s.vip, r.address, r.weight));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        assert_eq!(import("-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r 5.6.7.8:8080 -g -w 1").unwrap_err().line, 2);
        assert!(import("-A -f 1 -s rr").unwrap_err().message.contains("firewall-mark"));
        assert!(import("-a -t 1.2.3.4:80 -r 5.6.7.8:80 -g -w 1").unwrap_err().message.contains("before its service"));
        let mixed =
            import("-A -u 1.2.3.4:53 -s rr\n-a -u 1.2.3.4:53 -r 5.6.7.8:53 -i -w 1\n-a -u 1.2.3.4:53 -r 5.6.7.9:53 -g -w 1").unwrap_err();
        assert_eq!(mixed.line, 3);
    }
}
