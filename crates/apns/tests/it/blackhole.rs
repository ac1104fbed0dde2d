//! A TCP proxy in front of the simulator that can make a connection silent: it stops
//! forwarding in both directions but goes on reading, so the kernel keeps acknowledging every
//! byte — a network that black-holes a connection without resetting it, which TCP itself never
//! notices while the connection is busy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Shared {
    /// One flag per connection accepted, in order: set, it forwards nothing more.
    silent: Mutex<Vec<Arc<AtomicBool>>>,
    /// Every connection from now on goes silent this long after it was accepted.
    silence_after: Mutex<Option<Duration>>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let silent = Arc::new(AtomicBool::new(false));
                s.silent.lock().unwrap().push(Arc::clone(&silent));
                if let Some(after) = *s.silence_after.lock().unwrap() {
                    let silent = Arc::clone(&silent);
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        silent.store(true, Ordering::SeqCst);
                    });
                }
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, Arc::clone(&silent)));
                tokio::spawn(pump(sr, cw, silent));
            }
        });
        Proxy { addr, shared, task }
    }

    /// The simulator's endpoint URL with this proxy's port.
    pub fn endpoint(&self, sim: &apns_mock::RunningMock) -> String {
        sim.endpoint().replace(
            &format!(":{}", sim.addr().port()),
            &format!(":{}", self.addr.port()),
        )
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.silent.lock().unwrap().len()
    }

    /// Connection `i` (in accept order) forwards nothing more, either way.
    pub fn silence(&self, i: usize) {
        self.shared.silent.lock().unwrap()[i].store(true, Ordering::SeqCst);
    }

    /// Every connection accepted from now on goes silent `after` it was accepted.
    pub fn silence_every_connection_after(&self, after: Duration) {
        *self.shared.silence_after.lock().unwrap() = Some(after);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either closes; while `silent`, reads and drops.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silent.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
