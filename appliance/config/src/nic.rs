//! NIC references: the document names a NIC by its interface name (`eth1`) or by its MAC
//! (`52:54:00:12:34:56`, which survives renaming and reordering). One validator says what a
//! reference may be; one resolver turns references into the names the kernel uses. The init
//! and netfw both resolve with it, so the console, the API and `netfw` accept the same things.

use std::fmt;

/// A NIC as the document refers to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicRef {
    /// An interface name.
    Name(String),
    /// A MAC address.
    Mac([u8; 6]),
}

/// Parse "aa:bb:cc:dd:ee:ff" (either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Format a MAC as "aa:bb:cc:dd:ee:ff".
pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// True if `s` holds a control character (ESC and its kind must never reach a console).
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

impl NicRef {
    /// Parse a reference: a MAC, else an interface name the kernel would accept.
    pub fn parse(s: &str) -> Result<NicRef, String> {
        if let Some(m) = parse_mac(s) {
            return Ok(NicRef::Mac(m));
        }
        let shown = s.escape_debug();
        if s.is_empty() {
            Err("a NIC name or MAC address is required".into())
        } else if has_control(s) {
            Err(format!("\"{shown}\" contains control characters; a NIC is named by its interface name or its MAC"))
        } else if s.len() > 15 {
            Err(format!("\"{shown}\" is longer than 15 characters, the kernel's limit for an interface name (or give its MAC)"))
        } else if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) || s == "." || s == ".." {
            Err(format!("\"{shown}\" is neither an interface name nor a MAC address (aa:bb:cc:dd:ee:ff)"))
        } else {
            Ok(NicRef::Name(s.to_string()))
        }
    }

    /// Does it refer to the NIC called `name` with MAC `mac`?
    pub fn matches(&self, name: &str, mac: &str) -> bool {
        match self {
            NicRef::Name(n) => n == name,
            NicRef::Mac(m) => parse_mac(mac) == Some(*m),
        }
    }
}

impl fmt::Display for NicRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicRef::Name(n) => f.write_str(n),
            NicRef::Mac(m) => f.write_str(&fmt_mac(m)),
        }
    }
}

/// A NIC the system has: its name and MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemNic {
    /// Interface name.
    pub name: String,
    /// MAC address, as sysfs writes it.
    pub mac: String,
}

/// Every NIC of this network namespace with its MAC (from sysfs), sorted by name.
pub fn system_nics() -> Vec<SystemNic> {
    let mut v: Vec<SystemNic> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .map(|name| SystemNic {
                    mac: std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap_or_default().trim().to_string(),
                    name,
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The interface name a reference means among `nics`, or why there is none.
pub fn resolve(nics: &[SystemNic], reference: &str) -> Result<String, String> {
    let r = NicRef::parse(reference)?;
    nics.iter().find(|n| r.matches(&n.name, &n.mac)).map(|n| n.name.clone()).ok_or_else(|| format!("no NIC named or with MAC {r}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_are_references_and_nothing_else_is() {
        assert_eq!(NicRef::parse("eth1"), Ok(NicRef::Name("eth1".into())));
        assert_eq!(NicRef::parse("52:54:00:AB:cd:01"), Ok(NicRef::Mac([0x52, 0x54, 0, 0xab, 0xcd, 1])));
        for bad in ["", "eth1 ", "a/b", "x:y", "averyveryverylongname", "eth\u{1b}[2J", ".."] {
            assert!(NicRef::parse(bad).is_err(), "{bad:?}");
        }
        let e = NicRef::parse("eth\u{1b}[2J").unwrap_err();
        assert!(!has_control(&e), "the message itself carries no control character: {e:?}");
    }

    #[test]
    fn one_resolver_for_names_and_macs() {
        let nics = vec![
            SystemNic { name: "eth0".into(), mac: "02:00:00:00:d0:00".into() },
            SystemNic { name: "eth1".into(), mac: "02:00:00:00:d0:01".into() },
        ];
        assert_eq!(resolve(&nics, "eth1").unwrap(), "eth1");
        assert_eq!(resolve(&nics, "02:00:00:00:D0:01").unwrap(), "eth1");
        assert!(resolve(&nics, "eth9").unwrap_err().contains("no NIC named or with MAC eth9"));
    }
}
