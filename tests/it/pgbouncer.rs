//! souk through PgBouncer in transaction mode (Debian's 1.18, which cannot carry named
//! prepared statements): the pool runs without sqlx's statement cache, migrations go to
//! PostgreSQL directly, and orders flow end to end with every connection multiplexed.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::support::{eventually, free_port, have_tool, pipeline::Pipeline};

struct PgBouncer {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl PgBouncer {
    /// A PgBouncer on a free loopback port in front of the shared PostgreSQL, in transaction
    /// mode, with at most `server_pool` server connections per database.
    fn start(server_pool: u32) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("souk-pgbouncer-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port=5432 user=postgres\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = any\npool_mode = transaction\nmax_client_conn = 500\n\
             default_pool_size = {server_pool}\nmax_db_connections = {server_pool}\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n",
            d = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        // PgBouncer refuses to run as root; the folder must be the postgres user's to write.
        let _ = Command::new("chown")
            .args(["-R", "postgres", dir.to_str().unwrap()])
            .status();
        let mut cmd = Command::new("pgbouncer");
        if running_as_root() {
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer");
        let b = Self { port, dir, child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return b;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgbouncer did not listen on {port}");
    }

    fn at(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn orders_flow_end_to_end_through_pgbouncer_in_transaction_mode() {
    if !have_tool(&["pgbouncer", "--version"], "apt-get install pgbouncer") {
        return;
    }
    // Four server connections for a pool of ten per process and concurrent handlers: every
    // transaction shares them, so a statement that leaned on a session would fail.
    let bouncer = PgBouncer::start(4);
    let at = bouncer.at();
    let p = Pipeline::start(&[("TEST_PG_POOL", at.as_str()), ("SOUK_QUEUE__CONCURRENCY", "16")]).await;
    assert!(
        p.env.db_url.contains(&at),
        "the world's pool goes through PgBouncer"
    );
    p.merchant("m-a", "auto", "accept", 3600).await;
    p.merchant("m-b", "auto", "accept", 3600).await;
    p.stock("m-a", "A", 1000).await;
    p.stock("m-b", "B", 1000).await;
    let n = 200;
    for i in 0..n {
        let msg = p.order(
            &format!("SF-PGB-{i}"),
            &[("m-a", "A", 1, 1000), ("m-b", "B", 2, 250)],
            "requires_capture",
        );
        p.send(&msg).await;
    }
    eventually(
        Duration::from_secs(60),
        "every order captured and both merchants told",
        || async {
            let mut all = true;
            for i in 0..n {
                all &= p.all_delivered(&format!("SF-PGB-{i}"), 2).await;
            }
            all
        },
    )
    .await;
    for i in 0..n {
        assert_eq!(
            p.order_status(&format!("SF-PGB-{i}")).await.as_deref(),
            Some("captured")
        );
    }
    let (on_hand_a, _) = souk::store::merchants::stock(&p.env.app.pool, "m-a", "A")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(on_hand_a, 1000 - n, "sold exactly once per order");
    // More client connections than server connections: the pooler multiplexed them.
    let clients = p.env.app.pool.size();
    let servers: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(&p.env.db_name)
        .fetch_one(&p.env.app.pool)
        .await
        .unwrap();
    assert!(servers <= 4, "{servers} server connections for a pool of 4");
    assert!(
        clients > 4,
        "only {clients} client connections: nothing was multiplexed"
    );
    let log = bouncer.log();
    assert!(
        !log.contains("prepared statement") && !log.contains("ERROR"),
        "PgBouncer logged an error: {log}"
    );
    p.stop().await;
}
