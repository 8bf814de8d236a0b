//! The management NIC's address when the config gives none: DHCP (dhcproto for the wire
//! format), and while no server answers, a link-local fallback derived from the MAC
//! (169.254.x.y/16, RFC 3927's range) so the box is still reachable from a laptop plugged
//! into it. DHCP keeps being retried every 30 s; a lease replaces the fallback and is renewed
//! at half its lifetime.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use crate::log;
use netfw_kernel::rtnl;

/// A lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway, if offered.
    pub router: Option<Ipv4Addr>,
    /// The server.
    pub server: Ipv4Addr,
    /// Lifetime.
    pub lease_s: u32,
}

/// The fallback address for a MAC: 169.254.(m4 % 254 + 1).(m5 % 254 + 1)/16.
pub fn link_local(mac: &str) -> Ipv4Addr {
    let b: Vec<u8> = mac.split(':').filter_map(|x| u8::from_str_radix(x, 16).ok()).collect();
    let (x, y) = (b.get(4).copied().unwrap_or(0), b.get(5).copied().unwrap_or(0));
    Ipv4Addr::new(169, 254, x % 254 + 1, y % 254 + 1)
}

fn socket(nic: &str) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind("0.0.0.0:68").map_err(|e| format!("DHCP socket: {e}"))?;
    s.set_broadcast(true).map_err(|e| e.to_string())?;
    let name = nic.as_bytes();
    let len = libc::socklen_t::try_from(name.len()).unwrap_or(0);
    // SAFETY: `name` points to `len` bytes of the interface name.
    let r = unsafe { libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BINDTODEVICE, name.as_ptr().cast(), len) };
    if r != 0 {
        return Err(format!("DHCP socket on {nic}: {}", std::io::Error::last_os_error()));
    }
    Ok(s)
}

fn mac_bytes(mac: &str) -> Vec<u8> {
    mac.split(':').filter_map(|x| u8::from_str_radix(x, 16).ok()).collect()
}

fn send(s: &UdpSocket, msg: &Message) -> Result<(), String> {
    let bytes = msg.to_vec().map_err(|e| format!("DHCP encode: {e}"))?;
    s.send_to(&bytes, (Ipv4Addr::BROADCAST, 67)).map(|_| ()).map_err(|e| format!("DHCP send: {e}"))
}

fn recv(s: &UdpSocket, xid: u32, want: MessageType, until: Instant) -> Option<Message> {
    let mut buf = [0u8; 1500];
    while Instant::now() < until {
        let _ = s.set_read_timeout(Some(until.saturating_duration_since(Instant::now()).max(Duration::from_millis(10))));
        let Ok(n) = s.recv(&mut buf) else { continue };
        // A malformed reply is ignored, never fatal.
        let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else { continue };
        if m.xid() == xid && m.opts().msg_type() == Some(want) {
            return Some(m);
        }
        if m.xid() == xid && m.opts().msg_type() == Some(MessageType::Nak) {
            return None;
        }
    }
    None
}

/// A BOOTREQUEST for `mac`. Built by decoding a fixed header rather than with
/// `Message::new_with_id`, whose `..Default::default()` draws `rand::random()`: that blocks in
/// getrandom() until the kernel's RNG is seeded, which on a VM without a hardware RNG can take
/// minutes, and PID 1 must not hang at boot.
fn new_message(mac: &[u8], xid: u32, kind: MessageType) -> Result<Message, String> {
    let mut raw = [0u8; 241];
    raw[0] = 1; // BOOTREQUEST
    raw[1] = 1; // Ethernet
    raw[2] = 6; // hardware address length
    raw[4..8].copy_from_slice(&xid.to_be_bytes());
    raw[10] = 0x80; // broadcast flag: the server answers by broadcast (we have no address yet)
    for (d, b) in raw[28..34].iter_mut().zip(mac) {
        *d = *b;
    }
    raw[236..240].copy_from_slice(&[99, 130, 83, 99]); // magic cookie
    raw[240] = 255; // end of options
    let mut m = Message::decode(&mut Decoder::new(&raw)).map_err(|e| format!("DHCP template: {e}"))?;
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![OptionCode::SubnetMask, OptionCode::Router]));
    Ok(m)
}

