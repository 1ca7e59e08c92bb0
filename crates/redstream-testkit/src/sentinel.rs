//! [`RedisSentinel`]: a private Sentinel group (a master, its replicas and three sentinels),
//! which a test may fail over.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;

use crate::builder::{RedisServerBuilder, quote};
use crate::error::{Error, Result};
use crate::server::{RedisServer, info_value};
use crate::wait::wait_until;

/// Configures a [`RedisSentinel`] group before it is started. Obtained from
/// [`RedisSentinel::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct RedisSentinelBuilder {
    master_name: String,
    replicas: usize,
    sentinels: usize,
    quorum: Option<usize>,
    down_after: Duration,
    failover_timeout: Duration,
    ready_timeout: Duration,
    password: Option<String>,
    sentinel_password: Option<String>,
    data: RedisServerBuilder,
    binary: Option<PathBuf>,
}

impl Default for RedisSentinelBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RedisSentinelBuilder {
    /// A master named `mymaster` with two replicas, watched by three sentinels with a quorum of
    /// two; a master is considered down after 1 s without an answer, and a failover may take
    /// 3 s before another is tried.
    pub fn new() -> Self {
        Self {
            master_name: "mymaster".to_owned(),
            replicas: 2,
            sentinels: 3,
            quorum: None,
            down_after: Duration::from_secs(1),
            failover_timeout: Duration::from_secs(3),
            ready_timeout: Duration::from_secs(60),
            password: None,
            sentinel_password: None,
            data: RedisServerBuilder::new(),
            binary: None,
        }
    }

    /// The name the sentinels know the master by (default `mymaster`).
    pub fn master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = name.into();
        self
    }

    /// How many replicas the master has (default 2; at least 1 for a failover).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// How many sentinels watch the master (default 3).
    pub fn sentinels(mut self, sentinels: usize) -> Self {
        self.sentinels = sentinels;
        self
    }

    /// How many sentinels must agree that the master is down (default: a majority).
    pub fn quorum(mut self, quorum: usize) -> Self {
        self.quorum = Some(quorum);
        self
    }

    /// `down-after-milliseconds` (default 1 s): how long the master may not answer before a
    /// sentinel considers it down.
    pub fn down_after(mut self, after: Duration) -> Self {
        self.down_after = after;
        self
    }

    /// `failover-timeout` (default 3 s).
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// How long [`start`](Self::start) and the failover helpers wait for the group to settle
    /// before they fail (default 60 s). A guard against hangs, not a speed requirement.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The password of the data nodes (`requirepass` and `masterauth`; the sentinels use it
    /// too, `sentinel auth-pass`).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The password of the sentinels themselves (`requirepass` on each, and
    /// `sentinel sentinel-pass` between them).
    pub fn sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// Turns on the append-only file on the data nodes. See
    /// [`RedisServerBuilder::appendonly`].
    pub fn appendonly(mut self, enabled: bool) -> Self {
        self.data = self.data.appendonly(enabled);
        self
    }

    /// Appends a `redis.conf` directive to the data nodes (not the sentinels).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.data = self.data.config(key, value);
        self
    }

    /// Runs this binary (for the data nodes and, with `--sentinel`, the sentinels).
    pub fn redis_server_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts the master, then the replicas (returning once they are in sync), then the
    /// sentinels, and waits until every sentinel knows the master, every replica and every
    /// other sentinel.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for no sentinels, a quorum of zero or above the number of
    /// sentinels, or a master name with spaces; the errors of [`RedisServerBuilder::start`];
    /// [`Error::Timeout`] when the group does not settle.
    pub async fn start(self) -> Result<RedisSentinel> {
        let quorum = self.quorum.unwrap_or(self.sentinels / 2 + 1);
        if self.sentinels == 0 || quorum == 0 || quorum > self.sentinels {
            return Err(Error::InvalidConfig(format!(
                "{} sentinels with a quorum of {quorum}",
                self.sentinels
            )));
        }
        if self.master_name.is_empty()
            || self
                .master_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::InvalidConfig(format!(
                "master name {:?} must be non-empty and contain no whitespace",
                self.master_name
            )));
        }
        let started = Instant::now();
        let mut data = self.data.ready_timeout(self.ready_timeout);
        if let Some(binary) = &self.binary {
            data = data.redis_server_binary(binary.clone());
        }
        if let Some(password) = &self.password {
            data = data
                .password(password.clone())
                .config("masterauth", quote(password));
        }
        let master = data.clone().start().await?;
        let replicas =
            try_join_all((0..self.replicas).map(|_| data.clone().replica_of(&master).start()))
                .await?;
        for replica in &replicas {
            master.wait_for_replica(replica, self.ready_timeout).await?;
        }

        let name = &self.master_name;
        let mut sentinel = RedisServerBuilder::new()
            .ready_timeout(self.ready_timeout)
            .config(
                "sentinel",
                format!(
                    "monitor {name} {} {} {quorum}",
                    master.host(),
                    master.port()
                ),
            )
            .config(
                "sentinel",
                format!(
                    "down-after-milliseconds {name} {}",
                    self.down_after.as_millis()
                ),
            )
            .config(
                "sentinel",
                format!(
                    "failover-timeout {name} {}",
                    self.failover_timeout.as_millis()
                ),
            )
            .config(
                "sentinel",
                format!("parallel-syncs {name} {}", self.replicas.max(1)),
            );
        if let Some(password) = &self.password {
            sentinel = sentinel.config("sentinel", format!("auth-pass {name} {}", quote(password)));
        }
        if let Some(password) = &self.sentinel_password {
            sentinel = sentinel
                .password(password.clone())
                .config("sentinel", format!("sentinel-pass {}", quote(password)));
        }
        if let Some(binary) = &self.binary {
            sentinel = sentinel.redis_server_binary(binary.clone());
        }
        sentinel.settings.sentinel = true;
        let sentinels = try_join_all((0..self.sentinels).map(|_| sentinel.clone().start())).await?;

        let mut data_nodes = vec![master];
        data_nodes.extend(replicas);
        let group = RedisSentinel {
            master_name: self.master_name,
            data: data_nodes,
            sentinels,
            password: self.password,
            sentinel_password: self.sentinel_password,
            timeout: self.ready_timeout,
        };
        wait_until(
            "the sentinels to know the whole group",
            group.timeout,
            || group.check_discovered(),
        )
        .await?;
        group.wait_until_stable().await?;
        tracing::debug!(elapsed = ?started.elapsed(), "test sentinel group ready");
        Ok(group)
    }
}

