//! Failure hooks (`[[webhooks]]`): events POSTed as JSON to a URL, signed with
//! `X-Pushgate-Signature: sha256=<hex HMAC-SHA256 of the body>` when a secret is configured.
//!
//! Each hook has a bounded queue and one task. The task sends what is queued in batches
//! (`{"events": [...]}`, up to 100 at a time) and retries a failed POST with growing delays;
//! a batch that still fails is given up. Events that find the queue full, and batches given
//! up, are counted in `pushgate_webhook_events_dropped_total{hook, reason}`. Nothing here is
//! ever awaited by delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Event;
use crate::config::{Secret, Webhook, WebhookEvent};

/// Tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events waiting to be sent; beyond this they are dropped.
    pub queue: usize,
    /// Most events in one POST.
    pub batch: usize,
    /// The delays before each retry of a failed POST; after the last, the batch is given up.
    pub retry_delays: Vec<Duration>,
    /// How long one POST may take.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue: 10_000,
            batch: 100,
            retry_delays: [1, 2, 4, 8, 16, 32]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A running hook.
#[derive(Debug)]
pub struct Hook {
    tx: mpsc::Sender<Event>,
    events: Vec<WebhookEvent>,
    /// The URL without its query, for metrics and logs (a query may carry a secret).
    label: String,
    counts: Arc<Counts>,
}

/// What a hook did with its events (also in metrics).
#[derive(Debug, Default)]
pub struct Counts {
    pub sent: AtomicU64,
    /// Found the queue full.
    pub dropped_queue_full: AtomicU64,
    /// In a batch given up after every retry.
    pub dropped_gave_up: AtomicU64,
}

impl Hook {
    /// Starts the hook's task on the current Tokio runtime.
    pub fn start(config: &Webhook, options: Options) -> Arc<Hook> {
        let (tx, rx) = mpsc::channel(options.queue);
        let label = config.label();
        let basic = config.basic.as_ref().map(|b| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(b.expose());
            Secret::new(format!("Basic {encoded}"))
        });
        let key = config
            .secret
            .as_ref()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.expose().as_bytes()));
        let counts = Arc::new(Counts::default());
        let target = Target {
            url: config.url.clone(),
            authorization: basic,
        };
        tokio::spawn(run(
            rx,
            target,
            label.clone(),
            key,
            options,
            Arc::clone(&counts),
        ));
        Arc::new(Hook {
            tx,
            events: config.events.clone(),
            label,
            counts,
        })
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Queues `event` if the hook subscribes to `kind`; never waits.
    pub fn offer(&self, kind: WebhookEvent, event: &Event) {
        if !self.events.contains(&kind) {
            return;
        }
        if self.tx.try_send(event.clone()).is_err() {
            self.counts
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            dropped(&self.label, "queue_full", 1);
        }
    }
}

fn dropped(label: &str, reason: &'static str, n: usize) {
    metrics::counter!("pushgate_webhook_events_dropped_total", "hook" => label.to_owned(), "reason" => reason)
        .increment(n as u64);
}

/// What one POST carries.
#[derive(serde::Serialize)]
struct HookBatch<'a> {
    events: Vec<super::HookEvent<'a>>,
}

/// Where a hook POSTs, and the Basic auth its URL's user information asked for.
struct Target {
    url: String,
    authorization: Option<Secret>,
}

async fn run(
    mut rx: mpsc::Receiver<Event>,
    target: Target,
    label: String,
    key: Option<hmac::Key>,
    options: Options,
    counts: Arc<Counts>,
) {
    let mut batch = Vec::with_capacity(options.batch);
    while rx.recv_many(&mut batch, options.batch).await > 0 {
        let events = batch.iter().map(Event::document).collect();
        let body = serde_json::to_vec(&HookBatch { events }).expect("a hook batch serialises");
        let body = Bytes::from(body);
        let signature = key.as_ref().map(|k| {
            let tag = hmac::sign(k, &body);
            format!("sha256={}", hex::encode(tag))
        });
        let mut delays = options.retry_delays.iter();
        let sent = loop {
            let result = tokio::time::timeout(
                options.timeout,
                post(&target, body.clone(), signature.as_deref()),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
            match result {
                Ok(()) => break true,
                Err(e) => match delays.next() {
                    Some(d) => {
                        debug!(hook = %label, error = %e, retry_in = ?d, "webhook POST failed");
                        tokio::time::sleep(*d).await;
                    }
                    None => {
                        warn!(hook = %label, error = %e, events = batch.len(), "webhook POST failed after every retry; these events are dropped");
                        break false;
                    }
                },
            }
        };
        if sent {
            counts.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
            metrics::counter!("pushgate_webhook_events_sent_total", "hook" => label.clone())
                .increment(batch.len() as u64);
        } else {
            counts
                .dropped_gave_up
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            dropped(&label, "gave_up", batch.len());
        }
        batch.clear();
    }
}

/// The hooks' HTTP client: one for every hook, built once, keeping connections open between
/// batches (a hook that receives a batch a second costs one TCP+TLS handshake, not one a
/// batch). http:// and https:// alike; an IPv6 literal (`http://[::1]:8080/`) connects too.
fn client() -> &'static HookClient {
    static CLIENT: std::sync::OnceLock<HookClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls_config()).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // Idle connections go after 30 s, before most servers' keep-alive ends (nginx 75 s,
        // load balancers 60 s): a POST never races the server closing its connection.
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https)
    })
}

type HookClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One POST; Ok on a 2xx answer.
async fn post(target: &Target, body: Bytes, signature: Option<&str>) -> Result<(), String> {
    let uri: Uri = target.url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let mut request = Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("pushgate/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(s) = signature {
        request = request.header("x-pushgate-signature", s);
    }
    if let Some(a) = &target.authorization {
        let mut v = hyper::header::HeaderValue::from_str(a.expose())
            .map_err(|_| "the URL's user information is not a valid header".to_owned())?;
        v.set_sensitive(true);
        request = request.header(hyper::header::AUTHORIZATION, v);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("building the request: {e}"))?;
    let response = client()
        .request(request)
        .await
        .map_err(|e| crate::error_chain(&e))?;
    let status = response.status();
    // Read to its end (up to a bound) so the connection can carry the next batch.
    let _ = Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// TLS for hooks: Mozilla's roots (webpki-roots), aws-lc-rs as everywhere else.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }))
}
