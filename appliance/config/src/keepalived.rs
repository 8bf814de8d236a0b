//! Importing keepalived: the `virtual_server` blocks of a `keepalived.conf` (with their
//! `real_server`s, `lb_algo`, `lb_kind`, `persistence_timeout`, `protocol`, `weight`,
//! `sorry_server`, and `TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `UDP_CHECK` with their timers) as
//! the config's services. Whatever does not map (VRRP, `MISC_CHECK` scripts, firewall marks,
//! schedulers this box lacks, options it has no use for) is listed with its line, never
//! dropped silently; where the box's own default replaces keepalived's, that is listed too.

use std::net::Ipv4Addr;

use crate::document::{RealServerDoc, ServiceDoc};
pub use crate::error::ImportError;
use crate::health::HealthCheckDoc;

/// The kind of file, as errors name it.
const FILE: &str = "keepalived.conf";

/// What an import gives: the services, and what was not (or not exactly) taken.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Imported {
    /// The services, in file order.
    pub services: Vec<ServiceDoc>,
    /// "line N: what, and why", for everything not taken as written.
    pub not_mapped: Vec<String>,
}

/// A statement or a block, with its line.
#[derive(Debug)]
struct Node {
    line: usize,
    words: Vec<String>,
    /// A block's contents (`None`: a plain statement).
    block: Option<Vec<Node>>,
}

impl Node {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(String::as_str)
    }
    fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or_default()
    }
    fn shown(&self) -> String {
        let w = self.words.join(" ");
        if self.block.is_some() {
            format!("`{w} {{ … }}`")
        } else {
            format!("`{w}`")
        }
    }
}

/// Words and braces, with their lines; comments (`#`, `!`) dropped.
fn tokens(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(['#', '!']).next().unwrap_or_default();
        for w in line.split_whitespace() {
            // Braces may touch words ("real_server 1.2.3.4 80{").
            let mut rest = w;
            while !rest.is_empty() {
                match rest.find(['{', '}']) {
                    Some(0) => {
                        out.push((i + 1, rest[..1].to_string()));
                        rest = &rest[1..];
                    }
                    Some(p) => {
                        out.push((i + 1, rest[..p].to_string()));
                        rest = &rest[p..];
                    }
                    None => {
                        out.push((i + 1, rest.to_string()));
                        rest = "";
                    }
                }
            }
        }
    }
    out
}

/// The statements and blocks of a token list (a statement ends at the end of its line).
fn parse(tokens: &[(usize, String)], at: &mut usize, depth: usize) -> Result<Vec<Node>, ImportError> {
    let mut nodes = Vec::new();
    while let Some((line, t)) = tokens.get(*at) {
        let line = *line;
        match t.as_str() {
            "}" if depth == 0 => return Err(ImportError { file: FILE, line, message: "a '}' closes no block".into() }),
            "}" => {
                *at += 1;
                return Ok(nodes);
            }
            "{" => {
                // An anonymous block: keep it, its contents unused.
                *at += 1;
                let block = parse(tokens, at, depth + 1)?;
                nodes.push(Node { line, words: vec!["{".into()], block: Some(block) });
            }
            _ => {
                let mut words = Vec::new();
                while let Some((l, w)) = tokens.get(*at) {
                    if *l != line || w == "{" || w == "}" {
                        break;
                    }
                    words.push(w.clone());
                    *at += 1;
                }
                let block = if tokens.get(*at).is_some_and(|(_, w)| w == "{") {
                    *at += 1;
                    let b = parse(tokens, at, depth + 1)?;
                    Some(b)
                } else {
                    None
                };
                nodes.push(Node { line, words, block });
            }
        }
    }
    if depth > 0 {
        let line = tokens.last().map_or(0, |(l, _)| *l);
        return Err(ImportError { file: FILE, line, message: "a block is not closed ('}' missing at the end)".into() });
    }
    Ok(nodes)
}

