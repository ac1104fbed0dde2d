//! One `[[apps]]` section: its settings, its extra roots and its credentials (a token key,
//! certificates, their passwords), each checked and loaded, with every problem collected.

use std::ops::Range;

use apns::auth::{ClientIdentity, SigningKey};
use apns::{Endpoint, Topic};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use toml::Spanned;

use super::super::raw::{RawApp, RawCredential, S};
use super::super::*;
use super::{Cx, secs, valid_name};

impl Cx<'_> {
    pub(super) fn app(&mut self, i: usize, app: Spanned<RawApp>) -> Option<App> {
        let (span, mut a) = (app.span(), app.into_inner());
        let at = |f: &str| format!("apps[{i}].{f}");
        let required = |cx: &mut Self, v: &S<String>, f: &str| -> Option<Spanned<String>> {
            if v.is_none() {
                cx.problem(span.clone(), &at(f), "required");
            }
            v.clone()
        };
        let name = required(self, &a.name, "name").map(Spanned::into_inner);
        if let Some(n) = &a.name
            && !valid_name(n.get_ref())
        {
            self.problem(
                n.span(),
                &at("name"),
                "use lowercase letters, digits, '.', '-' and '_' (it is also an SMTP domain)",
            );
        }
        let topic = required(self, &a.topic, "topic").and_then(|t| {
            Topic::parse(t.get_ref())
                .map_err(|e| self.problem(t.span(), &at("topic"), e.to_string()))
                .ok()
        });
        let environment = required(self, &a.environment, "environment").and_then(|e| {
            match e.get_ref().as_str() {
                "production" => Some(Environment::Production),
                "sandbox" => Some(Environment::Sandbox),
                other => {
                    self.problem(
                        e.span(),
                        &at("environment"),
                        format!("{other:?} is neither \"production\" nor \"sandbox\""),
                    );
                    None
                }
            }
        });
        let endpoint = match (&a.endpoint, environment) {
            (Some(e), _) => Endpoint::parse(e.get_ref())
                .map_err(|err| self.problem(e.span(), &at("endpoint"), err.to_string()))
                .ok(),
            (None, Some(Environment::Sandbox)) => Some(Endpoint::sandbox()),
            (None, _) => Some(Endpoint::production()),
        };
        let extra_roots = a
            .ca_file
            .as_ref()
            .map_or_else(Vec::new, |f| self.roots(f, &at("ca_file")));
        let smtp_domains = a.smtp_domains.as_ref().map_or_else(Vec::new, |d| {
            for x in d.get_ref() {
                if !valid_name(x) {
                    self.problem(
                        d.span(),
                        &at("smtp_domains"),
                        format!("{x:?} is not a lowercase domain"),
                    );
                }
            }
            d.get_ref().clone()
        });
        let mut entries = Vec::new();
        let inline = a.inline_credential();
        if has_any(inline.get_ref()) {
            entries.push((inline.into_inner(), span.clone(), i.to_string()));
        }
        for (j, c) in std::mem::take(&mut a.credentials).into_iter().enumerate() {
            let s = c.span();
            entries.push((c.into_inner(), s, format!("{i}].credentials[{j}")));
        }
        if entries.is_empty() {
            self.problem(
                span.clone(),
                &at("key_file"),
                "no credential: give key_file, key_id and team_id, or certificate",
            );
        }
        let credentials: Vec<Credential> = entries
            .into_iter()
            .filter_map(|(c, s, prefix)| self.credential(&c, s, &format!("apps[{prefix}]")))
            .collect();
        let max_connections =
            self.int(&a.max_connections, &at("max_connections"), 4, 1, 64) as usize;
        let timeout_ms = self.int(
            &a.delivery_response_timeout_ms,
            &at("delivery_response_timeout_ms"),
            10_000,
            100,
            600_000,
        );
        let idle = self.int(&a.idle_timeout_s, &at("idle_timeout_s"), 300, 1, 86_400);
        let max_attempts = self.int(&a.max_attempts, &at("max_attempts"), 8, 1, 100) as u32;
        let ttl = self.int(
            &a.default_ttl_s,
            &at("default_ttl_s"),
            86_400,
            1,
            30 * 86_400,
        );
        let supersede = match a.supersede.as_ref() {
            None => Supersede::default(),
            Some(s) => match s.get_ref().as_str() {
                "collapse_id" => Supersede::CollapseId,
                "live_activity" => Supersede::LiveActivity,
                "off" => Supersede::Off,
                other => {
                    self.problem(
                        s.span(),
                        &at("supersede"),
                        format!(
                            "{other:?} is not one of \"collapse_id\", \"live_activity\" or \"off\""
                        ),
                    );
                    Supersede::default()
                }
            },
        };
        Some(App {
            name: name?,
            smtp_domains,
            topic: topic?,
            environment: environment?,
            endpoint: endpoint?,
            extra_roots,
            credentials,
            max_connections,
            response_timeout: Duration::from_millis(timeout_ms as u64),
            idle_timeout: secs(idle),
            max_attempts,
            default_ttl: secs(ttl),
            suppress_dead_tokens: a.suppress_dead_tokens.as_ref().is_none_or(|s| *s.get_ref()),
            bounces: a.bounces.as_ref().is_none_or(|b| *b.get_ref()),
            supersede,
        })
    }

    pub(super) fn roots(&mut self, f: &Spanned<String>, key: &str) -> Vec<CertificateDer<'static>> {
        let path = self.path(f);
        let certs: Vec<_> = match CertificateDer::pem_file_iter(&path) {
            Ok(it) => it.filter_map(Result::ok).collect(),
            Err(e) => {
                self.problem(
                    f.span(),
                    key,
                    format!("cannot read {}: {e}", path.display()),
                );
                return Vec::new();
            }
        };
        if certs.is_empty() {
            self.problem(
                f.span(),
                key,
                format!("{} holds no PEM certificate", path.display()),
            );
        }
        certs
    }

    /// Loads one credential entry; exactly one kind per entry.
    fn credential(
        &mut self,
        c: &RawCredential,
        span: Range<usize>,
        at: &str,
    ) -> Option<Credential> {
        let token = c.key_file.is_some() || c.key_id.is_some() || c.team_id.is_some();
        let cert = c.certificate.is_some() || c.certificate_key.is_some();
        match (token, cert) {
            (true, true) => {
                let s = c.certificate.as_ref().map_or(span, Spanned::span);
                self.problem(s, &format!("{at}.certificate"), "exactly one credential kind per entry: key_file/key_id/team_id (token) or certificate (TLS), not both");
                None
            }
            (true, false) => {
                let missing = |v: &S<String>, f: &str, cx: &mut Self| {
                    if v.is_none() {
                        cx.problem(
                            span.clone(),
                            &format!("{at}.{f}"),
                            "required with token auth",
                        );
                    }
                };
                missing(&c.key_file, "key_file", self);
                missing(&c.key_id, "key_id", self);
                missing(&c.team_id, "team_id", self);
                let (f, id, team) = (
                    c.key_file.as_ref()?,
                    c.key_id.as_ref()?,
                    c.team_id.as_ref()?,
                );
                let path = self.path(f);
                match SigningKey::from_file(&path, id.get_ref(), team.get_ref()) {
                    Ok(key) => Some(Credential::Token {
                        key: std::sync::Arc::new(key),
                        file: path,
                    }),
                    Err(e) => {
                        let s = match &e {
                            apns::auth::AuthError::InvalidKeyField {
                                field: "key_id", ..
                            } => id.span(),
                            apns::auth::AuthError::InvalidKeyField { .. } => team.span(),
                            _ => f.span(),
                        };
                        self.problem(s, &format!("{at}.key_file"), crate::error_chain(&e));
                        None
                    }
                }
            }
            (false, true) => {
                let Some(f) = &c.certificate else {
                    let s = c.certificate_key.as_ref().map_or(span, Spanned::span);
                    self.problem(
                        s,
                        &format!("{at}.certificate"),
                        "certificate_key needs certificate",
                    );
                    return None;
                };
                let path = self.path(f);
                let key = format!("{at}.certificate");
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        self.problem(
                            f.span(),
                            &key,
                            format!("cannot read {}: {e}", path.display()),
                        );
                        return None;
                    }
                };
                let what = path.display().to_string();
                let key_bytes = match &c.certificate_key {
                    Some(k) => {
                        let kp = self.path(k);
                        match std::fs::read(&kp) {
                            Ok(kb) => Some((kb, kp.display().to_string())),
                            Err(e) => {
                                self.problem(
                                    k.span(),
                                    &format!("{at}.certificate_key"),
                                    format!("cannot read {}: {e}", kp.display()),
                                );
                                return None;
                            }
                        }
                    }
                    None => None,
                };
                // The format is told by the content: a .p12, a PEM with certificate and key
                // together, or PEM with the key beside it (encrypted or not).
                let password = self.password(c, at)?;
                let key_file = key_bytes
                    .as_ref()
                    .map(|(b, name)| (b.as_slice(), name.as_str()));
                let loaded = ClientIdentity::load(&bytes, key_file, password.expose(), &what);
                match loaded {
                    Ok((identity, _)) => Some(Credential::Certificate {
                        identity,
                        file: path,
                    }),
                    Err(e) => {
                        use apns::auth::AuthError as A;
                        // A problem of the key file is named at its own line.
                        let about_key = matches!(
                            e,
                            A::KeyNeedsPassword { .. }
                                | A::KeyPassword { .. }
                                | A::LegacyEncryptedKey { .. }
                                | A::NoPrivateKey { .. }
                        );
                        match (&c.certificate_key, about_key) {
                            (Some(k), true) => self.problem(
                                k.span(),
                                &format!("{at}.certificate_key"),
                                crate::error_chain(&e),
                            ),
                            _ => self.problem(f.span(), &key, crate::error_chain(&e)),
                        }
                        None
                    }
                }
            }
            (false, false) => None,
        }
    }

    /// The .p12 password: from an environment variable or a file (never the config itself);
    /// empty when neither is given.
    fn password(&mut self, c: &RawCredential, at: &str) -> Option<Secret> {
        match (&c.certificate_password_env, &c.certificate_password_file) {
            (Some(v), None) => self.env_secret(v, &format!("{at}.certificate_password_env")),
            (None, Some(f)) => self.file_secret(f, &format!("{at}.certificate_password_file")),
            (Some(v), Some(_)) => {
                self.problem(
                    v.span(),
                    &format!("{at}.certificate_password_env"),
                    "give certificate_password_env or certificate_password_file, not both",
                );
                None
            }
            (None, None) => Some(Secret(String::new())),
        }
    }
}

fn has_any(c: &RawCredential) -> bool {
    c.key_file.is_some()
        || c.key_id.is_some()
        || c.team_id.is_some()
        || c.certificate.is_some()
        || c.certificate_key.is_some()
        || c.certificate_password_env.is_some()
        || c.certificate_password_file.is_some()
}
