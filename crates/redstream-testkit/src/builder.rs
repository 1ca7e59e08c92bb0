//! [`RedisServerBuilder`]: what the server should look like, and its `redis.conf`.

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::server::RedisServer;
use crate::tls::TlsFiles;

/// How long [`RedisServerBuilder::start`] waits for the server to answer, unless changed with
/// [`RedisServerBuilder::ready_timeout`].
pub(crate) const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures a [`RedisServer`] before it is started.
///
/// Obtained from [`RedisServer::builder`]. Every method consumes and returns the builder; finish
/// with [`start`](Self::start).
///
/// ```no_run
/// # async fn demo() -> redstream_testkit::Result<()> {
/// use redstream_testkit::RedisServer;
///
/// let server = RedisServer::builder()
///     .password("s3cret")
///     .maxmemory(8 * 1024 * 1024)
///     .maxmemory_policy("noeviction")
///     .start()
///     .await?;
/// # drop(server);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct RedisServerBuilder {
    pub(crate) settings: Settings,
}

/// Everything the builder collects; shared with the backends.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) password: Option<String>,
    pub(crate) acl_users: Vec<AclUser>,
    pub(crate) maxmemory: Option<u64>,
    pub(crate) maxmemory_policy: Option<String>,
    pub(crate) appendonly: bool,
    pub(crate) tls: bool,
    pub(crate) enable_debug_command: bool,
    pub(crate) extra: Vec<(String, String)>,
    pub(crate) ready_timeout: Duration,
    pub(crate) binary: Option<PathBuf>,
    /// Runs `redis-server <conf> --sentinel` (set by [`crate::RedisSentinel`]).
    pub(crate) sentinel: bool,
    /// Gives the server a cluster bus port of its own (`cluster-port`), chosen free like its
    /// port (set by [`crate::RedisCluster`]).
    pub(crate) cluster_bus: bool,
}

/// An ACL user declared with [`RedisServerBuilder::acl_user`] or
/// [`RedisServerBuilder::acl_user_rules`].
#[derive(Clone)]
pub(crate) struct AclUser {
    pub(crate) name: String,
    pub(crate) password: String,
    pub(crate) rules: Vec<String>,
}

impl Default for RedisServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RedisServerBuilder {
    /// A builder for a plain server: no password, no persistence, no memory limit, no TLS.
    pub fn new() -> Self {
        Self {
            settings: Settings {
                password: None,
                acl_users: Vec::new(),
                maxmemory: None,
                maxmemory_policy: None,
                appendonly: false,
                tls: false,
                enable_debug_command: false,
                extra: Vec::new(),
                ready_timeout: DEFAULT_READY_TIMEOUT,
                binary: None,
                sentinel: false,
                cluster_bus: false,
            },
        }
    }

