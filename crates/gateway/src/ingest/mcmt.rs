//! Momentum's Multi-Channel Message Type (MCMT) → spool requests: what the SMTP listener and
//! the REST injector (`/v1.0/inject`) both accept (docs/momentum.md).
//!
//! Each MIME part with `Content-Type: message/vnd.msys.apn` is one push. Its headers
//! (`X-Device-Token`, `X-APNs-*`) come either as an inner header block at the start of the
//! part's content, followed by an empty line and the JSON payload (the seed's layout), or among
//! the part's own MIME headers with the JSON as the whole content. The part's
//! Content-Transfer-Encoding applies to the whole content, inner headers included.
//!
//! Recipients name apps by their domain. A part with `X-Device-Token` makes one notification
//! per distinct app among the recipients; a part without one makes one per recipient, whose
//! token is `vctx.DLV_Dest_ID` (inject) or else the address's local part. The payload then goes
//! through the HTTP API's own checks and defaults (`super::json::one`), so every way in agrees
//! on push types, priorities, topics and expiry. Like the API, a message is taken whole or not
//! at all: the first problem refuses it, naming the part.

use std::time::SystemTime;

use apns::{ApnsId, DeviceToken};
use mail_parser::{MessageParser, MessagePart, MimeHeaders};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::config::Config;
use crate::spool::NewRequest;

/// One recipient, already routed to an app by its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The app its domain names.
    pub app: String,
    /// The address's local part.
    pub local: String,
    /// `vctx.DLV_Dest_ID` (the REST injector only).
    pub dest_id: Option<String>,
}

/// Why a recipient is refused: an SMTP reply code and its text (enhanced status code first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {text}")]
pub struct RecipientRefused {
    pub code: u16,
    pub text: String,
}

/// Routes `address` (`local@domain`) to the app its domain names (`name` or `smtp_domains`),
/// within `caller`'s apps when there is a caller. SMTP's RCPT and the injector share this.
pub fn route(
    address: &str,
    caller: Option<&Caller>,
    config: &Config,
) -> Result<Recipient, RecipientRefused> {
    let refuse = |code, text: String| RecipientRefused { code, text };
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(refuse(
            501,
            format!("5.1.3 {address:?} needs a domain naming an app"),
        ));
    };
    let app = config
        .app_for_domain(domain)
        .ok_or_else(|| refuse(550, format!("5.1.2 no app takes the domain {domain:?}")))?;
    if let Some(c) = caller
        && !c.may_use(&app.name)
    {
        return Err(refuse(
            550,
            format!("5.7.1 {:?} may not use app {:?}", c.name, app.name),
        ));
    }
    Ok(Recipient {
        app: app.name.clone(),
        local: local.to_owned(),
        dest_id: None,
    })
}

/// Why a message is refused (SMTP `554 5.6.0`); the text names the part and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A message turned into spool requests.
#[derive(Debug)]
pub struct Parsed {
    pub requests: Vec<NewRequest>,
    /// For each recipient, in order, the ids of the notifications made for it. A notification
    /// made once for an app (a part with `X-Device-Token`) is listed under each of the app's
    /// recipients.
    pub ids: Vec<Vec<ApnsId>>,
    /// The message's `Message-ID`, if it has one (without its angle brackets).
    pub message_id: Option<String>,
    /// The message's `Return-Path` header: absent, null (`<>`) or an address.
    pub return_path: ReturnPath,
    /// For each request, in order: its push part's own `Return-Path`, and for each of its
    /// notifications the (first) recipient it was made for — bounces: who hears of its
    /// failures.
    pub origins: Vec<(ReturnPath, Vec<usize>)>,
}

/// A `Return-Path` as a message or push part carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReturnPath {
    /// No such header: ask the next source (the message's, then the envelope's).
    #[default]
    Absent,
    /// `<>`: failures are never reported.
    Null,
    Address(String),
}

