//! Issue 5's API proofs against the appliance booted in QEMU: the web page's JSON API over
//! HTTPS on the management NIC, with curl from the client namespace as the browser.

use std::time::Duration;

use qemu::lab::{self, Lab, Layout};
use qemu::vm::Firmware;
use serde_json::json;
use tests::{one_lab_at_a_time, setup_code, Web};

const MGMT: &str = "198.19.0.10";
const PASSWORD: &str = "correct horse battery";

/// A lab whose appliance has a static management address and no services yet.
fn boot() -> Lab {
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 2).unwrap();
    let mut cfg = config(&lab, json!([]));
    // No VIP yet, so no router on a VIP segment to point at.
    cfg.as_object_mut().unwrap().remove("gateway");
    lab.write_vm_config(&cfg.to_string()).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("web page: serving HTTPS on eth0", Duration::from_secs(30)).unwrap();
    lab
}

fn config(lab: &Lab, services: serde_json::Value) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&lab.config_with_management("[]", "eth0", Some(&format!("{MGMT}/24")))).unwrap();
    v["services"] = services;
    v
}

#[test]
fn the_api_needs_a_session_and_csrf_limits_logins_and_names_bad_fields() {
    let _g = one_lab_at_a_time();
    let mut lab = boot();
    let code = setup_code(&lab.vm().console_log()).expect("the console shows a setup code");
    let client = lab.ns("client");
    let mut web = Web::new(&client, MGMT, lab.dir(), "api");

    // Plain HTTP only redirects; the page is there; unknown routes are 404.
    let plain = std::process::Command::new("ip")
        .args(["netns", "exec", &client, "curl", "-s", "-i", &format!("http://{MGMT}/api/status")])
        .output()
        .unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(plain.starts_with("HTTP/1.1 301") && plain.contains(&format!("Location: https://{MGMT}/")), "{plain}");
    assert_eq!(web.get("/").status, 200);
    assert_eq!(web.get("/no/such/page").status, 404);
    assert!(web.get("/").headers.contains("Content-Security-Policy: default-src 'self'"));

    // Nothing but the session state before login.
    assert_eq!(web.get("/api/session").json()["setup_needed"], true);
    for path in ["/api/status", "/api/config", "/api/real-servers/setup", "/api/config/export"] {
        assert_eq!(web.get(path).status, 401, "{path} without a session");
    }
    assert_eq!(web.send("PUT", "/api/config", &config(&lab, json!([]))).status, 401);
    assert_eq!(web.call("POST", "/api/reboot", None, None).status, 401);

    // First boot: the console's code and a new password.
    let wrong = web.login(PASSWORD, Some("AAAAA-AAAAA"));
    assert_eq!((wrong.status, wrong.json()["field"].as_str()), (403, Some("code")), "{}", wrong.body);
    let short = web.login("short", Some(&code));
    assert_eq!((short.status, short.json()["field"].as_str()), (400, Some("password")), "{}", short.body);
    let form = web.call("POST", "/api/setup", Some(("application/x-www-form-urlencoded", b"code=x&password=y")), None);
    assert_eq!(form.status, 400, "a cross-site form cannot post the setup: {}", form.body);
    let ok = web.login(PASSWORD, Some(&code));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let cookie = ok.headers.lines().find(|l| l.starts_with("Set-Cookie: __Host-sid=")).unwrap_or_default().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let token = cookie.trim_start_matches("Set-Cookie: __Host-sid=").split(';').next().unwrap_or_default();
    assert_eq!(token.len(), 32, "a 128-bit token: {cookie}");
    assert_eq!(web.login(PASSWORD, Some(&code)).status, 409, "the setup code works once");
    assert_eq!(web.get("/api/status").json()["mode"], "forwarder");

    // CSRF: missing or wrong → 403; nothing changes.
    let doc = config(
        &lab,
        json!([{"vip": lab::VIP.to_string(), "protocol": "tcp", "port": 80, "scheduler": "rr",
        "real_servers": [{"address": lab::rip(1).to_string(), "weight": 1}]}]),
    );
    let body = doc.to_string();
    assert_eq!(web.call("PUT", "/api/config", Some(("application/json", body.as_bytes())), None).status, 403);
    assert_eq!(
        web.call("PUT", "/api/config", Some(("application/json", body.as_bytes())), Some("0123456789abcdef0123456789abcdef")).status,
        403
    );
    assert_eq!(web.get("/api/config").json()["services"], json!([]), "a refused change changed nothing");
    assert!(web.get("/api/config").json().get("gateway").is_none());

    // Invalid inputs: 400 naming the field, in the seeds' words.
    let mut bad = doc.clone();
    bad["services"][0]["port"] = json!("eighty");
    let a = web.send("PUT", "/api/config", &bad);
    assert_eq!((a.status, a.json()["field"].as_str()), (400, Some("services[0].port")), "{}", a.body);
    let mut bad = doc.clone();
    bad["services"][0]["real_servers"][0]["address"] = json!("10.99.0.5");
    let a = web.send("PUT", "/api/config", &bad);
    assert_eq!((a.status, a.json()["field"].as_str()), (400, Some("services[0].real_servers[0].address")), "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap_or_default().contains("DIP's L2 segment"), "{}", a.body);
    let a = web.call("PUT", "/api/config", Some(("application/json", b"{\"version\": 1, ")), web.csrf.as_deref());
    assert_eq!(a.status, 400, "{}", a.body);
    // An XSS payload comes back escaped.
    let mut xss = doc.clone();
    xss["services"][0]["vip"] = json!("<img src=x onerror=alert(1)>");
    let a = web.send("PUT", "/api/config", &xss);
    assert_eq!(a.status, 400);
    assert!(!a.body.contains("<img") && a.body.contains("\\u003cimg"), "{}", a.body);
    assert_eq!(a.json()["field"], "services[0].vip");
    // Oversize → 413.
    let huge = vec![b' '; 70 * 1024];
    assert_eq!(web.call("PUT", "/api/config", Some(("application/json", &huge)), web.csrf.as_deref()).status, 413);

    // A valid change applies and is readable back; the real-server commands follow it.
    let a = web.send("PUT", "/api/config", &doc);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(web.get("/api/config").json()["services"][0]["real_servers"][0]["address"], lab::rip(1).to_string());
    let setup = web.get("/api/real-servers/setup").json();
    let cmds = setup["real_servers"][0]["commands"].as_str().unwrap_or_default().to_string();
    assert!(cmds.contains("arp_ignore = 1") && cmds.contains(&format!("ip addr add {}/32 dev lo", lab::VIP)), "{cmds}");
    // The router's side (seed 001): the VIP pinned to the box's VIP-side MAC, read from the NIC.
    let mac = setup["router"]["director_mac"].as_str().unwrap_or_default().to_string();
    assert!(mac.len() == 17 && mac.matches(':').count() == 5, "{setup}");
    let router = setup["router"]["commands"].as_str().unwrap_or_default();
    assert!(router.contains(&format!("arp -s {} {mac}\n", lab::VIP)), "{router}");
    assert!(router.contains(&format!("never the director's DIP {}", lab::DIP)), "{router}");
    // The connection list answers in the mode in force, and names a bad filter.
    let conns = web.get(&format!("/api/connections?vip={}", lab::VIP));
    assert_eq!((conns.status, &conns.json()["mode"]), (200, &json!("forwarder")), "{}", conns.body);
    let bad = web.get("/api/connections?server=x");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().is_some_and(|e| e.contains("server: \"x\" is not an IPv4 address")), "{}", bad.body);
    let rules = web.get("/api/config/export?format=ipvsadm").body;
    assert!(rules.contains(&format!("-A -t {}:80 -s rr", lab::VIP)), "{rules}");

    // A keepalived.conf in: its virtual_server becomes the service (check and sorry server
    // included), the VRRP block is listed, not dropped; saved, it reads back as imported.
    let (vip, rip1, rip2) = (lab::VIP, lab::rip(1), lab::rip(2));
    let conf = format!(
        "vrrp_instance VI_1 {{\n  state MASTER\n  virtual_ipaddress {{\n    {vip}\n  }}\n}}\n\
         virtual_server {vip} 80 {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  sorry_server {rip2} 80\n\
         \x20 real_server {rip1} 80 {{\n    weight 2\n    TCP_CHECK {{\n      connect_timeout 1\n    }}\n  }}\n}}\n"
    );
    let a = web.call("POST", "/api/config/import-keepalived", Some(("text/plain", conf.as_bytes())), web.csrf.as_deref());
    assert_eq!(a.status, 200, "{}", a.body);
    let imported = a.json();
    assert!(imported["not_mapped"].to_string().contains("line 1: `vrrp_instance VI_1 { … }` not imported"), "{}", a.body);
    assert_eq!(imported["services"][0]["health_check"]["type"], "tcp", "{}", a.body);
    let mut kdoc = doc.clone();
    kdoc["services"] = imported["services"].clone();
    let a = web.send("PUT", "/api/config", &kdoc);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(web.get("/api/config").json()["services"], imported["services"], "the import round-trips");
    let broken =
        web.call("POST", "/api/config/import-keepalived", Some(("text/plain", b"virtual_server 1.2.3.4 80 {\n")), web.csrf.as_deref());
    assert!(broken.status == 400 && broken.body.contains("keepalived.conf line 1: a block is not closed"), "{}", broken.body);
    assert_eq!(web.send("PUT", "/api/config", &doc).status, 200, "and back");

    // A dedicated NIC may be named by its MAC, as on the console (one validator, one resolver).
    let mut by_mac = doc.clone();
    by_mac["nics"]["vip_side"] = json!(lab::DIRECTOR_VIP_MAC.to_uppercase());
    let a = web.send("PUT", "/api/config", &by_mac);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.json()["message"].as_str().unwrap_or_default().starts_with("config saved and applied"), "{}", a.body);
    assert_eq!(web.get("/api/config").json()["nics"]["vip_side"], lab::DIRECTOR_VIP_MAC.to_uppercase());
    assert_eq!(web.send("PUT", "/api/config", &doc).status, 200, "and back to the name");

    // A change the data plane refuses: the API says at which step and why, naming the field,
    // and nothing changed.
    let mut huge = doc.clone();
    huge["flow_capacity"] = json!(16_777_216);
    huge["services"][0]["scheduler"] = json!("wrr");
    let a = web.send("PUT", "/api/config", &huge);
    assert_eq!(
        (a.status, a.json()["step"].as_str(), a.json()["field"].as_str()),
        (409, Some("apply"), Some("flow_capacity")),
        "{}",
        a.body
    );
    assert!(a.json()["error"].as_str().unwrap_or_default().contains("needs 768 MiB"), "{}", a.body);
    assert_eq!(web.get("/api/config").json()["services"][0]["scheduler"], "rr", "the running config stays");

    // Logout ends the session.
    assert_eq!(web.send("POST", "/api/logout", &json!({})).status, 200);
    assert_eq!(web.get("/api/status").status, 401);

    // Wrong passwords: 5 per address per minute, then 429 with when to retry, even for the
    // right one; another address is not affected.
    let mut attacker = Web::new(&client, MGMT, lab.dir(), "attacker");
    attacker.from = Some("198.51.100.3".into());
    for _ in 0..5 {
        assert_eq!(attacker.login("guess guess guess", None).status, 401);
    }
    let limited = attacker.login(PASSWORD, None);
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.headers.contains("Retry-After: "), "{}", limited.headers);
    assert!(limited.json()["error"].as_str().unwrap_or_default().contains("retry in"), "{}", limited.body);
    assert_eq!(web.login(PASSWORD, None).status, 200, "198.51.100.2 may still log in");

    // Change the password: the current one is checked, every session ends, the new one works.
    let a = web.send("POST", "/api/password", &json!({"current": "not it at all", "new": "another good password"}));
    assert_eq!((a.status, a.json()["field"].as_str()), (403, Some("current")), "{}", a.body);
    let a = web.send("POST", "/api/password", &json!({"current": PASSWORD, "new": "short"}));
    assert_eq!((a.status, a.json()["field"].as_str()), (400, Some("new")), "{}", a.body);
    assert_eq!(web.send("POST", "/api/password", &json!({"current": PASSWORD, "new": "another good password"})).status, 200);
    assert_eq!(web.get("/api/status").status, 401, "sessions end with a password change");
    assert_eq!(web.login(PASSWORD, None).status, 401);
    assert_eq!(web.login("another good password", None).status, 200);

    // NIC roles only change with a reboot: saved, not applied, and the status says so.
    let mut swapped = doc.clone();
    swapped["nics"] = json!({"vip_side": "eth2", "rs_side": "eth1"});
    swapped["dip"] = json!("203.0.113.2/24");
    swapped["services"][0]["vip"] = json!("198.18.0.10");
    swapped["services"][0]["real_servers"][0]["address"] = json!("203.0.113.11");
    swapped["gateway"] = json!("198.18.0.1");
    let a = web.send("PUT", "/api/config", &swapped);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.json()["message"].as_str().unwrap_or_default().contains("NOT applied"), "{}", a.body);
    assert!(web.get("/api/status").json()["reboot_needed"].as_str().unwrap_or_default().contains("next reboot"));
    assert_eq!(web.get("/api/config").json()["nics"]["vip_side"], "eth1", "the running config stays in force");
}

