//! director-lab: the demo. Builds the lab (client, router, three real servers), boots the
//! appliance image in QEMU as the director, streams its serial console here (type `status`,
//! `restart netfw`, `reboot` or `poweroff` and press Enter: the line goes to the appliance's
//! console), shows a client's requests spreading over the real servers, and tears everything
//! down on Ctrl-C. `--netns` runs netfw in a namespace instead of the VM; `--one-arm` uses
//! seed 001's single-NIC layout.

use std::io::{BufRead, Read, Seek, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qemu::lab::{self, Lab, LabError, Layout};
use qemu::vm::Firmware;

static STOP: AtomicBool = AtomicBool::new(false);
/// The host port the demo forwards to the page (https://127.0.0.1:8443/).
const DEMO_PAGE_PORT: u16 = 8443;

extern "C" fn on_int(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let layout = if args.iter().any(|a| a == "--one-arm") { Layout::OneArm } else { Layout::TwoArm };
    let once = args.iter().any(|a| a == "--once");
    let r = if args.iter().any(|a| a == "--netns") { demo_netns(layout, once) } else { demo_vm(layout, once) };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("director-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn signals() {
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_int as *const () as libc::sighandler_t) };
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGTERM, on_int as *const () as libc::sighandler_t) };
}

fn services() -> String {
    format!(
        r#"[{{"vip": "{vip}", "protocol": "tcp", "port": 80, "scheduler": "rr",
            "real_servers": [{{"address": "{a}"}}, {{"address": "{b}"}}, {{"address": "{c}"}}]}}]"#,
        vip = lab::VIP,
        a = lab::rip(1),
        b = lab::rip(2),
        c = lab::rip(3)
    )
}

fn requests(lab: &Lab) -> Result<String, LabError> {
    lab.labtool(&lab.ns("client"), &["get", "--to", &format!("{}:80", lab::VIP), "--count", "30"])
}

fn wait_until_stopped(once: bool) {
    if once {
        return;
    }
    println!("Ctrl-C tears the lab down.");
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("tearing down...");
}

/// Print what appears in a growing file.
fn tail(path: std::path::PathBuf) {
    std::thread::spawn(move || {
        let mut pos = 0u64;
        loop {
            if let Ok(mut f) = std::fs::File::open(&path) {
                if f.seek(std::io::SeekFrom::Start(pos)).is_ok() {
                    let mut buf = Vec::new();
                    if let Ok(n) = f.read_to_end(&mut buf) {
                        pos += n as u64;
                        let text = String::from_utf8_lossy(&buf).replace('\r', "");
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(text.as_bytes());
                        let _ = out.flush();
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

fn demo_vm(layout: Layout, once: bool) -> Result<(), LabError> {
    signals();
    println!("building the {layout:?} lab (client, router, 3 real servers) around the appliance VM...");
    let mut lab = Lab::build_for_vm(layout, 3)?;
    let mgmt = "198.19.0.10/24";
    lab.write_vm_config(&lab.config_with_management(&services(), "eth0", Some(mgmt)))?;
    println!("booting {} under QEMU (SeaBIOS, TCG); its serial console follows:\n", lab.vm_disk().display());
    tail(lab.dir().join("vm/console.log"));
    let t = lab.boot_vm(Firmware::SeaBios)?;
    println!("\n--- power-on to ready: {:.1} s", t.as_secs_f64());
    let mut writer = lab.vm().console_writer()?;
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if writer.write_all(format!("{line}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    // The appliance resolves the real servers within a second or two of netfw starting.
    let mut out = String::new();
    for _ in 0..60 {
        out = requests(&lab)?;
        if out.contains("\"errors\":[]") {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("\n--- client {} -> VIP {}:80, 30 requests: {out}", lab::CLIENT, lab::VIP);
    println!(
        "--- router's neighbour entry for the VIP: {:?} (the appliance's VIP-facing MAC {})",
        lab.neighbour(&lab.ns("router"), lab::VIP),
        lab::DIRECTOR_VIP_MAC
    );
    let page = &mgmt[..mgmt.len() - 3];
    // The host's own browser reaches the page through a port forwarded into the client
    // namespace (the management segment is only inside the lab).
    let forward = qemu::netns::forward_port(
        std::net::SocketAddr::from(([127, 0, 0, 1], DEMO_PAGE_PORT)),
        &lab.ns("client"),
        std::net::SocketAddr::from((page.parse::<std::net::Ipv4Addr>().map_err(|e| LabError(e.to_string()))?, 443)),
    );
    match &forward {
        Ok(f) => println!(
            "--- web page: open https://{}/ in this host's browser (self-signed certificate; first boot: the setup code is on the console above)",
            f.listen
        ),
        Err(e) => println!("--- web page: no port forwarded on this host ({e})"),
    }
    println!("--- inside the lab it is https://{page}/, e.g.: ip netns exec {} curl -k https://{page}/api/session", lab.ns("client"),);
    println!("--- type console commands here (status, restart netfw, reboot, poweroff); more requests: ip netns exec {} {} get --to {}:80 --count 9", lab.ns("client"), qemu::proc::bin("labtool")?.display(), lab::VIP);
    wait_until_stopped(once);
    Ok(())
}

fn demo_netns(layout: Layout, once: bool) -> Result<(), LabError> {
    signals();
    println!("building the {layout:?} namespace lab (client, router, director, 3 real servers)...");
    let mut lab = Lab::build(layout, 3)?;
    let cfg = lab.config(&services());
    lab.start_netfw(&cfg)?;
    println!("netfw is forwarding in namespace {}; config {}", lab.ns("director"), lab.config_path().display());
    let out = requests(&lab)?;
    println!("client {} -> VIP {}:80, 30 requests: {out}", lab::CLIENT, lab::VIP);
    println!(
        "router's neighbour entry for the VIP: {:?} (director's MAC {})",
        lab.neighbour(&lab.ns("router"), lab::VIP),
        lab::DIRECTOR_VIP_MAC
    );
    println!("\n{}", lab.status()?);
    println!("try it: ip netns exec {} {} get --to {}:80 --count 9", lab.ns("client"), qemu::proc::bin("labtool")?.display(), lab::VIP);
    println!("        {} status --control {}", qemu::proc::bin("netfw")?.display(), lab.control_path().display());
    wait_until_stopped(once);
    Ok(())
}
