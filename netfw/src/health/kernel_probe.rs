//! A probe through the kernel's own sockets, for ipvs mode: there the kernel holds the DIP, so
//! a probe to a real server's own address (`via: "rip"`, and the doctor's second probe) must be
//! the kernel's connection (the kernel would reset a handshake smoltcp began from the DIP).
//! Non-blocking: started once, then asked at each poll of the prober whether it has a result.
//! The kernel picks the local port from its ephemeral range (32768–60999), apart from the
//! prober's own (`PROBE_PORTS`).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use netfw_core::health::{Failure, Outcome};
use netfw_core::model::CheckKind;

use super::http_check::{Exchange, Pipe};

/// One probe under way on a kernel socket.
#[derive(Debug)]
pub struct KernelProbe {
    sock: Socket,
    /// HTTP(S): the exchange, once connected.
    http: Option<Exchange>,
}

fn failure(e: &std::io::Error, timeout_ms: u32) -> Failure {
    match e.kind() {
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => Failure::Closed,
        // Unreachable (ARP unanswered) and the like: nothing came back.
        _ => Failure::NoAnswer(timeout_ms),
    }
}

fn refused_or_silent(e: &std::io::Error, timeout_ms: u32) -> Outcome {
    Outcome::Fail(failure(e, timeout_ms))
}

/// A connected kernel socket as an HTTP check's pipe.
struct KernelPipe<'a>(&'a Socket, u32);

impl Pipe for KernelPipe<'_> {
    fn send(&mut self, data: &[u8]) -> Result<usize, Failure> {
        match (&mut &*self.0).write(data) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(failure(&e, self.1)),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Failure> {
        match (&mut &*self.0).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(failure(&e, self.1)),
        }
    }
}

impl KernelProbe {
    /// Begin a probe of `kind` from `src` to `dst`; an error is the probe's result at once.
    pub fn start(kind: &CheckKind, src: Ipv4Addr, dst: SocketAddrV4, timeout_ms: u32) -> Result<KernelProbe, Outcome> {
        let fail = |e: std::io::Error| refused_or_silent(&e, timeout_ms);
        let (ty, proto) = match kind {
            CheckKind::Udp { .. } => (Type::DGRAM, Protocol::UDP),
            _ => (Type::STREAM, Protocol::TCP),
        };
        let sock = Socket::new(Domain::IPV4, ty, Some(proto)).map_err(fail)?;
        sock.set_nonblocking(true).map_err(fail)?;
        sock.bind(&SockAddr::from(SocketAddrV4::new(src, 0))).map_err(fail)?;
        if ty == Type::STREAM {
            // A check ends in a reset, not a FIN: no TIME_WAIT per probe on the director.
            sock.set_linger(Some(Duration::ZERO)).map_err(fail)?;
        }
        match sock.connect(&SockAddr::from(dst)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(fail(e)),
        }
        if let CheckKind::Udp { send, .. } = kind {
            sock.send(send).map_err(fail)?;
        }
        let http = match kind {
            CheckKind::Http { tls, path, host, status_min, status_max } => {
                Some(Exchange::new(*tls, path, host.as_deref(), *dst.ip(), *status_min, *status_max)?)
            }
            _ => None,
        };
        Ok(KernelProbe { sock, http })
    }

