//! [`RedisCluster`]: a private Redis Cluster of real server processes, which a test may break
//! (kill a node, fail a master over, move a slot).

mod builder;
mod migrate;
mod slot;
mod topology;

use std::fmt;
use std::time::Duration;

pub use builder::RedisClusterBuilder;
pub use migrate::SlotMove;
pub use slot::{SLOTS, key_slot};
use topology::{Topology, short};

use crate::error::{Error, Result};
use crate::server::{RedisServer, info_value};
use crate::wait::wait_until;

/// A private Redis Cluster: by default three masters and three replicas, each a
/// [`RedisServer`] on free ports of `127.0.0.1` with its own temporary directory.
///
/// [`start`](Self::start) returns once every node reports `cluster_state:ok` and the same slot
/// map. Connect with [`connection`](Self::connection) (redis-rs's cluster client, which follows
/// `MOVED` and `ASK`) or hand [`seed_urls`](Self::seed_urls) to the code under test. The
/// helpers that change the cluster ([`kill_master`](Self::kill_master),
/// [`failover`](Self::failover), [`restart`](Self::restart), [`move_slot`](Self::move_slot))
/// return once it has settled again, and take `&self`, so a cluster shared through an `Arc`
/// can be changed while other tasks use it. Dropping the cluster kills every node.
///
/// ```no_run
/// # async fn demo() -> redstream_testkit::Result<()> {
/// use redstream_testkit::RedisCluster;
///
/// let cluster = RedisCluster::start().await?;
/// let mut con = cluster.connection().await?;
/// redis::cmd("SET").arg("{order:1}").arg("paid").exec_async(&mut con).await?;
///
/// let master = cluster.master_for_key(b"{order:1}").await?;
/// let promoted = cluster.kill_master(master).await?; // SIGKILL, then wait for the replica
/// let state: Option<String> = redis::cmd("GET").arg("{order:1}").query_async(&mut con).await?;
/// # let _ = (promoted, state);
/// # Ok(())
/// # }
/// ```
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    password: Option<String>,
    timeout: Duration,
}

/// One node of a [`RedisCluster`]: its server process and its cluster node id.
///
/// Its role (master or replica) is the cluster's business and can change; ask the cluster
/// ([`RedisCluster::masters`], [`RedisCluster::replicas_of`]).
pub struct ClusterNode {
    server: RedisServer,
    id: String,
    /// `cluster-port`, which `CLUSTER MEET` must be told.
    bus_port: u16,
}

impl ClusterNode {
    /// The node id (`CLUSTER MYID`); kept across [`RedisCluster::restart`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The server process, for [`kill`](RedisServer::kill), [`pause`](RedisServer::pause),
    /// its log, and plain (non-cluster) connections.
    pub fn server(&self) -> &RedisServer {
        &self.server
    }

    /// The node's URL, with the cluster's password.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The node's port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }
}

impl fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id)
            .field("port", &self.server.port())
            .field("running", &self.server.is_running())
            .finish()
    }
}

