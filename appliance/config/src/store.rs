//! The config partition's power-loss-safe store: a file of two fixed-size slots, each holding
//! one document with a generation number and a SHA-256 checksum. A save overwrites the older
//! slot in place and syncs it; the file never changes size, so the FAT filesystem's metadata
//! (allocation table, directory entries) is never rewritten by a save and a power cut can only
//! tear the slot being written. Reading takes the valid slot with the highest generation: after
//! a power cut the box has the old document or the new one, never a broken one.
//!
//! Slot layout (little endian): `DIRSLOT1` magic, generation u64, length u32, SHA-256 of
//! (generation, length, body), then the body.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Size of one slot; a document can use all but the header.
pub const SLOT_SIZE: usize = 128 * 1024;
/// Size of the whole store file.
pub const FILE_SIZE: usize = 2 * SLOT_SIZE;
const MAGIC: &[u8; 8] = b"DIRSLOT1";
const HEADER: usize = 8 + 8 + 4 + 32;
/// The largest document a slot holds.
pub const MAX_DOC: usize = SLOT_SIZE - HEADER;

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// The file could not be read, written or synced.
    Io(String, std::io::Error),
    /// The document is larger than a slot.
    TooLarge(usize),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(p, e) => write!(f, "{p}: {e}"),
            StoreError::TooLarge(n) => write!(f, "the document is {n} bytes; the store holds at most {MAX_DOC}"),
        }
    }
}

impl std::error::Error for StoreError {}

fn digest(generation: u64, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(generation.to_le_bytes());
    h.update(u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    h.update(body);
    h.finalize().into()
}

/// One slot's bytes, encoded.
pub fn encode(generation: u64, body: &[u8]) -> Result<Vec<u8>, StoreError> {
    if body.len() > MAX_DOC {
        return Err(StoreError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&digest(generation, body));
    out.extend_from_slice(body);
    Ok(out)
}

/// A slot's (generation, body), if it is intact.
pub fn decode(slot: &[u8]) -> Option<(u64, &[u8])> {
    if slot.get(..8)? != MAGIC {
        return None;
    }
    let generation = u64::from_le_bytes(slot.get(8..16)?.try_into().ok()?);
    let len = usize::try_from(u32::from_le_bytes(slot.get(16..20)?.try_into().ok()?)).ok()?;
    let sum: [u8; 32] = slot.get(20..52)?.try_into().ok()?;
    let body = slot.get(HEADER..HEADER.checked_add(len)?)?;
    (digest(generation, body) == sum).then_some((generation, body))
}

/// The newest intact document of a store file's contents: (generation, body, slot index).
pub fn newest(file: &[u8]) -> Option<(u64, &[u8], usize)> {
    (0..2).filter_map(|i| file.get(i * SLOT_SIZE..(i + 1) * SLOT_SIZE).and_then(decode).map(|(g, b)| (g, b, i))).max_by_key(|(g, _, _)| *g)
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(p.display().to_string(), e)
}

/// Read the newest intact document of the store at `path` (None if there is none).
pub fn load(path: &Path) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let mut buf = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut buf).map_err(io(path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    Ok(newest(&buf).map(|(g, b, _)| (g, b.to_vec())))
}

/// Every intact document of the store at `path`, newest first (at most two): after a rollback
/// to an older version, the older one may be the last it understands.
pub fn load_all(path: &Path) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let mut buf = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut buf).map_err(io(path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut all: Vec<(u64, Vec<u8>)> =
        (0..2).filter_map(|i| buf.get(i * SLOT_SIZE..(i + 1) * SLOT_SIZE).and_then(decode).map(|(g, b)| (g, b.to_vec()))).collect();
    all.sort_by_key(|d| std::cmp::Reverse(d.0));
    Ok(all)
}

/// Save `body` into the older slot of the store at `path` (created at full size if missing)
/// and sync it. Returns the new generation.
pub fn save(path: &Path, body: &[u8]) -> Result<u64, StoreError> {
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io(path))?;
    let mut cur = Vec::new();
    f.read_to_end(&mut cur).map_err(io(path))?;
    if cur.len() < FILE_SIZE {
        // First use: give the file its full size once, so later saves never change metadata.
        f.set_len(FILE_SIZE as u64).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
    }
    let (generation, slot) = match newest(&cur) {
        Some((g, _, i)) => (g + 1, 1 - i),
        None => (1, 0),
    };
    let bytes = encode(generation, body)?;
    f.seek(SeekFrom::Start((slot * SLOT_SIZE) as u64)).map_err(io(path))?;
    f.write_all(&bytes).map_err(io(path))?;
    f.sync_data().map_err(io(path))?;
    Ok(generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_alternate_slots_and_the_newest_intact_one_wins() {
        let dir = std::env::temp_dir().join(format!("store-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("s");
        let _ = std::fs::remove_file(&p);
        assert!(load(&p).unwrap().is_none());
        assert_eq!(save(&p, b"one").unwrap(), 1);
        assert_eq!(save(&p, b"two").unwrap(), 2);
        assert_eq!(load(&p).unwrap().unwrap(), (2, b"two".to_vec()));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), FILE_SIZE as u64);
        // A save torn half-way (power cut) leaves the previous document.
        let mut raw = std::fs::read(&p).unwrap();
        let torn = encode(3, b"three, never finished").unwrap();
        raw[..torn.len() / 2].copy_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&p, &raw).unwrap();
        assert_eq!(load(&p).unwrap().unwrap(), (2, b"two".to_vec()));
        // The next save overwrites the torn slot, not the good one.
        assert_eq!(save(&p, b"three").unwrap(), 3);
        assert_eq!(load(&p).unwrap().unwrap(), (3, b"three".to_vec()));
        assert_eq!(load_all(&p).unwrap(), vec![(3, b"three".to_vec()), (2, b"two".to_vec())]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn any_damage_is_detected() {
        let good = encode(7, b"{\"version\": 1}").unwrap();
        assert_eq!(decode(&good), Some((7, &b"{\"version\": 1}"[..])));
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_none_or(|(g, b)| g == 7 && b == b"{\"version\": 1}"), "byte {i}");
        }
        assert!(decode(&good[..good.len() - 1]).is_none());
        assert!(decode(&[]).is_none());
        assert!(matches!(encode(1, &vec![0u8; MAX_DOC + 1]), Err(StoreError::TooLarge(_))));
    }
}
