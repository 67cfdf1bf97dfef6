//! One Redis, or a Redis Cluster, behind one connection type.
//!
//! Everything souk sends is either a single-key command, a pipeline or script over the keys of
//! one queue (one hash tag, so one slot), or a keyless read (`INFO`, `KEYS` in benches), so the
//! same code runs on both: the cluster connection routes each command by its first key, and
//! Redis refuses a script or pipeline that reaches a second slot (`CROSSSLOT`), which is what
//! the cluster tests would trip over.
//!
//! With `redis.wait_replicas > 0`, [`Conn::replicated`] sends `WAIT n timeout` to the master
//! that took a write: the writes souk acknowledges to someone else (a push, an outcome) are
//! not reported done until that many replicas hold them. Redis promises nothing more: a
//! failover can still lose what was written but not yet replicated, which is why the setting
//! exists.

use std::time::Duration;

use redis::{
    aio::{ConnectionLike, ConnectionManager},
    cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
};

use crate::config::RedisConfig;

/// How many replicas must hold an acknowledged write, and for how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Durability {
    pub replicas: u32,
    pub timeout_ms: u64,
}

/// A client that makes [`Conn`]s: to one server, or to a cluster through its seed nodes.
#[derive(Clone)]
pub struct RedisClient {
    kind: ClientKind,
    durability: Durability,
}

#[derive(Clone)]
enum ClientKind {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

/// A connection that reconnects by itself (a connection manager, or a cluster connection that
/// refreshes its slot map on `MOVED` and after a failover), cheap to clone.
#[derive(Clone)]
pub struct Conn {
    kind: ConnKind,
    durability: Durability,
}

#[derive(Clone)]
enum ConnKind {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The seed URLs of `redis.url`: one URL, or several separated by commas (a cluster).
pub fn seed_urls(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

fn with_nodelay(url: &str) -> RedisResult<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    // redis-rs leaves Nagle's algorithm on by default; with many commands multiplexed on one
    // connection that stalls small writes behind delayed ACKs (about 40 ms each on Linux
    // loopback), which measured as a 10× slower order pipeline.
    Ok(url
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

impl RedisClient {
    /// A client for `redis.url`: a cluster when `redis.cluster` is set or the URL lists
    /// several seed nodes.
    pub fn open(cfg: &RedisConfig) -> RedisResult<Self> {
        let seeds = seed_urls(&cfg.url);
        let durability = Durability {
            replicas: cfg.wait_replicas,
            timeout_ms: cfg.wait_timeout_ms,
        };
        let kind = if cfg.cluster || seeds.len() > 1 {
            let infos = seeds
                .iter()
                .map(|u| with_nodelay(u))
                .collect::<RedisResult<Vec<_>>>()?;
            let client = ClusterClientBuilder::new(infos)
                .connection_timeout(Duration::from_secs(5))
                .response_timeout(Duration::from_secs(10))
                // A failover takes the cluster's node timeout plus an election; keep retrying
                // a command through it instead of failing it at once.
                .retries(12)
                .min_retry_wait(50)
                .max_retry_wait(1_000)
                .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
                .build()?;
            ClientKind::Cluster(Box::new(client))
        } else {
            ClientKind::Single(redis::Client::open(with_nodelay(cfg.url.trim())?)?)
        };
        Ok(Self { kind, durability })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, ClientKind::Cluster(_))
    }

    /// A new connection with the given response timeout (default 10 s). Each call opens
    /// connections of its own, so a blocking read on one stalls nothing else.
    pub async fn connect(&self, response_timeout: Option<Duration>) -> RedisResult<Conn> {
        let timeout = response_timeout.unwrap_or(Duration::from_secs(10));
        let kind = match &self.kind {
            ClientKind::Single(c) => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(timeout));
                ConnKind::Single(c.get_connection_manager_with_config(cfg).await?)
            }
            ClientKind::Cluster(c) => {
                let cfg = ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(5))
                    .set_response_timeout(timeout);
                ConnKind::Cluster(c.get_async_connection_with_config(cfg).await?)
            }
        };
        Ok(Conn {
            kind,
            durability: self.durability,
        })
    }
}

impl Conn {
    /// Waits until `redis.wait_replicas` replicas of the master holding `key` have every write
    /// this connection sent to it; an error when fewer confirm within the timeout, so the
    /// caller does not report the write done. A no-op when the setting is 0.
    pub async fn replicated(&mut self, key: &str) -> RedisResult<()> {
        let Durability { replicas, timeout_ms } = self.durability;
        if replicas == 0 {
            return Ok(());
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout_ms.max(1));
        let got: i64 = match &mut self.kind {
            ConnKind::Single(c) => wait.query_async(c).await?,
            ConnKind::Cluster(c) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let v = c
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::from_redis_value(v)?
            }
        };
        if got < i64::from(replicas) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "write not replicated",
                format!("{got} of {replicas} replicas confirmed within {timeout_ms} ms"),
            )));
        }
        Ok(())
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.kind {
            ConnKind::Single(c) => c.req_packed_command(cmd),
            ConnKind::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.kind {
            ConnKind::Single(c) => c.req_packed_commands(pipeline, offset, count),
            ConnKind::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.kind {
            ConnKind::Single(c) => c.get_db(),
            ConnKind::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_urls_are_the_seeds_of_a_cluster() {
        assert_eq!(seed_urls("redis://a:1"), vec!["redis://a:1"]);
        assert_eq!(
            seed_urls("redis://a:1, redis://b:2,,"),
            vec!["redis://a:1", "redis://b:2"]
        );
    }
}
