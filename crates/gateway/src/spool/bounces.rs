//! Bounces as the spool keeps them: the origin of an injected message (where its DSN goes, the
//! original headers), which requests came from it, and the outbox — a failure of one of
//! their notifications, queued in the transaction that records it final, so a crash can never
//! leave a failure without its bounce. The sender (`crate::bounces`) reads what is due and
//! settles it; both backends keep the same three tables.

use std::time::SystemTime;

use apns::{ApnsId, DeviceToken};

use super::State;

/// Where the permanent failures of one injected message (to one return path) are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceOrigin {
    /// The address the DSN goes to: the push part's `Return-Path`, else the message's, else
    /// the envelope sender (SMTP `MAIL FROM`, the injection's `from`). Never empty: a null
    /// sender gets no origin.
    pub return_path: String,
    /// The original message's header section (up to its empty line), for the DSN's
    /// `text/rfc822-headers` part.
    pub headers: Vec<u8>,
    /// How it came in: `smtp` or `inject`.
    pub way: String,
    /// The SMTP client's address, or the injecting API key's name.
    pub received_from: String,
    pub received_at: SystemTime,
}

/// One failure waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct BounceEntry {
    pub id: ApnsId,
    pub app: String,
    pub token: DeviceToken,
    /// `failed` or `expired`.
    pub state: State,
    /// Apple's status, when it answered.
    pub status: Option<u16>,
    pub reason: Option<String>,
    /// When the failure was recorded.
    pub at: SystemTime,
}

/// An origin whose failures are due for a DSN: the oldest waited out the batching window.
#[derive(Debug, Clone, PartialEq)]
pub struct DueBounce {
    /// The origin's number in the spool.
    pub origin: i64,
    pub from: BounceOrigin,
    /// Tries to send a DSN for it that failed so far (reset when one is sent).
    pub attempts: u32,
    /// The lease this gateway holds on it (PostgreSQL; 0 on SQLite): its settle is applied
    /// only while the lease is still this one.
    pub lease: i64,
    /// Its failures, oldest first (at most [`MAX_PER_DSN`]).
    pub entries: Vec<BounceEntry>,
}

/// How long a gateway of a PostgreSQL spool holds the bounces it took to send: past it (the
/// gateway died mid-send), another may send them.
pub const BOUNCE_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

/// Most failures one DSN reports; more wait for the next one.
pub const MAX_PER_DSN: usize = 1000;

/// What became of a DSN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BounceSettle {
    /// Sent (or given up on): its entries leave the outbox.
    Done,
    /// The relay refused it for now: try again at this time.
    RetryAt(SystemTime),
}
