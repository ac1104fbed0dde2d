//! The simulator's TLS: its own CA and server certificate (or files), ALPN h2, and client
//! certificates that are accepted at the handshake and judged per request, as Apple does
//! (a request without a certificate from the trusted CA gets 403 BadCertificate).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::MockError;

/// A server certificate and key, plus the CA PEM clients should trust (when generated).
#[derive(Debug)]
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The generated CA in PEM, for `--ca-out` and clients; `None` with files.
    pub ca_pem: Option<String>,
}

/// Makes a throwaway CA and a server certificate for `localhost` and `127.0.0.1`.
pub fn generate() -> Result<ServerIdentity, MockError> {
    let gen_err = |e: rcgen::Error| MockError::Certificate(e.to_string());
    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pushgate APNs simulator CA");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(gen_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "pushgate APNs simulator");
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(ServerIdentity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| MockError::Certificate(e.to_owned()))?,
        ca_pem: Some(ca_cert.pem()),
    })
}

/// Loads a server certificate chain and key from PEM files.
pub fn load(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerIdentity, MockError> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| MockError::Certificate(format!("server certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| MockError::Certificate(format!("server key: {e}")))?;
    Ok(ServerIdentity {
        chain,
        key,
        ca_pem: None,
    })
}

/// Builds the server config. With `client_ca`, clients are asked for a certificate, any
/// certificate is accepted at the handshake, and [`ClientCheck`] judges it later.
pub fn server_config(
    id: &ServerIdentity,
    client_ca: Option<&ClientCheck>,
) -> Result<ServerConfig, MockError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| MockError::Certificate(e.to_string()))?;
    let builder = match client_ca {
        Some(_) => builder.with_client_cert_verifier(Arc::new(AcceptAnyClientCert { provider })),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| MockError::Certificate(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Judges a connection's client certificate against the trusted CA.
#[derive(Debug, Clone)]
pub struct ClientCheck {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCheck {
    pub fn new(ca_pem: &[u8]) -> Result<ClientCheck, MockError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            let ca = ca.map_err(|e| MockError::Certificate(format!("client CA: {e}")))?;
            roots
                .add(ca)
                .map_err(|e| MockError::Certificate(format!("client CA: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .map_err(|e| MockError::Certificate(format!("client CA: {e}")))?;
        Ok(ClientCheck { verifier })
    }

    /// True when the peer presented a certificate chain that leads to the CA.
    pub fn accepts(&self, peer: Option<&[CertificateDer<'static>]>) -> bool {
        match peer {
            Some([leaf, rest @ ..]) => self
                .verifier
                .verify_client_cert(leaf, rest, UnixTime::now())
                .is_ok(),
            _ => false,
        }
    }
}

/// Accepts any client certificate (its signature over the handshake is still verified);
/// whether it is trusted is decided per request.
#[derive(Debug)]
struct AcceptAnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AcceptAnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
