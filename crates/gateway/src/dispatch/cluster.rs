//! Dispatch among the gateways sharing a PostgreSQL spool (docs/postgres.md, "Several
//! gateways"): the others' news applied here — a wake-up when work nobody holds appears, the
//! dead tokens they register or clear, a full resync when news may have been missed — and one
//! provider token per key for the whole cluster, read from the spool (and renewed there by
//! whichever gateway finds it due), so that Apple sees one token per key as it asks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::warn;

use super::{Dispatcher, Shared};
use crate::spool::{ClusterEvent, Spool};

/// How often the shared provider tokens are read.
pub(super) const TOKEN_SYNC: Duration = Duration::from_secs(60);
/// A shared token this old is renewed (by the first gateway to find it so): before the
/// signer's own renewal at 50 minutes, so that the cluster's renewal is the one taken.
const SHARED_RENEW_AFTER: Duration = Duration::from_secs(40 * 60);
/// A signer with no token yet takes the cluster's only this fresh (else renews it): it keeps a
/// token 20 minutes before it may change (Apple's rule), and must be able to take the next
/// renewal before its own, at 50 minutes.
const FIRST_TAKE_WITHIN: Duration = Duration::from_secs(10 * 60);

/// Applies the other gateways' news until shutdown.
pub(super) async fn follow(shared: Arc<Shared>, mut events: mpsc::Receiver<ClusterEvent>) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = shared.shutdown.cancelled() => return,
        };
        if let Some(e) = &event {
            crate::metrics::cluster_event(match e {
                ClusterEvent::Work => "work",
                ClusterEvent::DeadToken { .. } => "dead_token",
                ClusterEvent::TokenCleared { .. } => "token_cleared",
                ClusterEvent::Resync => "resync",
                ClusterEvent::Paused => "paused",
                ClusterEvent::CancelAsked { .. } => "cancel_asked",
                ClusterEvent::CancelAnswered(_) => "cancel_answered",
                ClusterEvent::Fenced => "fenced",
            });
        }
        match event {
            None => return,
            Some(ClusterEvent::Work) => shared.rescan(),
            Some(ClusterEvent::Fenced) => {
                for app in shared.apps() {
                    app.queue.drop_waiting();
                }
            }
            Some(ClusterEvent::DeadToken { app, token }) => shared.dead.insert(&app, &token),
            Some(ClusterEvent::TokenCleared { app, token }) => shared.dead.remove(&app, &token),
            Some(ClusterEvent::Paused) => shared.follow_pauses().await,
            Some(ClusterEvent::CancelAsked { from, ask }) => shared.answer_ask(from, ask),
            Some(ClusterEvent::CancelAnswered(answer)) => shared.take_answer(answer),
            Some(ClusterEvent::Resync) => {
                shared.follow_pauses().await;
                match shared.spool.all_dead_tokens().await {
                    Ok(all) => shared.dead.replace(all),
                    Err(e) => {
                        warn!(error = %crate::error_chain(&e), "reading the dead tokens again failed")
                    }
                }
                shared.rescan();
            }
        }
    }
}

impl Dispatcher {
    /// Takes the cluster's provider token for every key in use (none on a spool one gateway
    /// owns). At start this runs before any worker sends, so every gateway presents the same
    /// token from its first request.
    pub(super) async fn sync_provider_tokens(&self) {
        let signers: Vec<_> = self
            .signers
            .lock()
            .expect("signers lock")
            .values()
            .cloned()
            .collect();
        let now = SystemTime::now();
        for signer in signers {
            let fresh_after = match signer.current() {
                None => now - FIRST_TAKE_WITHIN,
                Some(_) => now - SHARED_RENEW_AFTER,
            };
            match self
                .shared
                .spool
                .shared_provider_token(signer.key(), fresh_after)
                .await
            {
                Ok(Some((jwt, iat))) => {
                    if signer.adopt(&jwt, iat) {
                        tracing::debug!(key_id = %signer.key().key_id(), "took the cluster's provider token");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(key_id = %signer.key().key_id(), error = %crate::error_chain(&e), "reading the cluster's provider token failed; this gateway signs its own meanwhile")
                }
            }
        }
    }
}
