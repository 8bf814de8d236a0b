//! Helpers shared by the end-to-end tests: one lab at a time (the machine has two cores), and
//! small parsers for labtool's JSON output.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use qemu::lab::{self, Lab};

static SERIAL: Mutex<()> = Mutex::new(());

/// Hold this while a lab runs: labs are independent, but two at once on two cores make
/// timeouts meaningless.
pub fn one_lab_at_a_time() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A service JSON object: real servers as (lab index, weight).
pub fn service(sched: &str, proto: &str, port: u16, persistence_s: u32, rss: &[(usize, u16)]) -> String {
    let rs: Vec<String> = rss.iter().map(|(i, w)| format!(r#"{{"address": "{}", "weight": {w}}}"#, lab::rip(*i))).collect();
    format!(
        r#"{{"vip": "{}", "protocol": "{proto}", "port": {port}, "scheduler": "{sched}", "persistence_s": {persistence_s}, "real_servers": [{}]}}"#,
        lab::VIP,
        rs.join(", ")
    )
}

/// Parse labtool's `{"servers": {...}, "errors": ...}` into counts, failing on errors.
pub fn server_counts(out: &str) -> BTreeMap<String, u64> {
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("labtool output is not JSON ({e}): {out}"));
    let errors = &v["errors"];
    assert!(errors.as_array().is_none_or(Vec::is_empty) && errors.as_u64().is_none_or(|n| n == 0), "client saw errors: {errors}");
    v["servers"].as_object().map(|m| m.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect()).unwrap_or_default()
}

/// `n` TCP requests from the client (optionally from one of its extra addresses).
pub fn http_requests(lab: &Lab, n: usize, from: Option<&str>) -> BTreeMap<String, u64> {
    let to = format!("{}:80", lab::VIP);
    let count = n.to_string();
    let mut args = vec!["get", "--to", to.as_str(), "--count", count.as_str()];
    if let Some(f) = from {
        args.extend_from_slice(&["--from", f]);
    }
    server_counts(&lab.labtool(&lab.ns("client"), &args).unwrap_or_else(|e| panic!("{e}")))
}

/// Expected counts as a map.
pub fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
}

/// The last JSON line a sniffer printed (after its "ready" line).
pub fn sniff_result(log: &str) -> serde_json::Value {
    let line = log.lines().rev().find(|l| l.contains("\"arp\"")).unwrap_or_else(|| panic!("sniffer printed no result: {log}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Wait until a spawned sniffer says it is capturing.
pub fn wait_ready(lab: &Lab, label: &str) {
    for _ in 0..100 {
        if lab.log(label).contains("\"ready\"") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{label} never became ready: {}", lab.log(label));
}

/// Wait until a spawned sniffer printed its result.
pub fn wait_sniff(lab: &Lab, label: &str) -> serde_json::Value {
    for _ in 0..400 {
        if lab.log(label).contains("\"arp\"") {
            return sniff_result(&lab.log(label));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{label} never finished: {}", lab.log(label));
}

/// Wait until the client reaches every one of `servers` through the VIP: a burst of 6
/// requests, without errors, answered by all of them (each is resolved and forwarding).
pub fn wait_forwarding(lab: &Lab, servers: &[&str]) {
    let deadline = std::time::Instant::now() + qemu::vm::scaled(std::time::Duration::from_secs(60));
    let to = format!("{}:80", lab::VIP);
    loop {
        let out = lab.labtool(&lab.ns("client"), &["get", "--to", &to, "--count", "6"]).unwrap_or_default();
        if out.contains("\"errors\":[]") && servers.iter().all(|r| out.contains(r)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never forwarded to {servers:?}: {out}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Wait for a long transfer started with `lab.spawn(label, .., ["long", ..])` to print its
/// result; fails if it broke.
pub fn long_transfer_result(lab: &Lab, label: &str) -> serde_json::Value {
    for _ in 0..600 {
        let log = lab.log(label);
        if let Some(line) = log.lines().find(|l| l.contains("body_bytes")) {
            return serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
        assert!(!log.contains("labtool:"), "the long transfer broke: {log}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the long transfer did not finish: {}", lab.log(label));
}
