//! The dashboard's HTML, rendered on the server; `assets/app.js` re-renders the same rows from
//! `/dashboard/data`. Every value is escaped.

use std::fmt::Write;

use super::data::{AppRow, Data};
use crate::rfc3339;

/// HTML-escapes `s`.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str, csrf: Option<&str>) -> String {
    let csrf = csrf.map_or_else(String::new, |c| {
        format!("<meta name=\"csrf-token\" content=\"{}\">", esc(c))
    });
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/dashboard/app.css\">{csrf}</head>",
        esc(title)
    )
}

/// The login form; `error` after a refused key.
pub fn login(error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))
    });
    format!(
        "{}<body class=\"login\"><main><h1>pushgate</h1>\
         <form method=\"post\" action=\"/login\">\
         <label for=\"key\">Admin API key</label>\
         <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Log in</button>{error}</form></main></body></html>",
        head("pushgate — log in", None)
    )
}

/// propeller-apns' test form (its `templates/form.html`), posting to `/post`: for a logged-in
/// admin only (propeller's was open to anyone who found it). `topics` fill the topic list.
pub fn propeller_form(topics: &[String]) -> String {
    let mut topics = topics.to_vec();
    topics.sort();
    topics.dedup();
    let options: String = topics
        .iter()
        .map(|t| format!("<option value=\"{0}\">{0}</option>", esc(t)))
        .collect();
    let field = |name: &str, label: &str, kind: &str, required: bool| {
        format!(
            "<label for=\"{name}\">{label}</label><input id=\"{name}\" name=\"{name}\" type=\"{kind}\"{}>",
            if required { " required" } else { "" }
        )
    };
    format!(
        "{}<body class=\"login\"><main><h1>Send a propeller job</h1>\
         <form method=\"post\" action=\"/post\" enctype=\"application/x-www-form-urlencoded\">\
         {}<label for=\"topic\">Topic</label><select id=\"topic\" name=\"topic\">{options}</select>\
         <label for=\"environment\">Environment (when two apps share the topic)</label>\
         <select id=\"environment\" name=\"environment\"><option value=\"\">the topic's one app</option>\
         <option value=\"production\">production</option><option value=\"sandbox\">sandbox</option></select>\
         {}{}{}{}{}{}<button type=\"submit\">Post</button></form></main></body></html>",
        head("pushgate — propeller form", None),
        field("auth_token", "API key (auth_token)", "password", true),
        field("token", "Device token", "text", true),
        field("title", "Title", "text", false),
        field("body", "Body", "text", false),
        field("badge", "Badge", "number", false),
        field("delay", "Delay (seconds)", "number", false),
        field("expiration", "Expiration (UNIX seconds)", "number", false),
    )
}

fn figure(id: &str, label: &str, value: &str) -> String {
    format!(
        "<div class=\"figure\"><span class=\"value\" id=\"f-{id}\">{}</span><span class=\"label\">{}</span></div>",
        esc(value),
        esc(label)
    )
}

/// One app's table row (the script renders the same columns).
fn app_row(a: &AppRow) -> String {
    let health = match &a.halted {
        None => "<span class=\"ok\">healthy</span>".to_owned(),
        Some(r) => format!("<span class=\"bad\">halted: {}</span>", esc(r)),
    };
    // The script draws the button; the first paint says what it will do.
    let sends = match &a.paused {
        None => "sending".to_owned(),
        Some(p) => format!(
            "<span class=\"bad\">paused since {}</span>",
            esc(&rfc3339::format(p.since))
        ),
    };
    let mut creds = String::new();
    for c in &a.credentials {
        let expiry = match (c.not_after, c.days_left) {
            (Some(t), Some(d)) => format!("until {} ({d} days)", esc(&rfc3339::format(t))),
            _ => "does not expire".to_owned(),
        };
        let _ = write!(
            creds,
            "<div class=\"cred{}{}\">{}{} — {}, {expiry}</div>",
            if c.expiring { " expiring" } else { "" },
            if c.active { " active" } else { "" },
            if c.active { "▶ " } else { "" },
            esc(&c.file),
            esc(c.kind),
        );
    }
    format!(
        "<tr><td>{}</td><td>{health}</td><td>{}</td><td>{}</td><td>{}</td><td>{creds}</td>\
         <td class=\"settings\">{}</td><td>{sends}</td></tr>",
        esc(&a.name),
        a.connections,
        a.streams_in_flight,
        a.queued_in_memory,
        esc(&a.settings.summary())
    )
}

/// The charts' drawing area (the script draws in the same units).
const CHART_W: u32 = 600;
const CHART_H: u32 = 160;

