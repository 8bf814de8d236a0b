//! Issue 13: the box watched from outside with the real tools, on the lab's management segment
//! (the router's namespace holds 198.19.0.1 there, as an operator's monitoring host would):
//! Debian's Prometheus scrapes `GET /metrics` with the config's bearer token and its HTTP API
//! answers for a real server's connections; `promtool check metrics` passes the exposition;
//! Debian's rsyslog receives the box's events (UDP, then TCP) and files them on their own;
//! the page's event log shows and downloads them.

use std::collections::BTreeMap;
use std::time::Duration;

use qemu::lab::{self, Lab, Layout};
use qemu::vm::Firmware;
use serde_json::json;
use tests::{http_requests, one_lab_at_a_time, poll_until, setup_code, svc, wait_forwarding, Web};

const MGMT: &str = "198.19.0.10";
const TOKEN: &str = "scrape-me-0123456789abcdef";
const PASSWORD: &str = "correct horse battery";

/// Families every scrape has, in either mode (the same names in both: a dashboard survives a
/// mode switch).
const FAMILIES: [&str; 14] = [
    "director_info",
    "director_boot_time_seconds",
    "director_config_valid",
    "director_service_up",
    "director_service_connections_total",
    "director_service_packets_total",
    "director_real_server_up",
    "director_real_server_connections",
    "director_real_server_connections_total",
    "director_real_server_packets_total",
    "director_real_server_bytes_total",
    "director_flows",
    "director_ha_configured",
    "director_memory_available_bytes",
];

/// The scrape passes `promtool check metrics` and has every family of `FAMILIES`, with
/// samples for both real servers.
fn check_exposition(lab: &Lab, body: &str) {
    let file = lab.dir().join("metrics.txt");
    write(&file, &format!("{body}\n"));
    let check = std::process::Command::new("sh").arg("-c").arg(format!("promtool check metrics < {}", file.display())).output().unwrap();
    assert!(check.status.success(), "promtool: {}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    for f in FAMILIES {
        assert!(body.lines().any(|l| l.starts_with(&format!("# TYPE {f} "))), "no {f} in:\n{body}");
    }
    for rs in [lab::rip(1), lab::rip(2)] {
        let server = format!("server=\"{rs}\"");
        assert!(body.lines().any(|l| l.starts_with("director_real_server_connections_total{") && l.contains(&server)), "{rs} in:\n{body}");
    }
}

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// rsyslog on the management segment: UDP and TCP 514; the box's lines (host name
/// `director-a`) in a file of their own, everything else in another.
fn start_rsyslog(lab: &mut Lab) -> std::path::PathBuf {
    let dir = lab.dir().join("rsyslog");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let conf = dir.join("rsyslog.conf");
    write(
        &conf,
        &format!(
            r#"global(workDirectory="{d}")
module(load="imudp")
input(type="imudp" address="{r}" port="514")
module(load="imtcp")
input(type="imtcp" address="{r}" port="514")
template(name="fields" type="string" string="host=%hostname% app=%app-name% msgid=%msgid% facility=%syslogfacility-text% severity=%syslogseverity-text% msg=%msg%\n")
if $hostname == "director-a" then {{
  action(type="omfile" file="{d}/director-a.log" template="fields")
  stop
}}
action(type="omfile" file="{d}/other.log")
"#,
            r = lab::ROUTER_MGMT
        ),
    );
    let router = lab.ns("router");
    let (c, p) = (conf.display().to_string(), dir.join("rsyslogd.pid").display().to_string());
    lab.spawn("rsyslogd", &router, &["rsyslogd", "-n", "-f", &c, "-i", &p]).unwrap();
    dir.join("director-a.log")
}

/// Prometheus in the router's namespace, scraping the box every second with the token.
fn start_prometheus(lab: &mut Lab) {
    let dir = lab.dir().join("prometheus");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let conf = dir.join("prometheus.yml");
    write(
        &conf,
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: director\n    scheme: https\n    \
             tls_config:\n      insecure_skip_verify: true\n    authorization:\n      type: Bearer\n      credentials: {TOKEN}\n    \
             static_configs:\n      - targets: ['{MGMT}:443']\n"
        ),
    );
    let router = lab.ns("router");
    let (c, d) = (format!("--config.file={}", conf.display()), format!("--storage.tsdb.path={}", dir.join("data").display()));
    lab.spawn("prometheus", &router, &["prometheus", &c, &d, "--web.listen-address=127.0.0.1:9090"]).unwrap();
}

