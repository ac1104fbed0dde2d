//! Credentials presented and refused — a wrong API key over HTTP or the injector, a refused
//! dashboard login, a refused SMTP AUTH — counted (`pushgate_auth_failures_total`), logged with
//! the peer's address, and slowed down once one address keeps failing: its credentials wait
//! before they are looked at, whatever their outcome, so someone guessing keys gets ever fewer
//! guesses a second, while a client with a stale key is not shut out (it only waits, at most
//! [`MAX_DELAY`]). `[server] slow_failed_logins` says which addresses are slowed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Failures from one address that are answered at once.
pub const FREE: u32 = 5;
/// The longest an answer to a failing address waits (within the listeners' 10 s drain at
/// shutdown).
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// An address is forgotten this long after its last failure.
const FORGET: Duration = Duration::from_secs(600);
/// Addresses remembered at most (the oldest go first): a flood from many addresses costs a
/// bounded map.
const MAX_PEERS: usize = 10_000;

/// Recent failures by peer address. A std mutex, held for a lookup, never across an await.
#[derive(Debug, Default)]
pub struct LoginFailures {
    by_peer: Mutex<HashMap<IpAddr, Record>>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    count: u32,
    last: Instant,
}

impl LoginFailures {
    /// A credential from `peer` on `listener` was refused.
    pub fn failed(&self, peer: IpAddr, listener: &'static str) {
        crate::metrics::auth_failed(listener);
        let (shown, peer) = (peer, bucket(peer));
        let now = Instant::now();
        let count = {
            let mut map = self
                .by_peer
                .lock()
                .expect("the failures lock is never poisoned");
            if map.len() >= MAX_PEERS && !map.contains_key(&peer) {
                map.retain(|_, r| now.duration_since(r.last) < FORGET);
                if map.len() >= MAX_PEERS
                    && let Some(oldest) = map.iter().min_by_key(|(_, r)| r.last).map(|(p, _)| *p)
                {
                    map.remove(&oldest);
                }
            }
            let r = map.entry(peer).or_insert(Record {
                count: 0,
                last: now,
            });
            if now.duration_since(r.last) >= FORGET {
                r.count = 0;
            }
            r.count = r.count.saturating_add(1);
            r.last = now;
            r.count
        };
        info!(peer = %shown, listener, failures = count, "authentication failed");
        if count == FREE + 1 {
            warn!(
                peer = %shown,
                listener,
                "repeated authentication failures from this address: its answers are slowed down"
            );
        }
    }

    /// How long a credential from `peer` waits: nothing for an address with at most [`FREE`]
    /// failures (counted until ten minutes pass without one), then 250 ms doubling with each
    /// failure up to [`MAX_DELAY`].
    pub fn delay(&self, peer: IpAddr) -> Duration {
        let map = self
            .by_peer
            .lock()
            .expect("the failures lock is never poisoned");
        match map.get(&bucket(peer)) {
            Some(r) if r.count > FREE && r.last.elapsed() < FORGET => {
                let doublings = (r.count - FREE - 1).min(16);
                (Duration::from_millis(250) * 2u32.pow(doublings)).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }
}

/// The address failures are counted under: an IPv4 one as itself (also when it arrives mapped
/// into IPv6), an IPv6 one by its /64, which one host usually holds whole.
fn bucket(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(s))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_slow_down_after_the_free_failures_and_stop_at_the_cap() {
        let f = LoginFailures::default();
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..FREE {
            f.failed(peer, "http");
        }
        assert_eq!(f.delay(peer), Duration::ZERO);
        f.failed(peer, "http");
        assert_eq!(f.delay(peer), Duration::from_millis(250));
        f.failed(peer, "http");
        assert_eq!(f.delay(peer), Duration::from_millis(500));
        for _ in 0..20 {
            f.failed(peer, "http");
        }
        assert_eq!(f.delay(peer), MAX_DELAY);
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(
            f.delay(other),
            Duration::ZERO,
            "another address is not slowed"
        );
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            f.delay(mapped),
            MAX_DELAY,
            "the same address, mapped into IPv6"
        );
        for i in 0..=FREE {
            f.failed(format!("2001:db8::{i}").parse().unwrap(), "smtp");
        }
        assert_eq!(
            f.delay("2001:db8::ffff".parse().unwrap()),
            Duration::from_millis(250),
            "one /64"
        );
    }
}
