//! What happened to notifications, carried off the delivery path: the delivery log (`log`,
//! Momentum's apn_logger) and the failure hooks (`hooks`, the modern form of Momentum's Lua
//! disposition hook).
//!
//! The recorder hands each recorded outcome here after its commit; a halting app hands its
//! halt. Both sinks take events through bounded queues with `try_send`: a slow disk or a hook
//! that is down loses events (counted in metrics), never delivery speed.

pub mod hooks;
pub mod log;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apns::{ApnsId, DeviceToken};
use serde::Serialize;

use crate::config::{Config, Log, Webhook, WebhookEvent};
use crate::rfc3339;
use crate::spool::State;
use hooks::Hook;
use log::DeliveryLog;

/// One thing worth telling.
#[derive(Debug, Clone)]
pub enum Event {
    /// An attempt's recorded outcome: final, or (with `per_attempt`) one that will be retried.
    Outcome(OutcomeEvent),
    /// Apple declared a token dead; it is suppressed until the device registers again.
    TokenInvalidated {
        time: SystemTime,
        app: String,
        token: DeviceToken,
        reason: String,
        since: SystemTime,
    },
    /// An app stopped sending (its notifications stay queued).
    AppHalted {
        time: SystemTime,
        app: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct OutcomeEvent {
    pub time: SystemTime,
    pub id: ApnsId,
    pub app: String,
    pub token: DeviceToken,
    pub state: State,
    /// Apple's HTTP status, when Apple answered.
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub attempts: u32,
}

impl Event {
    /// The hook event it is, if any.
    pub fn hook_kind(&self) -> Option<WebhookEvent> {
        match self {
            Event::Outcome(o) => match o.state {
                State::Failed => Some(WebhookEvent::Failed),
                State::Expired => Some(WebhookEvent::Expired),
                _ => None,
            },
            Event::TokenInvalidated { .. } => Some(WebhookEvent::TokenInvalidated),
            Event::AppHalted { .. } => Some(WebhookEvent::AppHalted),
        }
    }

    /// The document a hook receives (docs/momentum.md documents it).
    pub fn document(&self) -> HookEvent<'_> {
        let unix = |t: &SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        match self {
            Event::Outcome(o) => {
                let outcome = HookOutcome {
                    time: rfc3339::format(o.time),
                    id: o.id.to_string(),
                    app: &o.app,
                    token: o.token.as_str(),
                    status_code: o.status,
                    reason: o.reason.as_deref(),
                    attempts: o.attempts,
                };
                match o.state {
                    State::Expired => HookEvent::Expired(outcome),
                    _ => HookEvent::Failed(outcome),
                }
            }
            Event::TokenInvalidated {
                time,
                app,
                token,
                reason,
                since,
            } => HookEvent::TokenInvalidated {
                time: rfc3339::format(*time),
                app,
                token: token.as_str(),
                reason,
                since: unix(since),
            },
            Event::AppHalted { time, app, reason } => HookEvent::AppHalted {
                time: rfc3339::format(*time),
                app,
                reason,
            },
        }
    }
}

/// One event as a hook receives it: `{"event": "failed", ...}`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HookEvent<'a> {
    Failed(HookOutcome<'a>),
    Expired(HookOutcome<'a>),
    TokenInvalidated {
        time: String,
        app: &'a str,
        token: &'a str,
        reason: &'a str,
        /// UNIX seconds.
        since: u64,
    },
    AppHalted {
        time: String,
        app: &'a str,
        reason: &'a str,
    },
}

/// A failed or expired notification, as a hook receives it.
#[derive(Debug, Serialize)]
pub struct HookOutcome<'a> {
    pub time: String,
    pub id: String,
    pub app: &'a str,
    pub token: &'a str,
    /// Apple's HTTP status, when Apple answered.
    pub status_code: Option<u16>,
    pub reason: Option<&'a str>,
    pub attempts: u32,
}

/// The sinks in force, replaced on reload.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    pub log: Option<Arc<DeliveryLog>>,
    pub hooks: Vec<Arc<Hook>>,
}

impl Sinks {
    /// Whether anything listens for outcomes at all (else the recorder builds no events).
    pub fn any(&self) -> bool {
        self.log.is_some() || !self.hooks.is_empty()
    }

    /// Whether a non-final outcome is wanted (the log's `per_attempt`).
    pub fn per_attempt(&self) -> bool {
        self.log.as_ref().is_some_and(|l| l.per_attempt())
    }

    /// Hands `event` to every sink that wants it.
    pub fn send(&self, event: &Event) {
        if let Some(l) = &self.log
            && matches!(event, Event::Outcome(_))
        {
            l.offer(event);
        }
        if let Some(kind) = event.hook_kind() {
            for h in &self.hooks {
                h.offer(kind, event);
            }
        }
    }
}

/// The event hub: the sinks in force and the configuration they were made from.
#[derive(Debug, Default)]
pub struct Events {
    /// A std lock held only to clone or swap the sinks.
    sinks: RwLock<Sinks>,
    made_from: Mutex<(Option<Log>, Vec<Webhook>)>,
}

impl Events {
    /// Starts the sinks `config` names. Hooks need a Tokio runtime.
    pub fn start(config: &Config) -> Events {
        let events = Events::default();
        events.reload(config);
        events
    }

    /// The sinks in force.
    pub fn sinks(&self) -> Sinks {
        self.sinks.read().expect("sinks lock").clone()
    }

    /// Applies `[log]` and `[[webhooks]]` from `config`; a sink whose settings did not change
    /// keeps running. A replaced log thread finishes what it holds; a replaced hook sends what
    /// it has queued.
    pub fn reload(&self, config: &Config) {
        let mut made = self.made_from.lock().expect("events config lock");
        let log = config.log.file.is_some().then(|| config.log.clone());
        let mut sinks = self.sinks();
        if made.0 != log {
            sinks.log = log
                .as_ref()
                .map(|l| Arc::new(DeliveryLog::start(l, log::Options::default())));
            made.0 = log;
        }
        if made.1 != config.webhooks {
            sinks.hooks = config
                .webhooks
                .iter()
                .map(|w| Hook::start(w, hooks::Options::default()))
                .collect();
            made.1.clone_from(&config.webhooks);
        }
        *self.sinks.write().expect("sinks lock") = sinks;
    }

    /// An app halted.
    pub fn app_halted(&self, app: &str, reason: &str) {
        self.sinks().send(&Event::AppHalted {
            time: SystemTime::now(),
            app: app.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Stops the sinks: the log writes what it holds and closes its file (within `within`);
    /// hooks get no more events.
    pub async fn close(&self, within: Duration) {
        let sinks = std::mem::take(&mut *self.sinks.write().expect("sinks lock"));
        drop(sinks.hooks);
        if let Some(l) = sinks.log {
            l.close(within).await;
        }
    }
}