/// Import the `virtual_server` blocks of a keepalived.conf.
pub fn import(text: &str) -> Result<Imported, ImportError> {
    let toks = tokens(text);
    let mut at = 0;
    let nodes = parse(&toks, &mut at, 0)?;
    let mut out = Imported::default();
    for n in &nodes {
        match n.key() {
            "virtual_server" if n.block.is_some() => virtual_server(n, &mut out),
            "vrrp_instance" | "vrrp_sync_group" | "vrrp_script" | "vrrp_track_process" => out.not_mapped.push(format!(
                "line {}: {} not imported: VRRP has no equivalent in this config (the VIP is the director's own)",
                n.line,
                n.shown()
            )),
            "global_defs" | "static_ipaddress" | "static_routes" | "static_rules" | "linkbeat_interfaces" => {
                out.not_mapped.push(format!("line {}: {} not imported: the appliance sets this itself", n.line, n.shown()));
            }
            "include" => out.not_mapped.push(format!(
                "line {}: {} not followed: paste the included file's virtual_server blocks as well",
                n.line,
                n.shown()
            )),
            _ => out.not_mapped.push(format!("line {}: {} not imported: not a virtual_server", n.line, n.shown())),
        }
    }
    Ok(out)
}

/// keepalived's seconds ("3", "0.5") as milliseconds; `None` unless 0 to a day.
fn seconds_ms(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: i64 = whole.parse().ok().filter(|w| (0..=86_400).contains(w))?;
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = format!("{:0<3}", frac.get(..frac.len().min(3))?).parse().ok()?;
    Some(whole * 1000 + ms)
}

/// One `virtual_server IP PORT { … }`.
fn virtual_server(vs: &Node, out: &mut Imported) {
    let line = vs.line;
    let (Some(vip), Some(port)) = (vs.arg(0).and_then(|a| a.parse::<Ipv4Addr>().ok()), vs.arg(1).and_then(|p| p.parse::<u16>().ok()))
    else {
        out.not_mapped.push(format!(
            "line {line}: {} not imported: only `virtual_server IP PORT` maps (firewall marks and groups have no equivalent)",
            vs.shown()
        ));
        return;
    };
    let mut svc = ServiceDoc {
        vip: vip.to_string(),
        protocol: "tcp".into(),
        port: Some(i64::from(port)),
        ports: None,
        scheduler: "wlc".into(),
        persistence_s: 0,
        persistence_group: None,
        forwarding: None,
        real_servers: Vec::new(),
        health_check: None,
        sorry_server: None,
    };
    let mut interval_ms = None;
    let mut checks: Vec<(usize, String, HealthCheckDoc)> = Vec::new();
    for n in vs.children() {
        let here = n.line;
        match (n.key(), n.arg(0)) {
            ("delay_loop", Some(s)) if seconds_ms(s).is_some() => interval_ms = seconds_ms(s),
            ("lb_algo" | "lvs_sched", Some(a)) => match a {
                "rr" | "wrr" | "lc" | "wlc" | "sh" | "mh" => svc.scheduler = a.into(),
                _ => out
                    .not_mapped
                    .push(format!("line {here}: scheduler `{a}` is not available here (rr, wrr, lc, wlc, sh, mh): wlc is used")),
            },
            ("lb_kind" | "lvs_method", Some(k)) => match k.to_ascii_uppercase().as_str() {
                "DR" => svc.forwarding = None,
                "NAT" => svc.forwarding = Some(netfw_core::model::Forwarding::Nat),
                "TUN" => svc.forwarding = Some(netfw_core::model::Forwarding::Tun),
                _ => out.not_mapped.push(format!("line {here}: lb_kind `{k}` is unknown: DR is used")),
            },
            ("persistence_timeout", Some(t)) => match t.parse::<u32>() {
                Ok(t) => svc.persistence_s = t,
                Err(_) => out.not_mapped.push(format!("line {here}: persistence_timeout `{t}` is not a number of seconds")),
            },
            ("protocol", Some(p)) => match p.to_ascii_uppercase().as_str() {
                "TCP" => svc.protocol = "tcp".into(),
                "UDP" => svc.protocol = "udp".into(),
                _ => out.not_mapped.push(format!("line {here}: protocol `{p}` has no equivalent (tcp, udp): tcp is used")),
            },
            ("sorry_server", Some(a)) => {
                svc.sorry_server = Some(a.into());
                if n.arg(1).is_some_and(|p| p.parse::<u16>().ok() != Some(port)) {
                    out.not_mapped.push(format!(
                        "line {here}: the sorry server's port {} is not the service's: direct routing keeps the port, {port} is used",
                        n.arg(1).unwrap_or_default()
                    ));
                }
            }
            ("real_server", Some(a)) => real_server(n, a, port, &mut svc, &mut checks, out),
            _ => out.not_mapped.push(format!("line {here}: {} not imported: no equivalent here", n.shown())),
        }
    }
    // One check per service here; keepalived has one per real server.
    if let Some((first_line, first_rs, mut hc)) = checks.first().cloned() {
        for (l, rs, other) in checks.iter().skip(1) {
            if *other != hc {
                out.not_mapped.push(format!(
                    "line {l}: real server {rs}'s check differs from {first_rs}'s (line {first_line}): the service checks every server as {first_rs}'s says"
                ));
            }
        }
        match interval_ms {
            Some(i) => hc.interval_ms = Some(i.max(100)),
            None => out.not_mapped.push(format!(
                "line {line}: no delay_loop: checks run every {} ms (keepalived's default was 60 s)",
                crate::health::DEFAULT_INTERVAL_MS
            )),
        }
        if let (Some(t), Some(i)) = (hc.timeout_ms, hc.interval_ms) {
            if t > i {
                hc.timeout_ms = Some(i);
                out.not_mapped.push(format!(
                    "line {first_line}: connect_timeout is longer than delay_loop: the timeout is cut to the interval ({i} ms)"
                ));
            }
        }
        if svc.forwarding == Some(netfw_core::model::Forwarding::Nat) {
            hc.via = Some("rip".into());
        }
        out.not_mapped.push(format!(
            "line {first_line}: checks need {} successes in a row to bring a server back (keepalived has no rise count: one was enough)",
            crate::health::DEFAULT_RISE_FALL
        ));
        svc.health_check = Some(hc);
    }
    out.services.push(svc);
}

