//! Issue 4's proofs in the QEMU lab: the same config in IPVS mode, changed at runtime from the
//! console (`apply-config`), switched between modes, and the automatic fallback.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use qemu::lab::{self, Lab, Layout};
use qemu::vm::Firmware;
use tests::{
    counts, http_requests, long_body, long_transfer_result, one_lab_at_a_time, one_line, paced_requests, poll_until, service, svc,
    table_rows, wait_forwarding, Sniffer,
};

/// Ask the console for the kernel's IPVS table (the status table, read from IPVS) and return
/// its real servers as (RIP, weight, active connections).
fn ipvs_table(lab: &mut Lab) -> Vec<(String, u32, u32)> {
    table_rows(lab, "ipvs", "ipvs: netfw ipvs (")
        .into_iter()
        .filter_map(|f| Some((f.first()?.split(':').next()?.to_string(), f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .collect()
}

/// The health checker's transitions of `rip` (`"up -> down"`, …) on the console so far.
fn transitions(lab: &mut Lab, rip: std::net::Ipv4Addr, change: &str) -> Vec<String> {
    let what = format!(" {rip} {change}: ");
    // Whole lines only: the console may be in the middle of writing the last one.
    let log = lab.vm().console_log();
    let whole = log.rsplit_once('\n').map_or("", |(w, _)| w);
    whole.lines().filter(|l| l.contains("netfw: health: ") && l.contains(&what)).map(str::to_string).collect()
}

/// Wait for the `nth` transition `change` of `rip` on the console; returns its line.
fn wait_transition(lab: &mut Lab, rip: std::net::Ipv4Addr, change: &str, nth: usize) -> String {
    poll_until(&format!("{rip} never went {change} (x{nth})"), Duration::from_secs(30), || {
        let t = transitions(lab, rip, change);
        t.get(nth - 1).cloned().ok_or_else(|| format!("{t:?}"))
    })
}

/// Wait for the `nth` change the health checker made to IPVS that says `what` ("delete real
/// server 198.18.0.11", …): each is said once made.
fn wait_ipvs_change(lab: &mut Lab, what: &str, nth: usize) {
    let what = format!("netfw: health: ipvs: {what} ");
    poll_until(&format!("IPVS was never told to {what} (x{nth})"), Duration::from_secs(30), || {
        let n = lab.vm().console_log().matches(&what).count();
        (n >= nth).then_some(()).ok_or(format!("{n} so far"))
    });
}

/// Real server `i` goes down with `reason` and leaves IPVS, and the status table's diagnosis
/// comes to say `said`: returns that table.
fn down_with_diagnosis(lab: &mut Lab, i: usize, reason: &str, said: &str) -> String {
    let line = wait_transition(lab, lab::rip(i), "up -> down", 1);
    assert!(line.contains(reason), "{line}");
    wait_ipvs_change(lab, &format!("delete real server {}", lab::rip(i)), 1);
    poll_until(&format!("the doctor never said {said:?}"), Duration::from_secs(20), || {
        let t = status_table(lab);
        t.contains(said).then_some(t.clone()).ok_or(t)
    })
}

/// The last status table the console printed (in ipvs mode, the health checker's).
fn status_table(lab: &mut Lab) -> String {
    let log = lab.vm().table("status", Duration::from_secs(30)).unwrap();
    log.rsplit("status: netfw ipvs (").next().unwrap_or_default().to_string()
}

/// The kernel's real servers (the `ipvs` table) as (RIP, weight).
fn in_ipvs(lab: &mut Lab) -> BTreeSet<(String, u32)> {
    ipvs_table(lab).into_iter().map(|(r, w, _)| (r, w)).collect()
}

fn rs(i: usize, weight: u32) -> (String, u32) {
    (lab::rip(i).to_string(), weight)
}

/// Issue 11, proof 6: the checks in ipvs mode, through the DR path as in forwarder mode (the
/// probes leave from the DIP on the RS-facing NIC, addressed to the VIP, sent to each server's
/// MAC); verdicts take real servers out of the kernel's IPVS table and put them back; the
/// doctor tells a server without the VIP on lo from a dead one; with every server down the
/// sorry server is in IPVS.
#[test]
fn ipvs_mode_checks_take_a_dead_server_out_of_ipvs_and_bring_it_back() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    let check = r#""health_check": {"type": "http", "interval_ms": 500, "timeout_ms": 500, "rise": 2, "fall": 2}"#;
    let checked = |rss: &[(usize, u16)]| {
        svc(rss).replacen(r#""real_servers""#, &format!(r#"{check}, "sorry_server": "{}", "real_servers""#, lab::rip(3)), 1)
    };
    lab.write_vm_config(&one_line(&lab, &checked(&[(1, 1), (2, 1)]), "ipvs")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("started netfw-health", Duration::from_secs(10)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2"]);
    assert_eq!(in_ipvs(&mut lab), BTreeSet::from([rs(1, 1), rs(2, 1)]), "both up, the sorry server not in");
    poll_until("the checks never passed", Duration::from_secs(20), || {
        let t = status_table(&mut lab);
        (t.matches("UP (check passed").count() == 2).then_some(()).ok_or_else(|| lab.vm().console_log())
    });

    // 1. rs1's HTTP service stops: out of IPVS once marked down; no request fails after.
    let t = Instant::now();
    lab.stop_server(1);
    let line = wait_transition(&mut lab, lab::rip(1), "up -> down", 1);
    wait_ipvs_change(&mut lab, "delete real server 198.18.0.11", 1);
    println!("ipvs mode: rs1 stopped: marked down after {:?} ({line})", t.elapsed());
    assert!(line.contains("connection refused (http GET / to 203.0.113.10:80 through the DR path)"), "{line}");
    let left = in_ipvs(&mut lab);
    assert_eq!(left, BTreeSet::from([rs(2, 1)]), "{}", lab.vm().console_log());
    let (servers, errors) = paced_requests(&lab, 40);
    assert_eq!((errors, servers.get("rs1"), servers.values().sum::<u64>()), (0, None, 40), "{servers:?}");
    // The kernel's connection list on the console (issue 15), filtered by real server: those
    // 40 connections, on rs2 only.
    let nth = lab.vm().console_log().matches("connections: end of table").count() + 1;
    lab.vm().send(&format!("status --connections server={}", lab::rip(2))).unwrap();
    lab.vm().wait_for_nth("connections: end of table", nth, Duration::from_secs(10)).unwrap();
    let log = lab.vm().console_log();
    let listed: Vec<&str> = log.lines().filter(|l| l.contains("connections: TCP ")).collect();
    assert!(log.contains("connections: IPVS connection entries"), "{log}");
    assert!(
        listed.len() >= 40 && listed.iter().all(|l| l.contains("203.0.113.10:80") && l.trim_end().ends_with("198.18.0.12:80")),
        "{listed:?}"
    );
    let table = status_table(&mut lab);
    assert!(table.contains("DOWN (connection refused)"), "the status keeps the server's row, and says why: {table}");
    // A config change meanwhile (rs2's weight 2): the reconcile leaves the down rs1 out.
    let reweighted = one_line(&lab, &checked(&[(1, 1), (2, 2)]), "ipvs");
    let added = |lab: &mut Lab| lab.vm().console_log().matches("ipvs: add real server 198.18.0.11").count();
    let before = added(&mut lab);
    lab.vm().send(&format!("apply-config {reweighted}")).unwrap();
    lab.vm().wait_for("config saved and applied: mode ipvs", Duration::from_secs(30)).unwrap();
    assert!(lab.vm().console_log().contains("ipvs: set real server 198.18.0.12 of tcp 203.0.113.10:80 to dr, weight 2"));
    assert_eq!(in_ipvs(&mut lab), BTreeSet::from([rs(2, 2)]));
    assert_eq!(added(&mut lab), before, "the reconcile put the down server back");
    lab.restart_server(1, &[]).unwrap();
    let t = Instant::now();
    wait_transition(&mut lab, lab::rip(1), "down -> up", 1);
    println!("ipvs mode: rs1 restarted: up after {:?}", t.elapsed());
    wait_ipvs_change(&mut lab, "add real server 198.18.0.11", 1);
    assert_eq!(in_ipvs(&mut lab), BTreeSet::from([rs(1, 1), rs(2, 2)]));
    wait_forwarding(&lab, &["rs1", "rs2"]);

    // 3. rs2 loses the VIP from lo: its own address still answers; the DR path does not.
    let vip_lo = format!("{}/32", lab::VIP);
    lab.ip(&lab.ns("rs2"), &["addr", "del", &vip_lo, "dev", "lo"]).unwrap();
    let d = down_with_diagnosis(&mut lab, 2, "no answer within 500 ms", "is not on its lo");
    println!("ipvs mode: rs2 without the VIP on lo:\n{d}");
    let (servers, errors) = paced_requests(&lab, 20);
    assert_eq!((errors, servers.get("rs2")), (0, None), "{servers:?}");
    lab.ip(&lab.ns("rs2"), &["addr", "add", &vip_lo, "dev", "lo"]).unwrap();
    wait_transition(&mut lab, lab::rip(2), "down -> up", 1);
    wait_ipvs_change(&mut lab, "add real server 198.18.0.12", 1);

    // 5. Every server down: the sorry server is in IPVS and answers; one server back, it
    // takes no new flows (weight 0 while its connections end).
    lab.stop_server(1);
    lab.stop_server(2);
    wait_transition(&mut lab, lab::rip(1), "up -> down", 2);
    wait_transition(&mut lab, lab::rip(2), "up -> down", 2);
    wait_ipvs_change(&mut lab, "add real server 198.18.0.13", 1);
    assert_eq!(in_ipvs(&mut lab), BTreeSet::from([rs(3, 1)]));
    let (servers, errors) = paced_requests(&lab, 10);
    assert_eq!((errors, servers.get("rs3").copied()), (0, Some(10)), "{servers:?}");
    let table = status_table(&mut lab);
    assert!(table.contains(" SORRY sorry 198.18.0.13"), "{table}");
    lab.restart_server(1, &[]).unwrap();
    wait_transition(&mut lab, lab::rip(1), "down -> up", 2);
    wait_ipvs_change(&mut lab, "add real server 198.18.0.11", 2);
    // The sorry server's weight goes to 0 right after rs1 is back (or it goes, if its
    // connections are over).
    poll_until("the sorry server still takes new flows", Duration::from_secs(10), || {
        let left = in_ipvs(&mut lab);
        (left == BTreeSet::from([rs(1, 1), rs(3, 0)]) || left == BTreeSet::from([rs(1, 1)])).then_some(()).ok_or(format!("{left:?}"))
    });
    let (servers, errors) = paced_requests(&lab, 10);
    assert_eq!((errors, servers.get("rs1").copied()), (0, Some(10)), "{servers:?}");
    lab.vm().send("poweroff").unwrap();
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap();
}

#[test]
fn switching_modes_at_runtime_leaves_nothing_of_the_other_mode() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    let all = svc(&[(1, 1), (2, 1), (3, 1)]);
    lab.write_vm_config(&one_line(&lab, &all, "forwarder")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]));

    // forwarder -> ipvs
    let to_ipvs = one_line(&lab, &all, "ipvs");
    lab.vm().send(&format!("apply-config {to_ipvs}")).unwrap();
    lab.vm().wait_for("config saved and applied: mode ipvs", Duration::from_secs(30)).unwrap();
    lab.vm().wait_for("netfw stopped", Duration::from_secs(5)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]), "in ipvs mode");
    assert_eq!(ipvs_table(&mut lab).len(), 3, "IPVS holds the three real servers");
    // Now the kernel holds the VIP and the DIP, and still the web page answers on neither:
    // its sockets are bound to the management NIC.
    for (ns, ip) in [(lab.ns("client"), lab::VIP), (lab.ns("rs1"), lab::DIP)] {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "curl",
                "-sk",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("https://{ip}/"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "000", "the page must not answer on {ip}");
        assert_eq!(out.status.code(), Some(7), "curl: connection refused on {ip} (exit 7)");
    }

    // ipvs -> forwarder
    let to_fwd = one_line(&lab, &all, "forwarder");
    lab.vm().send(&format!("apply-config {to_fwd}")).unwrap();
    lab.vm().wait_for("config saved and applied: mode forwarder", Duration::from_secs(30)).unwrap();
    let log = lab.vm().console_log();
    assert!(log.contains("ipvs: delete service tcp 203.0.113.10:80"), "{log}");
    assert!(
        log.contains("ipvs: removed 198.18.0.2/24 from eth2") && log.contains("ipvs: removed 203.0.113.10/24 from eth1"),
        "the kernel's addresses go: {log}"
    );
    assert!(ipvs_table(&mut lab).is_empty(), "no IPVS service is left");
    lab.vm().wait_for_nth("started netfw", 2, Duration::from_secs(10)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]), "back in forwarder mode");
    // The change was saved: the partition holds the last config.
    lab.vm().send("poweroff").unwrap();
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap();
    let saved = std::process::Command::new(qemu::proc::bin("image").unwrap())
        .args(["config-get", "--disk", lab.vm_disk().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&saved.stdout), to_fwd);
}