/// A change of the management address is applied at once but kept only if confirmed from
/// the new address within 60 s; otherwise the box goes back to the old one by itself.
#[test]
fn a_management_change_rolls_back_unless_confirmed() {
    let _g = one_lab_at_a_time();
    let mut lab = boot();
    let code = setup_code(&lab.vm().console_log()).unwrap();
    let client = lab.ns("client");
    let mut old = Web::new(&client, MGMT, lab.dir(), "old");
    assert_eq!(old.login(PASSWORD, Some(&code)).status, 200);
    let mut doc = old.get("/api/config").json();
    doc["management"]["address"] = json!("198.19.0.11/24");

    // Not confirmed: rolled back after the window.
    let a = old.send("PUT", "/api/config", &doc);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.json()["message"].as_str().unwrap_or_default().contains("confirm within 60 s"), "{}", a.body);
    let mut new = Web::new(&client, "198.19.0.11", lab.dir(), "new");
    assert_eq!(new.login(PASSWORD, None).status, 200, "the page answers on the new address");
    assert!(new.get("/api/status").json()["confirm_within_s"].as_u64().is_some());
    assert_eq!(old.get("/api/session").status, 200, "the old address answers during the window");
    lab.vm().wait_for("ROLLBACK: the management change was not confirmed within 60 s", Duration::from_secs(90)).unwrap();
    assert_eq!(old.get("/api/config").json()["management"]["address"], format!("{MGMT}/24"), "back on the old address");
    let gone = new.get("/api/session");
    assert!(gone.nobody_there(), "the new address must be gone after the rollback: curl {} status {}", gone.curl_exit, gone.status);

    // A confirmation through the old address proves nothing about the new one: refused.
    let a = old.send("PUT", "/api/config", &doc);
    assert_eq!(a.status, 200, "{}", a.body);
    let c = old.send("POST", "/api/config/confirm", &json!({}));
    assert_eq!(c.status, 409, "{}", c.body);
    assert!(
        c.json()["error"].as_str().unwrap_or_default().contains("confirm from the new address: open https://198.19.0.11/"),
        "{}",
        c.body
    );

    // Confirmed from the new address: kept, and saved.
    let mut new = Web::new(&client, "198.19.0.11", lab.dir(), "new2");
    assert_eq!(new.login(PASSWORD, None).status, 200);
    let c = new.send("POST", "/api/config/confirm", &json!({}));
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(new.send("POST", "/api/config/confirm", &json!({})).status, 409, "nothing left to confirm");
    let gone = old.get("/api/session");
    assert!(gone.nobody_there(), "the old address is gone once confirmed: curl {} status {}", gone.curl_exit, gone.status);
    let saved: serde_json::Value = serde_json::from_str(&lab.read_vm_config().unwrap()).unwrap();
    assert_eq!(saved["management"]["address"], "198.19.0.11/24", "the confirmed change is on the config partition");
}
