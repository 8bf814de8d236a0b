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

use super::prober::{http_request, http_status, HTTP_READ};

/// One probe under way on a kernel socket.
#[derive(Debug)]
pub struct KernelProbe {
    sock: Socket,
    sent: bool,
    reply: Vec<u8>,
}

fn refused_or_silent(e: &std::io::Error, timeout_ms: u32) -> Outcome {
    match e.kind() {
        ErrorKind::ConnectionRefused => Outcome::Fail(Failure::Refused),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => Outcome::Fail(Failure::Closed),
        // Unreachable (ARP unanswered) and the like: nothing came back.
        _ => Outcome::Fail(Failure::NoAnswer(timeout_ms)),
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
        let mut p = KernelProbe { sock, sent: false, reply: Vec::new() };
        if let CheckKind::Udp { send, .. } = kind {
            p.sock.send(send).map_err(fail)?;
            p.sent = true;
        }
        Ok(p)
    }

    /// The probe's result, if it has one now (`timed_out`: its time is up).
    pub fn progress(&mut self, kind: &CheckKind, dst: Ipv4Addr, timeout_ms: u32, timed_out: bool) -> Option<Outcome> {
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
            CheckKind::Http { path, host, status_min, status_max } => {
                if self.sock.peer_addr().is_err() {
                    return timed_out.then_some(no_answer);
                }
                if !self.sent {
                    let req = http_request(path, host.as_deref(), dst);
                    // A request this small goes out whole, or not at all (and is tried again).
                    match (&self.sock).write(req.as_bytes()) {
                        Ok(n) if n == req.len() => self.sent = true,
                        Ok(_) => return Some(Outcome::Fail(Failure::Closed)),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return timed_out.then_some(no_answer),
                        Err(e) => return Some(refused_or_silent(&e, timeout_ms)),
                    }
                }
                let mut buf = [0u8; 1024];
                let closed = loop {
                    if self.reply.len() >= HTTP_READ {
                        break false;
                    }
                    match (&self.sock).read(&mut buf) {
                        Ok(0) => break true,
                        Ok(n) => self.reply.extend_from_slice(buf.get(..n).unwrap_or_default()),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                        Err(e) => return Some(refused_or_silent(&e, timeout_ms)),
                    }
                };
                if let Some(code) = http_status(&self.reply) {
                    return Some(match code {
                        Ok(c) if (*status_min..=*status_max).contains(&c) => Outcome::Pass,
                        Ok(c) => Outcome::Fail(Failure::HttpStatus(c)),
                        Err(()) => Outcome::Fail(Failure::NotHttp),
                    });
                }
                if closed || self.reply.len() >= HTTP_READ {
                    return Some(Outcome::Fail(if self.reply.is_empty() { Failure::Closed } else { Failure::NotHttp }));
                }
                timed_out.then_some(no_answer)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    fn until(mut p: KernelProbe, kind: &CheckKind, dst: Ipv4Addr) -> Outcome {
        for _ in 0..200 {
            if let Some(o) = p.progress(kind, dst, 1000, false) {
                return o;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        p.progress(kind, dst, 1000, true).unwrap_or(Outcome::Fail(Failure::NoAnswer(0)))
    }

    #[test]
    fn tcp_http_and_udp_probes_through_the_kernel_tell_pass_from_each_failure() {
        let lo = Ipv4Addr::LOCALHOST;
        let listener = TcpListener::bind((lo, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let dst = SocketAddrV4::new(lo, port);
        assert_eq!(until(KernelProbe::start(&CheckKind::Tcp, lo, dst, 1000).unwrap(), &CheckKind::Tcp, lo), Outcome::Pass);

        // The TCP probe's connection (reset by now), then an HTTP server that answers 503.
        let server = std::thread::spawn(move || {
            let _ = listener.accept().unwrap();
            let (mut c, _) = listener.accept().unwrap();
            let mut b = [0u8; 512];
            let n = c.read(&mut b).unwrap();
            assert!(String::from_utf8_lossy(&b[..n]).starts_with("GET /health HTTP/1.0\r\n"));
            c.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").unwrap();
        });
        let http = CheckKind::Http { path: "/health".into(), host: None, status_min: 200, status_max: 399 };
        assert_eq!(until(KernelProbe::start(&http, lo, dst, 1000).unwrap(), &http, lo), Outcome::Fail(Failure::HttpStatus(503)));
        server.join().unwrap();

        // Nothing listens on the port any more: refused.
        let refused = KernelProbe::start(&CheckKind::Tcp, lo, dst, 1000).map_or_else(|o| o, |p| until(p, &CheckKind::Tcp, lo));
        assert_eq!(refused, Outcome::Fail(Failure::Refused));

        let echo = UdpSocket::bind((lo, 0)).unwrap();
        let udst = SocketAddrV4::new(lo, echo.local_addr().unwrap().port());
        let udp = CheckKind::Udp { send: b"ping".to_vec(), expect: b"pong".to_vec() };
        let p = KernelProbe::start(&udp, lo, udst, 1000).unwrap();
        let mut b = [0u8; 16];
        let (_, from) = echo.recv_from(&mut b).unwrap();
        echo.send_to(b"nope", from).unwrap();
        assert_eq!(until(p, &udp, lo), Outcome::Fail(Failure::WrongReply));
        let p = KernelProbe::start(&udp, lo, udst, 1000).unwrap();
        let (_, from) = echo.recv_from(&mut b).unwrap();
        echo.send_to(b"pong!", from).unwrap();
        assert_eq!(until(p, &udp, lo), Outcome::Pass);
        let mut silent = KernelProbe::start(&udp, lo, udst, 1000).unwrap();
        assert_eq!(silent.progress(&udp, lo, 1000, true), Some(Outcome::Fail(Failure::NoAnswer(1000))));
    }
}
