//! Seed 001's FTP behind the VIP, in forwarder mode: Debian's vsftpd on each real server
//! (anonymous, passive ports 10000–20000 as the seed sets them), curl as the client in
//! passive mode. The control connection (port 21) and the passive data connection (a port of
//! the range) are two services; only a persistence group keeps them on one real server.

use qemu::lab::{self, Lab, Layout};
use tests::one_lab_at_a_time;

/// Port 21 and the passive range, rr over three servers, persistent 300 s; in group "ftp" or
/// not.
fn ftp_services(group: bool) -> String {
    let rs: Vec<String> = (1..=3).map(|i| format!(r#"{{"address": "{}"}}"#, lab::rip(i))).collect();
    let group = if group { r#", "persistence_group": "ftp""# } else { "" };
    let svc = |ports: &str| {
        format!(
            r#"{{"vip": "{}", "protocol": "tcp", {ports}, "scheduler": "rr", "persistence_s": 300{group}, "real_servers": [{}]}}"#,
            lab::VIP,
            rs.join(", ")
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

#[test]
fn ftp_passive_through_the_forwarder_needs_the_persistence_group() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build(Layout::TwoArm, 3).unwrap_or_else(|e| panic!("lab: {e}"));
    for i in 1..=3 {
        lab.spawn_ftp_server(i).unwrap_or_else(|e| panic!("{e}"));
    }
    lab.start_netfw(&lab.config(&ftp_services(false))).unwrap_or_else(|e| panic!("{e}"));
    lab.wait_resolved().unwrap_or_else(|e| panic!("{e}"));

    // Without the group (seed 001's failure): the data connection goes where the range's own
    // scheduler puts it, a server with no passive listener for it.
    another_clients_control_connection(&lab);
    let (ok, failed) = downloads(&lab, 20);
    println!("without the group: {} downloads, {} failed (first: {:?})", ok.len(), failed.len(), failed.first());
    assert!(failed.len() >= 10, "without a group the control and data connections should part: {ok:?}");
    // curl's code 7: it logged in over port 21, and its data connection was refused.
    assert!(failed.iter().all(|f| f.contains("curl: (7)")), "{failed:?}");

    // With the group: the data connection follows the control connection's server.
    let answer = lab.reload(&lab.config(&ftp_services(true))).unwrap_or_else(|e| panic!("{e}"));
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
    assert!(status.contains("TCP  203.0.113.10:10000-20000 rr persistent 300 group ftp"), "{status}");
}
