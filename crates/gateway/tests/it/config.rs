use std::path::Path;
use std::time::Duration;

use gateway::config::{Config, Credential, Environment, Scope, WebhookEvent};

use crate::harness::apns_fixtures;

/// A folder with the test credentials copied in, so relative paths resolve against it.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "AuthKey_ABC123DEFG.p8",
        "client-legacy.p12",
        "client.pem",
        "client-key.pem",
        "client-combined.pem",
        "client-key-encrypted.pem",
        "client-key-legacy.pem",
        "ca.pem",
        "p384.p8",
    ] {
        std::fs::copy(apns_fixtures().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("p12-password"), "secret\n").unwrap();
    dir
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("pushgate.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const KEY_HASH: &str = "3f8a0f1c3b0d6a9e8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbb";
/// Another key's (one key may be configured once).
const OTHER_HASH: &str = "4f8a0f1c3b0d6a9e8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbb";

#[test]
fn a_complete_file_loads_with_defaults_and_relative_paths() {
    let dir = folder();
    let path = write(
        dir.path(),
        &format!(
            r#"
[server]
listen = "127.0.0.1:9090"

[[api_keys]]
name = "backend"
key_sha256 = "{KEY_HASH}"
apps = ["shop"]

[[api_keys]]
name = "ops"
key_sha256 = "{OTHER_HASH}"
admin = true

[[apps]]
name = "shop"
smtp_domains = ["shop.example.com"]
topic = "com.example.shop"
environment = "sandbox"
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"

[[apps]]
name = "legacy"
topic = "com.example.demo"
environment = "production"
endpoint = "https://127.0.0.1:2197"
ca_file = "ca.pem"
certificate = "client-legacy.p12"
certificate_password_file = "p12-password"
max_connections = 2
idle_timeout_s = 60

[[apps.credentials]]
certificate = "client.pem"
certificate_key = "client-key.pem"

[[webhooks]]
url = "https://hooks.example.com/push"
events = ["failed", "expired"]
"#
        ),
    );
    let c = Config::load(&path).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.server.max_body_bytes, 16 * 1024 * 1024);
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.storage.sqlite, dir.path().join("pushgate-data/spool.db"));
    assert_eq!(c.storage.retention, Duration::from_secs(604_800));
    assert_eq!(c.storage.max_pending, 10_000_000);
    assert_eq!(c.api_keys[0].scope, Scope::Apps(vec!["shop".into()]));
    assert_eq!(c.api_keys[1].scope, Scope::All);
    assert!(c.api_keys[1].admin);
    assert_eq!(c.api_keys[0].key_sha256[0], 0x3f);
    let shop = c.app("shop").unwrap();
    assert_eq!(shop.environment, Environment::Sandbox);
    assert_eq!(shop.endpoint, apns::Endpoint::sandbox());
    assert!(
        matches!(&shop.credentials[..], [Credential::Token { file, .. }] if file == &dir.path().join("AuthKey_ABC123DEFG.p8"))
    );
    assert_eq!((shop.max_connections, shop.max_attempts), (4, 8));
    assert_eq!(shop.response_timeout, Duration::from_millis(10_000));
    assert_eq!(shop.idle_timeout, Duration::from_secs(300));
    assert_eq!(shop.default_ttl, Duration::from_secs(86_400));
    assert!(shop.suppress_dead_tokens);
    let legacy = c.app("legacy").unwrap();
    assert_eq!(
        legacy.credentials.len(),
        2,
        "inline credential plus one [[apps.credentials]]"
    );
    assert!(
        matches!(&legacy.credentials[0], Credential::Certificate { identity, .. } if identity.info().topics[0] == "com.example.demo")
    );
    assert_eq!(legacy.extra_roots.len(), 1);
    assert_eq!(
        (legacy.max_connections, legacy.idle_timeout),
        (2, Duration::from_secs(60))
    );
    assert_eq!(
        c.webhooks[0].events,
        vec![WebhookEvent::Failed, WebhookEvent::Expired]
    );
    assert!(c.smtp.is_none());
    assert_eq!(c.log.mode, 0o644);
}

