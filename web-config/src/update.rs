//! Updates: `POST /api/update` streams a signed bundle (`director_config::bundle`) into the
//! inactive system slot as it arrives, never holding it in memory; `GET /api/update` reports
//! the slots, the progress and the last outcome; `POST /api/update/switch` makes the other
//! slot the default on purpose. See `director_config::boot` for the slots and the trial.
//!
//! Order of an update, so that a refusal writes nothing and a power cut at any point leaves
//! the running slot the default:
//! 1. the header (manifest and signature) is read and checked against the box's trusted key,
//!    its machine and the request's length: any refusal here has written nothing;
//! 2. the target slot is marked incomplete, then its files are overwritten in place as the
//!    parts stream past (digests computed on the way), and zeroed past the parts;
//! 3. the digests must match the signed manifest, and the files, read back from the disk, must
//!    match them again; only then is the slot marked verified and a trial recorded;
//! 4. the box reboots; the default slot's init starts the trial (`appliance::slots`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use director_config::boot::{self, BootState, Contents, Slot, Stage, Trial};
use director_config::bundle::{self, BundleError, Header, PartKind, TrustedKey};

/// How long an upload may take, whole.
pub const DEADLINE: Duration = Duration::from_secs(600);

/// Why an update was refused or failed.
#[derive(Debug)]
pub enum UpdateError {
    /// The box cannot take updates (and why).
    NotPossible(String),
    /// Another update (or a trial) is under way.
    Busy(String),
    /// The bundle is refused: nothing was written.
    Refused(BundleError),
    /// The upload stopped before the end: the slot is left incomplete (never booted).
    Interrupted(String),
    /// The written slot does not hold what was sent (a disk fault): never booted.
    WriteFailed(String),
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::NotPossible(m) => write!(f, "updates are not possible on this box: {m}"),
            UpdateError::Busy(m) => write!(f, "{m}"),
            UpdateError::Refused(e) => write!(f, "bundle refused, nothing written: {e}"),
            UpdateError::Interrupted(m) => write!(f, "the upload did not finish ({m}); the running system is unchanged"),
            UpdateError::WriteFailed(m) => write!(f, "writing the new system failed ({m}); the running system is unchanged"),
        }
    }
}

impl UpdateError {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            UpdateError::NotPossible(_) | UpdateError::Busy(_) => 409,
            UpdateError::Refused(_) | UpdateError::Interrupted(_) => 400,
            UpdateError::WriteFailed(_) => 500,
        }
    }
}

/// An upload's progress, for `GET /api/update`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// "idle", "receiving", "verifying", "rebooting" or "failed".
    pub phase: String,
    /// The bundle's version, once its header is read.
    pub version: Option<String>,
    /// Bytes received.
    pub received: u64,
    /// Bytes in the bundle.
    pub total: u64,
    /// The failure, when the phase is "failed".
    pub error: Option<String>,
}

/// Where the updater finds things (the box's paths; tests point them elsewhere).
#[derive(Debug, Clone)]
pub struct Places {
    /// The mounted EFI partition.
    pub esp: PathBuf,
    /// The trusted key file.
    pub key: PathBuf,
    /// The kernel command line.
    pub cmdline: PathBuf,
    /// This system's version.
    pub version_file: PathBuf,
}

impl Default for Places {
    fn default() -> Places {
        Places {
            esp: PathBuf::from(boot::ESP_DIR),
            key: PathBuf::from(bundle::TRUSTED_KEY_FILE),
            cmdline: PathBuf::from("/proc/cmdline"),
            version_file: PathBuf::from("/etc/director-version"),
        }
    }
}

