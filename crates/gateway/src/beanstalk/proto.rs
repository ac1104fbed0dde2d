//! beanstalkd's text protocol (`doc/protocol.txt`): commands out, replies in, framed by
//! length. A reply is one line ending in `\r\n`; `RESERVED`, `FOUND` and `OK` announce a body
//! of `<bytes>` that follows, itself ended by `\r\n`. A body is bytes, never lines: it may hold
//! `\r\n` of its own, so it is cut by its announced length and nothing else.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// The longest reply line taken (the server's own lines are under 100 bytes; its command lines
/// are at most 224).
const MAX_LINE: usize = 1024;

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `RESERVED <id> <bytes>` and the job's body.
    Reserved { id: u64, body: Bytes },
    /// `INSERTED <id>`.
    Inserted(u64),
    /// `OK <bytes>` and its YAML (stats).
    Ok(Bytes),
    /// `FOUND <id> <bytes>` and the job's body (peek).
    Found { id: u64, body: Bytes },
    /// `RESERVED <id> <bytes>` with a body over the limit: skipped, not buffered (the job is
    /// reserved all the same, and is buried for it).
    TooBig { id: u64, len: usize },
    /// Any other reply, as its words: `DELETED`, `RELEASED`, `BURIED`, `TOUCHED`,
    /// `TIMED_OUT`, `DEADLINE_SOON`, `NOT_FOUND`, `WATCHING 2`, `USING t`, an error...
    Word(String),
}

impl Reply {
    /// Whether this is the one-word reply `word`.
    pub fn is(&self, word: &str) -> bool {
        matches!(self, Reply::Word(w) if w == word)
    }
}

/// The protocol broke: a reply that is not beanstalkd's, or a line or body past the limits.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("reading from beanstalkd")]
    Io(#[from] std::io::Error),
    #[error("beanstalkd sent {0:?}, which is not a reply of its protocol")]
    Garbled(String),
    #[error("beanstalkd announced a body of {0} bytes, over the limit of {1}")]
    TooLarge(usize, usize),
}

/// Decodes replies; `max_body` bounds what one body may make it buffer.
#[derive(Debug)]
pub struct ReplyCodec {
    max_body: usize,
    /// A reply line read whose body has not all arrived yet: its kind, id and length.
    waiting: Option<(Kind, u64, usize)>,
    /// Bytes still to discard of a body over the limit (and its CRLF).
    skip: usize,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Reserved,
    Found,
    Ok,
}

impl ReplyCodec {
    pub fn new(max_body: usize) -> ReplyCodec {
        ReplyCodec {
            max_body,
            waiting: None,
            skip: 0,
        }
    }

    /// The line's kind, id and body length, when it announces a body.
    fn header(&self, line: &str) -> Result<Option<(Kind, u64, usize)>, ProtoError> {
        let mut words = line.split(' ');
        let kind = match words.next() {
            Some("RESERVED") => Kind::Reserved,
            Some("FOUND") => Kind::Found,
            Some("OK") => Kind::Ok,
            _ => return Ok(None),
        };
        let garbled = || ProtoError::Garbled(line.to_owned());
        let number = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok()).ok_or_else(garbled);
        let id = match kind {
            Kind::Ok => 0,
            Kind::Reserved | Kind::Found => number(words.next())?,
        };
        let len = usize::try_from(number(words.next())?).map_err(|_| garbled())?;
        if words.next().is_some() {
            return Err(garbled());
        }
        if len > self.max_body && !matches!(kind, Kind::Reserved) {
            return Err(ProtoError::TooLarge(len, self.max_body));
        }
        Ok(Some((kind, id, len)))
    }
}

