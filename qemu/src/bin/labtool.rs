//! labtool: the lab's hosts' programs. Real servers run `serve` (HTTP and UDP answering with
//! their own name); the client runs `get`, `long` and `udp`; tests run `sniff` to see what
//! crosses a NIC. Output is JSON for the tests to read.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "a lab tool: socket structures take constants and lengths known to fit"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  labtool serve --name NAME --port P [--udp-port U [--udp-bind A,B]] [--tls-port T] [--flap]
                [--tls-plain]   (--tls-port: HTTPS too, self-signed, or plain HTTP on it with --tls-plain: a server
                set up wrong; --flap: every other connection, the first included, gets a 503)
  labtool probe IP:PORT [--from IP]   (a TCP connection opened and closed)
  labtool get --to IP:PORT [--count N] [--from IP] [--interval-ms I]   (I: one request every I ms)
  labtool watch --to IP:PORT --stop-file F [--interval-ms I] [--timeout-ms T] [--seconds S]
                                                   requests every I ms (each given T ms) until F exists: the longest
                                                   time without an answer, and the failures after it
  labtool vrrp --dev DEV --src IP --vrid V --priority P --key K [--count N] [--interval-ms I]
                                                   the HA pair's adverts, sent as a stray box would
  labtool long --to IP:PORT --bytes B --ms T
  labtool upload --to IP:PORT --bytes B [--mbit M] send B bytes to the server (client -> real server), paced to M Mbit/s
  labtool spoof --to IP:PORT --rate PAIRS --seconds S   SYN then ACK from made-up clients in 198.51.100.0/24
  labtool udp --to IP:PORT [--count N]
  labtool sniff --dev DEV --seconds S [--stop-file F]   (stops when F exists, else after S)
  labtool sink --port P --seconds S
  labtool blast --to IP:PORT --seconds S [--flows F] [--payload BYTES] [--rate PPS]
                                                   (--rate: paced, else as fast as it can)
";

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("serve") => serve(&args),
        Some("probe") => probe(&args),
        Some("get") => get(&args),
        Some("long") => long(&args),
        Some("watch") => watch(&args),
        Some("vrrp") => vrrp(&args),
        Some("upload") => upload(&args),
        Some("spoof") => spoof(&args),
        Some("udp") => udp(&args),
        Some("sniff") => sniff(&args),
        Some("sink") => sink(&args),
        Some("blast") => blast(&args),
        _ => Err(USAGE.to_string()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("labtool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn to_addr(args: &[String]) -> Result<SocketAddr, String> {
    arg(args, "--to").ok_or("--to IP:PORT is required")?.parse().map_err(|e| format!("--to: {e}"))
}

fn serve(args: &[String]) -> Result<(), String> {
    let name = arg(args, "--name").ok_or("--name is required")?;
    let port = num(args, "--port", 80);
    if let Some(u) = arg(args, "--udp-port") {
        // A socket per address answers from that address (a DR real server must answer from
        // the VIP, as DNS servers that bind each address do); without --udp-bind, one
        // wildcard socket, which answers from the address the route picks (the RIP).
        let addrs = arg(args, "--udp-bind").map_or_else(|| vec!["0.0.0.0".to_string()], |a| a.split(',').map(str::to_string).collect());
        for a in addrs {
            let sock = UdpSocket::bind(format!("{a}:{u}")).map_err(|e| format!("{a}:{u}: {e}"))?;
            let n = name.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(n.as_bytes(), from);
                }
            });
        }
    }
    if let Some(t) = arg(args, "--tls-port") {
        serve_tls(&name, &t, args.iter().any(|a| a == "--tls-plain"))?;
    }
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| e.to_string())?;
    let flap = args.iter().any(|a| a == "--flap");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for s in l.incoming().flatten() {
        let n = name.clone();
        // A flapping server: every other connection gets a 503, strictly alternating, from
        // the first (the lab's "is it listening" connection) on.
        if flap && answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst).is_multiple_of(2) {
            std::thread::spawn(move || unavailable(s));
            continue;
        }
        std::thread::spawn(move || handle(s, &n));
    }
    Ok(())
}

