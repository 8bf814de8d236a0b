//! Issue 13's hardened page, against the real `web-config` binary serving on the loopback of
//! a namespace of its own (no init behind it: login and the page need none). Each proof here
//! failed before its fix: slow clients locked everyone out, parallel guesses all reached the
//! password check, any Host was served.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qemu::netns::in_netns;
use tests::{poll_until, Web};

const PASSWORD: &str = "correct horse battery";

/// `web-config serve` on `lo` in a namespace of its own; all of it goes on drop.
struct Page {
    ns: String,
    dir: PathBuf,
    child: Child,
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().is_ok_and(|s| s.success());
    assert!(ok, "ip {args:?} failed");
}

impl Page {
    fn start(name: &str) -> Page {
        let ns = format!("dwh-{name}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let dir = std::env::temp_dir().join(&ns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = qemu::proc::bin("web-config").unwrap();
        let state = dir.to_string_lossy().into_owned();
        let prepared = Command::new(&bin).args(["prepare", "--state", &state]).output().unwrap();
        assert!(prepared.status.success(), "{}", String::from_utf8_lossy(&prepared.stderr));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&bin)
            .args(["serve", "--state", &state, "--nic", "lo", "--control", &format!("{state}/no-init.sock")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let page = Page { ns, dir, child };
        poll_until("the page answers", Duration::from_secs(20), || {
            let a = page.web("probe", "127.0.0.1").get("/api/session");
            if a.status == 200 {
                Ok(())
            } else {
                Err(format!("curl {} status {}", a.curl_exit, a.status))
            }
        });
        page
    }

    fn web(&self, name: &str, from: &str) -> Web {
        let mut w = Web::new(&self.ns, "127.0.0.1", &self.dir, name);
        w.from = Some(from.into());
        w
    }

    /// First-boot setup with the code `prepare` left.
    fn set_password(&self) {
        let code = std::fs::read_to_string(self.dir.join("web-setup-code")).unwrap();
        let a = self.web("setup", "127.0.0.1").login(PASSWORD, Some(code.trim()));
        assert_eq!(a.status, 200, "{}", a.body);
    }

    /// A TCP connection from `from` to `port`, opened inside the page's namespace.
    fn connect(&self, from: &str, port: u16) -> TcpStream {
        let from: std::net::Ipv4Addr = from.parse().unwrap();
        in_netns(&self.ns, move || {
            // SAFETY: a plain socket(2); checked, then owned by the TcpStream.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            assert!(fd >= 0);
            let fam = libc::sa_family_t::try_from(libc::AF_INET).unwrap();
            let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap();
            // SAFETY: `fd` is ours; from here the stream closes it.
            let s = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let bind = libc::sockaddr_in {
                sin_family: fam,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from(from).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: `bind` is a valid sockaddr_in of the given size.
            let r = unsafe { libc::bind(fd, (&raw const bind).cast(), len) };
            assert_eq!(r, 0, "bind {from}: {}", std::io::Error::last_os_error());
            let to = libc::sockaddr_in {
                sin_family: fam,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: as above.
            let r = unsafe { libc::connect(fd, (&raw const to).cast(), len) };
            assert_eq!(r, 0, "connect to port {port}: {}", std::io::Error::last_os_error());
            s
        })
        .unwrap()
    }

    /// curl with a Host header of our choosing.
    fn with_host(&self, host: &str) -> (u16, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sk", "-i", "--max-time", "20", "-H", &format!("Host: {host}")])
            .arg("https://127.0.0.1/api/session")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
    }
}

/// Whether the server has closed `s` (EOF or reset) rather than waiting for the request.
fn closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn slow_clients_on_either_port_do_not_lock_the_page_out() {
    let page = Page::start("slow");
    // 40 connections from one machine to the page and 40 from another to the redirecting
    // port, all silent: before the fix they took all 32 shared slots for 10 s each.
    let mut https: Vec<TcpStream> = (0..40).map(|_| page.connect("127.0.0.2", 443)).collect();
    let mut plain: Vec<TcpStream> = (0..40).map(|_| page.connect("127.0.0.3", 80)).collect();
    // The page refuses the ones over a machine's share at once, and holds the rest (for
    // well under their 10 s deadline here).
    std::thread::sleep(Duration::from_millis(1500));
    let refused_https = https.iter_mut().map(closed).filter(|c| *c).count();
    let refused_plain = plain.iter_mut().map(closed).filter(|c| *c).count();
    let a = page.web("other", "127.0.0.4").get("/api/session");
    assert_eq!(a.status, 200, "a third machine still gets the page while 80 slow connections are open: curl {}", a.curl_exit);
    let redirect = Command::new("ip")
        .args(["netns", "exec", &page.ns, "curl", "-s", "-i", "--max-time", "20", "--interface", "127.0.0.4", "http://127.0.0.1/"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&redirect.stdout).starts_with("HTTP/1.1 301"), "and the redirect");
    assert_eq!(refused_https, 40 - web_config::server::MAX_PER_CLIENT, "one address holds at most its share of the page's slots");
    assert_eq!(refused_plain, 40 - web_config::server::MAX_REDIRECTS.1, "and of the redirecting port's");
    drop((https, plain));

    // A client trickling its request a byte every half second (each read well inside any
    // per-read timeout) is cut off at the request's deadline, before it has sent it all.
    let mut s = page.connect("127.0.0.5", 80);
    let request = b"GET /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: 0123456789abcdef\r\n\r\n";
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut w = s.try_clone().unwrap();
    let (sent2, done2) = (sent.clone(), done.clone());
    let writer = std::thread::spawn(move || {
        for b in request {
            if done2.load(Ordering::Relaxed) || w.write_all(&[*b]).is_err() {
                return;
            }
            sent2.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    done.store(true, Ordering::Relaxed);
    let _ = s.shutdown(Shutdown::Both);
    writer.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    println!("trickling client: {sent} of {} bytes sent before the page closed the connection", request.len());
    assert!(answer.is_empty(), "no answer to a request that never arrived whole: {}", String::from_utf8_lossy(&answer));
    assert!(sent < request.len(), "the connection was closed before the trickle ended ({sent} bytes)");
}

#[test]
fn parallel_guesses_get_five_checks_and_the_page_names_itself() {
    let page = Page::start("guess");
    page.set_password();

    // As many wrong passwords at once as one address may have connections: only 5 reach the
    // password check.
    let n = web_config::server::MAX_PER_CLIENT;
    let statuses: Vec<u16> = std::thread::scope(|sc| {
        let all: Vec<_> = (0..n)
            .map(|i| {
                let w = page.web(&format!("guess{i}"), "127.0.0.6");
                sc.spawn(move || {
                    let mut w = w;
                    w.login("guess guess guess", None).status
                })
            })
            .collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    println!("{n} parallel guesses: {wrong} checked (401), {limited} refused before the check (429)");
    assert_eq!((wrong, limited), (5, n - 5), "{statuses:?}");
    let mut me = page.web("me", "127.0.0.7");
    let ok = me.login(PASSWORD, None);
    assert_eq!(ok.status, 200, "another address logs in: {}", ok.body);

    // The session cookie is __Host- prefixed, the page asks for HTTPS from now on.
    let cookie = ok.headers.lines().find(|l| l.starts_with("Set-Cookie:")).unwrap_or_default();
    assert!(cookie.starts_with("Set-Cookie: __Host-sid=") && cookie.contains("Path=/") && cookie.contains("Secure"), "{cookie}");
    assert!(!cookie.contains("Domain"), "{cookie}");
    assert!(ok.headers.contains("Strict-Transport-Security: max-age="), "{}", ok.headers);
    assert_eq!(me.get("/api/session").json()["logged_in"], true);

    // DNS rebinding: a Host that is not the box is refused; its own address and loopback
    // (a port forwarded on the operator's machine) are served.
    for host in ["evil.example", "evil.example:443", "198.19.0.99", "director"] {
        let (status, text) = page.with_host(host);
        assert_eq!(status, 421, "Host {host}: {text}");
        assert!(text.contains("answers only at the box's own address"), "{text}");
    }
    for host in ["127.0.0.1", "127.0.0.1:8443", "localhost:8443"] {
        assert_eq!(page.with_host(host).0, 200, "Host {host}");
    }
}

/// Bind a port in the host's namespace to show the demo's forward reaches a page in a
/// namespace, as the operator's browser would.
#[test]
fn a_forwarded_host_port_reaches_the_page_inside_a_namespace() {
    let page = Page::start("fwd");
    let fwd = qemu::netns::forward_port(SocketAddr::from(([127, 0, 0, 1], 0)), &page.ns, SocketAddr::from(([127, 0, 0, 1], 443))).unwrap();
    let out = Command::new("curl").args(["-sk", "--max-time", "20"]).arg(format!("https://{}/api/session", fwd.listen)).output().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(body["setup_needed"], true, "from the host through {}: {}", fwd.listen, String::from_utf8_lossy(&out.stdout));
}
