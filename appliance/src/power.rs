//! Poweroff and reboot, done cleanly: children stopped, data flushed, the config partition
//! unmounted, then the kernel call. And the ACPI power button, read from its input device.

use std::io::Read;
use std::sync::mpsc::Sender;

use crate::console::Command;
use crate::supervise::Supervisor;
use crate::{log, mounts, sys};

/// What to do at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Power off.
    Poweroff,
    /// Reboot.
    Reboot,
}

/// Stop everything and power off or reboot. Does not return.
pub fn shutdown(action: Action, sup: &mut Supervisor, config_mounted: bool) -> ! {
    log::init(&format!("{}: stopping services", if action == Action::Poweroff { "poweroff" } else { "reboot" }));
    sup.stop_all();
    sys::sync();
    if config_mounted {
        match sys::umount(mounts::CONFIG_DIR) {
            Ok(()) => log::init("config partition unmounted cleanly"),
            Err(e) => log::init(&e),
        }
    }
    // The EFI partition (system slots), if the boot mounted it.
    let _ = sys::umount(director_config::boot::ESP_DIR);
    sys::sync();
    log::init(if action == Action::Poweroff { "powering off" } else { "rebooting" });
    sys::reboot(if action == Action::Poweroff { libc::LINUX_REBOOT_CMD_POWER_OFF } else { libc::LINUX_REBOOT_CMD_RESTART });
    // Only reached if the kernel refused.
    log::init(&format!("reboot(2) failed: {}", std::io::Error::last_os_error()));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Watch every input device named "Power Button" and send `Poweroff` when it is pressed.
pub fn watch_power_button(tx: Sender<crate::control::Request>) {
    let Ok(dir) = std::fs::read_dir("/sys/class/input") else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let dev_name = std::fs::read_to_string(format!("/sys/class/input/{name}/device/name")).unwrap_or_default();
        if dev_name.trim() != "Power Button" {
            continue;
        }
        let tx = tx.clone();
        log::init(&format!("watching the power button ({name})"));
        std::thread::spawn(move || {
            let Ok(mut f) = std::fs::File::open(format!("/dev/input/{name}")) else { return };
            // struct input_event: timeval (16 bytes), type u16, code u16, value i32.
            let mut ev = [0u8; 24];
            while f.read_exact(&mut ev).is_ok() {
                let (ty, code, value) = (
                    u16::from_ne_bytes([ev[16], ev[17]]),
                    u16::from_ne_bytes([ev[18], ev[19]]),
                    i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]),
                );
                if ty == 1 && code == 116 && value == 1 {
                    log::init("ACPI power button pressed");
                    let _ = tx.send(Command::Poweroff.into());
                }
            }
        });
    }
}