/// HTTPS on `port` (a self-signed certificate made now), answered as HTTP is, on a thread;
/// `plain`: plain HTTP on that port instead.
fn serve_tls(name: &str, port: &str, plain: bool) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).map_err(|e| e.to_string())?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    let cfg = std::sync::Arc::new(cfg);
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| format!("{port}: {e}"))?;
    let name = name.to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (cfg, name) = (std::sync::Arc::clone(&cfg), name.clone());
            std::thread::spawn(move || {
                if plain {
                    return handle(s, &name);
                }
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
                let mut tls = rustls::StreamOwned::new(conn, s);
                respond(&mut tls, &name);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    Ok(())
}

/// Read the request, answer 503.
fn unavailable(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 1024];
    let _ = s.read(&mut buf);
    let _ = write!(s, "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
}

fn handle(mut s: TcpStream, name: &str) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    respond(&mut s, name);
}

/// Read one request and answer it (over TCP or TLS).
fn respond(s: &mut (impl Read + Write), name: &str) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&req).lines().next().unwrap_or_default().to_string();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    if line.starts_with("PUT /up ") {
        // An upload: count the body, answer with our name and what arrived.
        let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").map_or(req.len(), |p| p + 4);
        let want: u64 = String::from_utf8_lossy(&req[..head_end])
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0);
        let mut got = (req.len() - head_end) as u64;
        let mut big = vec![0u8; 1 << 16];
        while got < want {
            match s.read(&mut big) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        let body = format!("{name}\n{got}\n");
        let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        return;
    }
    if let Some(q) = path.strip_prefix("/big?") {
        let p: BTreeMap<&str, u64> =
            q.split('&').filter_map(|kv| kv.split_once('=')).filter_map(|(k, v)| v.parse().ok().map(|v| (k, v))).collect();
        let bytes = p.get("bytes").copied().unwrap_or(1 << 20);
        let ms = p.get("ms").copied().unwrap_or(0);
        let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{name}\n", bytes + name.len() as u64 + 1);
        let chunk = [b'x'; 16384];
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            sent += n as u64;
            if ms > 0 {
                let due = Duration::from_millis(ms * sent / bytes);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    } else {
        let body = format!("{name}\n");
        let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    }
}

fn probe(args: &[String]) -> Result<(), String> {
    let a: SocketAddr = args.get(1).ok_or("probe IP:PORT")?.parse().map_err(|e| format!("{e}"))?;
    match arg(args, "--from").map(|f| f.parse::<Ipv4Addr>()).transpose().map_err(|e| e.to_string())? {
        Some(from) => connect(a, Some(from)).map(|_| ()).map_err(|e| e.to_string()),
        None => TcpStream::connect_timeout(&a, Duration::from_millis(500)).map(|_| ()).map_err(|e| e.to_string()),
    }
}