impl ReturnPath {
    /// From a header's value as written (`<a@b>`, `a@b`, `Name <a@b>`, `<>`).
    pub fn parse(value: &str) -> ReturnPath {
        let v = value.trim();
        let v = match (v.find('<'), v.rfind('>')) {
            (Some(a), Some(b)) if a < b => &v[a + 1..b],
            _ => v,
        }
        .trim();
        if v.is_empty() {
            ReturnPath::Null
        } else {
            ReturnPath::Address(v.to_owned())
        }
    }

    /// This one, else `next`.
    pub fn or(self, next: ReturnPath) -> ReturnPath {
        match self {
            ReturnPath::Absent => next,
            known => known,
        }
    }
}

/// The header section of `message` (up to its first empty line, or all of it).
pub fn header_section(message: &[u8]) -> &[u8] {
    split_blank_line(message).map_or(message, |(head, _)| head)
}

impl Parsed {
    /// How many notifications, and the first id (in part order).
    pub fn count_and_first(&self) -> (usize, Option<ApnsId>) {
        let count = self.requests.iter().map(NewRequest::len).sum();
        let first = self
            .requests
            .first()
            .and_then(|r| r.notifications.first())
            .map(|(id, _)| *id);
        (count, first)
    }
}

/// The MCMT content type of a push part.
const PUSH_TYPE: (&str, &str) = ("message", "vnd.msys.apn");

/// The push headers of one part.
#[derive(Debug, Default)]
struct PushHeaders {
    token: Option<String>,
    topic: Option<String>,
    priority: Option<String>,
    expiration: Option<String>,
    push_type: Option<String>,
    collapse_id: Option<String>,
    /// The part's `Return-Path` (not a push header: it does not make the part's own MIME
    /// headers the push headers).
    return_path: ReturnPath,
}

impl PushHeaders {
    /// Records `name: value` if it is a push header; true if it was one.
    fn set(&mut self, name: &str, value: &str) -> bool {
        if name.eq_ignore_ascii_case("return-path") {
            self.return_path = ReturnPath::parse(value);
            return false;
        }
        let slot = match name.to_ascii_lowercase().as_str() {
            "x-device-token" => &mut self.token,
            "x-apns-topic" => &mut self.topic,
            "x-apns-priority" => &mut self.priority,
            "x-apns-expiration" => &mut self.expiration,
            "x-apns-push-type" => &mut self.push_type,
            "x-apns-collapse-id" => &mut self.collapse_id,
            _ => return false,
        };
        *slot = Some(value.trim().to_owned());
        true
    }
}

/// The `Message-ID` of `message` (without its angle brackets), read from its headers alone.
pub fn message_id(message: &[u8]) -> Option<String> {
    MessageParser::default()
        .parse_headers(message)?
        .message_id()
        .map(str::to_owned)
}

