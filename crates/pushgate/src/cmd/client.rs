//! A running gateway's HTTP API as the CLI calls it (`send`, `status`): the key from a file or
//! `PUSHGATE_API_KEY`, JSON in and out, over HTTP or HTTPS (Mozilla's roots, and `--ca-file`'s
//! certificates for a gateway with a private CA or a self-signed certificate).

use std::path::Path;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

/// The API key: the file's contents, else `PUSHGATE_API_KEY`; `Err` says what is missing.
pub fn api_key(file: Option<&Path>) -> Result<String, String> {
    if let Some(f) = file {
        let key = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read the API key file {}: {e}", f.display()))?;
        return Ok(key.trim().to_owned());
    }
    std::env::var("PUSHGATE_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| "no API key: set PUSHGATE_API_KEY or pass --api-key-file".to_owned())
}

/// `--server` as the client takes it (an `http://` or `https://` URL), or why not.
fn check_server(server: &str) -> Result<(), String> {
    if server.starts_with("http://") || server.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "--server {server:?}: give an http:// or https:// URL"
        ))
    }
}

/// Which gateway, with which key: `--server`, `--api-key-file`, `--ca-file`, the same for every
/// command that calls the API.
#[derive(Debug, clap::Args)]
pub struct Connect {
    /// The gateway's API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A file holding the API key (else PUSHGATE_API_KEY).
    #[arg(long)]
    pub api_key_file: Option<std::path::PathBuf>,
    /// PEM certificates to trust for an https:// --server (a private CA, a self-signed
    /// certificate), beside Mozilla's roots.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl Connect {
    /// The API key, or what is missing.
    pub fn key(&self) -> Result<String, String> {
        api_key(self.api_key_file.as_deref())
    }

    /// The client for `--server` with `key`, or why not.
    pub fn api(&self, key: String) -> Result<Api, String> {
        check_server(&self.server)?;
        Api::new(&self.server, key, self.ca_file.as_deref())
    }
}

/// Requests to one gateway with one key.
pub struct Api {
    client: Client<HttpsConnector<HttpConnector>, Full<bytes::Bytes>>,
    base: String,
    key: String,
}

impl Api {
    /// `server` is an `http://` or `https://` URL (checked by the caller); `ca_file`'s PEM
    /// certificates are trusted beside Mozilla's roots.
    pub fn new(server: &str, key: String, ca_file: Option<&Path>) -> Result<Api, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(f) = ca_file {
            let certs = CertificateDer::pem_file_iter(f)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| format!("--ca-file {}: {e}", f.display()))?;
            if certs.is_empty() {
                return Err(format!("--ca-file {}: no certificate in it", f.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("--ca-file {}: {e}", f.display()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Api {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: server.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// POSTs JSON; returns the status and the parsed answer.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let req = http::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.key))
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .context("building the request")?;
        self.send(req).await
    }

    /// GETs; returns the status and the parsed answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let req = http::Request::get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key))
            .body(Full::new(bytes::Bytes::new()))
            .context("building the request")?;
        self.send(req).await
    }

    /// DELETEs; returns the status and the parsed answer (`Null` for an empty one).
    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let req = http::Request::delete(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key))
            .body(Full::new(bytes::Bytes::new()))
            .context("building the request")?;
        self.send(req).await
    }

    async fn send(&self, req: http::Request<Full<bytes::Bytes>>) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}
