//! director-lab: the demo. Builds the namespace lab around netfw, shows DR working (a client
//! making requests through the VIP, the status table), and tears everything down on Ctrl-C.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qemu::lab::{self, Lab, Layout};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_int(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let layout = if args.iter().any(|a| a == "--one-arm") { Layout::OneArm } else { Layout::TwoArm };
    let once = args.iter().any(|a| a == "--once");
    match demo(layout, once) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("director-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(layout: Layout, once: bool) -> Result<(), lab::LabError> {
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_int as *const () as libc::sighandler_t) };
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGTERM, on_int as *const () as libc::sighandler_t) };
    println!("building the {layout:?} namespace lab (client, router, director, 3 real servers)...");
    let mut lab = Lab::build(layout, 3)?;
    let services = format!(
        r#"[{{"vip": "{vip}", "protocol": "tcp", "port": 80, "scheduler": "rr",
            "real_servers": [{{"address": "{a}"}}, {{"address": "{b}"}}, {{"address": "{c}"}}]}}]"#,
        vip = lab::VIP,
        a = lab::rip(1),
        b = lab::rip(2),
        c = lab::rip(3)
    );
    let cfg = lab.config(&services);
    lab.start_netfw(&cfg)?;
    println!("netfw is forwarding in namespace {}; config {}", lab.ns("director"), lab.config_path().display());
    println!("the web page is not built yet (issue 5): this demo drives netfw directly\n");
    let out = lab.labtool(&lab.ns("client"), &["get", "--to", &format!("{}:80", lab::VIP), "--count", "30"])?;
    println!("client {} -> VIP {}:80, 30 requests: {out}", lab::CLIENT, lab::VIP);
    println!(
        "router's neighbour entry for the VIP: {:?} (director's MAC {})",
        lab.neighbour(&lab.ns("router"), lab::VIP),
        lab::DIRECTOR_VIP_MAC
    );
    println!("\n{}", lab.status()?);
    if once {
        return Ok(());
    }
    println!("try it: ip netns exec {} {} get --to {}:80 --count 9", lab.ns("client"), qemu::proc::bin("labtool")?.display(), lab::VIP);
    println!("        {} status --control {}", qemu::proc::bin("netfw")?.display(), lab.control_path().display());
    println!("Ctrl-C tears the lab down.");
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("tearing down...");
    Ok(())
}
