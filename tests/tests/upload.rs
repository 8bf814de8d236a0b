//! Issue 10's correctness proof through the appliance VM: bulk data client → real server (the
//! direction that crosses the director) in both modes and both layouts. virtio-net merges
//! received frames by default (GRO, and the host's TSO through the guest offloads); the
//! upload must arrive whole at a rate comparable with IPVS's in the same run (printed, not
//! asserted: tests never assert timings).

use std::time::Duration;

use qemu::lab::{self, Lab, Layout};
use qemu::vm::Firmware;
use tests::{one_lab_at_a_time, service, wait_forwarding};

fn upload(layout: Layout, mode: &str) -> f64 {
    let mut lab = Lab::build_for_vm(layout, 2).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&lab.config(&format!("[{}]", service("rr", "tcp", 80, 0, &[(1, 1), (2, 1)])))).unwrap();
    v["mode"] = mode.into();
    lab.write_vm_config(&v.to_string()).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2"]);
    if mode == "forwarder" {
        let log = lab.vm().console_log();
        assert!(log.contains("eth1: receive merging off ("), "netfw says what it did to the offloads:\n{log}");
        // The NICs have two queue pairs for one vCPU: with XDP attached virtio_net receives on
        // both, and netfw must have a socket on each, or half the flows would be lost.
        assert!(
            log.contains(", AF_XDP (native XDP, copy mode, 2 queues))"),
            "virtio_net runs netfw's XDP program in its driver, on both receive queues:\n{log}"
        );
    }
    let out = lab.labtool(&lab.ns("client"), &["upload", "--to", &format!("{}:80", lab::VIP), "--bytes", "20000000"]).unwrap();
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["received"].as_u64(), Some(20_000_000), "{layout:?} {mode}: the whole upload reached the real server: {out}");
    let rate = r["mbit_s"].as_f64().unwrap_or(0.0);
    println!("{layout:?}, {mode} mode: 20 MB upload client -> real server at {rate:.0} Mbit/s");
    lab.vm().send("poweroff").unwrap();
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap();
    rate
}

#[test]
fn a_20_mb_upload_crosses_the_director_whole_in_both_modes_and_layouts() {
    let _g = one_lab_at_a_time();
    for layout in [Layout::TwoArm, Layout::OneArm] {
        let fwd = upload(layout, "forwarder");
        let ipvs = upload(layout, "ipvs");
        println!("{layout:?}: upload forwarder / ipvs = {:.2}", fwd / ipvs.max(f64::MIN_POSITIVE));
    }
}
