//! [`RedisClusterBuilder`]: the shape of a cluster and its nodes' settings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;

use super::{ClusterNode, RedisCluster};
use crate::builder::{RedisServerBuilder, quote};
use crate::error::{Error, Result};

/// Configures a [`RedisCluster`] before it is started: how many masters and replicas, and
/// what every node shares (password, persistence, binary, any `redis.conf` directive).
///
/// Obtained from [`RedisCluster::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas_per_master: usize,
    node_timeout: Duration,
    ready_timeout: Duration,
    password: Option<String>,
    node: RedisServerBuilder,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RedisClusterBuilder {
    /// Three masters with one replica each, a node timeout of one second, no password, no
    /// persistence.
    pub fn new() -> Self {
        Self {
            masters: 3,
            replicas_per_master: 1,
            node_timeout: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(60),
            password: None,
            node: RedisServerBuilder::new(),
        }
    }

    /// How many masters share the 16384 slots (default 3). A master's failure is detected by
    /// the majority of masters, so killing one needs at least three.
    pub fn masters(mut self, masters: usize) -> Self {
        self.masters = masters;
        self
    }

    /// How many replicas each master has (default 1).
    pub fn replicas_per_master(mut self, replicas: usize) -> Self {
        self.replicas_per_master = replicas;
        self
    }

    /// `cluster-node-timeout` (default 1 s): how long a node may be unreachable before it is
    /// considered failing, and so how soon a killed master's replica takes over.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// How long [`start`](Self::start) and the helpers that wait for the cluster to settle
    /// (after a failover, a restart, a slot move) wait before they fail (default 60 s). A
    /// guard against hangs, not a speed requirement.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Every node requires this password (`requirepass`) and uses it to reach its master
    /// (`masterauth`) and for `MIGRATE`. [`RedisCluster::seed_urls`] carry it.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Turns on the append-only file (`appendfsync always`) on every node, so a killed node
    /// restarts with its data. See [`RedisServerBuilder::appendonly`].
    pub fn appendonly(mut self, enabled: bool) -> Self {
        self.node = self.node.appendonly(enabled);
        self
    }

    /// Appends a `redis.conf` directive to every node. See [`RedisServerBuilder::config`].
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node = self.node.config(key, value);
        self
    }

    /// Runs this binary instead of the one found through `REDSTREAM_REDIS_SERVER` or `PATH`.
    pub fn redis_server_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.node = self.node.redis_server_binary(path);
        self
    }

    /// Starts the nodes, assigns the slots in equal ranges to the masters, joins the nodes
    /// (`CLUSTER MEET`), attaches the replicas (`CLUSTER REPLICATE`), and waits until every
    /// node reports `cluster_state:ok` and the same slot map, and every replica's link is up.
    ///
    /// Everything goes through redis-rs commands: no `redis-cli` is needed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for zero masters, the errors of [`RedisServerBuilder::start`]
    /// for each node, [`Error::Redis`] when a node refuses a cluster command, and
    /// [`Error::Timeout`] (saying what the nodes last reported) when the cluster does not
    /// settle within the ready timeout.
    pub async fn start(self) -> Result<RedisCluster> {
        if self.masters == 0 || self.masters > usize::from(super::SLOTS) {
            return Err(Error::InvalidConfig(format!(
                "a cluster needs between 1 and {} masters, not {}",
                super::SLOTS,
                self.masters
            )));
        }
        let started = Instant::now();
        let mut node = self
            .node
            .ready_timeout(self.ready_timeout)
            .config("cluster-enabled", "yes")
            .config("cluster-config-file", "nodes.conf")
            .config(
                "cluster-node-timeout",
                self.node_timeout.as_millis().to_string(),
            )
            // Any replica may take over, however long its link was down, and replicas stay
            // with their master: the topology changes only when a test changes it.
            .config("cluster-replica-validity-factor", "0")
            .config("cluster-allow-replica-migration", "no");
        if let Some(password) = &self.password {
            node = node
                .password(password.clone())
                .config("masterauth", quote(password));
        }
        node.settings.cluster_bus = true;
        let total = self.masters * (1 + self.replicas_per_master);
        let servers = try_join_all((0..total).map(|_| node.clone().start())).await?;
        let mut nodes = Vec::with_capacity(total);
        for server in servers {
            let id: String = server.admin(redis::cmd("CLUSTER").arg("MYID")).await?;
            let (_, bus_port): (String, u16) = server
                .admin(redis::cmd("CONFIG").arg("GET").arg("cluster-port"))
                .await?;
            nodes.push(ClusterNode {
                server,
                id,
                bus_port,
            });
        }
        let cluster = RedisCluster {
            nodes,
            password: self.password,
            timeout: self.ready_timeout,
        };
        cluster.form(self.masters).await?;
        tracing::debug!(
            masters = self.masters,
            replicas_per_master = self.replicas_per_master,
            elapsed = ?started.elapsed(),
            "test cluster ready"
        );
        Ok(cluster)
    }
}

/// The slots of master `index` of `masters`: equal ranges, the last one taking the rest.
pub(crate) fn slot_range(index: usize, masters: usize) -> (u16, u16) {
    let slots = usize::from(super::SLOTS);
    let first = index * slots / masters;
    let last = (index + 1) * slots / masters - 1;
    // Both are below 16384.
    (
        u16::try_from(first).unwrap_or(u16::MAX),
        u16::try_from(last).unwrap_or(u16::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_cover_every_slot_once() {
        assert_eq!(slot_range(0, 3), (0, 5460));
        assert_eq!(slot_range(1, 3), (5461, 10921));
        assert_eq!(slot_range(2, 3), (10922, 16383));
        assert_eq!(slot_range(0, 1), (0, 16383));
        for masters in 1..=7 {
            let mut next = 0;
            for index in 0..masters {
                let (first, last) = slot_range(index, masters);
                assert_eq!(first, next);
                next = last + 1;
            }
            assert_eq!(next, 16384);
        }
    }
}
