//! Issue 14: updates of the box's system through its API, as an operator's script does it:
//! bad bundles refused with nothing written, a power cut during the upload, a system that hangs
//! rolled back by the hardware watchdog, and a signed bundle streamed into the inactive slot
//! whose trial boot confirms itself. One box, booted under OVMF from its own disk (the browser
//! test does the same from the page under SeaBIOS, and goes back on purpose).
//!
//! The new systems are the built image's kernel and initramfs with a second archive appended
//! (the kernel unpacks both; the later files win): one that says another version, and one
//! whose `/init` spins forever (a system that never gets ready). `image bundle --kernel
//! --initramfs` signs them with the build's key, as an operator signs a system of their own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use qemu::lab::{Lab, Layout};
use qemu::vm::{image_dir, Firmware};
use tests::{bundle_with, one_lab_at_a_time, poll_until, setup_code, svc, versioned, wait_forwarding, Answer, Web};

const MGMT: &str = "198.19.0.10";
const PASSWORD: &str = "correct horse battery";
use tests::NEW_VERSION;

/// The smallest static x86-64 program: `jmp .` forever (an init that hangs).
fn spinning_elf() -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&0x40_0078u64.to_le_bytes()); // entry: the code after the headers
    e.extend_from_slice(&64u64.to_le_bytes()); // program headers
    e.extend_from_slice(&0u64.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    for h in [64u16, 56, 1, 0, 0, 0] {
        e.extend_from_slice(&h.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R X
    for v in [0u64, 0x40_0000, 0x40_0000, 0x7a, 0x7a, 0x1000] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&[0xeb, 0xfe]);
    e
}

/// Boot the box with a config and a management address, log in; the client and the page.
fn boot(lab: &mut Lab, fw: Firmware) -> Web {
    let cfg = lab.config_with_management(&svc(&[(1, 1), (2, 1)]), "eth0", Some(&format!("{MGMT}/24")));
    lab.write_vm_config(&cfg).unwrap();
    let t = lab.boot_vm(fw).unwrap();
    println!("{fw:?}: power-on to ready {:.1} s", t.as_secs_f64());
    lab.vm().wait_for("web page: serving HTTPS on eth0", Duration::from_secs(30)).unwrap();
    let code = setup_code(&lab.vm().console_log()).expect("a setup code");
    let mut web = Web::new(&lab.ns("router"), MGMT, lab.dir(), "operator");
    assert_eq!(web.login(PASSWORD, Some(&code)).status, 200);
    web
}

/// Log in again after a reboot (sessions do not survive it).
fn relogin(lab: &Lab, web: &mut Web) {
    poll_until("the page did not come back", Duration::from_secs(60), || match web.login(PASSWORD, None).status {
        200 => Ok(()),
        s => Err(format!("login answered {s}")),
    });
    let _ = lab;
}

fn report(web: &Web) -> serde_json::Value {
    let a = web.get("/api/update");
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

fn slot<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["slots"].as_array().unwrap().iter().find(|s| s["slot"] == name).unwrap()
}

/// POST a bundle (or any file) to /api/update with curl, optionally rate limited.
fn post(web: &Web, file: &Path, rate: Option<&str>) -> Child {
    web.post_file("/api/update", file, rate)
}

fn answer(c: Child) -> Answer {
    Web::answer_of(c)
}

#[test]
fn updates_through_the_api_refusals_a_power_cut_a_hang_rolled_back_and_an_update_confirmed_uefi() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 2).unwrap();
    let mut web = boot(&mut lab, Firmware::Ovmf);
    wait_forwarding(&lab, &["rs1", "rs2"]);
    let r = report(&web);
    let old = r["version"].as_str().unwrap().to_string();
    assert_eq!((r["running"].as_str(), r["default"].as_str()), (Some("a"), Some("a")), "{r}");
    assert_eq!(slot(&r, "b")["contents"], "empty", "{r}");

    // Refused with the reason, nothing written: another key, a forged signature, a truncated
    // bundle, something that is not a bundle.
    let dir = lab.dir().to_path_buf();
    let good = versioned(&dir, NEW_VERSION);
    let bytes = std::fs::read(&good).unwrap();
    let other_key = dir.join("other.pem");
    let k = Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&other_key).output().unwrap();
    assert!(k.status.success());
    let st = Command::new(qemu::proc::bin("image").unwrap())
        .args(["bundle", "--kernel", image_dir().join("vmlinuz").to_str().unwrap()])
        .args(["--initramfs", dir.join("versioned.initramfs").to_str().unwrap(), "--version", NEW_VERSION])
        .args(["--key", other_key.to_str().unwrap(), "--out", dir.join("other").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let mut forged = bytes.clone();
    let at = bytes.windows(NEW_VERSION.len()).position(|w| w == NEW_VERSION.as_bytes()).unwrap();
    forged[at] = b'9';
    let truncated = &bytes[..bytes.len() / 2];
    let cases: [(&str, PathBuf, Vec<u8>, &str); 4] = [
        ("another key", dir.join("other/director.bundle"), Vec::new(), "signed by key"),
        ("a forged signature", dir.join("forged.bundle"), forged, "signature"),
        ("a truncated bundle", dir.join("truncated.bundle"), truncated.to_vec(), "truncated"),
        ("not a bundle", dir.join("not.bundle"), b"GIF89a not an update".to_vec(), "not an update bundle"),
    ];
    for (what, path, content, reason) in cases {
        if !content.is_empty() {
            std::fs::write(&path, content).unwrap();
        }
        let a = answer(post(&web, &path, None));
        println!("{what}: {} {}", a.status, a.body);
        assert_eq!(a.status, 400, "{what}: {}", a.body);
        let e = a.json()["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(e.contains("nothing written") && e.contains(reason), "{what}: {e}");
        let r = report(&web);
        assert_eq!(slot(&r, "b")["contents"], "empty", "{what} wrote the slot: {r}");
        assert!(r["trial"].is_null(), "{r}");
    }
    assert_eq!(web.get("/api/status").status, 200, "the box stopped answering");

    // A power cut while the bundle streams in: the box boots its old system with its config.
    let upload = post(&web, &good, Some("400k"));
    poll_until("the upload never started writing", Duration::from_secs(60), || {
        let r = report(&web);
        match r["progress"]["received"].as_u64() {
            Some(n) if n > 1 << 20 && r["progress"]["phase"] == "receiving" => Ok(()),
            _ => Err(r.to_string()),
        }
    });
    lab.vm = None; // QEMU killed: the power is cut
    lab.boot_vm(Firmware::Ovmf).unwrap();
    let _ = answer(upload);
    relogin(&lab, &mut web);
    let r = report(&web);
    assert_eq!((r["version"].as_str(), r["running"].as_str(), r["default"].as_str()), (Some(old.as_str()), Some("a"), Some("a")), "{r}");
    assert_eq!(slot(&r, "b")["contents"], "incomplete", "{r}");
    wait_forwarding(&lab, &["rs1", "rs2"]);

    // A system whose init hangs: the watchdog resets it, the old slot reports the failure.
    let elf = spinning_elf();
    let hang = bundle_with(&dir, "hangs", "0.1.0+hangs", &[("init", 0o100755, &elf)]);
    let a = answer(post(&web, &hang, None));
    assert_eq!(a.status, 200, "{}", a.body);
    lab.vm().wait_for("for a trial (kexec)", Duration::from_secs(90)).unwrap();
    lab.vm().wait_for("update to 0.1.0+hangs failed, rolled back", Duration::from_secs(240)).unwrap();
    lab.vm().wait_for_nth(qemu::READY_MARKER, 2, Duration::from_secs(120)).unwrap();
    let log = lab.vm().console_log();
    println!("{}", log.lines().find(|l| l.contains("update to 0.1.0+hangs failed")).unwrap_or_default());
    relogin(&lab, &mut web);
    let r = report(&web);
    assert_eq!((r["version"].as_str(), r["running"].as_str(), r["default"].as_str()), (Some(old.as_str()), Some("a"), Some("a")), "{r}");
    assert_eq!(r["last"]["ok"], false, "{r}");
    assert!(r["last"]["message"].as_str().unwrap_or_default().starts_with("update to 0.1.0+hangs failed, rolled back"), "{r}");
    let events = web.get("/api/events?kind=update").json();
    assert!(events.to_string().contains("update to 0.1.0+hangs failed, rolled back"), "{events}");
    wait_forwarding(&lab, &["rs1", "rs2"]);

    // The update: streamed, verified, rebooted into on trial, confirmed; the same config
    // forwards. (Going back on purpose is the browser test's, from the page.)
    let a = answer(post(&web, &good, None));
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("rebooting into it for a trial"), "{}", a.body);
    lab.vm().wait_for_nth("for a trial (kexec)", 2, Duration::from_secs(90)).unwrap();
    lab.vm().wait_for("TRIAL of slot b", Duration::from_secs(90)).unwrap();
    lab.vm().wait_for("is now the default", Duration::from_secs(240)).unwrap();
    relogin(&lab, &mut web);
    let r = report(&web);
    assert_eq!(r["version"], NEW_VERSION, "{r}");
    assert_eq!((r["running"].as_str(), r["default"].as_str()), (Some("b"), Some("b")), "{r}");
    assert_eq!(r["last"]["ok"], true, "{r}");
    wait_forwarding(&lab, &["rs1", "rs2"]);
    let events = web.get("/api/events?kind=update").json();
    assert!(events.to_string().contains(&format!("updated from {old} to {NEW_VERSION}")), "{events}");
}
