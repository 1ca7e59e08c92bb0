//! [`RedisServer`]: a private redis-server process that a test owns and may break.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::builder::{Listen, Redacted, RedisServerBuilder, Settings, path_str};
use crate::error::{Error, Result};
use crate::tls::{self, TlsFiles};
use crate::version::ServerVersion;

mod ports;
mod process;

use ports::free_port;
use process::Process;

/// The address every local server binds to.
const LOCALHOST: &str = "127.0.0.1";
/// The environment variable that names the `redis-server` binary to use.
pub(crate) const BINARY_ENV: &str = "REDSTREAM_REDIS_SERVER";
/// How many fresh ports a first start tries when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;
/// What redis-server logs once it is listening and has loaded its data.
pub(crate) const READY_LINE: &str = "Ready to accept connections";
/// How many log lines an [`Error::NotReady`] carries.
const LOG_TAIL_LINES: usize = 30;
/// The connect, read and write timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The connect and reply timeout of the kit's own connections (cluster and sentinel checks).
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`RedisServer::start_replica`] waits at least for the replica's first sync.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(30);

/// A private, disposable redis-server.
///
/// Each server runs as a child process of the test, on its own free port on `127.0.0.1`, with
/// its own temporary directory holding `redis.conf`, the log, the append-only file and (for
/// TLS) the certificates. Dropping the server kills the process, reaps it and deletes the
/// directory.
///
/// Tests usually just write `RedisServer::start().await.unwrap()`; if no `redis-server` is
/// installed, the panic message says what to install.
///
/// The fault-injection methods ([`kill`](Self::kill), [`restart`](Self::restart),
/// [`pause`](Self::pause), [`resume`](Self::resume)) take `&self`, so a server shared through an
/// `Arc` can be broken from another task while the code under test is using it.
pub struct RedisServer {
    backend: Backend,
    settings: Settings,
    host: String,
    port: u16,
    tls: Option<TlsFiles>,
    conf_path: PathBuf,
    log_path: PathBuf,
    version: Option<ServerVersion>,
    // Last, so that it is removed only after the process is gone.
    dir: TempDir,
}

enum Backend {
    Process(Process),
    #[cfg(feature = "docker")]
    Docker(Box<crate::docker::DockerServer>),
}

