//! The listening side: HTTPS and the plain-HTTP redirect, both bound to the management NIC
//! (SO_BINDTODEVICE), so the page is never reachable through the VIP- or RS-facing NICs
//! whatever addresses they carry. One thread per connection, each holding a slot (`slots`):
//! the HTTPS listener and the redirecting port have their own, each with a cap per client
//! address; a request must arrive whole within `http::REQUEST_DEADLINE`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::App;
use crate::http::{self, Deadline, HttpError, Response};
use crate::slots::Slots;
use crate::{auth, secrets, tls};

/// HTTPS connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// HTTPS connections from one client address at once.
pub const MAX_PER_CLIENT: usize = 8;
/// Plain-HTTP (redirect) connections at once, and from one address: they only redirect, so
/// they never take the page's slots.
pub const MAX_REDIRECTS: (usize, usize) = (8, 2);
/// `Strict-Transport-Security`: browsers use HTTPS for the box's address for a year.
const HSTS: &str = "max-age=31536000";

/// `serve`'s options.
#[derive(Debug)]
pub struct Options {
    /// Where `web.slots` lives.
    pub state: PathBuf,
    /// The management NIC.
    pub nic: String,
    /// The init's control socket.
    pub control: PathBuf,
    /// HTTPS port.
    pub https_port: u16,
    /// HTTP (redirect) port.
    pub http_port: u16,
}

/// Where the first-boot setup code is kept for `serve` (tmpfs: gone at reboot).
pub fn setup_code_file(state: &Path) -> PathBuf {
    let run = Path::new("/run");
    if run.is_dir() && state.starts_with("/mnt") {
        run.join("web-setup-code")
    } else {
        state.join("web-setup-code")
    }
}

/// First boot: make and save the certificate; while no password is set, make a setup code.
/// Returns what the console banner shows.
pub fn prepare(state: &Path) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let mut s = secrets::load(state)?;
    if s.cert_pem.is_none() || s.key_pem.is_none() {
        let (c, k) = tls::generate("director")?;
        s.cert_pem = Some(c);
        s.key_pem = Some(k);
        secrets::save(state, &s)?;
        lines.push("web page: new TLS certificate made (first boot)".to_string());
    }
    lines.push(format!("web page: certificate SHA-256 fingerprint {}", tls::fingerprint(s.cert_pem.as_deref().unwrap_or_default())));
    if s.password.is_none() {
        lines.push(new_setup_code(state)?);
    }
    Ok(lines)
}

/// Make a setup code, keep it where `serve` reads it, and return the line that shows it.
fn new_setup_code(state: &Path) -> Result<String, String> {
    let code = auth::new_setup_code()?;
    write_private(&setup_code_file(state), &code)?;
    Ok(format!("web page: FIRST BOOT: setup code {code} (the page asks for it and a new password)"))
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// A TCP listener on every address of `nic` (bound to the device), port `port`.
fn listen_on_nic(nic: &str, port: u16) -> Result<TcpListener, String> {
    let what = |e: std::io::Error| format!("listen on {nic} port {port}: {e}");
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(what(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a socket we own; from here the listener closes it on every path.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: `one` lives across the call; the length is its size.
    unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const one).cast(), 4) };
    let dev = nic.as_bytes();
    // SAFETY: `dev` points to `len` bytes of the interface name.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            libc::socklen_t::try_from(dev.len()).unwrap_or(0),
        )
    };
    if r != 0 {
        return Err(what(std::io::Error::last_os_error()));
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default(),
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in of the given size.
    let r = unsafe {
        libc::bind(fd, (&raw const addr).cast(), libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap_or(0))
    };
    if r != 0 {
        return Err(what(std::io::Error::last_os_error()));
    }
    // SAFETY: listen(2) on our bound socket.
    if unsafe { libc::listen(fd, 64) } != 0 {
        return Err(what(std::io::Error::last_os_error()));
    }
    Ok(listener)
}