impl Decoder for ReplyCodec {
    type Item = Reply;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, ProtoError> {
        if self.skip > 0 {
            let n = self.skip.min(src.len());
            src.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if self.waiting.is_none() {
            let Some(end) = src.windows(2).position(|w| w == b"\r\n") else {
                if src.len() > MAX_LINE {
                    return Err(ProtoError::Garbled(
                        String::from_utf8_lossy(&src[..64]).into_owned(),
                    ));
                }
                return Ok(None);
            };
            let line = std::str::from_utf8(&src[..end])
                .map_err(|_| ProtoError::Garbled(String::from_utf8_lossy(&src[..end]).into()))?
                .to_owned();
            src.advance(end + 2);
            match self.header(&line)? {
                None => {
                    if line.is_empty() {
                        return Err(ProtoError::Garbled(line));
                    }
                    if let Some(id) = line.strip_prefix("INSERTED ") {
                        let id = id.parse().map_err(|_| ProtoError::Garbled(line.clone()))?;
                        return Ok(Some(Reply::Inserted(id)));
                    }
                    return Ok(Some(Reply::Word(line)));
                }
                Some((Kind::Reserved, id, len)) if len > self.max_body => {
                    self.skip = len + 2;
                    return Ok(Some(Reply::TooBig { id, len }));
                }
                Some(h) => self.waiting = Some(h),
            }
        }
        let Some((kind, id, len)) = self.waiting else {
            return Ok(None);
        };
        if src.len() < len + 2 {
            src.reserve(len + 2 - src.len());
            return Ok(None);
        }
        if &src[len..len + 2] != b"\r\n" {
            return Err(ProtoError::Garbled(format!(
                "a body of {len} bytes not followed by CRLF"
            )));
        }
        let body = src.split_to(len).freeze();
        src.advance(2);
        self.waiting = None;
        Ok(Some(match kind {
            Kind::Reserved => Reply::Reserved { id, body },
            Kind::Found => Reply::Found { id, body },
            Kind::Ok => Reply::Ok(body),
        }))
    }
}

/// A command for the server, written into `out`.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    Use(&'a str),
    Watch(&'a str),
    Ignore(&'a str),
    /// `put <pri> <delay> <ttr>` with its body.
    Put {
        pri: u32,
        delay: u32,
        ttr: u32,
        body: &'a [u8],
    },
    ReserveWithTimeout(u32),
    Delete(u64),
    Release {
        id: u64,
        pri: u32,
        delay: u32,
    },
    Bury {
        id: u64,
        pri: u32,
    },
    Touch(u64),
    StatsJob(u64),
    Stats,
    Kick(u32),
    PeekBuried,
    StatsTube(&'a str),
}

impl Command<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = match *self {
            Command::Use(t) => write!(out, "use {t}\r\n"),
            Command::Watch(t) => write!(out, "watch {t}\r\n"),
            Command::Ignore(t) => write!(out, "ignore {t}\r\n"),
            Command::Put {
                pri,
                delay,
                ttr,
                body,
            } => write!(out, "put {pri} {delay} {ttr} {}\r\n", body.len())
                .and_then(|()| out.write_all(body))
                .and_then(|()| out.write_all(b"\r\n")),
            Command::ReserveWithTimeout(s) => write!(out, "reserve-with-timeout {s}\r\n"),
            Command::Delete(id) => write!(out, "delete {id}\r\n"),
            Command::Release { id, pri, delay } => write!(out, "release {id} {pri} {delay}\r\n"),
            Command::Bury { id, pri } => write!(out, "bury {id} {pri}\r\n"),
            Command::Touch(id) => write!(out, "touch {id}\r\n"),
            Command::StatsJob(id) => write!(out, "stats-job {id}\r\n"),
            Command::Stats => write!(out, "stats\r\n"),
            Command::Kick(n) => write!(out, "kick {n}\r\n"),
            Command::PeekBuried => write!(out, "peek-buried\r\n"),
            Command::StatsTube(t) => write!(out, "stats-tube {t}\r\n"),
        };
    }
}

/// The value of `key` in a stats YAML document (`key: value` lines; 1.13+ quotes strings).
pub fn stat<'a>(yaml: &'a [u8], key: &str) -> Option<&'a str> {
    std::str::from_utf8(yaml).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(": ")?;
        (k == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Whether `tube` is a name beanstalkd takes: 1 to 200 bytes of letters, digits and
/// `-+/;.$_()`, not starting with `-`.
pub fn valid_tube(tube: &str) -> bool {
    (1..=200).contains(&tube.len())
        && !tube.starts_with('-')
        && tube
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<Reply> {
        let mut codec = ReplyCodec::new(1 << 16);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(r) = codec.decode(&mut buf).unwrap() {
                out.push(r);
            }
        }
        out
    }

    #[test]
    fn a_body_is_cut_by_its_length_even_across_reads_and_with_crlf_inside() {
        let replies = decode_all(&[
            b"RESERVED 7 12\r\nab\r\n",
            b"cd\r\nefgh\r\nDELE",
            b"TED\r\nOK 6\r\n---\na\n\r\nTIMED_OUT\r\nINSERTED 12\r\n",
        ]);
        assert_eq!(
            replies,
            vec![
                Reply::Reserved {
                    id: 7,
                    body: Bytes::from_static(b"ab\r\ncd\r\nefgh")
                },
                Reply::Word("DELETED".into()),
                Reply::Ok(Bytes::from_static(b"---\na\n")),
                Reply::Word("TIMED_OUT".into()),
                Reply::Inserted(12),
            ]
        );
    }

    #[test]
    fn a_job_over_the_limit_is_skipped_not_buffered() {
        let mut codec = ReplyCodec::new(4);
        let mut buf = BytesMut::from(&b"RESERVED 9 10\r\n0123"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Reply::TooBig { id: 9, len: 10 })
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "nothing kept of it");
        buf.extend_from_slice(b"456789\r\nDELETED\r\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Reply::Word("DELETED".into()))
        );
    }

    #[test]
    fn garbage_and_oversized_bodies_are_errors() {
        let mut codec = ReplyCodec::new(10);
        assert!(matches!(
            codec.decode(&mut BytesMut::from(&b"OK 11\r\n"[..])),
            Err(ProtoError::TooLarge(11, 10))
        ));
        let mut codec = ReplyCodec::new(10);
        assert!(
            codec
                .decode(&mut BytesMut::from(&b"RESERVED x 1\r\n"[..]))
                .is_err()
        );
        let mut codec = ReplyCodec::new(10);
        assert!(
            codec
                .decode(&mut BytesMut::from(&b"RESERVED 1 2\r\nabXY"[..]))
                .is_err()
        );
        let mut codec = ReplyCodec::new(10);
        assert!(
            codec
                .decode(&mut BytesMut::from(&[b'x'; 2000][..]))
                .is_err()
        );
    }

    #[test]
    fn commands_and_stats_and_tube_names() {
        let mut out = Vec::new();
        Command::Put {
            pri: 2_147_483_648,
            delay: 0,
            ttr: 120,
            body: b"{}",
        }
        .encode(&mut out);
        Command::Release {
            id: 3,
            pri: 10,
            delay: 5,
        }
        .encode(&mut out);
        assert_eq!(out, b"put 2147483648 0 120 2\r\n{}\r\nrelease 3 10 5\r\n");
        let yaml = b"---\nid: 4\ntube: \"t2\"\npri: 10\nreserves: 2\nreleases: 1\n";
        assert_eq!(stat(yaml, "tube"), Some("t2"));
        assert_eq!(stat(yaml, "reserves"), Some("2"));
        assert_eq!(stat(yaml, "ttr"), None);
        assert!(valid_tube("com.example.app") && valid_tube("a(b)+c;$_/"));
        assert!(
            !valid_tube("-x")
                && !valid_tube("")
                && !valid_tube("a b")
                && !valid_tube(&"t".repeat(201))
        );
    }
}