impl RedisServer {
    /// Starts a plain server (no password, no persistence, no TLS) and waits until it is ready.
    ///
    /// Shorthand for `RedisServer::builder().start().await`.
    ///
    /// # Errors
    ///
    /// See [`RedisServerBuilder::start`].
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// A builder for a server with a password, ACL users, memory limits, persistence or TLS.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::new()
    }

    pub(crate) async fn launch(settings: Settings) -> Result<Self> {
        match find_binary(settings.binary.as_deref())? {
            Some(binary) => Self::launch_process(settings, binary).await,
            None => Self::launch_without_binary(settings).await,
        }
    }

    #[cfg(not(feature = "docker"))]
    async fn launch_without_binary(_settings: Settings) -> Result<Self> {
        Err(Error::NotInstalled {
            detail: format!("redis-server is not on PATH and {BINARY_ENV} is not set"),
        })
    }

    #[cfg(feature = "docker")]
    async fn launch_without_binary(settings: Settings) -> Result<Self> {
        let dir = temp_dir()?;
        let conf_path = dir.path().join("redis.conf");
        let log_path = dir.path().join("redis.log");
        let conf = settings.render_conf(&Listen {
            bind: "* -::*",
            port: crate::docker::CONTAINER_PORT,
            dir: "/data",
            tls: None,
            protected_mode: false,
            cluster_port: None,
        })?;
        write_file(&conf_path, &conf)?;
        write_file(&log_path, "")?;
        let (container, host, port) = crate::docker::DockerServer::start(&settings, conf).await?;
        Ok(Self {
            backend: Backend::Docker(Box::new(container)),
            settings,
            host,
            port,
            tls: None,
            conf_path,
            log_path,
            version: None,
            dir,
        })
    }

    async fn launch_process(settings: Settings, binary: PathBuf) -> Result<Self> {
        let dir = temp_dir()?;
        let dir_str = path_str(dir.path())?;
        let tls = if settings.tls {
            Some(tls::generate(dir.path())?)
        } else {
            None
        };
        let conf_path = dir.path().join("redis.conf");
        let log_path = dir.path().join("redis.log");
        // Announced once per binary in the test log; a binary that cannot say its version may
        // still serve.
        let version = match ServerVersion::of_binary(&binary) {
            Ok(version) => Some(version),
            Err(err) => {
                tracing::debug!(%err, "no version for the server binary");
                None
            }
        };
        let process = Process::new(
            binary,
            if settings.sentinel {
                vec!["--sentinel"]
            } else {
                Vec::new()
            },
        );

        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            // The bus port must be chosen too: the default, port + 10000, is past 65535 for
            // most ephemeral ports.
            let cluster_port = if settings.cluster_bus {
                Some(loop {
                    let bus = free_port()?;
                    if bus != port {
                        break bus;
                    }
                })
            } else {
                None
            };
            let conf = settings.render_conf(&Listen {
                bind: LOCALHOST,
                port,
                dir: &dir_str,
                tls: tls.as_ref(),
                protected_mode: true,
                cluster_port,
            })?;
            write_file(&conf_path, &conf)?;
            let ready = process
                .start(
                    &conf_path,
                    &log_path,
                    port,
                    tls.is_some(),
                    settings.ready_timeout,
                )
                .await;
            match ready {
                Ok(()) => {
                    return Ok(Self {
                        backend: Backend::Process(process),
                        settings,
                        host: LOCALHOST.to_owned(),
                        port,
                        tls,
                        conf_path,
                        log_path,
                        version,
                        dir,
                    });
                }
                Err(Error::NotReady { log_tail, .. })
                    if attempt < PORT_ATTEMPTS && log_tail.contains("Address already in use") =>
                {
                    tracing::debug!(port, attempt, "port taken by someone else, trying another");
                }
                Err(Error::NotReady { log_tail, .. }) if lacks_tls(&log_tail) => {
                    return Err(Error::Unsupported(format!(
                        "{} was built without TLS support: {}",
                        version.map_or_else(
                            || process.binary.display().to_string(),
                            |version| version.to_string()
                        ),
                        log_tail.lines().last().unwrap_or_default()
                    )));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The URL to connect with: `redis://127.0.0.1:PORT`, `rediss://` for TLS servers, and with
    /// the password (`redis://:PASSWORD@127.0.0.1:PORT`) when one is set.
    pub fn url(&self) -> String {
        match &self.settings.password {
            Some(password) => self.make_url(&format!(":{}@", percent_encode(password))),
            None => self.url_without_auth(),
        }
    }

    /// The URL without credentials, for checking that unauthenticated clients are refused.
    pub fn url_without_auth(&self) -> String {
        self.make_url("")
    }

    /// The URL that logs in as `user` (see [`RedisServerBuilder::acl_user`]).
    pub fn url_with_user(&self, user: &str, password: &str) -> String {
        self.make_url(&format!(
            "{}:{}@",
            percent_encode(user),
            percent_encode(password)
        ))
    }

    fn make_url(&self, userinfo: &str) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{userinfo}{}:{}", self.host, self.port)
    }

    /// The host the server listens on (`127.0.0.1` unless it runs in a container).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port the server listens on (its TLS port for TLS servers). It does not change across
    /// [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password of the default user, if one was set.
    pub fn password(&self) -> Option<&str> {
        self.settings.password.as_deref()
    }

    /// Whether the server speaks TLS only.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The server's temporary directory: working directory (append-only file), `redis.conf`,
    /// log and certificates. Removed when the server is dropped.
    ///
    /// With the `docker` backend it only holds a copy of the generated `redis.conf`; the data
    /// lives inside the container.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file the server's log (its standard output and error) is written to. Restarts
    /// append to it.
    ///
    /// With the `docker` backend the file stays empty; read the container's logs instead.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The generated `redis.conf`.
    pub fn config_path(&self) -> &Path {
        &self.conf_path
    }

    /// The CA certificate file that clients of a TLS server must trust; `None` without TLS.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|files| files.ca_cert_path.as_path())
    }

    /// The CA certificate (PEM) that clients of a TLS server must trust; `None` without TLS.
    ///
    /// With redis-rs (features `tls-rustls` and `tokio-rustls-comp`):
    /// `redis::Client::build_with_tls(server.url(), redis::TlsCertificates { client_tls: None,
    /// root_cert: Some(pem.as_bytes().to_vec()) })`.
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|files| files.ca_cert_pem.as_str())
    }

    /// The name and version of the server binary (announced once per binary in the test log);
    /// `None` with the `docker` backend or when the binary did not say.
    pub fn server_version(&self) -> Option<&ServerVersion> {
        self.version.as_ref()
    }

    /// A client for [`url`](Self::url), so authenticated when the server has a password.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for TLS servers: build a TLS client from
    /// [`ca_cert_pem`](Self::ca_cert_pem) instead.
    pub fn client(&self) -> Result<redis::Client> {
        if self.tls.is_some() {
            return Err(Error::Unsupported(
                "the test kit's client has no TLS support; build one with \
                 redis::Client::build_with_tls and RedisServer::ca_cert_pem()"
                    .to_owned(),
            ));
        }
        Ok(redis::Client::open(self.url())?)
    }

    /// A new multiplexed connection from [`client`](Self::client), authenticated when the
    /// server has a password. It connects and waits for each reply for up to 5 s: redis-rs's
    /// default half second is what one `XRANGE` of 10,000 entries took on a loaded 2-core
    /// machine, and a test's own check must not fail on that.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for TLS servers, [`Error::Redis`] when connecting fails (for
    /// example because the server is killed or paused).
    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        self.admin_connection().await
    }

    /// A connection for the kit's own checks and commands: it gives up after
    /// [`ADMIN_TIMEOUT`] instead of hanging on a paused or vanished server.
    pub(crate) async fn admin_connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(ADMIN_TIMEOUT))
            .set_response_timeout(Some(ADMIN_TIMEOUT));
        Ok(self
            .client()?
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Runs one command on a fresh [`admin_connection`](Self::admin_connection).
    pub(crate) async fn admin<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut connection = self.admin_connection().await?;
        Ok(cmd.query_async(&mut connection).await?)
    }

    /// One field of `INFO <section>` (`role`, `master_link_status` ...), `None` when the
    /// server does not report it.
    pub(crate) async fn info_field(&self, section: &str, field: &str) -> Result<Option<String>> {
        let info: String = self.admin(redis::cmd("INFO").arg(section)).await?;
        Ok(info_value(&info, field).map(str::to_owned))
    }

    /// Starts a replica of this server and returns it once it is in sync: its link to this
    /// server is up and this server counts it in `WAIT`. The replica has this server's
    /// password (as `requirepass` and `masterauth`); it runs the same binary.
    ///
    /// For other settings, build one with [`RedisServerBuilder::replica_of`] and wait with
    /// [`wait_for_replica`](Self::wait_for_replica).
    ///
    /// # Errors
    ///
    /// Those of [`RedisServerBuilder::start`], and [`Error::Timeout`] when the replica does
    /// not get in sync within the builder's ready timeout.
    pub async fn start_replica(&self) -> Result<RedisServer> {
        let mut builder = RedisServer::builder().replica_of(self);
        if let Some(password) = self.password() {
            builder = builder.password(password);
        }
        if let Some(binary) = self
            .process("start a replica")
            .ok()
            .map(|p| p.binary.clone())
        {
            builder = builder.redis_server_binary(binary);
        }
        let replica = builder.start().await?;
        self.wait_for_replica(
            &replica,
            replica.settings.ready_timeout.max(REPLICA_TIMEOUT),
        )
        .await?;
        Ok(replica)
    }

    /// Waits until `replica` is in sync with this server: its `master_link_status` is `up`,
    /// this server lists it as `online`, and `WAIT` counts every online replica after a
    /// `PUBLISH` (replicated, touching no key), so a write followed by `WAIT 1 <ms>` is
    /// acknowledged at once.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] (with what was last seen) when that does not happen in `timeout`.
    pub async fn wait_for_replica(&self, replica: &RedisServer, timeout: Duration) -> Result<()> {
        let what = format!(
            "the replica on port {} to be in sync with port {}",
            replica.port(),
            self.port()
        );
        crate::wait::wait_until(what, timeout, || async {
            let link = replica
                .info_field("replication", "master_link_status")
                .await
                .map_err(|err| err.to_string())?;
            if link.as_deref() != Some("up") {
                return Err(format!("replica master_link_status: {link:?}"));
            }
            let info: String = self
                .admin(redis::cmd("INFO").arg("replication"))
                .await
                .map_err(|err| err.to_string())?;
            let online = online_replica_ports(&info);
            if !online.contains(&replica.port()) {
                return Err(format!("online replicas of the primary: {online:?}"));
            }
            // After a diskless sync the primary streams writes to a replica only once the
            // replica's first acknowledgement arrives (up to a second later), and with no
            // write WAIT counts a replica that has acknowledged nothing: so something to
            // acknowledge, which touches no key (PUBLISH is replicated, to nobody listening).
            let mut connection = self
                .admin_connection()
                .await
                .map_err(|err| err.to_string())?;
            let (_, acked): (u64, usize) = redis::pipe()
                .cmd("PUBLISH")
                .arg("redstream-testkit:replica-sync")
                .arg("")
                .cmd("WAIT")
                .arg(online.len())
                .arg(100)
                .query_async(&mut connection)
                .await
                .map_err(|err| err.to_string())?;
            if acked < online.len() {
                return Err(format!("WAIT counts {acked} of {} replicas", online.len()));
            }
            Ok(())
        })
        .await
    }

    /// Changes a setting of the running server (`CONFIG SET key value`).
    ///
    /// Like a real `CONFIG SET`, the change is not written to `redis.conf` and is lost on
    /// [`restart`](Self::restart).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when the server rejects the setting or cannot be reached,
    /// [`Error::Unsupported`] for TLS servers.
    pub async fn config_set(&self, key: &str, value: &str) -> Result<()> {
        let mut connection = self.connection().await?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(key)
            .arg(value)
            .exec_async(&mut connection)
            .await?;
        Ok(())
    }

    /// Makes the server forget every Lua script it has loaded (`SCRIPT FLUSH`), as a restart
    /// or a failover to a replica that never saw them does: the next `EVALSHA` of each is
    /// answered `NOSCRIPT`.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when the server refuses it or cannot be reached,
    /// [`Error::Unsupported`] for TLS servers.
    pub async fn flush_scripts(&self) -> Result<()> {
        let mut connection = self.connection().await?;
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .exec_async(&mut connection)
            .await?;
        Ok(())
    }

    /// The process id, while the process is alive (paused counts as alive).
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Process(process) => process.pid(),
            #[cfg(feature = "docker")]
            Backend::Docker(_) => None,
        }
    }

    /// Whether the server process is alive (paused counts as alive).
    pub fn is_running(&self) -> bool {
        match &self.backend {
            Backend::Process(process) => process.pid().is_some(),
            #[cfg(feature = "docker")]
            Backend::Docker(_) => true,
        }
    }

    /// Whether the server is stopped by [`pause`](Self::pause).
    pub fn is_paused(&self) -> bool {
        match &self.backend {
            Backend::Process(process) => process.is_paused(),
            #[cfg(feature = "docker")]
            Backend::Docker(_) => false,
        }
    }

    /// Kills the server with `SIGKILL` (no shutdown, no final save) and waits until the process
    /// is gone. Connections see the socket closed, and new ones are refused. Until the next
    /// [`restart`](Self::restart), the port is held by a socket that does not listen, so no
    /// other server (another test's) is started on it; the hold is skipped when a connection
    /// still lingers on the port in `TIME_WAIT`: the killed server's side of one or, on a
    /// machine where the kit takes its ports from the kernel's ephemeral range (see
    /// `free_port`), a client that was given the port as its own end before this server took
    /// it.
    /// Killing a killed server does nothing.
    ///
    /// Writes acknowledged before the kill survive a [`restart`](Self::restart) only with
    /// [`RedisServerBuilder::appendonly`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the process cannot be signalled or reaped, [`Error::Unsupported`] with
    /// the `docker` backend.
    pub fn kill(&self) -> Result<()> {
        let process = self.process("kill")?;
        process.kill()?;
        process.hold_port(self.port);
        Ok(())
    }

    /// Starts the server again on the same port with the same `redis.conf` and data directory,
    /// and waits until it is ready. A server that is still running is killed first.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] when it does not come back (for example because another process took
    /// the port meanwhile), [`Error::Unsupported`] with the `docker` backend.
    pub async fn restart(&self) -> Result<()> {
        let process = self.process("restart")?;
        process.kill()?;
        process
            .start(
                &self.conf_path,
                &self.log_path,
                self.port,
                self.tls.is_some(),
                self.settings.ready_timeout,
            )
            .await
    }

    /// Freezes the server with `SIGSTOP`: it keeps its connections and socket, but answers
    /// nothing until [`resume`](Self::resume), like a server stuck in a long pause. Returns once
    /// the process has stopped. Pausing a paused server does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`] after [`kill`](Self::kill), [`Error::Unsupported`] with the
    /// `docker` backend or on non-Unix platforms.
    pub fn pause(&self) -> Result<()> {
        self.process("pause")?.pause()
    }

    /// Continues a server stopped by [`pause`](Self::pause) (`SIGCONT`). Does nothing if it is
    /// not paused.
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`] if the process died while paused, [`Error::Unsupported`] with the
    /// `docker` backend or on non-Unix platforms.
    pub fn resume(&self) -> Result<()> {
        self.process("resume")?.resume()
    }

    #[cfg_attr(not(feature = "docker"), expect(unused_variables))]
    fn process(&self, operation: &str) -> Result<&Process> {
        match &self.backend {
            Backend::Process(process) => Ok(process),
            #[cfg(feature = "docker")]
            Backend::Docker(_) => Err(Error::Unsupported(format!(
                "{operation} is not available with the docker backend; install redis-server"
            ))),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        match &self.backend {
            Backend::Process(process) => {
                if let Err(err) = process.kill() {
                    tracing::warn!(%err, "failed to kill the test redis-server");
                }
            }
            // The container handle removes the container when it is dropped.
            #[cfg(feature = "docker")]
            Backend::Docker(_) => {}
        }
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.backend {
            Backend::Process(_) => "process".to_owned(),
            #[cfg(feature = "docker")]
            Backend::Docker(container) => format!("docker container {}", container.id()),
        };
        f.debug_struct("RedisServer")
            .field("backend", &backend)
            .field("url", &self.url_without_auth())
            .field(
                "password",
                &self.settings.password.as_ref().map(|_| Redacted),
            )
            .field("pid", &self.pid())
            .field("data_dir", &self.data_dir())
            .field("settings", &self.settings)
            .finish()
    }
}

/// Looks for `redis-server`: the builder's path, then `$REDSTREAM_REDIS_SERVER`, then `PATH`.
///
/// `Ok(None)` means "not installed"; an explicitly configured binary that does not exist is an
/// error rather than a reason to fall back to another backend.
pub(crate) fn find_binary(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(path) = explicit {
        return existing(path.to_owned(), "the binary given to redis_server_binary").map(Some);
    }
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|value| !value.is_empty()) {
        return existing(PathBuf::from(path), BINARY_ENV).map(Some);
    }
    let Some(paths) = std::env::var_os("PATH") else {
        return Ok(None);
    };
    Ok(std::env::split_paths(&paths)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_executable(candidate)))
}

fn existing(path: PathBuf, origin: &str) -> Result<PathBuf> {
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(Error::NotInstalled {
            detail: format!(
                "{} (from {origin}) is not an executable file",
                path.display()
            ),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    let Ok(metadata) = fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        metadata.is_file()
    }
}

fn temp_dir() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("redstream-testkit-")
        .tempdir()
        .map_err(|err| Error::io("creating the server's temporary directory", err))
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(|err| Error::io(format!("writing {}", path.display()), err))
}

/// The log written since `offset` (the whole log if it is shorter, e.g. truncated).
fn read_log(path: &Path, offset: u64) -> std::io::Result<String> {
    let bytes = fs::read(path)?;
    let start = usize::try_from(offset)
        .ok()
        .filter(|&start| start <= bytes.len())
        .unwrap_or(0);
    Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
}

/// The last lines of the log written since `offset`, for error messages.
fn log_tail(path: &Path, offset: u64) -> String {
    match read_log(path, offset) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].join("\n")
        }
        Err(err) => format!("<could not read {}: {err}>", path.display()),
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
pub(crate) fn info_value<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The ports of the replicas a primary's `INFO replication` lists as `state=online`
/// (`slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0`).
pub(crate) fn online_replica_ports(info: &str) -> Vec<u16> {
    info.lines()
        .filter(|line| {
            (line.starts_with("slave") || line.starts_with("replica")) && line.contains(":ip=")
        })
        .filter(|line| line.contains("state=online"))
        .filter_map(|line| {
            line.split(',')
                .find_map(|part| part.strip_prefix("port="))
                .and_then(|port| port.trim().parse().ok())
        })
        .collect()
}

/// Whether a server log says the binary cannot serve TLS (Valkey and Redis built without it:
/// "Failed finding TLS support", Redis 7.0: "TLS support is not available").
fn lacks_tls(log: &str) -> bool {
    log.contains("Failed finding TLS support") || log.contains("TLS support is not")
}

/// Percent-encodes a URL user-info component (everything but unreserved characters).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    /// A server that cannot bind its port, because another test's server took it first, is
    /// not taken for ready when the other one answers there: its start fails with the bind
    /// error (and `launch_process` tries another port). Taken for ready, a test would drive
    /// the other test's server (seen in CI: a cluster formed from another cluster's node).
    #[tokio::test]
    async fn a_port_taken_by_another_server_is_not_mistaken_for_ready() {
        let other = RedisServer::start().await.unwrap();
        let dir = temp_dir().unwrap();
        let conf = dir.path().join("redis.conf");
        let log = dir.path().join("redis.log");
        let config = format!(
            "bind 127.0.0.1\nport {}\ndir {}\nloglevel notice\nsave \"\"\n",
            other.port(),
            path_str(dir.path()).unwrap()
        );
        fs::write(&conf, config).unwrap();
        let binary = other.process("test").unwrap().binary.clone();
        let process = Process::new(binary, Vec::new());
        let started = process
            .start(&conf, &log, other.port(), false, Duration::from_secs(30))
            .await;
        match started {
            Err(Error::NotReady { log_tail, .. }) => {
                assert!(log_tail.contains("Address already in use"), "{log_tail}");
            }
            Err(err) => panic!("another error than the bind failure: {err}"),
            Ok(()) => panic!("the other server's answer was taken for this one being ready"),
        }
    }

    #[test]
    fn log_tail_keeps_the_last_lines_after_the_offset() {
        let dir = temp_dir().unwrap();
        let path = dir.path().join("log");
        let old = "old run\n";
        let new: String = (0..40).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, format!("{old}{new}")).unwrap();
        let tail = log_tail(&path, old.len() as u64);
        assert!(!tail.contains("old run"));
        assert!(tail.starts_with("line 10\n"), "{tail}");
        assert!(tail.ends_with("line 39"), "{tail}");
    }
}