fn peer_of(s: &TcpStream) -> IpAddr {
    s.peer_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

fn local_of(s: &TcpStream) -> IpAddr {
    s.local_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

fn answer_error<S: Read + Write>(e: HttpError, s: &mut S) {
    let r = match e {
        HttpError::Bad(m) => Response::error(400, &m, None),
        HttpError::TooLarge => Response::error(413, &format!("request too large (body limit {} bytes)", http::MAX_BODY), None),
        HttpError::Gone => return,
    };
    let _ = r.write(s);
    // Read (and drop) what the client is still sending, a bounded amount: closing with
    // unread data makes the kernel reset the connection, and the client never sees the 413.
    let mut sink = [0u8; 8192];
    let mut left = 1usize << 20;
    while left > 0 {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn serve_https(app: &App, tls_cfg: Arc<rustls::ServerConfig>, tcp: TcpStream) {
    let (peer, local) = (peer_of(&tcp), local_of(&tcp));
    let Ok(conn) = rustls::ServerConnection::new(tls_cfg) else { return };
    let mut s = rustls::StreamOwned::new(conn, Deadline::new(tcp, http::REQUEST_DEADLINE));
    match http::read_request(&mut s, peer, local) {
        Ok(req) => {
            let resp = match req.streamed {
                Some(_) => {
                    s.sock.extend(crate::update::DEADLINE);
                    app.handle_streamed(&req, &mut s)
                }
                None => app.handle(&req),
            }
            .with("Strict-Transport-Security", HSTS);
            s.sock.extend(http::WRITE_DEADLINE);
            let _ = resp.write(&mut s);
        }
        Err(HttpError::Gone) => return,
        Err(e) => {
            s.sock.extend(Duration::from_secs(1));
            answer_error(e, &mut s);
        }
    }
    s.conn.send_close_notify();
    let _ = s.flush();
}

/// Plain HTTP: every request is sent to the HTTPS page.
fn serve_redirect(tcp: TcpStream) {
    let (peer, local_ip) = (peer_of(&tcp), local_of(&tcp));
    let local = local_ip.to_string();
    let mut tcp = Deadline::new(tcp, http::REQUEST_DEADLINE);
    match http::read_request(&mut tcp, peer, local_ip) {
        Ok(req) => {
            // Only a plain host name or address goes into Location, never the client's bytes.
            let host = req
                .header("host")
                .map(|h| h.rsplit_once(':').map_or(h, |(a, _)| a))
                .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
                .unwrap_or(&local)
                .to_string();
            tcp.extend(http::WRITE_DEADLINE);
            let _ = Response::json(301, &serde_json::json!({ "error": "use HTTPS" }))
                .with("Location", &format!("https://{host}/"))
                .write(&mut tcp);
        }
        Err(HttpError::Gone) => {}
        Err(e) => {
            tcp.extend(Duration::from_secs(1));
            answer_error(e, &mut tcp);
        }
    }
}

fn accept_loop(listener: TcpListener, slots: Arc<Slots>, each: Arc<dyn Fn(TcpStream) + Send + Sync>) {
    for tcp in listener.incoming().flatten() {
        // No slot: dropped, closed at once.
        let Ok(slot) = slots.take(peer_of(&tcp)) else { continue };
        let each = each.clone();
        std::thread::spawn(move || {
            each(tcp);
            drop(slot);
        });
    }
}

/// Serve until killed.
pub fn serve(o: &Options) -> Result<(), String> {
    let app = Arc::new(App::new(o.state.clone(), o.control.clone(), setup_code_file(&o.state))?);
    let (cert, key) = {
        let s = app.secrets.lock().map_err(|_| "poisoned")?;
        (s.cert_pem.clone().ok_or("no certificate: run `web-config prepare` first")?, s.key_pem.clone().unwrap_or_default())
    };
    let tls_cfg = tls::server_config(&cert, &key)?;
    if app.secrets.lock().map_err(|_| "poisoned")?.password.is_none() && !setup_code_file(&o.state).exists() {
        println!("{}", new_setup_code(&o.state)?);
    }
    let https = listen_on_nic(&o.nic, o.https_port)?;
    let plain = listen_on_nic(&o.nic, o.http_port)?;
    println!("web page: serving HTTPS on {} port {} (HTTP port {} redirects)", o.nic, o.https_port, o.http_port);
    std::thread::spawn(move || accept_loop(plain, Slots::new(MAX_REDIRECTS.0, MAX_REDIRECTS.1), Arc::new(serve_redirect)));
    let a = app.clone();
    accept_loop(https, Slots::new(MAX_CONNECTIONS, MAX_PER_CLIENT), Arc::new(move |t| serve_https(&a, tls_cfg.clone(), t)));
    Ok(())
}
