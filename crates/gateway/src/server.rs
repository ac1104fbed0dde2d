//! Wiring the stages together and running them until shutdown.
//!
//! Today that is the HTTP API over the spool; dispatch joins it in the next stage. `run` takes a
//! bound listener and a shutdown future, so the binary binds and passes the signal while tests
//! pass a port-0 listener and a trigger of their own.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{ApiState, router};
use crate::spool::SqliteSpool;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("serving HTTP")]
    Http(#[source] std::io::Error),
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the requests in
/// progress (their submits are committed before they answer).
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    spool: SqliteSpool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = router(Arc::new(ApiState { config, spool }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Http)
}
