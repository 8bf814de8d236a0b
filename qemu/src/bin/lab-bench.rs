//! lab-bench: netfw against the kernel's own forwarding, on the same veths, same traffic.
//!
//! A client blasts small UDP datagrams at the VIP for a few seconds; one real server counts
//! what arrives. First netfw forwards (DR: MAC rewrite; on veths it takes AF_PACKET, and its
//! tc program forwards the established flows in the kernel); then netfw is stopped and the
//! director namespace's kernel forwards the same packets (VIP/32 routed via the RIP, the
//! router's ARP entry for the VIP pinned to the director as seed 001's first fix does). Both
//! runs share the machine's two cores with the sender and receiver, so the figures are a ratio
//! in one run, not absolute capacity. Prints figures; asserts nothing.

use std::time::Duration;

use qemu::lab::{self, Lab, LabError, Layout};

const SECONDS: &str = "4";

fn main() {
    if let Err(e) = bench() {
        eprintln!("lab-bench: {e}");
        std::process::exit(1);
    }
}

fn json_field(out: &str, key: &str) -> u64 {
    out.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|v| v[key].as_u64()).unwrap_or(0)
}

/// (client sent, director received on eth1, director sent on eth2, real server received).
type Run = (u64, u64, u64, u64);

fn counter(lab: &Lab, dev: &str, what: &str) -> u64 {
    lab.exec(&lab.ns("director"), &["cat", &format!("/sys/class/net/{dev}/statistics/{what}")])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn run_once(lab: &mut Lab, label: &str) -> Result<Run, LabError> {
    let (rx0, tx0) = (counter(lab, "eth1", "rx_packets"), counter(lab, "eth2", "tx_packets"));
    let tool = qemu::proc::bin("labtool")?;
    let rs1 = lab.ns("rs1");
    lab.spawn(&format!("sink-{label}"), &rs1, &[tool.to_str().unwrap_or_default(), "sink", "--port", "9", "--seconds", "7"])?;
    for _ in 0..100 {
        if lab.log(&format!("sink-{label}")).contains("ready") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = lab.labtool(&lab.ns("client"), &["blast", "--to", &format!("{}:9", lab::VIP), "--seconds", SECONDS, "--flows", "256"])?;
    let sent = json_field(&out, "sent");
    let mut received = 0;
    for _ in 0..200 {
        let log = lab.log(&format!("sink-{label}"));
        if log.contains("received") {
            received = json_field(&log, "received");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (rx1, tx1) = (counter(lab, "eth1", "rx_packets"), counter(lab, "eth2", "tx_packets"));
    Ok((sent, rx1 - rx0, tx1 - tx0, received))
}

fn bench() -> Result<(), LabError> {
    let mut lab = Lab::build(Layout::TwoArm, 1)?;
    let svc = format!(
        r#"[{{"vip": "{}", "protocol": "udp", "port": 9, "scheduler": "rr", "real_servers": [{{"address": "{}"}}]}}]"#,
        lab::VIP,
        lab::rip(1)
    );
    let cfg = lab.config(&svc);
    lab.start_netfw(&cfg)?;
    let n = run_once(&mut lab, "netfw")?;
    let status = lab.status()?;
    lab.stop_netfw();

    // The kernel forwards the same packets: VIP/32 via the RIP (a one-server DR by routing).
    let d = lab.ns("director");
    lab.ip(&d, &["addr", "add", "203.0.113.2/24", "dev", "eth1"])?;
    lab.ip(&d, &["addr", "add", "198.18.0.2/24", "dev", "eth2"])?;
    lab.sysctl(&d, "net.ipv4.ip_forward=1")?;
    lab.ip(&d, &["route", "add", &format!("{}/32", lab::VIP), "via", &lab::rip(1).to_string(), "dev", "eth2"])?;
    lab.ip(
        &lab.ns("router"),
        &["neigh", "replace", &lab::VIP.to_string(), "lladdr", lab::DIRECTOR_VIP_MAC, "dev", "v0", "nud", "permanent"],
    )?;
    let k = run_once(&mut lab, "kernel")?;

    let secs: f64 = SECONDS.parse().unwrap_or(4.0);
    let pps = |x: u64| x as f64 / secs;
    println!("UDP 64-byte frames, 256 flows, {SECONDS} s: client -> router -> director eth1 -> eth2 -> rs1, veths, 2 cores shared by all");
    println!("                          client sent   director in   director out   rs1 received   forwarded pps   out/in");
    for (name, (sent, rin, rout, recv)) in [("netfw (AF_PACKET+tc)", n), ("kernel forwarding", k)] {
        println!("  {name:<22} {sent:>12} {rin:>13} {rout:>14} {recv:>14} {:>15.0} {:>8.3}", pps(rout), rout as f64 / rin.max(1) as f64);
    }
    if k.2 > 0 {
        println!("  netfw / kernel, packets forwarded per second: {:.2}", n.2 as f64 / k.2 as f64);
    }
    println!("\nnetfw status after its run:\n{status}");
    Ok(())
}
