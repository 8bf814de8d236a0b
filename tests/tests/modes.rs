//! Issue 4's proofs in the QEMU lab: the same config in IPVS mode, changed at runtime from the
//! console (`apply-config`), switched between modes, and the automatic fallback.

use std::collections::BTreeSet;
use std::time::Duration;

use qemu::lab::{self, Lab, Layout};
use qemu::vm::Firmware;
use tests::{counts, http_requests, long_transfer_result, one_lab_at_a_time, service, wait_forwarding};

fn svc(rss: &[(usize, u16)]) -> String {
    format!("[{}]", service("rr", "tcp", 80, 0, rss))
}

/// The config on one line (the console takes one line), in a mode.
fn one_line(lab: &Lab, services: &str, mode: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&lab.config(services)).unwrap();
    v["mode"] = mode.into();
    v.to_string()
}

/// Ask the console for the kernel's IPVS table and return its real servers as (RIP, weight,
/// active connections).
fn ipvs_table(lab: &mut Lab) -> Vec<(String, u32, u32)> {
    let nth = lab.vm().console_log().matches("ipvs: netfw ipvs: the kernel's IPVS table").count() + 1;
    lab.vm().send("ipvs").unwrap();
    lab.vm().wait_for_nth("ipvs: netfw ipvs: the kernel's IPVS table", nth, Duration::from_secs(10)).unwrap();
    // The table follows its header; wait a moment for its lines, then read the last table.
    std::thread::sleep(Duration::from_millis(300));
    let log = lab.vm().console_log();
    let last = log.rsplit("ipvs: netfw ipvs: the kernel's IPVS table").next().unwrap_or_default();
    last.lines()
        .take_while(|l| l.contains("ipvs:") || l.trim().is_empty())
        .filter_map(|l| l.split("-> ").nth(1))
        .filter_map(|r| {
            let f: Vec<&str> = r.split_whitespace().collect();
            Some((f.first()?.split(':').next()?.to_string(), f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
        .collect()
}

#[test]
fn switching_modes_at_runtime_leaves_nothing_of_the_other_mode() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    let all = svc(&[(1, 1), (2, 1), (3, 1)]);
    lab.write_vm_config(&one_line(&lab, &all, "forwarder")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]));

    // forwarder -> ipvs
    let to_ipvs = one_line(&lab, &all, "ipvs");
    lab.vm().send(&format!("apply-config {to_ipvs}")).unwrap();
    lab.vm().wait_for("config saved and applied: mode ipvs", Duration::from_secs(30)).unwrap();
    lab.vm().wait_for("netfw stopped", Duration::from_secs(5)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]), "in ipvs mode");
    assert_eq!(ipvs_table(&mut lab).len(), 3, "IPVS holds the three real servers");

    // ipvs -> forwarder
    let to_fwd = one_line(&lab, &all, "forwarder");
    lab.vm().send(&format!("apply-config {to_fwd}")).unwrap();
    lab.vm().wait_for("config saved and applied: mode forwarder", Duration::from_secs(30)).unwrap();
    let log = lab.vm().console_log();
    assert!(log.contains("ipvs: delete service tcp 203.0.113.10:80"), "{log}");
    assert!(
        log.contains("ipvs: removed 198.18.0.2/24 from eth2") && log.contains("ipvs: removed 203.0.113.10/24 from eth1"),
        "the kernel's addresses go: {log}"
    );
    assert!(ipvs_table(&mut lab).is_empty(), "no IPVS service is left");
    lab.vm().wait_for_nth("started netfw", 2, Duration::from_secs(10)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]), "back in forwarder mode");
    // The change was saved: the partition holds the last config.
    lab.vm().send("poweroff").unwrap();
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap();
    let saved = std::process::Command::new(qemu::proc::bin("image").unwrap())
        .args(["config-get", "--disk", lab.vm_disk().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&saved.stdout), to_fwd);
}

#[test]
fn ipvs_reconciles_while_a_long_transfer_runs_and_it_finishes() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    lab.write_vm_config(&one_line(&lab, &svc(&[(1, 1), (2, 1)]), "ipvs")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2"]);
    let tool = qemu::proc::bin("labtool").unwrap();
    let client = lab.ns("client");
    lab.spawn(
        "long",
        &client,
        &[tool.to_str().unwrap(), "long", "--to", &format!("{}:80", lab::VIP), "--bytes", "3000000", "--ms", "8000"],
    )
    .unwrap();
    // The carrier is the real server with an active connection.
    let mut carrier = None;
    for _ in 0..20 {
        carrier = ipvs_table(&mut lab).into_iter().find(|(_, _, active)| *active >= 1).map(|(r, _, _)| r);
        if carrier.is_some() {
            break;
        }
    }
    let carrier = carrier.expect("the long transfer never showed as an active connection");
    let (c, other) = if carrier.ends_with(".11") { (1, 2) } else { (2, 1) };
    for (step, rss) in [
        ("add rs3", vec![(c, 1), (other, 1), (3, 1)]),
        ("reweight", vec![(c, 1), (other, 2), (3, 1)]),
        ("remove the other", vec![(c, 1), (3, 4)]),
    ] {
        let cfg = one_line(&lab, &svc(&rss), "ipvs");
        lab.vm().send(&format!("apply-config {cfg}")).unwrap();
        let applied = lab.vm().console_log().matches("config saved and applied").count() + 1;
        lab.vm().wait_for_nth("config saved and applied: mode ipvs", applied, Duration::from_secs(30)).unwrap();
        let got: BTreeSet<(String, u32)> = ipvs_table(&mut lab).into_iter().map(|(r, w, _)| (r, w)).collect();
        let want: BTreeSet<(String, u32)> = rss.iter().map(|(i, w)| (lab::rip(*i).to_string(), u32::from(*w))).collect();
        assert_eq!(got, want, "after \"{step}\" the kernel's table is the config");
    }
    let r = long_transfer_result(&lab, "long");
    assert_eq!(r["server"], format!("rs{c}").as_str());
    assert_eq!(r["body_bytes"].as_u64().unwrap(), 3_000_000 + 4);
}

