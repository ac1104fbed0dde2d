//! pushgate's service.
//!
//! # Flow
//!
//! ```text
//! ingest ──▶ spool (durable, group commit) ──▶ dispatch ──▶ apns::Pool ──▶ outcomes
//! ```
//!
//! What exists so far: [`config`] (the TOML file, raw → validated, every problem at once with
//! file:line), [`ingest`] (the API's notification documents), [`http`] (the API on axum) and
//! [`spool`] (the SQLite queue). Dispatch and outcomes follow.

pub mod config;
pub mod dispatch;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod outcomes;
pub mod server;
pub mod spool;
