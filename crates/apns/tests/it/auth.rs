use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apns::auth::{Auth, ClientIdentity};
use apns::clock::ManualClock;
use apns::{Consequence, Pool, Reason};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_token_is_renewed_after_50_minutes_on_the_same_connection() {
    let sim = mock().spawn().await.unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let signer = signer_with(clock.clone());
    let pool = Pool::new(config(&sim, Auth::Token(signer.clone())));
    assert!(pool.send(&note(1)).await.is_delivered());
    let first = signer.token().unwrap().issued_at();
    clock.advance(Duration::from_secs(49 * 60));
    assert!(pool.send(&note(2)).await.is_delivered());
    assert_eq!(
        signer.token().unwrap().issued_at(),
        first,
        "kept before 50 min"
    );
    clock.advance(Duration::from_secs(2 * 60));
    // The simulator refuses a token renewed under 20 minutes after the last on a connection,
    // so success here shows the renewal respected Apple's rule.
    assert!(pool.send(&note(3)).await.is_delivered());
    assert_eq!(
        signer.token().unwrap().issued_at(),
        first + Duration::from_secs(51 * 60)
    );
    let s = sim.stats().snapshot();
    assert_eq!((s.accepted, s.connections_total), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_re_signed_once_then_reported_for_retry() {
    // The simulator's clock runs 2 h ahead: every token we sign looks expired to it.
    let sim = mock().clock_offset(7200).spawn().await.unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let signer = signer_with(clock.clone());
    let pool = Pool::new(config(&sim, Auth::Token(signer.clone())));
    let o = pool.send(&note(1)).await;
    assert_eq!(o.reason(), Some(&Reason::ExpiredProviderToken));
    assert!(matches!(o.consequence(), Consequence::Retry { .. }));
    assert_eq!(
        sim.stats().snapshot().requests,
        2,
        "sent, then re-sent once"
    );
    // A token young enough was not renewed (that would only earn TooManyProviderTokenUpdates).
    let before = signer.token().unwrap().issued_at();
    // Once the token is 25 minutes old, a rejection renews it.
    clock.advance(Duration::from_secs(25 * 60));
    let _ = pool.send(&note(2)).await;
    assert_eq!(
        signer.token().unwrap().issued_at(),
        before + Duration::from_secs(25 * 60)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_an_unknown_key_halts_the_app() {
    // The simulator trusts a different key than the one we sign with.
    let sim = apns_mock::MockApns::builder()
        .jwt_key(std::fs::read(fixture("other-jwt.pub.pem")).unwrap())
        .spawn()
        .await
        .unwrap();
    let o = pool(&sim).send(&note(1)).await;
    assert_eq!(o.reason(), Some(&Reason::InvalidProviderToken));
    assert_eq!(o.consequence(), Consequence::AppHalted);
}

fn cert_mock() -> apns_mock::MockApnsBuilder {
    apns_mock::MockApns::builder().client_ca(std::fs::read(format!("{FIXTURES}/ca.pem")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_auth_with_a_legacy_keychain_p12() {
    // Each answer waits 50 ms, so ten senders overlap on the connection however busy the
    // machine is: without a latency a fast burst may never have two streams open at once.
    let sim = cert_mock()
        .latency(std::time::Duration::from_millis(50))
        .spawn()
        .await
        .unwrap();
    let p12 = std::fs::read(format!("{FIXTURES}/client-legacy.p12")).unwrap();
    let id = ClientIdentity::from_pkcs12(&p12, "secret", "client-legacy.p12").unwrap();
    let pool = Pool::new(config(&sim, Auth::Certificate(Arc::new(id))));
    let outcomes = burst(&pool, 50, 10).await;
    assert!(
        outcomes.iter().all(|(_, o)| o.is_delivered()),
        "{outcomes:?}"
    );
    let s = sim.stats().snapshot();
    assert_eq!(s.accepted, 50);
    assert!(
        s.max_streams_in_flight > 1,
        "certificate connections are not held to one stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_trusted_certificate_apns_answers_bad_certificate() {
    let sim = cert_mock().spawn().await.unwrap();
    // A certificate from a CA the simulator does not trust is the same as none.
    let id = ClientIdentity::from_pem(
        &std::fs::read(fixture("untrusted.pem")).unwrap(),
        &std::fs::read(fixture("client-key.pem")).unwrap(),
        "untrusted.pem",
    )
    .unwrap();
    let pool = Pool::new(config(&sim, Auth::Certificate(Arc::new(id))));
    let o = pool.send(&note(1)).await;
    assert_eq!(o.reason(), Some(&Reason::BadCertificate));
    assert_eq!(o.consequence(), Consequence::AppHalted);
}