/// One file with a mistake of every kind: all are reported together, each at its line.
#[test]
fn every_mistake_is_reported_at_once_with_file_line_and_key() {
    let dir = folder();
    let text = r#"[server]
listen = "localhost"
max_body_bytes = 12
colour = "blue"

[storage]
retention_s = -5

[[api_keys]]
name = "backend"
key_sha256 = "not-a-hash"
apps = ["nosuchapp"]

[log]
mode = "rw-r--r--"

[[webhooks]]
url = "ftp://x"
events = ["failed", "exploded"]

[[apps]]
name = "Shop!"
topic = "com.example.shop"
environment = "staging"
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
certificate = "client-legacy.p12"
idle_timeout_s = 0
speed = 11

[[apps]]
name = "wrongpass"
topic = "com.example.demo"
environment = "production"
certificate = "client-legacy.p12"
certificate_password_file = "missing-file"

[[apps]]
name = "badkey"
topic = "com.example.demo"
environment = "production"
key_file = "p384.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"

[[apps]]
name = "nokey"
topic = "com.example.demo"
environment = "production"
"#;
    let path = write(dir.path(), text);
    let err = Config::load(&path).unwrap_err();
    let found: Vec<(Option<usize>, &str)> = err
        .problems
        .iter()
        .map(|p| (p.line, p.key.as_str()))
        .collect();
    let expect: &[(usize, &str)] = &[
        (2, "server.listen"),
        (3, "server.max_body_bytes"),
        (4, "server.colour"),
        (7, "storage.retention_s"),
        (11, "api_keys[0].key_sha256"),
        (12, "api_keys[0].apps"),
        (15, "log.mode"),
        (18, "webhooks[0].url"),
        (19, "webhooks[0].events"),
        (22, "apps[0].name"),
        (24, "apps[0].environment"),
        (28, "apps[0].certificate"),
        (29, "apps[0].idle_timeout_s"),
        (30, "apps[0].speed"),
        (37, "apps[1].certificate_password_file"),
        (43, "apps[2].key_file"),
        (47, "apps[3].key_file"),
    ];
    for (line, key) in expect {
        assert!(
            found.contains(&(Some(*line), key)),
            "no problem for {key} at line {line}; got:\n{err}"
        );
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "{}:29: apps[0].idle_timeout_s: 0 is out of range (1 to 86400)",
            path.display()
        )),
        "{text}"
    );
    assert!(text.contains("exactly one credential kind"), "{text}");
    assert!(text.contains("unknown event \"exploded\""), "{text}");
    assert!(
        text.contains("p384.p8"),
        "the bad key names its file: {text}"
    );
}

/// `[server] metrics_listen` is an address, and not the API's own.
#[test]
fn the_metrics_listener_needs_an_address_of_its_own() {
    let dir = folder();
    for (value, problem) in [
        ("\"127.0.0.1:8080\"", "is server.listen too"),
        ("\"port 9100\"", "is not an address like"),
    ] {
        let path = write(
            dir.path(),
            &format!("[server]\nlisten = \"127.0.0.1:8080\"\nmetrics_listen = {value}\n"),
        );
        let err = Config::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(":3: server.metrics_listen: ") && text.contains(problem),
            "{text}"
        );
    }
    let path = write(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:8080\"\nmetrics_listen = \"127.0.0.1:9100\"\n",
    );
    let c = Config::load(&path).unwrap();
    assert_eq!(
        c.server.metrics_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9100")
    );
}

