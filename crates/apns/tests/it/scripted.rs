//! A scripted HTTP/2 server that writes its frames itself, for the one fault h2's server API
//! cannot produce exactly: a GOAWAY whose last-stream-id lies *below* streams it has already
//! received. (`abrupt_shutdown` puts the last stream it read there, so streams above it exist
//! only in transit and a test built on it is a race.)
//!
//! Its first connection waits until it holds `requests` complete requests, answers the lowest
//! `answered` of them with 200, sends GOAWAY with the id of the `last_processed`-th as
//! last-stream-id and the given code, and closes. Every later connection answers each request
//! with 200 at once. It counts the complete requests each connection received.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
/// `:status: 200`, HPACK static table entry 8.
const STATUS_200: u8 = 0x88;

#[derive(Debug, Clone, Copy)]
pub struct Script {
    /// Complete requests the first connection waits for.
    pub requests: usize,
    /// How many of the lowest it answers before the GOAWAY.
    pub answered: usize,
    /// The GOAWAY's last-stream-id: the id of this many-th lowest stream (0: none).
    pub last_processed: usize,
    pub code: u32,
}

pub struct Scripted {
    pub addr: std::net::SocketAddr,
    pub ca_pem: String,
    /// Complete requests received, per connection in the order they were accepted.
    pub requests: Arc<Mutex<Vec<usize>>>,
}

impl Scripted {
    pub async fn start(script: Script) -> Scripted {
        let (tls, ca_pem) = apns_mock::generated_server_tls().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::clone(&requests);
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((tcp, _)) = listener.accept().await {
                let index = {
                    let mut c = counts.lock().unwrap();
                    c.push(0);
                    c.len() - 1
                };
                let script = first.then_some(script);
                first = false;
                let (acceptor, counts) = (acceptor.clone(), Arc::clone(&counts));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    connection(tls, script, &counts, index).await;
                });
            }
        });
        Scripted {
            addr,
            ca_pem,
            requests,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<usize> {
        self.requests.lock().unwrap().clone()
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ok(stream: u32) -> Vec<u8> {
    frame(HEADERS, END_STREAM | END_HEADERS, stream, &[STATUS_200])
}

async fn connection<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    mut io: S,
    script: Option<Script>,
    counts: &Mutex<Vec<usize>>,
    index: usize,
) {
    let mut preface = [0u8; 24];
    if io.read_exact(&mut preface).await.is_err() {
        return;
    }
    let _ = io.write_all(&frame(SETTINGS, 0, 0, &[])).await;
    let mut complete = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if io.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if io.read_exact(&mut payload).await.is_err() {
            return;
        }
        let reply = match kind {
            SETTINGS if flags & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
            PING if flags & ACK == 0 => frame(PING, ACK, 0, &payload),
            HEADERS | DATA if flags & END_STREAM != 0 => {
                counts.lock().unwrap()[index] += 1;
                match script {
                    None => ok(stream),
                    Some(_) => {
                        complete.push(stream);
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        if !reply.is_empty() && io.write_all(&reply).await.is_err() {
            return;
        }
        if let Some(s) = script
            && complete.len() == s.requests
        {
            complete.sort_unstable();
            let mut out = Vec::new();
            for &id in &complete[..s.answered] {
                out.extend(ok(id));
            }
            let last = s.last_processed.checked_sub(1).map_or(0, |i| complete[i]);
            let mut goaway = last.to_be_bytes().to_vec();
            goaway.extend_from_slice(&s.code.to_be_bytes());
            out.extend(frame(GOAWAY, 0, 0, &goaway));
            let _ = io.write_all(&out).await;
            let _ = io.shutdown().await;
            // Read until the client closes: closing with unread data would make the kernel
            // send RST, which may destroy the frames just written.
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            return;
        }
    }
}
