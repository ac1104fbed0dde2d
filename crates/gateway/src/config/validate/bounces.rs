//! `[bounces]`: the relay DSNs go through, who they come from, and how long they wait.

use toml::Spanned;

use super::super::raw::RawBounces;
use super::super::*;
use super::{Cx, secs};

impl Cx<'_> {
    pub(super) fn bounces(&mut self, b: Spanned<RawBounces>) -> Bounces {
        let (span, b) = (b.span(), b.into_inner());
        let smarthost = match &b.smarthost {
            Some(h) if host_port(h.get_ref()) => h.get_ref().clone(),
            Some(h) => {
                self.problem(
                    h.span(),
                    "bounces.smarthost",
                    format!(
                        "{:?} is not a relay like \"127.0.0.1:25\" (host:port)",
                        h.get_ref()
                    ),
                );
                String::new()
            }
            None => {
                self.problem(span.clone(), "bounces.smarthost", "required");
                String::new()
            }
        };
        let from = match &b.from {
            Some(f) if address(f.get_ref()) => f.get_ref().clone(),
            Some(f) => {
                self.problem(
                    f.span(),
                    "bounces.from",
                    format!(
                        "{:?} is not an address like \"MAILER-DAEMON@push.example.com\"",
                        f.get_ref()
                    ),
                );
                String::new()
            }
            None => {
                self.problem(span.clone(), "bounces.from", "required");
                String::new()
            }
        };
        let reporting_mta = match &b.reporting_mta {
            Some(m) => m.get_ref().clone(),
            None => from
                .rsplit_once('@')
                .map_or_else(String::new, |(_, d)| d.to_owned()),
        };
        // It is the EHLO name and a DSN field: a host name or an address literal only.
        if !from.is_empty() && !host_name(&reporting_mta) {
            let at = b.reporting_mta.as_ref().or(b.from.as_ref());
            self.problem(
                at.map_or(span.clone(), Spanned::span),
                "bounces.reporting_mta",
                format!("{reporting_mta:?} is not a host name like \"push.example.com\""),
            );
        }
        let starttls = b.starttls.as_ref().is_some_and(|s| *s.get_ref());
        let password = match (&b.password_env, &b.password_file) {
            (Some(v), None) => self.env_secret(v, "bounces.password_env"),
            (None, Some(f)) => self.file_secret(f, "bounces.password_file"),
            (Some(v), Some(_)) => {
                self.problem(
                    v.span(),
                    "bounces.password_env",
                    "give password_env or password_file, not both",
                );
                None
            }
            (None, None) => None,
        };
        let auth = match (&b.username, password) {
            (Some(u), Some(p)) => {
                if !starttls {
                    self.problem(
                        u.span(),
                        "bounces.username",
                        "AUTH sends the password: set starttls = true",
                    );
                }
                Some((u.get_ref().clone(), p))
            }
            (Some(u), None) if b.password_env.is_none() && b.password_file.is_none() => {
                self.problem(
                    u.span(),
                    "bounces.username",
                    "needs password_env or password_file",
                );
                None
            }
            (None, Some(_)) => {
                let s = b
                    .password_env
                    .as_ref()
                    .or(b.password_file.as_ref())
                    .map_or(span.clone(), Spanned::span);
                self.problem(s, "bounces.username", "a password needs a username");
                None
            }
            _ => None,
        };
        let retry = self.int(&b.retry_s, "bounces.retry_s", 60, 1, 86_400);
        let retry_max = self.int(&b.retry_max_s, "bounces.retry_max_s", 3600, 1, 86_400);
        if retry_max < retry
            && let Some(m) = &b.retry_max_s
        {
            self.problem(m.span(), "bounces.retry_max_s", "is less than retry_s");
        }
        Bounces {
            smarthost,
            starttls,
            extra_roots: b
                .ca_file
                .as_ref()
                .map_or_else(Vec::new, |f| self.roots(f, "bounces.ca_file")),
            auth,
            from,
            reporting_mta,
            window: secs(self.int(&b.window_s, "bounces.window_s", 10, 0, 3600)),
            retry: secs(retry),
            retry_max: secs(retry_max),
            give_up: secs(self.int(&b.give_up_s, "bounces.give_up_s", 432_000, 60, 30 * 86_400)),
            suppressed: b.suppressed.as_ref().is_some_and(|s| *s.get_ref()),
        }
    }
}

/// `host:port` with a port number (the host a name or an address, `[v6]` bracketed).
fn host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    })
}

/// A host name (letters, digits, `-` and `.`) or an address literal (`[192.0.2.1]`).
fn host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-.[]:".contains(&c))
}

/// `local@domain`, as a DSN's `From:` needs it (no display name, no spaces).
fn address(s: &str) -> bool {
    s.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !s.contains(|c: char| c.is_whitespace() || "<>\"(),;".contains(c))
    })
}
