//! A `pushgate serve` process against a `pushgate mock-apns` process, and the API through curl.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gateway::auth::key_sha256_hex;
use serde_json::{Value, json};

use crate::harness::*;

pub const KEY: &str = "e2e-admin-key-0123456789";

/// The simulator with the fixture key trusted, plus `args`.
pub fn sim(args: &[&str]) -> Sim {
    let key = fixtures().join("AuthKey_ABC123DEFG.pub.pem");
    let mut all = vec![
        "--jwt-key",
        key.to_str().unwrap(),
        "--record-limit",
        "200000",
    ];
    all.extend_from_slice(args);
    start_sim(&all)
}

pub struct Gw {
    pub child: Option<Child>,
    pub url: String,
    /// The SMTP listener's address, when the configuration has `[smtp]`.
    pub smtp: Option<String>,
    /// The metrics listener's URL (`http://…/metrics`), with `[server] metrics_listen`.
    pub metrics: Option<String>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The spool a [`Gw`] runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(gateway::config::Postgres),
}

impl Backend {
    /// A fresh database on the tests' PostgreSQL server; `None` where PostgreSQL is not
    /// installed (outside CI).
    pub fn postgres() -> Option<Backend> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(gateway::local_postgres::database())
            .map(Backend::Postgres)
    }

    /// Puts in `dir` what a configuration on this spool names: for PostgreSQL, the URL in
    /// `pg-url` (which [`write_config_with`] then uses).
    pub fn prepare(&self, dir: &std::path::Path) {
        if let Backend::Postgres(pg) = self {
            std::fs::write(dir.join("pg-url"), pg.url.expose()).unwrap();
        }
    }
}

/// Writes a configuration for app `shop` (topic com.example.demo) against `sim`, signing with
/// `key_file` (the fixture key by default); `app_extra` adds lines to the app. The spool is
/// the PostgreSQL database in the folder's `pg-url` when there is one ([`Backend::prepare`]),
/// else `spool.db`.
pub fn write_config(dir: &std::path::Path, sim: &Sim, key_file: &str, app_extra: &str) -> PathBuf {
    write_config_with(dir, sim, key_file, app_extra, "")
}

/// As [`write_config`], with `sections` (`[smtp]`, `[log]`, `[[webhooks]]`...) at the end.
pub fn write_config_with(
    dir: &std::path::Path,
    sim: &Sim,
    key_file: &str,
    app_extra: &str,
    sections: &str,
) -> PathBuf {
    let p8 = dir.join("AuthKey_ABC123DEFG.p8");
    if !p8.exists() {
        std::fs::copy(fixtures().join("AuthKey_ABC123DEFG.p8"), &p8).unwrap();
    }
    let storage = if dir.join("pg-url").exists() {
        "postgres_url_file = \"pg-url\"\npool_size = 8"
    } else {
        "sqlite = \"spool.db\""
    };
    let file = dir.join("pushgate.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace_s = 10

[storage]
{storage}

[[api_keys]]
name = "e2e"
key_sha256 = "{hash}"
admin = true

[[apps]]
name = "shop"
topic = "com.example.demo"
environment = "sandbox"
endpoint = "{endpoint}"
ca_file = "{ca}"
key_file = "{key_file}"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
{app_extra}

{sections}
"#,
            hash = key_sha256_hex(KEY),
            endpoint = sim.endpoint,
            ca = sim.ca.display(),
        ),
    )
    .unwrap();
    file
}

impl Gw {
    pub fn start(sim: &Sim, app_extra: &str) -> Gw {
        Gw::start_on(&Backend::Sqlite, sim, app_extra)
    }

    /// On `backend`'s spool.
    pub fn start_on(backend: &Backend, sim: &Sim, app_extra: &str) -> Gw {
        Gw::start_with_on(backend, sim, app_extra, "")
    }

