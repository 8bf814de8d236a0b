//! lab-bench: netfw against the kernel's own forwarding, on the same veths, same traffic.
//!
//! A client blasts small UDP datagrams at the VIP for a few seconds; one real server counts
//! what arrives. First netfw forwards (DR: MAC rewrite; on veths it takes AF_PACKET, and its
//! tc program forwards the established flows in the kernel); then netfw is stopped and the
//! director namespace's kernel forwards the same packets (VIP/32 routed via the RIP, the
//! router's ARP entry for the VIP pinned to the director as seed 001's first fix does). Both
//! runs share the machine's two cores with the sender and receiver, so the figures are a ratio
//! in one run, not absolute capacity. Prints figures; asserts nothing.
//!
//! Between the two, netfw runs again with health checks on 1,000 more real servers (issue 11:
//! they must not measurably slow forwarding): a second service whose servers are addresses
//! of rs1 (so each answers ARP from the DIP), probed with `tcp` every 500 ms through the DR
//! path at a closed port, so each probe is answered with a reset and followed by the doctor's
//! probe of the server's own address: about 4,000 probes a second, twice a healthy box's.
//!
//! And once more while a packet capture of everything on the VIP-facing NIC runs (issue 13:
//! it must not noticeably slow forwarding). netfw sees and copies what it handles itself; the
//! established flows its tc program forwards in the kernel are not captured, nor slowed.

use std::time::Duration;

use qemu::lab::{self, Lab, LabError, Layout};

const SECONDS: &str = "4";
/// Real servers checked in the second netfw run.
const CHECKED: u32 = 1000;
/// The third octet of their addresses (198.18.4.0 on, inside the DIP's /16 in that run).
const CHECKED_NET: u32 = (198 << 24) | (18 << 16) | (4 << 8);

fn main() {
    if let Err(e) = bench() {
        eprintln!("lab-bench: {e}");
        std::process::exit(1);
    }
}

/// One request on netfw's control socket (its JSON line), and the answer's line.
fn netfw_call(lab: &Lab, request: &str) -> Result<String, LabError> {
    use std::io::{BufRead, Write};
    let err = |e: std::io::Error| LabError(format!("netfw's control socket: {e}"));
    let mut s = std::os::unix::net::UnixStream::connect(lab.control_path()).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(err)?;
    s.write_all(format!("{request}\n").as_bytes()).map_err(err)?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).map_err(err)?;
    Ok(line)
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
    let udp = format!(
        r#"{{"vip": "{}", "protocol": "udp", "port": 9, "scheduler": "rr", "real_servers": [{{"address": "{}"}}]}}"#,
        lab::VIP,
        lab::rip(1)
    );
    // Both netfw runs refresh ARP every 30 s (1,000 servers every second would be load of its own).
    let cfg = |lab: &Lab, services: &str, prefix: &str| {
        lab.config(services).replace(r#""arp_refresh_s": 1"#, r#""arp_refresh_s": 30"#).replace("/24\"", &format!("/{prefix}\""))
    };
    let first = cfg(&lab, &format!("[{udp}]"), "24");
    lab.start_netfw(&first)?;
    let n = run_once(&mut lab, "netfw")?;
    let status = lab.status()?;
    // The same traffic while a capture of everything on the VIP-facing NIC runs.
    let started = netfw_call(&lab, r#"{"request":"capture","spec":{"nic":"vip_side","filter":"all","packets":100000,"seconds":6}}"#)?;
    let c = run_once(&mut lab, "netfw-capture")?;
    let captured = netfw_call(&lab, r#"{"request":"capture-result"}"#)?;
    let _ = std::fs::remove_file("/run/director-capture.pcap");
    println!("capture: {} then {}", started.trim(), captured.trim());
    lab.stop_netfw();

    // The same, while 1,000 real servers are checked.
    let rs1 = lab.ns("rs1");
    let batch: String = (0..CHECKED).map(|i| format!("addr add {}/32 dev eth0\n", std::net::Ipv4Addr::from(CHECKED_NET + i))).collect();
    let batch_file = lab.dir().join("checked-addresses");
    std::fs::write(&batch_file, batch).map_err(|e| LabError(e.to_string()))?;
    lab.ip(&rs1, &["-batch", batch_file.to_str().unwrap_or_default()])?;
    let checked: Vec<String> = (0..CHECKED).map(|i| format!(r#"{{"address": "{}"}}"#, std::net::Ipv4Addr::from(CHECKED_NET + i))).collect();
    let probed = format!(
        r#"{{"vip": "{}", "protocol": "tcp", "port": 9, "scheduler": "rr", "real_servers": [{}],
            "health_check": {{"type": "tcp", "interval_ms": 500, "timeout_ms": 500}}}}"#,
        lab::VIP,
        checked.join(", ")
    );
    let second = cfg(&lab, &format!("[{udp}, {probed}]"), "16");
    lab.start_netfw(&second)?;
    // ARP from the DIP for every server, then the probes' steady state.
    std::thread::sleep(Duration::from_secs(6));
    let before = lab.status_json()?;
    let p = run_once(&mut lab, "netfw-checks")?;
    let after = lab.status_json()?;
    lab.stop_netfw();
    let probes = |s: &serde_json::Value| {
        s["services"][1]["real_servers"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|r| r["health"]["last"].as_str().is_some_and(|l| l != "not checked yet")).count())
    };
    let downs = after["services"][1]["real_servers"].as_array().map_or(0, |a| a.iter().filter(|r| r["health"]["state"] == "down").count());
    println!(
        "checked servers with a result: {} before the run, {} after; down (nothing listens on the port): {downs}",
        probes(&before),
        probes(&after)
    );

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
    for (name, (sent, rin, rout, recv)) in
        [("netfw (AF_PACKET+tc)", n), ("netfw, capture running", c), ("netfw, 1000 checked", p), ("kernel forwarding", k)]
    {
        println!("  {name:<22} {sent:>12} {rin:>13} {rout:>14} {recv:>14} {:>15.0} {:>8.3}", pps(rout), rout as f64 / rin.max(1) as f64);
    }
    if k.2 > 0 {
        println!("  netfw / kernel, packets forwarded per second: {:.2}", n.2 as f64 / k.2 as f64);
    }
    if n.3 > 0 {
        // rs1's count: the director's own counter also counts the probes it sends.
        println!("  netfw with 1000 servers checked / without, datagrams rs1 received: {:.2}", p.3 as f64 / n.3 as f64);
    }
    if n.3 > 0 {
        println!("  netfw with a capture running / without, datagrams rs1 received: {:.2}", c.3 as f64 / n.3 as f64);
    }
    println!("\nnetfw status after its run:\n{status}");
    Ok(())
}
