//! Wiring the stages together and running them until shutdown.
//!
//! [`Gateway::start`] opens the spool, recovers it and starts dispatch; [`Gateway::serve`] runs
//! the API on a bound listener until a shutdown future resolves, then shuts down in order: stop
//! intake (requests in progress commit and answer), let streams in flight finish within the
//! grace period, record their outcomes, close the spool. The binary binds and passes the
//! signal; tests pass a port-0 listener and a trigger of their own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, Current};
use crate::dispatch::{DispatchOptions, Dispatcher};
use crate::http::{ApiState, router};
use crate::ingest::Intake;
use crate::spool::{Spool, SpoolError, Store, spawn_pruner};

/// How often finished notifications past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("serving HTTP")]
    Http(#[source] std::io::Error),
    #[error("the spool")]
    Spool(#[source] SpoolError),
    #[error("TLS")]
    Tls(#[source] crate::tls::TlsError),
}

/// A started gateway: spool, dispatch, and the API's state.
#[derive(Debug)]
pub struct Gateway {
    pub state: Arc<ApiState>,
    pub dispatch: Arc<Dispatcher>,
    pruner: JoinHandle<()>,
    /// The bounce sender (`crate::bounces`), and what stops it.
    bounces: (JoinHandle<()>, CancellationToken),
}

impl Gateway {
    /// Opens the spool, recovers it and starts dispatching.
    pub async fn start(config: Config, options: DispatchOptions) -> Result<Gateway, ServeError> {
        // Before dispatch starts, so recovery's sends are counted too.
        let _ = crate::metrics::handle();
        let spool = Store::open(&config.storage)
            .await
            .map_err(ServeError::Spool)?;
        let retention = config.storage.retention;
        let current = Arc::new(Current::new(Arc::new(config)));
        let dispatch = Dispatcher::start(Arc::clone(&current), spool.clone(), options)
            .await
            .map_err(ServeError::Spool)?;
        let bounces_stop = CancellationToken::new();
        let bounces = crate::bounces::spawn(current, spool.clone(), bounces_stop.clone());
        let pruner = spawn_pruner(spool.clone(), retention, PRUNE_EVERY);
        let intake = Arc::new(Intake::new(spool, Arc::clone(&dispatch)));
        let state = Arc::new(ApiState::new(intake));
        Ok(Gateway {
            state,
            dispatch,
            pruner,
            bounces: (bounces, bounces_stop),
        })
    }

    /// A handle that applies reloaded configurations while the gateway serves.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            state: Arc::clone(&self.state),
            dispatch: Arc::clone(&self.dispatch),
        }
    }

    /// Serves the API (and SMTP, given its listener) until `shutdown`, then stops in order
    /// within the grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        smtp: Option<TcpListener>,
        metrics: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        // `[server] metrics_listen`: plain HTTP, stopped with the API.
        let metrics_stop = CancellationToken::new();
        let metrics_task = metrics.map(|l| {
            let state = Arc::clone(&self.state);
            let stop = metrics_stop.clone();
            tokio::spawn(async move {
                let router = crate::http::metrics_router(Arc::clone(&state));
                let limits = move || crate::listen::Limits::of(&state.config().server);
                crate::listen::serve("metrics", l, None, router, limits, stop.cancelled_owned())
                    .await;
            })
        });
        let smtp_stop = CancellationToken::new();
        let smtp_task = match smtp {
            Some(l) => {
                let config = self.state.config();
                let tls = match config.smtp.as_ref().and_then(|s| s.tls.as_ref()) {
                    Some(files) => Some(crate::smtp::acceptor(files).map_err(ServeError::Tls)?),
                    None => None,
                };
                Some(tokio::spawn(crate::smtp::serve(
                    l,
                    Arc::clone(&self.state.intake),
                    tls,
                    smtp_stop.clone(),
                )))
            }
            None => None,
        };
        let beanstalk_stop = CancellationToken::new();
        let beanstalk: Vec<JoinHandle<()>> = self
            .state
            .config()
            .beanstalkd
            .iter()
            .flat_map(|b| {
                crate::beanstalk::spawn(b, Arc::clone(&self.state.intake), beanstalk_stop.clone())
            })
            .collect();
        // Every way in stops taking work at once, and they drain side by side.
        let (smtp_stopping, beanstalk_stopping) = (smtp_stop.clone(), beanstalk_stop.clone());
        let shutdown = async move {
            shutdown.await;
            smtp_stopping.cancel();
            beanstalk_stopping.cancel();
        };
        let served = run(listener, Arc::clone(&self.state), shutdown).await;
        // (Also when the API stopped on its own, with an error.)
        smtp_stop.cancel();
        beanstalk_stop.cancel();
        metrics_stop.cancel();
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        if let Some(t) = smtp_task {
            let _ = t.await;
        }
        // Jobs held get their verdicts (a commit, then a delete) before dispatch stops.
        for t in beanstalk {
            let _ = t.await;
        }
        let grace = self.state.config().server.shutdown_grace;
        info!(?grace, "intake stopped; finishing streams in flight");
        self.dispatch.shutdown(grace).await;
        // Outcomes recorded during the grace period reach the delivery log's file.
        self.dispatch.events().close(Duration::from_secs(5)).await;
        self.pruner.abort();
        // Between two DSNs: one being handed to the relay finishes (or times out) first, so
        // that a stop sends none twice.
        let (mut sender, stop) = self.bounces;
        stop.cancel();
        let wait = crate::bounces::SEND_TIMEOUT + Duration::from_secs(1);
        if tokio::time::timeout(wait, &mut sender).await.is_err() {
            sender.abort();
        }
        self.state.spool.close().await.map_err(ServeError::Spool)?;
        info!("spool closed; stopped");
        served
    }
}

/// Serves the API on `listener` (HTTPS when `[server] tls_cert`/`tls_key` are set) until
/// `shutdown` resolves; requests in progress finish (their submits commit before they answer).
pub async fn run(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let tls = match &state.config().server.tls {
        Some(files) => Some(crate::tls::acceptor(files, &[b"http/1.1"]).map_err(ServeError::Tls)?),
        None => None,
    };
    let app = router(Arc::clone(&state));
    let limits = move || crate::listen::Limits::of(&state.config().server);
    crate::listen::serve("http", listener, tls, app, limits, shutdown).await;
    Ok(())
}

/// Applies reloaded configurations (SIGHUP).
#[derive(Debug, Clone)]
pub struct Reloader {
    state: Arc<ApiState>,
    dispatch: Arc<Dispatcher>,
}

impl Reloader {
    /// Applies `config`: API keys, apps (new connections use the new settings; connections in
    /// use finish their streams), `[log]` and `[[webhooks]]`, and the SMTP limits. Changes that
    /// need a restart are logged.
    pub fn reload(&self, config: Config) {
        let old = self.state.config();
        let changes = crate::config::Changes::between(&old, &config);
        for section in &changes.restart {
            tracing::warn!(
                section,
                "changed in the configuration; takes effect after a restart"
            );
        }
        // Dispatch applies the apps, then puts the configuration in force for every reader.
        self.dispatch.reload(Arc::new(config));
        info!(changes = %changes, "configuration reloaded");
    }
}
