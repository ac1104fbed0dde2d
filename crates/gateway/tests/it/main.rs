//! The gateway's parts against real files and servers: TOML configurations, SQLite spools, a
//! private PostgreSQL.
#![allow(clippy::unwrap_used)]

/// `$name::sqlite` and `$name::postgres` for each `async fn $name(backend: live::Backend)`:
/// one test, run on each spool (PostgreSQL's skipped where it is not installed, outside CI).
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::live::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(pg) = gateway::local_postgres::database().await {
                        super::$name(crate::live::Backend::Postgres(pg)).await;
                    }
                }
            }
        )*
    };
}

/// `$name::sqlite` and `$name::postgres`: one test against each backend, each with a fresh
/// spool opened with `$options` and, if named, where it lives (`$backing`). PostgreSQL's is
/// skipped where the server is not installed, outside CI.
macro_rules! each_backend {
    ($name:ident, $options:expr, |$spool:ident| $body:block) => {
        each_backend!($name, $options, |$spool, _backing| $body);
    };
    ($name:ident, $options:expr, |$spool:ident, $backing:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use crate::harness::Backing;

            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let $backing = Backing::Sqlite(dir.path().join("spool.db"));
                let $spool = $backing.open($options).await;
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let Some(pg) = gateway::local_postgres::database().await else {
                    return;
                };
                let $backing = Backing::Postgres(pg);
                let $spool = $backing.open($options).await;
                $body
            }
        }
    };
}

/// The HTTP API through real HTTP: every error code, atomicity, scopes, defaults, states.
mod api;
/// A running API on a port-0 listener and a client for it.
mod api_harness;
/// Status, lookup, feedback, stats and the OpenAPI document.
mod api_status;
/// beanstalkd as a way in: two tubes, buried jobs, a restart, a full spool, a slow commit.
mod beanstalkd;
/// The bounce outbox on each spool: queued with outcomes, read per origin, settled, pruned.
mod bounce_outbox;
/// Cancels by id, request and app, and pauses, on each spool.
mod cancel;
/// Committed work that must not wait: an answer nobody read, retries due by the thousand,
/// one app's backlog beside another app.
mod committed_work;
/// Configuration: defaults, relative paths, credentials, every kind of mistake with its line.
mod config;
/// A child process that submits until SIGKILLed; nothing acknowledged is lost.
mod crash;
/// The dashboard through real HTTP(S): admin-only login, cookie flags, CSRF, data, logout.
mod dashboard;
/// After "accepted": outcomes the spool refuses, a wrong environment, dead tokens in bulk.
mod delivery_core;
/// The delivery log (rotation, heartbeat, mode, a stalled file) and failure hooks (signed
/// batches, retries, a hook that is down), against real files, FIFOs and sockets.
mod events;
/// The fuzz targets' corpus and crashes, replayed.
mod fuzz_corpus;
/// Building requests for the spool.
mod harness;
/// Idempotency keys in the spool: stored once, replayed, reused, in one group, forgotten.
mod idempotency;
/// Idempotency through the ways in: `Idempotency-Key` on the API and the injector, SMTP's
/// `Message-ID`.
mod idempotent_ways_in;
/// Momentum's REST injector: results per recipient, fan-out, Basic auth, all-or-nothing.
mod inject;
/// The intake: on-commit hooks.
mod intake;
/// Every listener bounded: slow heads, bodies and SMTP peers, silent TLS clients, idle
/// keep-alives, connection and session caps, a multiplying message, numbers past the clock.
mod limits;
/// A whole gateway in this process against the simulator, for tests that reach inside.
mod live;
/// The gateway end to end on the PostgreSQL spool.
mod postgres;
/// propeller-apns' `POST /post` form and its page.
mod propeller_post;
/// A key's rate limit across the ways in, and refused credentials counted and slowed.
mod rate_limits;
/// The SMTP listener with lettre, Python's smtplib and a raw socket: the seed's example,
/// pipelining, dot-stuffing, encodings, placements, fan-out, every refusal, STARTTLS and AUTH.
mod smtp;
/// The spool: whole-or-nothing batches, limits, recovery, retention, dead tokens.
mod spool;
/// Spools of earlier schema versions, migrated.
mod spool_migrations;
/// Supersede on each spool: newer notifications replace older queued ones, never what is in
/// flight.
mod supersede;
/// Requests that need not reach Apple: sends taken before a halt, tokens re-signed by a
/// reload.
mod waste;
