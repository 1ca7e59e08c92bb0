//! The one parser of connection URLs: which [`Topology`] a URL names, and its nodes and
//! credentials.
//!
//! `redis://`, `rediss://`, `redis+unix://` and `unix://` are redis-rs's own forms and are
//! checked by redis-rs. The cluster and Sentinel forms, which redis-rs has no URL for, are
//! parsed here: `scheme://[user[:password]@]host[:port],host[:port]...[/path]`.

use std::fmt;

use redis::IntoConnectionInfo;

use crate::error::{Error, Result};
use crate::redact::RedactedUrl;

/// How the Redis a URL names is deployed, which decides how commands are routed and which key
/// layout suits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Topology {
    /// One server (`redis://`, `rediss://`, `redis+unix://`, `unix://`), possibly a master
    /// whose replicas the application does not use.
    Single,
    /// A Redis Cluster (`redis-cluster://`, `rediss-cluster://`): keys are spread over slots
    /// of several masters, so keys that must change together need one hash tag.
    Cluster,
    /// A master found through Redis Sentinel (`redis-sentinel://`, `rediss-sentinel://`): one
    /// master at a time, which may change.
    Sentinel,
}

impl Topology {
    /// `single`, `cluster` or `sentinel`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address of one node: a host name or IP and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct NodeAddress {
    /// The host name or IP address, without brackets for IPv6.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl NodeAddress {
    /// The address `host:port`.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for NodeAddress {
    /// `host:port`, with an IPv6 address in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A URL taken apart. Holds passwords: never printed (no `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A URL redis-rs parses itself.
    Single {
        /// The URL as given.
        url: String,
    },
    /// Seed nodes of a cluster.
    Cluster {
        tls: bool,
        seeds: Vec<NodeAddress>,
        credentials: Credentials,
    },
    /// Sentinels and the master they watch.
    Sentinel {
        tls: bool,
        sentinels: Vec<NodeAddress>,
        master_name: String,
        db: i64,
        /// The data nodes' credentials (the URL's user info).
        credentials: Credentials,
    },
}

/// A user name and a password, either possibly absent.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

/// The schemes every error about a URL lists.
const SCHEMES: &str = "redis://, rediss://, redis+unix://, unix://, redis-cluster://, \
                       rediss-cluster://, redis-sentinel:// or rediss-sentinel://";

impl Endpoint {
    /// Parses `url`; `master_name` is the master name given apart from the URL, if any.
    pub(crate) fn parse(url: &str, master_name: Option<&str>) -> Result<Self> {
        let shown = RedactedUrl(url);
        let bad = |reason: String| Error::invalid_input("config field url", reason);
        if url.trim().is_empty() {
            return Err(bad(format!(
                "is empty; give the Redis to connect to, e.g. redis://127.0.0.1:6379 ({SCHEMES})"
            )));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(format!(
                "({shown}) has no scheme; it must start with one of {SCHEMES}"
            )));
        };
        let (tls, sentinel) = match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => {
                url.into_connection_info().map_err(|err| {
                    // redis-rs's messages here are fixed texts ("Invalid database number"),
                    // which never quote the URL.
                    bad(format!(
                        "({shown}) is not a valid {scheme}:// URL ({err}); write e.g. \
                         {scheme}://[user:password@]host:6379/0"
                    ))
                })?;
                return Ok(Self::Single {
                    url: url.to_owned(),
                });
            }
            "redis-cluster" => (false, false),
            "rediss-cluster" => (true, false),
            "redis-sentinel" => (false, true),
            "rediss-sentinel" => (true, true),
            _ => {
                return Err(bad(format!(
                    "({shown}) has the scheme {scheme:?}; use one of {SCHEMES}"
                )));
            }
        };
        // User info ends at the last `@` (as in `redact_url`), so a stray `@` in a password
        // cannot turn part of it into a host name.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let credentials = match userinfo {
            Some(info) => parse_credentials(info).ok_or_else(|| {
                bad(format!(
                    "({shown}) has a user name or password that is not valid URL text; \
                     percent-encode characters such as % / ? # @ in it"
                ))
            })?,
            None => Credentials::default(),
        };
        let hosts_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (hosts, tail) = rest.split_at(hosts_end);
        if tail.contains(['?', '#']) {
            return Err(bad(format!(
                "({shown}) has a query or fragment, which {scheme}:// URLs do not take; set \
                 timeouts and TLS in the connection options"
            )));
        }
        let default_port = if sentinel { 26379 } else { 6379 };
        let nodes = hosts
            .split(',')
            .map(|item| parse_node(item.trim(), default_port))
            .collect::<Option<Vec<_>>>()
            .filter(|nodes| !nodes.is_empty())
            .ok_or_else(|| {
                let what = if sentinel { "sentinels" } else { "seed nodes" };
                bad(format!(
                    "({shown}) must list its {what} as host:port separated by commas, e.g. \
                     {scheme}://host1:{default_port},host2:{default_port}{}",
                    if sentinel { "/mymaster" } else { "" }
                ))
            })?;
        let segments: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
        if !sentinel {
            return match segments.as_slice() {
                [] | ["0"] => Ok(Self::Cluster {
                    tls,
                    seeds: nodes,
                    credentials,
                }),
                _ => Err(bad(format!(
                    "({shown}) names a path; a cluster has only database 0, so write \
                     {scheme}://host1:6379,host2:6379 without a path"
                ))),
            };
        }
        let (from_url, db) = match segments.as_slice() {
            [] => (None, 0),
            [name] => (Some(*name), 0),
            [name, db] => {
                let db = db
                    .parse::<i64>()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or_else(|| {
                        bad(format!(
                            "({shown}) ends with {db:?} where the database number goes; write \
                         {scheme}://host:26379/mymaster/0"
                        ))
                    })?;
                (Some(*name), db)
            }
            _ => {
                return Err(bad(format!(
                    "({shown}) has too many path segments; write \
                     {scheme}://host1:26379,host2:26379/mymaster[/db]"
                )));
            }
        };
        let master_name = match (from_url, master_name) {
            (Some(url_name), Some(field)) if url_name != field => {
                return Err(Error::invalid_input(
                    "config field master_name",
                    format!(
                        "is {field:?}, but the URL ({shown}) names the master {url_name:?}; \
                         give the name once"
                    ),
                ));
            }
            (Some(name), _) | (None, Some(name)) => name.to_owned(),
            (None, None) => {
                return Err(bad(format!(
                    "({shown}) names no master; write {scheme}://host1:26379,host2:26379/mymaster \
                     or set master_name"
                )));
            }
        };
        if master_name.is_empty()
            || master_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid_input(
                "config field master_name",
                format!("{master_name:?} must be non-empty and hold no whitespace"),
            ));
        }
        Ok(Self::Sentinel {
            tls,
            sentinels: nodes,
            master_name,
            db,
            credentials,
        })
    }

    pub(crate) fn topology(&self) -> Topology {
        match self {
            Self::Single { .. } => Topology::Single,
            Self::Cluster { .. } => Topology::Cluster,
            Self::Sentinel { .. } => Topology::Sentinel,
        }
    }
}

