//! Provider tokens: ES256 JWTs from an APNs .p8 key.
//!
//! Apple's rules: the token's `iat` must be under an hour old, and a connection may not see a
//! new token more often than every 20 minutes (`TooManyProviderTokenUpdates`). So one token per
//! (team, key) is shared by every connection and renewed after 50 minutes; a rejection as
//! expired forces a renewal only when the current token is old enough to be renewed anyway.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::AuthError;
use crate::clock::Clock;

/// A token is renewed once it is this old.
pub const RENEW_AFTER: Duration = Duration::from_secs(50 * 60);
/// Apple refuses a new token on a connection sooner than this after the previous one.
pub const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// Apple refuses tokens older than this (`ExpiredProviderToken`).
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(60 * 60);

/// An APNs signing key (.p8) with its key id and team id. `Debug` never shows the key.
pub struct SigningKey {
    key_id: String,
    team_id: String,
    key: EncodingKey,
    /// SHA-256 of the PEM it was read from: tells a reloaded key from a changed one without
    /// keeping the key's text.
    fingerprint: [u8; 32],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), AuthError> {
    if value.len() == 10 && value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(AuthError::InvalidKeyField {
            field,
            value: value.to_owned(),
        })
    }
}

impl SigningKey {
    /// From the PEM text of a .p8 file. `what` names the source in errors (a file path).
    /// A test signature is made at once, so a key that cannot sign ES256 fails here.
    pub fn from_pem(
        pem: &[u8],
        key_id: &str,
        team_id: &str,
        what: &str,
    ) -> Result<SigningKey, AuthError> {
        check_id("key_id", key_id)?;
        check_id("team_id", team_id)?;
        let key = EncodingKey::from_ec_pem(pem).map_err(|source| AuthError::InvalidSigningKey {
            what: what.to_owned(),
            source,
        })?;
        let mut fingerprint = [0; 32];
        fingerprint
            .copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pem).as_ref());
        let k = SigningKey {
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            key,
            fingerprint,
        };
        k.sign(UNIX_EPOCH).map_err(|e| match e {
            AuthError::Sign(source) => AuthError::InvalidSigningKey {
                what: what.to_owned(),
                source,
            },
            other => other,
        })?;
        Ok(k)
    }

    /// Reads and loads a .p8 file.
    pub fn from_file(path: &Path, key_id: &str, team_id: &str) -> Result<SigningKey, AuthError> {
        let pem = std::fs::read(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        SigningKey::from_pem(&pem, key_id, team_id, &path.display().to_string())
    }

    /// The key id (`kid`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The team id (`iss`).
    pub fn team_id(&self) -> &str {
        &self.team_id
    }

    /// Whether `other` is the same key under the same ids (read again from the same text, as
    /// on a reload): a signer of one may go on signing for the other.
    pub fn same_as(&self, other: &SigningKey) -> bool {
        self.key_id == other.key_id
            && self.team_id == other.team_id
            && self.fingerprint == other.fingerprint
    }

    /// A provider token (the JWT) issued at `iat`, for gateways that share one token per key
    /// through a store of their own ([`TokenSigner::adopt`]). A live credential for an hour:
    /// never log it.
    pub fn sign_at(&self, iat: SystemTime) -> Result<String, AuthError> {
        self.sign(iat)
    }

    /// Signs a token issued at `iat`.
    fn sign(&self, iat: SystemTime) -> Result<String, AuthError> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            iat: u64,
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let iat = iat.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.team_id,
                iat,
            },
            &self.key,
        )
        .map_err(AuthError::Sign)
    }
}

/// A signed token, ready as an `authorization` header value.
pub struct ProviderToken {
    header: HeaderValue,
    issued_at: SystemTime,
    /// When this signer took it into use (its `iat` for one it signed; later for one adopted
    /// from a cluster): Apple's 20 minutes between changes count from here.
    taken_at: SystemTime,
}

impl ProviderToken {
    /// `bearer <jwt>`, marked sensitive so HPACK never indexes it and logs never show it.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// The `iat` claim.
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }
}

impl fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderToken")
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

/// Hands out the current token for one (team, key), signing a new one when it is due.
/// Shared by every connection of every pool that uses the key.
#[derive(Debug)]
pub struct TokenSigner {
    key: Arc<SigningKey>,
    clock: Arc<dyn Clock>,
    /// The token in use. A std mutex: held only to compare times and clone an `Arc` (signing
    /// happens under it too, about 30 µs every 50 minutes), never across an await.
    current: Mutex<Option<Arc<ProviderToken>>>,
}