#[test]
fn a_forwarder_that_cannot_use_its_nic_falls_back_to_ipvs() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    lab.write_vm_config(&one_line(&lab, &svc(&[(1, 1), (2, 1), (3, 1)]), "forwarder")).unwrap();
    // A jumbo-frame VIP-facing NIC: more than netfw's rings carry.
    lab.boot_vm_with(Firmware::Direct, Some(9000)).unwrap();
    lab.vm().wait_for("NIC eth1 has MTU 9000", Duration::from_secs(30)).unwrap();
    lab.vm().wait_for("FALLBACK: the forwarder cannot use its NICs", Duration::from_secs(10)).unwrap();
    lab.vm().wait_for("mode: ipvs (the kernel forwards) (fallback)", Duration::from_secs(10)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]));
    lab.vm().send("status").unwrap();
    lab.vm().wait_for("init: mode: ipvs", Duration::from_secs(10)).unwrap();
}

fn with_forwarding(services: &str, method: &str) -> String {
    services.replace("\"scheduler\"", &format!("\"forwarding\": \"{method}\", \"scheduler\""))
}

#[test]
fn nat_mode_forwards_and_replies_return_through_the_director() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    // NAT real servers: no VIP on lo, and their gateway is the DIP.
    for i in 1..=3 {
        let ns = lab.ns(&format!("rs{i}"));
        lab.ip(&ns, &["addr", "del", &format!("{}/32", lab::VIP), "dev", "lo"]).unwrap();
        lab.ip(&ns, &["route", "replace", "default", "via", &lab::DIP.to_string()]).unwrap();
    }
    lab.write_vm_config(&one_line(&lab, &with_forwarding(&svc(&[(1, 1), (2, 1), (3, 1)]), "nat"), "ipvs")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("ipvs: sysctl net.ipv4.ip_forward=1 (NAT", Duration::from_secs(5)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]));
    // Unlike DR, the replies come back through the director: a 1 MB download enters it.
    let before = lab.tap_to_vm_bytes("tap2").unwrap();
    let out = lab.labtool(&lab.ns("client"), &["long", "--to", &format!("{}:80", lab::VIP), "--bytes", "1000000"]).unwrap();
    assert!(out.contains("\"body_bytes\":100000"), "{out}");
    let into_vm = lab.tap_to_vm_bytes("tap2").unwrap() - before;
    assert!(into_vm > 1_000_000, "NAT replies must cross the director: only {into_vm} bytes entered it");
    assert_eq!(ipvs_table(&mut lab).len(), 3);
}

#[test]
fn tun_mode_sends_ipip_from_the_dip_to_each_real_server() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    lab.write_vm_config(&one_line(&lab, &with_forwarding(&svc(&[(1, 1), (2, 1), (3, 1)]), "tun"), "ipvs")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("ip_forward=0 (DR/TUN", Duration::from_secs(5)).unwrap();
    let tool = qemu::proc::bin("labtool").unwrap();
    for i in 1..=3 {
        let ns = lab.ns(&format!("rs{i}"));
        lab.spawn(&format!("sniff-rs{i}"), &ns, &[tool.to_str().unwrap(), "sniff", "--dev", "eth0", "--seconds", "6"]).unwrap();
        tests::wait_ready(&lab, &format!("sniff-rs{i}"));
    }
    // The real servers here cannot decapsulate (the host kernel has no IPIP), so the client's
    // connections go unanswered; what the director sends is what this test checks.
    let _ = lab.labtool(&lab.ns("client"), &["get", "--to", &format!("{}:80", lab::VIP), "--count", "3"]);
    for i in 1..=3 {
        let cap = tests::wait_sniff(&lab, &format!("sniff-rs{i}"));
        let tunnelled = cap["ipip"].as_array().unwrap();
        assert!(!tunnelled.is_empty(), "rs{i} got no IPIP from the director: {cap}");
        for t in tunnelled {
            assert_eq!(t["outer_src"], lab::DIP.to_string().as_str(), "{t}");
            assert_eq!(t["outer_dst"], lab::rip(i).to_string().as_str(), "{t}");
            assert_eq!(t["inner_src"], lab::CLIENT.to_string().as_str(), "{t}");
            assert_eq!(t["inner_dst"], lab::VIP.to_string().as_str(), "{t}");
            assert_eq!(t["inner_dport"], 80, "{t}");
        }
    }
}
