//! The chaos bench's own Redis (one server, or a Redis Cluster of three masters with a replica
//! each) and PostgreSQL: on free ports of 127.0.0.1 or of the hub's bridge, in a temporary
//! directory removed at the end.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `cmd` as the `postgres` user when this process is root (PostgreSQL refuses root).
fn as_postgres(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// The faulty world's own servers.
pub(super) struct Servers {
    /// The address the servers listen on: 127.0.0.1, or the hub's bridge.
    host: String,
    dir: PathBuf,
    redis_port: u16,
    pg_port: u16,
    redis: Option<Child>,
    pg: Option<Child>,
    /// The cluster's nodes, when the bench runs on a Redis Cluster (`redis` is then unused).
    cluster: Vec<Node>,
}

/// One node of the bench's Redis Cluster: its port and its process while it runs.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// How long a cluster master may be silent before its replica takes over. Long enough that a
/// master busy on a saturated 2-core machine is not failed over by mistake.
const NODE_TIMEOUT_MS: u64 = 2000;

impl Servers {
    /// Starts PostgreSQL and one Redis, or a Redis Cluster of `cluster_masters` masters with
    /// one replica each when that is not 0.
    pub(super) fn start(host: &str, cluster_masters: usize) -> anyhow::Result<Servers> {
        let dir = std::env::temp_dir().join(format!(
            "souk-chaos-{}-{:06x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(dir.join("redis"))?;
        let mut s = Servers {
            host: host.to_owned(),
            redis_port: free_port()?,
            pg_port: free_port()?,
            redis: None,
            pg: None,
            cluster: Vec::new(),
            dir,
        };
        let pg = s.dir.join("pg");
        std::fs::create_dir_all(&pg)?;
        // The data directory belongs to the user PostgreSQL runs as.
        let _ = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&s.dir)
            .status();
        let out = as_postgres("initdb")
            .args(["-D"])
            .arg(&pg)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-instructions",
                "-E",
                "UTF8",
            ])
            .output()
            .context("running initdb (PostgreSQL's server binaries must be on PATH)")?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if host != "127.0.0.1" {
            // initdb trusts loopback only; the other hosts come over the bridge's subnet.
            let hba = pg.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba)?;
            text.push_str(&format!("host all all {host}/24 trust\n"));
            std::fs::write(&hba, text)?;
        }
        if cluster_masters > 0 {
            s.start_cluster(cluster_masters)?;
        } else {
            s.start_redis()?;
        }
        s.start_pg()?;
        Ok(s)
    }

    fn spawn_node(&self, port: u16) -> anyhow::Result<Child> {
        // Each node its own folder: the append-only files and nodes.conf are per node.
        let dir = self.dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        self.redis_server(port, &dir)
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout"])
            .arg(NODE_TIMEOUT_MS.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")
    }

    /// `masters` masters and as many replicas, made a cluster by `redis-cli --cluster create`;
    /// returns once every slot is served and every replica is in sync.
    fn start_cluster(&mut self, masters: usize) -> anyhow::Result<()> {
        for port in free_cluster_ports(&self.host, masters * 2)? {
            let child = self.spawn_node(port)?;
            self.cluster.push(Node {
                port,
                child: Some(child),
            });
            wait_port(&self.host, port, "redis-server")?;
        }
        let nodes: Vec<String> = self
            .cluster
            .iter()
            .map(|n| format!("{}:{}", self.host, n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster create")?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.wait_cluster_healthy()
    }

    fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", &self.host, "-p", &port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every running node sees all 16384 slots served, and is a master or a replica linked
    /// to its master.
    fn wait_cluster_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in self.cluster.iter().filter(|n| n.child.is_some()) {
            loop {
                let ok = self
                    .cli(n.port, &["cluster", "info"])
                    .is_some_and(|o| o.contains("cluster_state:ok") && o.contains("cluster_slots_ok:16384"))
                    && self
                        .cli(n.port, &["info", "replication"])
                        .is_some_and(|o| o.contains("role:master") || o.contains("master_link_status:up"));
                if ok {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the Redis Cluster did not become healthy within 60 s (node {})",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// The port of the healthy master serving `key`'s slot, as a running node sees it.
    fn master_of(&self, key: &str) -> Option<u16> {
        let asker = self.cluster.iter().find(|n| n.child.is_some())?.port;
        let slot: u16 = self
            .cli(asker, &["cluster", "keyslot", key])?
            .trim()
            .parse()
            .ok()?;
        let nodes = self.cli(asker, &["cluster", "nodes"])?;
        nodes.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                return None;
            }
            let port: u16 = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
            f[8..]
                .iter()
                .any(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
                })
                .then_some(port)
        })
    }

    /// A master failover: the master serving `key` is killed with SIGKILL, its replica takes
    /// over once the cluster sees it failed (`NODE_TIMEOUT_MS`), and the killed node is started
    /// again on its append-only file, rejoining as the new master's replica. Returns the
    /// seconds from the kill until a master served `key` again.
    pub(super) async fn fail_over(&mut self, key: &str) -> anyhow::Result<f64> {
        let old = self.master_of(key).context("no master serves the key")?;
        let i = self
            .cluster
            .iter()
            .position(|n| n.port == old)
            .context("the master is not one of the bench's nodes")?;
        if let Some(mut c) = self.cluster[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let killed = Instant::now();
        let promoted = loop {
            match self.master_of(key) {
                Some(p) if p != old => break killed.elapsed().as_secs_f64(),
                _ if killed.elapsed() > Duration::from_secs(60) => {
                    anyhow::bail!("no replica took over from the killed master within 60 s")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let child = self.spawn_node(old)?;
        self.cluster[i].child = Some(child);
        wait_port(&self.host, old, "redis-server")?;
        Ok(promoted)
    }

    /// Whether the bench runs on a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// A `redis-server` on `port` of the bench's address, append-only with every write synced,
    /// keeping its files in `dir`.
    fn redis_server(&self, port: u16, dir: &std::path::Path) -> Command {
        let mut c = Command::new("redis-server");
        // Reachable only inside this bench's namespaces, or on loopback.
        c.args(["--bind", &self.host, "--protected-mode", "no", "--port"])
            .arg(port.to_string())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
            ])
            .arg(dir);
        c
    }

    pub(super) fn start_redis(&mut self) -> anyhow::Result<()> {
        let child = self
            .redis_server(self.redis_port, &self.dir.join("redis"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        self.redis = Some(child);
        wait_port(&self.host, self.redis_port, "redis-server")
    }

    pub(super) fn start_pg(&mut self) -> anyhow::Result<()> {
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(self.dir.join("pg"))
            .args([
                "-p",
                &self.pg_port.to_string(),
                "-c",
                &format!("listen_addresses={}", self.host),
                "-c",
            ])
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.join("pg").display()
            ))
            .args(["-c", "max_connections=300", "-c", "fsync=on"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        self.pg = Some(child);
        wait_port(&self.host, self.pg_port, "postgres")
    }

    /// PostgreSQL listens before it takes connections (recovery, start-up): waits until a
    /// connection is accepted.
    pub(super) async fn wait_pg_ready(&self) -> anyhow::Result<()> {
        use sqlx::Connection;
        let url = format!("postgres://postgres@{}:{}/postgres", self.host, self.pg_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match sqlx::PgConnection::connect(&url).await {
                Ok(c) => {
                    let _ = c.close().await;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!("postgres did not take connections within 30 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub(super) fn kill_redis(&mut self) {
        if let Some(mut c) = self.redis.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An immediate shutdown (SIGQUIT to the postmaster): no checkpoint, crash recovery on start.
    pub(super) fn crash_pg(&mut self) {
        if let Some(mut c) = self.pg.take() {
            let pid = std::fs::read_to_string(self.dir.join("pg/postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().map(str::to_owned));
            if let Some(pid) = pid {
                let _ = Command::new("kill").args(["-QUIT", &pid]).status();
            }
            let _ = c.wait();
        }
    }

    pub(super) fn database_url(&self) -> String {
        format!("postgres://postgres@{}:{}/souk_chaos", self.host, self.pg_port)
    }

    /// The Redis URL, or the cluster's seed URLs separated by commas.
    pub(super) fn redis_url(&self) -> String {
        if self.is_cluster() {
            return self
                .cluster
                .iter()
                .map(|n| format!("redis://{}:{}", self.host, n.port))
                .collect::<Vec<_>>()
                .join(",");
        }
        format!("redis://{}:{}/", self.host, self.redis_port)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.kill_redis();
        for n in &mut self.cluster {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(mut c) = self.pg.take() {
            let _ = c.kill();
            let _ = c.wait();
            // The postmaster's children die with it, unwaited; a fast stop ends them all.
            let _ = as_postgres("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("pg"))
                .args(["stop", "-m", "immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` consecutive ports free on `host` whose cluster bus ports (+10000) are free too.
fn free_cluster_ports(host: &str, n: usize) -> anyhow::Result<Vec<u16>> {
    for _ in 0..200 {
        let base = 20_000 + fastrand::u16(0..9_000);
        let ports: Vec<u16> = (0..n as u16).map(|i| base + i).collect();
        let free = ports.iter().all(|p| {
            std::net::TcpListener::bind((host, *p)).is_ok()
                && std::net::TcpListener::bind((host, p + 10_000)).is_ok()
        });
        if free {
            return Ok(ports);
        }
    }
    anyhow::bail!("no free port range for a Redis Cluster on {host}")
}

fn wait_port(host: &str, port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect((host, port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
