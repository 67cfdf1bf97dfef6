//! Test fixtures: a fresh database and key prefix per test, polling helpers, child processes.

#![allow(dead_code)]

pub mod cluster;
pub mod pipeline;
pub mod schema;

use std::{
    future::Future,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use souk::{app::App, config::Config};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// One test's world: its prefix, its database, and an [`App`] on both.
pub struct TestEnv {
    pub prefix: String,
    pub db_name: String,
    pub db_url: String,
    pub redis_url: String,
    /// Settings that place the world (a cluster's `SOUK_REDIS__*`, a pool's migration URL),
    /// passed on to child processes.
    pub world_vars: Vec<(String, String)>,
    pub app: App,
}

/// Which Redis a test runs on: the shared single server, or the run's Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Redis,
    Cluster,
}

impl On {
    /// A fresh environment on this Redis with extra settings.
    pub async fn env(self, extra: &[(&str, &str)]) -> TestEnv {
        match self {
            On::Redis => TestEnv::with(extra).await,
            On::Cluster => TestEnv::on_cluster(extra).await,
        }
    }

    /// The settings that select this Redis, for fixtures that build their own environment.
    pub fn settings(self) -> Vec<(String, String)> {
        match self {
            On::Redis => Vec::new(),
            On::Cluster => cluster::settings(cluster::shared()),
        }
    }
}