/// `user:password`, `:password` or `user`, percent-decoded; `None` when not decodable.
fn parse_credentials(info: &str) -> Option<Credentials> {
    let (user, password) = match info.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (info, None),
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Some(Credentials {
        username: non_empty(percent_decode(user)?),
        password: match password {
            Some(p) => non_empty(percent_decode(p)?),
            None => None,
        },
    })
}

/// `%XX` escapes decoded; `None` for a broken escape, invalid UTF-8, or a character that URL
/// user info cannot hold unencoded (`/ ? # @`).
fn percent_decode(text: &str) -> Option<String> {
    if text.contains(['/', '?', '#', '@']) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `None` when malformed.
fn parse_node(item: &str, default_port: u16) -> Option<NodeAddress> {
    let (host, port) = if let Some(v6) = item.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match item.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (item, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "[]@/".contains(c)) {
        return None;
    }
    let port = match port {
        Some(port) => port.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default_port,
    };
    Some(NodeAddress::new(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(endpoint: &Endpoint) -> Vec<String> {
        match endpoint {
            Endpoint::Single { .. } => vec![],
            Endpoint::Cluster { seeds, .. } => seeds.iter().map(ToString::to_string).collect(),
            Endpoint::Sentinel { sentinels, .. } => {
                sentinels.iter().map(ToString::to_string).collect()
            }
        }
    }

    #[test]
    fn cluster_seeds_and_credentials() {
        let e = Endpoint::parse("rediss-cluster://app:p%40ss@h1:7000,[::1]:7001,h3", None).unwrap();
        assert_eq!(nodes(&e), ["h1:7000", "[::1]:7001", "h3:6379"]);
        let Endpoint::Cluster {
            tls, credentials, ..
        } = e
        else {
            panic!("not a cluster")
        };
        assert!(tls);
        assert_eq!(credentials.username.as_deref(), Some("app"));
        assert_eq!(credentials.password.as_deref(), Some("p@ss"));
    }

    #[test]
    fn sentinel_master_db_and_default_port() {
        let e = Endpoint::parse("redis-sentinel://:pw@s1,s2:26380/mymaster/2", None).unwrap();
        assert_eq!(nodes(&e), ["s1:26379", "s2:26380"]);
        let Endpoint::Sentinel {
            tls,
            master_name,
            db,
            credentials,
            ..
        } = e
        else {
            panic!("not sentinel")
        };
        assert!(!tls);
        assert_eq!((master_name.as_str(), db), ("mymaster", 2));
        assert_eq!(credentials.username, None);
        assert_eq!(credentials.password.as_deref(), Some("pw"));
        let from_field = Endpoint::parse("redis-sentinel://s1:26379", Some("cache")).unwrap();
        assert!(
            matches!(from_field, Endpoint::Sentinel { master_name, .. } if master_name == "cache")
        );
    }
}
