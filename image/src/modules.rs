//! Which kernel modules go into the image: the closure of what the appliance needs, by the
//! package's own dependency data (`modules.dep`) plus soft dependencies (`modules.softdep`,
//! resolved through `modules.alias`): `libcrc32c` needs `crc32c`, which `modules.dep` does not
//! list and which is an alias of `crc32c_generic`/`crc32c_intel`. Nothing else goes in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::BuildError;

/// What the appliance needs, by module name.
pub const WANTED: &[&str] = &[
    // virtio (QEMU): PCI transport, NIC, disk
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    // bare-metal NICs
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "ice",
    "mlx5_core",
    // IPVS and its schedulers, IPIP for TUN mode
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_sh",
    "ip_vs_mh",
    "ip_vs_sed",
    "ip_vs_nq",
    "ipip",
    // an HA pair in ipvs mode: the VIPs on a macvlan with the virtual MAC
    "macvlan",
    // the forwarder's tc path: the clsact qdisc and the bpf classifier
    "sch_ingress",
    "cls_bpf",
    // the config partition (FAT) and its code pages
    "vfat",
    "nls_cp437",
    "nls_utf8",
    "nls_iso8859_1",
    // the ACPI power button, as an input device
    "button",
    "evdev",
    // the hardware watchdog that resets a trial system that hangs (i6300esb in QEMU; iTCO on
    // Intel boards)
    "i6300esb",
    "iTCO_wdt",
    // entropy from the hypervisor in VMs (bare metal has RDRAND): seeds the kernel's RNG early
    "virtio_rng",
];

/// Module name of a path in modules.dep (`kernel/…/virtio_net.ko` → `virtio_net`).
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The dependency data of one kernel.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// name → (path, hard dependencies by name)
    pub deps: BTreeMap<String, (String, Vec<String>)>,
    /// name → soft pre-dependencies (names or aliases)
    pub softdeps: BTreeMap<String, Vec<String>>,
    /// alias → module names
    pub aliases: BTreeMap<String, Vec<String>>,
    /// built into the kernel image
    pub builtin: BTreeSet<String>,
}

fn read(dir: &Path, file: &str) -> Result<String, BuildError> {
    let p = dir.join(file);
    std::fs::read_to_string(&p).map_err(|e| BuildError::io(&p, e))
}

