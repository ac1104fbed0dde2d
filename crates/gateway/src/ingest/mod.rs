//! Every way in. Each ingest turns what it received into [`crate::spool::NewRequest`]s and
//! submits them to the [`Intake`] in one call that answers only after the spool's commit.
//!
//! - `intake`: [`Intake`] and [`Submission`], the seam every listener calls.
//! - `json`: the HTTP API's notification documents (docs/api.md), with their defaults and every
//!   error code, checked whole before anything is stored.
//! - `mcmt`: Momentum's MCMT messages (`message/vnd.msys.apn` parts), shared by the SMTP
//!   listener (`crate::smtp`) and the REST injector (`/v1.0/inject`); each part goes through
//!   `json`'s checks, so the defaults are the same everywhere.
//! - `supersede`: the key a request supersedes older queued notifications by, from its app's
//!   `supersede` setting.
//! - `token_sizes`: the warning about accepted tokens of a size no device issues.

mod intake;
pub mod json;
pub mod mcmt;
mod rate;
mod supersede;
mod token_sizes;

pub use token_sizes::USUAL_TOKEN_HEX;

pub use intake::{Accepted, Intake, OnCommit, Replay, Submission, Trouble};

/// Why ingest refused what it was given: the kind of problem, a message for people, and the
/// index of the first bad notification. Each way in answers it in its own terms (the HTTP API's
/// error codes, an SMTP 554, the injector's results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: Problem,
    pub message: String,
    pub index: Option<usize>,
}

/// The kinds of problem a submission can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    ForbiddenApp,
    UnknownApp,
    InvalidJson,
    TooManyTokens,
    PayloadTooLarge,
    InvalidToken,
    InvalidPushType,
    InvalidPriority,
    InvalidTopic,
    CollapseIdTooLong,
    ConflictingFields,
    AlreadyExpired,
    InvalidField,
    /// Ours, not the caller's (a payload that cannot be encoded).
    Internal,
}

impl Rejection {
    pub fn new(kind: Problem, message: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            message: message.into(),
            index: None,
        }
    }

    /// The same problem, at notification `index`.
    pub fn at(mut self, index: usize) -> Rejection {
        self.index = Some(index);
        self
    }
}
