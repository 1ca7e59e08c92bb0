//! `connection`: the URL forms and their refusals (here), and `connect` against a real single
//! server, a real Redis Cluster (which loses a master) and a real Sentinel group (which fails
//! over), each followed by the same `Connection` in the same process (a module per topology).

mod cluster;
mod sentinel;
mod single_server;

use std::time::Duration;

use redis::aio::ConnectionLike;
use redstream_core::connection::{Connection, ConnectionOptions, Topology};
use redstream_core::{ErrorKind, TlsOptions};

/// A bound on a whole scenario, so a hang fails the test instead of stalling the run. Not a
/// speed requirement: the testkit's helpers wait for the events themselves.
const HANG_GUARD: Duration = Duration::from_secs(180);

const CANARY: &str = "Canary-p4ss";

async fn set(conn: &mut impl ConnectionLike, key: &str, value: &str) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(conn)
        .await
        .unwrap_or_else(|err| panic!("SET {key}: {err}"));
}

async fn get(conn: &mut impl ConnectionLike, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap_or_else(|err| panic!("GET {key}: {err}"))
}

// ---------------------------------------------------------------------------------------
// URL forms, options and refusals (no server)
// ---------------------------------------------------------------------------------------

#[test]
fn url_forms_name_their_topology() {
    let cases = [
        ("redis://127.0.0.1:6379/0", Topology::Single),
        ("rediss://user:pw@cache.example:6380/1", Topology::Single),
        ("redis+unix:///run/redis.sock", Topology::Single),
        ("unix:///run/redis.sock", Topology::Single),
        ("redis-cluster://h1:7000,h2:7001,h3", Topology::Cluster),
        ("rediss-cluster://app:pw@h1:7000", Topology::Cluster),
        ("redis-cluster://[::1]:7000,[::1]:7001/0", Topology::Cluster),
        (
            "redis-sentinel://host1:26379,host2:26379/mymaster",
            Topology::Sentinel,
        ),
        ("redis-sentinel://:pw@s1,s2/mymaster/3", Topology::Sentinel),
        ("rediss-sentinel://s1:26379/mymaster", Topology::Sentinel),
    ];
    for (url, topology) in cases {
        let options = ConnectionOptions::new(url);
        options
            .validate()
            .unwrap_or_else(|err| panic!("{url}: {err}"));
        assert_eq!(options.topology().unwrap(), topology, "{url}");
    }
    // The master name may come from its own field instead of the URL.
    let options =
        ConnectionOptions::new("redis-sentinel://s1:26379,s2:26379").with_master_name("mymaster");
    assert_eq!(options.topology().unwrap(), Topology::Sentinel);
}

#[test]
fn refused_urls_and_options_say_what_is_wrong_without_the_password() {
    let pw = CANARY;
    let cases: Vec<(ConnectionOptions, &str, &str)> = vec![
        (ConnectionOptions::new(""), "url", "is empty"),
        (
            ConnectionOptions::new(format!("localhost:{pw}@6379")),
            "url",
            "no scheme",
        ),
        (
            ConnectionOptions::new(format!("http://:{pw}@h:6379")),
            "url",
            "redis-sentinel://",
        ),
        (
            ConnectionOptions::new(format!("redis://:{pw}@h:6379/notadb")),
            "url",
            "not a valid redis:// URL",
        ),
        (
            ConnectionOptions::new(format!("redis-cluster://:{pw}@")),
            "url",
            "seed nodes",
        ),
        (
            ConnectionOptions::new(format!("redis-cluster://:{pw}@h1:7000,:7001")),
            "url",
            "host:port",
        ),
        (
            ConnectionOptions::new(format!("redis-cluster://:{pw}@h1:70000")),
            "url",
            "host:port",
        ),
        (
            ConnectionOptions::new(format!("redis-cluster://:{pw}@h1:7000/2")),
            "url",
            "only database 0",
        ),
        (
            ConnectionOptions::new(format!("redis-cluster://:{pw}@h1:7000?protocol=resp3")),
            "url",
            "query",
        ),
        (
            ConnectionOptions::new(format!("redis-sentinel://:{pw}@s1:26379")),
            "url",
            "names no master",
        ),
        (
            ConnectionOptions::new(format!("redis-sentinel://:{pw}@s1:26379/m/x")),
            "url",
            "database number",
        ),
        (
            ConnectionOptions::new(format!("redis-sentinel://:{pw}@s1:26379/m/0/extra")),
            "url",
            "too many path segments",
        ),
        (
            ConnectionOptions::new(format!("redis-sentinel://:{pw}@s1:26379/mymaster"))
                .with_master_name("other"),
            "master_name",
            "give the name once",
        ),
        (
            ConnectionOptions::new(format!("redis-cluster://:{pw}/x@h1:7000")),
            "url",
            "percent-encode",
        ),
        (
            ConnectionOptions::new(format!("redis://:{pw}@h:6379")).with_master_name("m"),
            "master_name",
            "only applies to Sentinel",
        ),
        (
            ConnectionOptions::new(format!("redis-cluster://:{pw}@h:6379"))
                .with_sentinel_password("x"),
            "sentinel_password",
            "only applies to Sentinel",
        ),
        (
            ConnectionOptions::new(format!("redis://:{pw}@h:6379"))
                .with_connect_timeout(Duration::ZERO),
            "connect_timeout",
            "is zero",
        ),
        (
            ConnectionOptions::new(format!("redis-sentinel://:{pw}@s1/m"))
                .with_tls(TlsOptions::default().with_ca_cert_path("/nonexistent/ca.pem")),
            "tls.ca_cert_path",
            "rediss://",
        ),
    ];
    for (options, field, reason) in cases {
        let err = options.validate().unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{text}");
        assert!(
            text.contains(&format!("config field {field}")),
            "{options:?}: {text}"
        );
        assert!(text.contains(reason), "{options:?}: {text}");
        assert!(!text.contains(pw), "password in {text}");
        assert!(!format!("{err:?}").contains(pw), "password in {err:?}");
        assert!(
            !format!("{options:?}").contains(pw),
            "password in {options:?}"
        );
    }
}

