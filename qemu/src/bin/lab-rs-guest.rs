//! lab-rs-guest: PID 1 of a real-server guest for the QEMU lab's TUN tests.
//!
//! The host kernel here has no IPIP, so a namespace cannot decapsulate what IPVS tunnels to
//! it. This guest boots the appliance's own pinned Debian kernel with a tiny initramfs
//! (`image lab-guest`) and sets itself up exactly as seed 002 tells an operator to set up a
//! VS/TUN real server: `tunl0` up with the VIP on it, `arp_ignore=1`/`arp_announce=2`,
//! `rp_filter=0` on `tunl0` and on `all`; its RIP on eth0 and the router as its gateway. Then it
//! serves HTTP on port 80, answering its name, like `labtool serve` in the namespace lab.
//!
//! Kernel command line: `labrs.name=rs4 labrs.rip=198.18.0.14/24 labrs.gw=198.18.0.1
//! labrs.vip=203.0.113.10`. The console accepts `rp_filter N` (sets `all` and `tunl0`) so a
//! test can show what seed 002 warns about, and `poweroff`.

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

fn say(msg: &str) {
    println!("lab-rs: {msg}");
}

fn arg(cmdline: &str, key: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')).map(str::to_string))
}

fn mount(src: &str, target: &str, fstype: &str) {
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (s, t, f) = (c(src), c(target), c(fstype));
    let _ = std::fs::create_dir_all(target);
    // SAFETY: valid NUL-terminated strings for the call's duration; no data argument.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        say(&format!("mount {fstype} on {target}: {}", std::io::Error::last_os_error()));
    }
}

fn load_modules() {
    let order = std::fs::read_to_string("/lib/modules/load-order").unwrap_or_default();
    for name in order.lines().filter(|l| !l.is_empty()) {
        let Ok(image) = std::fs::read(format!("/lib/modules/{name}.ko")) else { continue };
        let params = std::ffi::CString::default();
        // SAFETY: `image` is a live buffer of `len` bytes and `params` a valid C string.
        let r = unsafe { libc::syscall(libc::SYS_init_module, image.as_ptr(), image.len(), params.as_ptr()) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                say(&format!("module {name}: {e}"));
            }
        }
    }
}

fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    match std::fs::write(&path, value) {
        Ok(()) => say(&format!("sysctl {key}={value}")),
        Err(e) => say(&format!("sysctl {key}: {e}")),
    }
}

fn wait_for(path: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(path).exists() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn setup(cmdline: &str) -> Result<(String, u16), String> {
    let name = arg(cmdline, "labrs.name").ok_or("labrs.name= missing")?;
    let rip = arg(cmdline, "labrs.rip").ok_or("labrs.rip= missing")?;
    let (ip, len) = rip.split_once('/').ok_or("labrs.rip must be ADDR/LEN")?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("labrs.rip: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("labrs.rip: {e}"))?;
    let gw: Ipv4Addr = arg(cmdline, "labrs.gw").ok_or("labrs.gw= missing")?.parse().map_err(|e| format!("labrs.gw: {e}"))?;
    let vip: Ipv4Addr = arg(cmdline, "labrs.vip").ok_or("labrs.vip= missing")?.parse().map_err(|e| format!("labrs.vip: {e}"))?;
    let port: u16 = arg(cmdline, "labrs.port").and_then(|p| p.parse().ok()).unwrap_or(80);

    if !wait_for("/sys/class/net/eth0") || !wait_for("/sys/class/net/tunl0") {
        return Err("eth0 or tunl0 did not appear (virtio_net / ipip modules)".into());
    }
    // Seed 002, step 1: never answer ARP for the VIP, never announce it.
    for k in ["all", "lo", "eth0", "tunl0"] {
        sysctl(&format!("net.ipv4.conf.{k}.arp_ignore"), "1");
        sysctl(&format!("net.ipv4.conf.{k}.arp_announce"), "2");
    }
    // Seed 002, step 2: the kernel applies max(all, tunl0) as tunl0's reverse-path filter.
    sysctl("net.ipv4.conf.tunl0.rp_filter", "0");
    sysctl("net.ipv4.conf.all.rp_filter", "0");
    use netfw_kernel::rtnl;
    let e = |e: rtnl::RtnlError| e.to_string();
    for nic in ["lo", "eth0", "tunl0"] {
        rtnl::set_link_up(nic).map_err(e)?;
    }
    rtnl::add_address("eth0", ip, len).map_err(e)?;
    // Seed 002, step 3: the VIP on tunl0, /32.
    rtnl::add_address("tunl0", vip, 32).map_err(e)?;
    // Replies go to the router, never back through the director.
    rtnl::set_default_route(gw).map_err(e)?;
    say(&format!("{name}: RIP {ip}/{len} on eth0, VIP {vip}/32 on tunl0, gateway {gw}"));
    Ok((name, port))
}

fn serve(name: String, port: u16) {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => return say(&format!("cannot listen on port {port}: {e}")),
    };
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let name = name.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 2048];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 16384 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                // `GET /big?bytes=N` (labtool long): the name line, then N bytes.
                let head = String::from_utf8_lossy(&got);
                let extra: u64 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.strip_prefix("/big?bytes="))
                    .and_then(|q| q.split('&').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let body = format!("{name}\n");
                let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len() as u64 + extra);
                let chunk = [b'x'; 16384];
                let mut sent = 0u64;
                while sent < extra {
                    let n = usize::try_from((extra - sent).min(chunk.len() as u64)).unwrap_or(0);
                    if s.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    sent += n as u64;
                }
            });
        }
    });
}

fn main() -> std::process::ExitCode {
    if std::process::id() != 1 {
        eprintln!("lab-rs-guest is the init of a lab real-server guest; it runs as PID 1 under QEMU");
        return std::process::ExitCode::from(2);
    }
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    load_modules();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match setup(&cmdline) {
        Ok((name, port)) => {
            serve(name, port);
            say("ready");
        }
        Err(e) => say(&format!("setup failed: {e}")),
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["rp_filter", v @ ("0" | "1" | "2")] => {
                sysctl("net.ipv4.conf.all.rp_filter", v);
                sysctl("net.ipv4.conf.tunl0.rp_filter", v);
                say(&format!("rp_filter {v} done"));
            }
            ["poweroff"] => break,
            [] => {}
            _ => say(&format!("unknown command: {line}")),
        }
    }
    // SAFETY: sync(2) and reboot(2) as PID 1, shutting the guest down.
    unsafe { libc::sync() };
    // SAFETY: plain system call; PID 1 powering the guest off.
    unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF) };
    std::process::ExitCode::SUCCESS
}
