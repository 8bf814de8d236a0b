//! Issue 5's persistence proof: power cuts (QEMU killed) in the middle of a stream of saves.
//! After every cut the disk holds one of the documents that were saved, intact, and the box
//! boots with it and forwards by it.

use std::io::Write;
use std::time::Duration;

use qemu::lab::{Lab, Layout};
use qemu::vm::Firmware;
use tests::{one_lab_at_a_time, service};

/// The config with rs1's weight `w` (one line, for the console).
fn with_weight(lab: &Lab, w: u16) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&lab.config(&format!("[{}]", service("wrr", "tcp", 80, 0, &[(1, w), (2, 1)])))).unwrap();
    v.to_string()
}

/// rs1's weight in the config the disk holds (read offline, as the box will read it).
fn weight_on_disk(lab: &Lab) -> u64 {
    let text = lab.read_vm_config().unwrap_or_else(|e| panic!("no readable config after the cut: {e}"));
    let cfg = director_config::Config::parse(&text).unwrap_or_else(|e| panic!("broken config after the cut: {e}\n{text}"));
    cfg.validate().unwrap_or_else(|e| panic!("invalid config after the cut: {e}"));
    u64::try_from(cfg.services[0].real_servers[0].weight).unwrap_or_else(|_| panic!("a negative weight was saved: {text}"))
}

/// rs1's weight as the running box reports it.
fn weight_running(lab: &mut Lab) -> u64 {
    // netfw may still be starting right after the ready marker: ask until it answers.
    let nth = lab.vm().console_log().matches("status:   -> 198.18.0.11:80").count() + 1;
    for _ in 0..20 {
        lab.vm().send("status").unwrap();
        if lab.vm().wait_for_nth("status:   -> 198.18.0.11:80", nth, Duration::from_secs(1)).is_ok() {
            break;
        }
    }
    let log = lab.vm().console_log();
    let line = log.lines().rev().find(|l| l.contains("status:   -> 198.18.0.11:80")).unwrap().to_string();
    line.split("-> ").nth(1).and_then(|r| r.split_whitespace().nth(2)).and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn power_cuts_during_saves_never_leave_a_broken_config() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 2).unwrap();
    lab.write_vm_config(&with_weight(&lab, 1)).unwrap();
    let mut total = 0;
    for round in 0..5u64 {
        lab.vm = None;
        lab.boot_vm(Firmware::Direct).unwrap();
        let log = lab.vm().console_log();
        assert!(!log.contains("CONFIG PROBLEM"), "round {round}: the box found no valid config:\n{log}");
        let on_disk = weight_on_disk(&lab);
        assert_eq!(weight_running(&mut lab), on_disk, "round {round}: the box runs what the disk holds");

        // A stream of saves, each with a weight no other save in the test uses, cut at a
        // different moment each round.
        let weight = |k: u64| 2 + round * 40 + k;
        let before = lab.vm().console_log().matches("config saved and applied").count();
        let mut con = lab.vm().console_writer().unwrap();
        let lines: Vec<String> =
            (0..40).map(|i| format!("apply-config {}\n", with_weight(&lab, u16::try_from(weight(i)).unwrap()))).collect();
        let feeder = std::thread::spawn(move || {
            for l in lines {
                if con.write_all(l.as_bytes()).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        std::thread::sleep(Duration::from_millis(700 + 330 * round));
        let saves = lab.vm().console_log().matches("config saved and applied").count() - before;
        lab.vm().pull_plug();
        let _ = feeder.join();
        total += saves;
        let w = weight_on_disk(&lab);
        println!("power cut {round}: {saves} saves completed before it; the disk holds weight {w}");
        // The last save the console confirmed, or the one under way when the plug was pulled
        // (or the next: the log trails the disk by a moment): old or new, never anything else.
        let saves = saves as u64;
        let allowed = [if saves == 0 { on_disk } else { weight(saves - 1) }, weight(saves), weight(saves + 1)];
        assert!(allowed.contains(&w), "round {round}: weight {w} on disk, expected one of {allowed:?}");
    }
    assert!(total >= 5, "the cuts must come during saves: only {total} saves completed in all rounds");
    lab.vm = None;
    lab.boot_vm(Firmware::Direct).unwrap();
    assert_eq!(weight_running(&mut lab), weight_on_disk(&lab));
}
