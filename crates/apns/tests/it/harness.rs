use std::sync::Arc;
use std::time::Duration;

use apns::auth::{Auth, SigningKey, TokenSigner};
use apns::clock::{Clock, SystemClock};
use apns::payload::Payload;
use apns::{DeviceToken, Endpoint, Notification, Pool, PoolConfig, PushType, Topic};
use apns_mock::{MockApnsBuilder, RunningMock};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub use apns_mock::testing::{FIXTURES, P8, P8_PUBLIC, fixture, wait_for};

/// The i-th test device token (`apns_mock::testing::token`).
pub fn token(i: u32) -> DeviceToken {
    apns_mock::testing::token(u64::from(i))
}

/// An alert for `com.example.demo`.
pub fn note(i: u32) -> Notification {
    let mut n = Notification::new(
        token(i),
        PushType::Alert,
        Payload::alert("Hello", format!("number {i}"))
            .encode()
            .unwrap(),
    );
    n.topic = Some(Topic::parse("com.example.demo").unwrap());
    n
}

pub fn signer_with(clock: Arc<dyn Clock>) -> Arc<TokenSigner> {
    let key =
        SigningKey::from_pem(P8, "ABC123DEFG", "TEAM123456", "AuthKey_ABC123DEFG.p8").unwrap();
    Arc::new(TokenSigner::new(key, clock))
}

pub fn token_auth() -> Auth {
    Auth::Token(signer_with(Arc::new(SystemClock)))
}

/// A simulator that checks provider tokens signed by the fixture key.
pub fn mock() -> MockApnsBuilder {
    apns_mock::MockApns::builder().jwt_key(P8_PUBLIC.to_vec())
}

/// Pool settings for `mock`, trusting its generated CA.
pub fn config(mock: &RunningMock, auth: Auth) -> PoolConfig {
    let mut c = PoolConfig::new(Endpoint::parse(&mock.endpoint()).unwrap(), auth);
    c.extra_roots =
        vec![CertificateDer::from_pem_slice(mock.ca_pem().unwrap().as_bytes()).unwrap()];
    c.min_backoff = Duration::from_millis(50);
    c
}

pub fn pool(mock: &RunningMock) -> Pool {
    Pool::new(config(mock, token_auth()))
}

/// Sends `count` notifications with `concurrency` tasks sharing the pool; returns the
/// outcomes in notification order.
pub async fn burst(
    pool: &Pool,
    count: u32,
    concurrency: u32,
) -> Vec<(Notification, apns::Outcome)> {
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (pool, next) = (pool.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return out;
                }
                let n = note(i);
                let o = pool.send(&n).await;
                out.push((i, n, o));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    all.sort_by_key(|(i, _, _)| *i);
    all.into_iter().map(|(_, n, o)| (n, o)).collect()
}