/// The updater: one upload at a time.
#[derive(Debug, Default)]
pub struct Updater {
    /// Paths.
    pub places: Places,
    busy: Mutex<()>,
    progress: Mutex<Progress>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Updater {
    /// An updater working on `places`.
    pub fn new(places: Places) -> Updater {
        Updater { places, busy: Mutex::new(()), progress: Mutex::new(Progress { phase: "idle".into(), ..Progress::default() }) }
    }

    /// The boot state.
    pub fn state(&self) -> Result<BootState, String> {
        boot::load(&self.places.esp)
    }

    fn save(&self, s: &BootState) -> Result<(), UpdateError> {
        boot::save(&self.places.esp, s).map_err(UpdateError::WriteFailed)
    }

    /// The running slot, from the kernel command line.
    pub fn running(&self) -> Option<Slot> {
        boot::from_cmdline(&std::fs::read_to_string(&self.places.cmdline).unwrap_or_default()).0
    }

    /// This system's version.
    pub fn version(&self) -> String {
        std::fs::read_to_string(&self.places.version_file).map(|v| v.trim().to_string()).unwrap_or_else(|_| "unknown".into())
    }

    /// `GET /api/update`'s answer.
    pub fn report(&self) -> serde_json::Value {
        let progress = lock(&self.progress).clone();
        let running = self.running();
        match self.state() {
            Ok(s) => {
                let slots: Vec<_> = [Slot::A, Slot::B]
                    .iter()
                    .map(|&x| {
                        let i = s.slot(x);
                        serde_json::json!({
                            "slot": x.name(), "contents": i.contents, "version": i.version,
                            "running": running == Some(x), "default": s.default == x,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "version": self.version(), "running": running.map(Slot::name), "default": s.default.name(),
                    "slots": slots, "trial": s.trial, "last": s.last, "progress": progress,
                })
            }
            Err(e) => {
                serde_json::json!({ "version": self.version(), "running": running.map(Slot::name), "unavailable": e, "progress": progress })
            }
        }
    }

    fn set(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut lock(&self.progress));
    }

    /// Receive a bundle of `len` bytes: `prefix` already read, the rest from `body`. On
    /// success the new slot holds the verified system and a trial is recorded: the caller
    /// reboots. Returns the message for the operator.
    pub fn receive(&self, prefix: &[u8], body: &mut dyn Read, len: u64) -> Result<String, UpdateError> {
        let Ok(_guard) = self.busy.try_lock() else { return Err(UpdateError::Busy("another update is being received".into())) };
        self.set(|p| *p = Progress { phase: "receiving".into(), total: len, ..Progress::default() });
        let r = self.receive_locked(prefix, body, len);
        self.set(|p| match &r {
            Ok(_) => p.phase = "rebooting".into(),
            Err(e) => {
                p.phase = "failed".into();
                p.error = Some(e.to_string());
            }
        });
        r
    }

    fn receive_locked(&self, prefix: &[u8], body: &mut dyn Read, len: u64) -> Result<String, UpdateError> {
        let key_text = std::fs::read_to_string(&self.places.key)
            .map_err(|e| UpdateError::NotPossible(format!("{}: {e} (no trusted key)", self.places.key.display())))?;
        let key = TrustedKey::parse(&key_text).map_err(|e| UpdateError::NotPossible(e.to_string()))?;
        let running = self.running().ok_or_else(|| UpdateError::NotPossible("it was not booted from a system slot".into()))?;
        let mut state = self.state().map_err(UpdateError::NotPossible)?;
        if let Some(t) = &state.trial {
            return Err(UpdateError::Busy(format!("a trial of {} is under way; wait for it to end", t.version)));
        }
        let target = running.other();

        // 1. The header, checked before anything is written.
        let mut buf = prefix.to_vec();
        let mut chunk = vec![0u8; 64 * 1024];
        let header = loop {
            match Header::parse(&buf).map_err(UpdateError::Refused)? {
                Some(h) => break h,
                None if (buf.len() as u64) >= len => {
                    return Err(UpdateError::Refused(BundleError::Truncated {
                        expected: len.max(buf.len() as u64 + 1),
                        got: buf.len() as u64,
                    }))
                }
                None => {
                    let n = body.read(&mut chunk).map_err(|e| UpdateError::Interrupted(e.to_string()))?;
                    if n == 0 {
                        return Err(UpdateError::Interrupted("the client stopped sending".into()));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        };
        let manifest = header.check(&key, len).map_err(UpdateError::Refused)?.clone();
        for (what, p, room) in
            [("kernel", &manifest.kernel, boot::KERNEL_FILE_SIZE), ("initramfs", &manifest.initramfs, boot::INITRD_FILE_SIZE)]
        {
            if p.size > room {
                return Err(UpdateError::Refused(BundleError::PartTooLarge(what, p.size)));
            }
        }
        self.set(|p| p.version = Some(manifest.version.clone()));

        // 2. The slot: marked incomplete, then written in place.
        state.slot_mut(target).contents = Contents::Incomplete;
        state.slot_mut(target).version = Some(manifest.version.clone());
        self.save(&state)?;
        let open = |rel: String| {
            let p = self.places.esp.join(rel);
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .map_err(|e| UpdateError::WriteFailed(format!("{}: {e}", p.display())))
        };
        let mut kernel = open(target.kernel())?;
        let mut initrd = open(target.initrd())?;
        let mut parts = header.parts();
        let mut received = buf.len() as u64;
        let mut pending = buf.split_off(header.len.min(buf.len()));
        loop {
            for (kind, offset, slice) in parts.feed(&pending).into_iter().flatten() {
                let f = if kind == PartKind::Kernel { &mut kernel } else { &mut initrd };
                f.seek(SeekFrom::Start(offset)).and_then(|_| f.write_all(slice)).map_err(|e| UpdateError::WriteFailed(e.to_string()))?;
            }
            self.set(|p| p.received = received);
            if received >= len {
                break;
            }
            let want = usize::try_from(len - received).unwrap_or(usize::MAX).min(chunk.len());
            let n = body.read(&mut chunk[..want]).map_err(|e| UpdateError::Interrupted(e.to_string()))?;
            if n == 0 {
                return Err(UpdateError::Interrupted(format!("the client stopped sending after {received} of {len} bytes")));
            }
            received += n as u64;
            pending.clear();
            pending.extend_from_slice(&chunk[..n]);
        }
        self.set(|p| p.phase = "verifying".into());
        parts.finish().map_err(UpdateError::Refused)?;
        for (f, part, size) in
            [(&mut kernel, &manifest.kernel, boot::KERNEL_FILE_SIZE), (&mut initrd, &manifest.initramfs, boot::INITRD_FILE_SIZE)]
        {
            zero_after(f, part.size, size)?;
            f.sync_all().map_err(|e| UpdateError::WriteFailed(e.to_string()))?;
        }

        // 3. Read back from the disk (not the page cache) and check again.
        for (f, part, what) in [(&mut kernel, &manifest.kernel, "kernel"), (&mut initrd, &manifest.initramfs, "initramfs")] {
            if read_back_digest(f, part.size)? != part.sha256 {
                return Err(UpdateError::WriteFailed(format!(
                    "the {what} read back from slot {} differs from the one sent",
                    target.name()
                )));
            }
        }
        state.slot_mut(target).contents = Contents::Verified;
        state.trial =
            Some(Trial { slot: target, version: manifest.version.clone(), from: self.version(), stage: Stage::Pending, failure: None });
        self.save(&state)?;
        Ok(format!(
            "{} verified and written to slot {}; rebooting into it for a trial (it becomes the default once it is ready and forwarding)",
            manifest.version,
            target.name()
        ))
    }

    /// Make the other slot the default on purpose (it must hold a verified system); the caller
    /// reboots into it.
    pub fn switch(&self, to: Slot) -> Result<String, UpdateError> {
        let Ok(_guard) = self.busy.try_lock() else { return Err(UpdateError::Busy("an update is being received".into())) };
        let mut state = self.state().map_err(UpdateError::NotPossible)?;
        if state.trial.is_some() {
            return Err(UpdateError::Busy("a trial is under way; wait for it to end".into()));
        }
        let info = state.slot(to).clone();
        if info.contents != Contents::Verified {
            return Err(UpdateError::NotPossible(format!("slot {} holds no verified system", to.name())));
        }
        if state.default == to {
            return Err(UpdateError::Busy(format!("slot {} is already the default", to.name())));
        }
        let version = info.version.unwrap_or_default();
        boot::set_default(&self.places.esp, to).map_err(UpdateError::WriteFailed)?;
        state.default = to;
        let message = format!("switched from {} to {} (slot {}) on request", self.version(), version, to.name());
        state.last = Some(boot::Outcome { version, ok: true, message: message.clone(), reported: false });
        self.save(&state)?;
        self.set(|p| p.phase = "rebooting".into());
        Ok(format!("{message}; rebooting"))
    }
}

/// Zero a slot file from `from` to `to` (what an earlier, longer system left there).
fn zero_after(f: &mut File, from: u64, to: u64) -> Result<(), UpdateError> {
    let zeros = vec![0u8; 256 * 1024];
    f.seek(SeekFrom::Start(from)).map_err(|e| UpdateError::WriteFailed(e.to_string()))?;
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).unwrap_or(usize::MAX).min(zeros.len());
        f.write_all(&zeros[..n]).map_err(|e| UpdateError::WriteFailed(e.to_string()))?;
        at += n as u64;
    }
    Ok(())
}

/// SHA-256 (hex) of a file's first `len` bytes as the disk holds them: the page cache is
/// dropped first (the file was synced), so they are read again from the device.
fn read_back_digest(f: &mut File, len: u64) -> Result<String, UpdateError> {
    // SAFETY: posix_fadvise on our open file descriptor; only advice.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    f.seek(SeekFrom::Start(0)).map_err(|e| UpdateError::WriteFailed(e.to_string()))?;
    let mut h = Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        f.read_exact(&mut buf[..want]).map_err(|e| UpdateError::WriteFailed(e.to_string()))?;
        h.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(bundle::hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(name: &str) -> (Updater, PathBuf) {
        let dir = std::env::temp_dir().join(format!("update-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["a", "b", "state"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        for s in [Slot::A, Slot::B] {
            std::fs::write(dir.join(s.kernel()), vec![7u8; usize::try_from(boot::KERNEL_FILE_SIZE).unwrap()]).unwrap();
            std::fs::write(dir.join(s.initrd()), vec![7u8; usize::try_from(boot::INITRD_FILE_SIZE).unwrap()]).unwrap();
        }
        std::fs::write(dir.join(boot::DEFAULT_CFG), Slot::A.default_cfg()).unwrap();
        boot::save(&dir, &BootState::new("1.0")).unwrap();
        std::fs::write(dir.join("cmdline"), "console=ttyS0 director.slot=a\n").unwrap();
        std::fs::write(dir.join("version"), "1.0\n").unwrap();
        let u = Updater::new(Places {
            esp: dir.clone(),
            key: dir.join("key.pub"),
            cmdline: dir.join("cmdline"),
            version_file: dir.join("version"),
        });
        (u, dir)
    }

    fn key(dir: &std::path::Path, seed: u8) -> ed25519_dalek::SigningKey {
        let k = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        std::fs::write(dir.join("key.pub"), TrustedKey::of(&k).to_file()).unwrap();
        k
    }

    #[test]
    fn a_good_bundle_fills_the_other_slot_and_a_bad_one_writes_nothing() {
        let (u, dir) = place("good");
        let k = key(&dir, 1);
        let bundle = bundle::write("2.0", b"KERNEL", b"INITRAMFS", &k);
        // Refused before anything is written: another key, a bad signature, a short body.
        let other = bundle::write("2.0", b"KERNEL", b"INITRAMFS", &ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let before = std::fs::read(dir.join(boot::STATE_FILE)).unwrap();
        assert!(matches!(u.receive(&other, &mut &[][..], other.len() as u64), Err(UpdateError::Refused(BundleError::OtherKey { .. }))));
        let mut forged = bundle.clone();
        forged[20] ^= 1;
        assert!(matches!(u.receive(&forged, &mut &[][..], forged.len() as u64), Err(UpdateError::Refused(_))));
        let short = &bundle[..bundle.len() - 3];
        assert!(matches!(u.receive(short, &mut &[][..], short.len() as u64), Err(UpdateError::Refused(BundleError::Truncated { .. }))));
        assert_eq!(std::fs::read(dir.join(boot::STATE_FILE)).unwrap(), before, "a refusal wrote the boot state");
        assert_eq!(std::fs::read(dir.join("b/vmlinuz")).unwrap()[..6], [7u8; 6], "a refusal wrote the slot");
        // The good one, streamed in two pieces.
        let (head, rest) = bundle.split_at(40);
        let msg = u.receive(head, &mut &rest[..], bundle.len() as u64).unwrap();
        assert!(msg.contains("slot b"), "{msg}");
        let kb = std::fs::read(dir.join("b/vmlinuz")).unwrap();
        assert_eq!(kb.len() as u64, boot::KERNEL_FILE_SIZE);
        assert_eq!(&kb[..6], b"KERNEL");
        assert!(kb[6..].iter().all(|&b| b == 0), "the slot is not zeroed after the kernel");
        let s = u.state().unwrap();
        assert_eq!(s.slot(Slot::B).contents, Contents::Verified);
        assert_eq!(s.trial.as_ref().map(|t| (t.slot, t.stage, t.from.as_str())), Some((Slot::B, Stage::Pending, "1.0")));
        assert_eq!(s.default, Slot::A);
        // A trial is under way: no second update, no switch.
        assert!(matches!(u.receive(&bundle, &mut &[][..], bundle.len() as u64), Err(UpdateError::Busy(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_upload_cut_short_leaves_the_slot_incomplete_and_the_default_alone() {
        let (u, dir) = place("cut");
        let k = key(&dir, 2);
        let bundle = bundle::write("2.0", &[1u8; 5000], &[2u8; 7000], &k);
        let (head, rest) = bundle.split_at(200);
        let e = u.receive(head, &mut &rest[..4000], bundle.len() as u64).unwrap_err();
        assert!(matches!(e, UpdateError::Interrupted(_)), "{e}");
        let s = u.state().unwrap();
        assert_eq!((s.slot(Slot::B).contents, s.default, s.trial.is_none()), (Contents::Incomplete, Slot::A, true));
        assert!(matches!(u.switch(Slot::B), Err(UpdateError::NotPossible(_))), "an incomplete slot was made the default");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
