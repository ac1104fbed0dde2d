//! Where a pool connects: Apple's production or sandbox host, or a custom one (the simulator).

use std::fmt;

use http::uri::Authority;
use rustls_pki_types::ServerName;

/// An APNs host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    authority: Authority,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.authority)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority)
    }
}

/// A custom endpoint that is not `https://host[:port]`.
#[derive(Debug, thiserror::Error)]
#[error("endpoint {url:?} is not of the form https://host[:port]")]
pub struct EndpointError {
    url: String,
}

impl Endpoint {
    /// `api.push.apple.com:443`.
    pub fn production() -> Endpoint {
        Endpoint::new("api.push.apple.com", 443)
    }

    /// `api.sandbox.push.apple.com:443`.
    pub fn sandbox() -> Endpoint {
        Endpoint::new("api.sandbox.push.apple.com", 443)
    }

    fn new(host: &str, port: u16) -> Endpoint {
        let authority = if port == 443 {
            Authority::try_from(host)
        } else {
            Authority::try_from(format!("{host}:{port}"))
        }
        .expect("Apple's host names are valid authorities");
        Endpoint {
            host: host.to_owned(),
            port,
            authority,
        }
    }

    /// Parses `https://host[:port]` (port 443 by default); a trailing `/` is allowed.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let err = || EndpointError {
            url: url.to_owned(),
        };
        let rest = url.strip_prefix("https://").ok_or_else(err)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let authority = Authority::try_from(rest).map_err(|_| err())?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(err());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|_| err())?;
        Ok(Endpoint {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(443),
            authority,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `:authority` of requests.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The name the server certificate must match.
    pub fn server_name(&self) -> ServerName<'static> {
        ServerName::try_from(self.host.clone()).expect("checked when the endpoint was made")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("https://127.0.0.1:2197").unwrap();
        assert_eq!((e.host(), e.port()), ("127.0.0.1", 2197));
        assert_eq!(e.authority().as_str(), "127.0.0.1:2197");
        let e = Endpoint::parse("https://localhost/").unwrap();
        assert_eq!((e.host(), e.port()), ("localhost", 443));
        assert_eq!(
            Endpoint::production().authority().as_str(),
            "api.push.apple.com"
        );
        assert_eq!(Endpoint::sandbox().host(), "api.sandbox.push.apple.com");
        for bad in ["http://x", "https://", "https://u@h", "ftp://h:1"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