    /// On `backend`'s spool, with `sections` at the end of the configuration.
    pub fn start_with_on(backend: &Backend, sim: &Sim, app_extra: &str, sections: &str) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        backend.prepare(dir.path());
        let config = write_config_with(
            dir.path(),
            sim,
            "AuthKey_ABC123DEFG.p8",
            app_extra,
            sections,
        );
        let mut gw = Gw::new(dir, config);
        gw.spawn();
        gw
    }

    /// Not started yet.
    pub fn new(dir: tempfile::TempDir, config: PathBuf) -> Gw {
        Gw {
            child: None,
            url: String::new(),
            smtp: None,
            metrics: None,
            dir,
            config,
        }
    }

    /// What the process has logged (warnings and errors) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Starts (or restarts) the process on the same configuration and spool.
    pub fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    /// As [`Gw::spawn`], with `env` added to the process's environment.
    pub fn spawn_with(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .env("PUSHGATE_TEST_HOOK_SECRET", "hook-secret")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("serve printed its address").unwrap();
        self.url = line
            .strip_prefix("pushgate listening on ")
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned();
        let text = std::fs::read_to_string(&self.config).unwrap();
        if text.lines().any(|l| l.trim() == "[smtp]") {
            let line = lines
                .next()
                .expect("serve printed its SMTP address")
                .unwrap();
            self.smtp = Some(
                line.strip_prefix("pushgate smtp on ")
                    .unwrap_or_else(|| panic!("{line}"))
                    .to_owned(),
            );
        }
        if text
            .lines()
            .any(|l| l.trim_start().starts_with("metrics_listen"))
        {
            let line = lines
                .next()
                .expect("serve printed its metrics address")
                .unwrap();
            self.metrics = Some(
                line.strip_prefix("pushgate metrics on ")
                    .unwrap_or_else(|| panic!("{line}"))
                    .to_owned(),
            );
        }
        self.child = Some(child);
        if self.dir.path().join("pg-url").exists() {
            assert!(
                !self.dir.path().join("spool.db").exists(),
                "a gateway on PostgreSQL made a SQLite spool"
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// Sends a signal with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns its code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let mut c = self.child.take().unwrap();
        poll_until("serve exiting", within, || match c.try_wait().unwrap() {
            Some(status) => Ok(status.code()),
            None => Err("still running".to_owned()),
        })
    }

    /// Calls the API with curl; returns status and JSON.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Authorization: Bearer {KEY}"),
        ]);
        if let Some(b) = body {
            let f = self.dir.path().join("body.json");
            std::fs::write(&f, b.to_string()).unwrap();
            cmd.args(["-H", "content-type: application/json", "--data-binary"])
                .arg(format!("@{}", f.display()));
        }
        let out = run(cmd.arg(format!("{}{path}", self.url)));
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (
            status.trim().parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    /// Submits and returns the ids (asserting 202).
    pub fn submit(&self, n: Value) -> Vec<String> {
        let (status, json) = self.api("POST", "/v1/notifications", Some(&n));
        assert_eq!(status, 202, "{json}");
        json["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// The status documents of `ids`, in the order asked.
    pub fn lookup(&self, ids: &[String]) -> Vec<Value> {
        let mut out = Vec::new();
        for chunk in ids.chunks(10_000) {
            let (status, json) = self.api(
                "POST",
                "/v1/notifications/lookup",
                Some(&json!({ "ids": chunk })),
            );
            assert_eq!(status, 200, "{json}");
            out.extend(json["notifications"].as_array().unwrap().iter().cloned());
        }
        out
    }

    /// Waits until every id is in a final state; returns their documents.
    pub fn wait_final(&self, ids: &[String], within: Duration) -> Vec<Value> {
        poll_until("every notification final", within, || {
            let docs = self.lookup(ids);
            let final_ = docs
                .iter()
                .filter(|d| {
                    matches!(
                        d["state"].as_str(),
                        Some("delivered" | "failed" | "expired")
                    )
                })
                .count();
            if final_ == ids.len() {
                Ok(docs)
            } else {
                Err(format!("{final_} of {} final", ids.len()))
            }
        })
    }
}

pub use apns_mock::testing::{poll_until, token_hex as token, wait_until};
