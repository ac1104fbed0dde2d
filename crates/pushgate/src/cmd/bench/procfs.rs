//! The gateway process's CPU time (whole and by thread) and peak memory, from /proc.

use std::process::Command;

use anyhow::Context;

/// user + system CPU seconds of `pid`, from /proc.
pub(super) fn cpu_seconds(pid: u32, ticks: f64) -> anyhow::Result<f64> {
    stat_cpu(
        &std::fs::read_to_string(format!("/proc/{pid}/stat"))?,
        ticks,
    )
}

/// user + system CPU seconds in the text of a `/proc/.../stat` file.
pub(super) fn stat_cpu(stat: &str, ticks: f64) -> anyhow::Result<f64> {
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f[11].parse()?, f[12].parse()?);
    Ok((utime + stime) / ticks)
}

/// user + system CPU seconds of each live thread of `pid`, by thread id, with its name.
pub(super) fn thread_cpu(
    pid: u32,
    ticks: f64,
) -> anyhow::Result<std::collections::HashMap<u32, (String, f64)>> {
    let mut out = std::collections::HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map_or("?", |(n, _)| n)
            .to_owned();
        out.insert(tid, (name, stat_cpu(&stat, ticks)?));
    }
    Ok(out)
}

/// CPU µs a notification by thread name between two [`thread_cpu`] readings; what threads
/// that ended in between used is the rest of `total`, reported as "other".
pub(super) fn cpu_by_thread(
    before: &std::collections::HashMap<u32, (String, f64)>,
    after: &std::collections::HashMap<u32, (String, f64)>,
    total: f64,
    n: f64,
) -> std::collections::BTreeMap<String, f64> {
    let mut by: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for (tid, (name, cpu)) in after {
        let was = before.get(tid).map_or(0.0, |(_, c)| *c);
        *by.entry(name.clone()).or_default() += cpu - was;
    }
    let counted: f64 = by.values().sum();
    *by.entry("other".to_owned()).or_default() += (total - counted).max(0.0);
    by.into_iter().map(|(k, v)| (k, v * 1e6 / n)).collect()
}

/// Peak resident set of `pid`, in bytes.
pub(super) fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmHWM")?;
    Ok(kb.parse::<u64>()? * 1024)
}

pub(super) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) of `pid` and every process whose parent it is: a PostgreSQL
/// server's postmaster and its backends. A process that ended between two readings takes its
/// time with it, so the pool's connections (which live through a run) are what is counted.
pub(super) fn tree_cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for e in entries.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The fields after the command (which may hold spaces) in parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse::<u32>().ok());
        if p == pid || ppid == Some(pid) {
            total += stat_cpu(&stat, ticks).unwrap_or(0.0);
        }
    }
    total
}
