//! State file, percentiles, /proc readings.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The fields of the state file written by `../shared/bench/setup.js` that the tool uses.
#[derive(Debug, Deserialize)]
pub(crate) struct State {
    pub(crate) workspace_id: String,
    pub(crate) users: Vec<User>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct User {
    pub(crate) access_token: String,
}

impl State {
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let state: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a state file written by setup.js", path.display()))?;
        if state.workspace_id.is_empty() || state.users.is_empty() {
            bail!("{}: no workspace or no users", path.display());
        }
        Ok(state)
    }
}

/// Nearest-rank percentile of a sorted slice (as in the Node kit).
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(n - 1)])
}

/// Microseconds as milliseconds with 3 decimals.
pub(crate) fn us_to_ms(us: Option<u32>) -> Option<f64> {
    us.map(|u| f64::from(u) / 1000.0)
}

pub(crate) fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// Parent pid from the text of `/proc/PID/stat` (the field after the `(comm)`).
fn ppid_of_stat(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// VmRSS (kB) of `root` and all its descendants. `None` if `root` is gone.
pub(crate) fn tree_rss_kb(root: u32) -> Option<u64> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for ent in entries.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .as_deref()
                .and_then(ppid_of_stat)
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let root_kb = vm_rss_kb(&std::fs::read_to_string(format!("/proc/{root}/status")).ok()?)?;
    let mut total = root_kb;
    let mut stack: Vec<u32> = children.get(&root).cloned().unwrap_or_default();
    // A pid tree is finite and acyclic; the bound only guards against /proc races.
    let mut budget = 100_000usize;
    while let Some(pid) = stack.pop() {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            break;
        }
        if let Some(kb) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .as_deref()
            .and_then(vm_rss_kb)
        {
            total += kb;
        }
        if let Some(c) = children.get(&pid) {
            stack.extend(c);
        }
    }
    Some(total)
}

/// CPU seconds (user + system) this process has used so far.
pub(crate) fn self_cpu_seconds() -> Option<f64> {
    cpu_seconds("self")
}

/// CPU seconds (user + system) process `pid` (a number, or `self`) has used so far.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After "(comm)": state is field 3 of the full line, utime 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// The soft limit on open files of this process, if readable.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
        assert_eq!(percentile(&[7u32], 99.0), Some(7));
    }

    #[test]
    fn parses_proc_files() {
        assert_eq!(ppid_of_stat("123 (a b) c) S 45 123 123 0"), Some(45));
        assert_eq!(vm_rss_kb("Name:\tx\nVmRSS:\t   1234 kB\n"), Some(1234));
        assert!(tree_rss_kb(std::process::id()).is_some_and(|kb| kb > 0));
        assert!(self_cpu_seconds().is_some());
    }
}