#[test]
fn ipvs_reconciles_while_a_long_transfer_runs_and_it_finishes() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    lab.write_vm_config(&one_line(&lab, &svc(&[(1, 1), (2, 1)]), "ipvs")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2"]);
    tests::start_long_transfer(&mut lab, "long", 3_000_000, 8_000);
    // The carrier is the real server with an active connection.
    let mut carrier = None;
    for _ in 0..20 {
        carrier = ipvs_table(&mut lab).into_iter().find(|(_, _, active)| *active >= 1).map(|(r, _, _)| r);
        if carrier.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let carrier = carrier.expect("the long transfer never showed as an active connection");
    let (c, other) = if carrier.ends_with(".11") { (1, 2) } else { (2, 1) };
    for (step, rss) in [
        ("add rs3", vec![(c, 1), (other, 1), (3, 1)]),
        ("reweight", vec![(c, 1), (other, 2), (3, 1)]),
        ("remove the other", vec![(c, 1), (3, 4)]),
    ] {
        let cfg = one_line(&lab, &svc(&rss), "ipvs");
        lab.vm().send(&format!("apply-config {cfg}")).unwrap();
        let applied = lab.vm().console_log().matches("config saved and applied").count() + 1;
        lab.vm().wait_for_nth("config saved and applied: mode ipvs", applied, Duration::from_secs(30)).unwrap();
        let got: BTreeSet<(String, u32)> = ipvs_table(&mut lab).into_iter().map(|(r, w, _)| (r, w)).collect();
        let want: BTreeSet<(String, u32)> = rss.iter().map(|(i, w)| (lab::rip(*i).to_string(), u32::from(*w))).collect();
        assert_eq!(got, want, "after \"{step}\" the kernel's table is the config");
    }
    let r = long_transfer_result(&lab, "long");
    assert_eq!(r["server"], format!("rs{c}").as_str());
    assert_eq!(r["body_bytes"].as_u64().unwrap(), 3_000_000 + 4);
}

#[test]
fn a_forwarder_that_cannot_use_its_nic_falls_back_to_ipvs() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    lab.write_vm_config(&one_line(&lab, &svc(&[(1, 1), (2, 1), (3, 1)]), "forwarder")).unwrap();
    // A jumbo-frame VIP-facing NIC: more than netfw's rings carry.
    lab.boot_vm_with(Firmware::Direct, Some(9000)).unwrap();
    lab.vm().wait_for("NIC eth1 has MTU 9000", Duration::from_secs(30)).unwrap();
    lab.vm().wait_for("FALLBACK: the forwarder cannot use its NICs", Duration::from_secs(10)).unwrap();
    lab.vm().wait_for("mode: ipvs (the kernel forwards) (fallback)", Duration::from_secs(10)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]));
    // `status` says so, and shows IPVS's own counters in the forwarder's table: each real
    // server with the MAC the kernel resolved, its connections, packets and bytes.
    // The kernel's estimator folds its per-CPU counters into what it reports every 2 s, and
    // may fold them while the requests still run: ask until every real server shows its ten.
    let header = "status: netfw ipvs (two-arm: vip_side=eth1 rs_side=eth2) DIP 198.18.0.2/24";
    let mut rows = table_rows(&mut lab, "status", header);
    for _ in 0..15 {
        if rows.len() == 3 && rows.iter().all(|r| r.get(5).and_then(|c| c.parse::<u64>().ok()).is_some_and(|c| c >= 10)) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        rows = table_rows(&mut lab, "status", header);
    }
    rows.sort();
    assert!(lab.vm().console_log().contains("init: mode: ipvs (the kernel forwards) (fallback)"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], format!("{}:80", lab::rip(i + 1)), "{row:?}");
        assert_eq!(row[1], lab::rs_mac(i + 1), "the kernel resolved the real server's MAC: {row:?}");
        let (conns, pkts, bytes): (u64, u64, u64) = (row[5].parse().unwrap(), row[6].parse().unwrap(), row[7].parse().unwrap());
        assert!(conns >= 10 && pkts >= 3 * conns && bytes > 40 * pkts, "IPVS counters for rs{}: {row:?}", i + 1);
    }
}

