use std::path::Path;
use std::process::Command;

use gateway::spool::Spool;
use serde_json::Value;

use crate::api_harness::*;

/// curl against the API: returns status, response headers and body.
pub(crate) fn curl(url: &str, args: &[&str]) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-s", "-k", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (.ci/run installs it)");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.trim().parse().unwrap(),
        std::fs::read_to_string(headers).unwrap_or_default(),
        body.to_owned(),
    )
}

fn set_cookie(headers: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .starts_with("set-cookie:")
            .then(|| l["set-cookie:".len()..].trim().to_owned())
    })
}

/// Logs in with `key`; returns the session cookie (`name=value`) and the Set-Cookie line.
pub(crate) fn log_in(base: &str, key: &str) -> (u16, Option<(String, String)>) {
    let (status, headers, _) = curl(
        &format!("{base}/login"),
        &["--data-urlencode", &format!("key={key}")],
    );
    let cookie = set_cookie(&headers).map(|line| {
        let pair = line.split(';').next().unwrap().to_owned();
        (pair, line)
    });
    (status, cookie)
}

/// The CSRF token in the dashboard page.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    page[at..at + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_an_admin_key_a_strict_cookie_and_its_csrf_token() {
    let api = TestApi::start().await;
    let base = format!("http://{}", api.addr);
    let base2 = base.clone();
    tokio::task::spawn_blocking(move || {
        let base = base2;
        // Not logged in: the login form, and no data.
        let (status, headers, page) = curl(&format!("{base}/"), &[]);
        assert_eq!(status, 200);
        assert!(
            page.contains("name=\"key\"") && page.contains("type=\"password\""),
            "{page}"
        );
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("content-security-policy: default-src 'self'")
        );
        assert_eq!(curl(&format!("{base}/dashboard/data"), &[]).0, 401);
        // A key that is not admin, and a wrong key: refused, no cookie.
        for key in [SHOP_KEY, "nonsense"] {
            let (status, cookie) = log_in(&base, key);
            assert_eq!(status, 401);
            assert!(cookie.is_none());
        }
        // The admin key: a session cookie, HttpOnly and SameSite=Strict, not Secure over HTTP.
        let (status, cookie) = log_in(&base, ADMIN_KEY);
        assert_eq!(status, 303);
        let (pair, line) = cookie.unwrap();
        assert!(
            line.contains("HttpOnly") && line.contains("SameSite=Strict"),
            "{line}"
        );
        assert!(!line.contains("Secure"), "{line}");
        let (status, _, page) = curl(&format!("{base}/"), &["-H", &format!("cookie: {pair}")]);
        assert_eq!(status, 200);
        assert!(page.contains("signed in as admin") && page.contains("id=\"send-form\""));
        assert!(
            !page.contains(ADMIN_KEY),
            "the key never appears in the page"
        );
        let (status, _, data) = curl(
            &format!("{base}/dashboard/data"),
            &["-H", &format!("cookie: {pair}")],
        );
        assert_eq!(status, 200);
        let data: Value = serde_json::from_str(&data).unwrap();
        let apps: Vec<&str> = data["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(apps, ["shop", "news"]);
        assert_eq!(
            data["apps"][0]["credentials"][0]["kind"],
            "token key (.p8, does not expire)"
        );
        let settings = data["apps"][0]["settings"].as_str().unwrap();
        assert!(
            settings
                .starts_with("sandbox at https://api.sandbox.push.apple.com · up to 4 connections")
                && settings.ends_with("signs with AuthKey_ABC123DEFG.p8 (key ABC123DEFG)"),
            "{settings}"
        );
        assert!(
            page.contains("<td class=\"settings\">sandbox at"),
            "the page renders them too"
        );
        // The test send: refused without the CSRF token, taken with it.
        let token = "6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
        let body =
            format!("{{\"app\":\"shop\",\"token\":\"{token}\",\"title\":\"t\",\"body\":\"b\"}}");
        let send = |extra: &[&str]| {
            let mut args = vec!["-H", "content-type: application/json", "--data", &body];
            let cookie = format!("cookie: {pair}");
            args.extend(["-H", &cookie]);
            args.extend(extra);
            curl(&format!("{base}/dashboard/send"), &args)
        };
        let (status, _, answer) = send(&[]);
        assert_eq!(status, 403, "{answer}");
        assert!(answer.contains("csrf_failed"));
        let (status, _, answer) = send(&["-H", "x-csrf-token: 0000"]);
        assert_eq!(status, 403, "{answer}");
        let header = format!("x-csrf-token: {}", csrf(&page));
        let (status, _, answer) = send(&["-H", &header]);
        assert_eq!(status, 200, "{answer}");
        let id = serde_json::from_str::<Value>(&answer).unwrap()["ids"][0]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, _, doc) = curl(
            &format!("{base}/dashboard/notifications/{id}"),
            &["-H", &format!("cookie: {pair}")],
        );
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&doc).unwrap()["state"],
            "queued"
        );
        // Logging out needs the token too, and ends the session.
        let (status, _, _) = curl(
            &format!("{base}/logout"),
            &["-H", &format!("cookie: {pair}"), "--data", "csrf=wrong"],
        );
        assert_eq!(status, 403);
        let (status, _, _) = curl(
            &format!("{base}/logout"),
            &[
                "-H",
                &format!("cookie: {pair}"),
                "--data",
                &format!("csrf={}", csrf(&page)),
            ],
        );
        assert_eq!(status, 303);
        assert_eq!(
            curl(
                &format!("{base}/dashboard/data"),
                &["-H", &format!("cookie: {pair}")]
            )
            .0,
            401
        );
    })
    .await
    .unwrap();
    assert_eq!(api.spool.pending(), 1, "the one test send");
}

