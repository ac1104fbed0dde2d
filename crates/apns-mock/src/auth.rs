//! Provider-token checks the way APNs applies them, per connection: signature and claims,
//! age under an hour, one team and one key family per connection, and no new token sooner than
//! 20 minutes after the last. A verified token is cached on the connection, so the signature
//! is checked once per token, not per request.

use std::sync::Mutex;

use apns::Reason;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::MockError;

/// Tokens older than this are refused as expired.
const MAX_AGE_S: u64 = 3600;
/// A connection refuses a new token sooner than this after the previous one.
const MIN_RENEWAL_S: u64 = 20 * 60;

/// Verifies ES256 signatures with the provider's public key.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtVerifier")
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Claims {
    iss: String,
    iat: u64,
}

#[derive(Debug, Clone)]
struct Verified {
    raw: Box<str>,
    team: String,
    kid: String,
    iat: u64,
}

impl JwtVerifier {
    /// From the PEM public key (`openssl pkey -pubout` of the .p8).
    pub fn new(public_pem: &[u8]) -> Result<JwtVerifier, MockError> {
        let key = DecodingKey::from_ec_pem(public_pem)
            .map_err(|e| MockError::Certificate(format!("JWT public key: {e}")))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        Ok(JwtVerifier { key, validation })
    }

    fn verify(&self, raw: &str) -> Result<Verified, Reason> {
        let header = jsonwebtoken::decode_header(raw).map_err(|_| Reason::InvalidProviderToken)?;
        let kid = header.kid.ok_or(Reason::InvalidProviderToken)?;
        let data = jsonwebtoken::decode::<Claims>(raw, &self.key, &self.validation)
            .map_err(|_| Reason::InvalidProviderToken)?;
        if data.claims.iss.len() != 10 || kid.len() != 10 {
            return Err(Reason::InvalidProviderToken);
        }
        Ok(Verified {
            raw: raw.into(),
            team: data.claims.iss,
            kid,
            iat: data.claims.iat,
        })
    }
}

/// What one connection has seen of provider tokens.
#[derive(Debug, Default)]
pub struct ConnTokens {
    /// The token in use, verified. A std mutex, held for a string compare per request.
    current: Mutex<Option<Verified>>,
}

impl ConnTokens {
    /// Checks the `authorization` header of one request at simulator time `now` (UNIX s);
    /// `Ok(true)` when the connection took a new token into use with it.
    pub fn check(
        &self,
        verifier: &JwtVerifier,
        header: Option<&str>,
        now: u64,
    ) -> Result<bool, Reason> {
        let raw = header
            .and_then(|h| h.strip_prefix("bearer "))
            .ok_or(Reason::MissingProviderToken)?;
        let mut current = self.current.lock().expect("token lock is never poisoned");
        let (iat, new) = match current.as_ref() {
            Some(v) if &*v.raw == raw => (v.iat, false),
            previous => {
                let v = verifier.verify(raw)?;
                if let Some(p) = previous {
                    if p.team != v.team {
                        return Err(Reason::InvalidProviderToken);
                    }
                    if p.kid != v.kid {
                        return Err(Reason::UnrelatedKeyIdInToken);
                    }
                    if v.iat.saturating_sub(p.iat) < MIN_RENEWAL_S {
                        return Err(Reason::TooManyProviderTokenUpdates);
                    }
                }
                let iat = v.iat;
                *current = Some(v);
                (iat, true)
            }
        };
        if now.saturating_sub(iat) > MAX_AGE_S {
            return Err(Reason::ExpiredProviderToken);
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apns::auth::{SigningKey, TokenSigner};
    use apns::clock::ManualClock;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    const P8: &[u8] = include_bytes!("../fixtures/AuthKey_ABC123DEFG.p8");
    const PUB: &[u8] = include_bytes!("../fixtures/AuthKey_ABC123DEFG.pub.pem");
    const T0: u64 = 1_800_000_000;

    fn signer(kid: &str, team: &str) -> (Arc<ManualClock>, TokenSigner) {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
        let key = SigningKey::from_pem(P8, kid, team, "test").unwrap();
        (clock.clone(), TokenSigner::new(key, clock))
    }

    fn header(s: &TokenSigner) -> String {
        s.token().unwrap().header().to_str().unwrap().to_owned()
    }

    #[test]
    fn apples_token_rules_per_connection() {
        let v = JwtVerifier::new(PUB).unwrap();
        let conn = ConnTokens::default();
        let (clock, s) = signer("ABC123DEFG", "TEAM123456");
        let first = header(&s);
        assert_eq!(conn.check(&v, None, T0), Err(Reason::MissingProviderToken));
        assert_eq!(
            conn.check(&v, Some("bearer x.y.z"), T0),
            Err(Reason::InvalidProviderToken)
        );
        assert_eq!(conn.check(&v, Some(&first), T0), Ok(true));
        assert_eq!(
            conn.check(&v, Some(&first), T0 + 10),
            Ok(false),
            "already in use"
        );
        assert_eq!(
            conn.check(&v, Some(&first), T0 + 3601),
            Err(Reason::ExpiredProviderToken)
        );
        // A new token 10 minutes later is too soon for this connection.
        clock.advance(Duration::from_secs(50 * 60));
        let renewed = header(&s);
        assert_ne!(renewed, first);
        let fresh_conn = ConnTokens::default();
        assert_eq!(fresh_conn.check(&v, Some(&first), T0), Ok(true));
        assert_eq!(
            fresh_conn.check(&v, Some(&renewed), T0 + 3000),
            Ok(true),
            "50 min later is fine"
        );
        let (_, other_team) = signer("ABC123DEFG", "OTHERTEAM1");
        assert_eq!(
            fresh_conn.check(&v, Some(&header(&other_team)), T0 + 3000),
            Err(Reason::InvalidProviderToken)
        );
        let (c2, other_kid) = signer("ZZZ123DEFG", "TEAM123456");
        c2.advance(Duration::from_secs(100 * 60));
        assert_eq!(
            fresh_conn.check(&v, Some(&header(&other_kid)), T0 + 3000),
            Err(Reason::UnrelatedKeyIdInToken)
        );
        let (c3, soon) = signer("ABC123DEFG", "TEAM123456");
        c3.advance(Duration::from_secs(60 * 60));
        let conn3 = ConnTokens::default();
        assert_eq!(conn3.check(&v, Some(&renewed), T0 + 3000), Ok(true));
        assert_eq!(
            conn3.check(&v, Some(&header(&soon)), T0 + 3600),
            Err(Reason::TooManyProviderTokenUpdates),
            "iat only 10 minutes after the previous token"
        );
    }
}