/// A private Sentinel group: a master with replicas (plain [`RedisServer`]s) watched by
/// sentinels (`redis-server --sentinel`), all on free ports of `127.0.0.1`.
///
/// Point the code under test at [`url`](Self::url)
/// (`redis-sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/mymaster`) or at
/// [`sentinel_client`](Self::sentinel_client); break it with
/// [`kill_master`](Self::kill_master) (a crash: the sentinels elect a replica) or
/// [`failover`](Self::failover) (`SENTINEL FAILOVER`). Both return the new master once the
/// group has settled. Dropping the group kills every process.
///
/// ```no_run
/// # async fn demo() -> redstream_testkit::Result<()> {
/// use redstream_testkit::RedisSentinel;
///
/// let group = RedisSentinel::start().await?;
/// let old = group.master().await?.port();
/// let new = group.kill_master().await?;
/// assert_ne!(new.port(), old);
/// # Ok(())
/// # }
/// ```
pub struct RedisSentinel {
    master_name: String,
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    password: Option<String>,
    sentinel_password: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for RedisSentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSentinel")
            .field("url", &self.url())
            .field("data_nodes", &self.data)
            .field("sentinels", &self.sentinels)
            .finish_non_exhaustive()
    }
}

impl RedisSentinel {
    /// Starts a group with default settings (a master, two replicas, three sentinels).
    /// Shorthand for `RedisSentinel::builder().start().await`.
    ///
    /// # Errors
    ///
    /// See [`RedisSentinelBuilder::start`].
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// A builder for another shape or other settings.
    pub fn builder() -> RedisSentinelBuilder {
        RedisSentinelBuilder::new()
    }

