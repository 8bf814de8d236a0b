//! Issue 10's correctness proof through the appliance VM: bulk data client → real server (the
//! direction that crosses the director) in both modes and both layouts. virtio-net merges
//! received frames by default (GRO, and the host's TSO through the guest offloads); the
//! upload must arrive whole at a rate comparable with IPVS's in the same run (printed, not
//! asserted: tests never assert timings). The forwarder runs both ways it can: AF_XDP with
//! the XDP fast path (`io` auto on virtio_net), and AF_PACKET with the tc fast path, which
//! forwards the host's merged frames whole.

use std::time::Duration;

use qemu::lab::{self, Lab, Layout};
use qemu::vm::Firmware;
use tests::{one_lab_at_a_time, service, wait_forwarding};

fn upload(layout: Layout, mode: &str, io: &str) -> f64 {
    let mut lab = Lab::build_for_vm(layout, 2).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&lab.config(&format!("[{}]", service("rr", "tcp", 80, 0, &[(1, 1), (2, 1)])))).unwrap();
    v["mode"] = mode.into();
    v["io"] = io.into();
    lab.write_vm_config(&v.to_string()).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2"]);
    if mode == "forwarder" && io == "af_packet" {
        let log = lab.vm().console_log();
        assert!(log.contains("netfw: established flows forwarded in tc (up to"), "the tc path is in place:\n{log}");
        assert!(log.contains("eth1: receive merging left as it is (tc forwards"), "{log}");
    }
    if mode == "forwarder" && io == "auto" {
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
    println!("{layout:?}, {mode} mode (io {io}): 20 MB upload client -> real server at {rate:.0} Mbit/s");
    if mode == "forwarder" {
        // The established upload went through the kernel's fast path, not netfw's socket.
        let log = lab.vm().table("status", Duration::from_secs(30)).unwrap();
        let line = log.lines().rev().find(|l| l.contains("status:   forwarded_in_kernel")).unwrap_or_default().to_string();
        let n: u64 = line.split_whitespace().last().and_then(|x| x.parse().ok()).unwrap_or(0);
        assert!(n > 0, "{layout:?} io {io}: the kernel forwarded the upload: {line}");
    }
    lab.vm().send("poweroff").unwrap();
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap();
    rate
}

#[test]
fn a_20_mb_upload_crosses_the_director_whole_in_both_modes_and_layouts() {
    let _g = one_lab_at_a_time();
    for layout in [Layout::TwoArm, Layout::OneArm] {
        let xdp = upload(layout, "forwarder", "auto");
        let tc = upload(layout, "forwarder", "af_packet");
        let ipvs = upload(layout, "ipvs", "auto");
        let r = |x: f64| x / ipvs.max(f64::MIN_POSITIVE);
        println!("{layout:?}: upload forwarder / ipvs = {:.2} (AF_XDP, XDP path), {:.2} (AF_PACKET, tc path)", r(xdp), r(tc));
    }
}
