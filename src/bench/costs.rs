//! What an order costs each tier, for the capacity model in docs/scaling.md.
//!
//! A snapshot before and after a phase run below capacity, divided by its orders: the CPU
//! of this process (the workers, plus the sandbox's HTTP servers and the bench's own pushes),
//! of PostgreSQL's processes and of Redis, the commands Redis ran, the write-ahead log
//! written, and the HTTP requests the sandbox answered (payment calls and webhook
//! deliveries). PostgreSQL's CPU is read from /proc, so it counts only where the server runs
//! on this machine; Redis's from `INFO` (the whole server: measure on a quiet one).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::{app::App, sandbox::Sandbox};

/// One reading of every counter (each `None` where this machine cannot say).
#[derive(Debug, Clone, Default)]
pub struct Costs {
    machine_ms: Option<f64>,
    worker_ms: Option<f64>,
    postgres_ms: Option<f64>,
    redis_ms: Option<f64>,
    redis_commands: Option<f64>,
    wal: Option<String>,
    http_requests: f64,
}

/// CPU (user + system) of the processes whose command name `keep` accepts, in ms, from
/// /proc/<pid>/stat (fields 14 and 15, in USER_HZ: 100 a second on Linux).
fn processes_cpu_ms(keep: impl Fn(&str) -> bool) -> Option<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if let Some((comm, ms)) = stat_cpu_ms(&format!("/proc/{pid}/stat")) {
            if keep(&comm) {
                total += ms;
            }
        }
    }
    Some(total)
}

fn stat_cpu_ms(path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat[open + 1..close].to_owned();
    // After the command name: state is field 3, utime 14 and stime 15.
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) * 10.0))
}

pub(super) fn info_field(info: &str, name: &str) -> Option<f64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

fn http_requests(sandbox: &Sandbox, merchants: &[String]) -> f64 {
    let payments: u64 = sandbox.counters().values().sum();
    let webhooks: u64 = merchants
        .iter()
        .map(|m| sandbox.endpoint_report(m).received)
        .sum();
    (payments + webhooks) as f64
}

impl Costs {
    pub async fn read(app: &App, sandbox: &Sandbox, merchants: &[String]) -> Self {
        let mut conn = app.conn.clone();
        let info: Option<String> = redis::cmd("INFO")
            .arg("everything")
            .query_async(&mut conn)
            .await
            .ok();
        let redis_ms = info
            .as_deref()
            .and_then(|i| Some((info_field(i, "used_cpu_user")? + info_field(i, "used_cpu_sys")?) * 1000.0));
        Self {
            machine_ms: super::machine_busy_ms(),
            worker_ms: stat_cpu_ms("/proc/self/stat").map(|(_, ms)| ms),
            postgres_ms: processes_cpu_ms(|c| c.starts_with("postgres")),
            redis_ms,
            redis_commands: info
                .as_deref()
                .and_then(|i| info_field(i, "total_commands_processed")),
            wal: super::wal_position(&app.pool).await,
            http_requests: http_requests(sandbox, merchants),
        }
    }

    /// What happened between `self` and `later`, per order of the `orders` in between.
    pub async fn per_order(&self, later: &Costs, orders: usize, app: &App) -> Value {
        let n = orders.max(1) as f64;
        let per = |a: Option<f64>, b: Option<f64>, digits: i32| {
            let scale = 10f64.powi(digits);
            a.zip(b).map(|(a, b)| ((b - a) / n * scale).round() / scale)
        };
        let wal = match &self.wal {
            Some(at) => super::wal_bytes_since(&app.pool, at)
                .await
                .map(|b| (b / n).round()),
            None => None,
        };
        let mut m = BTreeMap::new();
        m.insert("machine_cpu_ms", json!(per(self.machine_ms, later.machine_ms, 2)));
        m.insert(
            "worker_process_cpu_ms",
            json!(per(self.worker_ms, later.worker_ms, 2)),
        );
        m.insert(
            "postgres_cpu_ms",
            json!(per(self.postgres_ms, later.postgres_ms, 2)),
        );
        m.insert("redis_cpu_ms", json!(per(self.redis_ms, later.redis_ms, 3)));
        m.insert(
            "redis_commands",
            json!(per(self.redis_commands, later.redis_commands, 1)),
        );
        m.insert("wal_bytes", json!(wal));
        m.insert(
            "http_requests",
            json!(per(Some(self.http_requests), Some(later.http_requests), 2)),
        );
        json!(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_stat_line_and_info_fields_parse() {
        let (comm, ms) = stat_cpu_ms("/proc/self/stat").expect("/proc/self/stat");
        assert!(!comm.is_empty() && ms >= 0.0);
        let info = "# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.25\r\n";
        assert_eq!(info_field(info, "used_cpu_user"), Some(2.25));
        assert_eq!(info_field(info, "used_cpu_sys"), Some(1.5));
        assert_eq!(info_field(info, "missing"), None);
    }
}
