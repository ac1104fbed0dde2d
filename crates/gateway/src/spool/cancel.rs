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
    /// Whether notification `id` of `request` is one this cancel names.
    pub fn names(&self, id: &ApnsId, request: &StoredRequest) -> bool {
        match self {
            CancelTarget::Ids(ids) => ids.contains(id),
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

/// A cancel one gateway asks of the others sharing a PostgreSQL spool (`pushgate_cancel`):
/// each cancels what of it it holds, and answers ([`CancelAnswer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelAsk {
    /// Names the ask; the answers carry it.
    pub op: uuid::Uuid,
    pub target: CancelTarget,
    pub apps: Vec<String>,
}

/// One gateway's answer to a [`CancelAsk`] (`pushgate_cancelled`).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelAnswer {
    pub op: uuid::Uuid,
    pub cancelled: u64,
    /// For an `Ids` cancel, the ids it cancelled.
    pub ids: Vec<ApnsId>,
}

impl CancelAsk {
    /// As a NOTIFY payload (JSON).
    pub fn encode(&self) -> String {
        let target = match &self.target {
            CancelTarget::Ids(ids) => serde_json::json!({
                "ids": ids.iter().map(ApnsId::to_string).collect::<Vec<_>>(),
            }),
            CancelTarget::Request(r) => serde_json::json!({ "request": r.to_string() }),
            CancelTarget::App {
                app,
                created_before,
                collapse_id,
            } => serde_json::json!({
                "app": app,
                "created_before_ms": super::to_ms(*created_before),
                "collapse_id": collapse_id.as_ref().map(CollapseId::as_str),
            }),
        };
        serde_json::json!({ "op": self.op.to_string(), "target": target, "apps": self.apps })
            .to_string()
    }

    /// From a NOTIFY payload; `None` for one this version cannot read.
    pub fn decode(payload: &str) -> Option<CancelAsk> {
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        let t = &v["target"];
        let target = if let Some(ids) = t["ids"].as_array() {
            CancelTarget::Ids(
                ids.iter()
                    .map(|i| i.as_str().and_then(|s| ApnsId::parse(s).ok()))
                    .collect::<Option<_>>()?,
            )
        } else if let Some(r) = t["request"].as_str() {
            CancelTarget::Request(RequestId::parse(r)?)
        } else {
            CancelTarget::App {
                app: t["app"].as_str()?.to_owned(),
                created_before: super::from_ms(t["created_before_ms"].as_i64()?),
                collapse_id: match t["collapse_id"].as_str() {
                    Some(c) => Some(CollapseId::parse(c).ok()?),
                    None => None,
                },
            }
        };
        Some(CancelAsk {
            op: uuid::Uuid::parse_str(v["op"].as_str()?).ok()?,
            target,
            apps: v["apps"]
                .as_array()?
                .iter()
                .map(|a| a.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
        })
    }
}

impl CancelAnswer {
    pub fn encode(&self) -> String {
        serde_json::json!({
            "op": self.op.to_string(),
            "cancelled": self.cancelled,
            "ids": self.ids.iter().map(ApnsId::to_string).collect::<Vec<_>>(),
        })
        .to_string()
    }

    pub fn decode(payload: &str) -> Option<CancelAnswer> {
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        Some(CancelAnswer {
            op: uuid::Uuid::parse_str(v["op"].as_str()?).ok()?,
            cancelled: v["cancelled"].as_u64()?,
            ids: v["ids"]
                .as_array()?
                .iter()
                .map(|i| i.as_str().and_then(|s| ApnsId::parse(s).ok()))
                .collect::<Option<_>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_and_answers_read_back_as_sent() {
        let created_before = super::super::from_ms(1_700_000_000_123);
        for target in [
            CancelTarget::Ids(vec![ApnsId::new(), ApnsId::new()]),
            CancelTarget::Request(RequestId::new()),
            CancelTarget::App {
                app: "shop".into(),
                created_before,
                collapse_id: Some(CollapseId::parse("badge").unwrap()),
            },
            CancelTarget::App {
                app: "shop".into(),
                created_before,
                collapse_id: None,
            },
        ] {
            let ask = CancelAsk {
                op: uuid::Uuid::now_v7(),
                target,
                apps: vec!["shop".into()],
            };
            assert_eq!(CancelAsk::decode(&ask.encode()), Some(ask));
        }
        let answer = CancelAnswer {
            op: uuid::Uuid::now_v7(),
            cancelled: 3,
            ids: vec![ApnsId::new()],
        };
        assert_eq!(CancelAnswer::decode(&answer.encode()), Some(answer));
        assert_eq!(CancelAsk::decode("{}"), None);
    }
}
