//! The filesystems PID 1 mounts, and the config partition.

use crate::{log, sys};

pub use director_config::paths::{CONFIG_DIR, CONFIG_PARTNAME};

/// proc, sys, devtmpfs, run, tmp.
pub fn early() {
    for (src, target, fs, flags) in [
        ("proc", "/proc", "proc", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC),
        ("sysfs", "/sys", "sysfs", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID),
        ("tmpfs", "/run", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV),
        ("tmpfs", "/tmp", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV),
    ] {
        if let Err(e) = sys::mount(src, target, fs, flags, "") {
            log::init(&e);
        }
    }
}

/// The block device of the config partition, found by its GPT name.
pub fn find_config_partition() -> Option<String> {
    find_partition(CONFIG_PARTNAME)
}

/// The block device of the partition with GPT name `name`.
pub fn find_partition(name: &str) -> Option<String> {
    let dir = std::fs::read_dir("/sys/class/block").ok()?;
    let mut names: Vec<String> = dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
        .into_iter()
        .find(|n| {
            std::fs::read_to_string(format!("/sys/class/block/{n}/uevent"))
                .is_ok_and(|u| u.lines().any(|l| l == format!("PARTNAME={name}")))
        })
        .map(|n| format!("/dev/{n}"))
}

/// Mount the config partition (FAT) read-write; None if there is none.
pub fn mount_config() -> Option<String> {
    let dev = find_config_partition()?;
    match sys::mount(&dev, CONFIG_DIR, "vfat", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, "flush,iocharset=utf8") {
        Ok(()) => Some(dev),
        Err(e) => {
            log::init(&format!("config partition {dev}: {e}"));
            None
        }
    }
}
