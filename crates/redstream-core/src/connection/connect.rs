//! [`connect`] and [`Connection`]: one connection type for a single server, a cluster and a
//! Sentinel-managed master.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, FromRedisValue, IntoConnectionInfo,
    Pipeline, ProtocolVersion, RedisError, RedisFuture, RedisResult, Script, ServerErrorKind,
    TlsCertificates, TlsMode, Value,
};

use super::cluster::parse_cluster_nodes;
use super::endpoint::{Credentials, Endpoint, NodeAddress, Topology};
use super::options::ConnectionOptions;
use super::resp3_client;
use super::sentinel::{SentinelConnection, SwitchWatch};
use super::single::SingleConnection;
use crate::error::{Error, ErrorKind, Result};
use crate::redact::RedactedUrl;
use crate::redis_tls::{ensure_crypto_provider, open_client};

/// Connects to the Redis that `options` names, and checks that it answers.
///
/// - A single server (`redis://`, `rediss://`, `redis+unix://`, `unix://`): one RESP3
///   multiplexed connection, replaced before the next command once it closes; a failed
///   reconnection is tried once more (see the [module docs](super)).
/// - A cluster (`redis-cluster://`, `rediss-cluster://`): redis-rs's async
///   `ClusterConnection`, which discovers the cluster from any seed that answers, routes
///   each command to the master of its key's slot, follows `MOVED` and `ASK`, and refreshes
///   the slot map when nodes fail or slots move.
/// - Sentinel (`redis-sentinel://`, `rediss-sentinel://`): a connection to the master the
///   sentinels name, replaced by asking them again when it closes or a command is refused
///   with `READONLY` (see the [module docs](super)).
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when
/// [`validate`](ConnectionOptions::validate) fails; otherwise the classified error of the
/// first connection (`Connection`, `Timeout`, `Auth`...), whose target is the redacted URL.
pub async fn connect(options: &ConnectionOptions) -> Result<Connection> {
    // Boxed: the Sentinel path nests deep futures (discovery, ROLE check, connection), and
    // callers that await this inside their own deep futures would otherwise reach rustc's
    // query depth limit when their binaries are built.
    Box::pin(connect_unboxed(options)).await
}

async fn connect_unboxed(options: &ConnectionOptions) -> Result<Connection> {
    options.validate()?;
    let opener = Arc::new(Opener::new(options)?);
    let mut connection = Connection {
        link: opener.open(options.response_timeout).await?,
        opener,
    };
    connection.check().await?;
    Ok(connection)
}

/// A connection to Redis, whatever its topology: clone it freely (clones share the
/// connection and are cheap), and use it wherever redis-rs takes a `ConnectionLike`
/// (`cmd.query_async(&mut conn)`, pipelines, `Script::invoke_async`).
///
/// Commands are multiplexed: one that blocks (`XREADGROUP ... BLOCK`, `BLPOP`) holds up every
/// command behind it, so blocking commands go to a [`dedicated`](Self::dedicated) connection.
#[derive(Clone)]
pub struct Connection {
    link: Link,
    opener: Arc<Opener>,
}

#[derive(Clone)]
enum Link {
    Single(SingleConnection),
    Cluster(ClusterConnection),
    Sentinel(SentinelConnection),
    /// One socket that is never replaced ([`Connection::pinned`]), to a single server or to
    /// the master the sentinels named when it was opened.
    Pinned(MultiplexedConnection, Topology),
}

/// What a cluster client is built from.
struct ClusterSeeds {
    tls: bool,
    seeds: Vec<NodeAddress>,
    credentials: Credentials,
    certificates: Option<TlsCertificates>,
}

/// What opens more connections like the first one.
struct Opener {
    target: String,
    connect_timeout: Duration,
    kind: OpenerKind,
}