fn with_forwarding(services: &str, method: &str) -> String {
    services.replace("\"scheduler\"", &format!("\"forwarding\": \"{method}\", \"scheduler\""))
}

#[test]
fn nat_mode_forwards_and_replies_return_through_the_director() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    // NAT real servers: no VIP on lo, and their gateway is the DIP.
    for i in 1..=3 {
        let ns = lab.ns(&format!("rs{i}"));
        lab.ip(&ns, &["addr", "del", &format!("{}/32", lab::VIP), "dev", "lo"]).unwrap();
        lab.ip(&ns, &["route", "replace", "default", "via", &lab::DIP.to_string()]).unwrap();
    }
    // Checked at their own addresses (the only choice for NAT: they do not hold the VIP), on
    // the kernel's own sockets from the DIP.
    let checked = with_forwarding(&svc(&[(1, 1), (2, 1), (3, 1)]), "nat").replacen(
        r#""real_servers""#,
        r#""health_check": {"type": "tcp", "via": "rip", "interval_ms": 500, "timeout_ms": 500}, "real_servers""#,
        1,
    );
    lab.write_vm_config(&one_line(&lab, &checked, "ipvs")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("ipvs: sysctl net.ipv4.ip_forward=1 (NAT", Duration::from_secs(5)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]));
    // Unlike DR, the replies come back through the director: a 1 MB download enters it.
    let before = lab.tap_to_vm_bytes("tap2").unwrap();
    let out = lab.labtool(&lab.ns("client"), &["long", "--to", &format!("{}:80", lab::VIP), "--bytes", "1000000"]).unwrap();
    long_body(&out, 1_000_000);
    let into_vm = lab.tap_to_vm_bytes("tap2").unwrap() - before;
    assert!(into_vm > 1_000_000, "NAT replies must cross the director: only {into_vm} bytes entered it");
    assert_eq!(ipvs_table(&mut lab).len(), 3);

    // rs3's service stops: its own address refuses, it leaves IPVS, and no request fails.
    lab.stop_server(3);
    let line = wait_transition(&mut lab, lab::rip(3), "up -> down", 1);
    assert!(line.contains("connection refused (tcp to 198.18.0.13:80)"), "{line}");
    wait_ipvs_change(&mut lab, "delete real server 198.18.0.13", 1);
    let (servers, errors) = paced_requests(&lab, 20);
    assert_eq!((errors, servers.get("rs3"), servers.values().sum::<u64>()), (0, None, 20), "{servers:?}");
}

