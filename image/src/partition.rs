//! The config partition of an existing `director.img`: read the config the appliance will use
//! (its newest saved slot, else `director.json`) or replace it (`director.json`, with the saved
//! slots emptied so the operator's file wins at the next boot), and
//! tell whether the filesystem was cleanly unmounted (the FAT "dirty" flag the kernel sets
//! while it is mounted read-write and clears on a clean unmount).

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

use fatfs::{FileSystem, FsOptions};

use crate::disk::CONFIG_PARTNAME;
use crate::BuildError;

/// Byte range of the config partition in the image.
fn locate(img: &Path) -> Result<(u64, u64), BuildError> {
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(img)
        .map_err(|e| BuildError::Tool(format!("{}: not a GPT disk image: {e}", img.display())))?;
    let p = disk
        .partitions()
        .values()
        .find(|p| p.name == CONFIG_PARTNAME)
        .ok_or_else(|| BuildError::Tool(format!("{}: no partition named {CONFIG_PARTNAME}", img.display())))?;
    Ok((p.first_lba * 512, (p.last_lba - p.first_lba + 1) * 512))
}

fn load(img: &Path) -> Result<(u64, Cursor<Vec<u8>>), BuildError> {
    let (off, len) = locate(img)?;
    let mut f = std::fs::File::open(img).map_err(|e| BuildError::io(img, e))?;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    f.seek(SeekFrom::Start(off)).and_then(|_| f.read_exact(&mut buf)).map_err(|e| BuildError::io(img, e))?;
    Ok((off, Cursor::new(buf)))
}

fn fs_err(e: std::io::Error) -> BuildError {
    BuildError::Tool(format!("config partition: {e}"))
}

/// The config the appliance boots with: the newest intact slot of `director.slots`, else
/// `director.json`, if present.
pub fn get(img: &Path) -> Result<Option<String>, BuildError> {
    let (_, mut part) = load(img)?;
    let fs = FileSystem::new(&mut part, FsOptions::new()).map_err(fs_err)?;
    let mut out = String::new();
    let root = fs.root_dir();
    if let Ok(mut f) = root.open_file(director_config::paths::CONFIG_STORE) {
        let mut raw = Vec::new();
        f.read_to_end(&mut raw).map_err(fs_err)?;
        if let Some((_, body, _)) = director_config::store::newest(&raw) {
            return Ok(Some(String::from_utf8_lossy(body).into_owned()));
        }
    }
    let found = match root.open_file(director_config::paths::OPERATOR_CONFIG) {
        Ok(mut f) => {
            f.read_to_string(&mut out).map_err(fs_err)?;
            true
        }
        Err(_) => false,
    };
    Ok(found.then_some(out))
}

/// Replace `director.json` in the image.
pub fn set(img: &Path, text: &str) -> Result<(), BuildError> {
    let (off, mut part) = load(img)?;
    {
        let fs = FileSystem::new(&mut part, FsOptions::new()).map_err(fs_err)?;
        let mut f = fs.root_dir().create_file(director_config::paths::OPERATOR_CONFIG).map_err(fs_err)?;
        f.truncate().map_err(fs_err)?;
        f.write_all(text.as_bytes()).map_err(fs_err)?;
        drop(f);
        if let Ok(mut slots) = fs.root_dir().open_file(director_config::paths::CONFIG_STORE) {
            slots.write_all(&vec![0u8; director_config::store::FILE_SIZE]).map_err(fs_err)?;
        }
        fs.unmount().map_err(fs_err)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).open(img).map_err(|e| BuildError::io(img, e))?;
    f.seek(SeekFrom::Start(off)).and_then(|_| f.write_all(part.get_ref())).and_then(|_| f.sync_all()).map_err(|e| BuildError::io(img, e))
}

/// Was the config filesystem cleanly unmounted?
pub fn clean(img: &Path) -> Result<bool, BuildError> {
    let (_, mut part) = load(img)?;
    let fs = FileSystem::new(&mut part, FsOptions::new()).map_err(fs_err)?;
    let st = fs.read_status_flags().map_err(fs_err)?;
    Ok(!st.dirty() && !st.io_error())
}