enum OpenerKind {
    Single {
        client: Client,
    },
    Cluster(ClusterSeeds),
    Sentinel {
        discovery: Arc<tokio::sync::Mutex<SentinelClient>>,
        watch: SwitchWatch,
        db: i64,
    },
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("topology", &self.topology())
            .field("target", &self.opener.target)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Whether this is a single server, a cluster or a Sentinel-managed master; callers pick
    /// the key layout by it ([`KeyLayout::Cluster`](crate::keys::KeyLayout) on a cluster).
    #[must_use]
    pub fn topology(&self) -> Topology {
        match self.link {
            Link::Single(_) => Topology::Single,
            Link::Cluster(_) => Topology::Cluster,
            Link::Sentinel(_) => Topology::Sentinel,
            Link::Pinned(_, topology) => topology,
        }
    }

    /// The URL connected to, with its password redacted: the target to put in errors.
    #[must_use]
    pub fn target(&self) -> &str {
        &self.opener.target
    }

    /// A new connection of its own to the same Redis, with `response_timeout` instead of the
    /// options' (for a blocking command, its block time plus the usual timeout).
    ///
    /// - Single server: a new self-healing connection (its own socket, replaced like the
    ///   shared one's).
    /// - Sentinel: a new connection to the current master, which follows failovers like the
    ///   shared one.
    /// - Cluster: a new `ClusterConnection`, with its own connection to each node, so a
    ///   blocking command holds up nothing of the shared connection. It routes by key like any
    ///   cluster connection (a blocking read of several streams needs them in one slot) and
    ///   keeps following `MOVED` and failovers, which a plain connection to the node owning a
    ///   slot would not.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a zero
    /// `response_timeout`; otherwise as for [`connect`].
    pub async fn dedicated(&self, response_timeout: Duration) -> Result<Connection> {
        if response_timeout.is_zero() {
            return Err(Error::invalid_input(
                "response timeout of a dedicated connection",
                "is zero; give the block time plus the usual response timeout",
            ));
        }
        let mut connection = Connection {
            // Boxed for the reason `connect` is.
            link: Box::pin(self.opener.open(response_timeout)).await?,
            opener: Arc::clone(&self.opener),
        };
        connection.check().await?;
        Ok(connection)
    }

    /// A new connection of its own that is never replaced: once its socket fails, every later
    /// command on it fails too. For state that lives in one connection on the server (`WATCH`,
    /// `MULTI`): a self-healing connection could carry the commands after a reconnection to a
    /// new socket where that state is gone, and a `MULTI` lost that way would let the writes
    /// queued behind it run one by one.
    ///
    /// - Single server: one multiplexed connection.
    /// - Sentinel: one multiplexed connection to the master the sentinels name now.
    /// - Cluster: a new `ClusterConnection`, as [`dedicated`](Self::dedicated) gives: redis-rs
    ///   offers no connection pinned to one node that still routes by slot, so on a cluster
    ///   a node's connection may be replaced between two calls (callers detect it: an `EXEC`
    ///   answered "without MULTI").
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a zero
    /// `response_timeout`; otherwise as for [`connect`].
    pub async fn pinned(&self, response_timeout: Duration) -> Result<Connection> {
        if response_timeout.is_zero() {
            return Err(Error::invalid_input(
                "response timeout of a pinned connection",
                "is zero",
            ));
        }
        let mut connection = Connection {
            link: Box::pin(self.opener.open_pinned(response_timeout)).await?,
            opener: Arc::clone(&self.opener),
        };
        connection.check().await?;
        Ok(connection)
    }

    /// The masters of a cluster that serve slots, as a node sees them now (`CLUSTER NODES`):
    /// where a keyspace-wide command such as `SCAN` must run, one master at a time, with
    /// [`query_node`](Self::query_node). Masters marked failed are left out.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) on a connection that is not
    /// to a cluster (its only master is the connection itself); the classified error of
    /// `CLUSTER NODES` otherwise.
    pub async fn cluster_masters(&self) -> Result<Vec<NodeAddress>> {
        let mut cluster = self.cluster("cluster_masters")?;
        let text: String = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await
            .and_then(|value| String::from_redis_value(value).map_err(RedisError::from))
            .map_err(|err| Error::from_redis("CLUSTER NODES", self.target().to_owned(), err))?;
        parse_cluster_nodes(&text).map_err(|why| {
            Error::backend(
                ErrorKind::Unexpected,
                "CLUSTER NODES",
                self.target().to_owned(),
                why,
            )
        })
    }

