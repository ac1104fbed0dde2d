//! TLS for what pushgate serves: HTTPS for the API (`[server] tls_cert`/`tls_key`) and
//! STARTTLS for SMTP (`[smtp] tls_cert`/`tls_key`). rustls with aws-lc-rs, as everywhere else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
#[error("reading the TLS files {cert} / {key}: {reason}")]
pub struct TlsError {
    cert: String,
    key: String,
    reason: String,
}

/// An acceptor for `files`, offering the ALPN protocols `alpn` (none for SMTP).
pub fn acceptor(files: &TlsFiles, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
    let fail = |reason: String| TlsError {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| fail(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_file(Path::new(&files.key)).map_err(|e| fail(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fail(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| fail(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Longest an SMTP client has to finish its TLS handshake after STARTTLS (`[smtp]
/// command_timeout_s` if shorter). HTTPS handshakes take `[server] header_read_timeout_s`.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
