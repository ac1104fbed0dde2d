//! Retention: finished notifications are deleted `retention` after their last update, and
//! idempotency keys once their window has passed.
//!
//! The pruner deletes in chunks, each its own short command to the writer, so submits and
//! outcome updates interleave with a large prune instead of waiting behind it.

use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Spool, Store};

/// Rows deleted per writer command.
pub const PRUNE_CHUNK: usize = 2000;

/// Prunes every `every`; stops when the spool's writer is gone or the task is aborted.
pub fn spawn_pruner(spool: Store, retention: Duration, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let before = SystemTime::now() - retention;
            let mut total = 0;
            loop {
                match spool.prune(before, PRUNE_CHUNK).await {
                    Ok(n) => {
                        total += n;
                        if n < PRUNE_CHUNK {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "pruning finished notifications failed");
                        break;
                    }
                }
            }
            if total > 0 {
                info!(
                    pruned = total,
                    "pruned finished notifications and old idempotency keys"
                );
            }
        }
    })
}
