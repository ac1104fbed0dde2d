//! What the spool offers cancels and pauses (docs/cancel.md): a pass over one app's waiting
//! notifications with their requests, the conditional write that cancels what is still
//! waiting, a submission's summary, and the apps an operator paused.
//!
//! The spool alone cannot tell what is in flight: on SQLite a notification being sent is still
//! `queued` (dispatch knows it is in flight, `dispatch::ready`). So a cancel is two steps, and
//! dispatch runs both (`dispatch::cancel`): it first keeps what the cancel names from being
//! taken and learns what is already taken, then asks the spool to cancel what waits, except
//! that. The spool's part is only ever "cancel these if they still wait".

use std::sync::Arc;
use std::time::SystemTime;

use apns::{ApnsId, CollapseId};

use super::{ReadyCursor, RequestId, StoredRequest};

/// What a cancel takes back.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelTarget {
    /// These notifications.
    Ids(Vec<ApnsId>),
    /// Every notification of one submission.
    Request(RequestId),
    /// Every notification of an app accepted at or before `created_before`, with
    /// `collapse_id` when one is named.
    App {
        app: String,
        created_before: SystemTime,
        collapse_id: Option<CollapseId>,
    },
}

impl CancelTarget {
    /// Whether a notification of `request` is one this cancel names (an `Ids` cancel names
    /// ids, not requests: see [`CancelTarget::names_id`]).
    pub fn names_request(&self, request: &StoredRequest) -> bool {
        match self {
            CancelTarget::Ids(_) => false,
            CancelTarget::Request(rid) => request.request_id.as_ref() == Some(rid),
            CancelTarget::App {
                app,
                created_before,
                collapse_id,
            } => {
                request.app == *app
                    && request.created_at <= *created_before
                    && collapse_id
                        .as_ref()
                        .is_none_or(|c| request.collapse_id.as_ref() == Some(c))
            }
        }
    }

    /// Whether notification `id` of `request` is one this cancel names.
    pub fn names(&self, id: &ApnsId, request: &StoredRequest) -> bool {
        match self {
            CancelTarget::Ids(ids) => ids.contains(id),
            _ => self.names_request(request),
        }
    }
}

/// Where a pass over one app's waiting notifications goes on: the scheduled ones first, then
/// the queued ones, each in the order of the pending index ([`ReadyCursor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaitingCursor {
    /// Past the scheduled ones: among the queued.
    pub queued: bool,
    pub at: ReadyCursor,
}

/// One page of [`Spool::waiting_page`](super::Spool::waiting_page): waiting notifications
/// with their requests (shared by the rows of one request within the page).
#[derive(Debug, Clone, Default)]
pub struct WaitingPage {
    pub rows: Vec<(ApnsId, Arc<StoredRequest>)>,
    /// Where the next page starts; `None` at the end of the pass.
    pub cursor: Option<WaitingCursor>,
}

/// Rows a page of a cancel's pass reads at most; the cancel itself writes as many at once.
pub const CANCEL_PAGE: usize = 10_000;

/// A submission as the spool knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestSummary {
    /// The apps its requests are for, sorted.
    pub apps: Vec<String>,
    /// Its notifications still stored.
    pub notifications: u64,
}

/// An app an operator paused (`POST /v1/apps/{app}/pause`): nothing of it is sent until it is
/// resumed. Stored in the spool, so that it survives restarts and reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPause {
    pub app: String,
    pub since: SystemTime,
    /// Ingest answers `503 app_paused` meanwhile instead of accepting.
    pub reject: bool,
}
