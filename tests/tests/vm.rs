//! Issue 3's proofs: the appliance image booted in QEMU (TCG), driven as an operator would:
//! through its disk image, its serial console, its NICs and the ACPI power button.
//! Needs root, QEMU, OVMF and the built image (`tests/run` builds it).

use std::time::Duration;

use qemu::lab::{self, Lab, Layout};
use qemu::vm::{image_dir, Firmware, Vm};
use tests::{counts, http_requests, long_body, one_lab_at_a_time, service, wait_forwarding, Sniffer};

fn rr3() -> String {
    format!("[{}]", service("rr", "tcp", 80, 0, &[(1, 1), (2, 1), (3, 1)]))
}

fn fresh_disk(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("director-vm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(image_dir().join("director.img"), dir.join("director.img"))
        .expect("target/image/director.img: build it with `cargo run -p image -- build`");
    dir
}

#[test]
fn the_disk_image_boots_under_seabios_and_ovmf_and_powers_off_cleanly() {
    let _g = one_lab_at_a_time();
    let size = std::fs::metadata(image_dir().join("director.img")).unwrap().len();
    for fw in [Firmware::SeaBios, Firmware::Ovmf] {
        let dir = fresh_disk(&format!("{fw:?}"));
        let disk = dir.join("director.img");
        if fw == Firmware::SeaBios {
            // An operator's mistake the offline check cannot see: a NIC this box does not have.
            let cfg = dir.join("bad-nic.json");
            std::fs::write(&cfg, include_str!("../../docs/example-config.json").replace("\"eth1\"", "\"eth9\"")).unwrap();
            let set = std::process::Command::new(qemu::proc::bin("image").unwrap())
                .args(["config-set", "--disk", disk.to_str().unwrap(), "--config", cfg.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(set.status.success());
        }
        let mut vm = Vm::boot(&dir, &disk, fw, &[], None).unwrap();
        let t = vm.wait_for(qemu::READY_MARKER, Duration::from_secs(120)).unwrap();
        println!("{fw:?}: power-on to ready marker {:.1} s; director.img {:.1} MiB", t.as_secs_f64(), size as f64 / 1_048_576.0);
        let log = vm.console_log();
        // The bare-metal NIC drivers stay on the shelf in a VM (they cost seconds under TCG);
        // the virtio drivers and the watchdog QEMU has are loaded, and nothing failed.
        let modules = log.lines().find(|l| l.contains("kernel modules")).unwrap_or_else(|| panic!("{log}"));
        assert!(
            modules.contains("no device for: e1000, e1000e, igb, ixgbe, i40e, ice, mlx5_core") && !modules.contains("FAILED"),
            "{modules}"
        );
        assert!(!modules.contains("virtio") && !modules.contains("i6300esb"), "{modules}");
        if fw == Firmware::SeaBios {
            assert!(log.contains("CONFIG PROBLEM: nics.vip_side: no NIC named or with MAC eth9"), "{log}");
            assert!(log.contains("not forwarding until the config is fixed") && !log.contains("started netfw"), "{log}");
        } else {
            assert!(log.contains("CONFIG PROBLEM: no config at /mnt/config/director.json"), "{log}");
        }
        // SeaBIOS: poweroff from the console; OVMF: the ACPI power button.
        if fw == Firmware::SeaBios {
            vm.send("poweroff").unwrap();
        } else {
            vm.wait_for("watching the power button", Duration::from_secs(10)).unwrap();
            vm.press_power_button().unwrap();
            vm.wait_for("ACPI power button pressed", Duration::from_secs(30)).unwrap();
        }
        let st = vm.wait_exit(Duration::from_secs(60)).unwrap();
        assert!(st.success(), "QEMU exit {st}");
        let log = vm.console_log();
        assert!(log.contains("config partition unmounted cleanly"), "{log}");
        let clean = std::process::Command::new(qemu::proc::bin("image").unwrap())
            .args(["config-clean", "--disk", disk.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
        drop(vm);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Issue 2's DR proofs through the appliance VM, in a forwarding mode.
fn dr_proofs_through_the_vm(mode: &str, fw: Firmware) {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    lab.write_vm_config(&lab.config(&rr3()).replace("\"mode\": \"forwarder\"", &format!("\"mode\": \"{mode}\""))).unwrap();
    let t = lab.boot_vm(fw).unwrap();
    println!("{mode} mode: power-on to ready {:.1} s", t.as_secs_f64());
    lab.vm().wait_for(&format!("mode: {mode}"), Duration::from_secs(5)).unwrap();
    let rs1 = lab.ns("rs1");
    let sniff_rs1 = Sniffer::start(&mut lab, "sniff-rs1", &rs1, "eth0");
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    // Spread as the scheduler says.
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]), "{mode}");
    if mode == "ipvs" {
        // The status table reads IPVS's own counters: each real server took >= 10 connections.
        // IPVS folds its per-CPU counters into the totals on a 2 s timer: ask until they show.
        let conns = |log: &str, i: u32| -> Option<u64> {
            let line = log.lines().rev().find(|l| l.contains("status:") && l.contains(&format!("-> 198.18.0.1{i}:80")))?;
            let f: Vec<&str> = line.split("->").nth(1)?.split_whitespace().collect();
            // The same table as the forwarder's: the MAC the kernel resolved, then the weight.
            assert_eq!((f[1], f[2]), (lab::rs_mac(i as usize).as_str(), "1"), "{line}");
            f.get(5)?.parse().ok()
        };
        let mut ok = false;
        for n in 1..=15 {
            lab.vm().send("status").unwrap();
            lab.vm().wait_for_nth("status:   -> 198.18.0.13:80", n, Duration::from_secs(10)).unwrap();
            let log = lab.vm().console_log();
            if (1..=3).all(|i| conns(&log, i).is_some_and(|c| c >= 10)) {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(ok, "IPVS's counters never showed the 30 connections:\n{}", lab.vm().console_log());
    }
    // Replies never enter the VM: a 4 MB download puts far less than that into its NICs.
    let before = lab.tap_to_vm_bytes("tap1").unwrap() + lab.tap_to_vm_bytes("tap2").unwrap();
    let out = lab.labtool(&lab.ns("client"), &["long", "--to", &format!("{}:80", lab::VIP), "--bytes", "4000000"]).unwrap();
    long_body(&out, 4_000_000);
    let into_vm = lab.tap_to_vm_bytes("tap1").unwrap() + lab.tap_to_vm_bytes("tap2").unwrap() - before;
    assert!(into_vm < 1_000_000, "{mode}: {into_vm} bytes entered the VM during a 4 MB download: replies crossed it");
    // The router's neighbour entry for the VIP is the appliance's MAC.
    assert_eq!(lab.neighbour(&lab.ns("router"), lab::VIP).as_deref(), Some(lab::DIRECTOR_VIP_MAC), "{mode}");
    // The appliance's ARP requests for real servers carry the DIP, never the VIP.
    let cap = sniff_rs1.finish(&lab);
    let reqs: Vec<&serde_json::Value> = cap["arp"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["sender_mac"] == lab::DIRECTOR_RS_MAC && a["op"] == 1 && a["sender_ip"] != a["target_ip"])
        .collect();
    assert!(!reqs.is_empty(), "{mode}: no ARP request from the appliance seen on rs1: {cap}");
    for r in reqs {
        assert_eq!(r["sender_ip"], lab::DIP.to_string().as_str(), "{mode}: {r}");
    }
}

#[test]
fn dr_through_the_vm_in_forwarder_mode() {
    dr_proofs_through_the_vm("forwarder", Firmware::SeaBios);
}

#[test]
fn dr_through_the_vm_in_ipvs_mode() {
    dr_proofs_through_the_vm("ipvs", Firmware::Direct);
}

#[test]
fn a_killed_netfw_is_restarted_and_forwarding_resumes() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    lab.write_vm_config(&lab.config(&rr3())).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    lab.vm().send("restart netfw").unwrap();
    lab.vm().wait_for("netfw killed by signal 9", Duration::from_secs(30)).unwrap();
    lab.vm().wait_for_nth("started netfw", 2, Duration::from_secs(30)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]));
    lab.vm().send("status").unwrap();
    lab.vm().wait_for("netfw: pid", Duration::from_secs(10)).unwrap();
    lab.vm().wait_for("(restarts 1)", Duration::from_secs(10)).unwrap();
}

#[test]
fn the_config_survives_a_reboot_and_a_changed_config_is_used_after_the_next_boot() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    lab.write_vm_config(&lab.config(&rr3())).unwrap();
    lab.boot_vm(Firmware::SeaBios).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    lab.vm().send("reboot").unwrap();
    lab.vm().wait_for_nth(qemu::READY_MARKER, 2, Duration::from_secs(120)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]), "after a reboot");
    lab.vm().send("poweroff").unwrap();
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap();
    drop(lab.vm.take());
    // The operator changes the config on the disk; the next boot uses it.
    lab.write_vm_config(&lab.config(&format!("[{}]", service("wrr", "tcp", 80, 0, &[(1, 3), (2, 2), (3, 1)])))).unwrap();
    lab.boot_vm(Firmware::SeaBios).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    let c = http_requests(&lab, 60, None);
    assert_eq!(c.values().sum::<u64>(), 60);
    assert!(c["rs1"] > c["rs2"] && c["rs2"] > c["rs3"], "wrr 3:2:1 after the next boot: {c:?}");
}

