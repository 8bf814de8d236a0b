//! Remote syslog: each event as an RFC 5424 message to the configured server, over UDP (one
//! datagram each, RFC 5426) or TCP (octet counting, RFC 6587), from a thread of its own. The
//! queue to it is bounded: a slow or absent log server never slows the init, and what does
//! not fit is counted and said once the server takes messages again.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use director_config::observe::{SyslogProtocol, SyslogTarget};
use director_messages::events::LogEvent;

/// Messages waiting for the sender at most.
const QUEUE: usize = 512;

/// "2026-11-22T10:00:01.234Z" (RFC 3339, UTC, milliseconds).
fn timestamp(unix_ms: u64) -> String {
    // "2026-11-22 10:00:01 UTC" from the status module, reshaped.
    let day_time = director_messages::status::utc(unix_ms);
    let mut parts = day_time.split(' ');
    let (d, t) = (parts.next().unwrap_or("1970-01-01"), parts.next().unwrap_or("00:00:00"));
    format!("{d}T{t}.{:03}Z", unix_ms % 1000)
}

/// A header field: printable US-ASCII without spaces, at most `max`, "-" if empty.
fn field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// One event as an RFC 5424 message (without framing).
pub fn format(e: &LogEvent, facility: u8, hostname: &str) -> String {
    let pri = u16::from(facility) * 8 + u16::from(e.severity.code());
    let msg: String = e.message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    format!("<{pri}>1 {} {} director - {} - {msg}", timestamp(e.at_unix_ms), field(hostname, 255), field(e.kind.name(), 32))
}

/// Where messages go now; replaced when the config changes.
#[derive(Debug)]
pub struct Sender {
    tx: SyncSender<String>,
    target: SyslogTarget,
    hostname: String,
}

impl Sender {
    /// Start sending to `target` as `hostname`.
    pub fn start(target: SyslogTarget, hostname: &str) -> Sender {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::spawn(move || run(&target, &rx));
        Sender { tx, target, hostname: hostname.to_string() }
    }

    /// Whether it sends where `target` says, as `hostname`.
    pub fn same(&self, target: &SyslogTarget, hostname: &str) -> bool {
        self.target == *target && self.hostname == hostname
    }

    /// Queue one event; false if the queue is full (the caller counts it).
    pub fn send(&self, e: &LogEvent) -> bool {
        !matches!(self.tx.try_send(format(e, self.target.facility, &self.hostname)), Err(TrySendError::Full(_)))
    }
}

/// The sender thread: ends when its `Sender` is dropped (the config changed or lost syslog).
fn run(target: &SyslogTarget, rx: &Receiver<String>) {
    let to = SocketAddr::from((target.server, target.port));
    let mut tcp: Option<TcpStream> = None;
    let udp = UdpSocket::bind(("0.0.0.0", 0)).ok();
    for msg in rx {
        match target.protocol {
            SyslogProtocol::Udp => {
                if let Some(u) = &udp {
                    let _ = u.send_to(msg.as_bytes(), to);
                }
            }
            SyslogProtocol::Tcp => {
                let framed = format!("{} {msg}", msg.len());
                // One reconnect per message: a server that went away is found again.
                for _ in 0..2 {
                    if tcp.is_none() {
                        tcp = TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok();
                        if let Some(s) = &tcp {
                            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                        }
                    }
                    match tcp.as_mut().map(|s| s.write_all(framed.as_bytes())) {
                        Some(Ok(())) => break,
                        _ => tcp = None,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use director_messages::events::{EventKind, Severity};

    #[test]
    fn events_become_rfc5424_messages() {
        let e = LogEvent {
            seq: 1,
            at_unix_ms: 1_795_000_000_123,
            kind: EventKind::Health,
            severity: Severity::Warning,
            message: "tcp 203.0.113.10:80 198.18.0.11 up -> down: connection refused\nnext".into(),
        };
        let m = format(&e, 16, "director a");
        // local0 (16) * 8 + warning (4) = 132; the host name loses its space; no newline.
        assert_eq!(m, "<132>1 2026-11-18T11:06:40.123Z directora director - health - tcp 203.0.113.10:80 198.18.0.11 up -> down: connection refused next");
    }

    #[test]
    fn tcp_messages_are_octet_counted() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let s =
            Sender::start(SyslogTarget { server: std::net::Ipv4Addr::LOCALHOST, port, protocol: SyslogProtocol::Tcp, facility: 3 }, "box");
        let e = LogEvent { seq: 1, at_unix_ms: 0, kind: EventKind::Login, severity: Severity::Info, message: "logged in".into() };
        assert!(s.send(&e) && s.send(&e));
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let want = format(&e, 3, "box");
        let mut got = vec![0u8; 2 * (want.len() + format!("{} ", want.len()).len())];
        std::io::Read::read_exact(&mut c, &mut got).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), format!("{} {want}{} {want}", want.len(), want.len()));
    }
}
