//! The entry points of the fuzz targets in `fuzz/` — the parsers a stranger reaches — shared
//! with the corpus replay test (`tests/it/fuzz_corpus.rs`), so every input the fuzzer kept or
//! that once crashed runs again in CI. Each takes arbitrary bytes and must neither panic nor
//! hang. Not part of the gateway's API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use crate::auth::Caller;
use crate::config::{Config, Scope};
use crate::ingest::mcmt::{self, Recipient};

/// A configuration with two apps, loaded once from files written to a folder of its own (a
/// signing key made for the purpose).
fn config() -> &'static (PathBuf, Arc<Config>) {
    static CONFIG: OnceLock<(PathBuf, Arc<Config>)> = OnceLock::new();
    CONFIG.get_or_init(|| {
        // A fresh folder of its own (random name, 0700), kept for the process's life.
        let dir = tempfile::Builder::new()
            .prefix("pushgate-fuzz-")
            .tempdir()
            .expect("a folder for the fuzz configuration")
            .keep();
        let key = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .and_then(|k| k.to_pkcs8v1())
        .expect("a P-256 key");
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(key.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        std::fs::write(dir.join("AuthKey_FUZZ000001.p8"), pem).expect("the key file");
        let mut text = String::from(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\nsqlite = \"spool.db\"\n\n\
             [smtp]\nlisten = \"127.0.0.1:0\"\n\n",
        );
        for (app, topic) in [("shop", "com.example.shop"), ("news", "com.example.news")] {
            text.push_str(&format!(
                "[[apps]]\nname = \"{app}\"\ntopic = \"{topic}\"\nenvironment = \"sandbox\"\n\
                 smtp_domains = [\"push.{app}.example\"]\nkey_file = \"AuthKey_FUZZ000001.p8\"\n\
                 key_id = \"FUZZ000001\"\nteam_id = \"TEAM123456\"\n\n"
            ));
        }
        let file = dir.join("pushgate.toml");
        std::fs::write(&file, text).expect("the configuration");
        let config = Config::load(&file).expect("the fuzz configuration loads");
        (dir, Arc::new(config))
    })
}

/// A caller that may use every app.
fn admin() -> Caller {
    Caller {
        name: "fuzz".to_owned(),
        scope: Scope::All,
        admin: true,
    }
}

/// A fixed clock: the same input takes the same path every run.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// An MCMT message (SMTP's DATA, the injector's template) for three recipients of two apps,
/// one of them a token.
pub fn mcmt_message(data: &[u8]) {
    let (_, config) = config();
    let recipients = [
        Recipient {
            app: "shop".to_owned(),
            local: "a".repeat(64),
            dest_id: None,
        },
        Recipient {
            app: "news".to_owned(),
            local: "devices".to_owned(),
            dest_id: Some("b".repeat(64)),
        },
        Recipient {
            app: "shop".to_owned(),
            local: "x".to_owned(),
            dest_id: None,
        },
    ];
    let _ = mcmt::message_id(data);
    let _ = mcmt::parse(data, &recipients, config, now());
}

/// A `POST /v1/notifications` body.
pub fn notification_json(data: &[u8]) {
    let (_, config) = config();
    let _ = crate::ingest::json::parse(data, &admin(), config, now());
}

/// A configuration file (what `pushgate config check` and a SIGHUP read), as UTF-8; paths in
/// it are relative to a folder that holds one key file.
pub fn config_file(data: &[u8]) {
    let (dir, _) = config();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::load_str(text, &dir.join("fuzzed.toml"));
    }
}

/// Where [`config_file`] resolves relative paths, for tests.
pub fn config_dir() -> &'static Path {
    &config().0
}

/// An SMTP session: `data` sent whole to the listener (over loopback, to a gateway's SMTP
/// listener and spool started once), then the answers read until it closes. What a
/// stranger's client can send before any AUTH.
pub fn smtp_session(data: &[u8]) {
    use std::io::{Read, Write};
    static SERVER: OnceLock<(tokio::runtime::Runtime, std::net::SocketAddr)> = OnceLock::new();
    // A session's task runs on the listener's runtime, which catches its panic: the hook
    // notes one there, and the input is failed for it below.
    static PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    const THREAD: &str = "fuzz-smtp";
    let (_, addr) = SERVER.get_or_init(|| {
        let (dir, config) = config();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(THREAD) {
                PANICKED.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            previous(info);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(THREAD)
            .enable_all()
            .build()
            .expect("a runtime for the SMTP listener");
        let addr = runtime.block_on(async {
            let spool = crate::spool::Store::sqlite(
                &dir.join("smtp-spool.db"),
                crate::spool::SpoolOptions::default(),
            )
            .expect("the fuzz spool");
            let intake = Arc::new(crate::ingest::Intake::standalone(Arc::clone(config), spool));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let addr = listener.local_addr().expect("its address");
            tokio::spawn(crate::smtp::serve(
                listener,
                intake,
                None,
                tokio_util::sync::CancellationToken::new(),
            ));
            addr
        });
        (runtime, addr)
    });
    let mut s = std::net::TcpStream::connect(addr).expect("the SMTP listener takes connections");
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answers = Vec::new();
    if let Err(e) = s.read_to_end(&mut answers)
        && matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    {
        panic!("the SMTP session did not end within 10 s of its input's end");
    }
    // The session's task has ended (its connection closed); a panic in it was noted first.
    assert!(
        !PANICKED.swap(false, std::sync::atomic::Ordering::SeqCst),
        "the SMTP session panicked"
    );
}
