//! Issue 15 (work in progress, branch issue-15): seed 001's FTP behind the VIP. Today a
//! service is one VIP:port, so the passive data connection has no service: this test records
//! what the client sees until port ranges and persistence groups exist.

use qemu::lab::{self, Lab, Layout};
use tests::{one_lab_at_a_time, service};

#[test]
fn ftp_passive_through_the_box_today() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build(Layout::TwoArm, 3).unwrap_or_else(|e| panic!("lab: {e}"));
    for i in 1..=3 {
        lab.spawn_ftp_server(i).unwrap_or_else(|e| panic!("{e}"));
    }
    let cfg = lab.config(&format!("[{}]", service("rr", "tcp", 21, 0, &[(1, 1), (2, 1), (3, 1)])));
    lab.start_netfw(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let client = lab.ns("client");
    let url = format!("ftp://{}/whoami.txt", lab::VIP);
    for _ in 0..3 {
        let r = lab.exec(&client, &["curl", "-sS", "--max-time", "5", &url]);
        println!("download: {r:?}");
    }
    println!("{}", lab.status().unwrap_or_default());
}