#[test]
fn options_read_from_files_with_humane_durations_and_no_unknown_fields() {
    let options: ConnectionOptions = serde_json::from_str(
        r#"{"url": "redis-sentinel://s1:26379/mymaster", "response_timeout": "250ms",
            "sentinel_password": "Canary-p4ss"}"#,
    )
    .unwrap();
    assert_eq!(options.response_timeout, Duration::from_millis(250));
    assert_eq!(options.connect_timeout, Duration::from_secs(5));
    assert_eq!(options.sentinel_password.as_deref(), Some(CANARY));
    let shown = format!("{options:?}");
    assert!(!shown.contains(CANARY), "{shown}");
    assert!(
        shown.contains("sentinel_password: Some(\"***\")"),
        "{shown}"
    );

    let back: ConnectionOptions =
        serde_json::from_value(serde_json::to_value(&options).unwrap()).unwrap();
    assert_eq!(back, options);

    let unknown = serde_json::from_str::<ConnectionOptions>(r#"{"uri": "redis://h"}"#)
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown field `uri`"), "{unknown}");
    let bare = serde_json::from_str::<ConnectionOptions>(r#"{"connect_timeout": 5}"#)
        .unwrap_err()
        .to_string();
    assert!(bare.contains("expected a string"), "{bare}");
}

#[test]
fn connections_are_clone_send_sync() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Connection>();
}

/// The options embedded in a crate's config, flat in its file, as every crate will embed
/// them. serde hands a flattened struct only the fields it knows, so its own
/// `deny_unknown_fields` refuses nothing there: the embedding config collects what is left in
/// a flattened map and refuses it (the pattern `ConnectionOptions`' docs give).
#[test]
fn options_embed_flat_in_another_config() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(default)]
    struct StoreConfig {
        key_prefix: String,
        #[serde(flatten)]
        connection: ConnectionOptions,
        #[serde(flatten)]
        unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
    }
    impl Default for StoreConfig {
        fn default() -> Self {
            Self {
                key_prefix: "myapp".to_owned(),
                connection: ConnectionOptions::default(),
                unknown: std::collections::BTreeMap::new(),
            }
        }
    }
    let config: StoreConfig = serde_json::from_str(
        r#"{"key_prefix": "shop", "url": "redis-cluster://h1:7000,h2:7001",
            "connect_timeout": "2s", "tls": {}}"#,
    )
    .unwrap();
    assert_eq!(config.key_prefix, "shop");
    assert_eq!(config.connection.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.connection.topology().unwrap(), Topology::Cluster);
    assert!(config.unknown.is_empty(), "{:?}", config.unknown);
    let defaults: StoreConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(defaults.connection, ConnectionOptions::default());
    let typo: StoreConfig =
        serde_json::from_str(r#"{"key_prefix": "shop", "urll": "redis://h"}"#).unwrap();
    assert_eq!(typo.unknown.keys().collect::<Vec<_>>(), ["urll"]);
    // Inside a nested section the options refuse unknown fields themselves.
    let err = serde_json::from_str::<ConnectionOptions>(r#"{"tls": {"ca": "x"}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `ca`"), "{err}");
}
