//! The `netfw` command as an operator meets it first: checking a config file.

use std::process::Command;

fn check(text: &str) -> (bool, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("netfw-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.json");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(qemu::proc::bin("netfw").unwrap()).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const EXAMPLE: &str = include_str!("../../docs/example-config.json");

#[test]
fn the_documented_example_checks_clean() {
    let (ok, out) = check(EXAMPLE);
    assert!(ok, "{out}");
    assert!(out.contains("valid (two-arm, 2 service(s), DIP 198.18.0.2/24)"), "{out}");
}

#[test]
fn every_broken_rule_is_reported_with_its_field() {
    let bad = EXAMPLE
        .replace("198.18.0.12", "198.18.1.12")
        .replace("\"vip\": \"203.0.113.10\", \"protocol\": \"udp\"", "\"vip\": \"198.18.0.2\", \"protocol\": \"udp\"");
    let (ok, out) = check(&bad);
    assert!(!ok);
    assert!(out.contains("config rejected (3 problems)"), "{out}");
    assert!(out.contains("services[0].real_servers[1].address: 198.18.1.12 is outside the DIP's subnet 198.18.0.0/24"), "{out}");
    assert!(out.contains("services[1].real_servers[1].address: 198.18.1.12 is outside the DIP's subnet"), "{out}");
    assert!(out.contains("services[1].vip: VIP 198.18.0.2 equals the DIP"), "{out}");
}

#[test]
fn a_typo_is_reported_with_line_and_column() {
    let (ok, out) = check(&EXAMPLE.replacen("\"weight\": 1", "\"wieght\": 1", 1));
    assert!(!ok);
    assert!(out.contains("config line 14, column") && out.contains("unknown field `wieght`, expected `address` or `weight`"), "{out}");
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(qemu::proc::bin("netfw").unwrap()).args(["check", "--config", "/nonexistent/netfw.json"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config /nonexistent/netfw.json"));
}
