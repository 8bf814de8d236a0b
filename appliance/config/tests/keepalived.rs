//! keepalived.conf files of the kinds operators write, imported: what maps lands in the
//! services, everything else is listed with its line, and the result is a valid config.

use director_config::keepalived::import;
use director_config::{Config, RealServerDoc};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn has(notes: &[String], what: &str) -> bool {
    notes.iter().any(|n| n.contains(what))
}

#[test]
fn a_dr_director_with_vrrp_imports_its_services_and_lists_the_rest() {
    let i = import(&fixture("keepalived-dr.conf")).unwrap();
    let n = &i.not_mapped;
    assert_eq!(i.services.len(), 3, "{:?}", i.services);
    let web = &i.services[0];
    assert_eq!((web.vip.as_str(), web.port, web.protocol.as_str(), web.scheduler.as_str()), ("203.0.113.10", Some(80), "tcp", "wrr"));
    assert_eq!(web.persistence_s, 300);
    assert_eq!(web.forwarding, None, "DR");
    assert_eq!(web.sorry_server.as_deref(), Some("198.18.0.99"));
    assert_eq!(
        web.real_servers,
        vec![RealServerDoc { address: "198.18.0.11".into(), weight: 3 }, RealServerDoc { address: "198.18.0.12".into(), weight: 1 }]
    );
    let hc = web.health_check.as_ref().unwrap();
    assert_eq!(hc.kind, "http");
    assert_eq!((hc.path.as_deref(), hc.expect_status.as_deref()), (Some("/health"), Some("200")));
    assert_eq!((hc.interval_ms, hc.timeout_ms, hc.fall), (Some(2000), Some(1000), Some(3)));
    // 443: SSL_GET becomes an https check (its url's path; the digest is not checked), and
    // the second server's different check is said.
    let tls = &i.services[1];
    let hc = tls.health_check.as_ref().unwrap();
    assert_eq!((hc.kind.as_str(), hc.path.as_deref()), ("https", Some("/")));
    assert!(has(n, "line 72: `digest 9b3a0c85a887a256d6939da88aabd8cd` not imported (the check reads the status only)"), "{n:#?}");
    assert!(has(n, "real server 198.18.0.12's check differs from 198.18.0.11's"), "{n:#?}");
    // 53/udp: no sed here, no scripts.
    let dns = &i.services[2];
    assert_eq!((dns.protocol.as_str(), dns.scheduler.as_str(), dns.health_check.is_none()), ("udp", "wlc", true));
    assert!(has(n, "scheduler `sed` is not available here"), "{n:#?}");
    assert!(has(n, "MISC_CHECK"), "{n:#?}");
    // VRRP, global_defs and the firewall-mark service are listed, not dropped silently.
    assert!(has(n, "line 11: `vrrp_instance VI_1 { … }` not imported: VRRP"), "{n:#?}");
    assert!(has(n, "line 2: `global_defs { … }`"), "{n:#?}");
    assert!(has(n, "`virtual_server fwmark 7 { … }` not imported"), "{n:#?}");
    assert!(has(n, "delay_before_retry not imported"), "{n:#?}");
    assert!(has(n, "keepalived has no rise count"), "{n:#?}");

    // The import is a valid config (forwarder mode, DR).
    let services = serde_json::to_string(&i.services).unwrap();
    let doc =
        format!(r#"{{"version": 1, "nics": {{"vip_side": "eth1", "rs_side": "eth2"}}, "dip": "198.18.0.2/24", "services": {services}}}"#);
    let spec = Config::parse(&doc).unwrap().validate().unwrap_or_else(|e| panic!("{e}\n{doc}"));
    assert_eq!(spec.services[0].sorry_server, Some("198.18.0.99".parse().unwrap()));
    assert_eq!(spec.services[0].health.as_ref().map(|h| (h.interval_ms, h.timeout_ms, h.rise, h.fall)), Some((2000, 1000, 2, 3)));
}

#[test]
fn nat_and_tun_services_with_tcp_and_udp_checks() {
    let i = import(&fixture("keepalived-nat.conf")).unwrap();
    let n = &i.not_mapped;
    assert!(has(n, "line 2: `include /etc/keepalived/conf.d/*.conf` not followed"), "{n:#?}");
    let nat = &i.services[0];
    assert_eq!(nat.forwarding, Some(director_config::Forwarding::Nat));
    let hc = nat.health_check.as_ref().unwrap();
    assert_eq!(hc.via.as_deref(), Some("rip"), "NAT servers do not hold the VIP");
    assert_eq!((hc.interval_ms, hc.timeout_ms), (Some(10_000), Some(10_000)), "the timeout is cut to the interval");
    assert!(has(n, "connect_timeout is longer than delay_loop"), "{n:#?}");
    assert!(has(n, "real server 198.18.0.22 listens on port 9090"), "{n:#?}");
    assert!(has(n, "`inhibit_on_failure` on 198.18.0.21 not imported"), "{n:#?}");
    let sip = &i.services[1];
    assert_eq!((sip.forwarding, sip.protocol.as_str()), (Some(director_config::Forwarding::Tun), "udp"));
    let hc = sip.health_check.as_ref().unwrap();
    assert_eq!((hc.kind.as_str(), hc.send.as_deref(), hc.expect.as_deref()), ("udp", Some("4f5054494f4e53"), Some("5349502f322e30")));
}
