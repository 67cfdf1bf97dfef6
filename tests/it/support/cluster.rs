//! A real Redis Cluster of `redis-server` processes on loopback ports, made by the test.
//!
//! [`shared`] is one 3-master, 3-replica cluster for the whole test run: the tests that run on
//! it each use their own key prefix, like on the single Redis. A watchdog shell started with it
//! kills its servers and removes its folder when the test process exits, however it exits.
//! [`RedisCluster::start`] makes a private one, for a test that kills a master.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The cluster's node timeout: how long a master may be silent before its replica takes over.
pub const NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Child>,
}

/// The run's shared cluster, started on first use.
pub fn shared() -> &'static RedisCluster {
    static SHARED: OnceLock<RedisCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let c = RedisCluster::start(3);
        c.watch_parent();
        c
    })
}

/// `SOUK_*` settings that put a test's world on `cluster`, waiting for one replica per write.
pub fn settings(cluster: &RedisCluster) -> Vec<(String, String)> {
    vec![
        ("REDIS_URL".into(), cluster.url()),
        ("SOUK_REDIS__CLUSTER".into(), "true".into()),
        ("SOUK_REDIS__WAIT_REPLICAS".into(), "1".into()),
    ]
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `n` consecutive free ports whose cluster bus ports (+10000) are free too.
fn free_ports(n: usize) -> Vec<u16> {
    for _ in 0..200 {
        let base = 20_000 + fastrand::u16(0..9_000);
        let ports: Vec<u16> = (0..n as u16).map(|i| base + i).collect();
        let free = ports.iter().all(|p| {
            TcpListener::bind(("127.0.0.1", *p)).is_ok()
                && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        });
        if free {
            return ports;
        }
    }
    panic!("no free port range for a Redis Cluster");
}

fn spawn_node(dir: &std::path::Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
        ])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args([
            "--dir",
            dir.to_str().unwrap(),
            "--logfile",
            &format!("{port}.log"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt install redis-server)")
}

impl RedisCluster {
    /// Starts `masters` masters with one replica each and waits until every slot is served
    /// and every replica is in sync.
    pub fn start(masters: usize) -> Self {
        let ports = free_ports(masters * 2);
        let dir = std::env::temp_dir().join(format!("souk-cluster-{}", ports[0]));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let children = ports.iter().map(|p| spawn_node(&dir, *p)).collect();
        let c = Self { ports, dir, children };
        for p in &c.ports {
            c.wait(&format!("node {p} answers"), || {
                cli(*p, &["ping"]).is_some_and(|o| o.contains("PONG"))
            });
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create failed");
        c.wait_healthy();
        c
    }

    fn wait(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "Redis Cluster: timed out waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every live node sees the cluster as ok with all slots assigned, and every live replica
    /// is linked to its master.
    pub fn wait_healthy(&self) {
        for p in self.live_ports() {
            self.wait(&format!("node {p} reports cluster_state:ok"), || {
                cli(p, &["cluster", "info"])
                    .is_some_and(|o| o.contains("cluster_state:ok") && o.contains("cluster_slots_ok:16384"))
            });
            self.wait(&format!("node {p} is a master or an in-sync replica"), || {
                cli(p, &["info", "replication"])
                    .is_some_and(|o| o.contains("role:master") || o.contains("master_link_status:up"))
            });
        }
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|p| cli(*p, &["ping"]).is_some())
            .collect()
    }

    /// The seed URLs, as `redis.url` takes them.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master currently serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key)
            .unwrap_or_else(|| panic!("no healthy master serves {key}"))
    }

    /// The healthy master serving `key`'s slot, if there is one now (none during a failover).
    pub fn try_master_of(&self, key: &str) -> Option<u16> {
        let p = *self.live_ports().first()?;
        let slot: u16 = cli(p, &["cluster", "keyslot", key])?.trim().parse().ok()?;
        let nodes = cli(p, &["cluster", "nodes"])?;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            for range in &f[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    if (a..=b).contains(&slot) {
                        return Some(port);
                    }
                }
            }
        }
        None
    }

    /// Kills the server on `port` with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// Starts the server on `port` again (after [`RedisCluster::kill`]): it keeps its node
    /// id from its nodes file, so it rejoins, as a replica of whoever took over its slots.
    pub fn restart(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        self.children[i] = spawn_node(&self.dir, port);
        self.wait(&format!("node {port} answers again"), || {
            cli(port, &["ping"]).is_some_and(|o| o.contains("PONG"))
        });
    }

    /// Deletes every key under `prefix` on every master, one key at a time (a multi-key `DEL`
    /// would cross slots).
    pub fn delete_prefix(urls: &str, prefix: &str) {
        for url in urls.split(',') {
            let Some(port) = url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            let Some(keys) = cli(port, &["--scan", "--pattern", &format!("{prefix}:*")]) else {
                continue;
            };
            for k in keys.lines().filter(|k| !k.is_empty()) {
                let _ = cli(port, &["del", k]);
            }
        }
    }

    /// A shell that waits for this test process to end, then kills the servers and removes
    /// their folder (a static is never dropped).
    fn watch_parent(&self) {
        let pids: Vec<String> = self.children.iter().map(|c| c.id().to_string()).collect();
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill -9 {} 2>/dev/null; rm -rf '{}'",
            std::process::id(),
            pids.join(" "),
            self.dir.display()
        );
        // `setsid -f` forks the shell off into a session of its own and returns at once.
        Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("setsid sh");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