#[test]
fn tun_mode_sends_ipip_from_the_dip_to_each_real_server() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    lab.write_vm_config(&one_line(&lab, &with_forwarding(&svc(&[(1, 1), (2, 1), (3, 1)]), "tun"), "ipvs")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("ip_forward=0 (DR/TUN", Duration::from_secs(5)).unwrap();
    let sniffers: Vec<Sniffer> = (1..=3)
        .map(|i| {
            let ns = lab.ns(&format!("rs{i}"));
            Sniffer::start(&mut lab, &format!("sniff-rs{i}"), &ns, "eth0")
        })
        .collect();
    // The real servers here cannot decapsulate (the host kernel has no IPIP), so the client's
    // connections go unanswered; what the director sends is what this test checks.
    let _ = lab.labtool(&lab.ns("client"), &["get", "--to", &format!("{}:80", lab::VIP), "--count", "3"]);
    for (i, sniffer) in (1..=3).zip(sniffers) {
        let cap = sniffer.finish(&lab);
        let tunnelled = cap["ipip"].as_array().unwrap();
        assert!(!tunnelled.is_empty(), "rs{i} got no IPIP from the director: {cap}");
        for t in tunnelled {
            assert_eq!(t["outer_src"], lab::DIP.to_string().as_str(), "{t}");
            assert_eq!(t["outer_dst"], lab::rip(i).to_string().as_str(), "{t}");
            assert_eq!(t["inner_src"], lab::CLIENT.to_string().as_str(), "{t}");
            assert_eq!(t["inner_dst"], lab::VIP.to_string().as_str(), "{t}");
            assert_eq!(t["inner_dport"], 80, "{t}");
        }
    }
}