    /// Requires clients to authenticate with this password (`requirepass`).
    ///
    /// [`RedisServer::url`] then contains the password, [`RedisServer::url_without_auth`] does
    /// not.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.settings.password = Some(password.into());
        self
    }

    /// Adds an ACL user that may run every command (`+@all`) and use every Pub/Sub channel
    /// (`&*`), but only on keys matching `key_pattern` (`~key_pattern`, glob syntax).
    ///
    /// The default user is left as configured (open, or protected by
    /// [`password`](Self::password)). Connect as this user with [`RedisServer::url_with_user`].
    pub fn acl_user(
        self,
        name: impl Into<String>,
        password: impl Into<String>,
        key_pattern: &str,
    ) -> Self {
        self.acl_user_rules(name, password, &[&format!("~{key_pattern}"), "&*", "+@all"])
    }

    /// Adds an ACL user with raw ACL rules, e.g. `&["~orders:*", "+@read", "-@dangerous"]`.
    ///
    /// The user is enabled (`on`) with the given password; the rules follow verbatim, as in
    /// `ACL SETUSER`.
    pub fn acl_user_rules(
        mut self,
        name: impl Into<String>,
        password: impl Into<String>,
        rules: &[&str],
    ) -> Self {
        self.settings.acl_users.push(AclUser {
            name: name.into(),
            password: password.into(),
            rules: rules.iter().map(|rule| (*rule).to_owned()).collect(),
        });
        self
    }

    /// Limits the memory the server may use for data (`maxmemory`), in bytes.
    ///
    /// Combine with [`maxmemory_policy`](Self::maxmemory_policy)`("noeviction")` to make writes
    /// fail with `OOM` errors once the limit is reached.
    pub fn maxmemory(mut self, bytes: u64) -> Self {
        self.settings.maxmemory = Some(bytes);
        self
    }

    /// What the server does when [`maxmemory`](Self::maxmemory) is reached
    /// (`maxmemory-policy`), e.g. `"noeviction"` or `"allkeys-lru"`.
    pub fn maxmemory_policy(mut self, policy: &str) -> Self {
        self.settings.maxmemory_policy = Some(policy.to_owned());
        self
    }

    /// Turns on the append-only file with `appendfsync always`, so every acknowledged write
    /// survives [`RedisServer::kill`] followed by [`RedisServer::restart`].
    ///
    /// Without it the server keeps nothing across a restart (RDB snapshots are always off).
    pub fn appendonly(mut self, enabled: bool) -> Self {
        self.settings.appendonly = enabled;
        self
    }

    /// Serves TLS only: a fresh CA and a server certificate for `127.0.0.1` and `localhost` are
    /// generated into the data directory, the server listens on its TLS port only and does not
    /// ask clients for certificates.
    ///
    /// [`RedisServer::url`] then starts with `rediss://`; clients must trust
    /// [`RedisServer::ca_cert_pem`]. The built-in [`RedisServer::client`],
    /// [`RedisServer::connection`] and [`RedisServer::config_set`] are not available for TLS
    /// servers (the kit's Redis client is built without TLS support).
    pub fn tls(mut self, enabled: bool) -> Self {
        self.settings.tls = enabled;
        self
    }

    /// Allows the `DEBUG` command (`enable-debug-command yes`), e.g. `DEBUG SLEEP` to make the
    /// server unresponsive for a while.
    pub fn enable_debug_command(mut self, enabled: bool) -> Self {
        self.settings.enable_debug_command = enabled;
        self
    }

    /// Makes the server a replica of `primary` (`replicaof`), authenticating with its
    /// password (`masterauth`) when it has one.
    ///
    /// The replica's own password is not set: add [`password`](Self::password) for that.
    /// [`RedisServer::start_replica`] does both and waits until the replica is in sync;
    /// [`RedisServer::wait_for_replica`] waits for one started this way.
    pub fn replica_of(self, primary: &RedisServer) -> Self {
        let builder = self.config(
            "replicaof",
            format!("{} {}", primary.host(), primary.port()),
        );
        match primary.password() {
            Some(password) => builder.config("masterauth", quote(password)),
            None => builder,
        }
    }

    /// Appends an arbitrary directive `key value` to the generated `redis.conf`.
    ///
    /// The value is written verbatim, so it may hold several arguments (`"900 1"`) and must do
    /// its own quoting. Directives are written after the ones the builder generates, so they
    /// override them.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.extra.push((key.into(), value.into()));
        self
    }

    /// How long [`start`](Self::start) and [`RedisServer::restart`] wait for the server to
    /// answer before giving up (default: 10 seconds).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.settings.ready_timeout = timeout;
        self
    }

    /// Uses this `redis-server` binary instead of looking at `REDSTREAM_REDIS_SERVER` and
    /// `PATH`.
    pub fn redis_server_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.binary = Some(path.into());
        self
    }

    /// Starts the server and waits until it accepts commands.
    ///
    /// Must run inside a Tokio runtime with the time driver enabled (as `#[tokio::test]`
    /// provides); a paused test clock is fine.
    ///
    /// # Errors
    ///
    /// [`Error::NotInstalled`] when there is no `redis-server` (and the `docker` feature is
    /// off), [`Error::InvalidConfig`] for settings that cannot be written to `redis.conf`,
    /// [`Error::NotReady`] (with the end of the server log) when the server exits or does not
    /// answer in time, and [`Error::Io`], [`Error::Spawn`] or [`Error::Tls`] for local
    /// failures.
    pub async fn start(self) -> Result<RedisServer> {
        RedisServer::launch(self.settings).await
    }
}

impl fmt::Debug for RedisServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            password,
            acl_users,
            maxmemory,
            maxmemory_policy,
            appendonly,
            tls,
            enable_debug_command,
            extra,
            ready_timeout,
            binary,
            sentinel,
            cluster_bus,
        } = self;
        f.debug_struct("RedisServerBuilder")
            .field("password", &password.as_ref().map(|_| Redacted))
            .field("acl_users", acl_users)
            .field("maxmemory", maxmemory)
            .field("maxmemory_policy", maxmemory_policy)
            .field("appendonly", appendonly)
            .field("tls", tls)
            .field("enable_debug_command", enable_debug_command)
            .field("config", extra)
            .field("ready_timeout", ready_timeout)
            .field("redis_server_binary", binary)
            .field("sentinel", sentinel)
            .field("cluster_bus", cluster_bus)
            .finish()
    }
}

impl fmt::Debug for AclUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclUser")
            .field("name", &self.name)
            .field("password", &Redacted)
            .field("rules", &self.rules)
            .finish()
    }
}

/// Stands in for a secret in `Debug` output.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Where and how the server listens: the part of `redis.conf` the backend decides.
pub(crate) struct Listen<'a> {
    /// The `bind` directive's arguments, written verbatim.
    pub(crate) bind: &'a str,
    /// The port (the TLS port when `tls` is set).
    pub(crate) port: u16,
    /// The working directory (AOF and other files).
    pub(crate) dir: &'a str,
    /// The certificate files, when serving TLS.
    pub(crate) tls: Option<&'a TlsFiles>,
    /// Whether `protected-mode` stays on.
    pub(crate) protected_mode: bool,
    /// The cluster bus port (`cluster-port`), for cluster nodes.
    pub(crate) cluster_port: Option<u16>,
}

