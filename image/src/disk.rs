//! `director.img`: one raw disk that boots on UEFI and on legacy BIOS (dd it onto a disk).
//!
//! ```text
//! LBA 0      protective MBR whose boot code is syslinux's gptmbr.bin (legacy BIOS path)
//! LBA 1-33   GPT (fixed disk and partition GUIDs)
//! 1 MiB      p1 "EFI system", FAT, legacy-BIOS-bootable attribute:
//!              /a/{vmlinuz, initrd}   system slot A (this build), allocated at full size
//!              /b/{vmlinuz, initrd}   system slot B (zeros until an update writes it)
//!              /state/{default.cfg, boot.state}   which slot boots; the trial and outcome
//!              /syslinux/{syslinux.cfg, ldlinux.sys, ldlinux.c32}   BIOS: gptmbr → VBR → ldlinux
//!              /EFI/BOOT/{BOOTX64.EFI (syslinux.efi), ldlinux.e64, syslinux.cfg}   UEFI
//!            (both syslinux.cfg include /state/default.cfg; see `director_config::boot`)
//! +40 MiB    p2 "director-config", FAT: director.json (the operator's file), director.slots
//!              (the appliance's saves), web.slots (password hash, TLS key): the slot files
//!              are allocated here at full size so saves never change FAT metadata
//! end        backup GPT
//! ```
//! The FAT filesystems are written by the `fatfs` crate into memory, never mounted; only the
//! syslinux installer (which writes its boot sector and ldlinux.sys) is an external tool.

use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use fatfs::{FileSystem, FormatVolumeOptions, FsOptions};
use gpt::mbr::ProtectiveMBR;

use director_config::boot::{BootState, Slot, CMDLINE_SLOT, DEFAULT_CFG, INITRD_FILE_SIZE, KERNEL_FILE_SIZE, STATE_FILE};

use crate::BuildError;

const MIB: u64 = 1 << 20;
/// Size of the EFI system partition.
pub const ESP_SIZE: u64 = 40 * MIB;
/// Size of the config partition (its files are 2 × 256 KiB stores and the operator's file).
pub const CONFIG_SIZE: u64 = 6 * MIB;
/// GPT name of the config partition (the init finds it by this).
pub use director_config::paths::CONFIG_PARTNAME;
/// The legacy-BIOS-bootable GPT attribute (bit 2): gptmbr.bin boots the partition carrying it.
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
/// Fixed GUIDs: a build from the same commit must be byte-identical.
const DISK_GUID: &str = "6d1c6b2e-3f0a-4b7e-9c1d-2a5e8f4d0001";
const ESP_GUID: &str = "6d1c6b2e-3f0a-4b7e-9c1d-2a5e8f4d0002";
const CONFIG_GUID: &str = "6d1c6b2e-3f0a-4b7e-9c1d-2a5e8f4d0003";

/// The kernel command line.
pub const CMDLINE: &str = "console=tty0 console=ttyS0,115200n8 panic=10 quiet";

const SYSLINUX_BIOS_MBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";
const SYSLINUX_EFI: &str = "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi";
const SYSLINUX_EFI_LDLINUX: &str = "/usr/lib/syslinux/modules/efi64/ldlinux.e64";

/// One label per slot; the default comes from the included `state/default.cfg`, the only
/// boot file an update or a switch rewrites.
fn syslinux_cfg() -> String {
    let mut cfg = format!("SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nINCLUDE /{DEFAULT_CFG}\n");
    for s in [Slot::A, Slot::B] {
        cfg.push_str(&format!(
            "LABEL {n}\n  LINUX /{k}\n  INITRD /{i}\n  APPEND {CMDLINE} {CMDLINE_SLOT}{n}\n",
            n = s.name(),
            k = s.kernel(),
            i = s.initrd()
        ));
    }
    cfg
}