/// Seed 002 end to end: two real servers are QEMU guests running the pinned Debian kernel (the
/// host has no IPIP), set up with `tunl0`, the VIP on it and `rp_filter=0`. IPVS tunnels the
/// client's requests to both; their replies go straight to the router; and with the reverse
/// path filter left on (the seed's warning) the real servers silently drop what IPVS sends.
#[test]
fn tun_mode_end_to_end_with_real_servers_set_up_per_seed_002() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 0).unwrap();
    for i in 1..=2 {
        let t = lab.boot_tun_real_server(i).unwrap();
        println!("TUN real server guest rs{i} ready in {:.1} s", t.as_secs_f64());
    }
    lab.write_vm_config(&one_line(&lab, &with_forwarding(&svc(&[(1, 1), (2, 1)]), "tun"), "ipvs")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2"]);
    assert_eq!(http_requests(&lab, 20, None), counts(&[("rs1", 10), ("rs2", 10)]), "rr over TUN");
    let table = ipvs_table(&mut lab);
    assert_eq!(table.len(), 2, "{table:?}");

    // Replies bypass the director: a 1 MB answer never enters the VM on the RS-facing NIC.
    let before = lab.tap_to_vm_bytes("tap2").unwrap();
    let out = lab.labtool(&lab.ns("client"), &["long", "--to", &format!("{}:80", lab::VIP), "--bytes", "1000000"]).unwrap();
    long_body(&out, 1_000_000);
    let into_vm = lab.tap_to_vm_bytes("tap2").unwrap() - before;
    assert!(into_vm < 200_000, "TUN replies must not cross the director: {into_vm} bytes entered it");

    // Seed 002: the kernel applies max(all, tunl0) as tunl0's rp_filter; with 1 the client's
    // address, which routes out of eth0, fails the check on tunl0 and every request is dropped.
    for i in 1..=2 {
        let g = lab.guest(i).unwrap();
        g.send("rp_filter 1").unwrap();
        g.wait_for("rp_filter 1 done", Duration::from_secs(10)).unwrap();
    }
    let refused = lab.labtool(&lab.ns("client"), &["get", "--to", &format!("{}:80", lab::VIP), "--count", "2"]).unwrap_or_else(|e| e.0);
    assert!(!refused.contains("\"rs1\"") && !refused.contains("\"rs2\""), "rp_filter=1 on tunl0 should drop: {refused}");
    for i in 1..=2 {
        let g = lab.guest(i).unwrap();
        g.send("rp_filter 0").unwrap();
        g.wait_for("rp_filter 0 done", Duration::from_secs(10)).unwrap();
    }
    wait_forwarding(&lab, &["rs1", "rs2"]);

    // Issue 11, proof 6: checked through the DR path, which for TUN is inside IPIP to the RIP,
    // as IPVS sends. rs1's rp_filter drops what arrives on tunl0: its check fails while its
    // own address answers, the doctor names seed 002's cause, and rs2 takes every request.
    let checked = with_forwarding(&svc(&[(1, 1), (2, 1)]), "tun").replacen(
        r#""real_servers""#,
        r#""health_check": {"type": "http", "interval_ms": 500, "timeout_ms": 500}, "real_servers""#,
        1,
    );
    let cfg = one_line(&lab, &checked, "ipvs");
    lab.vm().send(&format!("apply-config {cfg}")).unwrap();
    lab.vm().wait_for("config saved and applied: mode ipvs", Duration::from_secs(30)).unwrap();
    lab.vm().wait_for("started netfw-health", Duration::from_secs(10)).unwrap();
    poll_until("the checks through the tunnel never passed", Duration::from_secs(20), || {
        let t = status_table(&mut lab);
        (t.matches("UP (check passed").count() == 2).then_some(()).ok_or(t)
    });
    let g = lab.guest(1).unwrap();
    g.send("rp_filter 1").unwrap();
    g.wait_for_nth("rp_filter 1 done", 2, Duration::from_secs(10)).unwrap();
    let d = down_with_diagnosis(&mut lab, 1, "no answer within 500 ms", "its reverse-path filter drops what arrives on tunl0");
    println!("TUN: rs1 with rp_filter=1:\n{d}");
    let (servers, errors) = paced_requests(&lab, 20);
    assert_eq!((errors, servers.get("rs1"), servers.values().sum::<u64>()), (0, None, 20), "{servers:?}");
    let g = lab.guest(1).unwrap();
    g.send("rp_filter 0").unwrap();
    g.wait_for_nth("rp_filter 0 done", 2, Duration::from_secs(10)).unwrap();
    wait_transition(&mut lab, lab::rip(1), "down -> up", 1);
    wait_ipvs_change(&mut lab, "add real server 198.18.0.11", 1);
    wait_forwarding(&lab, &["rs1", "rs2"]);
}