/// One instant query against Prometheus' HTTP API: the first sample's value.
fn query(lab: &Lab, q: &str) -> Result<f64, String> {
    let out = lab
        .exec(
            &lab.ns("router"),
            &["curl", "-s", "--max-time", "5", "http://127.0.0.1:9090/api/v1/query", "--data-urlencode", &format!("query={q}")],
        )
        .map_err(|e| e.0)?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse().ok()).ok_or(out)
}

/// `GET /metrics` with curl from the router's namespace: (status, body).
fn scrape(lab: &Lab, token: Option<&str>) -> (u16, String) {
    let mut args = vec!["curl".to_string(), "-sk".into(), "--max-time".into(), "20".into(), "-w".into(), "\n%{http_code}".into()];
    if let Some(t) = token {
        args.extend(["-H".into(), format!("Authorization: Bearer {t}")]);
    }
    args.push(format!("https://{MGMT}/metrics"));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.exec(&lab.ns("router"), &a).unwrap_or_else(|e| e.0);
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (code.parse().unwrap_or(0), body.to_string())
}

/// The lines of the box's own syslog file that contain `needle`, once there are `n`.
fn wait_syslog(file: &std::path::Path, needle: &str, n: usize) -> Vec<String> {
    poll_until(&format!("rsyslog never filed {n} \"{needle}\""), Duration::from_secs(30), || {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<String> = text.lines().filter(|l| l.contains(needle)).map(str::to_string).collect();
        if lines.len() < n {
            Err(text)
        } else {
            Ok(lines)
        }
    })
}

