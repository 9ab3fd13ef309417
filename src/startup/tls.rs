//! TLS for serving HTTPS natively: the rustls server configuration from PEM files (ring, TLS 1.2
//! and 1.3, HTTP/1.1), and a self-signed certificate for `demo --tls`.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// The server configuration for the certificate chain and key in `files`.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", files.cert.display());
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("{} is not a PEM private key", files.key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and the key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A self-signed certificate for `localhost` and `127.0.0.1` under `dir`, made on first use and
/// kept (the key readable by this user only).
pub fn self_signed(dir: &Path) -> anyhow::Result<TlsFiles> {
    let files = TlsFiles { cert: dir.join("demo-tls-cert.pem"), key: dir.join("demo-tls-key.pem") };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .context("generating a self-signed certificate")?;
    std::fs::write(&files.cert, made.cert.pem())?;
    crate::demo::write_private(&files.key, &made.key_pair.serialize_pem())?;
    Ok(files)
}
