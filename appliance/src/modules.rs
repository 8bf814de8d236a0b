//! Which kernel modules this box loads, by the plan the image build wrote
//! (`/lib/modules/index`, see `image/src/modules.rs`): every wanted module in load order,
//! except a PCI driver whose devices are not in this box (a VM does not load ten megabytes of
//! bare-metal NIC drivers at every boot); a module only needed by others loads when one of
//! them does. Without a plan (the file missing), everything in `load-order` loads.

use std::collections::{BTreeMap, BTreeSet};

/// The plan as read from the index.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (name, wanted for itself) in load order
    pub modules: Vec<(String, bool)>,
    /// name → modules it needs loaded first
    pub needs: BTreeMap<String, Vec<String>>,
    /// name → the PCI modalias patterns of the devices it drives
    pub pci: BTreeMap<String, Vec<String>>,
    /// lines not understood (counted, not fatal: the rest of the plan still holds)
    pub bad_lines: usize,
}

impl Plan {
    /// Parse the index text. Never fails: a line it cannot read is counted.
    pub fn parse(text: &str) -> Plan {
        let mut plan = Plan::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("module"), Some(name), Some(kind @ ("wanted" | "needed"))) if w.next().is_none() => {
                    plan.modules.push((name.to_string(), kind == "wanted"));
                }
                (Some("needs"), Some(name), Some(first)) => {
                    let list = std::iter::once(first).chain(w).map(str::to_string);
                    plan.needs.entry(name.to_string()).or_default().extend(list);
                }
                (Some("pci"), Some(name), Some(pattern)) if w.next().is_none() => {
                    plan.pci.entry(name.to_string()).or_default().push(pattern.to_string());
                }
                _ => plan.bad_lines += 1,
            }
        }
        plan
    }

    /// What to load given the present devices' PCI modaliases: (the modules in load order,
    /// the wanted drivers left out for want of their hardware).
    pub fn choose(&self, present: &[String]) -> (Vec<String>, Vec<String>) {
        let mut chosen = BTreeSet::new();
        let mut absent = Vec::new();
        for (name, wanted) in &self.modules {
            if !wanted {
                continue;
            }
            match self.pci.get(name) {
                Some(patterns) if !present.iter().any(|d| patterns.iter().any(|p| glob(p, d))) => absent.push(name.clone()),
                _ => {
                    chosen.insert(name.as_str());
                    chosen.extend(self.needs.get(name).into_iter().flatten().map(String::as_str));
                }
            }
        }
        let load = self.modules.iter().map(|(n, _)| n).filter(|n| chosen.contains(n.as_str())).cloned().collect();
        (load, absent)
    }
}

/// The PCI devices' modaliases (`/sys/bus/pci/devices/*/modalias`).
pub fn present_pci() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/bus/pci/devices") else { return Vec::new() };
    dir.flatten().filter_map(|e| std::fs::read_to_string(e.path().join("modalias")).ok()).map(|s| s.trim().to_string()).collect()
}

/// Shell-style match as modules.alias uses it: `*`, `?` and `[...]` classes.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // Iterative matching with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => class(p, pi, t[ti]),
            Some(&c) if c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether `c` is in the class opening at `p[at] == '['`: the index after the class if so. An
/// unclosed class matches nothing.
fn class(p: &[u8], at: usize, c: u8) -> Option<usize> {
    let mut i = at + 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while let Some(&x) = p.get(i) {
        if x == b']' && !first {
            return (hit != negate).then_some(i + 1);
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&y| y != b']') {
            hit |= (x..=p[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= x == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_modalias_patterns_do() {
        let d = "pci:v00008086d000025ABsv00001AF4sd00001100bc08sc80i00";
        assert!(glob("pci:v00008086d000025ABsv*sd*bc*sc*i*", d));
        assert!(!glob("pci:v00008086d000010D3sv*sd*bc*sc*i*", d));
        assert!(glob("pci:v*d*sv*sd*bc08sc80i*", d));
        assert!(glob("pci:v00008086d000025A[0-F]sv*", &d[..29]));
        assert!(!glob("pci:v00008086d000025A[!B]sv*", &d[..29]));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", "") && glob("a*", "a") && !glob("a", "ab") && !glob("ab", "a"));
        // an unclosed class matches nothing, and nothing panics
        assert!(!glob("a[bc", "ab"));
        assert!(!glob("[", "x") && !glob("[]", "]"));
    }

    const INDEX: &str = "# plan\n\
        module virtio virtio_ring wanted\n\
        module ptp needed\n\
        module e1000e wanted\n\
        needs e1000e ptp\n\
        pci e1000e pci:v00008086d000010D3sv*sd*bc*sc*i*\n\
        module virtio_pci wanted\n\
        pci virtio_pci pci:v00001AF4d*sv*sd*bc*sc*i*\n\
        module watchdog needed\n\
        module iTCO_wdt wanted\n\
        needs iTCO_wdt watchdog\n\
        module i6300esb wanted\n\
        needs i6300esb watchdog\n\
        pci i6300esb pci:v00008086d000025ABsv*sd*bc*sc*i*\n\
        garbage here\n";

    #[test]
    fn drivers_load_only_for_present_devices_and_what_they_need_with_them() {
        let plan = Plan::parse(INDEX);
        // the first module line has a word too many: it and the garbage are counted
        assert_eq!(plan.bad_lines, 2);
        let vm = ["pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00".to_string()];
        let (load, absent) = plan.choose(&vm);
        assert_eq!(load, ["virtio_pci", "watchdog", "iTCO_wdt"]);
        assert_eq!(absent, ["e1000e", "i6300esb"]);
        let metal = ["pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00".to_string()];
        let (load, absent) = plan.choose(&metal);
        assert_eq!(load, ["ptp", "e1000e", "watchdog", "iTCO_wdt"]);
        assert_eq!(absent, ["virtio_pci", "i6300esb"]);
    }

    #[test]
    fn no_plan_lines_no_modules_and_no_panic() {
        for text in ["", "module", "needs x", "pci x", "module x maybe", "\u{0}\u{ff}"] {
            let plan = Plan::parse(text);
            assert!(plan.choose(&[]).0.is_empty(), "{text:?}");
        }
    }
}
