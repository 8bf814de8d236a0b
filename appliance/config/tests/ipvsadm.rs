//! ipvsadm interoperability: a file in `ipvsadm -S -n`'s format imports into a config that
//! validates (in ipvs mode), and exports back to the same rules.

use director_config::{ipvsadm, Config, Forwarding};

const SAVED: &str = include_str!("fixtures/ipvsadm-save.txt");

#[test]
fn an_ipvsadm_save_file_round_trips() {
    let services = ipvsadm::import(SAVED).unwrap();
    assert_eq!(services.len(), 3);
    assert_eq!(services[1].scheduler, "sh");
    assert_eq!(services[1].persistence_s, 300);
    assert_eq!(services[0].real_servers[2].weight, 0, "weight 0 (drain) survives");
    assert_eq!(services[2].forwarding, Some(Forwarding::Tun));
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
    assert_eq!(spec.services.len(), 3);
    assert_eq!(ipvsadm::export(&cfg.services), SAVED);
}
