//! The update bundle and the image signature: what `image bundle` writes, and what a box
//! checks before it writes a byte of an update to its inactive slot.
//!
//! ```text
//! 0      magic "DRBUNDL1"
//! 8      manifest length m, u32 little-endian (at most MAX_MANIFEST)
//! 12     manifest: JSON (version, machine, each part's size and SHA-256, the key's id)
//! 12+m   signature: 64 bytes, Ed25519 over BUNDLE_CONTEXT ‖ manifest
//! 76+m   the kernel, then the initramfs, exactly as the manifest sizes them
//! ```
//!
//! The signature covers the manifest, the manifest names each part's digest: a box reads the
//! header (`Header::parse`), checks it (`Header::check`: its key, its machine, the sizes
//! against what the sender says it will send) before it writes anything, then hashes the parts
//! as they stream past (`Parts`) and accepts the slot only if both digests match.
//!
//! An image (`director.img`) is signed the same way, detached (`director.img.sig`, one line:
//! `ed25519 <key id> <signature hex>` over IMAGE_CONTEXT ‖ SHA-256 of the image), so an
//! operator can check a download before flashing it (`image verify`).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"DRBUNDL1";
/// A manifest is a few hundred bytes; anything longer is not one of ours.
pub const MAX_MANIFEST: usize = 4096;
/// What a bundle signature signs before the manifest (no other signature of the key can be
/// passed off as one).
pub const BUNDLE_CONTEXT: &[u8] = b"director update bundle v1\0";
/// What an image signature signs before the image's digest.
pub const IMAGE_CONTEXT: &[u8] = b"director disk image v1\0";
/// Bytes of the header before the manifest.
const FIXED: usize = 12;
/// Bytes of a signature.
const SIG: usize = 64;
/// The largest part a bundle may carry (a kernel or an initramfs); the slots are smaller still.
pub const MAX_PART: u64 = 64 << 20;
/// The machine this build's bundles are for (what `uname -m` says on the box).
pub const MACHINE: &str = "x86_64";
/// Where the image keeps the public key it trusts, and the file's first word.
pub const TRUSTED_KEY_FILE: &str = "/etc/director-update.pub";
const KEY_WORD: &str = "ed25519";

/// One part of a bundle: how long, and its digest (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

impl Part {
    /// The part for `bytes`.
    pub fn of(bytes: &[u8]) -> Part {
        Part { size: bytes.len() as u64, sha256: hex(&Sha256::digest(bytes)) }
    }
}

/// What a bundle says it is (signed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The software version the bundle installs (as `/etc/director-release` will say it).
    pub version: String,
    /// The machine it runs on (`MACHINE`).
    pub machine: String,
    /// The id of the key that signed it (`TrustedKey::id`).
    pub key_id: String,
    /// The kernel (bzImage).
    pub kernel: Part,
    /// The initramfs.
    pub initramfs: Part,
}

