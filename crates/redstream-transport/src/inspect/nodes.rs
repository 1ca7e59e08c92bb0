//! Per-node views: [`NodeStats`] for each master of a Redis Cluster, or for the one server (a
//! single server, or the master Sentinel names).

use futures_util::{StreamExt, TryStreamExt, stream};
use redis::{Cmd, FromRedisValue, Value};
use redstream_core::connection::{NodeAddress, Topology};
use redstream_core::{Error, Result};
use serde::Serialize;

use super::ServerInfo;
use super::checks::unexpected;
use crate::commands::Traffic;
use crate::reply::text;
use crate::transport::RedisTransport;

/// `XLEN`s in flight at once per node.
const LENGTHS_IN_FLIGHT: usize = 16;

/// One master: its figures from `INFO` and `DBSIZE`, and the streams it holds among those asked
/// for (found by `SCAN` on that node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NodeStats {
    /// Where the node is: `host:port` (`[::1]:6379` for IPv6), as `CLUSTER NODES` names a
    /// cluster's masters and the URL names a single server (`unix:/path` for a socket). Under
    /// Sentinel, the connection's URL with its password redacted: the master is whichever one
    /// the sentinels name.
    pub address: String,
    /// The node's figures from `INFO`: server name and version, role, memory, clients, ops/s.
    /// A field the node does not report is `None`.
    pub info: ServerInfo,
    /// Keys in the node's database (`DBSIZE`; on a cluster, database 0).
    pub keys: u64,
    /// Names of the streams on this node that match the patterns asked for, sorted.
    pub streams: Vec<String>,
    /// Entries in those streams (the sum of their `XLEN`s).
    pub stream_entries: u64,
}

impl NodeStats {
    /// Sums over `nodes`: `used_memory`, `maxmemory`, `connected_clients`, `ops_per_sec`,
    /// `keyspace_hits` and `keyspace_misses` (each `None` when a node does not report it),
    /// `keys`, `streams` (all names, sorted) and `stream_entries`. The address is `total`; the
    /// other `info` fields are `None`.
    #[must_use]
    pub fn total(nodes: &[NodeStats]) -> NodeStats {
        fn sum(nodes: &[NodeStats], field: impl Fn(&ServerInfo) -> Option<u64>) -> Option<u64> {
            nodes
                .iter()
                .map(|n| field(&n.info))
                .try_fold(0u64, |total, value| Some(total.saturating_add(value?)))
        }
        let info = ServerInfo {
            used_memory: sum(nodes, |i| i.used_memory),
            maxmemory: sum(nodes, |i| i.maxmemory),
            connected_clients: sum(nodes, |i| i.connected_clients),
            ops_per_sec: sum(nodes, |i| i.ops_per_sec),
            keyspace_hits: sum(nodes, |i| i.keyspace_hits),
            keyspace_misses: sum(nodes, |i| i.keyspace_misses),
            ..ServerInfo::default()
        };
        let mut streams: Vec<String> = nodes.iter().flat_map(|n| n.streams.clone()).collect();
        streams.sort_unstable();
        NodeStats {
            address: "total".to_owned(),
            info,
            keys: nodes.iter().fold(0, |t, n| t.saturating_add(n.keys)),
            streams,
            stream_entries: nodes
                .iter()
                .fold(0, |t, n| t.saturating_add(n.stream_entries)),
        }
    }
}

/// Where a command of [`RedisTransport::nodes`] goes.
#[derive(Clone, Copy)]
enum Node<'a> {
    /// A master of the cluster, by address.
    Master(&'a NodeAddress),
    /// The transport's own connection (a single server, or the Sentinel master).
    Own,
}

impl RedisTransport {
    /// Each master's figures and the streams it holds: on a Redis Cluster one [`NodeStats`] per
    /// master that serves slots (`CLUSTER NODES`), in address order; on a single server or
    /// under Sentinel, one.
    ///
    /// `patterns` are `SCAN ... MATCH` globs (`events:*`, `events.*`; escape a literal name
    /// with `redstream_core::keys::escape_glob`); the streams listed per node are those any of
    /// them matches, found by `SCAN ... TYPE stream` on that node (never `KEYS`). Empty:
    /// the streams under the prefix (`events:*`). Per node this costs one `INFO`, one
    /// `DBSIZE`, one `SCAN` walk per pattern and one `XLEN` per stream found; no entry is read.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) for an empty
    /// pattern; the classified error of the first command that fails on any node (a node that
    /// cannot be read fails the whole call, rather than showing a partial cluster as whole).
    pub async fn nodes(&self, patterns: &[String]) -> Result<Vec<NodeStats>> {
        let mut patterns = patterns.to_vec();
        if patterns.is_empty() {
            patterns.push(self.inner.names.scan_pattern());
        }
        if patterns.iter().any(String::is_empty) {
            return Err(Error::invalid_input(
                "stream pattern \"\"",
                "must not be empty (`*` matches every stream)",
            ));
        }
        if self.inner.conn.topology() != Topology::Cluster {
            return Ok(vec![self.node_stats(Node::Own, &patterns).await?]);
        }
        let mut masters = self.inner.conn.cluster_masters().await?;
        masters.sort();
        masters.dedup();
        // A loop, not a `map` closure: a closure over borrowed items would leave the future
        // without `Send` for callers that spawn it (a higher-ranked lifetime rustc cannot
        // prove).
        let mut asks = Vec::with_capacity(masters.len());
        for master in &masters {
            asks.push(self.node_stats(Node::Master(master), &patterns));
        }
        futures_util::future::try_join_all(asks).await
    }

