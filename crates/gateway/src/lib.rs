//! pushgate's service.
//!
//! # Flow
//!
//! ```text
//! http / smtp ──▶ ingest ──▶ spool (durable, group commit) ──▶ dispatch ──▶ apns::Pool ──▶ outcomes
//!                                                                                          │
//!                                                        delivery log, webhooks ◀── events ┘
//! ```
//!
//! [`config`] (the TOML file, raw → validated, every problem at once with file:line),
//! [`http`] (the API on axum, with Momentum's `/v1.0/inject`) and [`smtp`] (the MCMT listener)
//! take notifications in; [`ingest`] turns what they received into spool requests; [`spool`]
//! (SQLite) keeps them; [`dispatch`] sends them and [`outcomes`] decides what each answer
//! means; [`events`] carries final outcomes to the delivery log and the failure hooks.

pub mod auth;
pub mod beanstalk;
pub mod bounces;
pub mod config;
pub mod dispatch;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ingest;
pub mod listen;
pub mod local_beanstalkd;
pub mod local_postgres;
pub mod login_failures;
pub mod metrics;
pub mod outcomes;
pub mod reason;
pub mod rfc3339;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod tls;

/// An error with its sources, `: `-separated, for log lines, `/readyz` reasons and
/// configuration problems (a wrapper alone often says only what was being done; its source
/// says why).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    apns::ErrorChain(e).to_string()
}