#[test]
fn bounces_take_a_relay_and_a_sender_and_never_show_the_password() {
    let dir = folder();
    std::fs::write(dir.path().join("relay-password"), "relay-secret\n").unwrap();
    let app = "[[apps]]\nname = \"shop\"\ntopic = \"com.example.shop\"\nenvironment = \"sandbox\"\n\
               key_file = \"AuthKey_ABC123DEFG.p8\"\nkey_id = \"ABC123DEFG\"\nteam_id = \"TEAM123456\"\n";
    // Without [bounces], none; an app's `bounces` defaults to on.
    let c = Config::load(&write(dir.path(), app)).unwrap();
    assert!(c.bounces.is_none());
    assert!(c.apps[0].bounces);
    let c = Config::load(&write(
        dir.path(),
        &format!(
            "[bounces]\nsmarthost = \"relay.example.com:587\"\nstarttls = true\nca_file = \"ca.pem\"\n\
             username = \"push\"\npassword_file = \"relay-password\"\n\
             from = \"MAILER-DAEMON@push.example.com\"\n\n{app}bounces = false\n"
        ),
    ))
    .unwrap();
    let b = c.bounces.as_ref().unwrap();
    assert_eq!(b.smarthost, "relay.example.com:587");
    assert!(b.starttls);
    assert_eq!(b.extra_roots.len(), 1);
    assert_eq!(b.reporting_mta, "push.example.com", "the domain of `from`");
    assert_eq!(
        (b.window, b.retry, b.retry_max, b.give_up),
        (
            Duration::from_secs(10),
            Duration::from_secs(60),
            Duration::from_secs(3600),
            Duration::from_secs(432_000)
        )
    );
    let (user, password) = b.auth.as_ref().unwrap();
    assert_eq!((user.as_str(), password.expose()), ("push", "relay-secret"));
    assert!(
        !format!("{c:?}").contains("relay-secret"),
        "Debug shows no password"
    );
    assert!(!c.apps[0].bounces);
    // Each mistake, with its line.
    let err = Config::load(&write(
        dir.path(),
        "[bounces]\nsmarthost = \"relay.example.com\"\nfrom = \"not an address\"\n\
         username = \"push\"\npassword_file = \"relay-password\"\nretry_s = 600\nretry_max_s = 60\n",
    ))
    .unwrap_err()
    .to_string();
    for want in [
        ":2: bounces.smarthost: \"relay.example.com\" is not a relay like",
        ":3: bounces.from: \"not an address\" is not an address",
        ":4: bounces.username: AUTH sends the password: set starttls = true",
        ":7: bounces.retry_max_s: is less than retry_s",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    assert!(!err.contains("relay-secret"), "{err}");
    let err = Config::load(&write(
        dir.path(),
        "[bounces]\nsmarthost = \"127.0.0.1:25\"\nfrom = \"m@push.example.com\"\n\
         reporting_mta = \"push.example.com\\r\\nX-Injected: 1\"\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(":4: bounces.reporting_mta: ") && err.contains("is not a host name"),
        "{err}"
    );
    let err = Config::load(&write(dir.path(), "[bounces]\nusername = \"push\"\n"))
        .unwrap_err()
        .to_string();
    for want in [
        "bounces.smarthost: required",
        "bounces.from: required",
        ":2: bounces.username: needs password_env or password_file",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
}

#[test]
fn a_wrong_p12_password_names_the_file_and_never_the_password() {
    let dir = folder();
    std::fs::write(dir.path().join("wrong"), "hunter2-not-it\n").unwrap();
    let path = write(
        dir.path(),
        r#"
[[apps]]
name = "legacy"
topic = "com.example.demo"
environment = "production"
certificate = "client-legacy.p12"
certificate_password_file = "wrong"
"#,
    );
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains(":6: apps[0].certificate:"), "{err}");
    assert!(
        err.contains("client-legacy.p12") && err.contains("wrong password"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn syntax_and_type_errors_name_their_line() {
    let dir = folder();
    let path = write(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = = 3\n",
    );
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.problems[0].line, Some(3), "{err}");
    let path = write(
        dir.path(),
        "[[apps]]\nname = \"a\"\nmax_connections = \"four\"\n",
    );
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.problems[0].line, Some(3), "{err}");
    assert!(err.to_string().contains("\"four\""), "{err}");
}

#[test]
fn duplicate_names_and_missing_files_are_refused() {
    let dir = folder();
    let path = write(
        dir.path(),
        r#"
[server]
tls_cert = "nope.pem"

[[apps]]
name = "a"
smtp_domains = ["b"]
topic = "t"
environment = "sandbox"
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"

[[apps]]
name = "b"
topic = "t"
environment = "sandbox"
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
"#,
    );
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("server.tls_cert: tls_cert and tls_key go together"),
        "{err}"
    );
    assert!(err.contains("\"b\" names two apps"), "{err}");
}

/// Two API keys may share a name while one replaces the other, if they agree on apps and
/// admin; the same key twice is a mistake.
#[test]
fn a_key_being_replaced_shares_its_name_and_must_agree() {
    let dir = folder();
    let key = |name: &str, secret: &str, extra: &str| {
        format!(
            "[[api_keys]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\n{extra}\n",
            gateway::auth::key_sha256_hex(secret)
        )
    };
    let app = "[[apps]]\nname = \"a\"\ntopic = \"t\"\nenvironment = \"sandbox\"\n\
               key_file = \"AuthKey_ABC123DEFG.p8\"\nkey_id = \"ABC123DEFG\"\nteam_id = \"TEAM123456\"\n";
    let rotation = format!(
        "{}{}{app}",
        key("ops", "old-key", "admin = true"),
        key("ops", "new-key", "admin = true")
    );
    let config = Config::load(&write(dir.path(), &rotation)).unwrap();
    assert_eq!(config.api_keys.len(), 2);
    let disagree = format!(
        "{}{}{app}",
        key("ops", "old-key", "admin = true"),
        key("ops", "new-key", "apps = [\"a\"]")
    );
    let err = Config::load(&write(dir.path(), &disagree))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another key is named \"ops\" with other apps, admin or rate"),
        "{err}"
    );
    // The rate limit is the name's: the two must agree on it too.
    let rates = format!(
        "{}{}{app}",
        key("ops", "old-key", "admin = true\nrate_per_s = 10"),
        key("ops", "new-key", "admin = true\nrate_per_s = 20")
    );
    let err = Config::load(&write(dir.path(), &rates))
        .unwrap_err()
        .to_string();
    assert!(err.contains("with other apps, admin or rate"), "{err}");
    let burst_alone = format!("{}{app}", key("ops", "old-key", "admin = true\nburst = 5"));
    let err = Config::load(&write(dir.path(), &burst_alone))
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_keys[0].burst: needs rate_per_s"), "{err}");
    let twice = format!(
        "{}{}{app}",
        key("ops", "same-key", "admin = true"),
        key("backend", "same-key", "apps = [\"a\"]")
    );
    let err = Config::load(&write(dir.path(), &twice))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the same key is configured twice"), "{err}");
}

