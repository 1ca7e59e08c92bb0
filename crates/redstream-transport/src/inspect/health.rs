//! Health: [`ServerInfo`] from `INFO`, and `ping`.

use std::time::{Duration, Instant};

use redis::Value;
use redstream_core::Result;
use serde::Serialize;

use super::checks::unexpected;
use crate::commands::Traffic;
use crate::reply::text;
use crate::transport::RedisTransport;

/// A few fields of the server's `INFO` reply.
///
/// A field the server does not report (an old version, a proxy that filters `INFO`) is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The server's name: `server_name` where the server reports one (`valkey`), else `redis`
    /// for a server that reports `redis_version` only.
    pub server: Option<String>,
    /// The server's own version: `valkey_version` on Valkey (whose `redis_version` is the fixed
    /// `7.2.4` of the Redis it is compatible with), else `redis_version`, e.g. `7.0.15`.
    pub version: Option<String>,
    /// `redis_mode` (Redis) or `server_mode` (Valkey): `standalone`, `cluster` or `sentinel`.
    pub mode: Option<String>,
    /// `uptime_in_seconds`: seconds since the server started.
    pub uptime_seconds: Option<u64>,
    /// `used_memory`: bytes allocated by the server.
    pub used_memory: Option<u64>,
    /// `maxmemory`: the memory limit in bytes; `Some(0)` means no limit.
    pub maxmemory: Option<u64>,
    /// `maxmemory_policy`, e.g. `noeviction`. See [`ServerInfo::may_evict_streams`].
    pub maxmemory_policy: Option<String>,
    /// `connected_clients`: client connections, this one included.
    pub connected_clients: Option<u64>,
    /// `instantaneous_ops_per_sec`: commands per second, as the server samples it.
    pub ops_per_sec: Option<u64>,
    /// `role`: `master`, or `slave` for a replica (the word `INFO` uses).
    pub role: Option<String>,
    /// `keyspace_hits`: key lookups that found the key, since the server started (or
    /// `CONFIG RESETSTAT`).
    pub keyspace_hits: Option<u64>,
    /// `keyspace_misses`: key lookups that did not find the key.
    pub keyspace_misses: Option<u64>,
}

impl ServerInfo {
    /// Reads the fields from the text of an `INFO` reply. Unknown lines are ignored, and a
    /// field that is missing or does not parse is `None`.
    pub(super) fn parse(text: &str) -> Self {
        let mut info = Self::default();
        let (mut redis_version, mut own_version) = (None, None);
        for line in text.lines() {
            let line = line.trim();
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let text = || Some(value.to_owned());
            let number = || value.parse::<u64>().ok();
            match key {
                "redis_version" => redis_version = text(),
                "server_name" => info.server = text(),
                "valkey_version" => own_version = text(),
                "redis_mode" | "server_mode" => info.mode = text(),
                "uptime_in_seconds" => info.uptime_seconds = number(),
                "used_memory" => info.used_memory = number(),
                "maxmemory" => info.maxmemory = number(),
                "maxmemory_policy" => info.maxmemory_policy = text(),
                "connected_clients" => info.connected_clients = number(),
                "instantaneous_ops_per_sec" => info.ops_per_sec = number(),
                "role" => info.role = text(),
                "keyspace_hits" => info.keyspace_hits = number(),
                "keyspace_misses" => info.keyspace_misses = number(),
                _ => {}
            }
        }
        if info.server.is_none() && redis_version.is_some() {
            info.server = Some("redis".to_owned());
        }
        info.version = own_version.or(redis_version);
        info
    }

    /// Lookups that found their key, of all lookups (`keyspace_hits / (keyspace_hits +
    /// keyspace_misses)`), from 0 to 1; `None` when there was no lookup or the server does not
    /// report them.
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // a ratio; counts this large do not happen
    pub fn hit_ratio(&self) -> Option<f64> {
        let (hits, misses) = (self.keyspace_hits?, self.keyspace_misses?);
        let lookups = hits.saturating_add(misses);
        (lookups > 0).then(|| hits as f64 / lookups as f64)
    }

    /// The major version, e.g. `7` for `7.2.4`; `None` when the version is missing or odd.
    #[must_use]
    pub fn major_version(&self) -> Option<u32> {
        self.version.as_deref()?.split('.').next()?.parse().ok()
    }

    /// Whether the eviction policy (`allkeys-*`) lets Redis evict stream keys under memory
    /// pressure, which loses events silently. The transport also logs a warning at connect.
    #[must_use]
    pub fn may_evict_streams(&self) -> bool {
        self.maxmemory_policy
            .as_deref()
            .is_some_and(|p| p.starts_with("allkeys-"))
    }
}

impl RedisTransport {
    /// Sends one `PING` and returns the round-trip time.
    ///
    /// Fails with [`ErrorKind::Timeout`](redstream_core::ErrorKind::Timeout) when no answer comes
    /// within `response_timeout`, and with
    /// [`ErrorKind::Connection`](redstream_core::ErrorKind::Connection) when the server cannot be
    /// reached.
    pub async fn ping(&self) -> Result<Duration> {
        let reads = self.commands(Traffic::Read);
        let started = Instant::now();
        let reply: Value = reads
            .query("PING", &self.inner.target, &redis::cmd("PING"))
            .await?;
        let elapsed = started.elapsed();
        match text(&reply).as_deref() {
            Some("PONG") => Ok(elapsed),
            _ => Err(unexpected(
                "PING",
                &self.inner.target,
                "a reply other than PONG",
            )),
        }
    }

