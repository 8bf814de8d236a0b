//! The pinned Debian kernel: fetched with the system's package tools, verified against the
//! SHA-256 pinned here, extracted and indexed (depmod) once, cached under `target/image/cache`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::BuildError;

/// The kernel package, its exact version and the SHA-256 of its .deb.
pub const PACKAGE: &str = "linux-image-6.1.0-56-amd64";
/// Exact Debian version.
pub const VERSION: &str = "6.1.192-2";
/// SHA-256 of `linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb`.
pub const SHA256: &str = "a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1";
/// The kernel release (directory under /lib/modules).
pub const RELEASE: &str = "6.1.0-56-amd64";

/// An extracted, indexed kernel.
#[derive(Debug)]
pub struct Kernel {
    /// The extracted package root.
    pub root: PathBuf,
}

impl Kernel {
    /// `boot/vmlinuz-…`.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{RELEASE}"))
    }
    /// `lib/modules/<release>`.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{RELEASE}"))
    }
}

fn deb_name() -> String {
    format!("{PACKAGE}_{VERSION}_amd64.deb").replace(':', "%3a")
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, BuildError> {
    let bytes = std::fs::read(path).map_err(|e| BuildError::io(path, e))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), BuildError> {
    let out = cmd.output().map_err(|e| BuildError::Tool(format!("{what}: cannot run {:?}: {e}", cmd.get_program())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BuildError::Tool(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Fetch (if not cached), verify, extract and index the pinned kernel package.
pub fn prepare(cache: &Path, progress: &dyn Fn(&str)) -> Result<Kernel, BuildError> {
    std::fs::create_dir_all(cache).map_err(|e| BuildError::io(cache, e))?;
    let deb = cache.join(deb_name());
    if !deb.exists() {
        progress(&format!("fetching {PACKAGE}={VERSION} with apt-get download"));
        let mut dl = Command::new("apt-get");
        dl.args(["download", &format!("{PACKAGE}={VERSION}")]).current_dir(cache);
        if run(&mut dl, "apt-get download").is_err() {
            // The package lists may be missing or stale on a fresh machine.
            run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")?;
            run(Command::new("apt-get").args(["download", &format!("{PACKAGE}={VERSION}")]).current_dir(cache), "apt-get download")
                .map_err(|e| BuildError::Tool(format!("{e}\nthe pinned kernel {PACKAGE}={VERSION} cannot be downloaded; if Debian no longer serves it, pin a newer one in image/src/kernel.rs")))?;
        }
    }
    let got = sha256_file(&deb)?;
    if got != SHA256 {
        let _ = std::fs::remove_file(&deb);
        return Err(BuildError::Checksum { file: deb.display().to_string(), expected: SHA256.into(), got });
    }
    progress(&format!("verified {} (sha256 {}…)", deb_name(), &SHA256[..16]));
    let root = cache.join(format!("kernel-{RELEASE}"));
    let stamp = root.join(".indexed");
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&root);
        progress("extracting the kernel package (dpkg-deb) and indexing its modules (depmod)");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), "dpkg-deb -x")?;
        run(Command::new("depmod").arg("-b").arg(&root).arg(RELEASE), "depmod (package kmod)")?;
        std::fs::write(&stamp, SHA256).map_err(|e| BuildError::io(&stamp, e))?;
    }
    Ok(Kernel { root })
}