#[test]
fn prometheus_scrapes_the_box_and_rsyslog_files_its_events() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 2).unwrap();
    let box_log = start_rsyslog(&mut lab);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&lab.config_with_management(&svc(&[(1, 1), (2, 1)]), "eth0", Some(&format!("{MGMT}/24")))).unwrap();
    cfg["hostname"] = json!("director-a");
    cfg["metrics"] = json!({ "token": TOKEN });
    cfg["syslog"] = json!({ "server": lab::ROUTER_MGMT.to_string(), "protocol": "udp", "facility": "local3" });
    lab.write_vm_config(&cfg.to_string()).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("web page: serving HTTPS on eth0", Duration::from_secs(30)).unwrap();

    // The boot itself is an event, in the box's own file, as RFC 5424 fields rsyslog parsed.
    let booted = wait_syslog(&box_log, "booted: mode forwarder", 1);
    assert!(booted[0].starts_with("host=director-a app=director msgid=box facility=local3 severity=notice"), "{booted:?}");

    // A scraper without the token, or with another, gets 401.
    assert_eq!(scrape(&lab, None).0, 401);
    assert_eq!(scrape(&lab, Some("not-the-token-at-all")).0, 401);
    wait_forwarding(&lab, &["rs1", "rs2"]);

    // The real thing scrapes; a real server's connection count follows the client's requests.
    start_prometheus(&mut lab);
    let rs1 = format!("director_real_server_connections_total{{server=\"{}\"}}", lab::rip(1));
    let before = poll_until("Prometheus never scraped the box", Duration::from_secs(60), || query(&lab, &rs1));
    let counts: BTreeMap<String, u64> = http_requests(&lab, 20, None);
    let want = before + counts.get("rs1").copied().unwrap_or(0) as f64;
    let seen =
        poll_until(&format!("Prometheus never saw {want} connections to rs1"), Duration::from_secs(30), || match query(&lab, &rs1) {
            Ok(v) if (v - want).abs() < 0.5 => Ok(v),
            Ok(v) => Err(format!("{rs1} = {v}")),
            Err(e) => Err(e),
        });
    println!("Prometheus: {rs1} went from {before} to {seen} after {counts:?}");
    assert_eq!(query(&lab, "director_ha_configured").ok(), Some(0.0));
    assert_eq!(query(&lab, "director_info{mode=\"forwarder\"}").ok(), Some(1.0));

    // The exposition passes promtool's checks (names, types, HELP).
    let (status, body) = scrape(&lab, Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    check_exposition(&lab, &body);
    assert!(body.contains("# HELP director_dropped_src_is_vip_total frames dropped: frame with source IP = VIP"), "{body}");

    // Logins are events: a failed one reaches rsyslog as a warning, over UDP.
    let code = setup_code(&lab.vm().console_log()).expect("the console shows a setup code");
    let router = lab.ns("router");
    let mut web = Web::new(&router, MGMT, lab.dir(), "observer");
    assert_eq!(web.login(PASSWORD, Some(&code)).status, 200);
    let mut guesser = Web::new(&router, MGMT, lab.dir(), "guesser");
    assert_eq!(guesser.login("not the password", None).status, 401);
    let failed = wait_syslog(&box_log, "failed login from 198.19.0.1", 1);
    assert!(failed[0].contains("msgid=login facility=local3 severity=warning"), "{failed:?}");

    // Switched to TCP from the page's API: the change itself is an event, and what follows
    // travels over TCP (rsyslog's imtcp files it the same way).
    let mut doc = web.get("/api/config").json();
    doc["syslog"]["protocol"] = json!("tcp");
    let a = web.send("PUT", "/api/config", &doc);
    assert_eq!(a.status, 200, "{}", a.body);
    wait_syslog(&box_log, "config saved and applied", 1);
    assert_eq!(guesser.login("still not the password", None).status, 401);
    wait_syslog(&box_log, "failed login from 198.19.0.1", 2);
    let tcp = lab.exec(&router, &["ss", "-Htn", "state", "established", "( sport = :514 )"]).unwrap_or_default();
    assert!(tcp.contains(MGMT), "the second failed login came over the box's TCP connection to rsyslog: {tcp}");

    // The event log on the API: filtered by kind, and as a text download.
    let logins = web.get("/api/events?kind=login").json();
    let msgs: Vec<&str> = logins["events"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(msgs.iter().filter(|m| m.starts_with("failed login from 198.19.0.1")).count() == 2, "{logins}");
    assert!(logins["events"].as_array().unwrap().iter().all(|e| e["kind"] == "login"), "{logins}");
    let text = web.get("/api/events?format=text").body;
    assert!(text.lines().any(|l| l.contains("notice box: booted: mode forwarder")), "{text}");
    assert!(text.lines().any(|l| l.contains("info config: config saved and applied")), "{text}");
    assert_eq!(web.get("/api/events?kind=nonsense").status, 400);
    let other = std::fs::read_to_string(lab.dir().join("rsyslog/other.log")).unwrap_or_default();
    assert!(!other.contains("director"), "nothing of the box's went elsewhere: {other}");

    // A capture in forwarder mode: netfw's own taps on its RS-facing NIC (AF_XDP here: the
    // kernel never sees these frames), ARP for 7 s (netfw asks each server's MAC every 5 s).
    let file = lab.dir().join("forwarder-arp.pcap");
    let status = web.download("POST", "/api/capture", &json!({"nic": "rs_side", "filter": "arp", "packets": 1000, "seconds": 7}), &file);
    assert_eq!(status, 200);
    arp_from_the_dip(&file);

    // A capture of an established flow's data, which the kernel's XDP path forwards out of
    // netfw's sight: while a capture with a host or port filter runs, the box leaves every
    // frame to netfw, so the file shows the upload's segments leaving for the real server.
    let tool = qemu::proc::bin("labtool").unwrap();
    let (client, to) = (lab.ns("client"), format!("{}:80", lab::VIP));
    let upload = [tool.to_str().unwrap(), "upload", "--to", &to, "--bytes", "8000000", "--mbit", "8"];
    lab.spawn("upload", &client, &upload).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let file = lab.dir().join("upload.pcap");
    let status = web.download(
        "POST",
        "/api/capture",
        &json!({"nic": "rs_side", "filter": "port", "value": "80", "packets": 300, "seconds": 4}),
        &file,
    );
    assert_eq!(status, 200);
    let read = std::process::Command::new("tcpdump").args(["-n", "-r"]).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&read.stdout);
    let to_vip = format!("> {}.80: ", lab::VIP);
    let data = text.lines().filter(|l| l.contains(&to_vip) && !l.ends_with("length 0")).count();
    println!("capture of an established upload: {} frames, {data} carrying data to the VIP", text.lines().count());
    assert!(data >= 100, "the upload's data segments were captured: {text}");
    let done = poll_until("the upload never finished", Duration::from_secs(30), || {
        let log = lab.log("upload");
        log.lines().find(|l| l.contains("mbit_s")).map(str::to_string).ok_or(log)
    });
    assert!(done.contains("\"received\":8000000"), "the real server got the whole upload: {done}");
}