    /// Runs `cmd` on the cluster node at `node` (one of
    /// [`cluster_masters`](Self::cluster_masters)), whatever keys it names.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) on a connection that is not
    /// to a cluster; the classified error of the command otherwise.
    pub async fn query_node<T: FromRedisValue>(&self, node: &NodeAddress, cmd: &Cmd) -> Result<T> {
        let mut cluster = self.cluster("query_node")?;
        let target = format!("{} (node {node})", self.target());
        let value = cluster
            .route_command(
                cmd.clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                }),
            )
            .await
            .map_err(|err| Error::from_redis("command", target.clone(), err))?;
        T::from_redis_value(value)
            .map_err(|err| Error::from_redis("command", target, RedisError::from(err)))
    }

    /// Sends `cmd` and converts its reply, as [`Cmd::query_async`] does on this connection, but
    /// through a shared reference and, on a single server, without boxing the call: the
    /// command goes straight to the current multiplexed connection (this is every publish's
    /// path).
    ///
    /// # Errors
    ///
    /// The Redis error of the command, or of the reply's conversion to `T`.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> redis::RedisResult<T> {
        let value = match &self.link {
            // `SingleConnection::send_command`, written out: every future nested in another
            // is one more state read, on a cache line of its own, at each poll of every
            // command (a state store `get` from 64 tasks counted 1.2 first-level cache misses
            // per level under cachegrind).
            Link::Single(single) => {
                let (generation, mut conn) = match single.live() {
                    Some(live) => live,
                    None => single.replace().await?,
                };
                let result = conn.send_packed_command(cmd).await;
                if let Err(err) = &result {
                    single.after_error(generation, err);
                }
                result?
            }
            // Boxed, through `ConnectionLike`: the Sentinel connection's future (which may
            // ask the sentinels) is too deep to nest in every caller's future.
            _ => self.clone().req_packed_command(cmd).await?,
        };
        Ok(redis::from_redis_value(value.extract_error()?)?)
    }

    /// Sends `evalsha`, an `EVALSHA` of `script` that the caller built (at its exact size,
    /// which redis-rs's `ScriptInvocation` cannot do), and converts its reply as
    /// [`query`](Self::query) does. On `NOSCRIPT` (a restarted or failed-over server, `SCRIPT
    /// FLUSH`) it loads the script and sends the call once more, as
    /// [`ScriptInvocation::invoke_async`](redis::ScriptInvocation::invoke_async) does; a server
    /// that answered `NOSCRIPT` ran nothing of it.
    ///
    /// # Errors
    ///
    /// The Redis error of the call or of `SCRIPT LOAD`, or of the reply's conversion to `T`.
    pub async fn evalsha<T: FromRedisValue>(
        &self,
        script: &Script,
        evalsha: &Cmd,
    ) -> redis::RedisResult<T> {
        match self.query::<T>(evalsha).await {
            Err(err) if err.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load_async(&mut self.clone()).await?;
                self.query(evalsha).await
            }
            result => result,
        }
    }

    fn cluster(&self, what: &str) -> Result<ClusterConnection> {
        match &self.link {
            Link::Cluster(cluster) => Ok(cluster.clone()),
            _ => Err(Error::invalid_input(
                format!("call {what}"),
                format!(
                    "on a {} connection ({}); it applies only to a cluster \
                     (redis-cluster:// URLs)",
                    self.topology(),
                    self.target()
                ),
            )),
        }
    }

    /// One `PING`, so that a connection that cannot serve fails now.
    async fn check(&mut self) -> Result<()> {
        let target = self.opener.target.clone();
        redis::cmd("PING")
            .query_async::<()>(self)
            .await
            .map_err(|err| Error::from_redis("connect", target, err))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.link {
            Link::Single(conn) => Box::pin(conn.send_command(cmd)),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
            Link::Sentinel(conn) => Box::pin(conn.send_command(cmd)),
            Link::Pinned(conn, _) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.link {
            Link::Single(conn) => Box::pin(conn.send_pipeline(pipeline, offset, count)),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(conn) => Box::pin(conn.send_pipeline(pipeline, offset, count)),
            Link::Pinned(conn, _) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(conn) => conn.db(),
            Link::Cluster(conn) => conn.get_db(),
            Link::Sentinel(conn) => conn.db(),
            Link::Pinned(conn, _) => conn.get_db(),
        }
    }
}