/// A self-signed certificate and its key, valid from `from` to `until` days from now.
fn certificate(dir: &Path, name: &str, from: i64, until: i64) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.example")]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from);
    params.not_after = now + time::Duration::days(until);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
}

#[test]
fn new_connections_use_the_newest_valid_credential_and_never_an_expired_one() {
    let dir = folder();
    certificate(dir.path(), "expired", -400, -1);
    certificate(dir.path(), "older", -300, 60);
    certificate(dir.path(), "newer", -10, 400);
    certificate(dir.path(), "future", 2, 800);
    let file = write(
        dir.path(),
        r#"
[[apps]]
name = "shop"
topic = "com.example.shop"
environment = "production"
certificate = "older.pem"
certificate_key = "older-key.pem"

[[apps.credentials]]
certificate = "expired.pem"
certificate_key = "expired-key.pem"

[[apps.credentials]]
certificate = "newer.pem"
certificate_key = "newer-key.pem"

[[apps.credentials]]
certificate = "future.pem"
certificate_key = "future-key.pem"

[[apps]]
name = "keys"
topic = "com.example.keys"
environment = "production"
certificate = "newer.pem"
certificate_key = "newer-key.pem"

[[apps.credentials]]
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
"#,
    );
    let config = Config::load(&file).unwrap();
    let shop = config.app("shop").unwrap();
    let file_of = |t: std::time::SystemTime| {
        shop.active_credential(t)
            .map(|i| shop.credentials[i].file().file_name().unwrap().to_owned())
    };
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    assert_eq!(file_of(now).unwrap(), "newer.pem", "the newest valid one");
    assert_eq!(
        file_of(now + 3 * day).unwrap(),
        "future.pem",
        "once it is valid"
    );
    // Long after: only what has not expired.
    assert_eq!(file_of(now + 500 * day).unwrap(), "future.pem");
    assert_eq!(
        file_of(now + 900 * day),
        None,
        "every certificate expired: none"
    );
    // Before "newer" was issued, "older" was the newest valid; "expired" never is.
    assert_eq!(file_of(now - 20 * day).unwrap(), "older.pem");
    assert!((0..1000).all(|d| file_of(now + d * day).is_none_or(|f| f != "expired.pem")));
    // A token key does not expire: it is preferred.
    let keys = config.app("keys").unwrap();
    assert_eq!(keys.active_credential(now), Some(1));
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused_naming_the_file() {
    let dir = folder();
    std::fs::copy(
        apns_fixtures().join("other-key.pem"),
        dir.path().join("other-key.pem"),
    )
    .unwrap();
    let file = write(
        dir.path(),
        "[[apps]]\nname = \"shop\"\ntopic = \"com.example.shop\"\nenvironment = \"production\"\n\
         certificate = \"client.pem\"\ncertificate_key = \"other-key.pem\"\n",
    );
    let err = Config::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("client.pem") && err.contains("does not match"),
        "{err}"
    );
}

