//! [`ConnectionOptions`]: where Redis is and how to reach it, the one struct every config
//! embeds.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::endpoint::{Endpoint, Topology};
use crate::error::{Error, Result};
use crate::redact::RedactedUrl;
use crate::redis_tls::TlsOptions;

/// Where Redis is and how to reach it: one URL for a single server, a cluster or a Sentinel
/// group, timeouts, TLS certificates and the Sentinel settings the URL cannot hold.
///
/// Read from files with `#[serde(default)]` (every field has a default) and
/// `deny_unknown_fields`; durations are humane text (`"250ms"`, `"5s"`). Build it in code
/// with [`new`](Self::new) and the `with_*` methods, or a struct literal with
/// `..Default::default()`. See the [module docs](super) for the URL forms.
///
/// `Debug` redacts the passwords in the URL and never shows `sentinel_password`.
///
/// # Embedding it in a crate's config
///
/// A config whose URL is its own (the sink's) embeds this struct; a config whose URL lives
/// elsewhere (the transport's `RedisConfig::url`, the state store's backend) embeds
/// [`ConnectionSettings`], the same fields without `url`. Embed it with `#[serde(flatten)]`
/// and [`embed::deserialize`](super::embed::deserialize) to keep files flat (`url`,
/// `connect_timeout` next to the crate's own fields) and still refuse unknown fields; see the
/// [`embed`](super::embed) module.
///
/// ```
/// use std::time::Duration;
/// use redstream_core::connection::{ConnectionOptions, Topology};
///
/// let options = ConnectionOptions::new("redis-sentinel://s1:26379,s2:26379/mymaster")
///     .with_response_timeout(Duration::from_secs(2))
///     .with_sentinel_password("sentinel-secret");
/// options.validate().unwrap();
/// assert_eq!(options.topology().unwrap(), Topology::Sentinel);
/// assert!(!format!("{options:?}").contains("sentinel-secret"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionOptions {
    /// The Redis to connect to: `redis://[user:password@]host:6379/0`, `rediss://...`,
    /// `redis+unix:///path/redis.sock`, `redis-cluster://[user:password@]h1:6379,h2:6379`,
    /// `redis-sentinel://[user:password@]s1:26379,s2:26379/mymaster[/db]` and their TLS forms
    /// `rediss-cluster://` and `rediss-sentinel://`. The user and password are the data
    /// nodes' (for Sentinel, the master's, not the sentinels'). Default
    /// `redis://127.0.0.1:6379`.
    pub url: String,
    /// Time allowed to establish a connection (for Sentinel, to each sentinel and to the
    /// master). Default 5 s.
    #[serde(with = "crate::serde_duration")]
    pub connect_timeout: Duration,
    /// Time allowed for a reply to a command. Default 5 s. Blocking commands need a
    /// [dedicated](super::Connection::dedicated) connection with a longer one. On a cluster
    /// it bounds each attempt; a command with its redirections and retries (while a replica
    /// takes over) may take `connect_timeout` plus twice this.
    #[serde(with = "crate::serde_duration")]
    pub response_timeout: Duration,
    /// Certificates for the TLS forms of the URL (`rediss://`, `rediss-cluster://`,
    /// `rediss-sentinel://`): a private CA to trust, a client certificate for mutual TLS. For
    /// Sentinel they apply to the sentinels and the data nodes alike.
    pub tls: TlsOptions,
    /// The name the sentinels know the master by, when the URL does not end with it. Only for
    /// `redis-sentinel://` URLs; giving it in both places with different values is an error.
    pub master_name: Option<String>,
    /// The user to authenticate to the sentinels with (`ACL` users on sentinels). Only for
    /// `redis-sentinel://` URLs.
    pub sentinel_username: Option<String>,
    /// The sentinels' own password (their `requirepass`), when they have one. The URL's
    /// password is the data nodes'. Only for `redis-sentinel://` URLs. In a file it must be a
    /// string (quoted); any other value is refused without being shown.
    #[serde(deserialize_with = "crate::serde_secret::deserialize")]
    pub sentinel_password: Option<String>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            tls: TlsOptions::default(),
            master_name: None,
            sentinel_username: None,
            sentinel_password: None,
        }
    }
}

