//! `pushgate cancel` and `pushgate apps pause|resume` against a gateway process: what each
//! prints, its exit codes, and that the gateway did what it said.

use std::process::{Command, Output};

use serde_json::json;

use crate::gateway_harness::{Gw, KEY, sim, token};

fn pushgate(gw: &Gw, args: &[&str], key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.args(args).args(["--server", &gw.url]);
    match key {
        Some(k) => cmd.env("PUSHGATE_API_KEY", k),
        None => cmd.env_remove("PUSHGATE_API_KEY"),
    };
    cmd.output().unwrap()
}

use crate::harness::output_text as text;

/// Pause with `--reject` (new notifications refused), cancel by id (one waiting, one already
/// cancelled: exit 1 for it) and by request, resume; usage and refusals have their own codes.
#[test]
fn cancel_and_apps_from_the_command_line() {
    let sim = sim(&[]);
    let gw = Gw::start(&sim, "");
    let out = pushgate(&gw, &["apps", "pause", "shop", "--reject"], Some(KEY));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("shop: paused since") && text(&out).contains("refused"),
        "{}",
        text(&out)
    );
    let (status, body) = gw.api(
        "POST",
        "/v1/notifications",
        Some(&json!({"app": "shop", "tokens": [token(1)], "alert": "x"})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("app_paused")),
        "{body}"
    );
    // Paused without reject: accepted, and waiting.
    let out = pushgate(&gw, &["apps", "pause", "shop"], Some(KEY));
    assert!(text(&out).contains("queued"), "{}", text(&out));
    let (status, one) = gw.api(
        "POST",
        "/v1/notifications",
        Some(&json!({"app": "shop", "tokens": [token(1)], "alert": "x"})),
    );
    assert_eq!(status, 202, "{one}");
    let id = one["ids"][0].as_str().unwrap().to_owned();
    let out = pushgate(&gw, &["cancel", &id], Some(KEY));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{id}: cancelled")),
        "{}",
        text(&out)
    );
    let out = pushgate(&gw, &["cancel", &id], Some(KEY));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not cancelled, cancelled"),
        "{}",
        text(&out)
    );

    let tokens: Vec<String> = (10..20).map(token).collect();
    let (_, many) = gw.api(
        "POST",
        "/v1/notifications",
        Some(&json!({"app": "shop", "tokens": tokens, "alert": "x"})),
    );
    let rid = many["request_id"].as_str().unwrap().to_owned();
    let out = pushgate(&gw, &["cancel", "--request", &rid], Some(KEY));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("10 cancelled, 0 already gone"),
        "{}",
        text(&out)
    );

    let out = pushgate(&gw, &["apps", "resume", "shop"], Some(KEY));
    assert!(
        out.status.success() && text(&out).contains("shop: sending"),
        "{}",
        text(&out)
    );
    let (_, stats) = gw.api("GET", "/v1/stats", None);
    assert!(stats["apps"]["shop"]["paused"].is_null(), "{stats}");
    assert_eq!(stats["apps"]["shop"]["cancelled"], 11, "{stats}");

    // Usage (no id, no key) is 2; a refusal (an unknown app, a wrong key) is 3.
    let out = pushgate(&gw, &["cancel"], Some(KEY));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = pushgate(&gw, &["cancel", &id], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = pushgate(&gw, &["apps", "pause", "nope"], Some(KEY));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("unknown_app"), "{}", text(&out));
    let out = pushgate(
        &gw,
        &["apps", "pause", "shop"],
        Some("not-a-key-0123456789"),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(sim_requests(&sim), 0, "nothing was sent");
}

fn sim_requests(sim: &crate::harness::Sim) -> u64 {
    let out = Command::new("curl")
        .args(["-sf", &format!("{}/stats", sim.stats)])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["requests"]
        .as_u64()
        .unwrap()
}
