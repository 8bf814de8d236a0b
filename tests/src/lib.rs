//! Helpers shared by the end-to-end tests: one lab at a time (the machine has two cores),
//! waits that scale with `DIRECTOR_TIMEOUT_MULT`, captures that end when the test's traffic
//! is done, and small parsers for labtool's JSON output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use qemu::lab::{self, Lab};
use qemu::vm::scaled;

static SERIAL: Mutex<()> = Mutex::new(());

/// Hold this while a lab runs: labs are independent, but two at once on two cores make
/// timeouts meaningless.
pub fn one_lab_at_a_time() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Poll `f` every 50 ms until it gives a value, for at most `timeout` (scaled by
/// `DIRECTOR_TIMEOUT_MULT`); panics with `what` and the last state otherwise.
pub fn poll_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => panic!("{what} (after {:?}): {last}", scaled(timeout)),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The real server that answered a `labtool long --bytes BYTES`, after checking the body was
/// exactly what that server sends: its name, a newline, then `bytes` bytes.
pub fn long_body(out: &str, bytes: u64) -> String {
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("labtool long printed no JSON ({e}): {out}"));
    let server = v["server"].as_str().unwrap_or_else(|| panic!("no server in {out}")).to_string();
    assert_eq!(v["body_bytes"].as_u64(), Some(bytes + server.len() as u64 + 1), "the whole body arrived: {out}");
    server
}

/// A capture on a NIC of a lab host that runs until the test's traffic is done, so what it
/// did not see really did not cross the NIC.
#[derive(Debug)]
pub struct Sniffer {
    label: String,
    stop: PathBuf,
}

impl Sniffer {
    /// Start capturing on `dev` in `ns`; returns once the capture runs.
    pub fn start(lab: &mut Lab, label: &str, ns: &str, dev: &str) -> Sniffer {
        let stop = lab.dir().join(format!("{label}.stop"));
        let _ = std::fs::remove_file(&stop);
        let tool = qemu::proc::bin("labtool").unwrap_or_else(|e| panic!("{e}"));
        let args = [tool.to_string_lossy().as_ref(), "sniff", "--dev", dev, "--seconds", "600", "--stop-file", &stop.to_string_lossy()]
            .map(str::to_string);
        lab.spawn(label, ns, &args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{e}"));
        wait_ready(lab, label);
        Sniffer { label: label.into(), stop }
    }

    /// End the capture and return what it saw.
    pub fn finish(self, lab: &Lab) -> serde_json::Value {
        std::fs::write(&self.stop, b"").unwrap_or_else(|e| panic!("{}: {e}", self.stop.display()));
        wait_sniff(lab, &self.label)
    }
}

/// An rr service on TCP port 80 of the VIP, as a services list: real servers as (lab index,
/// weight).
pub fn svc(rss: &[(usize, u16)]) -> String {
    format!("[{}]", service("rr", "tcp", 80, 0, rss))
}

/// The lab's config with `services` on one line (the console takes one line), in a mode.
pub fn one_line(lab: &Lab, services: &str, mode: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&lab.config(services)).unwrap_or_else(|e| panic!("{e}"));
    v["mode"] = mode.into();
    v.to_string()
}

