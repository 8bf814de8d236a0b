//! The page's TLS: a self-signed certificate made on first boot (ECDSA P-256, kept on the
//! config partition so its fingerprint stays the same across boots), and the rustls server
//! configuration.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A new self-signed certificate and key (PEM).
pub fn generate(hostname: &str) -> Result<(String, String), String> {
    let ck =
        rcgen::generate_simple_self_signed(vec![hostname.to_string(), "director".to_string()]).map_err(|e| format!("certificate: {e}"))?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}

/// The certificate's SHA-256 fingerprint as browsers show it (AA:BB:…).
pub fn fingerprint(cert_pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map(|c| c.to_vec()).unwrap_or_default();
    Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The rustls server configuration for a certificate and key.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| format!("TLS certificate: {e:?}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("the stored TLS key is unreadable: {e:?}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate: {e}"))?;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_loads_and_has_a_stable_fingerprint() {
        let (c, k) = generate("director").unwrap();
        server_config(&c, &k).unwrap();
        let f = fingerprint(&c);
        assert_eq!(f.len(), 32 * 3 - 1);
        assert_eq!(f, fingerprint(&c));
        server_config(&c, "garbage").unwrap_err();
    }
}
