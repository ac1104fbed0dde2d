//! beanstalkd tubes as a way in, for propeller-apns' producers (docs/propeller.md): jobs are
//! reserved, turned into notifications, committed through the [`Intake`](crate::ingest::Intake)
//! and only then deleted. A job that cannot be a notification is buried, never looped; one the
//! spool cannot take now is released with a growing delay; a job redelivered after a crash
//! between the commit and its delete is recognised by its idempotency key and deleted without
//! a second notification.
//!
//! - `proto`: the protocol's framing (a codec) and commands;
//! - `client`: one connection, its commands and replies;
//! - `job`: a job's JSON as the HTTP API's document;
//! - `consumer`: the reserving connections and what happens to each job.

mod client;
mod consumer;
mod job;
mod proto;

pub use client::{ClientError, Conn};
pub use consumer::spawn;
pub use job::{document, from_job};
pub use proto::{Command, ProtoError, Reply, ReplyCodec, stat, valid_tube};
