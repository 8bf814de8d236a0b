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
                .map(|name| Nic {
                    mac: std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap_or_default().trim().to_string(),
                    name,
                })
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
    Roles {
        management: nics.first().map(|n| n.name.clone()),
        vip_side: nics.get(1).map(|n| n.name.clone()),
        rs_side: nics.get(2).map(|n| n.name.clone()),
    }
}