/// Parses `message` for `recipients` into requests, checked whole before anything is stored.
pub fn parse(
    message: &[u8],
    recipients: &[Recipient],
    config: &Config,
    now: SystemTime,
) -> Result<Parsed, Refused> {
    // The parser keeps a few hundred bytes per MIME part: a message of tiny parts would cost
    // many times its size before the cap below could refuse it, so the parts are bounded
    // before parsing. Every part follows a delimiter, "--" and its boundary (which may itself
    // start with dashes), and the parser finds one anywhere, not only at a line's start: the
    // runs of two dashes or more bound the delimiters. Base64 has no dashes; a text part
    // would need ten thousand such runs to be refused.
    //
    // A nested message is another matter: the parser decodes one sent in base64 and parses it
    // in turn, and what is inside base64 shows no dashes. MCMT has no use for nested messages
    // (and RFC 2046 allows them no such encoding), so a message that declares one is refused.
    if let Some(kind) = nested_message(message) {
        return Err(Refused(format!(
            "the message carries a {kind} part; MCMT messages may not nest messages"
        )));
    }
    if dash_runs(message) > MAX_PARTS {
        return Err(Refused(format!(
            "the message has more than {MAX_PARTS} MIME parts (it may make at most \
             {MAX_PER_MESSAGE} notifications)"
        )));
    }
    let parsed = MessageParser::default()
        .parse(message)
        .ok_or_else(|| Refused("the message has no MIME headers".into()))?;
    let parts: Vec<&MessagePart<'_>> = parsed.parts.iter().filter(|p| is_push(p)).collect();
    if parts.is_empty() {
        return Err(Refused(
            "the message has no message/vnd.msys.apn part".into(),
        ));
    }
    let mut out = Parsed {
        requests: Vec::new(),
        ids: vec![Vec::new(); recipients.len()],
        message_id: parsed.message_id().map(str::to_owned),
        return_path: message_return_path(&parsed),
        origins: Vec::new(),
    };
    let mut apps: Vec<&str> = recipients.iter().map(|r| r.app.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    let name = |n: usize| format!("push part {}", n + 1);
    let mut read = Vec::with_capacity(parts.len());
    let mut made = 0usize;
    for (n, part) in parts.iter().enumerate() {
        let (headers, json) = read_part(part).map_err(|e| Refused(format!("{}: {e}", name(n))))?;
        // Counted before anything is built, so a message that multiplies past the cap costs
        // no more than reading it (a part with a token makes one per app, else one per
        // recipient).
        made += if headers.token.is_some() {
            apps.len()
        } else {
            recipients.len()
        };
        if made > MAX_PER_MESSAGE {
            return Err(Refused(format!(
                "{}: the message makes more than {MAX_PER_MESSAGE} notifications (push parts × \
                 recipients); at most {MAX_PER_MESSAGE} per message, as in one API request",
                name(n)
            )));
        }
        read.push((headers, json));
    }
    for (n, (headers, json)) in read.into_iter().enumerate() {
        one_part(&headers, json, recipients, config, now, &mut out)
            .map_err(|e| Refused(format!("{}: {e}", name(n))))?;
    }
    Ok(out)
}

/// Most notifications one message (or inject request) may make: as many as one API request.
pub const MAX_PER_MESSAGE: usize = super::json::MAX_TOKENS;

/// Most MIME parts a message may have (counted as its runs of dashes): one push part per
/// notification at most, and room for the text parts and closing delimiters.
const MAX_PARTS: usize = MAX_PER_MESSAGE + 100;

/// The first content type in `message` that makes the parser read a part as a message of its
/// own (`message/rfc822`, `message/global`, and the parts of a `multipart/digest`), as the
/// parser reads types: in any case, with spaces and line breaks around the `/`. Found
/// anywhere, not only in headers: a text that names one is refused too, which is rare and says
/// why.
fn nested_message(message: &[u8]) -> Option<&'static str> {
    const NESTED: [(&[u8], &[u8], &str); 3] = [
        (b"message", b"rfc822", "message/rfc822"),
        (b"message", b"global", "message/global"),
        (b"multipart", b"digest", "multipart/digest"),
    ];
    let space = |b: &u8| b" \t\r\n".contains(b);
    for (i, _) in message.iter().enumerate().filter(|(_, b)| **b == b'/') {
        let before = &message[..i];
        let before = &before[..before.len() - before.iter().rev().take_while(|b| space(b)).count()];
        let after = &message[i + 1..];
        let after = &after[after.iter().take_while(|b| space(b)).count()..];
        for (ctype, subtype, name) in NESTED {
            let ends = before.len() >= ctype.len()
                && before[before.len() - ctype.len()..].eq_ignore_ascii_case(ctype);
            let starts = after.len() >= subtype.len()
                && after[..subtype.len()].eq_ignore_ascii_case(subtype);
            if ends && starts {
                return Some(name);
            }
        }
    }
    None
}

/// Runs of two or more `-` in `message`.
fn dash_runs(message: &[u8]) -> usize {
    let mut runs = 0;
    let mut run = 0usize;
    for &b in message {
        if b == b'-' {
            run += 1;
            if run == 2 {
                runs += 1;
            }
        } else {
            run = 0;
        }
    }
    runs
}

