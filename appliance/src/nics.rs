//! The NICs and their roles. Roles come from the config (`nics.vip_side`, `nics.rs_side`, and
//! `management.nic`, each a name or a MAC, resolved by `director_config::nic`); without a
//! config the documented default is: the first NIC (by name) is management, the second
//! VIP-facing, the third RS-facing.

pub use director_config::nic::SystemNic as Nic;

/// Every Ethernet NIC backed by a device (not lo, not tunl0 and other virtual links), sorted
/// by name.
pub fn list() -> Vec<Nic> {
    director_config::nic::system_nics()
        .into_iter()
        .filter(|n| std::fs::read_to_string(format!("/sys/class/net/{}/type", n.name)).is_ok_and(|t| t.trim() == "1"))
        .filter(|n| std::path::Path::new(&format!("/sys/class/net/{}/device", n.name)).exists())
        .collect()
}

/// How many NICs the PCI bus shows: its network-class functions (class 0x02). A box's NICs
/// are up once this many are listed; a NIC whose driver the image lacks never comes, and the
/// boot's short settle time covers that.
pub fn on_pci_bus() -> usize {
    let Ok(dir) = std::fs::read_dir("/sys/bus/pci/devices") else { return 0 };
    dir.flatten().filter(|e| std::fs::read_to_string(e.path().join("class")).is_ok_and(|c| c.trim().starts_with("0x02"))).count()
}

/// The roles: (management, vip_side, rs_side).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
