//! `[[beanstalkd]]`: a server, the tubes consumed from it and the app each one feeds. Without
//! `tubes`, every app gets one named after its topic, as propeller-apns' producers `use` it;
//! two apps with the same topic would then share a tube, which is refused naming both.

use std::collections::{HashMap, HashSet};

use toml::Spanned;

use super::super::raw::RawBeanstalkd;
use super::super::{ApiKey, App, Beanstalkd, Tube};
use super::Cx;
use crate::beanstalk::valid_tube;

/// An app as written: its name and the line of its `[[apps]]` table.
pub(super) struct AppLine {
    pub name: Option<String>,
    pub line: usize,
}

/// `apps "a" (line N) and "b" (line M) have the same topic "t"`, with each `[[apps]]` table's
/// line.
fn same_topic(lines: &[AppLine], a: &App, b: &App) -> String {
    let line_of = |name: &str| {
        lines
            .iter()
            .find(|l| l.name.as_deref() == Some(name))
            .map_or(0, |l| l.line)
    };
    format!(
        "apps {:?} (line {}) and {:?} (line {}) have the same topic {:?}",
        a.name,
        line_of(&a.name),
        b.name,
        line_of(&b.name),
        b.topic.as_str()
    )
}

impl Cx<'_> {
    pub(super) fn beanstalkd(
        &mut self,
        raw: Vec<Spanned<RawBeanstalkd>>,
        apps: &[App],
        lines: &[AppLine],
        keys: &[ApiKey],
    ) -> Vec<Beanstalkd> {
        let mut servers = HashSet::new();
        raw.into_iter()
            .enumerate()
            .map(|(i, b)| {
                let (span, b) = (b.span(), b.into_inner());
                let at = |f: &str| format!("beanstalkd[{i}].{f}");
                let server = match &b.server {
                    None => "127.0.0.1:11300".to_owned(),
                    Some(s) => {
                        let ok = s
                            .get_ref()
                            .rsplit_once(':')
                            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                        if !ok {
                            self.problem(s.span(), &at("server"), format!("{:?} is not host:port", s.get_ref()));
                        }
                        s.get_ref().clone()
                    }
                };
                if !servers.insert(server.clone()) {
                    self.problem(span.clone(), &at("server"), format!("{server} is listed twice"));
                }
                let mut tubes = match &b.tubes {
                    None => self.tubes_by_topic(apps, lines, &at("tubes"), span.clone()),
                    Some(list) => {
                        let mut out = Vec::new();
                        for t in list.get_ref() {
                            let mut bad = |m: String| self.problem(list.span(), &at("tubes"), m);
                            let (Some(tube), Some(app)) = (&t.tube, &t.app) else {
                                bad("each tube needs `tube` and `app`".into());
                                continue;
                            };
                            if !valid_tube(tube) {
                                bad(format!("{tube:?} is not a beanstalkd tube name (1 to 200 of A-Z a-z 0-9 -+/;.$_(), not starting with -)"));
                            }
                            if !apps.iter().any(|a| &a.name == app) {
                                bad(format!("no app is named {app:?}"));
                            }
                            if let Some(k) = &t.as_key {
                                match keys.iter().find(|key| &key.name == k) {
                                    None => bad(format!("no API key is named {k:?}")),
                                    Some(key) if !(key.admin || key.scope.covers(app)) => {
                                        bad(format!("API key {k:?} may not use app {app:?}"));
                                    }
                                    Some(_) => {}
                                }
                            }
                            if out.iter().any(|o: &Tube| &o.tube == tube) {
                                bad(format!("tube {tube:?} is listed twice"));
                            }
                            out.push(Tube {
                                tube: tube.clone(),
                                app: app.clone(),
                                as_key: t.as_key.clone(),
                            });
                        }
                        if list.get_ref().is_empty() {
                            self.problem(list.span(), &at("tubes"), "empty; list at least one tube, or leave `tubes` out for one per app");
                        }
                        out
                    }
                };
                if let Some(w) = &b.watch_default
                    && *w.get_ref()
                    && !tubes.iter().any(|t| t.tube == "default")
                {
                    let targets: HashSet<&str> = tubes.iter().map(|t| t.app.as_str()).collect();
                    if targets.len() == 1 {
                        let first = tubes[0].clone();
                        tubes.push(Tube {
                            tube: "default".to_owned(),
                            ..first
                        });
                    } else {
                        self.problem(w.span(), &at("watch_default"), "needs the tubes to feed one app (which app would the default tube's jobs go to?); list {tube = \"default\", app = \"...\"} instead");
                    }
                }
                if b.tubes.is_none() && apps.is_empty() {
                    self.problem(span.clone(), &at("tubes"), "no tubes: there is no app to name one after; add [[apps]] or list tubes");
                }
                Beanstalkd {
                    server,
                    tubes,
                    max_reserves: self.int(&b.max_reserves, &at("max_reserves"), 5, 0, 1_000) as u32,
                    connections: self.int(&b.connections, &at("connections"), 4, 1, 64) as usize,
                }
            })
            .collect()
    }

    /// Two apps of one topic in one environment: a way in that routes by topic (`/post`, a
    /// tube named after it) could not tell them apart, even given the environment.
    pub(super) fn unique_topics(&mut self, apps: &[App], lines: &[AppLine]) {
        // The first app of each (topic, environment), looked up rather than searched for: a
        // search of the apps before each one is quadratic in their number.
        let mut first: HashMap<(&str, &crate::config::Environment), &App> = HashMap::new();
        for a in apps {
            let b = *first.entry((a.topic.as_str(), &a.environment)).or_insert(a);
            if !std::ptr::eq(a, b) {
                let message = format!(
                    "{} in the same environment: a way in that routes by topic (POST /post, a beanstalkd tube) could not tell them apart",
                    same_topic(lines, b, a)
                );
                self.problem(0..0, "apps", message);
            }
        }
    }

    /// One tube per app, named after its topic; two apps of one topic are refused.
    fn tubes_by_topic(
        &mut self,
        apps: &[App],
        lines: &[AppLine],
        key: &str,
        span: std::ops::Range<usize>,
    ) -> Vec<Tube> {
        let mut by_topic: HashMap<&str, &App> = HashMap::new();
        let mut tubes = Vec::new();
        for a in apps {
            if let Some(other) = by_topic.insert(a.topic.as_str(), a) {
                let message = format!(
                    "{}, so one tube named after it would feed both; give each its own tube in `tubes`",
                    same_topic(lines, other, a)
                );
                self.problem(span.clone(), key, message);
                continue;
            }
            tubes.push(Tube {
                tube: a.topic.as_str().to_owned(),
                app: a.name.clone(),
                as_key: None,
            });
        }
        tubes
    }
}