impl fmt::Debug for ConnectionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            url,
            connect_timeout,
            response_timeout,
            tls,
            master_name,
            sentinel_username,
            sentinel_password,
        } = self;
        f.debug_struct("ConnectionOptions")
            .field("url", &RedactedUrl(url))
            .field("connect_timeout", connect_timeout)
            .field("response_timeout", response_timeout)
            .field("tls", tls)
            .field("master_name", master_name)
            .field("sentinel_username", sentinel_username)
            .field(
                "sentinel_password",
                &sentinel_password.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

impl ConnectionOptions {
    /// The names of the fields in files, in order: what
    /// [`embed::deserialize`](super::embed::deserialize) hands to this struct.
    pub const FIELDS: &'static [&'static str] = &[
        "url",
        "connect_timeout",
        "response_timeout",
        "tls",
        "master_name",
        "sentinel_username",
        "sentinel_password",
    ];

    /// `url` with `settings`: the options of a config that keeps its URL apart.
    #[must_use]
    pub fn from_settings(url: impl Into<String>, settings: ConnectionSettings) -> Self {
        // Destructured so that a field added to one struct and not the other fails here.
        let ConnectionSettings {
            connect_timeout,
            response_timeout,
            tls,
            master_name,
            sentinel_username,
            sentinel_password,
        } = settings;
        Self {
            url: url.into(),
            connect_timeout,
            response_timeout,
            tls,
            master_name,
            sentinel_username,
            sentinel_password,
        }
    }

    /// The URL and everything else, apart.
    #[must_use]
    pub fn into_parts(self) -> (String, ConnectionSettings) {
        let Self {
            url,
            connect_timeout,
            response_timeout,
            tls,
            master_name,
            sentinel_username,
            sentinel_password,
        } = self;
        let settings = ConnectionSettings {
            connect_timeout,
            response_timeout,
            tls,
            master_name,
            sentinel_username,
            sentinel_password,
        };
        (url, settings)
    }

    /// The defaults with `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Sets `url`.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Sets `connect_timeout`.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets `response_timeout`.
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Sets `master_name` (Sentinel).
    #[must_use]
    pub fn with_master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = Some(name.into());
        self
    }

    /// Sets `sentinel_username` (Sentinel with ACL users).
    #[must_use]
    pub fn with_sentinel_username(mut self, username: impl Into<String>) -> Self {
        self.sentinel_username = Some(username.into());
        self
    }

    /// Sets `sentinel_password` (sentinels with `requirepass`).
    #[must_use]
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// Which topology the URL names, without connecting.
    ///
    /// # Errors
    ///
    /// Those of [`validate`](Self::validate) about the URL and `master_name`.
    pub fn topology(&self) -> Result<Topology> {
        Ok(self.endpoint()?.topology())
    }

    /// Checks everything that can be checked without connecting: the URL's form, positive
    /// timeouts, the TLS options (and that they come with a TLS URL), and that the Sentinel
    /// fields come with a Sentinel URL.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) naming the field and what
    /// would be valid. Messages show the URL redacted, never a password.
    pub fn validate(&self) -> Result<()> {
        self.endpoint()?;
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::invalid_input(
                    format!("config field {field}"),
                    "is zero; give a positive duration such as \"5s\"",
                ));
            }
        }
        self.tls.validate_for_url(&self.url)
    }

    /// The URL taken apart, with the fields that complete it; checks that the Sentinel
    /// fields are not given for another topology.
    pub(crate) fn endpoint(&self) -> Result<Endpoint> {
        let endpoint = Endpoint::parse(&self.url, self.master_name.as_deref())?;
        if endpoint.topology() != Topology::Sentinel {
            for (field, set) in [
                ("master_name", self.master_name.is_some()),
                ("sentinel_username", self.sentinel_username.is_some()),
                ("sentinel_password", self.sentinel_password.is_some()),
            ] {
                if set {
                    return Err(Error::invalid_input(
                        format!("config field {field}"),
                        format!(
                            "is set, but the URL ({}) is not a redis-sentinel:// URL; it only \
                             applies to Sentinel",
                            RedactedUrl(&self.url)
                        ),
                    ));
                }
            }
        }
        Ok(endpoint)
    }
}