/// `data` followed by zeros up to `size` (a slot file's fixed size).
fn padded(data: &[u8], size: u64, what: &str) -> Result<Vec<u8>, BuildError> {
    let size = usize::try_from(size).unwrap_or(0);
    if data.len() > size {
        return Err(BuildError::Tool(format!("the {what} is {} bytes; a slot holds at most {size}", data.len())));
    }
    let mut v = data.to_vec();
    v.resize(size, 0);
    Ok(v)
}

fn read(p: &str) -> Result<Vec<u8>, BuildError> {
    std::fs::read(p)
        .map_err(|e| BuildError::Tool(format!("{p}: {e} (install the Debian packages syslinux, syslinux-common, syslinux-efi)")))
}

fn fat_error(what: &str, e: std::io::Error) -> BuildError {
    BuildError::Tool(format!("writing the {what} filesystem: {e}"))
}

/// Format a FAT filesystem of `size` bytes in memory and fill it with `files`.
fn fat(size: u64, label: [u8; 11], volume_id: u32, files: &[(&str, &[u8])]) -> Result<Vec<u8>, BuildError> {
    let what = String::from_utf8_lossy(&label).trim().to_string();
    let mut buf = Cursor::new(vec![0u8; usize::try_from(size).unwrap_or(0)]);
    fatfs::format_volume(&mut buf, FormatVolumeOptions::new().volume_label(label).volume_id(volume_id)).map_err(|e| fat_error(&what, e))?;
    buf.seek(SeekFrom::Start(0)).map_err(|e| fat_error(&what, e))?;
    {
        let fs = FileSystem::new(&mut buf, FsOptions::new()).map_err(|e| fat_error(&what, e))?;
        for (path, data) in files {
            let root = fs.root_dir();
            let mut dir = root.clone();
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let Some((file, dirs)) = parts.split_last() else { continue };
            for d in dirs {
                dir = match dir.open_dir(d) {
                    Ok(x) => x,
                    Err(_) => dir.create_dir(d).map_err(|e| fat_error(&what, e))?,
                };
            }
            let mut f = dir.create_file(file).map_err(|e| fat_error(&what, e))?;
            f.truncate().map_err(|e| fat_error(&what, e))?;
            f.write_all(data).map_err(|e| fat_error(&what, e))?;
        }
        fs.unmount().map_err(|e| fat_error(&what, e))?;
    }
    Ok(buf.into_inner())
}

fn uuid(s: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(s).unwrap_or_default()
}

