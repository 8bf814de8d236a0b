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

/// How many NICs the PCI bus shows: among the devices' modaliases (`modules::present_pci`),
/// the network-class functions (base class 0x02, `bc02`). A box's NICs are up once this many
/// are listed; a NIC whose driver the image lacks never comes, and the boot's short settle
/// time covers that.
pub fn network_functions(pci: &[String]) -> usize {
    // `pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X`: the field names are lower case, the hex
    // digits upper case, so `bc` names the base class.
    pci.iter().filter(|m| m.split_once("bc").is_some_and(|(_, rest)| rest.starts_with("02"))).count()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_functions_are_counted_by_their_base_class() {
        let pci = [
            "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00", // virtio-net
            "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00", // e1000e
            "pci:v00008086d000025ABsv00001AF4sd00001100bc08sc80i00", // i6300esb watchdog
            "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00", // virtio-blk
            "pci:v00008086d00002918sv00001AF4sd00001100bc06sc01i00", // ICH9 LPC
        ]
        .map(String::from);
        assert_eq!(network_functions(&pci), 2);
        assert_eq!(network_functions(&[]), 0);
        assert_eq!(network_functions(&["garbage".to_string(), "bc".to_string()]), 0);
    }
}
