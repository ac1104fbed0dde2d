//! pushgate's service.
//!
//! # Flow
//!
//! ```text
//! ingest ──▶ spool (durable, group commit) ──▶ dispatch ──▶ apns::Pool ──▶ outcomes
//! ```
//!
//! What exists so far: [`config`] (the TOML file, raw → validated, every problem at once with
//! file:line) and [`spool`] (the SQLite queue). Ingest, dispatch and outcomes follow.

pub mod config;
pub mod spool;
