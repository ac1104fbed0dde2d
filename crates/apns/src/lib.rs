//! Apple's provider API (APNs over HTTP/2) as a library, usable without the rest of pushgate.
//!
//! # Map
//!
//! A [`Notification`] (validated values: [`DeviceToken`], [`Topic`], [`PushType`], [`Priority`],
//! [`ApnsId`]) carries an encoded [`payload::Payload`]. [`request`] turns it into an HTTP/2
//! request head. [`auth`] proves who we are: a [`auth::TokenSigner`] shares one JWT per key, or a
//! [`auth::ClientIdentity`] presents a certificate. A [`Pool`] keeps a few long-lived
//! [`connection`]s per app and sends on them; every attempt ends as an [`Outcome`], whose
//! [`Consequence`] (delivered, retry, dead token, rejected, app halted) tells the caller what to
//! do. Apple's refusal strings are [`Reason`]s.
//!
//! ```text
//! Notification ──▶ request::build_request ──▶ Pool::send ──▶ h2 stream ──▶ Outcome ──▶ Consequence
//!                                              ▲
//!                      auth: TokenSigner / ClientIdentity
//! ```

pub mod auth;
pub mod clock;
pub mod connection;
pub mod endpoint;
pub mod notification;
pub mod outcome;
pub mod payload;
pub mod pool;
pub mod reason;
pub mod request;

pub use endpoint::Endpoint;
pub use notification::{
    ApnsId, CollapseId, DeviceToken, Expiration, Notification, NotificationError, Priority,
    PushType, Topic,
};
pub use outcome::{Consequence, Outcome, Response};
pub use pool::{Pool, PoolConfig, PoolStats, Sent};
pub use reason::Reason;

/// Displays an error with its sources, `: `-separated: a wrapper alone often says only what was
/// being done, its source says why. For log lines (`error = %ErrorChain(&e)`) here and in the
/// gateway.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
