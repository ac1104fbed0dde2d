//! Outcomes since the gateway started, for the dashboard.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

/// Outcomes since the gateway started, for the dashboard: counts by final state, failures by
/// reason, and the latest failures.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub outcomes: BTreeMap<&'static str, u64>,
    pub failures_by_reason: BTreeMap<String, u64>,
    /// Newest first, at most [`LATEST_FAILURES`].
    pub latest_failures: VecDeque<FailureRecord>,
}

/// How many recent failures the dashboard keeps.
pub const LATEST_FAILURES: usize = 20;

#[derive(Debug, Clone)]
pub struct FailureRecord {
    pub time: SystemTime,
    pub id: apns::ApnsId,
    pub app: String,
    pub token: apns::DeviceToken,
    pub state: crate::spool::State,
    pub reason: String,
}