/// One `real_server IP PORT { … }` of a service on `port`.
fn real_server(
    n: &Node,
    addr: &str,
    port: u16,
    svc: &mut ServiceDoc,
    checks: &mut Vec<(usize, String, HealthCheckDoc)>,
    out: &mut Imported,
) {
    if n.arg(1).is_some_and(|p| p.parse::<u16>().ok() != Some(port)) {
        out.not_mapped.push(format!(
            "line {}: real server {addr} listens on port {}, not the service's {port}: this config sends every real server the service's port",
            n.line,
            n.arg(1).unwrap_or_default()
        ));
    }
    let mut weight = 1;
    for c in n.children() {
        let here = c.line;
        match (c.key(), c.arg(0)) {
            ("weight", Some(w)) => match w.parse::<i64>() {
                Ok(w) => weight = w,
                Err(_) => out.not_mapped.push(format!("line {here}: weight `{w}` is not a number: 1 is used")),
            },
            ("TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "UDP_CHECK", _) => {
                if checks.iter().any(|(_, rs, _)| rs == addr) {
                    out.not_mapped.push(format!("line {here}: a second check on real server {addr}: only the first is taken"));
                } else {
                    checks.push((here, addr.into(), check(c, out)));
                }
            }
            ("MISC_CHECK" | "SMTP_CHECK" | "DNS_CHECK" | "BFD_CHECK" | "PING_CHECK" | "FILE_CHECK", _) => out.not_mapped.push(format!(
                "line {here}: {} on {addr} not imported: the box runs no scripts and has tcp, http and udp checks",
                c.shown()
            )),
            _ => out.not_mapped.push(format!("line {here}: {} on {addr} not imported: no equivalent here", c.shown())),
        }
    }
    svc.real_servers.push(RealServerDoc { address: addr.into(), weight });
}

