//! The two system slots and the boot state, shared by the image builder (which lays them
//! out), the init (which boots, tries and confirms them) and the web page (which writes an
//! update into the inactive slot).
//!
//! On the EFI system partition (mounted at `ESP_DIR`):
//! - `a/vmlinuz`, `a/initrd`, `b/vmlinuz`, `b/initrd`: each allocated at full size by the
//!   image builder (`KERNEL_FILE_SIZE`, `INITRD_FILE_SIZE`); an update overwrites a slot's
//!   files in place and zeroes what follows its parts, so FAT metadata never changes (the
//!   kernel ignores what follows its image; the initramfs unpacker skips zero padding). Each
//!   slot has its own directory, so a write torn by a power cut can only touch that slot.
//! - `state/default.cfg`: the one line syslinux includes, `DEFAULT a` or `DEFAULT b`,
//!   rewritten in place (same length) when a slot becomes the default.
//! - `state/boot.state`: the `BootState` document in the two-slot store (`store`).
//!
//! The kernel command line says which slot is running (`director.slot=a`) and whether it is a
//! trial (`director.trial=1`, only ever set by the kexec that starts a trial).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store;

/// GPT name of the EFI system partition (the image builder names it, the init finds it).
pub const ESP_PARTNAME: &str = "EFI system";
/// Where the init mounts the EFI system partition.
pub const ESP_DIR: &str = "/boot";
/// Size of each slot's kernel file.
pub const KERNEL_FILE_SIZE: u64 = 9 << 20;
/// Size of each slot's initramfs file.
pub const INITRD_FILE_SIZE: u64 = 10 << 20;
/// The boot state's store file, relative to the ESP.
pub const STATE_FILE: &str = "state/boot.state";
/// The syslinux include naming the default slot, relative to the ESP.
pub const DEFAULT_CFG: &str = "state/default.cfg";
/// Kernel command-line words.
pub const CMDLINE_SLOT: &str = "director.slot=";
/// Marks a trial boot.
pub const CMDLINE_TRIAL: &str = "director.trial=1";

/// One of the two system slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A (the image's first system).
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// "a" or "b": the directory on the ESP and the syslinux label.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    /// A slot from its name.
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }
    /// The slot's kernel file, relative to the ESP.
    pub fn kernel(self) -> String {
        format!("{}/vmlinuz", self.name())
    }
    /// The slot's initramfs file, relative to the ESP.
    pub fn initrd(self) -> String {
        format!("{}/initrd", self.name())
    }
    /// `state/default.cfg`'s whole text when this slot is the default (same length for both).
    pub fn default_cfg(self) -> String {
        format!("DEFAULT {}\n", self.name())
    }
    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Contents {
    /// Nothing was ever written.
    Empty,
    /// An update was being written and did not finish (or failed its check): never booted.
    Incomplete,
    /// A system, written whole and verified.
    Verified,
}

/// One slot's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// What it holds.
    pub contents: Contents,
    /// The version of the system in it.
    #[serde(default)]
    pub version: Option<String>,
}

/// How far a trial has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Written and verified; the next boot of the default slot starts it.
    Pending,
    /// Started (kexec'd into); if the default slot boots again before it confirmed, it failed.
    Started,
}

/// A trial boot of a newly written slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// The slot on trial.
    pub slot: Slot,
    /// Its version.
    pub version: String,
    /// The version it updates from.
    pub from: String,
    /// How far it has come.
    pub stage: Stage,
    /// Why the trial system gave up, when it says so itself before rebooting.
    #[serde(default)]
    pub failure: Option<String>,
}

/// How the last update (or switch) ended, for the page and the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The version that was tried.
    pub version: String,
    /// Whether it became the default.
    pub ok: bool,
    /// What happened, in an operator's words.
    pub message: String,
    /// Whether the running system has reported it (as an event) yet.
    #[serde(default)]
    pub reported: bool,
}