impl Opener {
    fn new(options: &ConnectionOptions) -> Result<Self> {
        let target = RedactedUrl(&options.url).to_string();
        let open_error = |err: RedisError| Error::from_redis("open client", target.clone(), err);
        let kind = match options.endpoint()? {
            Endpoint::Single { url } => {
                let client = open_client(&url, &options.tls)?;
                OpenerKind::Single {
                    client: resp3_client(&client, &url)?,
                }
            }
            Endpoint::Cluster {
                tls,
                seeds,
                credentials,
            } => {
                let seeds = ClusterSeeds {
                    tls,
                    seeds,
                    credentials,
                    certificates: options.tls.certificates(&options.url)?,
                };
                // Checked now, so that a refused configuration fails here and not later.
                seeds
                    .client(options.connect_timeout, options.response_timeout)
                    .map_err(open_error)?;
                OpenerKind::Cluster(seeds)
            }
            Endpoint::Sentinel {
                tls,
                sentinels,
                master_name,
                db,
                credentials,
            } => {
                let certificates = options.tls.certificates(&options.url)?;
                if tls {
                    ensure_crypto_provider();
                }
                let addresses = sentinels
                    .iter()
                    .map(|node| node_addr(tls, node))
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(open_error)?;
                let mut builder = SentinelClientBuilder::new(
                    addresses,
                    master_name.clone(),
                    SentinelServerType::Master,
                )
                .map_err(open_error)?
                // RESP3, so that a closed connection to the master is noticed at once.
                .set_client_to_redis_protocol(ProtocolVersion::RESP3)
                .set_client_to_redis_db(db);
                if let Some(username) = &credentials.username {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = &credentials.password {
                    builder = builder.set_client_to_redis_password(password);
                }
                if let Some(username) = &options.sentinel_username {
                    builder = builder.set_client_to_sentinel_username(username);
                }
                if let Some(password) = &options.sentinel_password {
                    builder = builder.set_client_to_sentinel_password(password);
                }
                if tls {
                    builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
                    if let Some(certificates) = &certificates {
                        builder = builder
                            .set_client_to_redis_certificates(certificates.clone())
                            .set_client_to_sentinel_certificates(certificates.clone());
                    }
                }
                // Clients to each sentinel for its `+switch-master` announcements.
                let mut sentinel_clients = Vec::with_capacity(sentinels.len());
                for node in &sentinels {
                    let mut settings = redis::RedisConnectionInfo::default();
                    if let Some(username) = &options.sentinel_username {
                        settings = settings.set_username(username);
                    }
                    if let Some(password) = &options.sentinel_password {
                        settings = settings.set_password(password);
                    }
                    let info = node_addr(tls, node)
                        .and_then(|addr| addr.into_connection_info())
                        .map_err(open_error)?
                        .set_redis_settings(settings);
                    let client = match &certificates {
                        Some(certificates) if tls => {
                            Client::build_with_tls(info, certificates.clone())
                        }
                        _ => Client::open(info),
                    };
                    sentinel_clients.push(client.map_err(open_error)?);
                }
                OpenerKind::Sentinel {
                    discovery: Arc::new(tokio::sync::Mutex::new(
                        builder.build().map_err(open_error)?,
                    )),
                    watch: SwitchWatch {
                        sentinels: sentinel_clients,
                        master_name,
                    },
                    db,
                }
            }
        };
        Ok(Self {
            target,
            connect_timeout: options.connect_timeout,
            kind,
        })
    }

    /// A new connection with `response_timeout`.
    async fn open(&self, response_timeout: Duration) -> Result<Link> {
        let connect_error =
            |err: RedisError| Error::from_redis("connect", self.target.clone(), err);
        match &self.kind {
            OpenerKind::Single { client } => {
                SingleConnection::connect(client.clone(), self.connect_timeout, response_timeout)
                    .await
                    .map(Link::Single)
                    .map_err(connect_error)
            }
            OpenerKind::Cluster(seeds) => seeds
                .client(self.connect_timeout, response_timeout)
                .map_err(connect_error)?
                .get_async_connection()
                .await
                .map(Link::Cluster)
                .map_err(connect_error),
            OpenerKind::Sentinel {
                discovery,
                watch,
                db,
            } => SentinelConnection::connect(
                Arc::clone(discovery),
                watch,
                self.connect_timeout,
                response_timeout,
                *db,
            )
            .await
            .map(Link::Sentinel)
            .map_err(|err| {
                let master_unknown = err.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel;
                with_sentinel_hint(connect_error(err), master_unknown)
            }),
        }
    }
}

impl Opener {
    /// A connection that is never replaced; see [`Connection::pinned`].
    async fn open_pinned(&self, response_timeout: Duration) -> Result<Link> {
        let connect_error =
            |err: RedisError| Error::from_redis("connect", self.target.clone(), err);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(response_timeout));
        match &self.kind {
            OpenerKind::Single { client } => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(|conn| Link::Pinned(conn, Topology::Single))
                .map_err(connect_error),
            OpenerKind::Cluster(_) => self.open(response_timeout).await,
            OpenerKind::Sentinel { discovery, .. } => {
                let lookup = async {
                    let client = discovery.lock().await.async_get_client().await?;
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                };
                tokio::time::timeout(self.connect_timeout + response_timeout, lookup)
                    .await
                    .map_err(|_| {
                        Error::backend(
                            ErrorKind::Timeout,
                            "connect",
                            self.target.clone(),
                            "no master found through the sentinels in time",
                        )
                    })?
                    .map(|conn| Link::Pinned(conn, Topology::Sentinel))
                    .map_err(connect_error)
            }
        }
    }
}

