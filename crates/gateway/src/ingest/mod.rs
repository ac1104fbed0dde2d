//! Every way in. Each ingest turns what it received into [`crate::spool::NewRequest`]s and
//! submits them in one call that answers only after the spool's commit.
//!
//! - `json`: the HTTP API's notification documents (DESIGN §3), with their defaults and every
//!   error code, checked whole before anything is stored.

pub mod json;