/// Settings that make the queue's timings test-sized (overridable per test).
pub fn fast_settings() -> Vec<(String, String)> {
    [
        ("SOUK_QUEUE__CLAIM_IDLE_MS", "1500"),
        ("SOUK_QUEUE__RETRY_BASE_MS", "100"),
        ("SOUK_QUEUE__RETRY_CAP_MS", "1000"),
        ("SOUK_QUEUE__BLOCK_MS", "200"),
        ("SOUK_WORKER__SHUTDOWN_TIMEOUT_MS", "20000"),
        ("SOUK_OPS__LISTEN", ""),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with(&[]).await
    }

    /// A fresh environment with extra `SOUK_*` settings (a `REDIS_URL` among them picks the
    /// Redis, as [`cluster::settings`] does).
    pub async fn with(extra: &[(&str, &str)]) -> Self {
        let url = extra
            .iter()
            .find(|(k, _)| *k == "REDIS_URL")
            .map_or(REDIS_URL, |(_, v)| *v)
            .to_owned();
        let rest: Vec<(&str, &str)> = extra.iter().copied().filter(|(k, _)| *k != "REDIS_URL").collect();
        Self::with_redis(&url, &rest).await
    }

    /// A fresh environment on the run's shared Redis Cluster, with extra settings.
    pub async fn on_cluster(extra: &[(&str, &str)]) -> Self {
        let mut vars = cluster::settings(cluster::shared());
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::with(&refs).await
    }

    pub async fn with_redis(redis_url: &str, extra: &[(&str, &str)]) -> Self {
        let id = format!("{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff);
        let prefix = format!("t-{id}");
        let db_name = format!("souk_t_{id}");
        let direct_url = format!("{PG_ADMIN_URL}/{db_name}");
        // `TEST_PG_POOL` = host:port of a PgBouncer in transaction mode in front of the shared
        // PostgreSQL: the world's pool goes through it without the statement cache, and
        // migrations go to PostgreSQL directly.
        let pool_at = extra.iter().find(|(k, _)| *k == "TEST_PG_POOL").map(|(_, v)| *v);
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .copied()
            .filter(|(k, _)| *k != "TEST_PG_POOL")
            .collect();
        let db_url = match pool_at {
            Some(at) => format!("postgres://postgres@{at}/{db_name}?statement-cache-capacity=0"),
            None => direct_url.clone(),
        };
        let mut vars = fast_settings();
        if pool_at.is_some() {
            vars.push(("SOUK_DATABASE__MIGRATE_URL".into(), direct_url.clone()));
            vars.push(("SOUK_DATABASE__TRANSACTION_POOLER".into(), "true".into()));
        }
        vars.push(("SOUK_REDIS__KEY_PREFIX".into(), prefix.clone()));
        vars.push(("DATABASE_URL".into(), db_url.clone()));
        vars.push(("REDIS_URL".into(), redis_url.to_owned()));
        for (k, v) in &extra {
            vars.push((k.to_string(), v.to_string()));
        }
        let config = Config::from_layers(None, &vars).expect("test config");
        let app = App::connect(config).await.expect("connect test app");
        let mut world_vars: Vec<(String, String)> = extra
            .iter()
            .filter(|(k, _)| k.starts_with("SOUK_REDIS__") && *k != "SOUK_REDIS__KEY_PREFIX")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if pool_at.is_some() {
            world_vars.push(("SOUK_DATABASE__MIGRATE_URL".into(), direct_url.clone()));
            world_vars.push(("SOUK_DATABASE__TRANSACTION_POOLER".into(), "true".into()));
        }
        Self {
            prefix,
            db_name,
            db_url,
            redis_url: redis_url.to_owned(),
            world_vars,
            app,
        }
    }

    /// The environment variables a child `souk` process needs to join this test's world.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let mut vars = fast_settings();
        vars.push(("SOUK_REDIS__KEY_PREFIX".into(), self.prefix.clone()));
        vars.push(("DATABASE_URL".into(), self.db_url.clone()));
        vars.push(("REDIS_URL".into(), self.redis_url.clone()));
        vars.extend(self.world_vars.iter().cloned());
        vars.push(("SOUK_CONFIG_DIR".into(), "/nonexistent".into()));
        vars.push(("SOUK_LOG__LEVEL".into(), "info".into()));
        vars
    }

    /// Runs `souk ARGS` to its end in this test's world: whether it succeeded, and what it
    /// printed (stdout, then stderr).
    pub fn run_souk(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_souk"));
        cmd.args(args).env_remove("RUST_LOG");
        for (k, v) in self.child_env() {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run souk");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Starts `souk ARGS` as a child process in this test's world.
    pub fn spawn_souk(&self, args: &[&str], extra: &[(&str, &str)]) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_souk"));
        cmd.args(args).env_remove("RUST_LOG");
        for (k, v) in self.child_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        // Logs go to a file (a pipe nobody reads would fill up and stall the child).
        let dir = std::env::temp_dir().join("souk-test-logs");
        let _ = std::fs::create_dir_all(&dir);
        let log = dir.join(format!("{}-{}.log", self.prefix, fastrand::u32(..)));
        let stderr = std::fs::File::create(&log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        cmd.stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn souk")
    }

    pub fn redis(&self) -> souk::queue::conn::Conn {
        self.app.conn.clone()
    }

    /// Drops this test's keys and database.
    pub async fn cleanup(self) {
        if self.app.redis.is_cluster() {
            cluster::RedisCluster::delete_prefix(&self.redis_url, &self.prefix);
        }
        let mut conn = self.app.conn.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() && !self.app.redis.is_cluster() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
        self.app.pool.close().await;
        if let Ok(admin) = sqlx::PgPool::connect(&format!("{PG_ADMIN_URL}/postgres")).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.db_name
            ))
            .execute(&admin)
            .await;
            admin.close().await;
        }
    }
}

/// Polls `check` every 20 ms until it returns true, panicking with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills a child on drop, so a failing test leaves no stray worker.
pub struct Reaper(pub Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Serves `app`'s merchant API on a free loopback port, with the peer address the rate limit
/// keys on; returns its base URL.
pub async fn serve_merchant_api(app: &App) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = souk::merchant_api::router(app.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    format!("http://{addr}")
}

/// Whether a test tool .ci/run installs is here (`probe` exits 0). Without it a test skips,
/// except under `CI=true`, where a missing tool fails the test.
pub fn have_tool(probe: &[&str], install: &str) -> bool {
    let found = Command::new(probe[0]).args(&probe[1..]).output();
    if found.is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing: .ci/run installs it ({install})",
        probe.join(" ")
    );
    eprintln!("SKIPPED: {} failed; {install}", probe.join(" "));
    false
}

/// An OpenAPI document lists exactly `routes` (method, path), each once.
pub fn check_openapi_routes(name: &str, doc: &str, routes: &[(&str, &str)]) {
    let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in routes {
        assert!(
            doc["paths"][path][method.to_lowercase()].is_object(),
            "{method} {path} missing from {name}"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, routes.len(), "{name} has routes the code does not");
}
