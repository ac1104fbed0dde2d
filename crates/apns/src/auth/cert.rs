//! Client certificates for certificate-based auth: a .p12 (including the legacy RC2/3DES files
//! macOS Keychain exports) or a PEM certificate with its key, and what the certificate says
//! about itself (subject, Apple's topics, environment, expiry).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::AuthError;

/// Apple's extension listing the topics a certificate may push to.
const OID_TOPICS: &str = "1.2.840.113635.100.6.3.6";
/// Marks a certificate valid for the development (sandbox) environment.
const OID_DEVELOPMENT: &str = "1.2.840.113635.100.6.3.1";
/// Marks a certificate valid for production.
const OID_PRODUCTION: &str = "1.2.840.113635.100.6.3.2";

/// Which APNs environments a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertEnvironment {
    Sandbox,
    Production,
    /// A "universal" certificate: both.
    Both,
    /// No Apple marker (e.g. a test certificate).
    Unknown,
}

impl fmt::Display for CertEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertEnvironment::Sandbox => "sandbox",
            CertEnvironment::Production => "production",
            CertEnvironment::Both => "sandbox and production",
            CertEnvironment::Unknown => "unknown",
        })
    }
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    /// From Apple's topics extension; empty when it has none.
    pub topics: Vec<String>,
    pub environment: CertEnvironment,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Reads subject, topics, environment and validity from a DER certificate.
pub fn inspect_certificate(der: &[u8], what: &str) -> Result<CertificateInfo, AuthError> {
    let bad = || AuthError::Certificate {
        what: what.to_owned(),
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| bad())?;
    let mut topics = Vec::new();
    let (mut dev, mut prod) = (false, false);
    for ext in cert.extensions() {
        match ext.oid.to_id_string().as_str() {
            OID_TOPICS => topics = parse_topics(ext.value),
            OID_DEVELOPMENT => dev = true,
            OID_PRODUCTION => prod = true,
            _ => {}
        }
    }
    let environment = match (dev, prod) {
        (true, true) => CertEnvironment::Both,
        (true, false) => CertEnvironment::Sandbox,
        (false, true) => CertEnvironment::Production,
        (false, false) => CertEnvironment::Unknown,
    };
    let time = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        topics,
        environment,
        not_before: time(cert.validity().not_before.timestamp()),
        not_after: time(cert.validity().not_after.timestamp()),
    })
}

/// The topics extension is a SEQUENCE alternating a topic (UTF8String) and a SEQUENCE of its
/// kinds ("app", "voip", ...); the topics are the top-level strings.
fn parse_topics(value: &[u8]) -> Vec<String> {
    let Ok((_, obj)) = x509_parser::der_parser::der::parse_der(value) else {
        return Vec::new();
    };
    let Ok(items) = obj.as_sequence() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect()
}

/// How a client certificate was given ([`ClientIdentity::load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateFormat {
    /// A PKCS#12 archive (`.p12`).
    Pkcs12,
    /// PEM holding the certificate and its key together.
    CombinedPem,
    /// PEM holding the certificate and an encrypted PKCS#8 key together.
    CombinedPemEncryptedKey,
    /// PEM certificates, the key in a file of its own.
    PemWithKey,
    /// PEM certificates, an encrypted PKCS#8 key in a file of its own.
    PemWithEncryptedKey,
}

impl CertificateFormat {
    /// For people: `PEM, certificate and key in one file`...
    pub fn describe(self) -> &'static str {
        match self {
            CertificateFormat::Pkcs12 => "PKCS#12 (.p12)",
            CertificateFormat::CombinedPem => "PEM, certificate and key in one file",
            CertificateFormat::CombinedPemEncryptedKey => {
                "PEM, certificate and an encrypted PKCS#8 key in one file"
            }
            CertificateFormat::PemWithKey => "PEM, the key in its own file",
            CertificateFormat::PemWithEncryptedKey => {
                "PEM, an encrypted PKCS#8 key in its own file"
            }
        }
    }
}

