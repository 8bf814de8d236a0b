//! Seed 001's FTP behind the VIP: Debian's vsftpd on each real server (anonymous, passive
//! ports 10000–20000 as the seed sets them), curl as the client in passive mode. In forwarder
//! mode the control connection (port 21) and the passive data connection (a port of the range)
//! are two services, and only a persistence group keeps them on one real server. In ipvs mode
//! (in the VM): LVS's own way, one persistent service of every port (port 0); then the same
//! two services, the range a firewall-mark service, with and without the group (one
//! firewall-mark service for both).

use std::time::Duration;

use qemu::lab::{self, Lab, Layout};
use qemu::vm::Firmware;
use tests::{one_lab_at_a_time, one_line, poll_until};

/// The lab's three real servers as the config's `real_servers` entries (joined by ", ").
fn real_servers() -> String {
    (1..=3).map(|i| format!(r#"{{"address": "{}"}}"#, lab::rip(i))).collect::<Vec<_>>().join(", ")
}

/// Port 21 and the passive range, rr over three servers, persistent 5 s; in group "ftp" or
/// not.
fn ftp_services(group: bool) -> String {
    let rs = real_servers();
    let group = if group { r#", "persistence_group": "ftp""# } else { "" };
    let svc = |ports: &str| {
        format!(
            r#"{{"vip": "{}", "protocol": "tcp", {ports}, "scheduler": "rr", "persistence_s": 5{group}, "real_servers": [{}]}}"#,
            lab::VIP,
            rs
        )
    };
    format!("[{}, {}]", svc(r#""port": 21"#), svc(r#""ports": "10000-20000""#))
}

/// Another client's control connection that opens no data connection (a login given up):
/// the control service's round robin moves one on, as interleaved clients move it.
fn another_clients_control_connection(lab: &Lab) {
    let to = format!("{}:21", lab::VIP);
    lab.labtool(&lab.ns("client"), &["probe", &to, "--from", "198.51.100.3"]).unwrap_or_else(|e| panic!("{e}"));
}

/// `n` passive downloads of `whoami.txt` (each a new control and data connection): the
/// servers that answered, and the failures.
fn downloads(lab: &Lab, n: usize) -> (Vec<String>, Vec<String>) {
    let url = format!("ftp://{}/whoami.txt", lab::VIP);
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for _ in 0..n {
        match lab.exec(&lab.ns("client"), &["curl", "-sS", "--max-time", "10", &url]) {
            Ok(body) => ok.push(body.trim().to_string()),
            Err(e) => failed.push(e.to_string()),
        }
    }
    (ok, failed)
}

/// One more download, verbose, which must fail where seed 001's does: after the login over
/// port 21 and the server's passive answer, at the data connection.
fn fails_at_the_data_connection(lab: &Lab) {
    let url = format!("ftp://{}/whoami.txt", lab::VIP);
    let e = match lab.exec(&lab.ns("client"), &["curl", "-sS", "-v", "--max-time", "10", &url]) {
        Ok(body) => panic!("the download worked: {body}"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("< 230") && e.contains("< 227 Entering Passive Mode") && e.contains("curl: (7)"), "{e}");
}

/// The lab's config for `services`, with flows that end within seconds of their last packet
/// (so the connection list can be watched emptying).
fn config(lab: &Lab, services: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&lab.config(services)).unwrap_or_else(|e| panic!("{e}"));
    v["timeouts"] = serde_json::json!({"tcp_syn_s": 2, "tcp_unconfirmed_s": 2, "tcp_established_s": 5, "tcp_fin_s": 2, "tcp_close_s": 2});
    v.to_string()
}

/// `netfw status --connections` with `filter` flags, parsed.
fn connections(lab: &Lab, filter: &[&str]) -> serde_json::Value {
    let netfw = qemu::proc::bin("netfw").unwrap_or_else(|e| panic!("{e}"));
    let ctl = lab.control_path();
    let mut args =
        vec![netfw.to_str().unwrap_or_default(), "status", "--connections", "--json", "--control", ctl.to_str().unwrap_or_default()];
    args.extend_from_slice(filter);
    let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ftp_passive_through_the_forwarder_needs_the_persistence_group() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build(Layout::TwoArm, 3).unwrap_or_else(|e| panic!("lab: {e}"));
    for i in 1..=3 {
        lab.spawn_ftp_server(i).unwrap_or_else(|e| panic!("{e}"));
    }
    lab.start_netfw(&config(&lab, &ftp_services(false))).unwrap_or_else(|e| panic!("{e}"));
    lab.wait_resolved().unwrap_or_else(|e| panic!("{e}"));

    // Without the group (seed 001's failure): the data connection goes where the range's own
    // scheduler puts it, a server with no passive listener for it.
    another_clients_control_connection(&lab);
    let (ok, failed) = downloads(&lab, 20);
    println!("without the group: {} downloads, {} failed (first: {:?})", ok.len(), failed.len(), failed.first());
    assert!(failed.len() >= 10, "without a group the control and data connections should part: {ok:?}");
    // curl's code 7: it logged in over port 21, and its data connection was refused.
    assert!(failed.iter().all(|f| f.contains("curl: (7)")), "{failed:?}");
    fails_at_the_data_connection(&lab);
    // Their flows and templates age out of the connection list.
    let listed = connections(&lab, &["--client", &lab::CLIENT.to_string()]);
    assert!(listed["entries"].as_array().is_some_and(|e| e.len() >= 20), "{listed}");
    aged_out(&lab);

    // With the group: the data connection follows the control connection's server.
    let answer = lab.reload(&config(&lab, &ftp_services(true))).unwrap_or_else(|e| panic!("{e}"));
    println!("reload: {answer}");
    lab.wait_resolved().unwrap_or_else(|e| panic!("{e}"));
    another_clients_control_connection(&lab);
    let (ok, failed) = downloads(&lab, 20);
    assert!(failed.is_empty(), "with the group every download works: {failed:?}\n{}", lab.status().unwrap_or_default());
    assert_eq!(ok.len(), 20);
    assert!(ok.iter().all(|s| ["rs1", "rs2", "rs3"].contains(&s.as_str())), "{ok:?}");
    // A listing goes over a passive data connection too.
    let list = lab.exec(&lab.ns("client"), &["curl", "-sS", "--max-time", "10", &format!("ftp://{}/", lab::VIP)]);
    assert!(list.as_ref().is_ok_and(|l| l.contains("whoami.txt")), "{list:?}");
    let status = lab.status().unwrap_or_default();
    println!("{status}");
    assert!(status.contains("TCP  203.0.113.10:10000-20000 rr persistent 5 group ftp"), "{status}");

    // The connection list: the client's template of group ftp (seed 001's NONE line), and its
    // flows to port 21 and to the range, all on the template's server.
    let client = lab::CLIENT.to_string();
    let list = connections(&lab, &["--client", &client]);
    println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
    let entries = list["entries"].as_array().cloned().unwrap_or_default();
    let templates: Vec<&serde_json::Value> = entries.iter().filter(|e| e["state"] == "NONE").collect();
    assert_eq!(templates.len(), 1, "one template for the client in the group: {entries:?}");
    assert_eq!((&templates[0]["protocol"], &templates[0]["virtual_service"]), (&"IP".into(), &"ftp".into()));
    let server = templates[0]["server"].as_str().unwrap_or_default().to_string();
    let flows: Vec<&serde_json::Value> = entries.iter().filter(|e| e["state"] != "NONE").collect();
    let port =
        |e: &serde_json::Value| e["virtual_service"].as_str().and_then(|v| v.rsplit_once(':')).and_then(|(_, p)| p.parse::<u16>().ok());
    assert!(flows.iter().any(|e| port(e) == Some(21)), "control flows listed: {flows:?}");
    assert!(flows.iter().any(|e| port(e).is_some_and(|p| (10000..=20000).contains(&p))), "data flows listed: {flows:?}");
    assert!(flows.iter().all(|e| e["server"] == server.as_str()), "every flow on the group's server {server}: {flows:?}");
    // Filtered by another real server, the client has nothing there.
    let other = (1..=3).map(|i| lab::rip(i).to_string()).find(|r| *r != server).unwrap_or_default();
    let there = connections(&lab, &["--client", &client, "--server", &other]);
    assert_eq!(there["entries"].as_array().map(Vec::len), Some(0), "{there}");
    // A bounded list says how many more there were.
    let one = connections(&lab, &["--limit", "1"]);
    assert_eq!(one["entries"].as_array().map(Vec::len), Some(1));
    assert!(one["more"].as_u64().unwrap_or(0) >= 1, "{one}");

    // Idle, flows and template age out (fin/close 2 s, persistence 5 s).
    aged_out(&lab);
}

/// Wait until the client has nothing left in the connection list: its flows (fin and close
/// 2 s) and templates (persistence 5 s) aged out. Fails after a minute.
fn aged_out(lab: &Lab) {
    let client = lab::CLIENT.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = connections(lab, &["--client", &client]);
        if left["entries"].as_array().is_some_and(Vec::is_empty) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "still listed after 60 s: {left}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The last console listing of the connection list: each row's words after "connections: ".
fn console_connections(lab: &mut Lab) -> Vec<Vec<String>> {
    let nth = lab.vm().console_log().matches("connections: end of table").count() + 1;
    lab.vm().send("status --connections").unwrap_or_else(|e| panic!("{e}"));
    lab.vm().wait_for_nth("connections: end of table", nth, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let log = lab.vm().console_log();
    let last = log.rsplit("IPVS connection entries").next().unwrap_or_default().to_string();
    last.lines()
        .skip(1)
        .take_while(|l| !l.contains("connections: end of table"))
        .filter_map(|l| l.split_once("connections: ").map(|(_, r)| r.split_whitespace().map(str::to_string).collect()))
        .collect()
}

/// Apply `services` in ipvs mode on the VM's console and wait until it is in force.
fn apply_in_ipvs_mode(lab: &mut Lab, services: &str) {
    let done = "config saved and applied: mode ipvs";
    let nth = lab.vm().console_log().matches(done).count() + 1;
    let cfg = one_line(lab, services, "ipvs");
    lab.vm().send(&format!("apply-config {cfg}")).unwrap_or_else(|e| panic!("{e}"));
    lab.vm().wait_for_nth(done, nth, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn ftp_passive_through_ipvs_with_a_persistent_service_of_every_port() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap_or_else(|e| panic!("lab: {e}"));
    for i in 1..=3 {
        lab.spawn_ftp_server(i).unwrap_or_else(|e| panic!("{e}"));
    }
    let rs = real_servers();
    let services = format!(
        r#"[{{"vip": "{}", "protocol": "tcp", "port": 0, "scheduler": "rr", "persistence_s": 300, "real_servers": [{}]}}]"#,
        lab::VIP,
        rs
    );
    lab.write_vm_config(&one_line(&lab, &services, "ipvs")).unwrap_or_else(|e| panic!("{e}"));
    lab.boot_vm(Firmware::Direct).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("ftp://{}/whoami.txt", lab::VIP);
    let get = |lab: &Lab, from: &str| lab.exec(&lab.ns("client"), &["curl", "-sS", "--max-time", "10", "--interface", from, &url]);
    poll_until("the VIP never served FTP", Duration::from_secs(60), || get(&lab, "198.51.100.9").map_err(|e| e.0));
    // Eight clients (the client namespace's addresses), 20 downloads: each a control and a
    // passive data connection, kept together by the kernel's port-0 template.
    let mut served = Vec::new();
    for i in 0..20 {
        let from = format!("198.51.100.{}", 2 + i % 8);
        let body = get(&lab, &from).unwrap_or_else(|e| panic!("download {i} from {from}: {e}"));
        served.push((from, body.trim().to_string()));
    }
    println!("ipvs mode, port 0: {served:?}");
    // Each client stays on one server (persistence), and the clients spread over all three.
    for (from, server) in &served {
        assert!(served.iter().filter(|(f, _)| f == from).all(|(_, s)| s == server), "{from} moved: {served:?}");
    }
    let servers: std::collections::BTreeSet<&str> = served.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(servers.len(), 3, "{served:?}");
    // The kernel's connection list: one template per client (the kernel shows NONE, or
    // ASSURED once its connections were established), on the server that client's flows reached.
    // Rows: protocol, expiry, state, client, virtual, server.
    let rows: Vec<Vec<String>> = console_connections(&mut lab).into_iter().filter(|r| r.len() > 5 && r[0] == "TCP").collect();
    let template = |r: &Vec<String>| r[2] == "NONE" || r[2] == "ASSURED";
    let templates: Vec<&Vec<String>> = rows.iter().filter(|r| template(r)).collect();
    assert_eq!(templates.len(), 8, "one template per client: {rows:?}");
    for t in &templates {
        let (client, server) = (t[3].trim_end_matches(":0"), t[5].trim_end_matches(":0"));
        assert_eq!(t[4], format!("{}:0", lab::VIP), "{t:?}");
        let theirs: Vec<&Vec<String>> = rows.iter().filter(|r| r[3].starts_with(&format!("{client}:")) && !template(r)).collect();
        assert!(!theirs.is_empty() && theirs.iter().all(|r| r[5].starts_with(&format!("{server}:"))), "{client} on {server}: {theirs:?}");
    }

    // Port 21 and the passive range as two services, as in the forwarder. IPVS looks a packet
    // up by its firewall mark first: the range's mark takes the data connection to the
    // range's own scheduler, and (without the group) to another server than the control's.
    apply_in_ipvs_mode(&mut lab, &ftp_services(false));
    assert!(lab.vm().console_log().contains("ipvs: firewall marks for port ranges and persistence groups: 2 rules on"));
    another_clients_control_connection(&lab);
    let (ok, failed) = downloads(&lab, 20);
    println!("ipvs mode without the group: {} downloads, {} failed (first: {:?})", ok.len(), failed.len(), failed.first());
    assert!(failed.len() >= 10, "without a group the control and data connections should part: {ok:?}");
    assert!(failed.iter().all(|f| f.contains("curl: (7)")), "{failed:?}");
    fails_at_the_data_connection(&lab);

    // With the group: one firewall-mark service for port 21 and the range, one template per
    // client across both.
    apply_in_ipvs_mode(&mut lab, &ftp_services(true));
    another_clients_control_connection(&lab);
    let (ok, failed) = downloads(&lab, 20);
    assert!(failed.is_empty(), "with the group every download works: {failed:?}");
    assert_eq!(ok.len(), 20);
    let table = lab.vm().table("status", Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let table = table.rsplit("status: netfw ipvs (").next().unwrap_or_default().to_string();
    for ports in ["21", "10000-20000"] {
        assert!(table.contains(&format!("TCP  203.0.113.10:{ports} rr persistent 5 group ftp")), "{table}");
    }
    let rows = console_connections(&mut lab);
    println!("ipvs mode with the group: {rows:?}");
    let client = lab::CLIENT.to_string();
    let template: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r.first().is_some_and(|p| p == "IP") && r.get(3).is_some_and(|c| c.starts_with(&format!("{client}:"))))
        .collect();
    assert_eq!(template.len(), 1, "the client's one template of group ftp: {rows:?}");
    assert_eq!(template[0].get(4).map(String::as_str), Some("ftp"), "{template:?}");
    let server = template[0].get(5).map(|s| s.trim_end_matches(":0").to_string()).unwrap_or_default();
    let flows: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r.first().is_some_and(|p| p == "TCP") && r.get(3).is_some_and(|c| c.starts_with(&format!("{client}:"))))
        .collect();
    let port = |r: &Vec<String>| r.get(4).and_then(|v| v.rsplit_once(':')).and_then(|(_, p)| p.parse::<u16>().ok());
    assert!(
        flows.iter().any(|r| port(r) == Some(21)) && flows.iter().any(|r| port(r).is_some_and(|p| (10000..=20000).contains(&p))),
        "{flows:?}"
    );
    assert!(
        flows.iter().all(|r| r.get(5).is_some_and(|s| s.starts_with(&format!("{server}:")))),
        "every flow on the group's server {server}: {flows:?}"
    );
}
