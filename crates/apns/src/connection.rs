//! Opening one HTTP/2 connection to APNs: TCP, TLS (ALPN h2, optional client certificate),
//! then the h2 handshake. What happens on the connection afterwards is the pool's business.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::auth::Auth;
use crate::endpoint::Endpoint;

/// TCP keepalive: the first probe after this long without traffic...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ...then one this often...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and the connection is dropped after this many unanswered.
const KEEPALIVE_PROBES: u32 = 3;
/// Data sent but unacknowledged this long ends the connection (`TCP_USER_TIMEOUT`). Keepalive
/// probes are never sent while data waits for its acknowledgement, which is just when a busy
/// connection into a black hole needs them; this covers that case.
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The h2 connection future, to be driven by its own task.
pub type H2Connection = Connection<TlsStream<TcpStream>, Bytes>;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("connecting to {endpoint} timed out after {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("TCP connect to {endpoint}")]
    Tcp {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {endpoint}")]
    Tls {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{endpoint} did not negotiate HTTP/2 (ALPN h2)")]
    NoHttp2 { endpoint: String },
    #[error("HTTP/2 handshake with {endpoint}")]
    Handshake {
        endpoint: String,
        #[source]
        source: h2::Error,
    },
}

/// Builds the TLS client configuration once per pool: Mozilla's roots (which include Apple's
/// USERTrust CA) plus any extra roots, ALPN h2, and the client certificate for certificate auth.
pub fn tls_config(auth: &Auth, extra_roots: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for ca in extra_roots {
        // A root that does not parse is reported when the config is loaded; here it is skipped.
        let _ = roots.add(ca.clone());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default protocol versions")
        .with_root_certificates(roots);
    let mut config = match auth {
        Auth::Token(_) => builder.with_no_client_auth(),
        Auth::Certificate(id) => builder.with_client_cert_resolver(Arc::new(
            rustls::sign::SingleCertAndKey::from(id.certified_key()),
        )),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Opens a connection. `initial_streams` is how many streams to allow before the server's
/// SETTINGS arrive (1 for token auth, as Apple requires until the first push succeeds).
pub async fn connect(
    endpoint: &Endpoint,
    tls: &TlsConnector,
    timeout: Duration,
    initial_streams: usize,
) -> Result<(SendRequest<Bytes>, H2Connection), ConnectError> {
    let name = endpoint.to_string();
    let attempt = async {
        let tcp = TcpStream::connect((endpoint.host(), endpoint.port()))
            .await
            .map_err(|source| ConnectError::Tcp {
                endpoint: name.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        if let Err(e) = tune(&tcp) {
            tracing::debug!(error = %e, "TCP keepalive options not set");
        }
        let tls_stream = tls
            .connect(endpoint.server_name(), tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                endpoint: name.clone(),
                source,
            })?;
        if tls_stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ConnectError::NoHttp2 {
                endpoint: name.clone(),
            });
        }
        h2::client::Builder::new()
            .initial_max_send_streams(initial_streams)
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 22)
            .enable_push(false)
            .handshake(tls_stream)
            .await
            .map_err(|source| ConnectError::Handshake {
                endpoint: name.clone(),
                source,
            })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout {
            endpoint: name.clone(),
            after: timeout,
        })?
}

/// Sets the keepalive and user-timeout options: a connection whose peer vanished (a NAT that
/// forgot it, a route that died) ends in about a minute instead of the kernel's fifteen.
fn tune(tcp: &TcpStream) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let keepalive = keepalive
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    sock.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_get_keepalive_and_a_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tune(&tcp).unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
            assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
            assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
            assert_eq!(sock.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
        }
    }
}