/// The whole boot state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    /// The slot the firmware boots.
    pub default: Slot,
    /// Slots A and B.
    pub slots: [SlotInfo; 2],
    /// A trial under way.
    #[serde(default)]
    pub trial: Option<Trial>,
    /// The last update's outcome.
    #[serde(default)]
    pub last: Option<Outcome>,
}

impl BootState {
    /// A new disk: A holds `version`, B is empty.
    pub fn new(version: &str) -> BootState {
        BootState {
            default: Slot::A,
            slots: [
                SlotInfo { contents: Contents::Verified, version: Some(version.to_string()) },
                SlotInfo { contents: Contents::Empty, version: None },
            ],
            trial: None,
            last: None,
        }
    }
    /// A slot's record.
    pub fn slot(&self, s: Slot) -> &SlotInfo {
        &self.slots[s.index()]
    }
    /// A slot's record, to change.
    pub fn slot_mut(&mut self, s: Slot) -> &mut SlotInfo {
        &mut self.slots[s.index()]
    }
    /// The state's bytes for the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
    /// A state from the store's bytes.
    pub fn decode(bytes: &[u8]) -> Result<BootState, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("the boot state is not understood: {e}"))
    }
}

/// The boot state on the EFI partition mounted at `esp`.
pub fn load(esp: &Path) -> Result<BootState, String> {
    let path = esp.join(STATE_FILE);
    match store::load(&path) {
        Ok(Some((_, body))) => BootState::decode(&body),
        Ok(None) => Err(format!("{}: no intact boot state (not booted from the disk's system slots)", path.display())),
        Err(e) => Err(e.to_string()),
    }
}

/// Save the boot state on the EFI partition at `esp` (the older of its two copies, synced).
pub fn save(esp: &Path, s: &BootState) -> Result<(), String> {
    store::save(&esp.join(STATE_FILE), &s.encode()).map(|_| ()).map_err(|e| e.to_string())
}

/// Make `slot` the one the firmware boots: `state/default.cfg` on the EFI partition at `esp`
/// rewritten in place (the same length), synced.
pub fn set_default(esp: &Path, slot: Slot) -> Result<(), String> {
    let path = esp.join(DEFAULT_CFG);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(slot.default_cfg().as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

/// What the kernel command line says about the running system: its slot (None when it was
/// not booted from a slot, e.g. a kernel started directly by QEMU) and whether it is a trial.
pub fn from_cmdline(cmdline: &str) -> (Option<Slot>, bool) {
    let slot = cmdline.split_whitespace().find_map(|w| w.strip_prefix(CMDLINE_SLOT)).and_then(Slot::parse);
    (slot, cmdline.split_whitespace().any(|w| w == CMDLINE_TRIAL))
}

/// The command line for a trial of `slot`: `running`'s words without the director's own, and
/// the trial's.
pub fn trial_cmdline(running: &str, slot: Slot) -> String {
    let mut words: Vec<&str> =
        running.split_whitespace().filter(|w| !w.starts_with("director.") && !w.starts_with("BOOT_IMAGE=")).collect();
    let s = format!("{CMDLINE_SLOT}{}", slot.name());
    words.push(&s);
    words.push(CMDLINE_TRIAL);
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_the_command_line_names_the_slot() {
        let mut s = BootState::new("1.0");
        s.trial = Some(Trial { slot: Slot::B, version: "1.1".into(), from: "1.0".into(), stage: Stage::Pending, failure: None });
        assert_eq!(BootState::decode(&s.encode()).unwrap(), s);
        BootState::decode(b"{").unwrap_err();
        assert_eq!(from_cmdline("console=ttyS0 director.slot=b quiet"), (Some(Slot::B), false));
        assert_eq!(from_cmdline("console=ttyS0 quiet"), (None, false));
        let t = trial_cmdline("BOOT_IMAGE=/a/vmlinuz console=ttyS0 panic=10 director.slot=a", Slot::B);
        assert_eq!(t, "console=ttyS0 panic=10 director.slot=b director.trial=1");
        assert_eq!(from_cmdline(&t), (Some(Slot::B), true));
        assert_eq!(Slot::A.default_cfg().len(), Slot::B.default_cfg().len());
    }
}