#[test]
fn the_management_nic_takes_a_static_address_or_dhcp_with_a_link_local_fallback() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    let router = lab.ns("router");
    // Static, from the config.
    lab.write_vm_config(&lab.config_with_management(&rr3(), "eth0", Some("198.19.0.10/24"))).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("management address: 198.19.0.10/24 on eth0 (static)", Duration::from_secs(5)).unwrap();
    lab.exec(&router, &["ping", "-c", "1", "-W", "5", "198.19.0.10"]).unwrap();
    lab.vm().send("poweroff").unwrap();
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap();
    drop(lab.vm.take());

    // No address (the NIC named by its MAC), no DHCP server: the link-local fallback.
    lab.write_vm_config(&lab.config_with_management(&rr3(), lab::VM_MGMT_MAC, None)).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("management address: 169.254.209.1/16 (link-local fallback", Duration::from_secs(5)).unwrap();
    // A DHCP server appears: the retry takes a lease, which replaces the fallback.
    lab.start_dhcp_server().unwrap();
    lab.vm().wait_for("dhcp: management address 198.19.0.1", Duration::from_secs(60)).unwrap();
    let log = lab.vm().console_log();
    let addr = log.split("dhcp: management address ").nth(1).and_then(|r| r.split('/').next()).unwrap().to_string();
    // dnsmasq pinged the address before offering it, so the router's neighbour entry for it
    // may still be failing for a moment: ping thrice (ping succeeds if any reply comes).
    lab.exec(&router, &["ping", "-c", "3", "-W", "5", &addr]).unwrap_or_else(|e| panic!("ping {addr}: {e}"));
}