/// One DISCOVER/OFFER/REQUEST/ACK exchange on `nic`, within `budget`.
pub fn acquire(nic: &str, mac: &str, budget: Duration) -> Result<Lease, String> {
    log::line("dhcp", &format!("asking for an address on {nic}"));
    let s = socket(nic)?;
    let mac = mac_bytes(mac);
    let until = Instant::now() + budget;
    let xid = u32::from_ne_bytes([
        mac.get(2).copied().unwrap_or(0),
        mac.get(3).copied().unwrap_or(0),
        mac.get(4).copied().unwrap_or(0),
        mac.get(5).copied().unwrap_or(0),
    ]) ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    send(&s, &new_message(&mac, xid, MessageType::Discover)?)?;
    let offer = recv(&s, xid, MessageType::Offer, until).ok_or("no DHCP offer")?;
    let server = match offer.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => return Err("DHCP offer without a server identifier".into()),
    };
    let mut req = new_message(&mac, xid, MessageType::Request)?;
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    req.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    send(&s, &req)?;
    let ack = recv(&s, xid, MessageType::Ack, until).ok_or("no DHCP acknowledgement")?;
    let prefix = match ack.opts().get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => u8::try_from(u32::from(*m).count_ones()).unwrap_or(24),
        _ => 24,
    };
    let router = match ack.opts().get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let lease_s = match ack.opts().get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => 3600,
    };
    Ok(Lease { addr: ack.yiaddr(), prefix, router, server, lease_s })
}

fn apply(nic: &str, l: &Lease) -> Result<(), String> {
    rtnl::add_address(nic, l.addr, l.prefix).map_err(|e| e.to_string())?;
    if let Some(gw) = l.router {
        rtnl::set_default_route(gw).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Configure `nic` by DHCP: try for `first_budget` now; on failure use the link-local
/// fallback and keep trying in the background. Returns what the banner should say.
pub fn start(nic: String, mac: String, first_budget: Duration) -> String {
    match acquire(&nic, &mac, first_budget).and_then(|l| apply(&nic, &l).map(|()| l)) {
        Ok(l) => {
            let said = format!("{}/{} (DHCP from {}, lease {} s)", l.addr, l.prefix, l.server, l.lease_s);
            std::thread::spawn(move || keep(nic, mac, Some(l)));
            said
        }
        Err(e) => {
            let ll = link_local(&mac);
            let applied = rtnl::add_address(&nic, ll, 16);
            let said = match applied {
                Ok(()) => format!("{ll}/16 (link-local fallback: {e}; DHCP retried every 30 s)"),
                Err(e2) => format!("none ({e}; fallback failed: {e2})"),
            };
            std::thread::spawn(move || keep(nic, mac, None));
            said
        }
    }
}

/// Renew a lease at half its life; without one, retry every 30 s.
fn keep(nic: String, mac: String, mut lease: Option<Lease>) {
    let fallback = link_local(&mac);
    loop {
        let wait = lease.map_or(30, |l| (l.lease_s / 2).max(10));
        std::thread::sleep(Duration::from_secs(u64::from(wait)));
        match acquire(&nic, &mac, Duration::from_secs(5)) {
            Ok(l) => {
                if lease.is_none_or(|old| old.addr != l.addr) {
                    if let Err(e) = apply(&nic, &l) {
                        log::line("dhcp", &e);
                        continue;
                    }
                    if let Some(old) = lease {
                        let _ = rtnl::del_address(&nic, old.addr, old.prefix);
                    } else {
                        let _ = rtnl::del_address(&nic, fallback, 16);
                    }
                    log::line(
                        "dhcp",
                        &format!("management address {}/{} on {nic} (DHCP from {}, lease {} s)", l.addr, l.prefix, l.server, l.lease_s),
                    );
                }
                lease = Some(l);
            }
            Err(e) => {
                if lease.is_some() {
                    log::line("dhcp", &format!("renewal failed on {nic}: {e}; keeping the address until it expires"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_built_without_blocking_randomness_and_round_trip() {
        let m = new_message(&[2, 0, 0, 0, 0xd0, 0], 0x1234_5678, MessageType::Discover).unwrap();
        assert_eq!(m.xid(), 0x1234_5678);
        assert_eq!(&m.chaddr()[..6], &[2, 0, 0, 0, 0xd0, 0]);
        assert!(m.flags().broadcast());
        let bytes = m.to_vec().unwrap();
        let back = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(back.opts().msg_type(), Some(MessageType::Discover));
    }

    #[test]
    fn link_local_fallback_is_stable_and_never_network_or_broadcast() {
        assert_eq!(link_local("02:00:00:00:d0:00"), Ipv4Addr::new(169, 254, 209, 1));
        assert_eq!(link_local("02:00:00:00:ff:fe"), Ipv4Addr::new(169, 254, 2, 1));
        assert_eq!(link_local("02:00:00:00:00:00"), link_local("02:00:00:00:00:00"));
    }
}