/// `[storage]` names a PostgreSQL database through a file (or an environment variable), never
/// inline; the URL's host and database are what is shown, never its password.
#[test]
fn a_postgres_url_file_is_read_and_its_password_never_shown() {
    let dir = folder();
    std::fs::write(
        dir.path().join("pg-url"),
        "postgres://gw:hunter2@db.example.net:6432/push?sslmode=verify-full\n",
    )
    .unwrap();
    let path = write(
        dir.path(),
        "[storage]\npostgres_url_file = \"pg-url\"\npool_size = 4\nstatement_timeout_ms = 2000\n",
    );
    let config = Config::load(&path).unwrap();
    let pg = config
        .storage
        .postgres
        .as_ref()
        .expect("a PostgreSQL spool");
    assert_eq!(pg.target, "db.example.net:6432/push");
    assert_eq!(pg.pool_size, 4);
    assert_eq!(pg.statement_timeout, Duration::from_secs(2));
    assert!(!format!("{config:?}").contains("hunter2"), "{config:?}");
}

/// Each mistake of `[storage]` for PostgreSQL at its line: SQLite and PostgreSQL at once, the
/// URL from both an environment variable and a file, a URL that is not one (not quoted back: it
/// may hold a password), a pool size out of range, PostgreSQL settings without a database.
#[test]
fn postgres_storage_mistakes_are_reported_at_their_lines() {
    let dir = folder();
    std::fs::write(
        dir.path().join("bad-url"),
        "postgres://u:hunter2@h/db?sslmode=bogus",
    )
    .unwrap();
    let both = write(
        dir.path(),
        "[storage]\nsqlite = \"x.db\"\npostgres_url_file = \"bad-url\"\npool_size = 0\n",
    );
    let err = Config::load(&both).unwrap_err();
    let found: Vec<_> = err
        .problems
        .iter()
        .map(|p| (p.line, p.key.as_str()))
        .collect();
    for expected in [
        (Some(2), "storage.sqlite"),
        (Some(3), "storage.postgres_url_file"),
        (Some(4), "storage.pool_size"),
    ] {
        assert!(
            found.contains(&expected),
            "{expected:?} missing from:\n{err}"
        );
    }
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let two_sources = write(
        dir.path(),
        "[storage]\npostgres_url_env = \"PUSHGATE_TEST_NO_SUCH_VAR\"\npostgres_url_file = \"bad-url\"\n",
    );
    let err = Config::load(&two_sources).unwrap_err().to_string();
    assert!(
        err.contains(":2: storage.postgres_url_env:") && err.contains("not both"),
        "{err}"
    );
    let orphan = write(dir.path(), "[storage]\npool_size = 4\n");
    let err = Config::load(&orphan).unwrap_err().to_string();
    assert!(
        err.contains(":2: storage.pool_size: only with postgres_url_env"),
        "{err}"
    );
}