/// A `TCP_CHECK`, `HTTP_GET`, `SSL_GET` or `UDP_CHECK` block as our check.
fn check(c: &Node, out: &mut Imported) -> HealthCheckDoc {
    let mut hc = HealthCheckDoc {
        kind: "tcp".into(),
        port: None,
        path: None,
        host: None,
        expect_status: None,
        send: None,
        expect: None,
        interval_ms: None,
        timeout_ms: None,
        rise: None,
        fall: None,
        via: None,
    };
    match c.key() {
        "HTTP_GET" => hc.kind = "http".into(),
        "UDP_CHECK" => hc.kind = "udp".into(),
        "SSL_GET" => hc.kind = "https".into(),
        _ => {}
    }
    let mut urls = 0;
    for n in c.children() {
        let here = n.line;
        match (n.key(), n.arg(0)) {
            ("connect_port", Some(p)) => hc.port = p.parse().ok(),
            ("connect_timeout", Some(t)) => hc.timeout_ms = seconds_ms(t),
            ("retry" | "nb_get_retry", Some(r)) => hc.fall = r.parse::<i64>().ok().map(|r| r.clamp(1, 10)),
            ("delay_before_retry", Some(_)) => out.not_mapped.push(format!(
                "line {here}: delay_before_retry not imported: a failing server is probed every interval, like a healthy one"
            )),
            ("url", _) if c.key() == "HTTP_GET" || c.key() == "SSL_GET" => {
                urls += 1;
                if urls > 1 {
                    out.not_mapped.push(format!("line {here}: a second url: only the first is checked"));
                    continue;
                }
                for u in n.children() {
                    match (u.key(), u.arg(0)) {
                        ("path", Some(p)) => hc.path = Some(p.into()),
                        ("status_code", Some(s)) => hc.expect_status = Some(s.into()),
                        ("virtualhost", Some(h)) => hc.host = Some(h.into()),
                        _ => out.not_mapped.push(format!("line {}: {} not imported (the check reads the status only)", u.line, u.shown())),
                    }
                }
            }
            ("virtualhost", Some(h)) if c.key() == "HTTP_GET" || c.key() == "SSL_GET" => hc.host = Some(h.into()),
            ("payload", Some(p)) if c.key() == "UDP_CHECK" => hc.send = Some(p.into()),
            ("require_reply", Some(p)) if c.key() == "UDP_CHECK" => hc.expect = Some(p.into()),
            _ => out.not_mapped.push(format!("line {here}: {} in {} not imported: no equivalent here", n.shown(), c.key())),
        }
    }
    hc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_comments_and_unbalanced_files() {
        let i = import("virtual_server 203.0.113.10 80{ # comment\n real_server 198.18.0.11 80 {weight 3}\n}\n! bang comment\n").unwrap();
        assert_eq!(i.services.len(), 1);
        assert_eq!(i.services[0].real_servers, vec![RealServerDoc { address: "198.18.0.11".into(), weight: 3 }]);
        assert!(i.not_mapped.is_empty(), "{:?}", i.not_mapped);
        let e = import("virtual_server 203.0.113.10 80 {\n  real_server 198.18.0.11 80 {\n").unwrap_err();
        assert!(e.to_string().contains("a block is not closed"), "{e}");
        let e = import("}\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert_eq!(
            [seconds_ms("3"), seconds_ms("0.5"), seconds_ms("1.25"), seconds_ms("-1"), seconds_ms("1e3")],
            [Some(3000), Some(500), Some(1250), None, None]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Whatever the file holds, the import answers (services, or an error with a line):
        /// words keepalived uses, numbers, addresses and braces in any order.
        #[test]
        fn any_file_is_answered_without_a_panic(words in proptest::collection::vec(proptest::sample::select(vec![
            "virtual_server", "real_server", "203.0.113.10", "80", "{", "}", "\n", "TCP_CHECK", "HTTP_GET", "url", "path",
            "status_code", "connect_timeout", "delay_loop", "-1", "1e999", "weight", "lb_algo", "lb_kind", "NAT", "sorry_server",
            "protocol", "UDP", "#", "!", "fwmark", "persistence_timeout", "4294967296", "UDP_CHECK", "payload", "zz",
        ]), 0..80)) {
            let text = words.join(" ");
            if let Ok(i) = import(&text) {
                for s in &i.services {
                    proptest::prop_assert!(s.port.is_some_and(|p| p > 0));
                }
            }
        }
    }
}
