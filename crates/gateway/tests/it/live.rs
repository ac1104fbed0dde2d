//! A whole gateway in this process — spool file, dispatch, API on a port-0 listener — sending
//! to the APNs simulator over TLS + HTTP/2, for tests that need to reach inside (fault
//! injection in the spool's writer, its commit count) while everything else is real.

use std::sync::Arc;
use std::time::Duration;

use apns_mock::RunningMock;
use gateway::config::Config;
use gateway::dispatch::{DispatchOptions, Dispatcher};
use gateway::http::ApiState;
use gateway::server::{Gateway, Reloader};
use gateway::spool::{NewRequest, Spool, State, Store};

use crate::harness::apns_fixtures;

pub const TOPIC: &str = "com.example.shop";
/// The API key of every [`Live`] gateway (all apps).
pub const KEY: &str = "live-test-key";

/// The spool a [`Live`] gateway runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(gateway::config::Postgres),
}

impl Backend {
    /// The `[storage]` keys of a configuration in `dir` (for PostgreSQL, its URL in a file
    /// there, as an operator would keep it).
    pub fn storage(&self, dir: &std::path::Path) -> String {
        match self {
            Backend::Sqlite => r#"sqlite = "spool.db""#.to_owned(),
            Backend::Postgres(pg) => {
                std::fs::write(dir.join("pg-url"), pg.url.expose()).unwrap();
                "postgres_url_file = \"pg-url\"\npool_size = 8".to_owned()
            }
        }
    }

    /// `sqlite` or `postgres`, for names that must differ between the two runs of a test
    /// (the process's metrics are shared).
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Writes the configuration of `apps` (from [`app_section`]) on this spool in `dir`.
    pub fn write_config(&self, dir: &std::path::Path, apps: &str) -> Config {
        write_config_on(dir, &self.storage(dir), apps)
    }

    /// The spool a [`Live`] gateway on this backend in `dir` will open, for filling before it
    /// starts.
    pub async fn spool_in(&self, dir: &tempfile::TempDir) -> Store {
        match self {
            Backend::Sqlite => spool_in(dir),
            Backend::Postgres(pg) => Store::postgres(pg, gateway::spool::SpoolOptions::default())
                .await
                .unwrap(),
        }
    }
}

pub struct Live {
    pub state: Arc<ApiState>,
    pub dispatch: Arc<Dispatcher>,
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    backend: Backend,
    reloader: Reloader,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

/// A simulator that checks provider tokens signed by the fixture key.
pub fn mock() -> apns_mock::MockApnsBuilder {
    apns_mock::MockApns::builder()
        .jwt_key(std::fs::read(apns_fixtures().join("AuthKey_ABC123DEFG.pub.pem")).unwrap())
}

/// A simulator that trusts another key: every provider token the gateway signs is refused
/// (`InvalidProviderToken`), so an app sending to it halts.
pub async fn refusing_mock() -> RunningMock {
    apns_mock::MockApns::builder()
        .jwt_key(std::fs::read(apns_fixtures().join("other-jwt.pub.pem")).unwrap())
        .spawn()
        .await
        .unwrap()
}

/// Writes `apps` (from [`app_section`]) under `storage` (the `[storage]` section's keys) and
/// the API key every [`Live`] has.
pub fn write_config_on(dir: &std::path::Path, storage: &str, apps: &str) -> Config {
    let file = dir.join("pushgate.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[storage]
{storage}

[[api_keys]]
name = "live"
key_sha256 = "{key}"
apps = ["*"]
admin = true
{apps}"#,
            key = gateway::auth::key_sha256_hex(KEY),
        ),
    )
    .unwrap();
    Config::load(&file).unwrap()
}

/// The `[[apps]]` table of an app `name` (with `shop`'s topic) that sends to `sim` with the
/// fixture key, whose files it puts in `dir`.
pub fn app_section(
    dir: &std::path::Path,
    sim: &RunningMock,
    name: &str,
    app_extra: &str,
) -> String {
    app_section_with(dir, sim, name, TOPIC, app_extra)
}

/// As [`app_section`], with the topic `topic`.
pub fn app_section_with(
    dir: &std::path::Path,
    sim: &RunningMock,
    name: &str,
    topic: &str,
    app_extra: &str,
) -> String {
    let p8 = dir.join("AuthKey_ABC123DEFG.p8");
    if !p8.exists() {
        std::fs::copy(apns_fixtures().join("AuthKey_ABC123DEFG.p8"), &p8).unwrap();
    }
    let ca = format!("sim-ca-{}.pem", sim.addr().port());
    std::fs::write(dir.join(&ca), sim.ca_pem().unwrap()).unwrap();
    format!(
        r#"
[[apps]]
name = "{name}"
topic = "{topic}"
environment = "sandbox"
endpoint = "{endpoint}"
ca_file = "{ca}"
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
{app_extra}
"#,
        endpoint = sim.endpoint(),
    )
}

impl Live {
    pub async fn start(sim: &RunningMock, app_extra: &str, options: DispatchOptions) -> Live {
        Live::start_on(&Backend::Sqlite, sim, app_extra, options).await
    }

