//! ipvsadm interoperability: a file in `ipvsadm -S -n`'s format imports into a config that
//! validates (in ipvs mode), and exports back to the same rules.

use director_config::{ipvsadm, Config, Forwarding};

const SAVED: &str = include_str!("fixtures/ipvsadm-save.txt");

#[test]
fn an_ipvsadm_save_file_round_trips() {
    let services = ipvsadm::import(SAVED).unwrap();
    assert_eq!(services.len(), 4);
    assert_eq!(services[1].scheduler, "sh");
    assert_eq!(services[1].persistence_s, 300);
    assert_eq!(services[0].real_servers[2].weight, 0, "weight 0 (drain) survives");
    assert_eq!(services[2].forwarding, Some(Forwarding::Tun));
    // Seed 001's FTP as LVS runs it: a persistent service of every port.
    assert_eq!((services[3].port, services[3].persistence_s), (Some(0), 600));
    assert_eq!(services[3].real_servers.len(), 2);
    assert_eq!(ipvsadm::export(&services), SAVED, "exported rules are the saved rules");
}

#[test]
fn imported_services_make_a_valid_ipvs_config() {
    let services = ipvsadm::import(SAVED).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(include_str!("../../../docs/example-config.json")).unwrap();
    doc["mode"] = "ipvs".into();
    doc["services"] = serde_json::to_value(&services).unwrap();
    let cfg = Config::parse(&doc.to_string()).unwrap();
    let spec = cfg.validate().unwrap();
    assert_eq!(spec.services.len(), 4);
    assert_eq!((spec.services[3].port, spec.services[3].port_last), (0, 65535), "every port");
    assert_eq!(ipvsadm::export(&cfg.services), SAVED);
}

#[test]
fn ranges_and_groups_are_named_where_ipvsadm_has_no_rule_for_them() {
    let mut services = ipvsadm::import(SAVED).unwrap();
    services[0].port = None;
    services[0].ports = Some("10000-20000".into());
    services[1].persistence_group = Some("ftp".into());
    let out = ipvsadm::export(&services);
    assert!(out.starts_with("# not exported: tcp 203.0.113.10 ports 10000-20000 covers a port range;"), "{out}");
    assert!(out.contains("# not exported: tcp 203.0.113.10 port 443 shares a persistence group;"), "{out}");
    assert!(!out.contains(":80 ") && !out.contains(":443 "), "{out}");
    assert!(ipvsadm::import(&out).is_ok(), "the comments read back as nothing");
}
