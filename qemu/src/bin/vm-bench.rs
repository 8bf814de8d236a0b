//! vm-bench: the appliance image in the same QEMU guest, forwarder mode (with either of its
//! kernel paths) against ipvs mode on the same traffic, with 1 and 2 vCPUs (virtio
//! multiqueue, two queue pairs per vCPU):
//!
//! - UDP, 64-byte payload: datagrams per second reaching the real server from a sender going
//!   as fast as it can; the highest paced rate forwarded with at most 0.1% lost (RFC 2544's
//!   throughput, `loss_free_rate`; a loss is confirmed by a second blast); and the guest's CPU time per datagram (its vCPU threads'
//!   time over the blast): on a small machine the host's cores run out first (sender, QEMU's
//!   device loop, the guest), so this is the director's own cost per packet, which the rate
//!   alone does not show;
//! - TCP upload, client → real server (the direction that crosses the director): Mbit/s over
//!   400 MB (long enough, at the guest's speeds, for the CPU shares below);
//! - new TCP connections per second (sequential connect, request, answer, close).
//!
//! Where the cycles went, for the blast and the upload: how busy the host's cores were, the
//! guest's vCPU threads, and QEMU's other threads (its main loop, which moves every frame
//! between the taps and the virtqueues), each as a share of one core. A bound that is not the
//! guest's shows as vCPUs with time to spare while the host's cores are all busy.
//!
//! One real server behind one VIP, two-arm. Everything shares this machine's cores with the
//! emulated guest, so the figures are ratios in one run, not capacity. Prints; asserts
//! nothing.
//!
//! usage: vm-bench [--seconds S] [--vcpus 1,2]
//!
//! Four rows per vCPU count: `forwarder` (the default `io`, auto: AF_XDP with established
//! flows forwarded by netfw's XDP program), `forwarder+capture` (the same while a packet
//! capture from the page runs on the VIP-facing NIC, issue 13: a `host` filter for an address
//! none of the traffic has, so every frame comes to netfw and is checked, and the file stays
//! small; restarted whenever its 60 s are up), `forwarder/tc` (`io: af_packet`: established
//! flows forwarded by netfw's tc program, merged frames whole) and `ipvs`.
//!
//! Environment, for digging into one figure: `VM_BENCH_MODES=forwarder,ipvs` runs the rows
//! named; with `VM_BENCH_STATUS=1` the console's `status` after the UDP blast is printed
//! (drop counters).

use std::time::Duration;

use qemu::lab::{self, Lab, LabError, Layout};
use qemu::vm::{CpuSeconds, Firmware};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let seconds: u64 = opt("--seconds").and_then(|s| s.parse().ok()).unwrap_or(5);
    let vcpus: Vec<u16> = opt("--vcpus").unwrap_or_else(|| "1,2".into()).split(',').filter_map(|v| v.parse().ok()).collect();
    let mut rows = Vec::new();
    let wanted = std::env::var("VM_BENCH_MODES").unwrap_or_default();
    for &n in &vcpus {
        for setup in SETUPS.iter().filter(|s| wanted.is_empty() || wanted.split(',').any(|w| w == s.name)) {
            match measure(setup, n, seconds) {
                Ok(r) => rows.push((n, setup.name, r)),
                Err(e) => {
                    eprintln!("vm-bench: {} with {n} vCPU(s): {e}", setup.name);
                    std::process::exit(1);
                }
            }
        }
    }
    println!("\nwhere the cycles went (share of one core; the host has {} cores):", host_cores());
    println!("vCPUs  mode                traffic      host cores busy   guest vCPU threads   QEMU main loop");
    for (n, mode, r) in &rows {
        for (what, b) in [("UDP blast", r.blast_busy), ("TCP upload", r.upload_busy)] {
            println!("{n:>5}  {mode:<18}  {what:<10} {:>17.2} {:>20.2} {:>16.2}", b.host, b.vcpus, b.device);
        }
    }
    println!("\nappliance image under QEMU TCG, two-arm, one real server; same guest, same traffic per row");
    println!(
        "vCPUs  mode                UDP 64 B pps at the RS   loss-free pps (≤0.1%)   guest CPU µs/packet   TCP upload Mbit/s   new TCP conn/s"
    );
    for (n, mode, r) in &rows {
        println!("{n:>5}  {mode:<18} {:>23.0} {:>23.0} {:>21.1} {:>19.0} {:>16.0}", r.pps, r.loss_free, r.guest_us, r.mbit, r.cps);
    }
    for &n in &vcpus {
        let get = |m: &str| rows.iter().find(|(v, mode, _)| *v == n && *mode == m).map(|(_, _, r)| *r);
        if let (Some(c), Some(f)) = (get("forwarder+capture"), get("forwarder")) {
            println!("{n} vCPU(s): {}", ratios("with a capture running / without", "without / with", &c, &f));
        }
        for fwd in ["forwarder", "forwarder+capture", "forwarder/tc"] {
            if let (Some(f), Some(i)) = (get(fwd), get("ipvs")) {
                println!("{n} vCPU(s): {}", ratios(&format!("{fwd} / ipvs"), &format!("ipvs / {fwd}"), &f, &i));
            }
        }
    }
}

