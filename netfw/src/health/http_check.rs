//! One HTTP or HTTPS check's exchange over a byte pipe, whichever carries it (a smoltcp socket
//! in the prober, a kernel socket beside IPVS): the request, TLS when asked, and the status
//! line of the answer.
//!
//! TLS is rustls's client. The server's certificate is not verified: a health check asks
//! whether the server serves, not who it is (as keepalived's `SSL_GET` without a CA); the
//! handshake's signatures are still checked, so a server that does not hold its certificate's
//! key fails. The name sent (SNI) is the check's `host`, or none for an address.

use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use netfw_core::health::{Failure, Outcome};

/// Most bytes of an answer read (the status line and headers are all a check needs).
pub const HTTP_READ: usize = 4096;

/// What carries a check's bytes.
pub trait Pipe {
    /// Send what fits now; how much went (0: nothing fits yet).
    fn send(&mut self, data: &[u8]) -> Result<usize, Failure>;
    /// Receive into `buf`: `Some(n)` bytes (`Some(0)`: the other side closed), `None`: nothing yet.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Failure>;
}

/// Accepts any certificate; checks the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The one client configuration every check shares (built at the first https check).
fn tls_config() -> Option<Arc<ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Some(Arc::new(cfg))
        })
        .clone()
}

/// A check's HTTP request (`host` absent: the address probed).
pub fn request(path: &str, host: Option<&str>, dst: Ipv4Addr) -> String {
    let host = host.map_or_else(|| dst.to_string(), str::to_string);
    format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: director-health-check\r\nConnection: close\r\n\r\n")
}

/// The status of an answer once its status line is in: `Some(Ok(code))`, `Some(Err(()))` if
/// it is not HTTP, `None` while it is incomplete.
pub fn status(reply: &[u8]) -> Option<Result<u16, ()>> {
    if reply.is_empty() {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(reply) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) if r.code.is_some() => r.code.map(Ok),
        Ok(_) => None,
        Err(_) => Some(Err(())),
    }
}

/// One check's exchange, from a connected pipe to its outcome.
#[derive(Debug)]
pub struct Exchange {
    tls: Option<Box<ClientConnection>>,
    /// Bytes waiting for the pipe (the request, or TLS records).
    out: Vec<u8>,
    /// The answer so far (plain text).
    reply: Vec<u8>,
    status_min: u16,
    status_max: u16,
}

impl Exchange {
    /// An exchange of `path` (Host `host`, else `dst`), over TLS with `tls`; an outcome at
    /// once if TLS cannot even begin.
    pub fn new(tls: bool, path: &str, host: Option<&str>, dst: Ipv4Addr, status_min: u16, status_max: u16) -> Result<Exchange, Outcome> {
        let req = request(path, host, dst);
        let mut x = Exchange { tls: None, out: Vec::new(), reply: Vec::new(), status_min, status_max };
        if tls {
            let name = host
                .and_then(|h| ServerName::try_from(h.to_string()).ok())
                .unwrap_or_else(|| ServerName::IpAddress(std::net::IpAddr::V4(dst).into()));
            let mut c = tls_config().and_then(|cfg| ClientConnection::new(cfg, name).ok()).ok_or(Outcome::Fail(Failure::Tls))?;
            // Sent once the handshake is done.
            c.writer().write_all(req.as_bytes()).map_err(|_| Outcome::Fail(Failure::Tls))?;
            x.tls = Some(Box::new(c));
        } else {
            x.out = req.into_bytes();
        }
        Ok(x)
    }

    /// Move what can move; the outcome once there is one.
    pub fn step(&mut self, pipe: &mut impl Pipe) -> Option<Outcome> {
        match self.exchange(pipe) {
            Ok(Some(o)) => Some(o),
            Ok(None) => None,
            Err(f) => Some(Outcome::Fail(f)),
        }
    }

    fn flush(&mut self, pipe: &mut impl Pipe) -> Result<(), Failure> {
        if let Some(c) = self.tls.as_mut() {
            while c.wants_write() {
                c.write_tls(&mut self.out).map_err(|_| Failure::Tls)?;
            }
        }
        if !self.out.is_empty() {
            let n = pipe.send(&self.out)?;
            self.out.drain(..n.min(self.out.len()));
        }
        Ok(())
    }

    fn exchange(&mut self, pipe: &mut impl Pipe) -> Result<Option<Outcome>, Failure> {
        self.flush(pipe)?;
        let mut buf = [0u8; 2048];
        let mut closed = false;
        while self.reply.len() < HTTP_READ {
            let Some(n) = pipe.recv(&mut buf)? else { break };
            if n == 0 {
                closed = true;
                break;
            }
            let got = buf.get(..n).unwrap_or_default();
            match self.tls.as_mut() {
                None => self.reply.extend_from_slice(got),
                Some(c) => {
                    let mut rd = got;
                    while !rd.is_empty() {
                        c.read_tls(&mut rd).map_err(|_| Failure::Tls)?;
                        c.process_new_packets().map_err(|_| Failure::Tls)?;
                    }
                    let mut plain = [0u8; 2048];
                    loop {
                        match c.reader().read(&mut plain) {
                            Ok(0) => {
                                closed = true;
                                break;
                            }
                            Ok(k) => self.reply.extend_from_slice(plain.get(..k).unwrap_or_default()),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                }
            }
        }
        // Handshake answers, and the request once the handshake is done.
        self.flush(pipe)?;
        if let Some(code) = status(&self.reply) {
            return Ok(Some(match code {
                Ok(c) if (self.status_min..=self.status_max).contains(&c) => Outcome::Pass,
                Ok(c) => Outcome::Fail(Failure::HttpStatus(c)),
                Err(()) => Outcome::Fail(Failure::NotHttp),
            }));
        }
        if closed || self.reply.len() >= HTTP_READ {
            let handshaking = self.tls.as_ref().is_some_and(|c| c.is_handshaking());
            return Ok(Some(Outcome::Fail(if handshaking {
                Failure::Tls
            } else if self.reply.is_empty() {
                Failure::Closed
            } else {
                Failure::NotHttp
            })));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_as_soon_as_its_status_line_is_in() {
        assert_eq!(status(b""), None);
        assert_eq!(status(b"HTTP/1.0 20"), None);
        assert_eq!(status(b"HTTP/1.0 200 OK\r\n"), Some(Ok(200)));
        assert_eq!(status(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"), Some(Ok(503)));
        assert_eq!(status(b"SSH-2.0-OpenSSH_9.2\r\n"), Some(Err(())));
    }
}
