//! A running gateway's HTTP API as the CLI calls it (`send`, `status`): the key from a file or
//! `PUSHGATE_API_KEY`, JSON in and out.

use std::path::Path;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
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

/// `--server` as the client takes it (plain HTTP), or why not.
pub fn check_server(server: &str) -> Result<(), String> {
    if server.starts_with("http://") {
        Ok(())
    } else {
        Err(format!(
            "--server {server:?}: only http:// URLs are supported"
        ))
    }
}

/// Requests to one gateway with one key.
pub struct Api {
    client: Client<HttpConnector, Full<bytes::Bytes>>,
    base: String,
    key: String,
}

impl Api {
    /// `server` is an `http://` URL (checked by the caller).
    pub fn new(server: &str, key: String) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: server.trim_end_matches('/').to_owned(),
            key,
        }
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