impl TokenSigner {
    pub fn new(key: impl Into<Arc<SigningKey>>, clock: Arc<dyn Clock>) -> TokenSigner {
        TokenSigner {
            key: key.into(),
            clock,
            current: Mutex::new(None),
        }
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The token to send now: the current one, or a new one if it is [`RENEW_AFTER`] old.
    pub fn token(&self) -> Result<Arc<ProviderToken>, AuthError> {
        let now = self.clock.now();
        let mut current = self.current.lock().expect("token lock is never poisoned");
        if let Some(t) = current.as_ref()
            && age(t, now) < RENEW_AFTER
        {
            return Ok(Arc::clone(t));
        }
        let fresh = self.issue(now)?;
        *current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// How old the token in use is (`None` before the first is signed); never signs.
    pub fn current_age(&self) -> Option<Duration> {
        let now = self.clock.now();
        let current = self.current.lock().expect("token lock is never poisoned");
        current.as_ref().map(|t| age(t, now))
    }

    /// APNs answered `ExpiredProviderToken` to `rejected`. Renew if `rejected` is still current
    /// and at least [`MIN_RENEWAL_INTERVAL`] old; a younger token rejected as expired means the
    /// clocks disagree, and renewing would only add `TooManyProviderTokenUpdates`.
    pub fn renew_rejected(
        &self,
        rejected: &ProviderToken,
    ) -> Result<Arc<ProviderToken>, AuthError> {
        let now = self.clock.now();
        let mut current = self.current.lock().expect("token lock is never poisoned");
        if let Some(t) = current.as_ref()
            && (t.issued_at != rejected.issued_at || age(t, now) < MIN_RENEWAL_INTERVAL)
        {
            return Ok(Arc::clone(t));
        }
        let fresh = self.issue(now)?;
        *current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Takes `jwt`, issued at `iat` for this key by another gateway of a cluster, as the
    /// token to send — when there is none yet, or when it is newer than the one in use and
    /// that one has been in use for [`MIN_RENEWAL_INTERVAL`] (sooner, a connection would show
    /// Apple a new token too soon: `TooManyProviderTokenUpdates`). Answers whether it did.
    pub fn adopt(&self, jwt: &str, iat: SystemTime) -> bool {
        let Ok(mut header) = HeaderValue::try_from(format!("bearer {jwt}")) else {
            return false;
        };
        header.set_sensitive(true);
        let now = self.clock.now();
        // One from far ahead of this clock would look young until it had long expired.
        if iat > now + Duration::from_secs(300) {
            return false;
        }
        let mut current = self.current.lock().expect("token lock is never poisoned");
        if let Some(t) = current.as_ref()
            && (iat <= t.issued_at
                || now.duration_since(t.taken_at).unwrap_or_default() < MIN_RENEWAL_INTERVAL)
        {
            return false;
        }
        *current = Some(Arc::new(ProviderToken {
            header,
            issued_at: iat,
            taken_at: now,
        }));
        true
    }

    /// The token in use, when there is one (never signs).
    pub fn current(&self) -> Option<Arc<ProviderToken>> {
        self.current
            .lock()
            .expect("token lock is never poisoned")
            .clone()
    }

    fn issue(&self, now: SystemTime) -> Result<Arc<ProviderToken>, AuthError> {
        let jwt = self.key.sign(now)?;
        let mut header = HeaderValue::try_from(format!("bearer {jwt}"))
            .expect("a JWT is base64url and dots, always a valid header value");
        header.set_sensitive(true);
        tracing::debug!(key_id = %self.key.key_id, "signed a new provider token");
        Ok(Arc::new(ProviderToken {
            header,
            issued_at: now,
            taken_at: now,
        }))
    }
}

fn age(t: &ProviderToken, now: SystemTime) -> Duration {
    now.duration_since(t.issued_at).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const TEST_P8: &[u8] = apns_mock::testing::P8;

    fn signer() -> (Arc<ManualClock>, TokenSigner) {
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let key = SigningKey::from_pem(TEST_P8, "ABC123DEFG", "TEAM123456", "test").unwrap();
        (clock.clone(), TokenSigner::new(key, clock))
    }

    fn claims(t: &ProviderToken) -> (serde_json::Value, serde_json::Value) {
        use base64_url::decode;
        let s = t
            .header()
            .to_str()
            .unwrap()
            .strip_prefix("bearer ")
            .unwrap();
        let mut parts = s.split('.');
        let h = decode(parts.next().unwrap());
        let c = decode(parts.next().unwrap());
        let sig = decode(parts.next().unwrap());
        assert_eq!(sig.len(), 64, "ES256 signature is raw r||s");
        (
            serde_json::from_slice(&h).unwrap(),
            serde_json::from_slice(&c).unwrap(),
        )
    }

    /// base64url without padding, as JWTs use; a few lines so the test needs no extra crate.
    mod base64_url {
        pub fn decode(s: &str) -> Vec<u8> {
            assert!(!s.contains('='), "JWT parts carry no padding");
            let val = |c: u8| match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                other => panic!("not base64url: {other}"),
            };
            let mut out = Vec::new();
            let (mut acc, mut bits) = (0u32, 0);
            for c in s.bytes() {
                acc = (acc << 6) | u32::from(val(c));
                bits += 6;
                if bits >= 8 {
                    bits -= 8;
                    out.push((acc >> bits) as u8);
                }
            }
            out
        }
    }

    #[test]
    fn token_has_kid_iss_iat_and_a_raw_signature() {
        let (clock, s) = signer();
        let t = s.token().unwrap();
        let (h, c) = claims(&t);
        assert_eq!(h["alg"], "ES256");
        assert_eq!(h["kid"], "ABC123DEFG");
        assert_eq!(c["iss"], "TEAM123456");
        assert_eq!(c["iat"], 1_800_000_000);
        assert_eq!(t.issued_at(), clock.now());
        assert!(t.header().is_sensitive());
    }

    /// A cluster's token is taken at once by a signer with none, and later only when it is
    /// newer and the one in use is 20 minutes old (no connection shows a new token sooner).
    #[test]
    fn a_shared_token_is_adopted_without_a_change_inside_20_minutes() {
        let (clock, s) = signer();
        let t0 = clock.now();
        let other = s.key().sign_at(t0).unwrap();
        assert!(s.adopt(&other, t0), "none yet: adopted");
        let current = s.token().unwrap();
        assert_eq!(current.issued_at(), t0);
        // Compared, not printed: even a test key's token stays out of the output.
        assert!(current.header().to_str().unwrap() == format!("bearer {other}"));
        assert!(current.header().is_sensitive());
        clock.advance(Duration::from_secs(10 * 60));
        let newer = s.key().sign_at(clock.now()).unwrap();
        assert!(!s.adopt(&newer, clock.now()), "in use for 10 minutes: kept");
        assert!(!s.adopt(&other, t0), "not newer: kept");
        clock.advance(Duration::from_secs(10 * 60));
        assert!(
            s.adopt(&newer, t0 + Duration::from_secs(600)),
            "20 minutes on: taken"
        );
        assert_eq!(
            s.current().unwrap().issued_at(),
            t0 + Duration::from_secs(600)
        );
        // The 20 minutes count from when it was taken, not from its `iat`: taken 10 minutes
        // old, it is kept for 20 minutes more.
        clock.advance(Duration::from_secs(19 * 60));
        let later = s.key().sign_at(clock.now()).unwrap();
        assert!(!s.adopt(&later, clock.now()), "in use for 19 minutes: kept");
        clock.advance(Duration::from_secs(60));
        assert!(s.adopt(&later, clock.now() - Duration::from_secs(60)));
    }

    #[test]
    fn one_token_is_shared_until_50_minutes_then_renewed() {
        let (clock, s) = signer();
        let first = s.token().unwrap();
        clock.advance(Duration::from_secs(49 * 60 + 59));
        assert!(Arc::ptr_eq(&first, &s.token().unwrap()));
        clock.advance(Duration::from_secs(1));
        let second = s.token().unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(claims(&second).1["iat"], 1_800_000_000 + 50 * 60);
    }

    #[test]
    fn a_rejected_token_is_renewed_only_after_20_minutes() {
        let (clock, s) = signer();
        let first = s.token().unwrap();
        clock.advance(Duration::from_secs(19 * 60));
        let kept = s.renew_rejected(&first).unwrap();
        assert!(
            Arc::ptr_eq(&first, &kept),
            "renewing at 19 min would break the 20-min rule"
        );
        clock.advance(Duration::from_secs(60));
        let renewed = s.renew_rejected(&first).unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed));
        // A second rejection of the old token does not renew again.
        let again = s.renew_rejected(&first).unwrap();
        assert!(Arc::ptr_eq(&renewed, &again));
    }

    #[test]
    fn a_key_read_again_is_the_same_key_and_another_is_not() {
        let load = |pem: &[u8], kid| SigningKey::from_pem(pem, kid, "TEAM123456", "t").unwrap();
        let key = load(TEST_P8, "ABC123DEFG");
        assert!(key.same_as(&load(TEST_P8, "ABC123DEFG")));
        assert!(!key.same_as(&load(TEST_P8, "XYZ123DEFG")), "another key id");
        let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(
            !key.same_as(&load(other.as_bytes(), "ABC123DEFG")),
            "another key"
        );
    }

    #[test]
    fn bad_keys_and_ids_are_refused_without_echoing_the_key() {
        let e = SigningKey::from_pem(b"not a key", "ABC123DEFG", "TEAM123456", "k.p8").unwrap_err();
        assert!(e.to_string().contains("k.p8"), "{e}");
        let e = SigningKey::from_pem(TEST_P8, "short", "TEAM123456", "k.p8").unwrap_err();
        assert!(e.to_string().contains("key_id"), "{e}");
        let k = SigningKey::from_pem(TEST_P8, "ABC123DEFG", "TEAM123456", "k.p8").unwrap();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("MIGH"), "{dbg}");
    }
}
