//! A delivery status notification (RFC 3464) for the failures of one injected message:
//! `multipart/report; report-type=delivery-status` with a human-readable part, the
//! `message/delivery-status` part (one block per failed token), and the original headers
//! (`text/rfc822-headers`). Built with `mail-builder`; the delivery-status part is written as
//! 7-bit text, as RFC 3464 expects it.
//!
//! Nothing a sender chose reaches the message unchecked: the quoted headers are re-lined (CRLF
//! only, no NUL, lines cut at 998 bytes) and left to mail-builder to encode, so a bare LF, a
//! lone `.` line or 8-bit bytes in them can neither end the DATA early nor make a strict relay
//! refuse the DSN; every other value is printable ASCII on one line ([`field`]).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;

use crate::spool::{DueBounce, State};

/// The DSN of `due` from `from` (the report's `From:`), naming `reporting_mta`.
pub fn build(due: &DueBounce, from: &str, reporting_mta: &str) -> Vec<u8> {
    let origin = &due.from;
    let reporting_mta = field(reporting_mta);
    let n = due.entries.len();
    let mut human = format!(
        "This is the push gateway at {reporting_mta}.\r\n\r\n\
         {n} push notification{s} of a message it received {when} over {way} could not be \
         delivered:\r\n\r\n",
        s = if n == 1 { "" } else { "s" },
        when = crate::rfc3339::format(origin.received_at),
        way = if origin.way == "smtp" {
            "SMTP"
        } else {
            "/v1.0/inject"
        },
    );
    let mut status = format!(
        "Reporting-MTA: dns; {reporting_mta}\r\nArrival-Date: {}\r\n",
        rfc822(origin.received_at)
    );
    if origin.way == "smtp" {
        let _ = write!(
            status,
            "Received-From-MTA: dns; {}\r\n",
            field(&origin.received_from)
        );
    }
    for e in &due.entries {
        let reason = field(e.reason.as_deref().unwrap_or(""));
        let code = e.status;
        let why = match (e.state, code) {
            (State::Expired, _) => format!("expired before it could be delivered ({reason})"),
            (_, Some(c)) => format!("Apple answered {c} {reason}"),
            (_, None) => format!("not sent: {reason}"),
        };
        let (token, app) = (e.token.as_str(), field(&e.app));
        let _ = write!(human, "  {token} (app {app}, id {}): {why}\r\n", e.id);
        let _ = write!(
            status,
            "\r\nFinal-Recipient: rfc822; {token}@{app}\r\nAction: failed\r\nStatus: {st}\r\n\
             Diagnostic-Code: apns; {code} {reason}\r\nLast-Attempt-Date: {at}\r\n\
             X-APNs-Id: {id}\r\n",
            st = super::status::code(e.state, &reason),
            code = code.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            at = rfc822(e.at),
            id = e.id,
        );
    }
    human.push_str(
        "\r\nApple will not deliver these: a token that Apple called Unregistered or \
         BadDeviceToken should be removed from your list.\r\n",
    );
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human),
            MimePart::new(
                ContentType::new("message/delivery-status"),
                status.into_bytes(),
            )
            .header("Content-Transfer-Encoding", Raw::new("7bit")),
            // Text: mail-builder writes it 7-bit, or quoted-printable when it has 8-bit bytes.
            MimePart::new("text/rfc822-headers", relined(&origin.headers)),
        ],
    );
    MessageBuilder::new()
        .from(("Mail Delivery System", from))
        .to(origin.return_path.as_str())
        .subject(format!(
            "Undelivered push notification{}: {n} failed",
            if n == 1 { "" } else { "s" }
        ))
        // The origin and the set of failures it reports name the DSN: sent again with the same
        // failures (a crash after the relay took it, before the outbox forgot it), it carries
        // the same id, for the receiver to drop; with other failures, another.
        .message_id(format!(
            "bounce.{}.{}@{reporting_mta}",
            due.origin,
            digest(due)
        ))
        .date(unix(SystemTime::now()))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .expect("writing to a Vec cannot fail")
}

/// A value on one line of printable ASCII (anything else becomes `?`), at most 200
/// characters: what a DSN field may hold.
fn field(v: &str) -> String {
    v.chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `headers` with CRLF line ends only (a lone CR or LF ends a line too), without NUL or empty
/// lines, each line at most 998 bytes (RFC 5322's limit; the rest of a longer one is dropped).
fn relined(headers: &[u8]) -> String {
    let text = String::from_utf8_lossy(headers).replace('\0', "");
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split(['\r', '\n']).filter(|l| !l.is_empty()) {
        let mut end = line.len().min(998);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&line[..end]);
        out.push_str("\r\n");
    }
    out
}