/// Type `command` on the VM's console and return the rows of the status table it prints (the
/// words after "-> " of each real-server line), once its first line `header` appears.
pub fn table_rows(lab: &mut Lab, command: &str, header: &str) -> Vec<Vec<String>> {
    let prefix = header.split(' ').next().unwrap_or_default();
    let end = format!("{prefix} end of table");
    let log = lab.vm().table(command, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let last = log.rsplit(header).next().unwrap_or_default();
    last.lines()
        .skip(1) // the rest of the header line
        .take_while(|l| !l.contains(&end))
        .filter(|l| l.contains(prefix))
        .filter_map(|l| l.split("-> ").nth(1))
        .filter(|r| !r.starts_with("RemoteAddress"))
        .map(|r| r.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// A service JSON object: real servers as (lab index, weight).
pub fn service(sched: &str, proto: &str, port: u16, persistence_s: u32, rss: &[(usize, u16)]) -> String {
    let rs: Vec<String> = rss.iter().map(|(i, w)| format!(r#"{{"address": "{}", "weight": {w}}}"#, lab::rip(*i))).collect();
    format!(
        r#"{{"vip": "{}", "protocol": "{proto}", "port": {port}, "scheduler": "{sched}", "persistence_s": {persistence_s}, "real_servers": [{}]}}"#,
        lab::VIP,
        rs.join(", ")
    )
}

/// Parse labtool's `{"servers": {...}, "errors": ...}` into counts, failing on errors.
pub fn server_counts(out: &str) -> BTreeMap<String, u64> {
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("labtool output is not JSON ({e}): {out}"));
    let errors = &v["errors"];
    assert!(errors.as_array().is_none_or(Vec::is_empty) && errors.as_u64().is_none_or(|n| n == 0), "client saw errors: {errors}");
    v["servers"].as_object().map(|m| m.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect()).unwrap_or_default()
}

/// `n` TCP requests from the client (optionally from one of its extra addresses).
pub fn http_requests(lab: &Lab, n: usize, from: Option<&str>) -> BTreeMap<String, u64> {
    let to = format!("{}:80", lab::VIP);
    let count = n.to_string();
    let mut args = vec!["get", "--to", to.as_str(), "--count", count.as_str()];
    if let Some(f) = from {
        args.extend_from_slice(&["--from", f]);
    }
    server_counts(&lab.labtool(&lab.ns("client"), &args).unwrap_or_else(|e| panic!("{e}")))
}

/// `n` requests through the VIP, one every 50 ms (20/s): (answers per server, errors).
pub fn paced_requests(lab: &Lab, n: usize) -> (BTreeMap<String, u64>, usize) {
    let to = format!("{}:80", lab::VIP);
    let out =
        lab.labtool(&lab.ns("client"), &["get", "--to", &to, "--count", &n.to_string(), "--interval-ms", "50"]).unwrap_or_else(|e| e.0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let errors = v["errors"].as_array().map_or(0, Vec::len);
    let servers =
        v["servers"].as_object().map(|m| m.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect()).unwrap_or_default();
    (servers, errors)
}

/// Expected counts as a map.
pub fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
}

/// The last JSON line a sniffer printed (after its "ready" line).
pub fn sniff_result(log: &str) -> serde_json::Value {
    let line = log.lines().rev().find(|l| l.contains("\"arp\"")).unwrap_or_else(|| panic!("sniffer printed no result: {log}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Wait until a spawned sniffer says it is capturing.
pub fn wait_ready(lab: &Lab, label: &str) {
    poll_until(&format!("{label} never became ready"), Duration::from_secs(5), || {
        let log = lab.log(label);
        if log.contains("\"ready\"") {
            Ok(())
        } else {
            Err(log)
        }
    });
}

/// Wait until a spawned sniffer printed its result.
pub fn wait_sniff(lab: &Lab, label: &str) -> serde_json::Value {
    poll_until(&format!("{label} never finished"), Duration::from_secs(20), || {
        let log = lab.log(label);
        if log.contains("\"arp\"") {
            Ok(sniff_result(&log))
        } else {
            Err(log)
        }
    })
}

/// Wait until the client reaches every one of `servers` through the VIP: a burst of 6
/// requests, without errors, answered by all of them (each is resolved and forwarding).
pub fn wait_forwarding(lab: &Lab, servers: &[&str]) {
    let to = format!("{}:80", lab::VIP);
    poll_until(&format!("never forwarded to {servers:?}"), Duration::from_secs(60), || {
        let out = lab.labtool(&lab.ns("client"), &["get", "--to", &to, "--count", "6"]).unwrap_or_else(|e| e.0);
        if out.contains("\"errors\":[]") && servers.iter().all(|r| out.contains(r)) {
            Ok(())
        } else {
            std::thread::sleep(Duration::from_millis(450));
            Err(out)
        }
    });
}

/// Start a transfer of `bytes` from the client to the VIP's port 80, paced over `ms`
/// (labtool `long`), as the spawned process `label`.
pub fn start_long_transfer(lab: &mut Lab, label: &str, bytes: u64, ms: u64) {
    let tool = qemu::proc::bin("labtool").unwrap_or_else(|e| panic!("{e}"));
    let client = lab.ns("client");
    let (to, bytes, ms) = (format!("{}:80", lab::VIP), bytes.to_string(), ms.to_string());
    lab.spawn(label, &client, &[tool.to_str().unwrap_or_default(), "long", "--to", &to, "--bytes", &bytes, "--ms", &ms])
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Wait for a long transfer started with `start_long_transfer` (or `lab.spawn(label, ..,
/// ["long", ..])`) to print its result; fails if it broke.
pub fn long_transfer_result(lab: &Lab, label: &str) -> serde_json::Value {
    poll_until("the long transfer did not finish", Duration::from_secs(30), || {
        let log = lab.log(label);
        assert!(!log.contains("labtool:"), "the long transfer broke: {log}");
        match log.lines().find(|l| l.contains("body_bytes")) {
            Some(line) => Ok(serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))),
            None => Err(log),
        }
    })
}

/// An HTTPS client for the appliance's web API, run in a lab namespace with `curl` (a real
/// client: TLS, cookies in a jar, headers as sent on the wire).
#[derive(Debug)]
pub struct Web {
    ns: String,
    base: String,
    jar: std::path::PathBuf,
    /// The session's CSRF token, once logged in.
    pub csrf: Option<String>,
    /// Source address to use (the client namespace has several).
    pub from: Option<String>,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// curl's exit code (0: an answer came; 7: could not connect; 28: timed out).
    pub curl_exit: i32,
    /// Status code (0 when no answer came).
    pub status: u16,
    /// Header lines, as received.
    pub headers: String,
    /// Body text.
    pub body: String,
}

impl Answer {
    /// True if nothing answered at the address: the connection was refused or found no host
    /// (curl 7), or timed out (curl 28). Not a TLS or HTTP failure.
    pub fn nobody_there(&self) -> bool {
        matches!(self.curl_exit, 7 | 28) && self.status == 0
    }

    /// The body as JSON (Null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Web {
    /// A client in `ns` for `https://host/`, with its cookie jar in `dir`.
    pub fn new(ns: &str, host: &str, dir: &std::path::Path, name: &str) -> Web {
        let jar = dir.join(format!("{name}.cookies"));
        let _ = std::fs::remove_file(&jar);
        Web { ns: ns.into(), base: format!("https://{host}"), jar, csrf: None, from: None }
    }

    /// A request; `body` is sent as is with `content_type`.
    pub fn call(&self, method: &str, path: &str, body: Option<(&str, &[u8])>, csrf: Option<&str>) -> Answer {
        let jar = self.jar.to_string_lossy().into_owned();
        let url = format!("{}{path}", self.base);
        let mut args: Vec<String> = [
            "netns",
            "exec",
            &self.ns,
            "curl",
            "-sk",
            "-i",
            "--connect-timeout",
            "10",
            "--max-time",
            "60",
            "-X",
            method,
            "-b",
            &jar,
            "-c",
            &jar,
        ]
        .map(String::from)
        .to_vec();
        if let Some(f) = &self.from {
            args.extend(["--interface".into(), f.clone()]);
        }
        if let Some(t) = csrf {
            args.extend(["-H".into(), format!("X-CSRF-Token: {t}")]);
        }
        if let Some((ct, _)) = body {
            args.extend(["-H".into(), format!("Content-Type: {ct}"), "--data-binary".into(), "@-".into()]);
        }
        args.push(url);
        let mut child = std::process::Command::new("ip")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl");
        if let (Some((_, b)), Some(mut stdin)) = (body, child.stdin.take()) {
            use std::io::Write;
            let _ = stdin.write_all(b);
        }
        Web::answer_of(child)
    }

    /// A state change with JSON whose answer's body (binary) goes to `to`: the status.
    pub fn download(&self, method: &str, path: &str, json: &serde_json::Value, to: &std::path::Path) -> u16 {
        let jar = self.jar.to_string_lossy().into_owned();
        let csrf = format!("X-CSRF-Token: {}", self.csrf.as_deref().unwrap_or_default());
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sk", "--max-time", "120", "-X", method, "-b", &jar, "-c", &jar])
            .args(["-H", &csrf, "-H", "Content-Type: application/json", "--data-binary", &json.to_string(), "-w", "%{http_code}", "-o"])
            .arg(to)
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    /// POST a file as the body (curl streams it from disk, `rate` limits it, e.g. "400k"),
    /// with this session's CSRF token; the running curl, for `answer_of`.
    pub fn post_file(&self, path: &str, file: &std::path::Path, rate: Option<&str>) -> std::process::Child {
        let jar = self.jar.to_string_lossy().into_owned();
        let mut args: Vec<String> =
            ["netns", "exec", &self.ns, "curl", "-sk", "-i", "--max-time", "300", "-X", "POST", "-b", &jar, "-c", &jar]
                .map(String::from)
                .to_vec();
        args.extend(["-H".into(), format!("X-CSRF-Token: {}", self.csrf.as_deref().unwrap_or_default())]);
        // No `Expect: 100-continue` wait: the box reads the body as it comes.
        args.extend(["-H".into(), "Expect:".into(), "-H".into(), "Content-Type: application/octet-stream".into(), "--data-binary".into()]);
        args.push(format!("@{}", file.display()));
        if let Some(r) = rate {
            args.extend(["--limit-rate".into(), r.into()]);
        }
        args.push(format!("{}{path}", self.base));
        std::process::Command::new("ip").args(&args).stdout(std::process::Stdio::piped()).spawn().expect("curl")
    }

    /// The answer of a curl started with `-i` (`call`, `post_file`).
    pub fn answer_of(child: std::process::Child) -> Answer {
        let out = child.wait_with_output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Answer { curl_exit: out.status.code().unwrap_or(-1), status, headers: head.to_string(), body: body.to_string() }
    }

    /// GET.
    pub fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None, None)
    }

    /// A state change with JSON and this session's CSRF token.
    pub fn send(&self, method: &str, path: &str, json: &serde_json::Value) -> Answer {
        self.call(method, path, Some(("application/json", json.to_string().as_bytes())), self.csrf.as_deref())
    }

    /// Log in (or first-boot setup when `code` is given); keeps the new CSRF token (a failed
    /// attempt leaves the previous one).
    pub fn login(&mut self, password: &str, code: Option<&str>) -> Answer {
        let a = match code {
            Some(c) => self.call(
                "POST",
                "/api/setup",
                Some(("application/json", serde_json::json!({"code": c, "password": password}).to_string().as_bytes())),
                None,
            ),
            None => self.call(
                "POST",
                "/api/login",
                Some(("application/json", serde_json::json!({"password": password}).to_string().as_bytes())),
                None,
            ),
        };
        if let Some(c) = a.json()["csrf"].as_str() {
            self.csrf = Some(c.to_string());
        }
        a
    }
}

/// The first-boot setup code the console shows.
pub fn setup_code(console: &str) -> Option<String> {
    console.lines().rev().find_map(|l| l.split("setup code ").nth(1)).and_then(|r| r.split_whitespace().next()).map(str::to_string)
}

/// The management address the console banner shows.
pub fn management_address(console: &str) -> Option<String> {
    console
        .lines()
        .rev()
        .find_map(|l| l.split("management address: ").nth(1))
        .and_then(|r| r.split('/').next())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
}

/// The version the update tests' new system says it is.
pub const NEW_VERSION: &str = "0.1.0+update-test";

/// A newc cpio archive of `files` (path, mode, contents; directories have mode 0o040755).
pub fn cpio(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let pad = |out: &mut Vec<u8>| {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    let entries = files.iter().map(|&(n, m, d)| (n, m, d)).chain([("TRAILER!!!", 0, &[][..])]);
    for (i, (name, mode, data)) in entries.enumerate() {
        let n = |x: usize| u32::try_from(x).unwrap();
        let fields = [n(i + 1), mode, 0, 0, 1, 0, n(data.len()), 0, 0, 0, 0, n(name.len() + 1), 0];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out
}

/// The image's initramfs with `overlay` appended (gzip), signed into `dir/<name>.bundle`.
pub fn bundle_with(dir: &std::path::Path, name: &str, version: &str, overlay: &[(&str, u32, &[u8])]) -> std::path::PathBuf {
    let raw = dir.join(format!("{name}.cpio"));
    std::fs::write(&raw, cpio(overlay)).unwrap();
    let gz = std::process::Command::new("gzip").args(["-c", "-n"]).arg(&raw).output().unwrap();
    assert!(gz.status.success());
    let mut initrd = std::fs::read(qemu::vm::image_dir().join("initramfs.cpio.xz")).unwrap();
    initrd.extend_from_slice(&gz.stdout);
    let path = dir.join(format!("{name}.initramfs"));
    std::fs::write(&path, initrd).unwrap();
    let out = dir.join(name);
    let st = std::process::Command::new(qemu::proc::bin("image").unwrap())
        .args(["bundle", "--kernel", qemu::vm::image_dir().join("vmlinuz").to_str().unwrap(), "--initramfs", path.to_str().unwrap()])
        .args(["--version", version, "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    out.join("director.bundle")
}

/// A system that says it is `version`.
pub fn versioned(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    let v = format!("{version}\n");
    let r = format!("director {version}\n");
    bundle_with(
        dir,
        "versioned",
        version,
        &[("etc", 0o040755, b""), ("etc/director-version", 0o100644, v.as_bytes()), ("etc/director-release", 0o100644, r.as_bytes())],
    )
}
