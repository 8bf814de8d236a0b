//! The initramfs: a newc cpio archive holding the static Rust userland and the kernel
//! modules, compressed with xz for the appliance (LZMA2 with a CRC32 check, the one the
//! kernel's decompressor reads; about 30 % smaller than gzip, so a bundle fits its 12 MiB) or
//! gzip for the lab's guest. Deterministic: entries sorted, fixed inode numbers, owner root,
//! every mtime = SOURCE_DATE_EPOCH, gzip header without a timestamp, xz single-threaded.

use std::io::Write;

use cpio::newc::Builder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::BuildError;

/// One thing in the archive.
#[derive(Debug, Clone)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file with its mode bits and contents.
    File(u32, Vec<u8>),
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// xz (LZMA2, preset 9 extreme, 32 MiB dictionary, CRC32): the appliance.
    Xz,
    /// gzip (best): the lab's guest.
    Gzip,
}

/// Build the compressed archive from (path without leading slash, node) pairs.
pub fn build(entries: Vec<(String, Node)>, mtime: u32, packing: Packing) -> Result<Vec<u8>, BuildError> {
    let raw = archive(entries, mtime)?;
    match packing {
        Packing::Gzip => {
            let mut gz = GzEncoder::new(Vec::new(), Compression::best());
            gz.write_all(&raw).map_err(|e| BuildError::Tool(format!("gzip: {e}")))?;
            gz.finish().map_err(|e| BuildError::Tool(format!("gzip: {e}")))
        }
        Packing::Xz => xz(&raw),
    }
}

fn xz(raw: &[u8]) -> Result<Vec<u8>, BuildError> {
    use liblzma::stream::{Check, Filters, LzmaOptions, Stream};
    let err = |e: liblzma::stream::Error| BuildError::Tool(format!("xz: {e}"));
    let mut opts = LzmaOptions::new_preset(9 | PRESET_EXTREME).map_err(err)?;
    // The dictionary is allocated by the kernel while it unpacks: no larger than the archive
    // needs (the preset's is 64 MiB).
    opts.dict_size(32 << 20);
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    let stream = Stream::new_stream_encoder(&filters, Check::Crc32).map_err(err)?;
    let mut w = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    w.write_all(raw).map_err(|e| BuildError::Tool(format!("xz: {e}")))?;
    w.finish().map_err(|e| BuildError::Tool(format!("xz: {e}")))
}

/// liblzma's "extreme" preset flag.
const PRESET_EXTREME: u32 = 0x8000_0000;

/// The uncompressed newc archive.
fn archive(mut entries: Vec<(String, Node)>, mtime: u32) -> Result<Vec<u8>, BuildError> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut gz = Vec::new();
    for (i, (path, node)) in entries.iter().enumerate() {
        let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let b = Builder::new(path).ino(ino).uid(0).gid(0).mtime(mtime);
        let (b, data): (Builder, &[u8]) = match node {
            Node::Dir => (b.mode(0o040_755).nlink(2), &[]),
            Node::File(mode, bytes) => (b.mode(0o100_000 | mode).nlink(1), bytes),
            Node::Symlink(t) => (b.mode(0o120_777).nlink(1), t.as_bytes()),
            Node::CharDev(maj, min) => (b.mode(0o020_600).nlink(1).rdev_major(*maj).rdev_minor(*min), &[]),
        };
        let size = u32::try_from(data.len()).map_err(|_| BuildError::Tool(format!("{path} is too large for cpio")))?;
        let mut w = b.write(&mut gz, size);
        w.write_all(data).map_err(|e| BuildError::Tool(format!("cpio {path}: {e}")))?;
        w.finish().map_err(|e| BuildError::Tool(format!("cpio {path}: {e}")))?;
    }
    cpio::newc::trailer(&mut gz).map_err(|e| BuildError::Tool(format!("cpio trailer: {e}")))?;
    Ok(gz)
}
