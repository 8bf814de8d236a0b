//! Issue 5 in a real browser: Debian's headless chromium (driven by playwright-core,
//! `tests/browser/flow.mjs`) in the client namespace, against the appliance image booted in
//! QEMU out of the box (no config, management by DHCP). The browser does what an operator
//! does (including a health check, issue 11: the page shows a stopped server down and why;
//! and an HA section, issue 12: the page shows the box's place in its pair);
//! and issue 14: an update uploaded from the page, on trial, confirmed, then the old system
//! booted again from the page); this test checks the traffic at each step. The box boots from
//! its disk under SeaBIOS. Screenshots: `target/test-artifacts/web/`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use qemu::lab::{self, Lab, Layout};
use qemu::vm::{scaled, Firmware};
use tests::{counts, http_requests, management_address, one_lab_at_a_time, setup_code, wait_forwarding};

/// Kills the browser script (and its chromium) if the test fails.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn first_boot_to_reboot_in_a_real_browser() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 2).unwrap();
    lab.start_dhcp_server().unwrap();
    lab.fresh_vm_disk().unwrap();
    let bundle = tests::versioned(lab.dir(), tests::NEW_VERSION);
    lab.boot_vm(Firmware::SeaBios).unwrap();
    lab.vm().wait_for("web page: serving HTTPS on eth0", Duration::from_secs(30)).unwrap();
    let console = lab.vm().console_log();
    assert!(console.contains("CONFIG PROBLEM"), "out of the box there is no config");
    let mgmt = management_address(&console).unwrap_or_else(|| panic!("no management address on the banner:\n{console}"));
    let code = setup_code(&console).expect("a setup code on the console");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let out = root.join("target/test-artifacts/web");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.ns("client"), "node", "tests/browser/flow.mjs"])
        .current_dir(&root)
        .env("BASE", format!("https://{mgmt}"))
        .env("CODE", &code)
        .env("OUT", &out)
        .env("VIP", lab::VIP.to_string())
        .env("RIP1", lab::rip(1).to_string())
        .env("RIP2", lab::rip(2).to_string())
        .env("DIP", lab::DIP.to_string())
        .env("PEER", lab::PEER_DIP.to_string())
        .env("GATEWAY", lab::ROUTER_VIP_SIDE.to_string())
        .env("HOME", lab.dir())
        .env("BUNDLE", &bundle)
        .env("NEW_VERSION", tests::NEW_VERSION)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (install nodejs and run `npm ci --prefix tests/browser`)");
    let mut script = Script(child);
    let mut stdin = script.0.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = script.0.stdout.take().unwrap();
    let stderr = script.0.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(format!("stderr: {l}")))));
    let next = |what: &str| -> String {
        loop {
            match rx.recv_timeout(scaled(Duration::from_secs(180))) {
                Ok(l) if l.starts_with("STEP ") || l == "DONE" || l.starts_with("COUNTERS") => {
                    println!("browser: {l}");
                    return l;
                }
                Ok(l) => {
                    println!("browser: {l}");
                    assert!(!l.contains("Error"), "the browser script failed waiting for {what}: {l}");
                }
                Err(_) => panic!("the browser script never reached {what}"),
            }
        }
    };
    let mut go = || stdin.write_all(b"go\n").unwrap();

    // Saved from the page: the client's requests reach both real servers.
    assert_eq!(next("saved"), "STEP saved");
    wait_forwarding(&lab, &["rs1", "rs2"]);
    assert_eq!(http_requests(&lab, 20, None), counts(&[("rs1", 10), ("rs2", 10)]));
    go();

    // rs2 set to weight 0 from the page: new requests avoid it.
    assert_eq!(next("drained"), "STEP drained");
    assert_eq!(http_requests(&lab, 10, None), counts(&[("rs1", 10)]));
    go();

    // Traffic while the status page watches rs1's counters.
    assert_eq!(next("counters"), "STEP counters");
    assert_eq!(http_requests(&lab, 10, None), counts(&[("rs1", 10)]));
    go();
    assert!(next("counters moved").starts_with("COUNTERS"));

    // A health check saved from the page; rs2's service stops, and the page must show it.
    assert_eq!(next("checked"), "STEP checked");
    lab.stop_server(2);
    go();

    // Issue 12: the page made the box one of an HA pair (its peer absent): it serves the VIP
    // alone, on the virtual MAC, which the router now reaches it at.
    assert_eq!(next("paired"), "STEP paired");
    wait_forwarding(&lab, &["rs1"]);
    let router = lab.ns("router");
    assert_eq!(lab.neighbour(&router, lab::VIP).as_deref(), Some("00:00:5e:00:01:33"), "the VIP on the virtual MAC of vrid 51");
    go();

    // An update uploaded from the page: the box reboots into it on trial, the new system
    // confirms itself and comes back with the config, forwarding by it.
    assert_eq!(next("updating"), "STEP updating");
    lab.vm().wait_for("for a trial (kexec)", Duration::from_secs(120)).unwrap();
    lab.vm().wait_for("is now the default", Duration::from_secs(300)).unwrap();
    lab.vm().wait_for_nth("web page: serving HTTPS on eth0", 2, Duration::from_secs(30)).unwrap();
    let after = lab.vm().console_log();
    let second_boot = after.rsplit("director appliance starting").next().unwrap_or_default();
    assert!(!second_boot.contains("CONFIG PROBLEM") && !second_boot.contains("setup code"), "{second_boot}");
    wait_forwarding(&lab, &["rs1"]);
    assert_eq!(http_requests(&lab, 10, None), counts(&[("rs1", 10)]), "still draining rs2 after the update");
    go();

    // The old system booted again from the page, on purpose.
    assert_eq!(next("switching"), "STEP switching");
    lab.vm().wait_for_nth(qemu::READY_MARKER, 3, Duration::from_secs(120)).unwrap();
    wait_forwarding(&lab, &["rs1"]);
    go();
    assert_eq!(next("done"), "DONE");
    drop(stdin);
    let st = script.0.wait().unwrap();
    assert!(st.success(), "browser script exit {st}");
    let shots = std::fs::read_dir(&out).unwrap().count();
    assert!(shots >= 10, "{shots} screenshots in {}", out.display());
    println!("screenshots: {}", out.display());
}