/// The `[[apps]]` table of app `name` with `topic` (a token key, sandbox).
fn app(name: &str, topic: &str) -> String {
    format!(
        "\n[[apps]]\nname = \"{name}\"\ntopic = \"{topic}\"\nenvironment = \"sandbox\"\n\
         key_file = \"AuthKey_ABC123DEFG.p8\"\nkey_id = \"ABC123DEFG\"\nteam_id = \"TEAM123456\"\n"
    )
}

#[test]
fn beanstalkd_defaults_to_one_tube_per_app_named_after_its_topic() {
    let dir = folder();
    let text = format!(
        "[[beanstalkd]]\n{}{}",
        app("shop", "com.example.shop"),
        app("news", "com.example.news")
    );
    let c = Config::load(&write(dir.path(), &text)).unwrap();
    let b = &c.beanstalkd[0];
    assert_eq!(b.server, "127.0.0.1:11300");
    assert_eq!((b.max_reserves, b.connections), (5, 4));
    let tubes: Vec<_> = b
        .tubes
        .iter()
        .map(|t| (t.tube.as_str(), t.app.as_str()))
        .collect();
    assert_eq!(
        tubes,
        [("com.example.shop", "shop"), ("com.example.news", "news")]
    );

    // watch_default, with one app: its jobs too, as propeller's worker consumed them.
    let one = format!(
        "[[beanstalkd]]\nwatch_default = true\n{}",
        app("shop", "com.example.shop")
    );
    let c = Config::load(&write(dir.path(), &one)).unwrap();
    let tubes: Vec<_> = c.beanstalkd[0]
        .tubes
        .iter()
        .map(|t| (t.tube.as_str(), t.app.as_str()))
        .collect();
    assert_eq!(tubes, [("com.example.shop", "shop"), ("default", "shop")]);
}

#[test]
fn beanstalkd_mistakes_are_reported_at_their_lines() {
    let dir = folder();
    // Two apps of one topic would share the tube named after it: both named, with their lines
    // (in two environments, POST /post could still tell them apart by its `environment`).
    let same_topic = format!(
        "[[beanstalkd]]\nserver = \"localhost:11300\"\n{}{}",
        app("shop", "com.example.same"),
        app("shop-eu", "com.example.same").replace("sandbox", "production")
    );
    let err = Config::load(&write(dir.path(), &same_topic))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(":1: beanstalkd[0].tubes:")
            && err.contains("\"shop\" (line 4) and \"shop-eu\" (line 12)")
            && err.contains("same topic"),
        "{err}"
    );
    let text = format!(
        "[[api_keys]]\nname = \"news-only\"\nkey_sha256 = \"{KEY_HASH}\"\napps = [\"news\"]\n\n\
         [[beanstalkd]]\nserver = \"nowhere\"\nmax_reserves = -1\nwatch_default = true\n\
         tubes = [{{tube = \"-bad\", app = \"shop\"}}, {{tube = \"t2\", app = \"ghost\"}}, \
         {{tube = \"t3\", app = \"shop\", as_key = \"news-only\"}}, {{tube = \"t4\", app = \"news\", as_key = \"nobody\"}}]\n{}{}",
        app("shop", "com.example.shop"),
        app("news", "com.example.news")
    );
    let err = Config::load(&write(dir.path(), &text)).unwrap_err();
    let text = err.to_string();
    for expected in [
        ":7: beanstalkd[0].server: \"nowhere\" is not host:port",
        ":8: beanstalkd[0].max_reserves: -1 is out of range",
        ":9: beanstalkd[0].watch_default: needs the tubes to feed one app",
        ":10: beanstalkd[0].tubes: \"-bad\" is not a beanstalkd tube name",
        ":10: beanstalkd[0].tubes: no app is named \"ghost\"",
        ":10: beanstalkd[0].tubes: API key \"news-only\" may not use app \"shop\"",
        ":10: beanstalkd[0].tubes: no API key is named \"nobody\"",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn two_apps_of_one_topic_in_one_environment_are_refused_naming_both_lines() {
    let dir = folder();
    let text = format!(
        "{}{}",
        app("shop", "com.example.same"),
        app("shop2", "com.example.same")
    );
    let err = Config::load(&write(dir.path(), &text))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"shop\" (line 2) and \"shop2\" (line 10)")
            && err.contains("same environment"),
        "{err}"
    );
    // In two environments (sandbox and production builds of one app) they may share it.
    let text = format!(
        "{}{}",
        app("shop", "com.example.same"),
        app("shop-prod", "com.example.same").replace("sandbox", "production")
    );
    Config::load(&write(dir.path(), &text)).unwrap();
}

