//! What web-config keeps on the config partition: the password hash (argon2id PHC string) and
//! the TLS certificate and key, as one JSON document in `web.slots` (two checksummed slots,
//! `director_config::store`): a power cut during a save leaves the old or the new document.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Secrets {
    /// argon2id PHC string; absent until first-boot setup.
    #[serde(default)]
    pub password: Option<String>,
    /// PEM certificate.
    #[serde(default)]
    pub cert_pem: Option<String>,
    /// PEM private key.
    #[serde(default)]
    pub key_pem: Option<String>,
}

/// The store file in a state directory.
pub fn path(state: &Path) -> PathBuf {
    state.join(director_config::paths::WEB_STORE)
}

/// Load (an empty document if none was saved yet).
pub fn load(state: &Path) -> Result<Secrets, String> {
    match director_config::store::load(&path(state)).map_err(|e| e.to_string())? {
        Some((_, body)) => serde_json::from_slice(&body).map_err(|e| format!("{}: {e}", path(state).display())),
        None => Ok(Secrets::default()),
    }
}

/// Save power-loss safe.
pub fn save(state: &Path, s: &Secrets) -> Result<(), String> {
    let body = serde_json::to_vec(s).map_err(|e| e.to_string())?;
    director_config::store::save(&path(state), &body).map(|_| ()).map_err(|e| e.to_string())
}
