//! One SMTP session: greeting, commands (pipelined or not), DATA, STARTTLS, AUTH.
//!
//! Input is read in chunks and every complete command in a chunk is answered before the next
//! read, so pipelined commands get their replies in one write (RFC 2920). Bytes that follow
//! STARTTLS in the same chunk are discarded (RFC 3207: they were sent in the clear).
//!
//! Over 500 lines, on purpose: the session is one state machine (greeting, envelope, DATA,
//! STARTTLS, AUTH), and which command is allowed in which state reads best in one place.
//! What a message means is elsewhere (`ingest::mcmt`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apns::ApnsId;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use smtp_proto::request::receiver::{DataReceiver, LineReceiver, RequestReceiver};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{Caller, check_key};
use crate::ingest::mcmt::{self, Recipient};
use crate::ingest::{Accepted, Intake, Submission};
use crate::spool::{IdempotencyKey, Spool, SubmitError};

/// Most recipients in one transaction.
const MAX_RECIPIENTS: usize = 10_000;
/// Refused AUTH attempts a session may make; the last is answered 421 and the session ends.
const MAX_REFUSED_AUTHS: u32 = 3;
/// The name in the greeting and EHLO reply.
const HOSTNAME: &str = "pushgate";

/// Runs a session on `stream`, upgrading it to TLS when the client asks.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    intake: Arc<Intake>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut session = Session {
        intake,
        peer,
        tls_offered: tls.is_some(),
        tls_active: false,
        shutdown,
        helo: false,
        caller: None,
        mail: false,
        recipients: Vec::new(),
        pause: Duration::ZERO,
        refused_auths: 0,
        closing: false,
        sender: String::new(),
    };
    let mut plain = stream;
    session
        .write(&mut plain, b"220 pushgate ESMTP ready\r\n")
        .await?;
    match session.serve(&mut plain).await? {
        End::Closed => Ok(()),
        End::StartTls => {
            let Some(acceptor) = tls else {
                return Ok(());
            };
            let handshake_limit =
                crate::tls::HANDSHAKE.min(Limits::of(&session.intake.config()).command);
            let Ok(handshake) = tokio::time::timeout(handshake_limit, acceptor.accept(plain)).await
            else {
                crate::metrics::connection_timed_out("smtp", "handshake");
                return Ok(());
            };
            let mut secure = handshake?;
            session.tls_active = true;
            // RFC 3207: the session starts over; nothing learned before TLS is kept.
            session.helo = false;
            session.caller = None;
            session.reset();
            session.serve(&mut secure).await?;
            Ok(())
        }
    }
}

/// How long the goodbye after a missed deadline may take to write.
const WRITE: Duration = Duration::from_secs(5);

/// The `[smtp]` limits a session runs under, read when it (re)starts.
struct Limits {
    max_message_bytes: usize,
    command: Duration,
    data: Duration,
}

impl Limits {
    fn of(config: &crate::config::Config) -> Limits {
        match &config.smtp {
            Some(c) => Limits {
                max_message_bytes: c.max_message_bytes,
                command: c.command_timeout,
                data: c.data_timeout,
            },
            None => Limits {
                max_message_bytes: 10 << 20,
                command: Duration::from_secs(300),
                data: Duration::from_secs(600),
            },
        }
    }
}

/// How a session loop ended.
enum End {
    Closed,
    StartTls,
}

/// What the next input is.
enum Mode {
    Command,
    /// Message content after DATA; `None` once it went over the size limit (the rest is read
    /// and dropped so the session stays in step).
    Data(DataReceiver, Option<Vec<u8>>),
    /// Waiting for the AUTH PLAIN response.
    AuthPlain(LineReceiver<()>),
    /// Waiting for the AUTH LOGIN user name, then its password.
    AuthLoginUser(LineReceiver<()>),
    AuthLoginPassword(LineReceiver<()>, String),
}