impl ClusterSeeds {
    /// The cluster client, with its timeouts: a response timeout is per attempt, and the
    /// whole of a command (redirections and retries while a failover completes included) may
    /// take a connect and two response timeouts.
    fn client(
        &self,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<ClusterClient> {
        let Self {
            tls,
            seeds,
            credentials,
            certificates,
        } = self;
        if *tls {
            ensure_crypto_provider();
        }
        let seeds = seeds
            .iter()
            .map(|node| node_url(*tls, node))
            .collect::<Vec<_>>();
        let mut builder = ClusterClientBuilder::new(seeds)
            .connection_timeout(connect_timeout)
            .response_timeout(response_timeout)
            .overall_response_timeout(Some(connect_timeout + response_timeout * 2))
            // RESP3, so that a closed connection to a node is replaced at once.
            .use_protocol(ProtocolVersion::RESP3);
        if let Some(username) = &credentials.username {
            builder = builder.username(username);
        }
        if let Some(password) = &credentials.password {
            builder = builder.password(password);
        }
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates.clone());
        }
        builder.build()
    }
}

/// What to do about a failure to reach the master through Sentinel: an authentication
/// failure may be the sentinels' or the master's, so say where each password goes; a master
/// no sentinel names healthy is a wrong name or a failover in progress.
fn with_sentinel_hint(mut err: Error, master_unknown: bool) -> Error {
    if let Error::Backend { kind, message, .. } = &mut err {
        if *kind == ErrorKind::Auth {
            message.push_str(
                "; the URL's password is the master's, the sentinels' own goes in \
                 sentinel_password (and sentinel_username)",
            );
        } else if master_unknown {
            message.push_str(
                "; no sentinel names a healthy master by that name: check the master name in \
                 the URL (or master_name), or wait for a failover in progress to end",
            );
        }
    }
    err
}

/// `redis://host:port` or `rediss://host:port`, without credentials.
fn node_url(tls: bool, node: &NodeAddress) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    format!("{scheme}://{node}")
}

fn node_addr(tls: bool, node: &NodeAddress) -> RedisResult<ConnectionAddr> {
    Ok(node_url(tls, node).into_connection_info()?.addr().clone())
}