impl fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} (port {})", short(&self.id), self.server.port())
    }
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("nodes", &self.nodes)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl RedisCluster {
    /// Starts three masters and three replicas with default settings. Shorthand for
    /// `RedisCluster::builder().start().await`.
    ///
    /// # Errors
    ///
    /// See [`RedisClusterBuilder::start`].
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// A builder for another shape (masters, replicas) or other node settings.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::new()
    }

    /// Every node, in the order they were started: the first [`masters`](Self::masters) were
    /// the masters when the cluster formed, replica `i` after them replicated master
    /// `i % masters`.
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// The node with this id.
    pub fn node_by_id(&self, id: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The URL of every node (with the password, if any), to seed a cluster client. Any one of
    /// them is enough to discover the cluster; all of them survive the loss of a node.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(ClusterNode::url).collect()
    }

    /// The password every node requires, if one was set.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// A redis-rs cluster client seeded with every node.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when redis-rs refuses the seeds.
    pub fn client(&self) -> Result<redis::cluster::ClusterClient> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(self.seed_urls());
        if let Some(password) = &self.password {
            builder = builder.password(password.clone());
        }
        Ok(builder.build()?)
    }

    /// A new async cluster connection from [`client`](Self::client): it routes each command
    /// to the master of its key's slot and follows `MOVED` and `ASK`.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when no seed answers.
    pub async fn connection(&self) -> Result<redis::cluster_async::ClusterConnection> {
        Ok(self.client()?.get_async_connection().await?)
    }

    /// The current masters (nodes that serve slots), ordered by their first slot, as a running
    /// node sees them.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Unsupported`] when no running node describes the cluster.
    pub async fn masters(&self) -> Result<Vec<&ClusterNode>> {
        let view = self.view().await?;
        let mut masters: Vec<(u16, &ClusterNode)> = view
            .nodes
            .iter()
            .filter(|line| line.is_master())
            .filter_map(|line| {
                let first = line.slots.first()?.0;
                Some((first, self.node_by_id(&line.id)?))
            })
            .collect();
        masters.sort_by_key(|(first, _)| *first);
        Ok(masters.into_iter().map(|(_, node)| node).collect())
    }

    /// The current replicas of `master`, as a running node sees them.
    ///
    /// # Errors
    ///
    /// As for [`masters`](Self::masters).
    pub async fn replicas_of(&self, master: &ClusterNode) -> Result<Vec<&ClusterNode>> {
        let view = self.view().await?;
        Ok(view
            .replicas_of(&master.id)
            .into_iter()
            .filter_map(|id| self.node_by_id(id))
            .collect())
    }

    /// The master that serves `slot`.
    ///
    /// # Errors
    ///
    /// As for [`masters`](Self::masters), and [`Error::Unsupported`] when no master serves it.
    pub async fn master_for_slot(&self, slot: u16) -> Result<&ClusterNode> {
        let view = self.view().await?;
        view.owner(slot)
            .and_then(|id| self.node_by_id(id))
            .ok_or_else(|| {
                Error::Unsupported(format!("no master of this cluster serves slot {slot}"))
            })
    }

    /// The master that serves `key`'s slot ([`key_slot`]).
    ///
    /// # Errors
    ///
    /// As for [`master_for_slot`](Self::master_for_slot).
    pub async fn master_for_key(&self, key: &[u8]) -> Result<&ClusterNode> {
        self.master_for_slot(key_slot(key)).await
    }

    /// Kills `master` with `SIGKILL` and waits until one of its replicas has been promoted
    /// and the cluster has settled (every running node `cluster_state:ok`, the same slot map,
    /// replicas linked); returns the promoted replica.
    ///
    /// Failure detection takes about two node timeouts, the election up to a second more.
    /// The killed node stays down until [`restart`](Self::restart), which brings it back as a
    /// replica of the promoted one.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when `master` serves no slots or has no running replica, the
    /// errors of [`RedisServer::kill`], and [`Error::Timeout`] when no replica takes over.
    pub async fn kill_master(&self, master: &ClusterNode) -> Result<&ClusterNode> {
        let (slots, replicas) = self.master_with_replicas(master).await?;
        master.server.kill()?;
        self.wait_for_takeover(master, &slots, &replicas).await
    }

    /// A manual failover: `CLUSTER FAILOVER` on `replica`, which swaps roles with its master
    /// once it has caught up with it (no write is lost), then waits until the cluster has
    /// settled with `replica` as the master.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when `replica` is not a replica, [`Error::Redis`] when it refuses,
    /// [`Error::Timeout`] when the cluster does not settle.
    pub async fn failover(&self, replica: &ClusterNode) -> Result<()> {
        let view = self.view().await?;
        let master = view
            .node(&replica.id)
            .filter(|line| !line.is_master())
            .and_then(|line| line.master.as_deref())
            .and_then(|id| self.node_by_id(id))
            .ok_or_else(|| Error::Unsupported(format!("{replica} is not a replica")))?;
        let (slots, _) = self.master_with_replicas(master).await?;
        let () = replica
            .server
            .admin(redis::cmd("CLUSTER").arg("FAILOVER"))
            .await?;
        self.wait_for_takeover(master, &slots, std::slice::from_ref(&replica))
            .await
            .map(|_| ())
    }

    /// Starts a killed node again (same port, same data directory and `nodes.conf`, so the
    /// same id), or kills and restarts a running one, and waits until the cluster has settled
    /// with it. A master that was replaced meanwhile comes back as a replica of its successor.
    ///
    /// Without [`RedisClusterBuilder::appendonly`] the node restarts empty: a master that is
    /// back before its replica took over has lost its keys.
    ///
    /// # Errors
    ///
    /// Those of [`RedisServer::restart`], and [`Error::Timeout`] when the cluster does not
    /// settle.
    pub async fn restart(&self, node: &ClusterNode) -> Result<()> {
        node.server.restart().await?;
        self.wait_until_stable().await
    }

    /// Waits until every running node reports `cluster_state:ok`, knows every other running
    /// node as healthy and connected, all give the same roles and slot map with every slot
    /// served by a running master, and every running replica's link to its master is up.
    ///
    /// A paused node counts as running: it makes this wait time out.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], with the last reason the cluster was not settled.
    pub async fn wait_until_stable(&self) -> Result<()> {
        wait_until("the cluster to settle", self.timeout, || {
            self.check_stable()
        })
        .await
    }

    /// Joins freshly started nodes into a cluster: config epochs, slots, `MEET`, replicas.
    async fn form(&self, masters: usize) -> Result<()> {
        // Distinct config epochs from the start, as redis-cli gives them: no collisions to
        // resolve later.
        for (epoch, node) in (1_u64..).zip(&self.nodes) {
            let () = node
                .server
                .admin(redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(epoch))
                .await?;
        }
        for (index, master) in self.nodes[..masters].iter().enumerate() {
            let (first, last) = builder::slot_range(index, masters);
            let () = master
                .server
                .admin(
                    redis::cmd("CLUSTER")
                        .arg("ADDSLOTSRANGE")
                        .arg(first)
                        .arg(last),
                )
                .await?;
        }
        let first = &self.nodes[0];
        for node in &self.nodes[1..] {
            let () = first
                .server
                .admin(
                    redis::cmd("CLUSTER")
                        .arg("MEET")
                        .arg(node.server.host())
                        .arg(node.port())
                        .arg(node.bus_port),
                )
                .await?;
        }
        // CLUSTER REPLICATE needs the master to be known to the replica.
        wait_until("every node to know every other", self.timeout, || async {
            for node in &self.nodes {
                let view = self.view_of(node).await?;
                for other in &self.nodes {
                    match view.node(&other.id) {
                        Some(line) if !line.has_flag("handshake") && !line.has_flag("noaddr") => {}
                        _ => return Err(format!("{node} does not know {other} yet")),
                    }
                }
            }
            Ok(())
        })
        .await?;
        for (index, replica) in self.nodes[masters..].iter().enumerate() {
            let master = &self.nodes[index % masters];
            let () = replica
                .server
                .admin(redis::cmd("CLUSTER").arg("REPLICATE").arg(&master.id))
                .await?;
        }
        self.wait_until_stable().await
    }

    /// The slots of `master` and its running replicas.
    async fn master_with_replicas(
        &self,
        master: &ClusterNode,
    ) -> Result<(Vec<(u16, u16)>, Vec<&ClusterNode>)> {
        let view = self.view().await?;
        let slots = view
            .node(&master.id)
            .filter(|line| line.is_master() && !line.slots.is_empty())
            .map(|line| line.slots.clone())
            .ok_or_else(|| Error::Unsupported(format!("{master} serves no slots")))?;
        let replicas: Vec<&ClusterNode> = view
            .replicas_of(&master.id)
            .into_iter()
            .filter_map(|id| self.node_by_id(id))
            .filter(|node| node.server.is_running())
            .collect();
        if replicas.is_empty() {
            return Err(Error::Unsupported(format!(
                "{master} has no running replica to take over"
            )));
        }
        Ok((slots, replicas))
    }

    /// Waits until one of `candidates` serves `slots` (which `old` served) and the cluster has
    /// settled; returns it.
    async fn wait_for_takeover<'a>(
        &'a self,
        old: &ClusterNode,
        slots: &[(u16, u16)],
        candidates: &[&'a ClusterNode],
    ) -> Result<&'a ClusterNode> {
        let what = format!("a replica of {old} to take over its slots");
        wait_until(what, self.timeout, || async {
            self.check_stable().await?;
            let view = self.view().await.map_err(|err| err.to_string())?;
            let owner = view.owner(slots[0].0).unwrap_or("nobody");
            let new = candidates
                .iter()
                .find(|node| node.id == owner)
                .ok_or_else(|| {
                    format!("slot {} is still served by {}", slots[0].0, short(owner))
                })?;
            match view.node(&new.id) {
                Some(line) if line.slots == slots => Ok(*new),
                _ => Err(format!("{new} does not serve all of {slots:?} yet")),
            }
        })
        .await
    }

    /// `Ok` once the cluster is settled (see [`wait_until_stable`](Self::wait_until_stable)),
    /// else why not.
    async fn check_stable(&self) -> std::result::Result<(), String> {
        let running: Vec<&ClusterNode> = self
            .nodes
            .iter()
            .filter(|node| node.server.is_running())
            .collect();
        let running_ids: Vec<&str> = running.iter().map(|node| node.id.as_str()).collect();
        let mut agreed: Option<(&ClusterNode, String)> = None;
        for node in &running {
            let info: String = node
                .server
                .admin(redis::cmd("CLUSTER").arg("INFO"))
                .await
                .map_err(|err| format!("{node}: {err}"))?;
            let state = info_value(&info, "cluster_state");
            if state != Some("ok") {
                return Err(format!("{node} reports cluster_state {state:?}"));
            }
            let view = self.view_of(node).await?;
            let summary = view
                .healthy_summary(&running_ids)
                .map_err(|why| format!("{node} reports: {why}"))?;
            match &agreed {
                Some((first, agreed)) if *agreed != summary => {
                    return Err(format!(
                        "{first} and {node} disagree:\n{agreed}versus\n{summary}"
                    ));
                }
                Some(_) => {}
                None => agreed = Some((node, summary)),
            }
            let replica = view.node(&node.id).is_some_and(|line| !line.is_master());
            if replica {
                let link = node
                    .server
                    .info_field("replication", "master_link_status")
                    .await
                    .map_err(|err| format!("{node}: {err}"))?;
                if link.as_deref() != Some("up") {
                    return Err(format!("{node}: master_link_status {link:?}"));
                }
            }
        }
        Ok(())
    }

    /// `CLUSTER NODES` as the first running node that answers reports it.
    async fn view(&self) -> Result<Topology> {
        let mut last = None;
        for node in self.nodes.iter().filter(|node| node.server.is_running()) {
            match self.view_of(node).await {
                Ok(view) => return Ok(view),
                Err(err) => last = Some(err),
            }
        }
        Err(Error::Unsupported(format!(
            "no running node of the cluster answers CLUSTER NODES ({})",
            last.unwrap_or_else(|| "none is running".to_owned())
        )))
    }

    /// `CLUSTER NODES` as `node` reports it.
    async fn view_of(&self, node: &ClusterNode) -> std::result::Result<Topology, String> {
        let text: String = node
            .server
            .admin(redis::cmd("CLUSTER").arg("NODES"))
            .await
            .map_err(|err| format!("{node}: {err}"))?;
        Topology::parse(&text).map_err(|err| format!("{node}: {err}"))
    }
}
