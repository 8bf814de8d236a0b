//! Facts about a NIC by name: index and MAC, read once at start.

use std::ffi::CString;
use std::fmt;

/// Why a NIC cannot be used.
#[derive(Debug)]
pub enum NicError {
    /// No interface with that name in this network namespace.
    NotFound(String),
    /// Its MAC could not be read.
    NoMac(String, String),
}

impl fmt::Display for NicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicError::NotFound(n) => write!(f, "NIC \"{n}\" does not exist (check nics.vip_side / nics.rs_side)"),
            NicError::NoMac(n, e) => write!(f, "cannot read the MAC address of NIC \"{n}\": {e}"),
        }
    }
}

impl std::error::Error for NicError {}

/// Interface index of `name`.
pub fn ifindex(name: &str) -> Result<i32, NicError> {
    let c = CString::new(name).map_err(|_| NicError::NotFound(name.into()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    i32::try_from(idx).ok().filter(|i| *i > 0).ok_or_else(|| NicError::NotFound(name.into()))
}

/// MAC address of `name`, from sysfs.
pub fn nic_mac(name: &str) -> Result<[u8; 6], NicError> {
    let text =
        std::fs::read_to_string(format!("/sys/class/net/{name}/address")).map_err(|e| NicError::NoMac(name.into(), e.to_string()))?;
    parse_mac(text.trim()).ok_or_else(|| NicError::NoMac(name.into(), format!("unexpected \"{}\"", text.trim())))
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Format a MAC.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}