/// A self-signed certificate for 127.0.0.1, written as api.pem / api-key.pem.
pub(crate) fn write_tls(dir: &Path) {
    crate::api_harness::write_tls(dir, "api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_session_cookie_is_secure() {
    let api = TestApi::start_sections(
        "tls_cert = \"api.pem\"\ntls_key = \"api-key.pem\"",
        "",
        "",
        write_tls,
    )
    .await;
    let base = format!("https://{}", api.addr);
    tokio::task::spawn_blocking(move || {
        let (status, headers, _) = curl(&format!("{base}/healthz"), &[]);
        assert_eq!(status, 200, "served over TLS");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("strict-transport-security: max-age=31536000"),
            "HSTS over HTTPS: {headers}"
        );
        let (status, cookie) = log_in(&base, ADMIN_KEY);
        assert_eq!(status, 303);
        let (_, line) = cookie.unwrap();
        assert!(
            line.contains("Secure") && line.contains("HttpOnly"),
            "{line}"
        );
    })
    .await
    .unwrap();
}

/// On a PostgreSQL spool the dashboard lists the gateways sharing it (here, this one); on
/// SQLite, which one gateway owns, the section is hidden and empty.
async fn the_dashboard_shows_the_gateways_sharing_the_database(backend: crate::live::Backend) {
    let shared = matches!(backend, crate::live::Backend::Postgres(_));
    let api = TestApi::start_on(&backend).await;
    let base = format!("http://{}", api.addr);
    tokio::task::spawn_blocking(move || {
        let (_, cookie) = log_in(&base, ADMIN_KEY);
        let (pair, _) = cookie.unwrap();
        let cookie = format!("cookie: {pair}");
        let (_, _, data) = curl(&format!("{base}/dashboard/data"), &["-H", &cookie]);
        let data: Value = serde_json::from_str(&data).unwrap();
        let cluster = data["cluster"].as_array().unwrap();
        let (_, _, page) = curl(&format!("{base}/"), &["-H", &cookie]);
        if shared {
            assert_eq!(cluster.len(), 1, "{data}");
            assert_eq!(cluster[0]["this"], true);
            assert!(cluster[0]["host"].as_str().unwrap().contains("(pid "));
            assert!(
                page.contains("<section id=\"cluster-section\"><h2>Gateways sharing the database")
                    && page.contains("(this one)"),
                "{page}"
            );
        } else {
            assert!(cluster.is_empty(), "{data}");
            assert!(page.contains("<section id=\"cluster-section\" hidden>"));
        }
    })
    .await
    .unwrap();
}

on_each_backend!(the_dashboard_shows_the_gateways_sharing_the_database);

/// Every answer says nosniff; API answers say no-store (they carry tokens and states), the
/// dashboard's script may be kept and revalidated; plain HTTP gets no HSTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_nosniff_and_no_store_and_no_hsts_over_plain_http() {
    let api = TestApi::start().await;
    let base = format!("http://{}", api.addr);
    tokio::task::spawn_blocking(move || {
        for (path, cache) in [
            ("/healthz", "no-store"),
            ("/v1/stats", "no-store"),
            ("/nothing-here", "no-store"),
            ("/openapi.json", "no-store"),
            ("/dashboard/app.js", "no-cache"),
        ] {
            let (_, headers, _) = curl(&format!("{base}{path}"), &[]);
            let headers = headers.to_ascii_lowercase();
            assert!(
                headers.contains("x-content-type-options: nosniff"),
                "{path}: {headers}"
            );
            assert!(
                headers.contains(&format!("cache-control: {cache}")),
                "{path}: {headers}"
            );
            assert!(
                !headers.contains("strict-transport-security"),
                "{path}: {headers}"
            );
        }
    })
    .await
    .unwrap();
}
