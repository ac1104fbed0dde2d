//! A running API on a port-0 listener, with a real spool file, and an HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;

use gateway::auth::key_sha256_hex;
use gateway::config::Config;
use gateway::spool::{Spool, Store};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::harness::apns_fixtures;
use crate::live::Backend;

pub const SHOP_KEY: &str = "shop-key-0123456789";
pub const ALL_KEY: &str = "all-apps-key-0123456789";
pub const ADMIN_KEY: &str = "admin-key-0123456789";

pub struct TestApi {
    pub addr: SocketAddr,
    /// The SMTP listener, when the configuration has `[smtp]`.
    pub smtp: Option<SocketAddr>,
    pub spool: Store,
    pub dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<Result<(), gateway::server::ServeError>>,
    smtp_stop: tokio_util::sync::CancellationToken,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.server.abort();
        self.smtp_stop.cancel();
    }
}

/// The test configuration: `storage` is the spool's keys, `*_extra` lines added to `[server]`
/// and `[storage]`.
fn config_text(storage: &str, server_extra: &str, storage_extra: &str) -> String {
    format!(
        r#"
[server]
{server_extra}

[storage]
{storage}
{storage_extra}

[[api_keys]]
name = "shop"
key_sha256 = "{shop}"
apps = ["shop"]

[[api_keys]]
name = "all"
key_sha256 = "{all}"
apps = ["*"]

[[api_keys]]
name = "admin"
key_sha256 = "{admin}"
admin = true

[[apps]]
name = "shop"
smtp_domains = ["push.shop.example"]
topic = "com.example.shop"
environment = "sandbox"
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
default_ttl_s = 3600

[[apps]]
name = "news"
topic = "com.example.news"
environment = "sandbox"
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
"#,
        shop = key_sha256_hex(SHOP_KEY),
        all = key_sha256_hex(ALL_KEY),
        admin = key_sha256_hex(ADMIN_KEY),
    )
}

impl TestApi {
    /// Notifications in the spool, whatever their state.
    pub async fn stored(&self) -> u64 {
        self.spool
            .counts()
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    pub async fn start() -> TestApi {
        TestApi::start_on(&Backend::Sqlite).await
    }

    /// On `backend`'s spool.
    pub async fn start_on(backend: &Backend) -> TestApi {
        TestApi::start_with_on(backend, "", "").await
    }

    /// With lines added to `[server]` and `[storage]`, on `backend`'s spool.
    pub async fn start_with_on(
        backend: &Backend,
        server_extra: &str,
        storage_extra: &str,
    ) -> TestApi {
        TestApi::start_sections_on(backend, server_extra, storage_extra, "", |_| ()).await
    }

    /// With `sections` appended to the file (`[smtp]` and the like), after `prepare` has put
    /// what they name into the folder.
    pub async fn start_sections(
        server_extra: &str,
        storage_extra: &str,
        sections: &str,
        prepare: impl FnOnce(&std::path::Path),
    ) -> TestApi {
        TestApi::start_sections_on(
            &Backend::Sqlite,
            server_extra,
            storage_extra,
            sections,
            prepare,
        )
        .await
    }

    /// As [`TestApi::start_sections`], on `backend`'s spool.
    pub async fn start_sections_on(
        backend: &Backend,
        server_extra: &str,
        storage_extra: &str,
        sections: &str,
        prepare: impl FnOnce(&std::path::Path),
    ) -> TestApi {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            apns_fixtures().join("AuthKey_ABC123DEFG.p8"),
            dir.path().join("AuthKey_ABC123DEFG.p8"),
        )
        .unwrap();
        prepare(dir.path());
        let file = dir.path().join("pushgate.toml");
        std::fs::write(
            &file,
            format!(
                "{}\n{sections}",
                config_text(&backend.storage(dir.path()), server_extra, storage_extra)
            ),
        )
        .unwrap();
        let config = Arc::new(Config::load(&file).unwrap());
        let spool = Store::open(&config.storage).await.unwrap();
        assert_eq!(spool.backend(), backend.name());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let intake = gateway::ingest::Intake::standalone(Arc::clone(&config), spool.clone());
        let state = Arc::new(gateway::http::ApiState::new(Arc::new(intake)));
        let smtp_stop = tokio_util::sync::CancellationToken::new();
        let smtp = match &config.smtp {
            Some(s) => {
                let l = tokio::net::TcpListener::bind(s.listen).await.unwrap();
                let at = l.local_addr().unwrap();
                let tls = s.tls.as_ref().map(|f| gateway::smtp::acceptor(f).unwrap());
                tokio::spawn(gateway::smtp::serve(
                    l,
                    Arc::clone(&state.intake),
                    tls,
                    smtp_stop.clone(),
                ));
                Some(at)
            }
            None => None,
        };
        let server = tokio::spawn(gateway::server::run(
            listener,
            state,
            std::future::pending(),
        ));
        TestApi {
            addr,
            smtp,
            spool,
            dir,
            server,
            smtp_stop,
        }
    }

    /// Sends a request; returns status, headers and the body parsed as JSON (Null if empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (u16, http::HeaderMap, serde_json::Value) {
        self.call_typed(method, path, key, body, "application/json")
            .await
    }

    pub async fn call_typed(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
        content_type: &str,
    ) -> (u16, http::HeaderMap, serde_json::Value) {
        self.call_with(method, path, key, body, &[("content-type", content_type)])
            .await
    }

    /// As [`TestApi::call`], with `headers` (a JSON content type unless they name one).
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, http::HeaderMap, serde_json::Value) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if !headers
            .iter()
            .any(|(h, _)| h.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/json");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = req
            .body(Full::new(bytes::Bytes::from(
                body.unwrap_or_default().to_owned(),
            )))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        };
        (status, headers, json)
    }

    /// Submits one notification document and returns its ids (asserting 202).
    pub async fn submit(&self, key: &str, body: &str) -> Vec<apns::ApnsId> {
        let (status, _, json) = self
            .call("POST", "/v1/notifications", Some(key), Some(body))
            .await;
        assert_eq!(status, 202, "{json}");
        json["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| apns::ApnsId::parse(v.as_str().unwrap()).unwrap())
            .collect()
    }
}

/// A self-signed certificate for 127.0.0.1, written as `{stem}.pem` and `{stem}-key.pem`.
pub fn write_tls(dir: &std::path::Path, stem: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).unwrap();
}