struct Session {
    intake: Arc<Intake>,
    peer: SocketAddr,
    tls_offered: bool,
    tls_active: bool,
    shutdown: CancellationToken,
    helo: bool,
    caller: Option<Caller>,
    /// Inside a transaction (after MAIL).
    mail: bool,
    /// The transaction's MAIL FROM address.
    sender: String,
    recipients: Vec<Recipient>,
    /// How long to hold the next replies: after an AUTH from an address that keeps failing
    /// (`login_failures`), whatever its outcome.
    pause: Duration,
    /// AUTH attempts refused in this session: the third ends it.
    refused_auths: u32,
    /// The session ends after the replies so far (nothing more of the input is read).
    closing: bool,
}

/// Appends one reply line, with control characters in the text made spaces.
fn reply(out: &mut Vec<u8>, code: u16, text: &str) {
    out.extend_from_slice(code.to_string().as_bytes());
    out.push(b' ');
    out.extend(
        text.bytes()
            .map(|b| if b.is_ascii_control() { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

impl Session {
    /// A message's idempotency key: its `Message-ID`, per AUTH user (or, without AUTH, per
    /// sender), for its set of recipients — a client that splits one message's recipients over
    /// several transactions sends each part once, and a retry of one part is stored once.
    fn idempotency_key(&self, message_id: &str, message: &[u8]) -> IdempotencyKey {
        let scope = match &self.caller {
            Some(c) => format!("smtp-auth:{}", c.name),
            None => format!("smtp:{}", self.sender.to_ascii_lowercase()),
        };
        // A set: in no particular order, the local part (a token, or a name) in any case.
        let mut set: Vec<(&str, String)> = self
            .recipients
            .iter()
            .map(|r| (r.app.as_str(), r.local.to_ascii_lowercase()))
            .collect();
        set.sort();
        set.dedup();
        let mut rcpts = Vec::new();
        for (app, local) in &set {
            rcpts.extend_from_slice(app.as_bytes());
            rcpts.push(0);
            rcpts.extend_from_slice(local.as_bytes());
            rcpts.push(0);
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &rcpts);
        let to: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        IdempotencyKey::new(scope, format!("{message_id} to:{to}"), message)
    }

    fn reset(&mut self) {
        self.mail = false;
        self.recipients.clear();
    }

    async fn write<S: AsyncWrite + Unpin>(&self, s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
        s.write_all(bytes).await?;
        s.flush().await
    }

    /// Reads and answers commands until QUIT, a closed connection, STARTTLS or shutdown.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        s: &mut S,
    ) -> std::io::Result<End> {
        let limits = Limits::of(&self.intake.config());
        let max = limits.max_message_bytes;
        let mut commands = RequestReceiver::default();
        let mut mode = Mode::Command;
        let mut chunk = vec![0u8; 16 * 1024];
        let mut out = Vec::with_capacity(1024);
        // The whole command (or message) must be in by then; a byte now and then does not
        // move it. Moved on by each reply.
        let mut deadline = Instant::now() + limits.command;
        loop {
            let n = tokio::select! {
                r = tokio::time::timeout_at(deadline, s.read(&mut chunk)) => match r {
                    Ok(r) => r?,
                    Err(_) => {
                        let (phase, what, limit) = match mode {
                            Mode::Data(..) => ("data", "message", limits.data),
                            _ => ("command", "command", limits.command),
                        };
                        crate::metrics::connection_timed_out("smtp", phase);
                        let line = format!(
                            "421 4.4.2 no complete {what} within {} s; closing\r\n",
                            limit.as_secs()
                        );
                        // Best effort: a peer that does not read gets nothing.
                        let _ = tokio::time::timeout(WRITE, self.write(s, line.as_bytes())).await;
                        return Ok(End::Closed);
                    }
                },
                () = self.shutdown.cancelled(), if matches!(mode, Mode::Command) => {
                    self.write(s, b"421 4.3.2 shutting down; try again later\r\n").await?;
                    return Ok(End::Closed);
                }
            };
            if n == 0 {
                return Ok(End::Closed);
            }
            let mut bytes = chunk[..n].iter();
            let mut end = None;
            while end.is_none() && !bytes.as_slice().is_empty() {
                mode = match mode {
                    Mode::Command => match commands.ingest(&mut bytes) {
                        Ok(request) => {
                            let request = request.into_owned();
                            let (next, e) = self.command(request, max, &mut out);
                            end = e;
                            next
                        }
                        Err(ParseError::NeedsMoreData { .. }) => Mode::Command,
                        Err(e) => {
                            parse_error(&e, &mut out);
                            Mode::Command
                        }
                    },
                    Mode::Data(mut receiver, message) => {
                        let was_over = message.is_none();
                        let mut sink = message.unwrap_or_default();
                        let complete = receiver.ingest(&mut bytes, &mut sink);
                        let over = was_over || sink.len() > max;
                        match (complete, over) {
                            (false, false) => Mode::Data(receiver, Some(sink)),
                            // Over the limit: the rest is read and dropped.
                            (false, true) => Mode::Data(receiver, None),
                            (true, true) => {
                                reply(
                                    &mut out,
                                    552,
                                    &format!("5.3.4 the message is over {max} bytes"),
                                );
                                self.reset();
                                Mode::Command
                            }
                            (true, false) => {
                                self.message(&sink, &mut out).await;
                                self.reset();
                                Mode::Command
                            }
                        }
                    }
                    Mode::AuthPlain(mut line) => {
                        if line.ingest(&mut bytes) {
                            self.auth_plain(&line.buf, &mut out);
                            Mode::Command
                        } else {
                            Mode::AuthPlain(line)
                        }
                    }
                    Mode::AuthLoginUser(mut line) => {
                        if !line.ingest(&mut bytes) {
                            Mode::AuthLoginUser(line)
                        } else if let Some(user) = decode(&line.buf, &mut out) {
                            reply(&mut out, 334, "UGFzc3dvcmQ6");
                            Mode::AuthLoginPassword(LineReceiver::new(()), user)
                        } else {
                            Mode::Command
                        }
                    }
                    Mode::AuthLoginPassword(mut line, user) => {
                        if !line.ingest(&mut bytes) {
                            Mode::AuthLoginPassword(line, user)
                        } else {
                            if let Some(password) = decode(&line.buf, &mut out) {
                                self.authenticate(&user, &password, &mut out);
                            }
                            Mode::Command
                        }
                    }
                };
                if self.closing {
                    end = Some(End::Closed);
                }
            }
            let pause = std::mem::take(&mut self.pause).min(crate::login_failures::MAX_DELAY);
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = self.shutdown.cancelled() => {}
                }
            }
            if !out.is_empty() {
                // A peer that pipelines commands but never reads the replies is not waited
                // for longer than a command may take.
                tokio::time::timeout(limits.command, self.write(s, &out))
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                out.clear();
                let limit = match mode {
                    Mode::Data(..) => limits.data,
                    _ => limits.command,
                };
                deadline = Instant::now() + limit;
            }
            if let Some(end) = end {
                return Ok(end);
            }
        }
    }

    /// Answers one command; returns the next mode and, for QUIT and STARTTLS, how to end.
    fn command(
        &mut self,
        request: Request<String>,
        max: usize,
        out: &mut Vec<u8>,
    ) -> (Mode, Option<End>) {
        match request {
            Request::Ehlo { host } => {
                self.helo = true;
                self.reset();
                let mut lines = vec![
                    format!("{HOSTNAME} greets {host}"),
                    "PIPELINING".to_owned(),
                    format!("SIZE {max}"),
                    "8BITMIME".to_owned(),
                    "ENHANCEDSTATUSCODES".to_owned(),
                ];
                if self.tls_offered && !self.tls_active {
                    lines.push("STARTTLS".to_owned());
                }
                if self.tls_active {
                    lines.push("AUTH PLAIN LOGIN".to_owned());
                }
                let last = lines.len() - 1;
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i == last { " " } else { "-" };
                    out.extend_from_slice(format!("250{sep}{l}\r\n").as_bytes());
                }
            }
            Request::Helo { .. } => {
                self.helo = true;
                self.reset();
                reply(out, 250, HOSTNAME);
            }
            Request::Lhlo { .. } => reply(out, 500, "5.5.1 this is SMTP, not LMTP"),
            Request::Mail { from } => self.mail_from(&from.address, from.size, max, out),
            Request::Rcpt { to } => self.rcpt_to(&to.address, out),
            Request::Data => {
                if !self.mail || self.recipients.is_empty() {
                    reply(
                        out,
                        503,
                        "5.5.1 DATA needs MAIL and at least one accepted RCPT",
                    );
                } else {
                    reply(out, 354, "end the message with <CRLF>.<CRLF>");
                    return (Mode::Data(DataReceiver::new(), Some(Vec::new())), None);
                }
            }
            Request::Rset => {
                self.reset();
                reply(out, 250, "2.0.0 reset");
            }
            Request::Noop { .. } => reply(out, 250, "2.0.0 OK"),
            Request::Quit => {
                reply(out, 221, "2.0.0 bye");
                return (Mode::Command, Some(End::Closed));
            }
            Request::Vrfy { .. } => reply(out, 252, "2.5.0 cannot verify; send and see"),
            Request::Help { .. } => reply(
                out,
                214,
                "2.0.0 pushgate takes MCMT messages with message/vnd.msys.apn parts",
            ),
            Request::StartTls if !self.tls_offered => {
                reply(out, 502, "5.5.1 STARTTLS is not configured");
            }
            Request::StartTls if self.tls_active => reply(out, 503, "5.5.1 TLS is already active"),
            Request::StartTls => {
                reply(out, 220, "2.0.0 ready to start TLS");
                return (Mode::Command, Some(End::StartTls));
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => return (self.auth(mechanism, &initial_response, out), None),
            other => reply(
                out,
                502,
                &format!("5.5.1 {} is not implemented", other.name()),
            ),
        }
        (Mode::Command, None)
    }

    fn mail_from(&mut self, sender: &str, size: usize, max: usize, out: &mut Vec<u8>) {
        let requires_auth = self
            .intake
            .config()
            .smtp
            .as_ref()
            .is_some_and(|c| c.require_auth);
        if !self.helo {
            reply(out, 503, "5.5.1 say EHLO first");
        } else if self.mail {
            reply(out, 503, "5.5.1 a transaction is already open; RSET first");
        } else if requires_auth && self.caller.is_none() {
            reply(out, 530, "5.7.0 authentication required");
        } else if size > max {
            reply(
                out,
                552,
                &format!("5.3.4 the message is over the {max} byte limit"),
            );
        } else {
            self.mail = true;
            sender.clone_into(&mut self.sender);
            reply(out, 250, "2.1.0 sender OK");
        }
    }

    fn rcpt_to(&mut self, address: &str, out: &mut Vec<u8>) {
        if !self.mail {
            reply(out, 503, "5.5.1 RCPT needs MAIL first");
            return;
        }
        if self.recipients.len() >= MAX_RECIPIENTS {
            reply(out, 452, "4.5.3 too many recipients");
            return;
        }
        match mcmt::route(address, self.caller.as_ref(), &self.intake.config()) {
            Ok(r) => {
                self.recipients.push(r);
                reply(out, 250, "2.1.5 recipient OK");
            }
            Err(e) => reply(out, e.code, &e.text),
        }
    }

    /// A complete message: parsed, committed, and answered only after the commit.
    async fn message(&self, message: &[u8], out: &mut Vec<u8>) {
        let config = self.intake.config();
        let mut parsed = match mcmt::parse(message, &self.recipients, &config, SystemTime::now()) {
            Ok(p) => p,
            Err(e) => {
                // A message sent again that no longer parses as it did (its absolute
                // expiration has passed since) was stored all the same: answer as the first.
                if let Some(id) = mcmt::message_id(message) {
                    let key = self.idempotency_key(&id, message);
                    if let Ok(Some(first)) = self.intake.spool().replay_of(&key).await {
                        reply(
                            out,
                            250,
                            &format!(
                                "2.0.0 {} notification{} queued; first id {}",
                                first.len(),
                                if first.len() == 1 { "" } else { "s" },
                                first.first().map(ToString::to_string).unwrap_or_default()
                            ),
                        );
                        return;
                    }
                }
                info!(peer = %self.peer, reason = %e, "SMTP message refused");
                reply(out, 554, &format!("5.6.0 {e}"));
                return;
            }
        };
        // A null sender (`MAIL FROM:<>`, itself a bounce or a report) never gets a bounce,
        // whatever its headers say.
        if !self.sender.is_empty() {
            let sender = mcmt::ReturnPath::Address(self.sender.clone());
            crate::bounces::attach(
                &config,
                &mut parsed,
                &crate::bounces::Arrival {
                    way: "smtp",
                    received_from: format!("[{}]", self.peer.ip()),
                    message,
                    envelope: &|_| sender.clone(),
                },
            );
        }
        let (count, first) = parsed.count_and_first();
        let key = parsed
            .message_id
            .as_deref()
            .map(|id| self.idempotency_key(id, message));
        let submission = Submission::new(self.caller.clone(), parsed.requests).once(key);
        let answered = |first: Option<ApnsId>, out: &mut Vec<u8>| {
            reply(
                out,
                250,
                &format!(
                    "2.0.0 {count} notification{} queued; first id {}",
                    if count == 1 { "" } else { "s" },
                    first.map(|i| i.to_string()).unwrap_or_default()
                ),
            );
        };
        match self.intake.submit(submission).await {
            Ok(Accepted::Committed(_)) => answered(first, out),
            // Sent before (a client that lost the 250 and sent it again): stored once.
            Ok(Accepted::Replayed(replay)) => {
                let first_id = first.and_then(|f| replay.translate(&[f])).map(|v| v[0]);
                answered(first_id.or_else(|| replay.first.first().copied()), out);
            }
            Err(SubmitError::KeyReused) => reply(
                out,
                554,
                "5.6.0 this Message-ID was sent before with other content",
            ),
            Err(SubmitError::KeyInProgress) => reply(
                out,
                451,
                "4.3.0 a message with this Message-ID is still being committed; try again later",
            ),
            Err(SubmitError::Full { .. }) => {
                reply(out, 451, "4.3.0 the spool is full; try again later");
            }
            Err(e @ SubmitError::AppPaused { .. }) => {
                reply(out, 451, &format!("4.3.2 {e}"));
            }
            Err(e @ SubmitError::RateLimited { .. }) => {
                reply(out, 451, &format!("4.7.1 {e}"));
            }
            Err(SubmitError::Unavailable(e)) => {
                warn!(error = %e, "spool failure on an SMTP message");
                reply(out, 451, "4.3.0 the spool is unavailable; try again later");
            }
        }
    }

    fn auth(&mut self, mechanism: u64, initial: &str, out: &mut Vec<u8>) -> Mode {
        if !self.tls_active {
            reply(
                out,
                538,
                "5.7.11 AUTH needs an encrypted connection; STARTTLS first",
            );
            return Mode::Command;
        }
        if self.caller.is_some() {
            reply(out, 503, "5.5.1 already authenticated");
            return Mode::Command;
        }
        if self.mail {
            reply(out, 503, "5.5.1 AUTH is not allowed during a transaction");
            return Mode::Command;
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                reply(out, 334, "");
                Mode::AuthPlain(LineReceiver::new(()))
            }
            AUTH_PLAIN => {
                self.auth_plain(initial.as_bytes(), out);
                Mode::Command
            }
            AUTH_LOGIN if initial.is_empty() => {
                reply(out, 334, "VXNlcm5hbWU6");
                Mode::AuthLoginUser(LineReceiver::new(()))
            }
            AUTH_LOGIN => match decode(initial.as_bytes(), out) {
                Some(user) => {
                    reply(out, 334, "UGFzc3dvcmQ6");
                    Mode::AuthLoginPassword(LineReceiver::new(()), user)
                }
                None => Mode::Command,
            },
            _ => {
                reply(out, 504, "5.5.4 use AUTH PLAIN or AUTH LOGIN");
                Mode::Command
            }
        }
    }

    fn auth_plain(&mut self, response: &[u8], out: &mut Vec<u8>) {
        let Some(text) = decode(response, out) else {
            return;
        };
        // authzid NUL authcid NUL password
        let mut fields = text.split('\0');
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some(_), Some(user), Some(password), None) => {
                self.authenticate(user, password, out);
            }
            _ => reply(out, 501, "5.5.2 malformed AUTH PLAIN response"),
        }
    }

    /// Checks `password` as an API key whose name is `user`. Neither is ever logged or echoed.
    /// From an address that keeps failing, the answer waits whatever it is; the third refusal
    /// in a session ends it, so pipelined guesses gain nothing.
    fn authenticate(&mut self, user: &str, password: &str, out: &mut Vec<u8>) {
        let config = self.intake.config();
        self.pause += self.intake.login_delay(self.peer.ip());
        match check_key(&config.api_keys, password).filter(|c| c.name == user) {
            Some(caller) => {
                self.caller = Some(caller);
                reply(out, 235, "2.7.0 authenticated");
            }
            None => {
                self.intake.login_failures().failed(self.peer.ip(), "smtp");
                self.refused_auths += 1;
                if self.refused_auths >= MAX_REFUSED_AUTHS {
                    reply(
                        out,
                        421,
                        "4.7.0 too many failed authentications; closing the connection",
                    );
                    self.closing = true;
                    return;
                }
                reply(out, 535, "5.7.8 authentication credentials invalid");
            }
        }
    }
}

