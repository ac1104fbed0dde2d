//! `pushgate bench --source beanstalkd`: a private beanstalkd whose tubes (one per app, named
//! after its topic) are filled with propeller-apns' jobs before the gateway starts; the gateway
//! consumes them, and the bench times the tubes' draining (every job committed and deleted)
//! and the deliveries.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gateway::beanstalk::{Command, Conn, Reply, stat};

/// Puts `n` jobs, spread over the apps' tubes in turn, each a propeller job with its own
/// token; a thousand commands a write.
pub(super) async fn fill(server: &str, apps: u32, n: u64, body: &str) -> anyhow::Result<()> {
    let mut conn = Conn::connect(server).await?;
    let mut done = 0;
    for app in 0..apps {
        let tube = format!("com.example.bench{app}");
        conn.expect(Command::Use(&tube), "use", "USING").await?;
        let mine: Vec<u64> = (0..n)
            .filter(|i| i % u64::from(apps) == u64::from(app))
            .collect();
        for chunk in mine.chunks(1_000) {
            let jobs: Vec<String> = chunk
                .iter()
                .map(|i| {
                    serde_json::json!({"token": format!("{i:064x}"), "title": "Hello", "body": body, "badge": 1})
                        .to_string()
                })
                .collect();
            for j in &jobs {
                conn.queue(Command::Put {
                    pri: 1 << 31,
                    delay: 0,
                    ttr: 120,
                    body: j.as_bytes(),
                });
            }
            conn.flush().await?;
            for _ in &jobs {
                match conn.recv(Duration::ZERO).await? {
                    Reply::Inserted(_) => done += 1,
                    other => bail!("beanstalkd answered {other:?} to a put"),
                }
            }
        }
    }
    if done != n {
        bail!("put {done} jobs of {n}");
    }
    Ok(())
}

/// Waits until every tube is empty (no job ready, reserved or delayed), within `limit`.
pub(super) async fn drained(server: &str, apps: u32, limit: Duration) -> anyhow::Result<()> {
    let mut conn = Conn::connect(server).await?;
    let deadline = Instant::now() + limit;
    loop {
        let mut left = 0;
        for app in 0..apps {
            let tube = format!("com.example.bench{app}");
            match conn.call(Command::StatsTube(&tube)).await? {
                Reply::Ok(yaml) => {
                    for key in [
                        "current-jobs-ready",
                        "current-jobs-reserved",
                        "current-jobs-delayed",
                    ] {
                        left += stat(&yaml, key)
                            .and_then(|v| v.parse::<u64>().ok())
                            .context("stats-tube without its counts")?;
                    }
                }
                // The tube is gone: nothing in it, and nobody watching it.
                r if r.is("NOT_FOUND") => {}
                other => bail!("beanstalkd answered {other:?} to stats-tube"),
            }
        }
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} jobs still in the tubes after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