/// One row's figures over another's (CPU per packet the other way round: higher is better).
fn ratios(what: &str, cpu: &str, a: &Figures, b: &Figures) -> String {
    format!(
        "{what} = {:.2} (UDP pps), {:.2} (loss-free UDP pps), {:.2} (guest CPU per packet, {cpu}), {:.2} (TCP upload), {:.2} (conn/s)",
        a.pps / b.pps.max(1.0),
        a.loss_free / b.loss_free.max(1.0),
        b.guest_us / a.guest_us,
        a.mbit / b.mbit.max(1.0),
        a.cps / b.cps.max(1.0)
    )
}

/// One row: the appliance's mode and, for the forwarder, its `io`; whether a capture runs.
struct Setup {
    name: &'static str,
    mode: &'static str,
    io: Option<&'static str>,
    capture: bool,
}

const SETUPS: [Setup; 4] = [
    Setup { name: "forwarder", mode: "forwarder", io: None, capture: false },
    Setup { name: "forwarder+capture", mode: "forwarder", io: None, capture: true },
    Setup { name: "forwarder/tc", mode: "forwarder", io: Some("af_packet"), capture: false },
    Setup { name: "ipvs", mode: "ipvs", io: None, capture: false },
];

/// The box's management address in the `forwarder+capture` row, and its page's password.
const MGMT: &str = "198.19.0.10";
const PASSWORD: &str = "vm-bench password";