/// A `certificate` is read as its owner has it, the format told by its content: a PEM with
/// certificate and key together (propeller's `.pem`), a key encrypted as PKCS#8 beside it (its
/// password from a file), and a legacy OpenSSL-encrypted key refused at its line with the
/// command that converts it.
#[test]
fn a_certificate_is_read_in_the_shape_its_owner_has_it() {
    let dir = folder();
    let app = |cred: &str| {
        format!(
            "[[apps]]\nname = \"shop\"\ntopic = \"com.example.demo\"\nenvironment = \"sandbox\"\n{cred}\n"
        )
    };
    for cred in [
        "certificate = \"client-combined.pem\"",
        "certificate = \"client.pem\"\ncertificate_key = \"client-key-encrypted.pem\"\ncertificate_password_file = \"p12-password\"",
    ] {
        let c =
            Config::load(&write(dir.path(), &app(cred))).unwrap_or_else(|e| panic!("{cred}: {e}"));
        assert!(
            matches!(&c.apps[0].credentials[0], Credential::Certificate { identity, .. } if identity.info().topics[0] == "com.example.demo"),
            "{cred}"
        );
    }
    let legacy = app("certificate = \"client.pem\"\ncertificate_key = \"client-key-legacy.pem\"");
    let err = Config::load(&write(dir.path(), &legacy))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(":6: apps[0].certificate_key:") && err.contains("openssl pkcs8 -topk8"),
        "{err}"
    );
    let no_password =
        app("certificate = \"client.pem\"\ncertificate_key = \"client-key-encrypted.pem\"");
    let err = Config::load(&write(dir.path(), &no_password))
        .unwrap_err()
        .to_string();
    assert!(err.contains("give its password"), "{err}");
}