/// Write `director.img` into `out`.
pub fn build(
    out: &Path,
    vmlinuz: &[u8],
    initramfs: &[u8],
    version: &str,
    config: Option<&[u8]>,
    source_date_epoch: u32,
) -> Result<PathBuf, BuildError> {
    let total = MIB + ESP_SIZE + CONFIG_SIZE + MIB;
    let mut disk = Cursor::new(vec![0u8; usize::try_from(total).unwrap_or(0)]);
    let gerr = |e: gpt::GptError| BuildError::Tool(format!("writing the GPT: {e}"));

    // Protective MBR with syslinux's GPT-aware boot code.
    let gptmbr = read(SYSLINUX_BIOS_MBR)?;
    let mut boot = [0u8; 440];
    boot[..gptmbr.len().min(440)].copy_from_slice(&gptmbr[..gptmbr.len().min(440)]);
    let mut mbr = ProtectiveMBR::with_lb_size(u32::try_from(total / 512 - 1).unwrap_or(u32::MAX));
    mbr.set_bootcode(boot);
    mbr.set_disk_signature(*b"DRCT");
    mbr.overwrite_lba0(&mut disk).map_err(|e| BuildError::Tool(format!("writing the MBR: {e}")))?;

    let mut gdisk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(&mut disk, Some(uuid(DISK_GUID)))
        .map_err(gerr)?;
    gdisk.update_partitions(std::collections::BTreeMap::new()).map_err(gerr)?;
    let esp_id = gdisk
        .add_partition(director_config::boot::ESP_PARTNAME, ESP_SIZE, gpt::partition_types::EFI, LEGACY_BIOS_BOOTABLE, Some(2048))
        .map_err(gerr)?;
    let cfg_id = gdisk.add_partition(CONFIG_PARTNAME, CONFIG_SIZE, gpt::partition_types::BASIC, 0, Some(2048)).map_err(gerr)?;
    let mut parts = gdisk.partitions().clone();
    let mut esp_lba = 0;
    let mut cfg_lba = 0;
    for (id, p) in parts.iter_mut() {
        if *id == esp_id {
            p.part_guid = uuid(ESP_GUID);
            esp_lba = p.first_lba;
        } else if *id == cfg_id {
            p.part_guid = uuid(CONFIG_GUID);
            cfg_lba = p.first_lba;
        }
    }
    gdisk.update_partitions(parts).map_err(gerr)?;
    gdisk.write_inplace().map_err(gerr)?;
    drop(gdisk);

    let cfg = syslinux_cfg();
    let efi = read(SYSLINUX_EFI)?;
    let ld_e64 = read(SYSLINUX_EFI_LDLINUX)?;
    let (kernel_a, initrd_a) = (padded(vmlinuz, KERNEL_FILE_SIZE, "kernel")?, padded(initramfs, INITRD_FILE_SIZE, "initramfs")?);
    let (kernel_b, initrd_b) = (padded(&[], KERNEL_FILE_SIZE, "kernel")?, padded(&[], INITRD_FILE_SIZE, "initramfs")?);
    let mut state = vec![0u8; director_config::store::FILE_SIZE];
    let first = director_config::store::encode(1, &BootState::new(version).encode())
        .map_err(|e| BuildError::Tool(format!("the boot state: {e}")))?;
    state[..first.len()].copy_from_slice(&first);
    let default_cfg = Slot::A.default_cfg();
    let (ka, ia, kb, ib) = (Slot::A.kernel(), Slot::A.initrd(), Slot::B.kernel(), Slot::B.initrd());
    let esp = fat(
        ESP_SIZE,
        *b"DIRECTOR   ",
        0x4452_0001,
        &[
            (&ka, &kernel_a),
            (&ia, &initrd_a),
            (&kb, &kernel_b),
            (&ib, &initrd_b),
            (DEFAULT_CFG, default_cfg.as_bytes()),
            (STATE_FILE, &state),
            ("syslinux/syslinux.cfg", cfg.as_bytes()),
            ("EFI/BOOT/BOOTX64.EFI", &efi),
            ("EFI/BOOT/ldlinux.e64", &ld_e64),
            ("EFI/BOOT/syslinux.cfg", cfg.as_bytes()),
        ],
    )?;
    let empty_store = vec![0u8; director_config::store::FILE_SIZE];
    let mut config_files: Vec<(&str, &[u8])> = director_config::paths::PREALLOCATED.iter().map(|f| (*f, &empty_store[..])).collect();
    if let Some(c) = config {
        config_files.push((director_config::paths::OPERATOR_CONFIG, c));
    }
    let cfgfs = fat(CONFIG_SIZE, *b"DIRCONFIG  ", 0x4452_0002, &config_files)?;
    let image = disk.get_mut();
    let esp_off = usize::try_from(esp_lba * 512).unwrap_or(0);
    let cfg_off = usize::try_from(cfg_lba * 512).unwrap_or(0);
    image[esp_off..esp_off + esp.len()].copy_from_slice(&esp);
    image[cfg_off..cfg_off + cfgfs.len()].copy_from_slice(&cfgfs);

    let path = out.join("director.img");
    std::fs::write(&path, disk.get_ref()).map_err(|e| BuildError::io(&path, e))?;

    // The BIOS path: syslinux writes its boot sector into the ESP and ldlinux.sys/.c32.
    let st = Command::new("syslinux")
        .args(["--install", "--directory", "/syslinux", "--offset", &(esp_lba * 512).to_string()])
        .arg(&path)
        .env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|e| BuildError::Tool(format!("cannot run syslinux: {e} (install the Debian packages syslinux and mtools)")))?;
    if !st.status.success() {
        return Err(BuildError::Tool(format!("syslinux --install failed: {}", String::from_utf8_lossy(&st.stderr))));
    }
    Ok(path)
}