/// Log in to the page (first-boot setup with the console's code) from the router's
/// namespace and keep a capture running from then on (`capture-loop`, stopped with the lab).
fn keep_capturing(lab: &mut Lab) -> Result<(), LabError> {
    lab.vm().wait_for("web page: serving HTTPS on eth0", Duration::from_secs(60))?;
    let console = lab.vm().console_log();
    let code = console
        .lines()
        .rev()
        .find_map(|l| l.split("setup code ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .ok_or_else(|| LabError("the console shows no setup code".into()))?
        .to_string();
    let jar = lab.dir().join("bench.cookies").to_string_lossy().into_owned();
    let router = lab.ns("router");
    let body = serde_json::json!({ "code": code, "password": PASSWORD }).to_string();
    let url = format!("https://{MGMT}/api/setup");
    let args = ["curl", "-sk", "-c", &jar, "-H", "Content-Type: application/json", "--data-binary", &body, &url];
    let answer = lab.exec(&router, &args)?;
    let csrf = serde_json::from_str::<serde_json::Value>(&answer).ok().and_then(|v| v["csrf"].as_str().map(str::to_string));
    let csrf = csrf.ok_or_else(|| LabError(format!("the page's setup said: {answer}")))?;
    let spec = r#"{"nic": "vip_side", "filter": "host", "value": "198.51.100.250", "packets": 100000, "seconds": 60}"#;
    let script = format!(
        "while :; do curl -sk -o /dev/null -w 'capture %{{http_code}}\\n' -b {jar} -H 'X-CSRF-Token: {csrf}' \
         -H 'Content-Type: application/json' --data-binary '{spec}' https://{MGMT}/api/capture; done"
    );
    lab.spawn("capture-loop", &router, &["sh", "-c", &script])?;
    lab.vm().wait_for("capture on ", Duration::from_secs(30))?;
    Ok(())
}

/// What share of a paced blast may be lost and its rate still count as forwarded.
const LOSS: f64 = 0.001;
/// Rates tried per search, and how long a paced blast lasts.
const TRIALS: usize = 6;
const TRIAL_SECONDS: u64 = 3;

/// The datagrams a sink (spawned as `label`) counted, once it has said.
fn sink_count(lab: &Lab, label: &str) -> f64 {
    for _ in 0..100 {
        let log = lab.log(label);
        if log.contains("received") {
            return field(&log, "received");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    0.0
}

/// RFC 2544's throughput, with a tolerance for this noisy lab: the highest offered rate
/// (datagrams/s, paced) that reaches the real server with at most `LOSS` lost, searched from
/// `hint` (the rate an unpaced blast got through). An unpaced sender also spends the host's
/// cores on datagrams that are dropped on the way; a paced one leaves them to QEMU. A rate
/// counts as lossy only if a second blast at it loses too: one hiccup of this shared host
/// would otherwise hold the whole search under it.
fn loss_free_rate(lab: &mut Lab, hint: f64) -> Result<f64, LabError> {
    let (mut good, mut bad) = (0.0f64, f64::INFINITY);
    let mut rate = hint.max(1_000.0);
    let mut blasts = 0;
    for _ in 0..TRIALS {
        let mut ok = false;
        for _ in 0..2 {
            ok = paced_blast(lab, blasts, rate)?;
            blasts += 1;
            if ok {
                break;
            }
        }
        if ok {
            good = good.max(rate);
        } else {
            bad = bad.min(rate);
        }
        rate = if bad.is_infinite() { rate * 1.5 } else { (good + bad) / 2.0 };
    }
    Ok(good)
}

/// One paced blast at `rate` (the `n`th, for its sink's name): whether at most `LOSS` of it
/// was lost.
fn paced_blast(lab: &mut Lab, n: usize, rate: f64) -> Result<bool, LabError> {
    let tool = qemu::proc::bin("labtool")?;
    let (client, rs1) = (lab.ns("client"), lab.ns("rs1"));
    let to = format!("{}:9", lab::VIP);
    let label = format!("sink-{n}");
    let sink_secs = (TRIAL_SECONDS + 3).to_string();
    lab.spawn(&label, &rs1, &[tool.to_str().unwrap_or_default(), "sink", "--port", "9", "--seconds", &sink_secs])?;
    std::thread::sleep(Duration::from_millis(500));
    let r = format!("{rate:.0}");
    let out = lab.labtool(
        &client,
        &["blast", "--to", &to, "--seconds", &TRIAL_SECONDS.to_string(), "--flows", "256", "--payload", "64", "--rate", &r],
    )?;
    let sent = field(&out, "sent");
    let got = sink_count(lab, &label);
    let ok = sent > 0.0 && (sent - got) / sent <= LOSS;
    eprintln!("vm-bench:   paced {r}/s: sent {sent:.0}, received {got:.0}{}", if ok { "" } else { " (lossy)" });
    Ok(ok)
}

#[derive(Clone, Copy, Debug)]
struct Figures {
    pps: f64,
    /// The highest paced rate forwarded with at most `LOSS` lost (`loss_free_rate`).
    loss_free: f64,
    /// Guest CPU time (its vCPU threads) per datagram reaching the real server, in µs.
    guest_us: f64,
    mbit: f64,
    cps: f64,
    blast_busy: Busy,
    upload_busy: Busy,
}

/// How busy things were over a stretch of time, each as a share of one core.
#[derive(Clone, Copy, Debug, Default)]
struct Busy {
    /// The host's cores, all of them (up to their number).
    host: f64,
    /// QEMU's vCPU threads.
    vcpus: f64,
    /// QEMU's other threads.
    device: f64,
}

/// The host's busy and total CPU time so far (jiffies, from `/proc/stat`).
fn host_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait are fields 4 and 5.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle.min(total), total)
}

fn host_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Measures `Busy` over a stretch: `start` before, `stop` after.
struct Meter {
    host: (u64, u64),
    qemu: Option<CpuSeconds>,
    at: std::time::Instant,
}

impl Meter {
    fn start(lab: &mut Lab) -> Meter {
        Meter { host: host_jiffies(), qemu: lab.vm().cpu_seconds(), at: std::time::Instant::now() }
    }
    fn stop(self, lab: &mut Lab) -> Busy {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let (busy, total) = host_jiffies();
        let (db, dt) = (busy.saturating_sub(self.host.0), total.saturating_sub(self.host.1));
        let host = if dt == 0 { f64::NAN } else { db as f64 / dt as f64 * host_cores() as f64 };
        let q = lab.vm().cpu_seconds().zip(self.qemu).map(|(a, b)| a - b).unwrap_or(CpuSeconds { vcpus: f64::NAN, device: f64::NAN });
        Busy { host, vcpus: q.vcpus / wall, device: q.device / wall }
    }
}

fn field(out: &str, key: &str) -> f64 {
    out.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|v| v[key].as_f64()).unwrap_or(0.0)
}

fn measure(setup: &Setup, vcpus: u16, seconds: u64) -> Result<Figures, LabError> {
    let mut lab = Lab::build_for_vm_smp(Layout::TwoArm, 1, vcpus)?;
    let rs = lab::rip(1);
    let services = format!(
        r#"[{{"vip": "{vip}", "protocol": "tcp", "port": 80, "scheduler": "rr", "real_servers": [{{"address": "{rs}"}}]}},
            {{"vip": "{vip}", "protocol": "udp", "port": 9, "scheduler": "rr", "real_servers": [{{"address": "{rs}"}}]}}]"#,
        vip = lab::VIP
    );
    let doc =
        if setup.capture { lab.config_with_management(&services, "eth0", Some(&format!("{MGMT}/24"))) } else { lab.config(&services) };
    let mut cfg: serde_json::Value = serde_json::from_str(&doc).map_err(|e| LabError(e.to_string()))?;
    cfg["mode"] = setup.mode.into();
    if let Some(io) = setup.io {
        cfg["io"] = io.into();
    }
    lab.write_vm_config(&cfg.to_string())?;
    let t = lab.boot_vm(Firmware::Direct)?;
    eprintln!("vm-bench: {}, {vcpus} vCPU(s): ready in {:.1} s", setup.name, t.as_secs_f64());
    let client = lab.ns("client");
    let to = format!("{}:80", lab::VIP);
    // Wait until the real server answers through the VIP.
    let mut up = false;
    for _ in 0..120 {
        if lab.labtool(&client, &["get", "--to", &to, "--count", "1"]).is_ok_and(|o| o.contains("\"errors\":[]")) {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if !up {
        return Err(LabError(format!("never forwarded:\n{}", lab.vm().console_log())));
    }
    if setup.capture {
        keep_capturing(&mut lab)?;
    }

    let tool = qemu::proc::bin("labtool")?;
    let rs1 = lab.ns("rs1");
    let secs = seconds.to_string();
    let sink_secs = (seconds + 3).to_string();
    lab.spawn("sink", &rs1, &[tool.to_str().unwrap_or_default(), "sink", "--port", "9", "--seconds", &sink_secs])?;
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = lab.vm().cpu_seconds();
    let meter = Meter::start(&mut lab);
    lab.labtool(&client, &["blast", "--to", &format!("{}:9", lab::VIP), "--seconds", &secs, "--flows", "256", "--payload", "64"])?;
    let blast_busy = meter.stop(&mut lab);
    let cpu = lab.vm().cpu_seconds().zip(cpu_before).map(|(a, b)| a.vcpus - b.vcpus);
    let received = sink_count(&lab, "sink");
    let pps = received / seconds as f64;
    let loss_free = loss_free_rate(&mut lab, pps)?;
    let guest_us = cpu.map_or(f64::NAN, |c| c * 1e6 / received.max(1.0));
    if std::env::var_os("VM_BENCH_STATUS").is_some() {
        let log = lab.vm().table("status", Duration::from_secs(30))?;
        // How netfw started (its I/O, queues, offloads), then the status it just printed.
        let start = log.lines().filter(|l| l.contains("netfw: netfw:"));
        let last: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = start.chain(last.into_iter().rev()).collect();
        eprintln!("{}", tail.join("\n"));
    }

    // A failed upload says why in the guest's words: its console, with a status.
    let meter = Meter::start(&mut lab);
    let up = lab.labtool(&client, &["upload", "--to", &to, "--bytes", "400000000"]).map_err(|e| {
        let log = lab.vm().table("status", Duration::from_secs(30)).unwrap_or_else(|t| t.0);
        LabError(format!("{e}\n{log}"))
    })?;
    let upload_busy = meter.stop(&mut lab);
    let mbit = field(&up, "mbit_s");

    let get = lab.labtool(&client, &["get", "--to", &to, "--count", "300"])?;
    let cps = 300.0 / field(&get, "seconds").max(1e-9);

    if setup.capture {
        let log = lab.log("capture-loop");
        let (done, refused) = (log.matches("capture 200").count(), log.lines().filter(|l| !l.contains("capture 200")).count());
        let started = lab.vm().console_log().matches("capture on ").count();
        eprintln!("vm-bench: {}: {started} captures started, {done} answered with a file, {refused} other answers", setup.name);
    }
    lab.vm().send("poweroff")?;
    let _ = lab.vm().wait_exit(Duration::from_secs(60));
    Ok(Figures { pps, loss_free, guest_us, mbit, cps, blast_busy, upload_busy })
}