    async fn node_stats(&self, node: Node<'_>, patterns: &[String]) -> Result<NodeStats> {
        let address = self.node_address(node);
        let (info_cmd, dbsize_cmd) = (redis::cmd("INFO"), redis::cmd("DBSIZE"));
        let (info, keys) = tokio::try_join!(
            self.on_node::<Value>(node, &address, "INFO", &info_cmd),
            self.on_node::<u64>(node, &address, "DBSIZE", &dbsize_cmd),
        )?;
        let info = text(&info)
            .map(|text| ServerInfo::parse(&text))
            .ok_or_else(|| unexpected("INFO", &address, "a reply that is not text"))?;
        let mut streams = Vec::new();
        for pattern in patterns {
            streams.extend(self.scan_node(node, &address, pattern).await?);
        }
        streams.sort_unstable();
        streams.dedup();
        let mut asks = Vec::with_capacity(streams.len());
        for name in &streams {
            asks.push(self.stream_length(node, name));
        }
        let lengths: Vec<u64> = stream::iter(asks)
            .buffered(LENGTHS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(NodeStats {
            address,
            info,
            keys,
            streams,
            stream_entries: lengths.iter().fold(0, |t, n| t.saturating_add(*n)),
        })
    }

    /// `XLEN` of `name` on `node`; 0 for a key replaced by another type since the `SCAN`.
    async fn stream_length(&self, node: Node<'_>, name: &str) -> Result<u64> {
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(name);
        match self.on_node::<u64>(node, name, "XLEN", &cmd).await {
            Ok(length) => Ok(length),
            Err(err) if err.kind() == redstream_core::ErrorKind::WrongType => Ok(0),
            Err(err) => Err(err),
        }
    }

    /// The streams on `node` whose names match `pattern`, unsorted.
    async fn scan_node(&self, node: Node<'_>, address: &str, pattern: &str) -> Result<Vec<String>> {
        let master = match node {
            Node::Master(master) => master,
            Node::Own => {
                let mut conn = self.inner.conn.clone();
                return redstream_core::keys::scan(&mut conn, pattern, Some("stream"), address)
                    .await;
            }
        };
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .arg("TYPE")
                .arg("stream");
            let (next, batch): (u64, Vec<Vec<u8>>) =
                self.inner.conn.query_node(master, &cmd).await?;
            keys.extend(batch.into_iter().filter_map(|k| String::from_utf8(k).ok()));
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Sends `cmd` to `node`, as a read (it bypasses the circuit breaker).
    async fn on_node<T: FromRedisValue>(
        &self,
        node: Node<'_>,
        target: &str,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T> {
        match node {
            Node::Master(master) => self.inner.conn.query_node(master, cmd).await,
            Node::Own => self.commands(Traffic::Read).query(op, target, cmd).await,
        }
    }

    /// How [`NodeStats::address`] names `node`.
    fn node_address(&self, node: Node<'_>) -> String {
        match node {
            Node::Master(master) => master.to_string(),
            Node::Own => own_address(&self.inner.config.url, self.inner.conn.topology())
                .unwrap_or_else(|| self.inner.target.clone()),
        }
    }
}

/// `host:port` of a single server's URL (`unix:/path` for a socket); `None` under Sentinel or
/// for a URL redis-rs does not parse. Only the address is taken: the password stays behind.
fn own_address(url: &str, topology: Topology) -> Option<String> {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    if topology != Topology::Single {
        return None;
    }
    match url.into_connection_info().ok()?.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some(NodeAddress::new(host.trim_matches(['[', ']']), *port).to_string())
        }
        ConnectionAddr::Unix(path) => Some(format!("unix:{}", path.display())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_never_carry_the_password() {
        let single = own_address("redis://:secret@127.0.0.1:6390/2", Topology::Single);
        assert_eq!(single.as_deref(), Some("127.0.0.1:6390"));
        let tls = own_address("rediss://user:secret@cache.example:6380", Topology::Single);
        assert_eq!(tls.as_deref(), Some("cache.example:6380"));
        let v6 = own_address("redis://[::1]:6379", Topology::Single);
        assert_eq!(v6.as_deref(), Some("[::1]:6379"));
        assert_eq!(own_address("redis://h:1", Topology::Sentinel), None);
        assert_eq!(own_address("not a url", Topology::Single), None);
    }

    #[test]
    fn totals_add_up_and_unknowns_stay_unknown() {
        let node = |memory: Option<u64>, keys: u64, streams: &[&str], entries: u64| {
            let info = ServerInfo {
                used_memory: memory,
                ops_per_sec: Some(5),
                ..ServerInfo::default()
            };
            NodeStats {
                address: "n".to_owned(),
                info,
                keys,
                streams: streams.iter().map(|s| (*s).to_owned()).collect(),
                stream_entries: entries,
            }
        };
        let total = NodeStats::total(&[node(Some(10), 3, &["b"], 4), node(Some(5), 2, &["a"], 1)]);
        assert_eq!(total.info.used_memory, Some(15));
        assert_eq!(total.info.ops_per_sec, Some(10));
        assert_eq!(total.info.connected_clients, None);
        assert_eq!((total.keys, total.stream_entries), (5, 5));
        assert_eq!(total.streams, ["a", "b"]);
        let partial = NodeStats::total(&[node(Some(10), 0, &[], 0), node(None, 0, &[], 0)]);
        assert_eq!(partial.info.used_memory, None);
        assert_eq!(NodeStats::total(&[]).info.used_memory, Some(0));
    }
}