/// The `ENCRYPTED PRIVATE KEY` block of `text`, decrypted with `password` (PBES2: PBKDF2 or
/// scrypt, AES), as a PKCS#8 key.
fn decrypt_key(
    text: &[u8],
    password: &str,
    what: &str,
) -> Result<PrivateKeyDer<'static>, AuthError> {
    const BEGIN: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &[u8] = b"-----END ENCRYPTED PRIVATE KEY-----";
    let find = |needle: &[u8], from: usize| {
        text[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let no_key = || AuthError::NoPrivateKey {
        what: what.to_owned(),
    };
    let start = find(BEGIN, 0).ok_or_else(no_key)?;
    let end = find(END, start).ok_or_else(no_key)? + END.len();
    if password.is_empty() {
        return Err(AuthError::KeyNeedsPassword {
            what: what.to_owned(),
        });
    }
    let (_, der) = pem_rfc7468::decode_vec(&text[start..end]).map_err(|_| no_key())?;
    let info =
        pkcs8::EncryptedPrivateKeyInfoOwned::try_from(der.as_slice()).map_err(|_| no_key())?;
    let plain = info.decrypt(password).map_err(|_| AuthError::KeyPassword {
        what: what.to_owned(),
    })?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        plain.as_bytes().to_vec(),
    )))
}