fn connect(to: SocketAddr, from: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    match from {
        None => TcpStream::connect_timeout(&to, Duration::from_secs(3)),
        Some(ip) => {
            // Bind the source address with a raw socket dance: std has no bind-then-connect.
            // SAFETY: plain socket(2).
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is ours; from_raw_fd takes ownership so it is closed on every path.
            let s = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let local = sin(ip, 0);
            // SAFETY: valid sockaddr_in of `len` bytes.
            if unsafe { libc::bind(fd, std::ptr::from_ref(&local).cast(), len) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let SocketAddr::V4(t) = to else { return Err(std::io::Error::other("IPv4 only")) };
            let remote = sin(*t.ip(), t.port());
            s.set_write_timeout(Some(Duration::from_secs(3)))?;
            // SAFETY: valid sockaddr_in of `len` bytes.
            if unsafe { libc::connect(fd, std::ptr::from_ref(&remote).cast(), len) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(s)
        }
    }
}

fn fetch(to: SocketAddr, from: Option<Ipv4Addr>, path: &str) -> Result<(String, u64), String> {
    let mut s = connect(to, from).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {to}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| e.to_string())?;
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP header in reply")? + 4;
    let body = &all[at..];
    let name = String::from_utf8_lossy(body).lines().next().unwrap_or_default().to_string();
    Ok((name, body.len() as u64))
}

fn get(args: &[String]) -> Result<(), String> {
    let to = to_addr(args)?;
    let from = arg(args, "--from").map(|f| f.parse::<Ipv4Addr>()).transpose().map_err(|e| e.to_string())?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = Vec::new();
    let interval = Duration::from_millis(num(args, "--interval-ms", 0));
    let start = Instant::now();
    for i in 0..num(args, "--count", 1) {
        if let Some(wait) = (interval * u32::try_from(i).unwrap_or(u32::MAX)).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        match fetch(to, from, "/") {
            Ok((name, _)) => *counts.entry(name).or_default() += 1,
            Err(e) => errors.push(e),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({ "servers": counts, "errors": errors, "seconds": seconds }));
    Ok(())
}

/// One request that must be answered within `timeout` (connect and reply): the server's name.
fn fetch_within(to: SocketAddr, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("connect: {e}"))?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    write!(s, "GET / HTTP/1.0\r\nHost: {to}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| format!("read: {e}"))?;
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP header in reply")? + 4;
    Ok(String::from_utf8_lossy(&all[at..]).lines().next().unwrap_or_default().to_string())
}

/// Requests every `--interval-ms` until `--stop-file` exists: how long the service went
/// without answering (the longest time between two answered requests), and what failed
/// after that (a takeover must break nothing once it is done).
fn watch(args: &[String]) -> Result<(), String> {
    let to = to_addr(args)?;
    let interval = Duration::from_millis(num(args, "--interval-ms", 50).max(1));
    let timeout = Duration::from_millis(num(args, "--timeout-ms", 300).max(1));
    let limit = Duration::from_secs(num(args, "--seconds", 120));
    let stop = arg(args, "--stop-file").map(std::path::PathBuf::from);
    let start = Instant::now();
    let (mut ok, mut counts) = (0u64, BTreeMap::<String, u64>::new());
    let mut failures: Vec<(f64, String)> = Vec::new();
    let (mut last_ok, mut longest, mut longest_end) = (None::<Duration>, Duration::ZERO, Duration::ZERO);
    println!("{}", serde_json::json!({ "ready": true }));
    let mut i = 0u32;
    while start.elapsed() < limit && !stop.as_ref().is_some_and(|f| f.exists()) {
        let t = start.elapsed();
        match fetch_within(to, timeout) {
            Ok(name) => {
                ok += 1;
                *counts.entry(name).or_default() += 1;
                if let Some(prev) = last_ok {
                    if t - prev > longest {
                        (longest, longest_end) = (t - prev, t);
                    }
                }
                last_ok = Some(t);
            }
            Err(e) => failures.push((t.as_secs_f64(), e)),
        }
        i += 1;
        if let Some(wait) = (interval * i).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let after: Vec<&(f64, String)> = failures.iter().filter(|(t, _)| *t > longest_end.as_secs_f64()).collect();
    println!(
        "{}",
        serde_json::json!({
            "ok": ok, "failed": failures.len(), "servers": counts,
            "longest_gap_ms": longest.as_millis() as u64, "gap_ended_s": longest_end.as_secs_f64(),
            "failed_after_gap": after.len(), "errors": failures.iter().take(5).map(|(t, e)| format!("{t:.3}s: {e}")).collect::<Vec<_>>(),
        })
    );
    Ok(())
}

/// Adverts in the pair's format from `--src` on `--dev` (an AF_PACKET socket: a whole frame,
/// TTL 255, from a made-up MAC), signed with `--key`: a stray or misconfigured box.
fn vrrp(args: &[String]) -> Result<(), String> {
    use netfw_core::ha::advert::{emit, Ours, PROTO_VRRP, VRRP_GROUP};
    let dev = arg(args, "--dev").ok_or("--dev is required")?;
    let src: Ipv4Addr = arg(args, "--src").ok_or("--src is required")?.parse().map_err(|_| "--src: not an IPv4 address")?;
    let key = arg(args, "--key").ok_or("--key is required")?;
    let vrid = u8::try_from(num(args, "--vrid", 51)).map_err(|_| "--vrid: 1-255")?;
    let priority = u8::try_from(num(args, "--priority", 254)).map_err(|_| "--priority: 0-255")?;
    let count = num(args, "--count", 10);
    let interval = Duration::from_millis(num(args, "--interval-ms", 100));
    // SAFETY: plain socket(2); protocol 0: this socket only sends.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is ours; the File closes it.
    let _owner = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let cname = std::ffi::CString::new(dev.clone()).map_err(|e| e.to_string())?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if idx == 0 {
        return Err(format!("no NIC {dev}"));
    }
    // SAFETY: zeroed sockaddr_ll is valid plain data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = idx as i32;
    sll.sll_halen = 6;
    let seq0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    for n in 0..count {
        let mut f = [0u8; 14 + 20 + 64];
        f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0xee, 0x01]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ours = Ours { vrid, priority, interval_cs: 20, vips: &[], sequence: seq0 + n, digest: 0 };
        let len = emit(&mut f[34..], src, &ours, key.as_bytes()).ok_or("the advert does not fit")?;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
        ip[8] = 255;
        ip[9] = PROTO_VRRP;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&VRRP_GROUP.octets());
        let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let frame = &f[..34 + len];
        // SAFETY: `frame` and `sll` are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(format!("sendto: {}", std::io::Error::last_os_error()));
        }
        std::thread::sleep(interval);
    }
    println!("{}", serde_json::json!({ "sent": count }));
    Ok(())
}

