//! Facts about a NIC by name: index, MAC and MTU, read once at start.

use std::ffi::CString;
use std::fmt;

/// Why a NIC cannot be used.
#[derive(Debug)]
pub enum NicError {
    /// No interface with that name in this network namespace.
    NotFound(String),
    /// Its MAC could not be read.
    NoMac(String, String),
    /// Its MTU could not be read.
    NoMtu(String, String),
}

impl fmt::Display for NicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicError::NotFound(n) => write!(f, "NIC \"{n}\" does not exist (check nics.vip_side / nics.rs_side)"),
            NicError::NoMac(n, e) => write!(f, "cannot read the MAC address of NIC \"{n}\": {e}"),
            NicError::NoMtu(n, e) => write!(f, "cannot read the MTU of NIC \"{n}\": {e}"),
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

/// MTU of `name`, from sysfs.
pub fn mtu(name: &str) -> Result<u32, NicError> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/mtu")).map_err(|e| NicError::NoMtu(name.into(), e.to_string()))?;
    text.trim().parse().map_err(|_| NicError::NoMtu(name.into(), format!("unexpected \"{}\"", text.trim().escape_debug())))
}

pub use director_config::nic::{fmt_mac, parse_mac};