/// Decodes a base64 AUTH response line; `*` cancels. Answers the error itself.
fn decode(line: &[u8], out: &mut Vec<u8>) -> Option<String> {
    let line = line.trim_ascii();
    if line == b"*" {
        reply(out, 501, "5.0.0 authentication cancelled");
        return None;
    }
    if line == b"=" {
        return Some(String::new());
    }
    match B64
        .decode(line)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    {
        Some(s) => Some(s),
        None => {
            reply(out, 501, "5.5.2 the response is not base64 UTF-8");
            None
        }
    }
}

fn parse_error(e: &ParseError, out: &mut Vec<u8>) {
    match e {
        ParseError::UnknownCommand => reply(out, 500, "5.5.1 unrecognised command"),
        ParseError::InvalidSenderAddress => reply(out, 501, "5.1.7 invalid sender address"),
        ParseError::InvalidRecipientAddress => {
            reply(out, 501, "5.1.3 invalid recipient address");
        }
        ParseError::SyntaxError { syntax } => reply(out, 501, &format!("5.5.4 syntax: {syntax}")),
        ParseError::InvalidParameter { param } => {
            reply(out, 501, &format!("5.5.4 invalid parameter {param}"));
        }
        ParseError::UnsupportedParameter { param } => {
            reply(out, 555, &format!("5.5.4 unsupported parameter {param}"));
        }
        ParseError::ResponseTooLong => reply(out, 500, "5.5.2 line too long"),
        ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => {
            reply(out, 500, "5.5.2 unreadable command");
        }
    }
}
