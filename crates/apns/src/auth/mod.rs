//! How a connection proves who it is: a provider token (JWT signed with a .p8 key) sent on
//! every request, or a client certificate presented in the TLS handshake.

mod cert;
mod jwt;

pub use cert::{
    CertEnvironment, CertificateFormat, CertificateInfo, ClientIdentity, inspect_certificate,
};
pub use jwt::{
    MAX_TOKEN_AGE, MIN_RENEWAL_INTERVAL, ProviderToken, RENEW_AFTER, SigningKey, TokenSigner,
};

use std::path::PathBuf;
use std::sync::Arc;

/// The credential a pool's connections use.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Token-based: one signed JWT shared by every connection.
    Token(Arc<TokenSigner>),
    /// Certificate-based (mutual TLS).
    Certificate(Arc<ClientIdentity>),
}

/// Why a credential could not be loaded or used. Messages name the file, never a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not a PEM-encoded EC P-256 private key (an APNs .p8 key)")]
    InvalidSigningKey {
        what: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("{field} {value:?} must be 10 letters or digits, as Apple issues them")]
    InvalidKeyField { field: &'static str, value: String },
    #[error("signing the provider token")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error(
        "{what}: wrong password, or not a PKCS#12 file (an unencrypted .p12 is not supported; convert it with `openssl pkcs12 -legacy`)"
    )]
    Pkcs12 {
        what: String,
        #[source]
        source: p12_keystore::error::Error,
    },
    #[error("{what} holds no private key with its certificate")]
    NoKeyInPkcs12 { what: String },
    #[error("{what} holds no PEM certificate")]
    NoCertificate { what: String },
    #[error("{what} holds no PEM private key")]
    NoPrivateKey { what: String },
    #[error("{what}: the private key does not match the certificate")]
    KeyMismatch {
        what: String,
        #[source]
        source: rustls::Error,
    },
    #[error("{what}: not a readable X.509 certificate")]
    Certificate { what: String },
    #[error(
        "{what}: the private key is encrypted (BEGIN ENCRYPTED PRIVATE KEY): give its password with certificate_password_env or certificate_password_file"
    )]
    KeyNeedsPassword { what: String },
    #[error("{what}: the private key's password is wrong, or its encryption is not PBES2")]
    KeyPassword { what: String },
    #[error(
        "{what}: the private key is encrypted the legacy OpenSSL way (Proc-Type: 4,ENCRYPTED), which pushgate does not read; convert it once with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in {what} -out key-pkcs8.pem` (it asks for the old password and a new one) and use key-pkcs8.pem"
    )]
    LegacyEncryptedKey { what: String },
    #[error(
        "{what} is a certificate alone (DER, as Apple hands out aps.cer), without its private key: export certificate and key together from Keychain as a .p12, or convert it to PEM (`openssl x509 -inform der -in {what} -out cert.pem`) and give the key with certificate_key"
    )]
    CertificateWithoutKey { what: String },
    #[error(
        "{what}: an X.509 version {version} certificate; a TLS client certificate must be version 3 (Apple's are). One made with `openssl x509 -req` without `-extfile` is version 1"
    )]
    CertificateVersion { what: String, version: u32 },
}
