//! Issue 10's multi-core proof through the appliance VM: with 2 vCPUs and virtio multiqueue,
//! netfw runs a worker per group of receive queues. Both forward, the status adds them up,
//! rr stays even within the stated tolerance (a server's count differs from the others' by at
//! most one per worker), and a config applied while a transfer runs keeps it; health checks
//! work across the workers (probe replies on the other worker's queues reach the prober).

use std::time::Duration;

use qemu::lab::{Lab, Layout};
use qemu::vm::Firmware;
use tests::{http_requests, long_transfer_result, one_lab_at_a_time, one_line, start_long_transfer, svc, table_rows, wait_forwarding};

/// The first line of the status table in this lab.
const HEADER: &str = "status: netfw forwarder (two-arm: vip_side=eth1 rs_side=eth2) DIP 198.18.0.2/24";

/// What `status` shows: its real servers as (RIP, conns), its workers as (worker, rx_frames).
struct Shown {
    servers: Vec<(String, u64)>,
    workers: Vec<(usize, u64)>,
}

fn status(lab: &mut Lab) -> Shown {
    let servers = table_rows(lab, "status", HEADER)
        .into_iter()
        .filter_map(|r| Some((r.first()?.split(':').next()?.to_string(), r.get(5)?.parse().ok()?)))
        .collect();
    // The workers' lines of the same table.
    let log = lab.vm().console_log();
    let last = log.rsplit(HEADER).next().unwrap_or_default();
    let workers = last
        .split("status: end of table")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("worker ").nth(1))
        .filter_map(|w| {
            let n = w.split_whitespace().next()?.parse().ok()?;
            let frames = w.split("rx_frames ").nth(1)?.split(',').next()?.trim().parse().ok()?;
            Some((n, frames))
        })
        .collect();
    Shown { servers, workers }
}

#[test]
fn two_vcpus_run_two_workers_that_forward_as_one_director() {
    let _g = one_lab_at_a_time();
    let mut lab = Lab::build_for_vm_smp(Layout::TwoArm, 3, 2).unwrap();
    lab.write_vm_config(&one_line(&lab, &svc(&[(1, 1), (2, 1), (3, 1)]), "forwarder")).unwrap();
    lab.boot_vm(Firmware::Direct).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    let log = lab.vm().console_log();
    let start = log.lines().find(|l| l.contains("netfw: forwarding (")).unwrap_or_default().to_string();
    assert!(start.contains("; 2 workers (VIP-facing queues ["), "a worker per vCPU, each with its queues: {start}");

    // Sixty connections from the client, spread over the queues by the flows' hashes.
    let before = status(&mut lab).servers;
    let got = http_requests(&lab, 60, None);
    assert_eq!(got.values().sum::<u64>(), 60, "{got:?}");
    let (min, max) = (got.values().min().copied().unwrap_or(0), got.values().max().copied().unwrap_or(0));
    assert!(got.len() == 3 && max - min <= 2, "rr per worker: even to within one connection per worker: {got:?}");

    // The status is the box's: every connection counted once, and both workers took frames.
    let Shown { servers: after, workers } = status(&mut lab);
    let total = |t: &[(String, u64)]| t.iter().map(|(_, c)| c).sum::<u64>();
    assert_eq!(total(&after) - total(&before), 60, "{before:?} -> {after:?}");
    assert_eq!(workers.len(), 2, "{}", lab.vm().console_log());
    assert!(workers.iter().all(|(_, frames)| *frames > 0), "both workers forwarded: {workers:?}");
    println!("{start}\n60 connections: {got:?}; frames received per worker: {workers:?}");

    // A config applied while a transfer runs: every worker installs it, the transfer goes on.
    start_long_transfer(&mut lab, "long", 3_000_000, 8_000);
    std::thread::sleep(Duration::from_secs(2));
    let cfg = one_line(&lab, &svc(&[(1, 1), (2, 1), (3, 0)]), "forwarder");
    lab.vm().send(&format!("apply-config {cfg}")).unwrap();
    lab.vm().wait_for("config saved and applied: mode forwarder", Duration::from_secs(60)).unwrap();
    let r = long_transfer_result(&lab, "long");
    assert_eq!(r["body_bytes"].as_u64(), Some(3_000_004), "{r}");
    // rs3 drains: new connections go to the others, through both workers.
    let got = http_requests(&lab, 20, None);
    assert_eq!(got.get("rs3"), None, "{got:?}");
    assert_eq!(got.values().sum::<u64>(), 20, "{got:?}");

    // Health checks with two workers: the first probes, and the replies that arrive on the
    // other worker's queues (each probe has its own port, so RSS spreads them) are passed to
    // it. Probes every 200 ms: a server whose replies were lost half the time would go down
    // within a few rounds. Only the server that is stopped may go down.
    let checked = svc(&[(1, 1), (2, 1), (3, 1)]).replacen(
        r#""real_servers""#,
        r#""health_check": {"type": "tcp", "interval_ms": 200, "timeout_ms": 200}, "real_servers""#,
        1,
    );
    let cfg = one_line(&lab, &checked, "forwarder");
    lab.vm().send(&format!("apply-config {cfg}")).unwrap();
    lab.vm().wait_for_nth("config saved and applied: mode forwarder", 2, Duration::from_secs(60)).unwrap();
    wait_forwarding(&lab, &["rs1", "rs2", "rs3"]);
    std::thread::sleep(Duration::from_secs(3));
    lab.stop_server(2);
    lab.vm().wait_for("198.18.0.12 up -> down: connection refused", Duration::from_secs(30)).unwrap();
    let got = http_requests(&lab, 20, None);
    assert_eq!((got.get("rs2"), got.values().sum::<u64>()), (None, 20), "{got:?}");
    let log = lab.vm().console_log();
    let downs: Vec<&str> = log.lines().filter(|l| l.contains("netfw: health:") && l.contains("-> down")).collect();
    assert_eq!(downs.len(), 1, "only rs2 went down, once: {downs:#?}");
    println!("health with two workers: {}", downs.join(""));
    lab.vm().send("poweroff").unwrap();
    lab.vm().wait_exit(Duration::from_secs(60)).unwrap();
}