    /// As [`Live::start`], on `backend`'s spool.
    pub async fn start_on(
        backend: &Backend,
        sim: &RunningMock,
        app_extra: &str,
        options: DispatchOptions,
    ) -> Live {
        let dir = tempfile::tempdir().unwrap();
        let apps = app_section(dir.path(), sim, "shop", app_extra);
        let config = write_config_on(dir.path(), &backend.storage(dir.path()), &apps);
        Live::start_in(dir, config, options).await
    }

    /// The configuration of one app `shop` sending to `sim`, on this gateway's spool, written
    /// in its folder (for [`Live::apply`]).
    pub fn config(&self, sim: &RunningMock, app_extra: &str) -> Config {
        self.config_for(sim, "shop", app_extra)
    }

    /// As [`Live::config`], for an app called `name`.
    pub fn config_for(&self, sim: &RunningMock, name: &str, app_extra: &str) -> Config {
        let dir = self.dir.path();
        let apps = app_section(dir, sim, name, app_extra);
        write_config_on(dir, &self.backend.storage(dir), &apps)
    }

    /// Starts a gateway on `config`, written in `dir` (which may hold a spool already).
    pub async fn start_in(
        dir: tempfile::TempDir,
        config: Config,
        options: DispatchOptions,
    ) -> Live {
        let backend = match &config.storage.postgres {
            Some(pg) => Backend::Postgres(pg.clone()),
            None => Backend::Sqlite,
        };
        let gateway = Gateway::start(config, options).await.unwrap();
        assert_eq!(gateway.state.spool.backend(), backend.name());
        let (state, dispatch) = (Arc::clone(&gateway.state), Arc::clone(&gateway.dispatch));
        let reloader = gateway.reloader();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let _ = gateway
                .serve(listener, None, None, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Live {
            state,
            dispatch,
            addr,
            dir,
            backend,
            reloader,
            stop: Some(stop),
            served: Some(served),
        }
    }

    pub fn spool(&self) -> &Store {
        &self.state.spool
    }

    /// Commits `requests` as every way in does, and hands them to dispatch; answers their
    /// submission's id.
    pub async fn submit(&self, requests: Vec<NewRequest>) -> gateway::spool::RequestId {
        let submission = gateway::ingest::Submission::new(None, requests);
        match self.state.intake.submit(submission).await.unwrap() {
            gateway::ingest::Accepted::Committed(id) => id,
            other => panic!("not committed: {other:?}"),
        }
    }

    /// Reads the configuration file again and applies it, as SIGHUP does.
    pub fn reload(&self) {
        let config = Config::load(&self.dir.path().join("pushgate.toml")).unwrap();
        self.apply(config);
    }

    /// Puts `config` in force, as a reload does.
    pub fn apply(&self, config: Config) {
        self.reloader.reload(config);
    }

    /// Every notification the spool holds, in any state.
    pub async fn held(&self) -> u64 {
        self.spool()
            .counts()
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// Notifications in `state`.
    pub async fn count(&self, state: State) -> u64 {
        self.spool()
            .counts()
            .await
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .sum()
    }

    /// `GET /readyz` with the (admin) key: status and body, details included.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        self.get("/readyz").await
    }

    /// `method path` with the API key and a JSON `body` (none when empty): status and JSON
    /// body (`Null` when empty).
    pub async fn call(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        self.call_as(KEY, method, path, body).await
    }

    /// As [`Live::call`], with API key `key`.
    pub async fn call_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("authorization", format!("Bearer {key}"));
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        (status, value)
    }

    /// `GET path` with the API key: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let req = hyper::Request::get(format!("http://{}{path}", self.addr))
            .header("authorization", format!("Bearer {KEY}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// Shuts the gateway down in order and starts it again on the same folder, spool and
    /// configuration file.
    pub async fn restart(mut self, options: DispatchOptions) -> Live {
        let config = Config::load(&self.dir.path().join("pushgate.toml")).unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        self.stop().await;
        Live::start_in(dir, config, options).await
    }

    /// Stops serving and shuts the gateway down in order (streams finish, spool closes).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.served.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(t) = &self.served {
            t.abort();
        }
    }
}

/// A request for app `shop` (its topic, as ingest would set it) with `n` tokens from `first`.
pub fn shop(first: u64, n: u64) -> NewRequest {
    let mut r = crate::harness::request("shop", first, n);
    r.topic = Some(apns::Topic::parse(TOPIC).unwrap());
    r
}

pub use apns_mock::testing::until;

/// The value of a counter (summed over its labels) in the process's `/metrics` text.
pub fn counter(name: &str) -> f64 {
    counter_where(name, "")
}

/// As [`counter`], over the lines that hold `label` (`app="shop"`, say).
pub fn counter_where(name: &str, label: &str) -> f64 {
    let text = gateway::metrics::handle().unwrap().render();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The spool a [`Live`] gateway in `dir` will open, for filling before it starts.
pub fn spool_in(dir: &tempfile::TempDir) -> Store {
    Store::sqlite(
        &dir.path().join("spool.db"),
        gateway::spool::SpoolOptions::default(),
    )
    .unwrap()
}
