//! The key images and bundles are signed with: an Ed25519 key in a PKCS#8 PEM file (what
//! `openssl genpkey -algorithm ed25519 -out key.pem` writes). The operator points the build
//! at theirs (`--key FILE` or `DIRECTOR_SIGNING_KEY`); without one the build uses
//! `target/signing/director-signing.pem`, making it on first use and saying so. The public
//! half goes into the image (`/etc/director-update.pub`): the box accepts only bundles that
//! verify with it.

use std::io::Read;
use std::path::{Path, PathBuf};

use director_config::bundle::TrustedKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;

use crate::BuildError;

/// The key the build signs with, and where it came from.
#[derive(Debug)]
pub struct Key {
    /// The signing key.
    pub signing: SigningKey,
    /// Its file.
    pub path: PathBuf,
}

impl Key {
    /// The public half, as the image trusts it.
    pub fn trusted(&self) -> TrustedKey {
        TrustedKey::of(&self.signing)
    }
}

/// Whether `load` may make the build's own key when there is none (a build may; a check
/// against a key nobody has yet can only fail, and must not leave one behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Make it, and say so.
    Make,
    /// Say there is no key.
    Refuse,
}

/// The key named by `explicit` (or `DIRECTOR_SIGNING_KEY`), else the build's own key under
/// `target/`, made if there is none and `missing` allows it.
pub fn load(workspace: &Path, explicit: Option<&Path>, missing: Missing, progress: &dyn Fn(&str)) -> Result<Key, BuildError> {
    let named = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("DIRECTOR_SIGNING_KEY").map(PathBuf::from));
    if let Some(path) = named {
        let text = std::fs::read_to_string(&path).map_err(|e| BuildError::io(&path, e))?;
        let signing = SigningKey::from_pkcs8_pem(&text).map_err(|e| {
            BuildError::Tool(format!(
                "{}: not an Ed25519 private key in PKCS#8 PEM ({e}); make one with `openssl genpkey -algorithm ed25519 -out key.pem`",
                path.display()
            ))
        })?;
        return Ok(Key { signing, path });
    }
    let path = workspace.join("target/signing/director-signing.pem");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let signing = SigningKey::from_pkcs8_pem(&text)
            .map_err(|e| BuildError::Tool(format!("{}: damaged signing key ({e}); remove it to make a new one", path.display())))?;
        return Ok(Key { signing, path });
    }
    if missing == Missing::Refuse {
        return Err(BuildError::Tool(format!(
            "no signing key: {} does not exist and none was given (--key FILE, --pub FILE or DIRECTOR_SIGNING_KEY)",
            path.display()
        )));
    }
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| BuildError::io(Path::new("/dev/urandom"), e))?;
    let signing = SigningKey::from_bytes(&seed);
    let pem = signing.to_pkcs8_pem(Default::default()).map_err(|e| BuildError::Tool(format!("encoding the new signing key: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| BuildError::io(dir, e))?;
    }
    if !write_private(&path, pem.as_bytes())? {
        // Another build made it meanwhile: use that one.
        return load(workspace, explicit, missing, progress);
    }
    let key = Key { signing, path };
    progress(&format!(
        "no signing key given: made {} (key id {}); boxes built now trust only it. Keep it, or pass your own with --key FILE",
        key.path.display(),
        key.trusted().id()
    ));
    Ok(key)
}

/// Write a file only its owner can read, whole or not at all (written aside, then linked into
/// place); false if the file was there already.
fn write_private(path: &Path, bytes: &[u8]) -> Result<bool, BuildError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("new.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(|e| BuildError::io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| BuildError::io(&tmp, e))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(BuildError::io(path, e)),
    }
}
