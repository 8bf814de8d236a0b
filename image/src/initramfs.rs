//! The initramfs: a newc cpio archive, gzip-compressed, holding the static Rust userland and
//! the kernel modules. Deterministic: entries sorted, fixed inode numbers, owner root, every
//! mtime = SOURCE_DATE_EPOCH, gzip header without a timestamp.

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

/// Build the compressed archive from (path without leading slash, node) pairs.
pub fn build(mut entries: Vec<(String, Node)>, mtime: u32) -> Result<Vec<u8>, BuildError> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
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
    gz.finish().map_err(|e| BuildError::Tool(format!("gzip: {e}")))
}