    /// `redis-sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/<master name>`: every
    /// sentinel and the master name, without passwords (see [`password`](Self::password) and
    /// [`sentinel_password`](Self::sentinel_password)).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("{}:{}", s.host(), s.port()))
            .collect();
        format!("redis-sentinel://{}/{}", hosts.join(","), self.master_name)
    }

    /// The `redis://` URL of each sentinel, with the sentinel password if one is set.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The name the sentinels know the master by.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The data nodes: the first was the master when the group started, the others its
    /// replicas. Roles change with failovers: ask [`master`](Self::master).
    pub fn data_nodes(&self) -> &[RedisServer] {
        &self.data
    }

    /// The sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The data nodes' password, if one was set.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The sentinels' password, if one was set.
    pub fn sentinel_password(&self) -> Option<&str> {
        self.sentinel_password.as_deref()
    }

    /// A redis-rs Sentinel client for the master (`SentinelServerType::Master`), which asks
    /// the sentinels for the master's address whenever it connects, with the data nodes'
    /// password.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when redis-rs refuses the sentinel URLs.
    pub fn sentinel_client(&self) -> Result<redis::sentinel::SentinelClient> {
        let mut node = redis::sentinel::SentinelNodeConnectionInfo::default();
        if let Some(password) = &self.password {
            node = node.set_redis_connection_info(
                redis::RedisConnectionInfo::default().set_password(password),
            );
        }
        Ok(redis::sentinel::SentinelClient::build(
            self.sentinel_urls(),
            self.master_name.clone(),
            Some(node),
            redis::sentinel::SentinelServerType::Master,
        )?)
    }

    /// The data node the sentinels name as the master (`SENTINEL GET-MASTER-ADDR-BY-NAME`,
    /// asked of the first running sentinel that answers).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when no sentinel answers or the address is none of the data
    /// nodes.
    pub async fn master(&self) -> Result<&RedisServer> {
        let mut last = String::from("no sentinel is running");
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            match self.master_port_from(sentinel).await {
                Ok(port) => {
                    return self.data_node(port).ok_or_else(|| {
                        Error::Unsupported(format!("the master's port {port} is no data node"))
                    });
                }
                Err(err) => last = err,
            }
        }
        Err(Error::Unsupported(format!(
            "no sentinel names the master: {last}"
        )))
    }

    /// Kills the master with `SIGKILL` and waits until the sentinels have promoted a replica
    /// and the group has settled (see [`wait_until_stable`](Self::wait_until_stable));
    /// returns the new master.
    ///
    /// Detection takes `down-after-milliseconds`, the election and promotion about a second
    /// more. The killed node stays down until it is restarted (then the sentinels make it a
    /// replica, about 10 s after it is back).
    ///
    /// # Errors
    ///
    /// Those of [`master`](Self::master) and [`RedisServer::kill`], and [`Error::Timeout`]
    /// when no replica is promoted.
    pub async fn kill_master(&self) -> Result<&RedisServer> {
        let old = self.master().await?;
        let old_port = old.port();
        old.kill()?;
        self.wait_for_new_master(old_port).await
    }

    /// Stops the master with `SIGSTOP` (its process hangs: connections stay open, nothing
    /// answers) and waits until the sentinels have promoted a replica and the other nodes
    /// follow it; returns the new master. The paused node still believes it is the master:
    /// [`RedisServer::resume`] it and the sentinels make it a replica (about 10 s later), or
    /// leave it paused to see what a client does while a hung master holds its connections.
    ///
    /// # Errors
    ///
    /// Those of [`master`](Self::master) and [`RedisServer::pause`], and [`Error::Timeout`]
    /// when no replica is promoted.
    pub async fn pause_master(&self) -> Result<&RedisServer> {
        let old = self.master().await?;
        let old_port = old.port();
        old.pause()?;
        self.wait_for_new_master(old_port).await
    }

    /// `SENTINEL FAILOVER <master name>`: a failover without a failure. Waits until the
    /// sentinels name a new master and the group has settled, including the old master
    /// following the new one (the sentinels reconfigure it about 10 s after the switch);
    /// returns the new master.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when the sentinel refuses for any reason but `NOGOODSLAVE` (which it
    /// is asked again after), [`Error::Timeout`] when it keeps saying `NOGOODSLAVE` (a group
    /// without replicas) or the group does not settle.
    pub async fn failover(&self) -> Result<&RedisServer> {
        let old_port = self.master().await?.port();
        let sentinel = self
            .sentinels
            .iter()
            .find(|s| s.is_running())
            .ok_or_else(|| Error::Unsupported("no sentinel is running".to_owned()))?;
        let mut failover = redis::cmd("SENTINEL");
        failover.arg("FAILOVER").arg(&self.master_name);
        let failover = &failover;
        // A sentinel refuses with `NOGOODSLAVE` while no replica looks fit to it: soon after an
        // earlier switch it may not have heard from the new master's replicas recently enough
        // (it asks a master for its replicas every 10 s). Asked again until it accepts, within
        // the group's timeout; any other refusal is returned at once.
        let asked = wait_until(
            "a sentinel to accept SENTINEL FAILOVER",
            self.timeout,
            || async move {
                match sentinel.admin::<()>(failover).await {
                    Err(err) if err.to_string().contains("NOGOODSLAVE") => Err(err.to_string()),
                    result => Ok(result),
                }
            },
        )
        .await?;
        asked?;
        self.wait_for_new_master(old_port).await
    }

    /// Waits until every running sentinel names the same master, flags it `master` and
    /// nothing else (no `s_down`, `o_down`, failover in progress), that node reports
    /// `role:master`, and every other running data node (not [paused](RedisServer::pause))
    /// replicates it with its link up.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], with the last reason the group was not settled.
    pub async fn wait_until_stable(&self) -> Result<()> {
        wait_until("the sentinel group to settle", self.timeout, || async {
            self.check_stable().await.map(|_| ())
        })
        .await
    }

    async fn wait_for_new_master(&self, old_port: u16) -> Result<&RedisServer> {
        let what = format!("the sentinels to promote a replica of port {old_port}");
        wait_until(what, self.timeout, || async {
            let master = self.check_stable().await?;
            if master.port() == old_port {
                return Err(format!("the master is still port {old_port}"));
            }
            Ok(master)
        })
        .await
    }

    fn data_node(&self, port: u16) -> Option<&RedisServer> {
        self.data.iter().find(|node| node.port() == port)
    }

    async fn master_port_from(&self, sentinel: &RedisServer) -> std::result::Result<u16, String> {
        let addr: Option<(String, u16)> = sentinel
            .admin(
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&self.master_name),
            )
            .await
            .map_err(|err| format!("sentinel on port {}: {err}", sentinel.port()))?;
        addr.map(|(_, port)| port)
            .ok_or_else(|| format!("sentinel on port {} knows no master", sentinel.port()))
    }

    /// `SENTINEL MASTER <name>` as field/value pairs.
    async fn master_state(
        &self,
        sentinel: &RedisServer,
    ) -> std::result::Result<Vec<(String, String)>, String> {
        let fields: Vec<String> = sentinel
            .admin(redis::cmd("SENTINEL").arg("MASTER").arg(&self.master_name))
            .await
            .map_err(|err| format!("sentinel on port {}: {err}", sentinel.port()))?;
        Ok(fields
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect())
    }

    /// `Ok` once every sentinel knows every running data node and every other sentinel.
    async fn check_discovered(&self) -> std::result::Result<(), String> {
        let replicas = self.data.len() - 1;
        for sentinel in &self.sentinels {
            let state = self.master_state(sentinel).await?;
            let field = |name: &str| {
                state
                    .iter()
                    .find(|(key, _)| key == name)
                    .map_or("", |(_, value)| value.as_str())
            };
            let known_replicas = field("num-slaves").parse::<usize>().unwrap_or(0);
            let known_sentinels = field("num-other-sentinels").parse::<usize>().unwrap_or(0);
            if known_replicas < replicas || known_sentinels + 1 < self.sentinels.len() {
                return Err(format!(
                    "sentinel on port {} knows {known_replicas} of {replicas} replicas and {} \
                     of {} sentinels",
                    sentinel.port(),
                    known_sentinels + 1,
                    self.sentinels.len()
                ));
            }
        }
        Ok(())
    }

    /// `Ok(master)` once the group is settled (see
    /// [`wait_until_stable`](Self::wait_until_stable)), else why not.
    async fn check_stable(&self) -> std::result::Result<&RedisServer, String> {
        let mut agreed: Option<u16> = None;
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let port = self.master_port_from(sentinel).await?;
            match agreed {
                Some(agreed) if agreed != port => {
                    return Err(format!("the sentinels name ports {agreed} and {port}"));
                }
                _ => agreed = Some(port),
            }
            let state = self.master_state(sentinel).await?;
            let flags = state
                .iter()
                .find(|(key, _)| key == "flags")
                .map_or("", |(_, value)| value.as_str());
            if flags != "master" {
                return Err(format!(
                    "sentinel on port {} flags the master {flags}",
                    sentinel.port()
                ));
            }
        }
        let port = agreed.ok_or("no sentinel is running")?;
        let master = self
            .data_node(port)
            .ok_or_else(|| format!("the master's port {port} is no data node"))?;
        if !master.is_running() || master.is_paused() {
            return Err(format!("the master on port {port} is not running"));
        }
        let role = master
            .info_field("replication", "role")
            .await
            .map_err(|err| format!("master on port {port}: {err}"))?;
        if role.as_deref() != Some("master") {
            return Err(format!("the node on port {port} reports role {role:?}"));
        }
        for node in self
            .data
            .iter()
            .filter(|n| n.is_running() && !n.is_paused() && n.port() != port)
        {
            let info: String = node
                .admin(redis::cmd("INFO").arg("replication"))
                .await
                .map_err(|err| format!("data node on port {}: {err}", node.port()))?;
            let following = info_value(&info, "role") == Some("slave")
                && info_value(&info, "master_port") == Some(port.to_string().as_str())
                && info_value(&info, "master_link_status") == Some("up");
            if !following {
                return Err(format!(
                    "data node on port {} does not follow port {port} yet (role {:?}, master \
                     port {:?}, link {:?})",
                    node.port(),
                    info_value(&info, "role"),
                    info_value(&info, "master_port"),
                    info_value(&info, "master_link_status")
                ));
            }
        }
        Ok(master)
    }
}