/// Why a bundle (or an image signature) was refused: each says what is wrong in the
/// operator's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// The first bytes are not a bundle's.
    NotABundle,
    /// The header's manifest length is out of bounds.
    ManifestSize(usize),
    /// The manifest is not the JSON a bundle carries.
    Manifest(String),
    /// Fewer bytes than the header and its parts need.
    Truncated {
        /// Bytes the bundle needs.
        expected: u64,
        /// Bytes there are (or will be sent).
        got: u64,
    },
    /// More bytes than the header and its parts need.
    TrailingBytes {
        /// Bytes the bundle needs.
        expected: u64,
        /// Bytes there are (or will be sent).
        got: u64,
    },
    /// Signed by a key this box does not trust.
    OtherKey {
        /// The id in the manifest.
        signed_by: String,
        /// The id of the key this box trusts.
        trusted: String,
    },
    /// The signature does not verify with the trusted key (the manifest was changed, or the
    /// signature is not the key's).
    BadSignature,
    /// Built for another machine.
    OtherMachine(String),
    /// A part is larger than a slot could ever hold.
    PartTooLarge(&'static str, u64),
    /// A part's bytes do not match the manifest's digest.
    Corrupt(&'static str),
    /// A key or signature file could not be read.
    KeyFile(String),
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleError::NotABundle => f.write_str("not an update bundle (it does not start with DRBUNDL1): build one with `image bundle`"),
            BundleError::ManifestSize(n) => write!(f, "not an update bundle: its manifest would be {n} bytes (at most {MAX_MANIFEST})"),
            BundleError::Manifest(e) => write!(f, "the bundle's manifest is damaged: {e}"),
            BundleError::Truncated { expected, got } => {
                write!(f, "the bundle is truncated: {got} bytes of the {expected} its manifest names (download it again)")
            }
            BundleError::TrailingBytes { expected, got } => {
                write!(f, "the bundle is {got} bytes, {} more than its manifest names: not as built", got.saturating_sub(*expected))
            }
            BundleError::OtherKey { signed_by, trusted } => write!(
                f,
                "the bundle is signed by key {signed_by}, and this box trusts only key {trusted}: build it with the key this box's image was built with"
            ),
            BundleError::BadSignature => f.write_str("the bundle's signature does not verify: it was changed after it was signed"),
            BundleError::OtherMachine(m) => write!(f, "the bundle is for {m} machines, this box is {MACHINE}"),
            BundleError::PartTooLarge(what, n) => write!(f, "the bundle's {what} would be {n} bytes, more than a slot holds"),
            BundleError::Corrupt(what) => write!(f, "the bundle's {what} does not match its signed digest: the file is damaged"),
            BundleError::KeyFile(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for BundleError {}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let t = text.trim();
    if t.len() != 2 * N || !t.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The id of a public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// The public key a box trusts (baked into its image at `TRUSTED_KEY_FILE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey(VerifyingKey);

impl TrustedKey {
    /// From a signing key (the builder's side).
    pub fn of(signing: &SigningKey) -> TrustedKey {
        TrustedKey(signing.verifying_key())
    }

    /// The key file's text: `ed25519 <hex of the 32-byte key>`.
    pub fn to_file(&self) -> String {
        format!("{KEY_WORD} {}\n", hex(self.0.as_bytes()))
    }

    /// From the key file's text.
    pub fn parse(text: &str) -> Result<TrustedKey, BundleError> {
        let bad = || BundleError::KeyFile(format!("not a public key file (\"{KEY_WORD} <64 hex digits>\"): {:?}", text.trim()));
        let hexkey = text.trim().strip_prefix(KEY_WORD).ok_or_else(bad)?;
        let bytes: [u8; 32] = unhex(hexkey).ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes).map(TrustedKey).map_err(|_| bad())
    }

    /// Its id (`key_id`).
    pub fn id(&self) -> String {
        key_id(&self.0)
    }
}

/// A bundle's header: the manifest and its signature, checked or not yet.
#[derive(Clone, Debug)]
pub struct Header {
    /// What the bundle says it is (not yet trusted before `check`).
    pub manifest: Manifest,
    raw: Vec<u8>,
    signature: [u8; SIG],
    /// Bytes of the header (the parts start here).
    pub len: usize,
}

impl Header {
    /// Parse the header from the bundle's first bytes; `Ok(None)` if `prefix` is too short to
    /// tell yet.
    pub fn parse(prefix: &[u8]) -> Result<Option<Header>, BundleError> {
        if prefix.len() < MAGIC.len() {
            return if MAGIC.starts_with(prefix) { Ok(None) } else { Err(BundleError::NotABundle) };
        }
        if &prefix[..MAGIC.len()] != MAGIC {
            return Err(BundleError::NotABundle);
        }
        let Some(n) = prefix.get(8..FIXED) else { return Ok(None) };
        let m = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
        if m == 0 || m > MAX_MANIFEST {
            return Err(BundleError::ManifestSize(m));
        }
        let len = FIXED + m + SIG;
        let Some(header) = prefix.get(..len) else { return Ok(None) };
        let raw = header[FIXED..FIXED + m].to_vec();
        let manifest: Manifest = serde_json::from_slice(&raw).map_err(|e| BundleError::Manifest(e.to_string()))?;
        let mut signature = [0u8; SIG];
        signature.copy_from_slice(&header[FIXED + m..len]);
        for (what, p) in [("kernel", &manifest.kernel), ("initramfs", &manifest.initramfs)] {
            if p.size == 0 || p.size > MAX_PART {
                return Err(BundleError::PartTooLarge(what, p.size));
            }
            if unhex::<32>(&p.sha256).is_none() {
                return Err(BundleError::Manifest(format!("the {what}'s sha256 is not 64 hex digits")));
            }
        }
        Ok(Some(Header { manifest, raw, signature, len }))
    }

    /// Bytes of the whole bundle.
    pub fn total_len(&self) -> u64 {
        self.len as u64 + self.manifest.kernel.size + self.manifest.initramfs.size
    }

    /// Trust it or say why not: the key, the signature, the machine, and the bundle's length
    /// (`len`: the bytes there are, or the sender says it will send).
    pub fn check(&self, key: &TrustedKey, len: u64) -> Result<&Manifest, BundleError> {
        if self.manifest.key_id != key.id() {
            return Err(BundleError::OtherKey { signed_by: self.manifest.key_id.clone(), trusted: key.id() });
        }
        let mut signed = BUNDLE_CONTEXT.to_vec();
        signed.extend_from_slice(&self.raw);
        key.0.verify(&signed, &Signature::from_bytes(&self.signature)).map_err(|_| BundleError::BadSignature)?;
        if self.manifest.machine != MACHINE {
            return Err(BundleError::OtherMachine(self.manifest.machine.clone()));
        }
        let expected = self.total_len();
        if len < expected {
            return Err(BundleError::Truncated { expected, got: len });
        }
        if len > expected {
            return Err(BundleError::TrailingBytes { expected, got: len });
        }
        Ok(&self.manifest)
    }

    /// The streamed parts' checker.
    pub fn parts(&self) -> Parts {
        Parts {
            kernel: self.manifest.kernel.clone(),
            initramfs: self.manifest.initramfs.clone(),
            at: 0,
            hk: Sha256::new(),
            hi: Sha256::new(),
        }
    }
}

/// Which part a slice of the stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// The kernel.
    Kernel,
    /// The initramfs.
    Initramfs,
}

/// The parts as they stream past: says where each slice goes (and at what offset of its
/// part), hashes it, and at the end says whether both digests match the signed manifest.
#[derive(Clone, Debug)]
pub struct Parts {
    kernel: Part,
    initramfs: Part,
    at: u64,
    hk: Sha256,
    hi: Sha256,
}

impl Parts {
    /// The next `chunk` of the stream (after the header): the slices of it, each with its part
    /// and its offset in that part. Bytes past the end are not returned.
    pub fn feed<'a>(&mut self, chunk: &'a [u8]) -> [Option<(PartKind, u64, &'a [u8])>; 2] {
        let mut out = [None, None];
        let mut rest = chunk;
        for slot in &mut out {
            let (kind, offset, left) = if self.at < self.kernel.size {
                (PartKind::Kernel, self.at, self.kernel.size - self.at)
            } else if self.at < self.kernel.size + self.initramfs.size {
                let o = self.at - self.kernel.size;
                (PartKind::Initramfs, o, self.initramfs.size - o)
            } else {
                break;
            };
            if rest.is_empty() {
                break;
            }
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
            let (this, after) = rest.split_at(n);
            match kind {
                PartKind::Kernel => self.hk.update(this),
                PartKind::Initramfs => self.hi.update(this),
            }
            self.at += n as u64;
            *slot = Some((kind, offset, this));
            rest = after;
        }
        out
    }

    /// All bytes have passed: both digests must be the manifest's.
    pub fn finish(self) -> Result<(), BundleError> {
        let expected = self.kernel.size + self.initramfs.size;
        if self.at < expected {
            return Err(BundleError::Truncated { expected, got: self.at });
        }
        if hex(&self.hk.finalize()) != self.kernel.sha256 {
            return Err(BundleError::Corrupt("kernel"));
        }
        if hex(&self.hi.finalize()) != self.initramfs.sha256 {
            return Err(BundleError::Corrupt("initramfs"));
        }
        Ok(())
    }
}

/// Write a bundle of `kernel` and `initramfs` for `version`, signed with `key`.
pub fn write(version: &str, kernel: &[u8], initramfs: &[u8], key: &SigningKey) -> Vec<u8> {
    let manifest = Manifest {
        version: version.to_string(),
        machine: MACHINE.to_string(),
        key_id: key_id(&key.verifying_key()),
        kernel: Part::of(kernel),
        initramfs: Part::of(initramfs),
    };
    let raw = serde_json::to_vec(&manifest).unwrap_or_default();
    let mut signed = BUNDLE_CONTEXT.to_vec();
    signed.extend_from_slice(&raw);
    let sig = key.sign(&signed);
    let mut out = Vec::with_capacity(FIXED + raw.len() + SIG + kernel.len() + initramfs.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(raw.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&raw);
    out.extend_from_slice(&sig.to_bytes());
    out.extend_from_slice(kernel);
    out.extend_from_slice(initramfs);
    out
}

/// Check a whole bundle in memory (what the box does as it streams, in one call).
pub fn verify(bundle: &[u8], key: &TrustedKey) -> Result<Manifest, BundleError> {
    let header = Header::parse(bundle)?.ok_or(BundleError::Truncated { expected: FIXED as u64 + SIG as u64, got: bundle.len() as u64 })?;
    let manifest = header.check(key, bundle.len() as u64)?.clone();
    let mut parts = header.parts();
    parts.feed(&bundle[header.len..]);
    parts.finish()?;
    Ok(manifest)
}

/// The detached signature of an image: `ed25519 <key id> <signature hex>`.
pub fn sign_image(image: &[u8], key: &SigningKey) -> String {
    let mut signed = IMAGE_CONTEXT.to_vec();
    signed.extend_from_slice(&Sha256::digest(image));
    format!("{KEY_WORD} {} {}\n", key_id(&key.verifying_key()), hex(&key.sign(&signed).to_bytes()))
}

/// Check an image against its detached signature.
pub fn verify_image(image: &[u8], signature: &str, key: &TrustedKey) -> Result<(), BundleError> {
    let words: Vec<&str> = signature.split_whitespace().collect();
    let [KEY_WORD, id, sig] = words[..] else {
        return Err(BundleError::KeyFile(format!("not an image signature (\"{KEY_WORD} <key id> <signature hex>\")")));
    };
    if id != key.id() {
        return Err(BundleError::OtherKey { signed_by: id.to_string(), trusted: key.id() });
    }
    let sig: [u8; SIG] = unhex(sig).ok_or(BundleError::BadSignature)?;
    let mut signed = IMAGE_CONTEXT.to_vec();
    signed.extend_from_slice(&Sha256::digest(image));
    key.0.verify(&signed, &Signature::from_bytes(&sig)).map_err(|_| BundleError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let kernel: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let initramfs: Vec<u8> = (0..7000u32).map(|i| (i % 241) as u8).collect();
        let b = write("1.2.3", &kernel, &initramfs, &key(1));
        (b, kernel, initramfs)
    }

    #[test]
    fn a_bundle_verifies_with_its_key_and_streams_its_parts_in_any_chunks() {
        let (b, kernel, initramfs) = sample();
        let trusted = TrustedKey::of(&key(1));
        assert_eq!(verify(&b, &trusted).unwrap().version, "1.2.3");
        // Header bytes one at a time: "not yet" until it is whole.
        for n in 0..40 {
            assert!(Header::parse(&b[..n]).unwrap().is_none(), "{n}");
        }
        let h = Header::parse(&b).unwrap().unwrap();
        h.check(&trusted, b.len() as u64).unwrap();
        for chunk in [1, 7, 4096, 5000, 1 << 20] {
            let mut parts = h.parts();
            let (mut k, mut i) = (Vec::new(), Vec::new());
            for c in b[h.len..].chunks(chunk) {
                for (kind, off, bytes) in parts.feed(c).into_iter().flatten() {
                    let into = if kind == PartKind::Kernel { &mut k } else { &mut i };
                    assert_eq!(off, into.len() as u64);
                    into.extend_from_slice(bytes);
                }
            }
            parts.finish().unwrap();
            assert_eq!((k.as_slice(), i.as_slice()), (kernel.as_slice(), initramfs.as_slice()));
        }
    }

    #[test]
    fn a_bundle_is_refused_with_the_reason() {
        let (b, _, _) = sample();
        let trusted = TrustedKey::of(&key(1));
        // Another key.
        let other = write("1.2.3", b"k", b"i", &key(2));
        assert!(matches!(verify(&other, &trusted), Err(BundleError::OtherKey { .. })));
        // A changed manifest (the version) keeps the key id: the signature fails.
        let mut forged_b = b.clone();
        let at = b.windows(5).position(|w| w == b"1.2.3").unwrap();
        forged_b[at..at + 5].copy_from_slice(b"9.9.9");
        assert_eq!(verify(&forged_b, &trusted), Err(BundleError::BadSignature));
        // A flipped byte in the kernel: corrupt.
        let mut flipped = b.clone();
        let last = flipped.len() - 7000 - 10;
        flipped[last] ^= 1;
        assert_eq!(verify(&flipped, &trusted), Err(BundleError::Corrupt("kernel")));
        // Truncated, longer, not a bundle.
        assert!(matches!(verify(&b[..b.len() - 1], &trusted), Err(BundleError::Truncated { .. })));
        let mut longer = b.clone();
        longer.push(0);
        assert!(matches!(verify(&longer, &trusted), Err(BundleError::TrailingBytes { .. })));
        assert_eq!(verify(b"PK\x03\x04 a zip file", &trusted).unwrap_err(), BundleError::NotABundle);
        assert!(verify(b"DRBUNDL1\xff\xff\xff\xff", &trusted).unwrap_err().to_string().contains("manifest would be"));
        let msg = verify(&other, &trusted).unwrap_err().to_string();
        assert!(msg.contains(&trusted.id()) && msg.contains("trusts only"), "{msg}");
    }

    #[test]
    fn no_bytes_panic_the_header_parser() {
        let (b, _, _) = sample();
        let trusted = TrustedKey::of(&key(1));
        let len = Header::parse(&b).unwrap().unwrap().len;
        for i in 0..len {
            for v in [0u8, 0xff, b'"', b'{', b'9'] {
                let mut x = b[..len].to_vec();
                x[i] = v;
                for n in [len / 2, len] {
                    let _ = Header::parse(&x[..n]);
                }
            }
        }
        // A few whole ones through the signature check too.
        for i in (0..len).step_by(len / 8) {
            let mut x = b.clone();
            x[i] ^= 0x20;
            assert!(verify(&x, &trusted).is_err(), "byte {i} changed");
        }
    }

    #[test]
    fn the_trusted_key_file_round_trips_and_bad_ones_are_named() {
        let t = TrustedKey::of(&key(3));
        assert_eq!(TrustedKey::parse(&t.to_file()).unwrap(), t);
        assert!(TrustedKey::parse("ed25519 abc").unwrap_err().to_string().contains("not a public key file"));
        assert_eq!(t.id().len(), 16);
    }

    #[test]
    fn an_image_signature_verifies_and_names_a_change() {
        let img = vec![7u8; 10_000];
        let sig = sign_image(&img, &key(1));
        let t = TrustedKey::of(&key(1));
        verify_image(&img, &sig, &t).unwrap();
        let mut changed = img.clone();
        changed[5000] = 8;
        assert_eq!(verify_image(&changed, &sig, &t), Err(BundleError::BadSignature));
        assert!(matches!(verify_image(&img, &sig, &TrustedKey::of(&key(2))), Err(BundleError::OtherKey { .. })));
    }
}