/// The top-level `Return-Path` of a parsed message.
fn message_return_path(m: &mail_parser::Message<'_>) -> ReturnPath {
    let Some(h) = m.parts.first().and_then(|p| {
        p.headers()
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case("return-path"))
    }) else {
        return ReturnPath::Absent;
    };
    match h.value() {
        mail_parser::HeaderValue::Text(t) => ReturnPath::parse(t),
        mail_parser::HeaderValue::TextList(l) => {
            l.last().map_or(ReturnPath::Null, |t| ReturnPath::parse(t))
        }
        _ => ReturnPath::Null,
    }
}

fn is_push(part: &MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(PUSH_TYPE.0)
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case(PUSH_TYPE.1))
    })
}

/// A push part's headers (outer or inner) and its JSON, its encoding checked.
fn read_part<'a>(part: &'a MessagePart<'_>) -> Result<(PushHeaders, &'a [u8]), String> {
    let encoding = part
        .headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case("content-transfer-encoding"))
        .and_then(|h| h.value().as_text())
        .map(|v| v.trim().to_ascii_lowercase());
    if let Some(e) = &encoding
        && !["7bit", "8bit", "binary", "base64", "quoted-printable"].contains(&e.as_str())
    {
        return Err(format!("unknown Content-Transfer-Encoding {e:?}"));
    }
    if part.is_encoding_problem {
        return Err(format!(
            "its content is not valid {}",
            encoding.as_deref().unwrap_or("7bit")
        ));
    }
    let mut headers = PushHeaders::default();
    let mut outer = false;
    for h in part.headers() {
        if h.name().eq_ignore_ascii_case("return-path") {
            // Parsed as an id: brackets gone, and `<>` left empty.
            headers.return_path = match h.value().as_text() {
                Some(v) => ReturnPath::parse(v),
                None => ReturnPath::Null,
            };
        } else if let Some(v) = h.value().as_text() {
            outer |= headers.set(h.name(), v);
        }
    }
    let content = part.contents();
    let json = if outer {
        content
    } else {
        inner_headers(content, &mut headers)?
    };
    Ok((headers, json))
}

fn one_part(
    headers: &PushHeaders,
    json: &[u8],
    recipients: &[Recipient],
    config: &Config,
    now: SystemTime,
    out: &mut Parsed,
) -> Result<(), String> {
    let payload: Value =
        serde_json::from_slice(json).map_err(|e| format!("the payload is not valid JSON: {e}"))?;
    let Value::Object(mut payload) = payload else {
        return Err("the payload must be a JSON object".into());
    };
    let aps = payload.remove("aps");
    // The document the HTTP API would have received for these headers and payload.
    let mut doc = Map::new();
    if let Some(aps) = aps {
        doc.insert("aps".into(), aps);
    }
    if !payload.is_empty() {
        doc.insert("data".into(), Value::Object(payload));
    }
    for (key, value) in [
        ("topic", &headers.topic),
        ("push_type", &headers.push_type),
        ("collapse_id", &headers.collapse_id),
    ] {
        if let Some(v) = value {
            doc.insert(key.into(), Value::String(v.clone()));
        }
    }
    for (key, header, value) in [
        ("priority", "X-APNs-Priority", &headers.priority),
        ("expiration", "X-APNs-Expiration", &headers.expiration),
    ] {
        if let Some(v) = value {
            let n: u64 = v
                .parse()
                .map_err(|_| format!("{header} {v:?} is not a non-negative integer"))?;
            doc.insert(key.into(), Value::from(n));
        }
    }

    // Which apps get which tokens, in recipient order; the k-th owner list of an app names the
    // recipients whose result lists its k-th token.
    let mut groups: Vec<Group<'_>> = Vec::new();
    match &headers.token {
        Some(t) => {
            let token = DeviceToken::parse(t).map_err(|e| format!("X-Device-Token: {e}"))?;
            for (i, r) in recipients.iter().enumerate() {
                let (_, tokens, owners) = group(&mut groups, &r.app);
                if tokens.is_empty() {
                    tokens.push(token.clone());
                    owners.push(Vec::new());
                }
                owners[0].push(i);
            }
        }
        None => {
            for (i, r) in recipients.iter().enumerate() {
                let raw = r.dest_id.as_deref().unwrap_or(&r.local);
                let token = DeviceToken::parse(raw).map_err(|e| {
                    format!(
                        "no X-Device-Token, and recipient {} does not carry a device token ({raw:?}): {e}",
                        i + 1
                    )
                })?;
                let (_, tokens, owners) = group(&mut groups, &r.app);
                tokens.push(token);
                owners.push(vec![i]);
            }
        }
    }
    for (app_name, tokens, owners) in groups {
        let app = config
            .app(app_name)
            .ok_or_else(|| format!("no app is named {app_name:?}"))?;
        doc.insert(
            "tokens".into(),
            Value::Array(
                tokens
                    .iter()
                    .map(|t| Value::String(t.as_str().to_owned()))
                    .collect(),
            ),
        );
        let request = super::json::one(&doc, app, now).map_err(|e| e.message)?;
        for ((id, _), owners) in request.notifications.iter().zip(&owners) {
            for &i in owners {
                out.ids[i].push(*id);
            }
        }
        let firsts = owners
            .iter()
            .map(|o| o.first().copied().unwrap_or(0))
            .collect();
        out.origins.push((headers.return_path.clone(), firsts));
        out.requests.push(request);
    }
    Ok(())
}