/// Momentum's names, brought along from `ecelerity.conf`, are answered with pushgate's.
#[test]
fn momentums_names_get_pushgates() {
    let dir = folder();
    let text = "[log]\nfile = \"d.log\"\nheartbeat = 60\nlogmode = \"0644\"\n\n[[apps]]\nname = \"apn_example.com\"\n\
                topic = \"com.example.demo\"\nenvironment = \"sandbox\"\nkey_file = \"AuthKey_ABC123DEFG.p8\"\n\
                key_id = \"ABC123DEFG\"\nteam_id = \"TEAM123456\"\nmax_outbound_connections = 20\n\
                tls_certificate = \"push.pem\"\nidle_timeout = 10\n";
    let err = Config::load(&write(dir.path(), text))
        .unwrap_err()
        .to_string();
    for expected in [
        ":3: log.heartbeat: unknown key; did you mean heartbeat_s",
        ":4: log.logmode: unknown key; did you mean mode",
        ":13: apps[0].max_outbound_connections: unknown key; did you mean max_connections",
        ":14: apps[0].tls_certificate: unknown key; did you mean certificate",
        ":15: apps[0].idle_timeout: unknown key; did you mean idle_timeout_s",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
    // Momentum's unquoted octal mode is a TOML error: it says how to write it.
    let octal = write(dir.path(), "[log]\nfile = \"d.log\"\nmode = 0644\n");
    let err = Config::load(&octal).unwrap_err().to_string();
    assert!(
        err.contains(":3:") && err.contains("mode = \"0644\""),
        "{err}"
    );
}

/// A reload's log line says what it changed: apps added and removed, each changed setting with
/// its old and new value (never a secret), a credential file replaced in place, and the other
/// sections that take effect at once.
#[test]
fn a_reload_says_what_it_changed() {
    let dir = folder();
    let app = |name: &str, extra: &str| {
        format!(
            "[[apps]]\nname = \"{name}\"\ntopic = \"com.example.{name}\"\nenvironment = \
             \"production\"\nkey_file = \"AuthKey_ABC123DEFG.p8\"\nkey_id = \"ABC123DEFG\"\n\
             team_id = \"TEAM123456\"\n{extra}\n"
        )
    };
    let keys =
        format!("[[api_keys]]\nname = \"ops\"\nkey_sha256 = \"{KEY_HASH}\"\napps = [\"*\"]\n\n");
    let load = |text: String| Config::load(&write(dir.path(), &text)).unwrap();
    let old = load(format!("{keys}{}{}", app("shop", ""), app("news", "")));
    let same = load(format!("{keys}{}{}", app("shop", ""), app("news", "")));
    let changes = gateway::config::Changes::between(&old, &same);
    assert!(changes.is_empty(), "{changes}");
    assert_eq!(changes.to_string(), "nothing changed");

    let new = load(format!(
        "{}{}",
        app(
            "shop",
            "max_connections = 8\ndelivery_response_timeout_ms = 2500"
        ),
        app("blog", "")
    ));
    let changes = gateway::config::Changes::between(&old, &new);
    assert_eq!(changes.apps_added, ["blog"]);
    assert_eq!(changes.apps_removed, ["news"]);
    assert_eq!(
        changes.apps_changed,
        [(
            "shop".to_owned(),
            vec![
                "max_connections 4 → 8".to_owned(),
                "delivery_response_timeout_ms 10000 → 2500".to_owned()
            ]
        )]
    );
    assert_eq!(changes.sections, ["[[api_keys]]"]);
    assert_eq!(
        changes.to_string(),
        "apps added: blog; apps removed: news; app shop: max_connections 4 → 8, \
         delivery_response_timeout_ms 10000 → 2500; changed: [[api_keys]]"
    );

    // The same file name with another key in it is a changed credential.
    let another = rcgen::KeyPair::generate().unwrap();
    std::fs::write(
        dir.path().join("AuthKey_ABC123DEFG.p8"),
        another.serialize_pem(),
    )
    .unwrap();
    let rotated = load(format!("{keys}{}{}", app("shop", ""), app("news", "")));
    let changes = gateway::config::Changes::between(&old, &rotated);
    assert_eq!(
        changes.to_string(),
        "app shop: credentials (AuthKey_ABC123DEFG.p8, contents changed); \
         app news: credentials (AuthKey_ABC123DEFG.p8, contents changed)"
    );

    // Applied now, and applied only after a restart, told apart.
    let moved = load(format!(
        "[server]\nlisten = \"127.0.0.1:9999\"\nmax_body_bytes = 2048\n\n{keys}{}{}",
        app("shop", ""),
        app("news", "")
    ));
    let changes = gateway::config::Changes::between(&rotated, &moved);
    assert_eq!(changes.sections, ["[server] max_body_bytes"]);
    assert_eq!(changes.restart, ["[server] listen/tls"]);
    assert_eq!(
        changes.to_string(),
        "changed: [server] max_body_bytes; changed, applied after a restart: [server] listen/tls"
    );
    // The spool's settings and the metrics listener need a restart too; a key's rate does not.
    let respooled = load(format!(
        "[server]\nlisten = \"127.0.0.1:9999\"\nmax_body_bytes = 2048\nmetrics_listen = \"127.0.0.1:9100\"\n\n\
         [storage]\nretention_s = 60\n\n{keys}{}{}",
        app("shop", ""),
        app("news", "")
    ));
    let changes = gateway::config::Changes::between(&moved, &respooled);
    assert_eq!(changes.restart, ["[server] metrics_listen", "[storage]"]);
}
