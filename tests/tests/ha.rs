//! Issue 12's proofs: two directors as an HA pair on the same segments, as netfw processes in
//! the namespace lab and as two appliance VMs in the QEMU lab (forwarder and ipvs mode). The
//! master dies (SIGKILL of netfw or of QEMU) while a client makes requests and uploads: the
//! backup takes over, the gap is printed, nothing fails afterwards, the uploads complete (the
//! flow table was synced), and the router's neighbour entry for the VIP stays the virtual MAC;
//! a clean stop or poweroff hands over at once; a returning master takes the flow table, then
//! the role; a stray box's adverts are ignored and counted; cutting the link between the two
//! makes both master, and restoring it leaves one, with the split brain shown; a master whose
//! NIC loses its link stands aside (fault). Needs root; run with `tests/run`.

use std::time::{Duration, Instant};

use qemu::lab::{self, Lab, Layout};
use qemu::vm::{Firmware, Vm};
use tests::{one_lab_at_a_time, poll_until, svc, wait_forwarding, Sniffer};

const VMAC: &str = "00:00:5e:00:01:33";
const KEY: &str = "a shared secret";
/// A third box on the VIP segment: 10 adverts of priority 254 for the pair's vrid, with
/// another key.
const STRAY: [&str; 15] = [
    "vrrp",
    "--dev",
    "bvip",
    "--src",
    "203.0.113.99",
    "--vrid",
    "51",
    "--priority",
    "254",
    "--key",
    "not the key",
    "--count",
    "10",
    "--interval-ms",
    "50",
];

/// One box's config: the lab's services, its DIP, and the pair.
fn pair_config(lab: &Lab, dip: std::net::Ipv4Addr, peer: std::net::Ipv4Addr, priority: u8, preempt: bool) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&lab.config(&svc(&[(1, 1), (2, 1)]))).unwrap_or_else(|e| panic!("{e}"));
    v["dip"] = format!("{dip}/24").into();
    v["ha"] =
        serde_json::json!({"peer": peer.to_string(), "vrid": 51, "priority": priority, "advert_ms": 200, "preempt": preempt, "key": KEY});
    v.to_string()
}

/// The HA part of a director's status.
fn ha(lab: &Lab, role: &str) -> serde_json::Value {
    lab.status_json_in(role).map(|s| s["ha"].clone()).unwrap_or_default()
}

/// Wait until the director in `role` is `state`; its HA status then.
fn wait_state(lab: &Lab, role: &str, state: &str) -> serde_json::Value {
    poll_until(&format!("{role} never became {state}"), Duration::from_secs(20), || {
        let h = ha(lab, role);
        if h["state"] == state {
            Ok(h)
        } else {
            Err(h.to_string())
        }
    })
}

/// A pair up: "director" (priority 200) master, "director2" (100) its backup, forwarding.
fn pair(preempt: bool) -> Lab {
    let mut lab = Lab::build(Layout::TwoArm, 2).unwrap_or_else(|e| panic!("{e}"));
    lab.add_peer_director().unwrap_or_else(|e| panic!("{e}"));
    let a = pair_config(&lab, lab::DIP, lab::PEER_DIP, 200, preempt);
    let b = pair_config(&lab, lab::PEER_DIP, lab::DIP, 100, preempt);
    lab.start_netfw_in("director", &a).unwrap_or_else(|e| panic!("{e}"));
    lab.start_netfw_in("director2", &b).unwrap_or_else(|e| panic!("{e}"));
    wait_state(&lab, "director", "master");
    let b = wait_state(&lab, "director2", "backup");
    assert_eq!(b["peer_advert"]["priority"], 200, "the backup hears the master: {b}");
    assert_eq!(b["peer_advert"]["same_services"], true, "{b}");
    wait_forwarding(&lab, &["rs1", "rs2"]);
    lab
}