    /// The probe's result, if it has one now (`timed_out`: its time is up).
    pub fn progress(&mut self, kind: &CheckKind, timeout_ms: u32, timed_out: bool) -> Option<Outcome> {
        let no_answer = Outcome::Fail(Failure::NoAnswer(timeout_ms));
        if let Ok(Some(e)) = self.sock.take_error() {
            return Some(refused_or_silent(&e, timeout_ms));
        }
        match kind {
            CheckKind::Udp { expect, .. } => {
                let mut buf = [0u8; 2048];
                match (&self.sock).read(&mut buf) {
                    Ok(n) => Some(if buf.get(..n).unwrap_or_default().starts_with(expect) {
                        Outcome::Pass
                    } else {
                        Outcome::Fail(Failure::WrongReply)
                    }),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => timed_out.then_some(no_answer),
                    Err(e) => Some(refused_or_silent(&e, timeout_ms)),
                }
            }
            CheckKind::Tcp => match self.sock.peer_addr() {
                Ok(_) => Some(Outcome::Pass),
                Err(_) => timed_out.then_some(no_answer),
            },
            CheckKind::Http { .. } => {
                if self.sock.peer_addr().is_err() {
                    return timed_out.then_some(no_answer);
                }
                let x = self.http.as_mut()?;
                x.step(&mut KernelPipe(&self.sock, timeout_ms)).or_else(|| timed_out.then_some(no_answer))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, UdpSocket};

    fn until(mut p: KernelProbe, kind: &CheckKind) -> Outcome {
        for _ in 0..200 {
            if let Some(o) = p.progress(kind, 1000, false) {
                return o;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        p.progress(kind, 1000, true).unwrap_or(Outcome::Fail(Failure::NoAnswer(0)))
    }

    #[test]
    fn tcp_http_and_udp_probes_through_the_kernel_tell_pass_from_each_failure() {
        let lo = Ipv4Addr::LOCALHOST;
        let listener = TcpListener::bind((lo, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let dst = SocketAddrV4::new(lo, port);
        assert_eq!(until(KernelProbe::start(&CheckKind::Tcp, lo, dst, 1000).unwrap(), &CheckKind::Tcp), Outcome::Pass);

        // The TCP probe's connection (reset by now), then an HTTP server that answers 503.
        let server = std::thread::spawn(move || {
            let _ = listener.accept().unwrap();
            let (mut c, _) = listener.accept().unwrap();
            let mut b = [0u8; 512];
            let n = c.read(&mut b).unwrap();
            assert!(String::from_utf8_lossy(&b[..n]).starts_with("GET /health HTTP/1.0\r\n"));
            c.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").unwrap();
        });
        let http = CheckKind::Http { tls: false, path: "/health".into(), host: None, status_min: 200, status_max: 399 };
        assert_eq!(until(KernelProbe::start(&http, lo, dst, 1000).unwrap(), &http), Outcome::Fail(Failure::HttpStatus(503)));
        server.join().unwrap();

        // Nothing listens on the port any more: refused.
        let refused = KernelProbe::start(&CheckKind::Tcp, lo, dst, 1000).map_or_else(|o| o, |p| until(p, &CheckKind::Tcp));
        assert_eq!(refused, Outcome::Fail(Failure::Refused));

        let echo = UdpSocket::bind((lo, 0)).unwrap();
        let udst = SocketAddrV4::new(lo, echo.local_addr().unwrap().port());
        let udp = CheckKind::Udp { send: b"ping".to_vec(), expect: b"pong".to_vec() };
        let p = KernelProbe::start(&udp, lo, udst, 1000).unwrap();
        let mut b = [0u8; 16];
        let (_, from) = echo.recv_from(&mut b).unwrap();
        echo.send_to(b"nope", from).unwrap();
        assert_eq!(until(p, &udp), Outcome::Fail(Failure::WrongReply));
        let p = KernelProbe::start(&udp, lo, udst, 1000).unwrap();
        let (_, from) = echo.recv_from(&mut b).unwrap();
        echo.send_to(b"pong!", from).unwrap();
        assert_eq!(until(p, &udp), Outcome::Pass);
        let mut silent = KernelProbe::start(&udp, lo, udst, 1000).unwrap();
        assert_eq!(silent.progress(&udp, 1000, true), Some(Outcome::Fail(Failure::NoAnswer(1000))));
    }

    /// A TLS server on loopback (a self-signed certificate) that answers each request with
    /// `status`.
    fn tls_server(status: &'static str, connections: usize) -> SocketAddrV4 {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let ck = rcgen::generate_simple_self_signed(vec!["shop.example".into()]).unwrap();
        let cert = CertificateDer::from(ck.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
        let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let cfg = std::sync::Arc::new(cfg);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let SocketAddr::V4(at) = listener.local_addr().unwrap() else { unreachable!() };
        std::thread::spawn(move || {
            for _ in 0..connections {
                let (tcp, _) = listener.accept().unwrap();
                let conn = rustls::ServerConnection::new(std::sync::Arc::clone(&cfg)).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut got = Vec::new();
                let mut b = [0u8; 512];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        });
        at
    }

    #[test]
    fn https_checks_complete_the_handshake_and_read_the_status() {
        let lo = Ipv4Addr::LOCALHOST;
        let https = |host: Option<&str>| CheckKind::Http {
            tls: true,
            path: "/".into(),
            host: host.map(str::to_string),
            status_min: 200,
            status_max: 399,
        };
        let at = tls_server("200 OK", 2);
        let k = https(None);
        assert_eq!(until(KernelProbe::start(&k, lo, at, 1000).unwrap(), &k), Outcome::Pass, "by address, no name sent");
        let k = https(Some("shop.example"));
        assert_eq!(until(KernelProbe::start(&k, lo, at, 1000).unwrap(), &k), Outcome::Pass, "with the site's name");
        let at = tls_server("503 Service Unavailable", 1);
        let k = https(None);
        assert_eq!(until(KernelProbe::start(&k, lo, at, 1000).unwrap(), &k), Outcome::Fail(Failure::HttpStatus(503)));

        // A plain HTTP server on the port: the handshake fails, and says so.
        let plain = TcpListener::bind((lo, 0)).unwrap();
        let SocketAddr::V4(pat) = plain.local_addr().unwrap() else { unreachable!() };
        std::thread::spawn(move || {
            let (mut c, _) = plain.accept().unwrap();
            let mut b = [0u8; 512];
            let _ = c.read(&mut b);
            let _ = c.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        });
        assert_eq!(until(KernelProbe::start(&k, lo, pat, 1000).unwrap(), &k), Outcome::Fail(Failure::Tls));
    }
}
