//! The NICs and their roles. Roles come from the config (`nics.vip_side`, `nics.rs_side`, and
//! `management.nic`, by name or by MAC); without a config the documented default is: the
//! first NIC (by name) is management, the second VIP-facing, the third RS-facing.

/// A NIC as the kernel names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// MAC address.
    pub mac: String,
}

/// Every Ethernet NIC backed by a device (not lo, not tunl0 and other virtual links), sorted
/// by name.
pub fn list() -> Vec<Nic> {
    let mut v: Vec<Nic> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| std::fs::read_to_string(format!("/sys/class/net/{n}/type")).is_ok_and(|t| t.trim() == "1"))
                .filter(|n| std::path::Path::new(&format!("/sys/class/net/{n}/device")).exists())
                .map(|name| Nic { mac: std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap_or_default().trim().to_string(), name })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Resolve a config's NIC reference (a name, or a MAC) to an interface name.
pub fn resolve(nics: &[Nic], reference: &str) -> Option<String> {
    nics.iter().find(|n| n.name == reference || n.mac.eq_ignore_ascii_case(reference)).map(|n| n.name.clone())
}

/// The roles: (management, vip_side, rs_side).
#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// Management NIC.
    pub management: Option<String>,
    /// VIP-facing NIC.
    pub vip_side: Option<String>,
    /// RS-facing NIC.
    pub rs_side: Option<String>,
}

/// The default roles when there is no config.
pub fn default_roles(nics: &[Nic]) -> Roles {
    Roles { management: nics.first().map(|n| n.name.clone()), vip_side: nics.get(1).map(|n| n.name.clone()), rs_side: nics.get(2).map(|n| n.name.clone()) }
}

/// Bring a link up (by sysfs-free ioctl-free means: through `ip`-less netlink is not needed
/// for this; SIOCSIFFLAGS).
pub fn set_up(name: &str) -> Result<(), String> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: an all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: `ifr` is a valid ifreq; SIOCGIFFLAGS fills the flags.
    let mut r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) };
    if r == 0 {
        // SAFETY: reading the union member SIOCGIFFLAGS just wrote.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: as above, setting the flags.
        r = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) };
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!("{name}: {err}"))
    }
}