fn long(args: &[String]) -> Result<(), String> {
    let to = to_addr(args)?;
    let (name, bytes) = fetch(to, None, &format!("/big?bytes={}&ms={}", num(args, "--bytes", 1 << 20), num(args, "--ms", 0)))?;
    println!("{}", serde_json::json!({ "server": name, "body_bytes": bytes }));
    Ok(())
}

/// Send `--bytes` to the server (the direction that crosses the director in DR) and report
/// what arrived and how fast; `--mbit` paces it (an upload that lasts, e.g. across a failover).
fn upload(args: &[String]) -> Result<(), String> {
    let to = to_addr(args)?;
    let bytes = num(args, "--bytes", 20 << 20);
    let mbit = num(args, "--mbit", 0);
    let start = Instant::now();
    let mut s = connect(to, None).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    write!(s, "PUT /up HTTP/1.0\r\nHost: {to}\r\nContent-Length: {bytes}\r\n\r\n").map_err(|e| e.to_string())?;
    let chunk = vec![b'u'; 1 << 16];
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).map_err(|e| format!("upload broke after {sent} bytes: {e}"))?;
        sent += n as u64;
        if mbit > 0 {
            let due = Duration::from_secs_f64(sent as f64 * 8.0 / (mbit as f64 * 1e6));
            std::thread::sleep(due.saturating_sub(start.elapsed()));
        }
    }
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| format!("no answer after the upload: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP header in reply")? + 4;
    let body = String::from_utf8_lossy(&all[at..]).into_owned();
    let mut lines = body.lines();
    let server = lines.next().unwrap_or_default().to_string();
    let received: u64 = lines.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({ "server": server, "sent": sent, "received": received, "seconds": secs, "mbit_s": (sent as f64) * 8.0 / secs / 1e6 })
    );
    Ok(())
}

