//! Test support for the gateway's own tests and the binary's (feature `testing`; never in a
//! release build): a private PostgreSQL server.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test support: a failure here is the test's, and says so"
)]

pub mod postgres;
