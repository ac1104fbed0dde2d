//! The client against the simulator over real sockets (TLS + HTTP/2 on 127.0.0.1).
#![allow(clippy::unwrap_used)]

/// Token and certificate auth: JWT renewal, expiry, legacy .p12, missing certificate.
mod auth;
/// A TCP proxy that can black-hole a connection without resetting it.
mod blackhole;
/// Builders for simulators, pools and notifications; waiting on conditions.
mod harness;
/// What each Apple answer becomes: every consequence class end to end.
mod outcomes;
/// Connections: limits, GOAWAY, refusal, timeouts, idle close, back-off.
mod pool;
/// A server that writes HTTP/2 frames itself, for GOAWAYs h2's server cannot produce exactly.
mod scripted;
/// Connections gone silent: PING after a timeout, close, send their streams again elsewhere.
mod silent;
