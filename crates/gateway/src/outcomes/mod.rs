//! What the gateway does with each attempt's outcome (docs/dispatch.md): the state update, the
//! dead-token registry, and the halt of an app whose credentials APNs refuses.
//!
//! - `apply`: an attempt's [`apns::Outcome`] → a spool [`crate::spool::Completion`], maybe a
//!   dead token, maybe a halt.
//! - `backoff`: when a retry comes due (full jitter, `Retry-After` as a floor).
//! - `feedback`: the in-memory set of dead tokens used to suppress sends, kept in step with the
//!   spool's registry.
//!
//! Nothing here knows dispatch: decisions are made for the spool's records
//! ([`crate::spool::Sendable`]) and carried out by dispatch's completer.

mod apply;
pub mod backoff;
mod feedback;
#[cfg(test)]
pub(crate) mod testing;

pub use apply::{Decision, Limits, decide, expired, suppressed};
pub use feedback::DeadTokens;