/// A spoofing sender: for `--seconds`, `--rate` pairs per second of a SYN and then an ACK
/// from random clients (addresses in 198.51.100.10-254, random ports), the TCP handshake
/// half a director sees, which no real client completes. Raw IPv4 (IP_HDRINCL).
fn spoof(args: &[String]) -> Result<(), String> {
    let SocketAddr::V4(to) = to_addr(args)? else { return Err("IPv4 only".into()) };
    let rate = num(args, "--rate", 1000).max(1);
    let secs = num(args, "--seconds", 5);
    // SAFETY: plain socket(2); IPPROTO_RAW implies IP_HDRINCL.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(format!("raw socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is ours; the File closes it.
    let _owner = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let dst = u32::from(*to.ip());
    let send = |src: u32, sport: u16, seq: u32, flags: u8| -> Result<(), String> {
        let mut p = [0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src.to_be_bytes());
        p[16..20].copy_from_slice(&dst.to_be_bytes());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&to.port().to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[32] = 0x50;
        p[33] = flags;
        p[34..36].copy_from_slice(&1024u16.to_be_bytes());
        let mut sum: u32 =
            [&p[12..20], &[0, 6, 0, 20][..], &p[20..40]].concat().chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[36..38].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: dst.to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: `p` and `sin` are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                fd,
                p.as_ptr().cast(),
                p.len(),
                0,
                std::ptr::from_ref(&sin).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r < 0 {
            Err(format!("sendto: {}", std::io::Error::last_os_error()))
        } else {
            Ok(())
        }
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut pairs = 0u64;
    while Instant::now() < end {
        let r = rnd();
        let src = u32::from(Ipv4Addr::new(198, 51, 100, 10 + (r % 245) as u8));
        let sport = 1024 + ((r >> 8) % 60000) as u16;
        let seq = (r >> 32) as u32;
        send(src, sport, seq, 0x02)?;
        send(src, sport, seq.wrapping_add(1), 0x10)?;
        pairs += 1;
        let due = Duration::from_secs_f64(pairs as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({ "pairs": pairs, "seconds": secs, "rate": pairs as f64 / secs }));
    Ok(())
}

fn udp(args: &[String]) -> Result<(), String> {
    let to = to_addr(args)?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = 0;
    // Every query is its own flow: the sockets stay open until the end, so the kernel never
    // hands a later query a source port an earlier one used (a reused port is the same flow to
    // the director and goes, rightly, to the same real server).
    let mut open = Vec::new();
    for _ in 0..num(args, "--count", 1) {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let got = s.send_to(b"who", to).and_then(|_| s.recv(&mut buf));
        match got {
            Ok(n) => *counts.entry(String::from_utf8_lossy(&buf[..n]).into_owned()).or_default() += 1,
            Err(_) => errors += 1,
        }
        open.push(s);
    }
    println!("{}", serde_json::json!({ "servers": counts, "errors": errors }));
    Ok(())
}

fn fmt_mac(m: &[u8]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn sniff(args: &[String]) -> Result<(), String> {
    let dev = arg(args, "--dev").ok_or("--dev is required")?;
    let secs = num(args, "--seconds", 2);
    // A test ends the capture when its traffic is done (the file appears), so the window is
    // sure to cover it; --seconds only bounds a capture nobody stops.
    let stop_file = arg(args, "--stop-file").map(std::path::PathBuf::from);
    // SAFETY: plain socket(2); ETH_P_ALL in network order.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(0x0003u16.to_be())) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is ours; the File closes it.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let cname = std::ffi::CString::new(dev.clone()).map_err(|e| e.to_string())?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if idx == 0 {
        return Err(format!("no NIC {dev}"));
    }
    // SAFETY: zeroed sockaddr_ll is valid plain data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = 0x0003u16.to_be();
    sll.sll_ifindex = idx as i32;
    // SAFETY: valid sockaddr_ll.
    if unsafe { libc::bind(fd, std::ptr::from_ref(&sll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32) } != 0 {
        return Err(format!("bind: {}", std::io::Error::last_os_error()));
    }
    let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
    // SAFETY: valid timeval.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    println!("{}", serde_json::json!({"ready": true}));
    let _ = std::io::stdout().flush();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut arps = Vec::new();
    let mut ipv4_src: BTreeMap<String, u64> = BTreeMap::new();
    let mut ipip = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < end && !stop_file.as_ref().is_some_and(|p| p.exists()) {
        let Ok(n) = f.read(&mut buf) else { continue };
        let fr = &buf[..n];
        if n < 14 {
            continue;
        }
        match u16::from_be_bytes([fr[12], fr[13]]) {
            0x0806 if n >= 42 => arps.push(serde_json::json!({
                "op": u16::from_be_bytes([fr[20], fr[21]]),
                "sender_mac": fmt_mac(&fr[22..28]),
                "sender_ip": Ipv4Addr::new(fr[28], fr[29], fr[30], fr[31]).to_string(),
                "target_ip": Ipv4Addr::new(fr[38], fr[39], fr[40], fr[41]).to_string(),
            })),
            0x0800 if n >= 34 => {
                *ipv4_src.entry(Ipv4Addr::new(fr[26], fr[27], fr[28], fr[29]).to_string()).or_default() += 1;
                // IP-in-IP (protocol 4): record outer and inner addresses.
                let hl = usize::from(fr[14] & 0x0f) * 4;
                if fr[23] == 4 && n >= 14 + hl + 24 {
                    let inner = &fr[14 + hl..];
                    let ihl = usize::from(inner[0] & 0x0f) * 4;
                    let dport = inner.get(ihl + 2..ihl + 4).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
                    ipip.push(serde_json::json!({
                        "outer_src": Ipv4Addr::new(fr[26], fr[27], fr[28], fr[29]).to_string(),
                        "outer_dst": Ipv4Addr::new(fr[30], fr[31], fr[32], fr[33]).to_string(),
                        "inner_src": Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]).to_string(),
                        "inner_dst": Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]).to_string(),
                        "inner_dport": dport,
                    }));
                }
            }
            _ => {}
        }
    }
    println!("{}", serde_json::json!({ "arp": arps, "ipv4_src": ipv4_src, "ipip": ipip }));
    Ok(())
}