impl ModuleIndex {
    /// Read `modules.dep`, `modules.softdep`, `modules.alias`, `modules.builtin`.
    pub fn load(dir: &Path) -> Result<ModuleIndex, BuildError> {
        let mut ix = ModuleIndex::default();
        for line in read(dir, "modules.dep")?.lines() {
            let Some((path, deps)) = line.split_once(':') else { continue };
            ix.deps.insert(name_of(path), (path.to_string(), deps.split_whitespace().map(name_of).collect()));
        }
        for line in read(dir, "modules.softdep")?.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(m) = w.next() else { continue };
            let mut pre = Vec::new();
            let mut in_pre = false;
            for x in w {
                match x {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    other if in_pre => pre.push(other.to_string()),
                    _ => {}
                }
            }
            ix.softdeps.entry(m.replace('-', "_")).or_default().extend(pre);
        }
        for line in read(dir, "modules.alias")?.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(a), Some(m)) = (w.next(), w.next(), w.next()) {
                ix.aliases.entry(a.to_string()).or_default().push(m.replace('-', "_"));
            }
        }
        ix.builtin = read(dir, "modules.builtin")?.lines().map(name_of).collect();
        Ok(ix)
    }

    /// Resolve a name or alias to module names.
    fn resolve(&self, name: &str) -> Vec<String> {
        let n = name.replace('-', "_");
        if self.deps.contains_key(&n) || self.builtin.contains(&n) {
            return vec![n];
        }
        self.aliases.get(name).cloned().unwrap_or_default()
    }

    /// The closure of `wanted`, in load order (dependencies first). Built-in modules are
    /// skipped. A wanted module that exists nowhere is an error.
    pub fn closure(&self, wanted: &[&str]) -> Result<Vec<(String, String)>, BuildError> {
        let mut order: Vec<(String, String)> = Vec::new();
        let mut seen = BTreeSet::new();
        for w in wanted {
            let names = self.resolve(w);
            if names.is_empty() {
                return Err(BuildError::Module(format!("module {w} is neither in modules.dep nor built in")));
            }
            for n in names {
                self.visit(&n, &mut seen, &mut order);
            }
        }
        Ok(order)
    }

    /// The plan the init loads modules by (`lib/modules/index`): one `module NAME wanted|needed`
    /// line per module in load order, `needs NAME DEP…` with everything it needs loaded first
    /// (soft dependencies included), and `pci NAME PATTERN` for each PCI device a driver among
    /// the wanted binds to. The init loads a wanted PCI driver only when such a device is
    /// present, and a needed module only when something it loads needs it: a VM does not pay
    /// for ten megabytes of bare-metal NIC drivers at every boot.
    pub fn plan(&self, wanted: &[&str]) -> Result<String, BuildError> {
        let order = self.closure(wanted)?;
        let roots: BTreeSet<String> = wanted.iter().flat_map(|w| self.resolve(w)).collect();
        let mut patterns: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (alias, names) in &self.aliases {
            if alias.starts_with("pci:") {
                for n in names.iter().filter(|n| roots.contains(*n)) {
                    patterns.entry(n.as_str()).or_default().push(alias.as_str());
                }
            }
        }
        let mut out = String::from("# the init's module plan, written by the image build (image/src/modules.rs)\n");
        for (name, _) in &order {
            let kind = if roots.contains(name) { "wanted" } else { "needed" };
            out.push_str(&format!("module {name} {kind}\n"));
            let mut seen = BTreeSet::new();
            let mut needs = Vec::new();
            self.visit(name, &mut seen, &mut needs);
            let needs: Vec<&str> = needs.iter().map(|(n, _)| n.as_str()).filter(|n| n != name).collect();
            if !needs.is_empty() {
                out.push_str(&format!("needs {name} {}\n", needs.join(" ")));
            }
            for p in patterns.get(name.as_str()).into_iter().flatten() {
                out.push_str(&format!("pci {name} {p}\n"));
            }
        }
        Ok(out)
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<(String, String)>) {
        if !seen.insert(name.to_string()) || self.builtin.contains(name) {
            return;
        }
        for soft in self.softdeps.get(name).into_iter().flatten() {
            for n in self.resolve(soft) {
                self.visit(&n, seen, order);
            }
        }
        if let Some((path, deps)) = self.deps.get(name) {
            // modules.dep lists the full transitive closure; visiting keeps the order right.
            for d in deps.iter().rev() {
                self.visit(d, seen, order);
            }
            order.push((name.to_string(), path.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_dependencies_come_through_aliases_and_before_their_user() {
        let dir = std::env::temp_dir().join(format!("modix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modules.dep"), "kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\nkernel/lib/libcrc32c.ko:\nkernel/crypto/crc32c_generic.ko:\nkernel/arch/x86/crypto/crc32c-intel.ko:\n").unwrap();
        std::fs::write(dir.join("modules.softdep"), "# soft\nsoftdep libcrc32c pre: crc32c\n").unwrap();
        std::fs::write(dir.join("modules.alias"), "alias crc32c crc32c_intel\nalias crc32c crc32c_generic\n").unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let ix = ModuleIndex::load(&dir).unwrap();
        let order: Vec<String> = ix.closure(&["xfs", "ext4"]).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(order, vec!["crc32c_intel", "crc32c_generic", "libcrc32c", "xfs"]);
        let plan = ix.plan(&["xfs"]).unwrap();
        assert!(plan.contains("module libcrc32c needed\nneeds libcrc32c crc32c_intel crc32c_generic\n"), "{plan}");
        assert!(plan.contains("module xfs wanted\nneeds xfs crc32c_intel crc32c_generic libcrc32c\n"), "{plan}");
        std::fs::write(dir.join("modules.alias"), "alias crc32c crc32c_intel\nalias crc32c crc32c_generic\nalias pci:v00008086d000010D3sv*sd*bc*sc*i* xfs\nalias pci:v00008086d*sv*sd*bc*sc*i* libcrc32c\n").unwrap();
        let ix = ModuleIndex::load(&dir).unwrap();
        let plan = ix.plan(&["xfs"]).unwrap();
        // the wanted driver's devices are in the plan; a needed module's are not (it loads
        // because its user does)
        assert!(plan.contains("pci xfs pci:v00008086d000010D3sv*sd*bc*sc*i*\n"), "{plan}");
        assert!(!plan.contains("pci libcrc32c"), "{plan}");
        let e = ix.closure(&["nonexistent"]).unwrap_err();
        assert!(e.to_string().contains("nonexistent"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