/// A client certificate chain with its private key, checked to match. `Debug` never shows the
/// key.
#[derive(Clone)]
pub struct ClientIdentity {
    key: Arc<CertifiedKey>,
    info: CertificateInfo,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// From a PKCS#12 archive. `what` names it in errors; the password never appears in one.
    pub fn from_pkcs12(der: &[u8], password: &str, what: &str) -> Result<Self, AuthError> {
        let store =
            KeyStore::from_pkcs12(der, password, Pkcs12ImportPolicy::Strict).map_err(|source| {
                AuthError::Pkcs12 {
                    what: what.to_owned(),
                    source,
                }
            })?;
        let (_, chain) = store
            .private_key_chain()
            .ok_or_else(|| AuthError::NoKeyInPkcs12 {
                what: what.to_owned(),
            })?;
        let certs: Vec<CertificateDer<'static>> = chain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect();
        if certs.is_empty() {
            return Err(AuthError::NoKeyInPkcs12 {
                what: what.to_owned(),
            });
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
        ClientIdentity::new(certs, key, what)
    }

    /// From a certificate file as its owner has it, its format told by its content
    /// ([`CertificateFormat`]): a PKCS#12 archive (binary); PEM holding the certificate and its
    /// key together (`openssl pkcs12 -nodes`, `cat cert.pem key.pem`, propeller-apns' `.pem`);
    /// or PEM certificates with the key in `key` (its bytes and its name, for errors about
    /// it). A key encrypted as PKCS#8 (`BEGIN ENCRYPTED
    /// PRIVATE KEY`) is decrypted with `password`; a legacy OpenSSL-encrypted one
    /// (`Proc-Type: 4,ENCRYPTED`) is refused with the command that converts it. The password
    /// never appears in an error.
    pub fn load(
        cert: &[u8],
        key: Option<(&[u8], &str)>,
        password: &str,
        what: &str,
    ) -> Result<(Self, CertificateFormat), AuthError> {
        let pem = |b: &[u8]| b.windows(11).any(|w| w == b"-----BEGIN ");
        if key.is_none() && !pem(cert) {
            return ClientIdentity::from_pkcs12(cert, password, what)
                .map(|id| (id, CertificateFormat::Pkcs12))
                .map_err(|e| {
                    // Not an archive but a certificate alone: say that, not "wrong password".
                    let der = CertificateDer::from(cert.to_vec());
                    if inspect_certificate(&der, what).is_ok() {
                        AuthError::CertificateWithoutKey {
                            what: what.to_owned(),
                        }
                    } else {
                        e
                    }
                });
        }
        let (key_text, key_what) = key.unwrap_or((cert, what));
        // PEM's markers start their lines: text elsewhere (a comment) decides nothing.
        let contains = |marker: &[u8]| {
            key_text
                .split(|b| *b == b'\n')
                .any(|line| line.trim_ascii().starts_with(marker))
        };
        if contains(b"Proc-Type: 4,ENCRYPTED") {
            return Err(AuthError::LegacyEncryptedKey {
                what: key_what.to_owned(),
            });
        }
        let encrypted = contains(b"-----BEGIN ENCRYPTED PRIVATE KEY-----");
        let format = match (key.is_some(), encrypted) {
            (false, false) => CertificateFormat::CombinedPem,
            (false, true) => CertificateFormat::CombinedPemEncryptedKey,
            (true, false) => CertificateFormat::PemWithKey,
            (true, true) => CertificateFormat::PemWithEncryptedKey,
        };
        if !encrypted {
            return ClientIdentity::from_pem(cert, key_text, what).map(|id| (id, format));
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(AuthError::NoCertificate {
                what: what.to_owned(),
            });
        }
        let key = decrypt_key(key_text, password, key_what)?;
        ClientIdentity::new(certs, key, what).map(|id| (id, format))
    }

    /// From PEM text: a certificate (chain) and its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Self, AuthError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(AuthError::NoCertificate {
                what: what.to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| AuthError::NoPrivateKey {
            what: what.to_owned(),
        })?;
        ClientIdentity::new(certs, key, what)
    }

    fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        what: &str,
    ) -> Result<Self, AuthError> {
        let info = inspect_certificate(&certs[0], what)?;
        // rustls would call a v1 certificate a key mismatch (UnsupportedCertVersion): say what
        // it is instead.
        if let Ok((_, leaf)) = x509_parser::parse_x509_certificate(&certs[0])
            && leaf.version() != x509_parser::x509::X509Version::V3
        {
            return Err(AuthError::CertificateVersion {
                what: what.to_owned(),
                version: leaf.version().0 + 1,
            });
        }
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = CertifiedKey::from_der(certs, key, &provider).map_err(|source| {
            AuthError::KeyMismatch {
                what: what.to_owned(),
                source,
            }
        })?;
        Ok(ClientIdentity {
            key: Arc::new(key),
            info,
        })
    }

    /// Subject, topics, environment and validity of the leaf certificate.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// The chain and key for the TLS handshake.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::LazyLock;

    /// A test credential (`apns_mock::testing`), read once.
    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(apns_mock::testing::fixture(name)).expect("a test credential")
    }

    static CLIENT: LazyLock<Vec<u8>> = LazyLock::new(|| fixture("client.pem"));
    static CLIENT_KEY: LazyLock<Vec<u8>> = LazyLock::new(|| fixture("client-key.pem"));
    static OTHER_KEY: LazyLock<Vec<u8>> = LazyLock::new(|| fixture("other-key.pem"));
    static LEGACY: LazyLock<Vec<u8>> = LazyLock::new(|| fixture("client-legacy.p12"));
    static MODERN: LazyLock<Vec<u8>> = LazyLock::new(|| fixture("client-modern.p12"));

    fn check_info(info: &CertificateInfo) {
        assert!(
            info.subject
                .contains("Apple Push Services: com.example.demo"),
            "{}",
            info.subject
        );
        assert_eq!(
            info.topics,
            [
                "com.example.demo",
                "com.example.demo.voip",
                "com.example.demo.complication"
            ]
        );
        assert_eq!(info.environment, CertEnvironment::Both);
        assert!(info.not_after > SystemTime::now() + Duration::from_secs(365 * 86400));
    }

    /// Every shape the seeds' users have their certificate in, told apart by content.
    #[test]
    fn a_certificate_loads_in_every_shape_its_owner_has_it() {
        let shapes: [(&str, Option<&str>, &str, CertificateFormat); 4] = [
            (
                "client-modern.p12",
                None,
                "secret",
                CertificateFormat::Pkcs12,
            ),
            (
                "client-combined.pem",
                None,
                "",
                CertificateFormat::CombinedPem,
            ),
            (
                "client.pem",
                Some("client-key.pem"),
                "",
                CertificateFormat::PemWithKey,
            ),
            (
                "client.pem",
                Some("client-key-encrypted.pem"),
                "secret",
                CertificateFormat::PemWithEncryptedKey,
            ),
        ];
        for (cert, key, password, format) in shapes {
            let bytes = key.map(fixture);
            let key = bytes.as_deref().zip(key);
            let (id, found) = ClientIdentity::load(&fixture(cert), key, password, cert)
                .unwrap_or_else(|e| panic!("{cert}: {e}"));
            assert_eq!(found, format, "{cert}");
            check_info(id.info());
        }
        // The encrypted key and the certificate in one file.
        let mut combined = CLIENT.clone();
        combined.extend_from_slice(&fixture("client-key-encrypted.pem"));
        let (_, found) = ClientIdentity::load(&combined, None, "secret", "combined").unwrap();
        assert_eq!(found, CertificateFormat::CombinedPemEncryptedKey);
    }

    #[test]
    fn an_encrypted_key_needs_its_password_and_a_legacy_one_gets_the_command() {
        let encrypted = fixture("client-key-encrypted.pem");
        let key = Some((encrypted.as_slice(), "key.pem"));
        let e = ClientIdentity::load(&CLIENT, key, "", "client.pem").unwrap_err();
        assert!(matches!(e, AuthError::KeyNeedsPassword { .. }), "{e}");
        assert!(e.to_string().starts_with("key.pem:"), "{e}");
        let e = ClientIdentity::load(&CLIENT, key, "hunter2", "client.pem").unwrap_err();
        assert!(matches!(e, AuthError::KeyPassword { .. }), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let legacy = fixture("client-key-legacy.pem");
        let e = ClientIdentity::load(
            &CLIENT,
            Some((&legacy, "legacy.pem")),
            "secret",
            "client.pem",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("openssl pkcs8 -topk8 -v2 aes-256-cbc -in legacy.pem -out key-pkcs8.pem"),
            "{e}"
        );
        // A PEM with a certificate and no key at all.
        let e = ClientIdentity::load(&CLIENT, None, "", "client.pem").unwrap_err();
        assert!(matches!(e, AuthError::NoPrivateKey { .. }), "{e}");
        // A v1 certificate is named as such, not as a key that does not match.
        let v1 = fixture("client-v1.pem");
        let e = ClientIdentity::load(&v1, Some((&CLIENT_KEY, "client-key.pem")), "", "v1.pem")
            .unwrap_err();
        assert!(
            matches!(e, AuthError::CertificateVersion { version: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("must be version 3"), "{e}");
        // A DER certificate alone (Apple's aps.cer) is not a .p12 with a wrong password.
        let der = CertificateDer::pem_slice_iter(&CLIENT)
            .next()
            .unwrap()
            .unwrap();
        let e = ClientIdentity::load(der.as_ref(), None, "", "aps.cer").unwrap_err();
        assert!(matches!(e, AuthError::CertificateWithoutKey { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("openssl x509 -inform der -in aps.cer"),
            "{e}"
        );
    }

    #[test]
    fn a_legacy_keychain_p12_loads() {
        let id = ClientIdentity::from_pkcs12(&LEGACY, "secret", "client-legacy.p12").unwrap();
        check_info(id.info());
    }

    #[test]
    fn a_modern_p12_loads() {
        let id = ClientIdentity::from_pkcs12(&MODERN, "secret", "client-modern.p12").unwrap();
        check_info(id.info());
    }

    #[test]
    fn a_wrong_password_names_the_file_and_not_the_password() {
        let e = ClientIdentity::from_pkcs12(&LEGACY, "hunter2-wrong", "push.p12").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("push.p12"), "{msg}");
        assert!(msg.contains("wrong password"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn pem_certificate_and_key_load_and_a_mismatched_key_is_refused() {
        let id = ClientIdentity::from_pem(&CLIENT, &CLIENT_KEY, "client.pem").unwrap();
        check_info(id.info());
        let e = ClientIdentity::from_pem(&CLIENT, &OTHER_KEY, "client.pem").unwrap_err();
        assert!(matches!(e, AuthError::KeyMismatch { .. }), "{e}");
        let e = ClientIdentity::from_pem(b"junk", &CLIENT_KEY, "junk.pem").unwrap_err();
        assert!(matches!(e, AuthError::NoCertificate { .. }), "{e}");
    }
}
