//! The task that drives one h2 connection: its housekeeping (PINGs when idle or asked, the idle
//! close, the silent close) and its removal from the pool when it ends.

use super::*;

pub(super) enum Housekeeping {
    Nothing,
    Ping,
    Close,
    Gone,
}

/// Drives one connection until it ends: PINGs it when idle or when a sender's stream timed out
/// on it, closes it after `idle_timeout` or when a PING goes unanswered for `ping_timeout`;
/// then removes it from the pool.
pub(super) async fn drive(
    shared: Arc<Shared>,
    id: u64,
    mut conn: H2Connection,
    health: Arc<Health>,
) {
    let mut ping = conn.ping_pong();
    let period = (shared.config.ping_interval.min(shared.config.idle_timeout) / 4)
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the PING in flight counts as unanswered.
    let mut ping_due: Option<Instant> = None;
    loop {
        let mut start_ping = false;
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    info!(conn = id, error = %e, "connection ended");
                } else {
                    debug!(conn = id, "connection closed");
                }
                break;
            }
            pong = std::future::poll_fn(|cx| match ping.as_mut() {
                Some(p) => p.poll_pong(cx),
                None => std::task::Poll::Pending,
            }), if ping_due.is_some() => {
                ping_due = None;
                if let Err(e) = pong {
                    info!(conn = id, error = %e, "PING failed; dropping the connection");
                    break;
                }
                health.state.send_modify(|l| l.pongs += 1);
            }
            () = sleep_until_some(ping_due) => {
                warn!(conn = id, endpoint = %shared.config.endpoint, "PING unanswered: the connection is silent; closing it, its streams go elsewhere");
                shared.silenced(id);
                health.state.send_modify(|l| l.silent = true);
                break;
            }
            () = health.check.notified(), if ping_due.is_none() => start_ping = true,
            _ = tick.tick() => match shared.housekeeping(id) {
                Housekeeping::Nothing | Housekeeping::Gone => {}
                Housekeeping::Close => debug!(conn = id, "closing idle connection"),
                Housekeeping::Ping => start_ping = ping_due.is_none(),
            },
        }
        if start_ping {
            match ping.as_mut() {
                Some(p) => match p.send_ping(h2::Ping::opaque()) {
                    Ok(()) => ping_due = Some(Instant::now() + shared.config.ping_timeout),
                    Err(e) => {
                        info!(conn = id, error = %e, "cannot PING; dropping the connection");
                        break;
                    }
                },
                // No PING to be had: the connection cannot be checked, so it is taken as alive.
                None => health.state.send_modify(|l| l.pongs += 1),
            }
        }
    }
    health.state.send_modify(|l| l.ended = true);
    shared.ended(id);
}

/// Sleeps until `at`, or forever when there is none.
pub(super) async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Shared {
    pub(super) fn housekeeping(&self, conn: u64) -> Housekeeping {
        let mut st = self.lock();
        let Some(c) = st.conns.iter_mut().find(|c| c.id == conn) else {
            return Housekeeping::Gone;
        };
        if c.in_flight > 0 || c.send.is_none() {
            return Housekeeping::Nothing;
        }
        let idle = c.last_used.elapsed();
        if idle >= self.config.idle_timeout {
            c.send = None;
            c.closed_by_us = true;
            return Housekeeping::Close;
        }
        if idle >= self.config.ping_interval && c.last_ping.elapsed() >= self.config.ping_interval {
            c.last_ping = Instant::now();
            return Housekeeping::Ping;
        }
        Housekeeping::Nothing
    }

    /// The driver of `conn` has ended: the slot goes now, or when its last stream is released.
    pub(super) fn ended(&self, conn: u64) {
        let mut st = self.lock();
        if let Some(i) = st.conns.iter().position(|c| c.id == conn) {
            let c = &mut st.conns[i];
            c.send = None;
            if c.in_flight > 0 {
                c.ended = true;
            } else {
                self.remove(&mut st, i);
            }
        }
        drop(st);
        self.changed.notify_waiters();
    }
}
