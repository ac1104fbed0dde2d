//! What the gateway does with each attempt's outcome (docs/dispatch.md): the state update, the
//! dead-token registry, and the halt of an app whose credentials APNs refuses.
//!
//! - `apply`: an attempt's [`apns::Outcome`] → a spool [`crate::spool::Completion`], maybe a
//!   dead token, maybe a halt.
//! - `backoff`: when a retry comes due (full jitter, `Retry-After` as a floor).
//! - `feedback`: the in-memory set of dead tokens used to suppress sends, kept in step with the
//!   spool's registry.
//! - `recorder`: where an outcome is recorded — one spool transaction per batch of decisions,
//!   then the dead-token set, the tally (`tally`), events and metrics, and only then the
//!   queues' release of the ids.
//!
//! Nothing here imports dispatch: decisions are made for the spool's records
//! ([`crate::spool::Sendable`]), and the recorder reaches dispatch through [`Dispatch`], which
//! dispatch implements and runs the recorder with.

mod apply;
pub mod backoff;
mod feedback;
pub mod history;
mod recorder;
mod tally;
#[cfg(test)]
pub(crate) mod testing;

pub use apply::{Decision, Limits, decide, expired, suppressed};
pub use feedback::DeadTokens;
pub use recorder::{Dispatch, Recorded, record};
pub use tally::{FailureRecord, LATEST_FAILURES, Tally};