/// [`ConnectionOptions`] without its `url`: the same fields, names, types, defaults and
/// meaning, for the configs that hold the URL somewhere else (the transport's
/// `RedisConfig::url` and the state store's `StateBackend::Redis { url, .. }`, whose seed
/// shapes fix where the URL goes). [`with_url`](Self::with_url) makes the options to connect
/// with; [`ConnectionOptions::into_parts`] takes them apart again.
///
/// Embedded flat with `#[serde(flatten)]` and [`embed::deserialize`](super::embed::deserialize).
/// `Debug` never shows `sentinel_password`.
///
/// ```
/// use std::time::Duration;
/// use redstream_core::connection::{ConnectionSettings, Topology};
///
/// let settings = ConnectionSettings::default()
///     .with_response_timeout(Duration::from_secs(2))
///     .with_master_name("mymaster");
/// let options = settings.with_url("redis-sentinel://s1:26379,s2:26379");
/// assert_eq!(options.topology().unwrap(), Topology::Sentinel);
/// assert_eq!(options.response_timeout, Duration::from_secs(2));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// [`ConnectionOptions::connect_timeout`]. Default 5 s.
    #[serde(with = "crate::serde_duration")]
    pub connect_timeout: Duration,
    /// [`ConnectionOptions::response_timeout`]. Default 5 s.
    #[serde(with = "crate::serde_duration")]
    pub response_timeout: Duration,
    /// [`ConnectionOptions::tls`]: certificates for the TLS forms of the URL.
    pub tls: TlsOptions,
    /// [`ConnectionOptions::master_name`]: the master's name, when a `redis-sentinel://` URL
    /// does not end with it.
    pub master_name: Option<String>,
    /// [`ConnectionOptions::sentinel_username`]: the user to authenticate to the sentinels
    /// with.
    pub sentinel_username: Option<String>,
    /// [`ConnectionOptions::sentinel_password`]: the sentinels' own password. Never shown by
    /// `Debug`, nor in an error about its value.
    #[serde(deserialize_with = "crate::serde_secret::deserialize")]
    pub sentinel_password: Option<String>,
}

impl Default for ConnectionSettings {
    /// [`ConnectionOptions::default`]'s settings.
    fn default() -> Self {
        ConnectionOptions::default().into_parts().1
    }
}

impl fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            connect_timeout,
            response_timeout,
            tls,
            master_name,
            sentinel_username,
            sentinel_password,
        } = self;
        f.debug_struct("ConnectionSettings")
            .field("connect_timeout", connect_timeout)
            .field("response_timeout", response_timeout)
            .field("tls", tls)
            .field("master_name", master_name)
            .field("sentinel_username", sentinel_username)
            .field(
                "sentinel_password",
                &sentinel_password.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

impl ConnectionSettings {
    /// The names of the fields in files, in order ([`ConnectionOptions::FIELDS`] without
    /// `url`).
    pub const FIELDS: &'static [&'static str] = &[
        "connect_timeout",
        "response_timeout",
        "tls",
        "master_name",
        "sentinel_username",
        "sentinel_password",
    ];

    /// The options to connect to `url` with these settings.
    #[must_use]
    pub fn with_url(self, url: impl Into<String>) -> ConnectionOptions {
        ConnectionOptions::from_settings(url, self)
    }

    /// Sets `connect_timeout`.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets `response_timeout`.
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Sets `master_name` (Sentinel).
    #[must_use]
    pub fn with_master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = Some(name.into());
        self
    }

    /// Sets `sentinel_username` (Sentinel with ACL users).
    #[must_use]
    pub fn with_sentinel_username(mut self, username: impl Into<String>) -> Self {
        self.sentinel_username = Some(username.into());
        self
    }

    /// Sets `sentinel_password` (sentinels with `requirepass`).
    #[must_use]
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// [`ConnectionOptions::validate`] of these settings with `url`.
    ///
    /// # Errors
    ///
    /// Those of [`ConnectionOptions::validate`].
    pub fn validate_for(&self, url: &str) -> Result<()> {
        self.clone().with_url(url).validate()
    }
}
