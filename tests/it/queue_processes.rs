//! The queue across real `souk` processes: kill -9, SIGTERM, cron across a fleet, a Redis
//! restart, the command line and the ops port.

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    time::Duration,
};

use souk::{
    jobs::record_sample::{SampleArgs, QUEUE},
    queue::{dead, stats},
    store::samples,
};

use crate::support::{eventually, free_port, On, Reaper, TestEnv};

fn sample(label: &str, work_ms: u64) -> SampleArgs {
    SampleArgs {
        label: label.to_owned(),
        work_ms,
        fail_first: 0,
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn starts(env: &TestEnv, label: &str) -> Vec<(String, i64)> {
    samples::starts_by_job(&env.app.pool, label).await.unwrap()
}

async fn completions(env: &TestEnv, label: &str) -> i64 {
    samples::completion_count(&env.app.pool, label).await.unwrap()
}

/// Entries pending in the group; `u64::MAX` while Redis cannot answer (the test's own
/// connection reconnects on the call after a restart).
async fn pending(env: &TestEnv) -> u64 {
    stats::queue_stats(&mut env.redis(), &env.app.producer.keys(QUEUE))
        .await
        .map(|s| s.pending)
        .unwrap_or(u64::MAX)
}

#[tokio::test]
async fn a_worker_killed_with_sigkill_mid_job_is_finished_by_another_process_exactly_once() {
    a_worker_killed_with_sigkill_mid_job_is_finished_by_another_process_exactly_once_on(On::Redis).await
}

#[tokio::test]
async fn cluster_a_worker_killed_with_sigkill_mid_job_is_finished_by_another_process_exactly_once() {
    a_worker_killed_with_sigkill_mid_job_is_finished_by_another_process_exactly_once_on(On::Cluster).await
}

async fn a_worker_killed_with_sigkill_mid_job_is_finished_by_another_process_exactly_once_on(on: On) {
    let env = on.env(&[]).await;
    let run = ["run", "--queues", QUEUE];
    let mut fleet = Reaper(vec![env.spawn_souk(&run, &[])]);
    env.app
        .producer
        .push(QUEUE, &sample("killed", 3_000))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the first process to start the job",
        || {
            let env = &env;
            async move { starts(env, "killed").await.len() == 1 }
        },
    )
    .await;
    signal(&fleet.0[0], "KILL");
    let status = wait_exit(&mut fleet.0[0], Duration::from_secs(5)).await;
    assert!(!status.success());
    assert_eq!(
        completions(&env, "killed").await,
        0,
        "killed mid-job: nothing completed yet"
    );

    fleet.0.push(env.spawn_souk(&run, &[]));
    // claim_idle_ms is 1.5 s here; the job takes 3 s; allow for process start.
    eventually(
        Duration::from_secs(20),
        "the second process to finish the job",
        || {
            let env = &env;
            async move { completions(env, "killed").await == 1 }
        },
    )
    .await;
    let s = starts(&env, "killed").await;
    assert_eq!(s.len(), 1, "one job");
    assert_eq!(
        s[0].1, 2,
        "started by the killed process and again by the survivor"
    );
    eventually(Duration::from_secs(5), "nothing pending", || {
        let env = &env;
        async move { pending(env).await == 0 }
    })
    .await;
    assert_eq!(
        completions(&env, "killed").await,
        1,
        "exactly one completion recorded"
    );
    drop(fleet);
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_lets_running_jobs_finish_and_exits_zero_with_nothing_pending() {
    let env = TestEnv::new().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut fleet = Reaper(vec![env.spawn_souk(
        &["run", "--queues", QUEUE],
        &[
            ("SOUK_OPS__LISTEN", listen.as_str()),
            ("SOUK_QUEUE__CONCURRENCY", "4"),
            ("SOUK_QUEUE__BATCH_SIZE", "4"),
        ],
    )]);
    let jobs: Vec<SampleArgs> = (0..12).map(|_| sample("graceful", 1_500)).collect();
    env.app.producer.push_many(QUEUE, &jobs).await.unwrap();
    eventually(Duration::from_secs(20), "four jobs running", || {
        let env = &env;
        async move { starts(env, "graceful").await.len() >= 4 }
    })
    .await;

    let base = format!("http://{listen}");
    assert_eq!(http_get(&format!("{base}/healthz")).await.0, 200);
    let (code, body) = http_get(&format!("{base}/readyz")).await;
    assert_eq!((code, body.as_str()), (200, "redis: ok\npostgres: ok\n"));
    let (code, metrics) = http_get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!("souk_jobs_in_flight{{queue=\"{QUEUE}\"}}")),
        "{metrics}"
    );

    signal(&fleet.0[0], "TERM");
    let status = wait_exit(&mut fleet.0[0], Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");
    let started = starts(&env, "graceful").await.len() as i64;
    assert_eq!(
        completions(&env, "graceful").await,
        started,
        "every started job finished"
    );
    let s = stats::queue_stats(&mut env.redis(), &env.app.producer.keys(QUEUE))
        .await
        .unwrap();
    assert_eq!(s.pending, 0);
    assert_eq!(
        s.length as i64,
        12 - started,
        "the rest wait on the stream for the next worker"
    );
    drop(fleet);
    env.cleanup().await;
}

async fn http_get(url: &str) -> (u16, String) {
    // A tiny HTTP/1.0 client keeps the test free of another HTTP stack.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect ops port");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn three_processes_running_one_cron_job_fire_once_per_tick() {
    three_processes_running_one_cron_job_fire_once_per_tick_on(On::Redis).await
}

#[tokio::test]
async fn cluster_three_processes_running_one_cron_job_fire_once_per_tick() {
    three_processes_running_one_cron_job_fire_once_per_tick_on(On::Cluster).await
}

async fn three_processes_running_one_cron_job_fire_once_per_tick_on(on: On) {
    let env = on.env(&[]).await;
    let cron = [
        ("SOUK_CRON__JOBS__tick__SCHEDULE", "* * * * * *"),
        ("SOUK_CRON__JOBS__tick__QUEUE", QUEUE),
        ("SOUK_CRON__JOBS__tick__PAYLOAD", "{\"label\": \"cron\"}"),
    ];
    let run = ["run", "--queues", QUEUE];
    let mut fleet = Reaper((0..3).map(|_| env.spawn_souk(&run, &cron)).collect());
    eventually(Duration::from_secs(30), "five ticks fired", || {
        let env = &env;
        async move { starts(env, "cron").await.len() >= 5 }
    })
    .await;
    for c in &fleet.0 {
        signal(c, "TERM");
    }
    for c in &mut fleet.0 {
        assert!(wait_exit(c, Duration::from_secs(20)).await.success());
    }
    let per_tick = starts(&env, "cron").await;
    assert!(per_tick.len() >= 5);
    for (job_id, runs) in &per_tick {
        assert!(job_id.starts_with("cron:tick:"), "{job_id}");
        assert_eq!(*runs, 1, "tick {job_id} ran {runs} times");
    }
    drop(fleet);
    env.cleanup().await;
}

#[tokio::test]
async fn a_tick_missed_while_no_process_ran_fires_once_at_start() {
    let env = TestEnv::new().await;
    let cron = [
        ("SOUK_CRON__JOBS__hourly__SCHEDULE", "0 0 * * * *"),
        ("SOUK_CRON__JOBS__hourly__QUEUE", QUEUE),
        ("SOUK_CRON__JOBS__hourly__PAYLOAD", "{\"label\": \"missed\"}"),
    ];
    // The last fire was two hours ago: at least one hourly tick was missed since.
    let now = chrono::Utc::now().timestamp_millis();
    let two_hours_ago = (now - 7_200_000) / 3_600_000 * 3_600_000;
    let keys = env.app.producer.keys(QUEUE);
    let _: () = redis::cmd("SET")
        .arg(keys.cron_last("hourly"))
        .arg(two_hours_ago)
        .query_async(&mut env.redis())
        .await
        .unwrap();
    let run = ["run", "--queues", QUEUE];
    let mut fleet = Reaper((0..3).map(|_| env.spawn_souk(&run, &cron)).collect());
    eventually(Duration::from_secs(30), "the missed tick", || {
        let env = &env;
        async move { completions(env, "missed").await == 1 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // a window for a second firing, which must not come
    let s = starts(&env, "missed").await;
    let latest_tick = now / 3_600_000 * 3_600_000;
    assert_eq!(
        s,
        vec![(format!("cron:hourly:{latest_tick}"), 1)],
        "only the latest missed tick, once"
    );
    for c in &fleet.0 {
        signal(c, "TERM");
    }
    for c in &mut fleet.0 {
        let _ = wait_exit(c, Duration::from_secs(20)).await;
    }
    drop(fleet);
    env.cleanup().await;
}

/// A Redis of this test's own (append-only file on), so restarting it disturbs no other test.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16, dir: &std::path::Path) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH")
    }

    async fn new() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("souk-redis-{port}-{}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Some(Self::start(port, &dir));
        let r = Self { port, dir, child };
        r.wait_up().await;
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_up(&self) {
        let url = self.url();
        eventually(Duration::from_secs(10), "redis to answer", || {
            let url = url.clone();
            async move {
                let Ok(c) = redis::Client::open(url.as_str()) else {
                    return false;
                };
                let Ok(mut c) = c.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
            }
        })
        .await;
    }

    async fn restart(&mut self, down_for: Duration) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "TERM"); // redis-server flushes its append-only file on SIGTERM
            let _ = wait_exit(&mut c, Duration::from_secs(10)).await;
        }
        tokio::time::sleep(down_for).await;
        self.child = Some(Self::start(self.port, &self.dir));
        self.wait_up().await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn workers_ride_out_a_redis_restart_and_every_job_completes() {
    let mut redis = OwnRedis::new().await;
    let env = TestEnv::with_redis(&redis.url(), &[]).await;
    let mut fleet =
        Reaper(vec![env.spawn_souk(
            &["run", "--queues", QUEUE],
            &[("SOUK_QUEUE__CONCURRENCY", "8")],
        )]);
    let jobs: Vec<SampleArgs> = (0..400).map(|_| sample("restart", 40)).collect();
    env.app.producer.push_many(QUEUE, &jobs).await.unwrap();
    eventually(Duration::from_secs(20), "some jobs done", || {
        let env = &env;
        async move { completions(env, "restart").await >= 50 }
    })
    .await;
    redis.restart(Duration::from_secs(1)).await;
    let during = completions(&env, "restart").await;
    assert!(during < 400, "the restart happened mid-run ({during} done)");
    eventually(
        Duration::from_secs(60),
        "all 400 jobs completed after the restart",
        || {
            let env = &env;
            async move { completions(env, "restart").await == 400 }
        },
    )
    .await;
    eventually(Duration::from_secs(10), "nothing pending", || {
        let env = &env;
        async move { pending(env).await == 0 }
    })
    .await;
    assert!(
        fleet.0[0].try_wait().unwrap().is_none(),
        "the worker process is still running"
    );
    signal(&fleet.0[0], "TERM");
    assert!(wait_exit(&mut fleet.0[0], Duration::from_secs(20))
        .await
        .success());
    drop(fleet);
    env.cleanup().await;
}

fn souk_cli(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_souk"));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env.child_env() {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run souk");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_command_line_lists_retries_and_purges_dead_letters_and_shows_queues() {
    let env = TestEnv::new().await;
    let fleet = Reaper(vec![env.spawn_souk(&["run", "--queues", QUEUE], &[])]);
    let (code, _, err) = souk_cli(&env, &["push", QUEUE, "{\"label\": 7}"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = souk_cli(&env, &["push", QUEUE, "not json"]);
    assert_ne!(
        code, 0,
        "a payload that is not JSON is refused before it reaches the queue"
    );
    let keys = env.app.producer.keys(QUEUE);
    eventually(Duration::from_secs(20), "the dead letter", || {
        let (env, keys) = (&env, &keys);
        async move { dead::list(&mut env.redis(), keys, 10).await.unwrap().len() == 1 }
    })
    .await;
    let (code, out, err) = souk_cli(&env, &["dead", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["error"].as_str().unwrap().contains("does not decode"));
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let (code, out, _) = souk_cli(&env, &["dead", "show", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("\"label\": 7") || out.contains("{\\\"label\\\": 7}"),
        "{out}"
    );
    let (code, _, err) = souk_cli(&env, &["dead", "retry"]);
    assert_ne!(code, 0);
    assert!(err.contains("say which dead letters"), "{err}");
    let (code, out, _) = souk_cli(&env, &["dead", "retry", "--all"]);
    assert_eq!((code, out.trim()), (0, "1 dead letters put back on their queue"));
    // Still poison: it comes back as a dead letter; purge it for good.
    eventually(Duration::from_secs(20), "the dead letter again", || {
        let (env, keys) = (&env, &keys);
        async move { dead::list(&mut env.redis(), keys, 10).await.unwrap().len() == 1 }
    })
    .await;
    let (code, out, _) = souk_cli(&env, &["dead", "purge", "--queue", QUEUE]);
    assert_eq!((code, out.trim()), (0, "1 dead letters deleted"));
    let (code, out, _) = souk_cli(&env, &["queues", "--json"]);
    assert_eq!(code, 0);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    // The worker's cron also fires scheduled jobs on start (catch-up), so other queues appear.
    let q: Vec<&serde_json::Value> = all.iter().filter(|q| q["queue"] == QUEUE).collect();
    assert_eq!(q.len(), 1, "{all:?}");
    assert_eq!(q[0]["dead"], 0);
    assert_eq!(
        q[0]["consumers"].as_array().unwrap().len(),
        1,
        "the running worker is listed"
    );
    drop(fleet);
    env.cleanup().await;
}

#[tokio::test]
async fn invalid_configuration_stops_start_up_with_a_message_naming_the_key() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_souk"))
        .args(["run"])
        .env("SOUK_CONFIG_DIR", "/nonexistent")
        .env("SOUK_QUEUE__MAX_ATTEMPTS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10)).await;
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("queue.max_attempts"), "{err}");
}