fn sink(args: &[String]) -> Result<(), String> {
    let s = UdpSocket::bind(format!("0.0.0.0:{}", num(args, "--port", 9))).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    println!("{}", serde_json::json!({"ready": true}));
    let _ = std::io::stdout().flush();
    let end = Instant::now() + Duration::from_secs(num(args, "--seconds", 5));
    let mut n = 0u64;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if s.recv(&mut buf).is_ok() {
            n += 1;
        }
    }
    println!("{}", serde_json::json!({ "received": n }));
    Ok(())
}

fn blast(args: &[String]) -> Result<(), String> {
    let to = to_addr(args)?;
    let flows = num(args, "--flows", 64).max(1);
    let socks: Vec<UdpSocket> = (0..flows).map(|_| UdpSocket::bind("0.0.0.0:0")).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    for s in &socks {
        s.connect(to).map_err(|e| e.to_string())?;
    }
    // Default 18 bytes: 64-byte frames on the wire.
    let payload = vec![0u8; usize::try_from(num(args, "--payload", 18)).unwrap_or(18).min(1472)];
    let end = Instant::now() + Duration::from_secs(num(args, "--seconds", 3));
    // Paced: a burst of `BURST` datagrams every BURST/rate seconds (one flow after another).
    const BURST: u64 = 32;
    let rate = num(args, "--rate", 0);
    let gap = (rate > 0).then(|| Duration::from_secs_f64(BURST as f64 / rate as f64));
    let mut next = Instant::now();
    let mut sent = 0u64;
    let mut i = 0usize;
    while Instant::now() < end {
        let burst = if gap.is_some() { BURST } else { socks.len() as u64 };
        for _ in 0..burst {
            if socks[i].send(&payload).is_ok() {
                sent += 1;
            }
            i = (i + 1) % socks.len();
        }
        if let Some(gap) = gap {
            next += gap;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
    }
    println!("{}", serde_json::json!({ "sent": sent }));
    Ok(())
}