impl Settings {
    /// Renders the complete `redis.conf`.
    ///
    /// The log goes to standard output (`logfile ""`), which the backends capture.
    pub(crate) fn render_conf(&self, listen: &Listen<'_>) -> Result<String> {
        let mut conf = String::from("# Generated by redstream-testkit.\n");
        let mut line = |key: &str, value: &str| {
            // Writing to a String cannot fail.
            let _ = writeln!(conf, "{key} {value}");
        };

        line("bind", listen.bind);
        line(
            "protected-mode",
            if listen.protected_mode { "yes" } else { "no" },
        );
        match listen.tls {
            None => line("port", &listen.port.to_string()),
            Some(files) => {
                line("port", "0");
                line("tls-port", &listen.port.to_string());
                line("tls-cert-file", &quote(&path_str(&files.cert_path)?));
                line("tls-key-file", &quote(&path_str(&files.key_path)?));
                line("tls-ca-cert-file", &quote(&path_str(&files.ca_cert_path)?));
                line("tls-auth-clients", "no");
            }
        }
        if let Some(port) = listen.cluster_port {
            line("cluster-port", &port.to_string());
        }
        line("daemonize", "no");
        line("dir", &quote(listen.dir));
        line("logfile", "\"\"");
        line("loglevel", "notice");
        line("save", "\"\"");
        // A replica's first sync starts at once instead of after the default 5 s, in which
        // further replicas could join the same transfer: tests start replicas one by one.
        line("repl-diskless-sync-delay", "0");
        if self.appendonly {
            line("appendonly", "yes");
            line("appendfsync", "always");
        } else {
            line("appendonly", "no");
        }
        if let Some(password) = &self.password {
            if password.is_empty() {
                return Err(Error::InvalidConfig(
                    "the password must not be empty".to_owned(),
                ));
            }
            line("requirepass", &quote(password));
        }
        if let Some(bytes) = self.maxmemory {
            line("maxmemory", &bytes.to_string());
        }
        if let Some(policy) = &self.maxmemory_policy {
            check_word("maxmemory policy", policy)?;
            line("maxmemory-policy", policy);
        }
        if self.enable_debug_command {
            line("enable-debug-command", "yes");
        }
        for user in &self.acl_users {
            check_word("ACL user name", &user.name)?;
            let mut args = vec![quote(&user.name), "on".to_owned()];
            args.push(quote(&format!(">{}", user.password)));
            args.extend(user.rules.iter().map(|rule| quote(rule)));
            line("user", &args.join(" "));
        }
        for (key, value) in &self.extra {
            check_word("config key", key)?;
            if value.contains(['\n', '\r']) {
                return Err(Error::InvalidConfig(format!(
                    "the value of config key {key:?} contains a line break"
                )));
            }
            line(key, value);
        }
        Ok(conf)
    }
}

/// Rejects empty strings and strings with whitespace or control characters.
fn check_word(what: &str, word: &str) -> Result<()> {
    if word.is_empty() || word.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidConfig(format!(
            "{what} {word:?} must be non-empty and contain no whitespace"
        )));
    }
    Ok(())
}

/// A path as UTF-8, which `redis.conf` needs.
pub(crate) fn path_str(path: &std::path::Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidConfig(format!("path {} is not valid UTF-8", path.display())))
}

/// Quotes an argument for `redis.conf` (double quotes, `\\`, `\"` and `\xHH` escapes).
pub(crate) fn quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> Listen<'static> {
        Listen {
            bind: "127.0.0.1",
            port: 7000,
            dir: "/tmp/x",
            tls: None,
            protected_mode: true,
            cluster_port: None,
        }
    }

    #[test]
    fn quote_escapes_specials() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("a\nb"), r#""a\x0ab""#);
        assert_eq!(quote("plain"), r#""plain""#);
    }

    #[test]
    fn conf_contains_the_settings() {
        let conf = RedisServerBuilder::new()
            .password("pw")
            .acl_user("alice", "secret", "app:*")
            .maxmemory(1024)
            .maxmemory_policy("noeviction")
            .appendonly(true)
            .enable_debug_command(true)
            .config("hz", "50")
            .settings
            .render_conf(&listen())
            .unwrap();
        for expected in [
            "port 7000\n",
            "requirepass \"pw\"\n",
            "user \"alice\" on \">secret\" \"~app:*\" \"&*\" \"+@all\"\n",
            "maxmemory 1024\n",
            "maxmemory-policy noeviction\n",
            "appendonly yes\n",
            "appendfsync always\n",
            "enable-debug-command yes\n",
            "save \"\"\n",
            "hz 50\n",
        ] {
            assert!(conf.contains(expected), "missing {expected:?} in:\n{conf}");
        }
    }

    #[test]
    fn line_breaks_in_values_are_rejected() {
        let err = RedisServerBuilder::new()
            .config("hz", "50\nrequirepass x")
            .settings
            .render_conf(&listen())
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }

    #[test]
    fn debug_hides_passwords() {
        let builder =
            RedisServerBuilder::new()
                .password("hunter2")
                .acl_user("alice", "swordfish", "*");
        let debug = format!("{builder:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("swordfish"), "{debug}");
        assert!(debug.contains("password: \"***\""), "{debug}");
    }
}