/// The dashboard for the admin key `name`.
pub fn dashboard(name: &str, csrf: &str, d: &Data) -> String {
    let mut out = head("pushgate", Some(csrf));
    let _ = write!(
        out,
        "<body><header><h1>pushgate</h1><span class=\"who\">signed in as {}</span>\
         <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\">Log out</button></form></header><main>",
        esc(name),
        esc(csrf)
    );
    out.push_str("<section id=\"warnings\">");
    for w in &d.warnings {
        let _ = write!(out, "<p class=\"warning\">Credential: {}</p>", esc(w));
    }
    out.push_str("</section><section class=\"figures\">");
    for (id, label, value) in [
        ("delivered", "delivered", d.outcome("delivered").to_string()),
        ("rate", "delivered / s", "–".to_owned()),
        ("failed", "failed", d.outcome("failed").to_string()),
        ("expired", "expired", d.outcome("expired").to_string()),
        ("queued", "queued", d.pending.queued.to_string()),
        ("in_flight", "in flight", d.pending.in_flight.to_string()),
        ("scheduled", "scheduled", d.pending.scheduled.to_string()),
    ] {
        out.push_str(&figure(id, label, &value));
    }
    out.push_str(
        "</section><p class=\"note\">Outcomes count since the gateway started.</p>\
         <section id=\"charts\"><h2>The last hour</h2><div class=\"charts\">",
    );
    for (id, caption) in [
        ("delivered", "delivered / s"),
        ("failed", "failed / s, by reason"),
        ("latency", "accept → delivered, p50 and p99"),
        ("queue", "waiting (queued, scheduled, in flight)"),
    ] {
        let _ = write!(
            out,
            "<figure class=\"chart\"><figcaption>{caption}</figcaption>\
             <svg id=\"chart-{id}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{caption}\">\
             </svg><div class=\"legend\" id=\"legend-{id}\"></div></figure>",
            W = CHART_W,
            H = CHART_H
        );
    }
    out.push_str(
        "</div><h3>Apps, each 10 s</h3><div id=\"health\" class=\"health\"></div>\
         <p class=\"note\">Samples every 10 s since the gateway started, an hour at most; \
         green: delivered, amber: some failed, red: only failures or halted, grey: idle.</p></section>\
         <section><h2>Apps</h2><table><thead><tr><th>app</th><th>health</th><th>connections</th>\
         <th>streams in flight</th><th>queued in memory</th><th>credentials</th><th>settings</th>\
         <th>sends</th></tr></thead><tbody id=\"apps\">",
    );
    for a in &d.apps {
        out.push_str(&app_row(a));
    }
    out.push_str("</tbody></table></section>");
    // The gateways sharing the database, when there is a cluster to show.
    let _ = write!(
        out,
        "<section id=\"cluster-section\"{}><h2>Gateways sharing the database</h2><table><thead>\
         <tr><th>gateway</th><th>id</th><th>last heartbeat</th><th>apps</th><th>holds</th></tr>\
         </thead><tbody id=\"cluster\">",
        if d.cluster.is_empty() { " hidden" } else { "" }
    );
    for g in &d.cluster {
        let _ = write!(
            out,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.host),
            if g.this { " (this one)" } else { "" },
            esc(&g.id),
            esc(&rfc3339::format(g.heartbeat_at)),
            esc(&g.apps.join(", ")),
            g.holds
        );
    }
    out.push_str(
        "</tbody></table></section><section class=\"two\"><div><h2>Failures by reason</h2>\
         <table><thead><tr><th>reason</th><th>count</th></tr></thead><tbody id=\"reasons\">",
    );
    for (reason, n) in &d.tally.failures_by_reason {
        let _ = write!(out, "<tr><td>{}</td><td>{n}</td></tr>", esc(reason));
    }
    out.push_str(
        "</tbody></table></div><div><h2>Latest failures</h2><table><thead><tr><th>time</th>\
         <th>app</th><th>token</th><th>outcome</th><th>reason</th></tr></thead><tbody id=\"latest\">",
    );
    for f in &d.tally.latest_failures {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"token\">{}…</td><td>{}</td><td>{}</td></tr>",
            esc(&rfc3339::format(f.time)),
            esc(&f.app),
            esc(&f.token.as_str()[..f.token.as_str().len().min(12)]),
            f.state.as_str(),
            esc(&f.reason)
        );
    }
    let apps: String = d
        .apps
        .iter()
        .map(|a| format!("<option>{}</option>", esc(&a.name)))
        .collect();
    let _ = write!(
        out,
        "</tbody></table></div></section><section><h2>What happened to…?</h2>\
         <form id=\"lookup-form\" class=\"bar\"><label>app (for a token) <select name=\"app\">{apps}\
         </select></label><label>notification id or device token <input name=\"q\" id=\"lookup-q\" \
         required size=\"66\" spellcheck=\"false\" autocomplete=\"off\"></label>\
         <button type=\"submit\">Look up</button></form>\
         <div id=\"lookup-result\" aria-live=\"polite\"></div></section><section><h2>Test send</h2>\
         <form id=\"send-form\" class=\"bar\"><label>app <select name=\"app\">{apps}",
    );
    out.push_str(
        "</select></label><label>device token <input name=\"token\" required size=\"66\" \
         pattern=\"[0-9a-fA-F]+\" spellcheck=\"false\"></label>\
         <label>title <input name=\"title\" value=\"Hello\"></label>\
         <label>body <input name=\"body\" value=\"from the pushgate dashboard\"></label>\
         <button type=\"submit\">Send</button></form>\
         <p id=\"send-result\" aria-live=\"polite\"></p></section></main>\
         <footer>updated <span id=\"updated\">now</span></footer>\
         <script src=\"/dashboard/app.js\"></script></body></html>",
    );
    out
}