    /// Version, mode, memory and load of the server, from `INFO`; see [`ServerInfo`].
    ///
    /// On a Redis Cluster, the whole cluster: the name, version, mode, role, uptime and
    /// eviction policy of the first master (by address), and `used_memory`, `maxmemory`,
    /// `connected_clients`, `ops_per_sec`, `keyspace_hits` and `keyspace_misses` summed over
    /// the masters
    /// ([`nodes`](Self::nodes) has each master's own).
    pub async fn server_info(&self) -> Result<ServerInfo> {
        if self.inner.conn.topology() == redstream_core::connection::Topology::Cluster {
            return self.cluster_info().await;
        }
        let reply: Value = self
            .commands(Traffic::Read)
            .query("INFO", &self.inner.target, &redis::cmd("INFO"))
            .await?;
        let text = text(&reply)
            .ok_or_else(|| unexpected("INFO", &self.inner.target, "a reply that is not text"))?;
        Ok(ServerInfo::parse(&text))
    }

    /// [`server_info`](Self::server_info) on a cluster: `INFO` of each master, one at a time
    /// (redis-rs would send a plain `INFO` to every node and answer a map of them).
    async fn cluster_info(&self) -> Result<ServerInfo> {
        let conn = &self.inner.conn;
        let mut masters = conn.cluster_masters().await?;
        masters.sort();
        let mut infos = Vec::with_capacity(masters.len());
        for master in &masters {
            let reply: Value = conn.query_node(master, &redis::cmd("INFO")).await?;
            let text = text(&reply).ok_or_else(|| {
                unexpected("INFO", &master.to_string(), "a reply that is not text")
            })?;
            infos.push(ServerInfo::parse(&text));
        }
        let sum = |field: fn(&ServerInfo) -> Option<u64>| {
            infos
                .iter()
                .map(field)
                .try_fold(0u64, |total, value| Some(total.saturating_add(value?)))
        };
        let mut info = infos.first().cloned().unwrap_or_default();
        info.used_memory = sum(|i| i.used_memory);
        info.maxmemory = sum(|i| i.maxmemory);
        info.connected_clients = sum(|i| i.connected_clients);
        info.ops_per_sec = sum(|i| i.ops_per_sec);
        info.keyspace_hits = sum(|i| i.keyspace_hits);
        info.keyspace_misses = sum(|i| i.keyspace_misses);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_parsed_defensively() {
        let info = ServerInfo::parse(
            "# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\n\
             uptime_in_seconds:42\r\n# Memory\r\nused_memory:1024\r\nmaxmemory:0\r\n\
             maxmemory_policy:allkeys-lru\r\nconnected_clients:notanumber\r\ngarbage\r\n",
        );
        assert_eq!(info.version.as_deref(), Some("7.2.4"));
        assert_eq!(info.major_version(), Some(7));
        assert_eq!(info.mode.as_deref(), Some("standalone"));
        assert_eq!(info.uptime_seconds, Some(42));
        assert_eq!(info.used_memory, Some(1024));
        assert_eq!(info.maxmemory, Some(0));
        assert!(info.may_evict_streams());
        assert_eq!(info.connected_clients, None);
        assert_eq!(info.ops_per_sec, None);
        assert_eq!(ServerInfo::parse(""), ServerInfo::default());
        assert_eq!(ServerInfo::parse("redis_version:x").major_version(), None);
        assert_eq!(info.server.as_deref(), Some("redis"));
        assert_eq!(info.role, None);
        let replica = ServerInfo::parse("# Replication\nrole:slave\nmaster_host:10.0.0.1\n");
        assert_eq!(replica.role.as_deref(), Some("slave"));
        assert_eq!(info.hit_ratio(), None, "not reported");
        let stats = ServerInfo::parse("# Stats\r\nkeyspace_hits:3\r\nkeyspace_misses:1\r\n");
        assert_eq!(
            (stats.keyspace_hits, stats.keyspace_misses),
            (Some(3), Some(1))
        );
        assert_eq!(stats.hit_ratio(), Some(0.75));
        let idle = ServerInfo::parse("keyspace_hits:0\r\nkeyspace_misses:0\r\n");
        assert_eq!(idle.hit_ratio(), None, "no lookups");
    }

    #[test]
    fn odd_info_text_never_panics() {
        for text in [
            ":\r\n",
            "::::",
            "used_memory:-1\r\nmaxmemory:18446744073709551616\r\n",
            "redis_version:\r\nrole:\r\n",
            "\u{0}\u{ff}\r\n# \r\ndb0:keys=1,expires=0\r\n",
            "instantaneous_ops_per_sec:1.5\nconnected_clients: 3\n",
        ] {
            let info = ServerInfo::parse(text);
            assert_eq!(info.used_memory, None, "{text:?}");
            assert_eq!(info.maxmemory, None, "{text:?}");
            assert_eq!(info.ops_per_sec, None, "{text:?}");
        }
        assert_eq!(
            ServerInfo::parse("redis_version:\r\n").major_version(),
            None
        );
    }

    #[test]
    fn valkey_reports_its_own_name_version_and_mode() {
        let info = ServerInfo::parse(
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n\
             server_mode:standalone\r\n",
        );
        assert_eq!(info.server.as_deref(), Some("valkey"));
        assert_eq!(info.version.as_deref(), Some("8.0.1"));
        assert_eq!(info.major_version(), Some(8));
        assert_eq!(info.mode.as_deref(), Some("standalone"));
    }
}
