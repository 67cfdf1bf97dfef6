//! The chaos bench's own Redis and PostgreSQL: on free ports of 127.0.0.1 or of the hub's
//! bridge, in a temporary directory removed at the end.

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
}

impl Servers {
    pub(super) fn start(host: &str) -> anyhow::Result<Servers> {
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
        s.start_redis()?;
        s.start_pg()?;
        Ok(s)
    }

    pub(super) fn start_redis(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            // Reachable only inside this bench's namespaces, or on loopback.
            .args(["--bind", &self.host, "--protected-mode", "no", "--port"])
            .arg(self.redis_port.to_string())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
            ])
            .arg(self.dir.join("redis"))
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

    pub(super) fn redis_url(&self) -> String {
        format!("redis://{}:{}/", self.host, self.redis_port)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.kill_redis();
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
