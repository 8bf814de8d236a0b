//! Issue 11's proofs in the namespace lab: health checks through the DR path take a dead real
//! server out and bring it back, say why, and the sorry server takes over when every server is
//! down. Needs root (network namespaces); run with `tests/run`.

use std::time::{Duration, Instant};

use qemu::lab::{self, Lab, Layout};
use tests::{one_lab_at_a_time, paced_requests, poll_until, server_counts, wait_forwarding};

/// A service over rs1..rs3 checked with `check`; `sorry`: rs4 as the sorry server.
fn checked_service(check: &str, sorry: bool) -> String {
    let rs: Vec<String> = (1..=3).map(|i| format!(r#"{{"address": "{}", "weight": 1}}"#, lab::rip(i))).collect();
    let sorry = if sorry { format!(r#", "sorry_server": "{}""#, lab::rip(4)) } else { String::new() };
    format!(
        r#"[{{"vip": "{}", "protocol": "tcp", "port": 80, "scheduler": "rr", "real_servers": [{}], "health_check": {check}{sorry}}}]"#,
        lab::VIP,
        rs.join(", ")
    )
}

/// Real server `i`'s health in the status document: (state, "last result (what is checked)").
fn health(lab: &Lab, i: usize) -> (String, String) {
    let s = lab.status_json().unwrap_or_else(|e| panic!("{e}"));
    let rip = lab::rip(i).to_string();
    let rs = s["services"][0]["real_servers"].as_array().and_then(|a| a.iter().find(|r| r["address"] == rip.as_str()).cloned());
    let h = rs.map(|r| r["health"].clone()).unwrap_or_default();
    let last = format!("{} ({})", h["last"].as_str().unwrap_or_default(), h["check"].as_str().unwrap_or_default());
    (h["state"].as_str().unwrap_or("none").to_string(), last)
}

/// Wait until real server `i` is `state`; returns how long it took and its last result.
fn wait_state(lab: &Lab, i: usize, state: &str) -> (Duration, String) {
    let t = Instant::now();
    let last = poll_until(&format!("rs{i} never went {state}"), Duration::from_secs(20), || {
        let (s, last) = health(lab, i);
        if s == state {
            Ok(last)
        } else {
            Err(format!("rs{i} is {s} ({last}); {}", lab.status().unwrap_or_default()))
        }
    });
    (t.elapsed(), last)
}

/// Wait until real server `i`'s diagnosis says `what`; returns it.
fn wait_diagnosis(lab: &Lab, i: usize, what: &str) -> String {
    poll_until(&format!("rs{i}'s diagnosis never said {what:?}"), Duration::from_secs(20), || {
        let s = lab.status_json().unwrap_or_else(|e| panic!("{e}"));
        let rip = lab::rip(i).to_string();
        let d = s["services"][0]["real_servers"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["address"] == rip.as_str()))
            .map(|r| r["diagnosis"].to_string())
            .unwrap_or_default();
        if d.contains(what) {
            Ok(d)
        } else {
            Err(d)
        }
    })
}

fn event_lines(lab: &Lab) -> Vec<String> {
    let s = lab.status_json().unwrap_or_else(|e| panic!("{e}"));
    s["health_events"]
        .as_array()
        .map(|a| a.iter().map(|e| format!("{} {} -> {}: {}", e["server"], e["from"], e["to"], e["reason"])).collect())
        .unwrap_or_default()
}

fn checks_through_the_dr_path(layout: Layout) {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build(layout, 4).unwrap_or_else(|e| panic!("lab: {e}"));
    let check = r#"{"type": "http", "path": "/", "interval_ms": 500, "timeout_ms": 500, "rise": 2, "fall": 2}"#;
    let cfg = lab.config(&checked_service(check, true));
    lab.start_netfw(&cfg).unwrap_or_else(|e| panic!("{e}"));
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    for i in 1..=3 {
        wait_state(&lab, i, "up");
    }

    // 1. rs1's HTTP service stops: its address answers with resets. Requests fail only until
    // it is marked down; none after; its status says why; restarted, it comes back.
    lab.stop_server(1);
    let (took, why) = wait_state(&lab, 1, "down");
    println!("{layout:?}: rs1 stopped: marked down after {took:?} ({why})");
    assert!(why.contains("connection refused"), "{why}");
    let (servers, errors) = paced_requests(&lab, 40);
    assert_eq!(errors, 0, "requests failed after rs1 was marked down: {servers:?}");
    assert_eq!(servers.get("rs1"), None, "{servers:?}");
    assert_eq!(servers.values().sum::<u64>(), 40);
    let status = lab.status().unwrap();
    assert!(status.contains("DOWN (connection refused)"), "the console table says why: {status}");
    lab.restart_server(1, &[]).unwrap_or_else(|e| panic!("{e}"));
    let (took, _) = wait_state(&lab, 1, "up");
    println!("{layout:?}: rs1 restarted: up after {took:?}");
    assert!(server_counts(&lab.labtool(&lab.ns("client"), &["get", "--to", &format!("{}:80", lab::VIP), "--count", "9"]).unwrap())
        .contains_key("rs1"));

    // 2. rs2 stops answering at all (its link goes down): "no answer".
    lab.ip(&lab.ns("rs2"), &["link", "set", "eth0", "down"]).unwrap();
    let (took, why) = wait_state(&lab, 2, "down");
    println!("{layout:?}: rs2's link down: marked down after {took:?} ({why})");
    assert!(why.contains("no answer within 500 ms"), "{why}");
    let (servers, errors) = paced_requests(&lab, 20);
    assert_eq!((errors, servers.get("rs2")), (0, None), "{servers:?}");
    lab.ip(&lab.ns("rs2"), &["link", "set", "eth0", "up"]).unwrap();
    lab.ip(&lab.ns("rs2"), &["route", "replace", "default", "via", "198.18.0.1"]).unwrap();
    wait_state(&lab, 2, "up");

    // 3. rs3 loses the VIP from lo (seed 001, real-server step 2): its own address still
    // answers, but the DR-path check does not, and it goes down; restored, it comes back.
    let vip_lo = format!("{}/32", lab::VIP);
    lab.ip(&lab.ns("rs3"), &["addr", "del", &vip_lo, "dev", "lo"]).unwrap();
    let (_, why) = wait_state(&lab, 3, "down");
    assert!(why.contains("no answer within 500 ms (http GET / to 203.0.113.10:80 through the DR path)"), "{why}");
    lab.exec(&lab.ns("router"), &[qemu::proc::bin("labtool").unwrap().to_str().unwrap(), "probe", &format!("{}:80", lab::rip(3))])
        .unwrap_or_else(|e| panic!("rs3's own address should still answer: {e}"));
    // The doctor tells this from a dead server: the same check to its RIP passes.
    let d = wait_diagnosis(&lab, 3, "is not on its lo");
    println!("{layout:?}: rs3 diagnosis: {d}");
    assert!(lab.status().unwrap().contains("! the check through the DR path fails"), "the console shows it");
    let (servers, errors) = paced_requests(&lab, 20);
    assert_eq!((errors, servers.get("rs3")), (0, None), "no request is lost to the server without the VIP: {servers:?}");
    lab.ip(&lab.ns("rs3"), &["addr", "add", &vip_lo, "dev", "lo"]).unwrap();
    wait_state(&lab, 3, "up");

    // The doctor, for what checks cannot see. rs2's default gateway becomes the director
    // (seed 001, rule 7): its checks pass (the DIP is on-link), but its replies to clients
    // reach the director, which says so.
    lab.ip(&lab.ns("rs2"), &["route", "replace", "default", "via", &lab::DIP.to_string()]).unwrap();
    let to = format!("{}:80", lab::VIP);
    let _ = lab.labtool(&lab.ns("client"), &["get", "--to", &to, "--count", "6"]);
    let d = wait_diagnosis(&lab, 2, "its replies come back through the director");
    println!("{layout:?}: rs2 diagnosis: {d}");
    assert_eq!(health(&lab, 2).0, "up", "its checks still pass: only the doctor sees this");
    lab.ip(&lab.ns("rs2"), &["route", "replace", "default", "via", "198.18.0.1"]).unwrap();
    // rs1 announces the VIP (arp_announce=0, seeds 000/002): resolving the router for a reply
    // from the VIP, it asks with the VIP as sender.
    for c in ["all", "eth0"] {
        lab.sysctl(&lab.ns("rs1"), &format!("net.ipv4.conf.{c}.arp_announce=0")).unwrap();
    }
    lab.ip(&lab.ns("rs1"), &["neigh", "flush", "dev", "eth0"]).unwrap();
    let _ = lab.labtool(&lab.ns("client"), &["get", "--to", &to, "--count", "6"]);
    let d = wait_diagnosis(&lab, 1, "it announces the VIP");
    println!("{layout:?}: rs1 diagnosis: {d}");
    for c in ["all", "eth0"] {
        lab.sysctl(&lab.ns("rs1"), &format!("net.ipv4.conf.{c}.arp_announce=2")).unwrap();
    }
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);

    // 5. Every server down: the sorry server (rs4) answers, and the service says so.
    for i in 1..=3 {
        lab.stop_server(i);
    }
    for i in 1..=3 {
        wait_state(&lab, i, "down");
    }
    let s = lab.status_json().unwrap();
    assert_eq!(s["services"][0]["state"], "sorry", "{s}");
    let (servers, errors) = paced_requests(&lab, 10);
    assert_eq!((errors, servers.get("rs4").copied()), (0, Some(10)), "{servers:?}");
    let s = lab.status_json().unwrap();
    assert!(s["events"]["sorry_flows"].as_u64() >= Some(10), "{s}");
    // Without a sorry server the service is DOWN and new flows are dropped and counted.
    let cfg = lab.config(&checked_service(check, false));
    lab.reload(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let drops_before = lab.status_json().unwrap()["drops"]["no_usable_server"].as_u64().unwrap_or(0);
    let (servers, errors) = paced_requests(&lab, 4);
    assert_eq!((errors, servers.len()), (4, 0), "{servers:?}");
    let s = lab.status_json().unwrap();
    assert_eq!(s["services"][0]["state"], "down", "the state of every server survived the reload: {s}");
    assert!(s["drops"]["no_usable_server"].as_u64().unwrap_or(0) >= drops_before + 4, "{s}");
    assert!(lab.status().unwrap().contains(" DOWN "), "{}", lab.status().unwrap());

    // Every transition is an event with its reason.
    let events = event_lines(&lab);
    println!("{layout:?}: health events:\n  {}", events.join("\n  "));
    assert!(events.iter().any(|e| e.contains("\"198.18.0.11\" \"up\" -> \"down\": \"connection refused")), "{events:?}");
    assert!(events.iter().any(|e| e.contains("\"198.18.0.11\" \"down\" -> \"up\": \"check passed")), "{events:?}");
    assert!(events.iter().any(|e| e.contains("\"198.18.0.12\" \"up\" -> \"down\": \"no answer within 500 ms")), "{events:?}");
    assert!(netfw_log_has(&lab, "netfw: health: "), "transitions are on the console");
}

fn netfw_log_has(lab: &Lab, what: &str) -> bool {
    lab.log("netfw").contains(what)
}

#[test]
fn a_dead_server_is_taken_out_and_brought_back_through_the_dr_path_two_arm() {
    checks_through_the_dr_path(Layout::TwoArm);
}

#[test]
fn a_dead_server_is_taken_out_and_brought_back_through_the_dr_path_one_arm() {
    checks_through_the_dr_path(Layout::OneArm);
}

/// Proof 4: a server that flaps faster than rise/fall allow (every other answer a 503) keeps its
/// state: up, with no event, though its probes fail half the time.
#[test]
fn a_server_flapping_faster_than_rise_and_fall_does_not_flap_its_state() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build(Layout::TwoArm, 3).unwrap_or_else(|e| panic!("lab: {e}"));
    // Checks to the RIP: one probe per answer of the server, so the answers alternate
    // exactly (a check through the DR path adds a probe of the RIP after each failure).
    // Only the probes reach rs1 from here on (no client traffic), so its answers to them
    // alternate: the lab's own "is it listening" connection takes the first 503, the first
    // probe passes, the next fails, and so on.
    lab.restart_server(1, &["--flap"]).unwrap_or_else(|e| panic!("{e}"));
    let check = r#"{"type": "http", "via": "rip", "interval_ms": 300, "timeout_ms": 300, "rise": 2, "fall": 2}"#;
    let cfg = lab.config(&checked_service(check, false));
    lab.start_netfw(&cfg).unwrap_or_else(|e| panic!("{e}"));
    poll_until("rs1 was never probed", Duration::from_secs(20), || {
        let (state, last) = health(&lab, 1);
        if last.starts_with("check passed") {
            Ok(())
        } else {
            Err(format!("{state} {last}"))
        }
    });
    let events_before = event_lines(&lab).len();
    let mut seen = std::collections::BTreeSet::new();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(4) {
        let (state, last) = health(&lab, 1);
        assert_eq!(state, "up", "rs1 flapped its state: {last}; {:?}", event_lines(&lab));
        seen.insert(last.split(" (").next().unwrap_or_default().to_string());
        std::thread::sleep(Duration::from_millis(40));
    }
    println!("flapping rs1: results seen {seen:?}");
    assert!(seen.contains("HTTP 503") && seen.contains("check passed"), "the probes did see it flap: {seen:?}");
    assert_eq!(event_lines(&lab).len(), events_before, "no event while it flaps: {:?}", event_lines(&lab));
}

/// The other check types, end to end: `tcp` on the HTTP service, `udp` on the DNS-like one
/// (each server answers a datagram with its name) and `https` on the HTTPS one (TLS through
/// the DR path, a self-signed certificate); a stopped server fails all three, each with its
/// own reason, and comes back on all; a UDP service that answers from the RIP fails the check
/// through the DR path.
#[test]
fn tcp_udp_and_https_checks_take_a_stopped_server_out_of_every_service() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build(Layout::OneArm, 2).unwrap_or_else(|e| panic!("lab: {e}"));
    let rs = |port: u16| {
        (1..=2).map(|i| format!(r#"{{"address": "{}"}}"#, lab::rip(i))).collect::<Vec<_>>().join(", ") + &format!("], \"port\": {port}")
    };
    let services = format!(
        r#"[{{"vip": "{vip}", "protocol": "tcp", "scheduler": "rr", "health_check": {{"type": "tcp"}}, "real_servers": [{}}},
            {{"vip": "{vip}", "protocol": "udp", "scheduler": "rr", "health_check": {{"type": "udp", "send": "6865616c7468"}}, "real_servers": [{}}},
            {{"vip": "{vip}", "protocol": "tcp", "scheduler": "rr", "health_check": {{"type": "https", "path": "/"}}, "real_servers": [{}}}]"#,
        rs(80),
        rs(53),
        rs(443),
        vip = lab::VIP
    );
    let cfg = lab.config(&services);
    lab.start_netfw(&cfg).unwrap_or_else(|e| panic!("{e}"));
    for svc in 0..3 {
        for i in 1..=2 {
            wait_check(&lab, svc, i, "up", "check passed");
        }
    }
    lab.stop_server(1);
    wait_check(&lab, 0, 1, "down", "connection refused");
    wait_check(&lab, 1, 1, "down", "no answer within 500 ms");
    wait_check(&lab, 2, 1, "down", "connection refused");
    assert_eq!(service_server(&lab, 0, 2).0, "up");
    assert_eq!(service_server(&lab, 2, 2).0, "up");
    lab.restart_server(1, &[]).unwrap_or_else(|e| panic!("{e}"));
    for svc in 0..3 {
        wait_check(&lab, svc, 1, "up", "check passed");
    }
    let s = lab.status_json().unwrap_or_else(|e| panic!("{e}"));
    let check = &s["services"][2]["real_servers"][0]["health"]["check"];
    assert_eq!(check, "https GET / to 203.0.113.10:443 through the DR path", "{s}");
    // rs2 serves plain HTTP where HTTPS should be: it waits for a request line that the TLS
    // greeting never completes, so the check hears nothing (a server that answers the
    // greeting with an error fails with "the TLS handshake failed": the unit tests). Its
    // plain HTTP service is fine.
    lab.restart_server(2, &["--tls-plain"]).unwrap_or_else(|e| panic!("{e}"));
    wait_check(&lab, 2, 2, "down", "no answer within 500 ms");
    assert_eq!(service_server(&lab, 0, 2).0, "up");
    // rs2's UDP service answers from its own address (a wildcard socket): clients would drop
    // its replies, and the check through the DR path says so.
    lab.restart_server(2, &["--udp-bind", "0.0.0.0"]).unwrap_or_else(|e| panic!("{e}"));
    wait_check(&lab, 1, 2, "down", "the UDP reply came from its own address, not the VIP");
    assert_eq!(service_server(&lab, 0, 2).0, "up", "its TCP service is fine");
}

/// Service `svc`'s real server `i`: (state, last result).
fn service_server(lab: &Lab, svc: usize, i: usize) -> (String, String) {
    let s = lab.status_json().unwrap_or_else(|e| panic!("{e}"));
    let h = &s["services"][svc]["real_servers"][i - 1]["health"];
    (h["state"].as_str().unwrap_or("none").to_string(), h["last"].as_str().unwrap_or_default().to_string())
}

fn wait_check(lab: &Lab, svc: usize, i: usize, state: &str, last: &str) {
    poll_until(&format!("service {svc} rs{i} never {state} ({last})"), Duration::from_secs(20), || {
        let (s, l) = service_server(lab, svc, i);
        if s == state && l.starts_with(last) {
            Ok(())
        } else {
            Err(format!("{s} {l}"))
        }
    });
}
