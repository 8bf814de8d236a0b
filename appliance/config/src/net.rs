//! IPv4 addresses and subnets as the document writes them (`"198.18.0.2/24"`).

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 subnet, given by one address in it and a prefix length of 0 to 32 (checked when
/// it is made, so no mask computation can overflow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The subnet of `addr` with `prefix` bits; `None` for a prefix over 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Subnet> {
        (prefix <= 32).then_some(Subnet { addr, prefix })
    }
    /// The address it was made from (the DIP itself for the DIP's subnet).
    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }
    /// Prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }
    fn mask(self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }
    /// Network address.
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    /// Broadcast address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    /// Is `ip` inside?
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// Parse "a.b.c.d/len" (len 1 to 30: a host address on a subnet with room for others).
pub fn parse_cidr(s: &str) -> Result<Subnet, String> {
    let (a, p) = s.split_once('/').ok_or_else(|| format!("\"{s}\" needs a prefix length, e.g. \"198.18.0.2/24\""))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| format!("\"{a}\" is not an IPv4 address"))?;
    p.parse::<u8>()
        .ok()
        .filter(|p| (1..=30).contains(p))
        .and_then(|p| Subnet::new(addr, p))
        .ok_or_else(|| format!("prefix length \"{p}\" must be 1 to 30"))
}

/// Parse a unicast host address.
pub fn parse_unicast(s: &str) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = s.parse().map_err(|_| format!("\"{s}\" is not an IPv4 address"))?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(format!("{ip} is not a unicast host address"));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_never_overflow() {
        let a = Ipv4Addr::new(198, 18, 0, 2);
        assert_eq!(Subnet::new(a, 0).unwrap().network(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(Subnet::new(a, 32).unwrap().broadcast(), a);
        assert_eq!(Subnet::new(a, 24).unwrap().to_string(), "198.18.0.0/24");
        assert!(Subnet::new(a, 33).is_none());
        parse_cidr("198.18.0.2/31").unwrap_err();
        parse_cidr("198.18.0.2/255").unwrap_err();
    }
}