/// Issue 9: apply tells the truth. A config that passes every rule but that the data plane
/// refuses (a flow table larger than this box's memory) is reported as not applied, with the
/// step and the reason; the box keeps forwarding by the config it had; and that config, not
/// the refused one, is what the box runs after a reboot.
#[test]
fn a_change_the_data_plane_refuses_is_neither_applied_nor_saved() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 3).unwrap();
    let good = one_line(&lab, &svc(&[(1, 1), (2, 1), (3, 1)]), "forwarder");
    lab.write_vm_config(&good).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    let rr = counts(&[("rs1", 10), ("rs2", 10), ("rs3", 10)]);
    assert_eq!(http_requests(&lab, 30, None), rr);

    // wrr 3:2:1 would show if it were applied; 16 M flows need 768 MiB, the VM has 512 MiB.
    let mut bad: serde_json::Value =
        serde_json::from_str(&one_line(&lab, &format!("[{}]", service("wrr", "tcp", 80, 0, &[(1, 3), (2, 2), (3, 1)])), "forwarder"))
            .unwrap();
    bad["flow_capacity"] = 16_777_216.into();
    lab.vm().send(&format!("apply-config {bad}")).unwrap();
    lab.vm()
        .wait_for(
            "event config: config NOT applied (apply failed): flow_capacity: a flow table of 16777216 flows needs 768 MiB",
            Duration::from_secs(60),
        )
        .unwrap();
    // The serial console is slow under TCG: the line's end may come a moment after its start.
    lab.vm().wait_for("the running config stays in force and the saved one is unchanged", Duration::from_secs(10)).unwrap();
    let log = lab.vm().console_log();
    assert!(log.contains("the running config stays in force and the saved one is unchanged"), "{log}");
    assert!(!log.contains("config saved and applied"), "{log}");
    assert_eq!(http_requests(&lab, 30, None), rr, "still forwarding by the previous config");
    let header = "status: netfw forwarder (two-arm: vip_side=eth1 rs_side=eth2) DIP 198.18.0.2/24";
    let rows = table_rows(&mut lab, "status", header);
    assert!(rows.iter().all(|r| r.get(2).map(String::as_str) == Some("1")), "weights are still 1: {rows:?}");
    assert!(lab.vm().console_log().contains("/65536 (48 bytes/flow)"), "the flow table kept its size");

    lab.vm().send("reboot").unwrap();
    lab.vm().wait_for_nth(qemu::READY_MARKER, 2, Duration::from_secs(120)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    assert_eq!(http_requests(&lab, 30, None), rr, "after a reboot the box runs the previous config");
    lab.vm().send("poweroff").unwrap();
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap();
    assert_eq!(lab.read_vm_config().unwrap(), good, "the saved config is the previous one");
}