/// 16 hex digits of the SHA-256 of the reported ids.
fn digest(due: &DueBounce) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for e in &due.entries {
        ctx.update(e.id.as_uuid().as_bytes());
    }
    hex::encode(&ctx.finish().as_ref()[..8])
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// RFC 5322's date, as DSN fields carry it.
fn rfc822(t: SystemTime) -> String {
    mail_builder::headers::date::Date::new(unix(t)).to_rfc822()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{BounceEntry, BounceOrigin};

    fn due(headers: &[u8], reason: &str) -> DueBounce {
        DueBounce {
            origin: 7,
            from: BounceOrigin {
                return_path: "bounces@shop.example".into(),
                headers: headers.to_vec(),
                way: "inject".into(),
                received_from: "shop".into(),
                received_at: SystemTime::now(),
            },
            attempts: 0,
            lease: 0,
            entries: vec![BounceEntry {
                id: apns::ApnsId::new(),
                app: "shop".into(),
                token: apns::DeviceToken::parse("aa").unwrap(),
                state: State::Failed,
                status: Some(410),
                reason: Some(reason.into()),
                at: SystemTime::now(),
            }],
        }
    }

    /// Lines of the message as a relay reads DATA: split at CRLF. (A line of one dot is
    /// content: the transport stuffs it. What it cannot stuff is a dot after a bare LF.)
    fn lines(m: &[u8]) -> Vec<String> {
        String::from_utf8(m.to_vec())
            .unwrap()
            .split("\r\n")
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn what_a_sender_chose_cannot_end_the_data_or_add_a_header() {
        // A bare LF, a lone dot, a NUL, 8-bit bytes and an overlong line in the quoted
        // headers; a CRLF in Apple's reason.
        let mut headers = b"Subject: hi\n.\nX-Evil: 1\r\n\0X-Long: ".to_vec();
        headers.extend(std::iter::repeat_n(b'a', 3000));
        headers.extend_from_slice("\r\nX-Name: Zo\u{eb}\r\n".as_bytes());
        let m = build(
            &due(&headers, "Unregistered\r\nBcc: victim@example.com"),
            "MAILER-DAEMON@push.example.com",
            "push.example.com\r\nX-Injected: 1",
        );
        assert!(!m.contains(&b'\0'));
        for l in lines(&m) {
            assert!(!l.contains('\n') && !l.contains('\r'), "{l:?}");
            assert!(l.len() <= 998, "{} bytes", l.len());
            assert!(
                !l.starts_with("Bcc:") && !l.starts_with("X-Injected"),
                "{l:?}"
            );
        }
        let text = String::from_utf8(m).unwrap();
        assert!(text.contains("Diagnostic-Code: apns; 410 Unregistered??Bcc: victim@example.com"));
        assert!(text.is_ascii(), "8-bit headers are encoded");
    }

    #[test]
    fn plain_ascii_headers_are_re_lined_before_they_are_sent() {
        // Short ASCII lines, so mail-builder sends them as they are: a lone CR, a NUL and a
        // dot after a bare LF must all be gone or made whole lines by `relined`.
        let m = build(
            &due(
                b"Subject: a\rX-CR: 1\n.\nX-Dot: 2\r\n\0X-Nul: 3\r\n",
                "Unregistered",
            ),
            "m@x.example",
            "x.example",
        );
        let text = String::from_utf8(m.clone()).unwrap();
        assert!(
            text.contains("Subject: a\r\nX-CR: 1\r\n.\r\nX-Dot: 2\r\nX-Nul: 3\r\n"),
            "{text}"
        );
        for l in lines(&m) {
            assert!(
                !l.contains('\n') && !l.contains('\r') && !l.contains('\0'),
                "{l:?}"
            );
        }
    }

    #[test]
    fn the_message_id_names_the_origin_and_its_failures() {
        let a = due(b"A: 1\r\n", "Unregistered");
        let id = |m: Vec<u8>| {
            lines(&m)
                .into_iter()
                .find(|l| l.starts_with("Message-ID:"))
                .unwrap()
        };
        let same = id(build(&a, "m@x.example", "x.example"));
        assert_eq!(same, id(build(&a, "m@x.example", "x.example")));
        assert!(same.contains("<bounce.7."), "{same}");
        let mut b = a.clone();
        b.entries[0].id = apns::ApnsId::new();
        assert_ne!(same, id(build(&b, "m@x.example", "x.example")));
    }
}