/// Read a capture with tcpdump: ARP only, and the director's requests (from its RS-facing
/// MAC) all ask from the DIP, never the VIP (seed 001, question 1).
fn arp_from_the_dip(file: &std::path::Path) {
    let read = std::process::Command::new("tcpdump").args(["-n", "-e", "-r"]).arg(file).output().unwrap();
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(read.status.success(), "tcpdump -r: {}", String::from_utf8_lossy(&read.stderr));
    let requests: Vec<&str> = text.lines().filter(|l| l.contains("Request who-has")).collect();
    println!("capture: {} frames, {} ARP requests; e.g. {:?}", text.lines().count(), requests.len(), requests.first());
    assert!(requests.iter().any(|l| l.contains(&format!("who-has {} tell {}", lab::rip(1), lab::DIP))), "{text}");
    // tcpdump -e: "time source > destination, ...": the director's own requests.
    let from_director: Vec<&&str> = requests.iter().filter(|l| l.split_whitespace().nth(1) == Some(lab::DIRECTOR_RS_MAC)).collect();
    assert!(!from_director.is_empty(), "{text}");
    assert!(
        from_director.iter().all(|l| l.contains(&format!("tell {}", lab::DIP))),
        "every request of the director's asks from the DIP: {text}"
    );
    assert!(text.lines().all(|l| l.contains("ARP")), "ARP only: {text}");
}

/// A capture from the page's API in ipvs mode: ARP on the RS-facing NIC for 12 s. The file is
/// a pcap tcpdump reads, and every ARP request the director sent asks from the DIP, never
/// from the VIP (seed 001, question 1). One capture at a time; bad requests are refused.
#[test]
fn a_capture_of_arp_on_the_rs_facing_nic_shows_requests_from_the_dip() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm(Layout::TwoArm, 2).unwrap();
    let checked = svc(&[(1, 1), (2, 1)]).replacen(r#""real_servers""#, r#""health_check": {"type": "tcp"}, "real_servers""#, 1);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&lab.config_with_management(&checked, "eth0", Some(&format!("{MGMT}/24")))).unwrap();
    cfg["mode"] = json!("ipvs");
    cfg["metrics"] = json!({ "token": TOKEN });
    lab.write_vm_config(&cfg.to_string()).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    lab.vm().wait_for("web page: serving HTTPS on eth0", Duration::from_secs(30)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2"]);
    let code = setup_code(&lab.vm().console_log()).expect("the console shows a setup code");
    let router = lab.ns("router");
    let mut web = Web::new(&router, MGMT, lab.dir(), "capturer");
    assert_eq!(web.login(PASSWORD, Some(&code)).status, 200);

    // Refused with the reason: a bad filter, a limit over the bound.
    let bad = web.send("POST", "/api/capture", &json!({"nic": "rs_side", "filter": "host", "value": "nope", "packets": 10, "seconds": 5}));
    assert!(bad.status == 409 && bad.body.contains("is not an IPv4 address"), "{}", bad.body);
    let long = web.send("POST", "/api/capture", &json!({"nic": "rs_side", "filter": "arp", "packets": 10, "seconds": 3600}));
    assert!(long.status == 409 && long.body.contains("seconds: 1 to 60"), "{}", long.body);

    // The capture, while a second one is refused (one at a time).
    let file = lab.dir().join("arp.pcap");
    let path = file.clone();
    let first = std::thread::spawn(move || {
        web.download("POST", "/api/capture", &json!({"nic": "rs_side", "filter": "arp", "packets": 1000, "seconds": 12}), &path)
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut second = Web::new(&router, MGMT, lab.dir(), "second");
    assert_eq!(second.login(PASSWORD, None).status, 200);
    let busy = second.send("POST", "/api/capture", &json!({"nic": "vip_side", "filter": "all", "packets": 10, "seconds": 2}));
    assert!(busy.status == 409 && busy.body.contains("one at a time"), "{}", busy.body);
    let status = first.join().unwrap();
    assert_eq!(status, 200, "the capture's answer");

    arp_from_the_dip(&file);

    // The same metric names as in forwarder mode.
    let (status, body) = scrape(&lab, Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    check_exposition(&lab, &body);
    assert!(body.contains("director_info{mode=\"ipvs\""), "{body}");
}
