//! One connection to beanstalkd. Commands may be queued and sent together (`queue`, then
//! `flush`); the server answers them in order, so replies are read back in that order
//! (`recv`). Every wait for a reply has a deadline: a server that stops answering is a broken
//! connection, not a hung consumer.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

use super::proto::{Command, ProtoError, Reply, ReplyCodec};

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server may take to answer a command (beyond a reserve's own timeout).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest body taken: beanstalkd's own default limit is 65,535 bytes (`-z` raises it).
pub const MAX_BODY: usize = 1 << 20;

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to beanstalkd at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("beanstalkd at {0} did not accept a connection within 5 s")]
    ConnectTimeout(String),
    #[error("writing to beanstalkd")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("beanstalkd closed the connection")]
    Closed,
    #[error("beanstalkd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("beanstalkd answered {got:?} to {what}")]
    Unexpected { what: &'static str, got: String },
}

/// A connection: its two halves and the commands queued for the next flush.
#[derive(Debug)]
pub struct Conn {
    read: FramedRead<OwnedReadHalf, ReplyCodec>,
    write: OwnedWriteHalf,
    out: Vec<u8>,
    /// Commands sent whose replies are still to be read.
    unread: usize,
}

impl Conn {
    /// Connects to `server` (`host:port`).
    pub async fn connect(server: &str) -> Result<Conn, ClientError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server))
            .await
            .map_err(|_| ClientError::ConnectTimeout(server.to_owned()))?
            .map_err(|e| ClientError::Connect(server.to_owned(), e))?;
        // Small commands, answered one by one: no Nagle delay on them.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        Ok(Conn {
            read: FramedRead::new(read, ReplyCodec::new(MAX_BODY)),
            write,
            out: Vec::with_capacity(4096),
            unread: 0,
        })
    }

    /// Queues `c` for the next [`Conn::flush`].
    pub fn queue(&mut self, c: Command<'_>) {
        c.encode(&mut self.out);
        self.unread += 1;
    }

    /// Sends what is queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.write.write_all(&self.out).await;
        self.out.clear();
        r.map_err(ClientError::Write)
    }

    /// The next reply, within `wait` plus the usual allowance.
    pub async fn recv(&mut self, wait: Duration) -> Result<Reply, ClientError> {
        let limit = wait + REPLY_TIMEOUT;
        let next = tokio::time::timeout(limit, self.read.next())
            .await
            .map_err(|_| ClientError::Timeout(limit))?;
        self.unread = self.unread.saturating_sub(1);
        match next {
            Some(r) => Ok(r?),
            None => Err(ClientError::Closed),
        }
    }

    /// Sends `c` and reads its reply (after any replies still unread).
    pub async fn call(&mut self, c: Command<'_>) -> Result<Reply, ClientError> {
        let wait = match c {
            Command::ReserveWithTimeout(s) => Duration::from_secs(u64::from(s)),
            _ => Duration::ZERO,
        };
        self.queue(c);
        self.flush().await?;
        while self.unread > 1 {
            self.recv(Duration::ZERO).await?;
        }
        self.recv(wait).await
    }

    /// Sends `c` and checks that its reply starts with `word` (`WATCHING`, `USING`...).
    pub async fn expect(
        &mut self,
        c: Command<'_>,
        what: &'static str,
        word: &str,
    ) -> Result<Reply, ClientError> {
        let reply = self.call(c).await?;
        match &reply {
            Reply::Word(w) if w.split(' ').next() == Some(word) => Ok(reply),
            other => Err(ClientError::Unexpected {
                what,
                got: format!("{other:?}"),
            }),
        }
    }
}