/// The rest of the VIP's ARP seen on the router's segment: only the virtual MAC claimed it,
/// and someone did.
fn only_the_virtual_mac_claimed_the_vip(arps: &serde_json::Value) {
    let vip = lab::VIP.to_string();
    let about_vip: Vec<&serde_json::Value> =
        arps["arp"].as_array().map(|a| a.iter().filter(|x| x["sender_ip"] == vip.as_str()).collect()).unwrap_or_default();
    assert!(!about_vip.is_empty(), "the new master announced the VIP: {arps}");
    assert!(about_vip.iter().all(|x| x["sender_mac"] == VMAC), "only the virtual MAC ever claimed the VIP: {about_vip:?}");
}

fn watch_start(lab: &mut Lab) -> std::path::PathBuf {
    let stop = lab.dir().join("watch.stop");
    let _ = std::fs::remove_file(&stop);
    let tool = qemu::proc::bin("labtool").unwrap_or_else(|e| panic!("{e}"));
    let (client, to) = (lab.ns("client"), format!("{}:80", lab::VIP));
    let args = [
        tool.to_string_lossy().as_ref(),
        "watch",
        "--to",
        &to,
        "--interval-ms",
        "20",
        "--timeout-ms",
        "250",
        "--stop-file",
        &stop.to_string_lossy(),
    ]
    .map(str::to_string);
    lab.spawn("watch", &client, &args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{e}"));
    poll_until("the watcher never started", Duration::from_secs(5), || {
        if lab.log("watch").contains("ready") {
            Ok(())
        } else {
            Err(lab.log("watch"))
        }
    });
    stop
}

fn watch_result(lab: &Lab, stop: &std::path::Path) -> serde_json::Value {
    std::fs::write(stop, b"").unwrap_or_else(|e| panic!("{e}"));
    poll_until("the watcher never finished", Duration::from_secs(10), || {
        let log = lab.log("watch");
        log.lines()
            .find(|l| l.contains("longest_gap_ms"))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .ok_or(log)
    })
}

/// Uploads running through the VIP at once (client -> real server crosses the director).
const UPLOADS: usize = 4;

/// Start `UPLOADS` uploads of `bytes` each from the client through the VIP, paced at `mbit`
/// so they last across what the test does meanwhile.
fn uploads_start(lab: &mut Lab, bytes: u64, mbit: u64) {
    let tool = qemu::proc::bin("labtool").unwrap_or_else(|e| panic!("{e}"));
    let (client, to) = (lab.ns("client"), format!("{}:80", lab::VIP));
    for i in 0..UPLOADS {
        let args = [tool.to_string_lossy().as_ref(), "upload", "--to", &to, "--bytes", &bytes.to_string(), "--mbit", &mbit.to_string()]
            .map(str::to_string);
        lab.spawn(&format!("upload{i}"), &client, &args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Every upload's result once all are done: each must have arrived whole.
fn uploads_finish(lab: &Lab, bytes: u64) -> Vec<serde_json::Value> {
    (0..UPLOADS)
        .map(|i| {
            let label = format!("upload{i}");
            let r: serde_json::Value = poll_until(&format!("{label} never finished"), Duration::from_secs(90), || {
                let log = lab.log(&label);
                match log.lines().find(|l| l.starts_with('{')) {
                    Some(l) => Ok(serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))),
                    None if log.contains("broke") || log.contains("no answer") || log.contains("labtool:") => {
                        panic!("{label} failed across the takeover: {log}")
                    }
                    None => Err(log),
                }
            });
            assert_eq!(r["received"].as_u64(), Some(bytes), "{label}: the real server got all of it: {r}");
            r
        })
        .collect()
}

#[test]
fn the_backup_takes_over_when_the_master_dies_and_the_router_keeps_the_virtual_mac() {
    let _serial = one_lab_at_a_time();
    let mut lab = pair(true);
    let router = lab.ns("router");
    assert_eq!(lab.neighbour(&router, lab::VIP).as_deref(), Some(VMAC), "the router reaches the VIP at the virtual MAC");
    let sniff = Sniffer::start(&mut lab, "sniff-vip", &router, "bvip");
    let stop = watch_start(&mut lab);
    // Uploads of 12 MB at 16 Mbit/s (6 s each), spread over both real servers by rr: after the
    // takeover each must stay on its server, which only the synced flow table knows.
    const BYTES: u64 = 12_000_000;
    uploads_start(&mut lab, BYTES, 16);
    std::thread::sleep(Duration::from_secs(2));
    let b = ha(&lab, "director2");
    assert!(b["flow_sync"]["flows_received"].as_u64() >= Some(UPLOADS as u64), "the backup has the uploads' flows: {b}");

    // The master dies as in a power loss: no goodbye.
    let killed = Instant::now();
    lab.signal_netfw_in("director", libc::SIGKILL);
    let b = wait_state(&lab, "director2", "master");
    let took = killed.elapsed();
    assert!(b["last_transition"]["why"].as_str().unwrap_or_default().contains("no advert from the master"), "{b}");
    std::thread::sleep(Duration::from_secs(2));
    let w = watch_result(&lab, &stop);
    let arps = sniff.finish(&lab);
    println!(
        "failover (namespace lab, SIGKILL): backup master {} ms after the kill; longest gap without an answer {} ms; {} requests answered, {} failed, {} after the gap",
        took.as_millis(),
        w["longest_gap_ms"],
        w["ok"],
        w["failed"],
        w["failed_after_gap"]
    );
    assert_eq!(w["failed_after_gap"], 0, "nothing fails once the backup has taken over: {w}");
    let ups = uploads_finish(&lab, BYTES);
    let servers: Vec<&str> = ups.iter().map(|u| u["server"].as_str().unwrap_or_default()).collect();
    println!("uploads across the failover: all {UPLOADS} complete, on {servers:?}");
    assert!(w["servers"]["rs1"].as_u64() > Some(0) && w["servers"]["rs2"].as_u64() > Some(0), "{w}");
    // Nobody ever told the router another MAC for the VIP; the new master announced it.
    only_the_virtual_mac_claimed_the_vip(&arps);
    assert_eq!(lab.neighbour(&router, lab::VIP).as_deref(), Some(VMAC));
}

#[test]
fn a_clean_stop_hands_over_at_once_and_the_old_master_takes_back_with_preempt() {
    let _serial = one_lab_at_a_time();
    let mut lab = pair(true);
    let stopped = Instant::now();
    lab.signal_netfw_in("director", libc::SIGTERM);
    let b = wait_state(&lab, "director2", "master");
    println!("clean stop: backup master {} ms after SIGTERM (adverts every 200 ms)", stopped.elapsed().as_millis());
    assert!(b["last_transition"]["why"].as_str().unwrap_or_default().contains("leaving"), "the master said it was leaving: {b}");
    assert!(lab.log("netfw").contains("sent priority 0"), "{}", lab.log("netfw"));
    wait_forwarding(&lab, &["rs1", "rs2"]);

    // Uploads through the backup-turned-master, then the old master returns with preempt:
    // backup first, it takes the flow table, then master again; no upload breaks.
    const BYTES: u64 = 12_000_000;
    uploads_start(&mut lab, BYTES, 16);
    std::thread::sleep(Duration::from_secs(1));
    let a = pair_config(&lab, lab::DIP, lab::PEER_DIP, 200, true);
    lab.start_netfw_in("director", &a).unwrap_or_else(|e| panic!("{e}"));
    let h = wait_state(&lab, "director", "master");
    assert!(h["last_transition"]["why"].as_str().unwrap_or_default().contains("preempts"), "{h}");
    let table = h["flow_sync"]["last_table"].as_str().unwrap_or_default();
    let taken: u64 = table.split("table: ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(taken >= UPLOADS as u64, "it took the master's table, the uploads' flows in it, before taking over: {h}");
    let b = wait_state(&lab, "director2", "backup");
    assert!(b["last_transition"]["why"].as_str().unwrap_or_default().contains("outranks"), "{b}");
    let ups = uploads_finish(&lab, BYTES);
    println!("preemption: {table}; all {} uploads complete", ups.len());
    wait_forwarding(&lab, &["rs1", "rs2"]);
}

#[test]
fn a_master_whose_link_goes_down_stands_aside_in_fault_and_takes_over_again_when_it_is_back() {
    let _serial = one_lab_at_a_time();
    let lab = pair(true);
    let d = lab.ns("director");
    // The master's RS-facing NIC loses its link (the cable to the real servers' switch): it
    // hands over at once (priority 0 on its VIP-facing NIC) and says why.
    lab.ip(&d, &["link", "set", "eth2", "down"]).unwrap_or_else(|e| panic!("{e}"));
    let b = wait_state(&lab, "director2", "master");
    assert!(b["last_transition"]["why"].as_str().unwrap_or_default().contains("leaving"), "handed over, not timed out: {b}");
    let h = wait_state(&lab, "director", "fault");
    assert!(h["last_transition"]["why"].as_str().unwrap_or_default().contains("eth2 has no link"), "{h}");
    let s = lab.status_json_in("director").unwrap_or_else(|e| panic!("{e}"));
    assert!(s["warnings"].to_string().contains("HA fault: eth2 has no link"), "{s}");
    wait_forwarding(&lab, &["rs1", "rs2"]);
    // The link is back: backup first, then master again (it outranks the other, preempt).
    lab.ip(&d, &["link", "set", "eth2", "up"]).unwrap_or_else(|e| panic!("{e}"));
    let h = wait_state(&lab, "director", "master");
    assert!(h["last_transition"]["why"].as_str().unwrap_or_default().contains("preempts"), "{h}");
    wait_state(&lab, "director2", "backup");
    wait_forwarding(&lab, &["rs1", "rs2"]);
}

#[test]
fn a_stray_boxs_adverts_are_ignored_and_counted_and_a_cut_link_makes_a_split_brain_that_is_resolved_and_shown() {
    let _serial = one_lab_at_a_time();
    let lab = pair(true);
    let router = lab.ns("router");
    // A third box on the segment, priority 254 but without the pair's key.
    let out = lab.labtool(&router, &STRAY).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("\"sent\":10"), "{out}");
    for role in ["director", "director2"] {
        let h = poll_until(&format!("{role} never counted the stray adverts"), Duration::from_secs(5), || {
            let h = ha(&lab, role);
            if h["adverts_ignored"]["wrong_key"].as_u64() >= Some(10) {
                Ok(h)
            } else {
                Err(h.to_string())
            }
        });
        assert!(h["last_ignored"].as_str().unwrap_or_default().contains("203.0.113.99"), "{h}");
    }
    assert_eq!(ha(&lab, "director")["state"], "master", "the stray box took nothing");
    assert_eq!(ha(&lab, "director2")["state"], "backup");
    let s = lab.status_json_in("director").unwrap_or_else(|e| panic!("{e}"));
    assert!(s["warnings"].to_string().contains("not signed with the pair's key"), "{s}");

    // Cut the link between the two boxes only: the backup hears nothing and becomes master.
    lab.isolate_directors(true).unwrap_or_else(|e| panic!("{e}"));
    wait_state(&lab, "director2", "master");
    assert_eq!(ha(&lab, "director")["state"], "master", "both are master: split brain");
    std::thread::sleep(Duration::from_secs(2));
    lab.isolate_directors(false).unwrap_or_else(|e| panic!("{e}"));
    // They hear each other again: the lower priority yields (the RFC's rule) and says how long
    // both were master (the master says so too if the other's advert reached it first).
    let b = wait_state(&lab, "director2", "backup");
    assert_eq!(ha(&lab, "director")["state"], "master");
    println!("split brain: {} (the box that yielded) / {} (the master)", b["split_brain"], ha(&lab, "director")["split_brain"]);
    assert!(b["split_brain"]["duration_ms"].as_u64() > Some(1000), "{b}");
    let s = lab.status_json_in("director2").unwrap_or_else(|e| panic!("{e}"));
    assert!(s["warnings"].to_string().contains("split brain: both boxes of the pair were master"), "{s}");
    wait_forwarding(&lab, &["rs1", "rs2"]);
}

/// The status table a VM prints on its console now (its lines, without the prefixes).
fn vm_status(vm: &mut Vm) -> String {
    let log = vm.table("status", Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let tables: Vec<&str> = log.split("status: end of table").collect();
    let last = tables.get(tables.len().saturating_sub(2)).copied().unwrap_or_default();
    last.lines().filter_map(|l| l.split_once("] status: ").map(|(_, rest)| rest)).collect::<Vec<_>>().join("\n")
}

/// Wait until a VM's status says `HA: <state>`; the status then.
fn wait_vm_state(vm: &mut Vm, state: &str) -> String {
    let want = format!("HA: {state} ");
    poll_until(&format!("the VM never became {state}"), Duration::from_secs(60), || {
        let s = vm_status(vm);
        if s.contains(&want) {
            Ok(s)
        } else {
            Err(s)
        }
    })
}

/// How often `marker` is on a VM's console so far.
fn seen(vm: &Vm, marker: &str) -> usize {
    vm.console_log().matches(marker).count()
}

/// The number after `before` in `text` (e.g. "flow sync: 12 sent, 8 received": "sent, " -> 8).
fn number_after(text: &str, before: &str) -> u64 {
    text.split(before).nth(1).and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The master VM's QEMU is SIGKILLed while the client makes requests every 20 ms and
/// `UPLOADS` uploads of `bytes` run (`before_kill` looks at the pair first): the backup takes
/// over, the gap is printed, nothing fails after it, every upload completes, and only the
/// virtual MAC ever claims the VIP, which the router keeps.
fn vm_master_dies(lab: &mut Lab, what: &str, bytes: u64, before_kill: impl FnOnce(&mut Lab)) {
    let router = lab.ns("router");
    let sniff = Sniffer::start(lab, "sniff-vip", &router, "bvip");
    let stop = watch_start(lab);
    uploads_start(lab, bytes, 4);
    std::thread::sleep(Duration::from_secs(3));
    before_kill(lab);
    let took = seen(lab.peer_vm(), "HA: backup -> master");
    let killed = Instant::now();
    lab.vm().pull_plug();
    lab.peer_vm().wait_for_nth("HA: backup -> master", took + 1, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let noticed = killed.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let w = watch_result(lab, &stop);
    let ups = uploads_finish(lab, bytes);
    let arps = sniff.finish(lab);
    println!(
        "failover (VMs, {what}, QEMU SIGKILLed): the backup's console said master {} ms after the kill; longest gap without an answer {} ms; {} requests answered, {} failed, {} after the gap; {} uploads complete",
        noticed.as_millis(),
        w["longest_gap_ms"],
        w["ok"],
        w["failed"],
        w["failed_after_gap"],
        ups.len()
    );
    assert_eq!(w["failed_after_gap"], 0, "nothing fails once the backup has taken over: {w}");
    only_the_virtual_mac_claimed_the_vip(&arps);
    assert_eq!(lab.neighbour(&router, lab::VIP).as_deref(), Some(VMAC));
}

#[test]
fn two_appliance_vms_as_a_pair_fail_over_hand_over_preempt_ignore_strays_and_show_a_split_brain() {
    let _serial = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 2).unwrap_or_else(|e| panic!("{e}"));
    lab.add_peer_director().unwrap_or_else(|e| panic!("{e}"));
    lab.write_vm_config(&pair_config(&lab, lab::DIP, lab::PEER_DIP, 200, true)).unwrap_or_else(|e| panic!("{e}"));
    lab.write_peer_vm_config(&pair_config(&lab, lab::PEER_DIP, lab::DIP, 100, true)).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = lab.boot_vm_pair(Firmware::Direct).unwrap_or_else(|e| panic!("{e}"));
    println!("HA pair of VMs: power-on to ready {a:?} and {b:?} (booted together)");
    wait_vm_state(lab.vm(), "MASTER");
    let s = wait_vm_state(lab.peer_vm(), "BACKUP");
    assert!(s.contains("peer's last advert: priority 200"), "the backup hears the master: {s}");
    wait_forwarding(&lab, &["rs1", "rs2"]);
    let router = lab.ns("router");
    assert_eq!(lab.neighbour(&router, lab::VIP).as_deref(), Some(VMAC), "the router reaches the VIP at the virtual MAC");

    // 4. A third box's adverts with a wrong key: ignored and counted by both, nothing changes.
    lab.labtool(&router, &STRAY).unwrap_or_else(|e| panic!("{e}"));
    for first in [true, false] {
        let vm = if first { lab.vm() } else { lab.peer_vm() };
        let s = poll_until("the stray adverts were not counted", Duration::from_secs(30), || {
            let s = vm_status(vm);
            if s.contains("wrong_key 10") {
                Ok(s)
            } else {
                Err(s)
            }
        });
        assert!(s.contains("203.0.113.99"), "the warning names the stray box: {s}");
    }
    wait_vm_state(lab.vm(), "MASTER");
    wait_vm_state(lab.peer_vm(), "BACKUP");

    // 6. The link between the two only is cut: both master; restored: one master, the warning.
    let took = seen(lab.peer_vm(), "HA: backup -> master");
    lab.isolate_directors(true).unwrap_or_else(|e| panic!("{e}"));
    lab.peer_vm().wait_for_nth("HA: backup -> master", took + 1, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    assert!(vm_status(lab.vm()).contains("HA: MASTER "), "both are master: split brain");
    std::thread::sleep(Duration::from_secs(2));
    lab.isolate_directors(false).unwrap_or_else(|e| panic!("{e}"));
    let s = wait_vm_state(lab.peer_vm(), "BACKUP");
    assert!(s.contains("split brain: both boxes of the pair were master"), "{s}");
    assert!(vm_status(lab.vm()).contains("HA: MASTER "));
    wait_forwarding(&lab, &["rs1", "rs2"]);

    // The two boxes' services differ (rs2 drained on the backup only): the backup says so (a
    // digest of the services rides in the master's adverts); the same services again: it does
    // not. (Only a master advertises, so it is the backup that can tell.)
    let peer_cfg = pair_config(&lab, lab::PEER_DIP, lab::DIP, 100, true);
    let mut drained: serde_json::Value = serde_json::from_str(&peer_cfg).unwrap_or_else(|e| panic!("{e}"));
    drained["services"][0]["real_servers"][1]["weight"] = 0.into();
    lab.peer_vm().send(&format!("apply-config {drained}")).unwrap_or_else(|e| panic!("{e}"));
    let differ = "the peer's services differ from this box's";
    poll_until("the backup never saw the services differ", Duration::from_secs(60), || {
        let s = vm_status(lab.peer_vm());
        if s.contains(differ) {
            Ok(())
        } else {
            Err(s)
        }
    });
    lab.peer_vm().send(&format!("apply-config {peer_cfg}")).unwrap_or_else(|e| panic!("{e}"));
    poll_until("the warning stayed with the same services", Duration::from_secs(60), || {
        let s = vm_status(lab.peer_vm());
        if s.contains(differ) {
            Err(s)
        } else {
            Ok(())
        }
    });
    wait_vm_state(lab.peer_vm(), "BACKUP");

    // 1. The master's QEMU is SIGKILLed during requests and uploads.
    const BYTES: u64 = 4_000_000;
    vm_master_dies(&mut lab, "forwarder mode", BYTES, |lab| {
        let s = vm_status(lab.peer_vm());
        assert!(number_after(&s, "sent, ") >= UPLOADS as u64, "the backup has the uploads' flows: {s}");
    });
    let s = vm_status(lab.peer_vm());
    assert!(s.contains("no advert from the master"), "{s}");

    // 3. The old master boots again, with preempt, while uploads run through the new one: it
    // takes the flow table, then the master role; no upload breaks.
    drop(lab.vm.take());
    uploads_start(&mut lab, BYTES, 4);
    std::thread::sleep(Duration::from_secs(1));
    lab.boot_pair_vm(Firmware::Direct, "director").unwrap_or_else(|e| panic!("{e}"));
    lab.vm().wait_for("HA: backup -> master", Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let log = lab.vm().console_log();
    let table = log.lines().find(|l| l.contains("took the master's flow table")).unwrap_or_else(|| panic!("no table taken:\n{log}"));
    assert!(log.find("took the master's flow table") < log.find("HA: backup -> master"), "the table came before the takeover:\n{log}");
    let ups = uploads_finish(&lab, BYTES);
    println!("preemption (VMs): {}; all {} uploads complete", table.trim(), ups.len());
    wait_vm_state(lab.peer_vm(), "BACKUP");
    wait_forwarding(&lab, &["rs1", "rs2"]);

    // 2. `poweroff` on the master: it says it leaves, the backup takes over at once.
    let stop = watch_start(&mut lab);
    std::thread::sleep(Duration::from_secs(2));
    let took = seen(lab.peer_vm(), "HA: backup -> master");
    lab.vm().send("poweroff").unwrap_or_else(|e| panic!("{e}"));
    lab.peer_vm().wait_for_nth("HA: backup -> master", took + 1, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(2));
    let w = watch_result(&lab, &stop);
    println!(
        "poweroff (VMs): longest gap without an answer {} ms (adverts every 200 ms); {} answered, {} failed, {} after the gap",
        w["longest_gap_ms"], w["ok"], w["failed"], w["failed_after_gap"]
    );
    let s = vm_status(lab.peer_vm());
    assert!(s.contains("the master is leaving"), "the backup took over because the master said it was leaving: {s}");
    assert_eq!(w["failed_after_gap"], 0, "{w}");
}

#[test]
fn two_appliance_vms_in_ipvs_mode_fail_over_and_the_kernels_connection_sync_keeps_the_uploads() {
    let _serial = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 2).unwrap_or_else(|e| panic!("{e}"));
    lab.add_peer_director().unwrap_or_else(|e| panic!("{e}"));
    let ipvs = |cfg: String| {
        let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap_or_else(|e| panic!("{e}"));
        v["mode"] = "ipvs".into();
        v.to_string()
    };
    lab.write_vm_config(&ipvs(pair_config(&lab, lab::DIP, lab::PEER_DIP, 200, true))).unwrap_or_else(|e| panic!("{e}"));
    lab.write_peer_vm_config(&ipvs(pair_config(&lab, lab::PEER_DIP, lab::DIP, 100, true))).unwrap_or_else(|e| panic!("{e}"));
    lab.boot_vm_pair(Firmware::Direct).unwrap_or_else(|e| panic!("{e}"));
    wait_vm_state(lab.vm(), "MASTER");
    let s = wait_vm_state(lab.peer_vm(), "BACKUP");
    assert!(s.contains("peer's last advert: priority 200"), "the backup hears the master: {s}");
    wait_forwarding(&lab, &["rs1", "rs2"]);
    let router = lab.ns("router");
    assert_eq!(lab.neighbour(&router, lab::VIP).as_deref(), Some(VMAC), "the kernel answers for the VIP from the virtual MAC");

    const BYTES: u64 = 4_000_000;
    vm_master_dies(&mut lab, "ipvs mode: the kernel's sync daemon", BYTES, |_| {});
    assert!(lab.peer_vm().console_log().contains("HA: the VIPs' link vrrp51 up"), "the backup brought the VIPs' link up");

    // Switching modes keeps the pair: the old master boots again (ipvs mode) and takes over
    // (preempt); switched to forwarder mode from its console, it hands over while it switches,
    // then takes the master role back in its new mode.
    drop(lab.vm.take());
    lab.boot_pair_vm(Firmware::Direct, "director").unwrap_or_else(|e| panic!("{e}"));
    lab.vm().wait_for("HA: backup -> master", Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    wait_vm_state(lab.peer_vm(), "BACKUP");
    wait_forwarding(&lab, &["rs1", "rs2"]);
    let stop = watch_start(&mut lab);
    let took = seen(lab.peer_vm(), "HA: backup -> master");
    let forwarder = pair_config(&lab, lab::DIP, lab::PEER_DIP, 200, true);
    lab.vm().send(&format!("apply-config {forwarder}")).unwrap_or_else(|e| panic!("{e}"));
    lab.peer_vm().wait_for_nth("HA: backup -> master", took + 1, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    lab.vm().wait_for_nth("HA: backup -> master", 2, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let s = wait_vm_state(lab.vm(), "MASTER");
    assert!(s.contains("netfw forwarder"), "master again, in forwarder mode: {s}");
    wait_vm_state(lab.peer_vm(), "BACKUP");
    wait_forwarding(&lab, &["rs1", "rs2"]);
    let w = watch_result(&lab, &stop);
    println!(
        "mode switch of the master (ipvs -> forwarder) in a pair: longest gap {} ms; {} answered, {} failed",
        w["longest_gap_ms"], w["ok"], w["failed"]
    );
}