/// An app's name, its tokens, and for each token the recipients it is listed under.
type Group<'a> = (&'a str, Vec<DeviceToken>, Vec<Vec<usize>>);

/// The group of `app`, added at the end if it is new.
fn group<'g, 'a>(groups: &'g mut Vec<Group<'a>>, app: &'a str) -> &'g mut Group<'a> {
    let i = match groups.iter().position(|(a, _, _)| *a == app) {
        Some(i) => i,
        None => {
            groups.push((app, Vec::new(), Vec::new()));
            groups.len() - 1
        }
    };
    &mut groups[i]
}

/// Splits the seed's layout: an inner header block, an empty line, the JSON. Content that
/// starts with the JSON has no inner headers.
fn inner_headers<'a>(content: &'a [u8], headers: &mut PushHeaders) -> Result<&'a [u8], String> {
    let start = content
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(content.len());
    let content = &content[start..];
    if content.first() == Some(&b'{') {
        return Ok(content);
    }
    let (block, json) = split_blank_line(content).ok_or_else(|| {
        "the push headers must be followed by an empty line and the JSON payload".to_owned()
    })?;
    let block = std::str::from_utf8(block).map_err(|_| "the push headers are not UTF-8")?;
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("push header line {line:?} is not \"Name: value\""))?;
        headers.set(name.trim(), value);
    }
    Ok(json)
}

/// The text before and after the first empty line (CRLF or LF line ends).
fn split_blank_line(content: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut line_start = 0;
    for (i, b) in content.iter().enumerate() {
        if *b != b'\n' {
            continue;
        }
        let line = &content[line_start..i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) && line_start > 0 {
            return Some((&content[..line_start], &content[i + 1..]));
        }
        line_start = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::dash_runs;

    #[test]
    fn dash_runs_count_every_possible_delimiter_once() {
        assert_eq!(dash_runs(b"no dashes - here"), 0);
        assert_eq!(dash_runs(b"--b\r\n--b--\r\n"), 2 + 1);
        // A boundary that starts with dashes, as many mail programs make them: one run.
        assert_eq!(dash_runs(b"------=_Part_1\r\n"), 1);
        // The parser finds a delimiter in the middle of a line too.
        assert_eq!(dash_runs(b"text--b\r\n"), 1);
    }

    #[test]
    fn nested_messages_are_found_as_the_parser_reads_types() {
        use super::nested_message;
        assert_eq!(
            nested_message(b"Content-Type: message/vnd.msys.apn\r\n"),
            None
        );
        assert_eq!(nested_message(b"see https://example.com/global/x"), None);
        for text in [
            &b"Content-Type: message/rfc822\r\n"[..],
            b"content-type: MESSAGE / RFC822\r\n",
            b"Content-Type: message\r\n /rfc822\r\n",
            b"Content-Type: message/global\r\n",
            b"Content-Type: multipart/digest; boundary=d\r\n",
        ] {
            assert!(
                nested_message(text).is_some(),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
