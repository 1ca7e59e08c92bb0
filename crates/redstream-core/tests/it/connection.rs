//! `connection`: the URL forms and their refusals, and `connect` against a real single
//! server, a real Redis Cluster (which loses a master) and a real Sentinel group (which fails
//! over), each followed by the same `Connection` in the same process.

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redstream_core::connection::{self, Connection, ConnectionOptions, NodeAddress, Topology};
use redstream_core::{ErrorKind, TlsOptions};
use redstream_testkit::{RedisCluster, RedisSentinel, RedisServer, key_slot};

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

// ---------------------------------------------------------------------------------------
// A single server
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn single_server_serves_commands_pipelines_scripts_and_blocking_reads() {
    let server = RedisServer::builder()
        .password(CANARY)
        .start()
        .await
        .unwrap();
    let url = format!("redis://:{CANARY}@{}:{}/0", server.host(), server.port());
    let mut conn = connection::connect(&ConnectionOptions::new(&url))
        .await
        .unwrap();
    assert_eq!(conn.topology(), Topology::Single);
    assert!(!conn.target().contains(CANARY), "{}", conn.target());
    assert!(!format!("{conn:?}").contains(CANARY));

    set(&mut conn, "myapp:counter", "1").await;
    let (a, b): (String, i64) = redis::pipe()
        .cmd("GET")
        .arg("myapp:counter")
        .cmd("INCR")
        .arg("myapp:counter")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((a.as_str(), b), ("1", 2));
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let n: i64 = script
        .key("myapp:counter")
        .arg(5)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 7);

    // A blocking read on a dedicated connection holds up nothing on the shared one.
    let mut blocking = conn.dedicated(Duration::from_secs(10)).await.unwrap();
    let read = tokio::spawn(async move {
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(5_000)
            .arg("STREAMS")
            .arg("events:order.created")
            .arg("$")
            .query_async(&mut blocking)
            .await
            .unwrap();
        reply
    });
    // Let the XREAD reach the server before the entry is added: wait until it is blocked.
    redstream_testkit::wait_until("the XREAD to block", Duration::from_secs(10), || {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if info.contains("blocked_clients:1") {
                Ok(())
            } else {
                Err("no blocked client yet".to_owned())
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(get(&mut conn, "myapp:counter").await.as_deref(), Some("7"));
    let _: String = redis::cmd("XADD")
        .arg("events:order.created")
        .arg("*")
        .arg("event")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let reply = read.await.unwrap();
    assert!(
        matches!(reply, redis::Value::Array(_) | redis::Value::Map(_)),
        "{reply:?}"
    );

    let err = conn.cluster_masters().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

/// A pinned connection keeps its `WATCH` and `MULTI` (one socket), and is never replaced:
/// after a restart it fails, while the shared and dedicated connections recover. A `MULTI`
/// opened before the restart can therefore never let queued writes run on a new socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_connection_is_never_replaced() {
    let server = RedisServer::start().await.unwrap();
    let shared = connection::connect(&ConnectionOptions::new(server.url()))
        .await
        .unwrap();
    let mut pinned = shared.pinned(Duration::from_secs(5)).await.unwrap();
    assert_eq!(pinned.topology(), Topology::Single);
    set(&mut pinned, "p", "1").await;
    let () = redis::cmd("MULTI").query_async(&mut pinned).await.unwrap();
    server.restart().await.unwrap();
    // The queued write goes nowhere: the socket it needs is gone, and stays gone.
    for _ in 0..3 {
        let err = redis::cmd("SET")
            .arg("p")
            .arg("outside")
            .query_async::<()>(&mut pinned)
            .await
            .unwrap_err();
        assert!(err.is_io_error() || err.is_connection_dropped(), "{err}");
    }
    let mut shared = shared.clone();
    let mut ok = false;
    for _ in 0..3 {
        ok |= redis::cmd("PING")
            .query_async::<()>(&mut shared)
            .await
            .is_ok();
    }
    assert!(ok, "the shared connection did not recover");
    assert_ne!(get(&mut shared, "p").await.as_deref(), Some("outside"));
    let mut fresh = shared.pinned(Duration::from_secs(5)).await.unwrap();
    set(&mut fresh, "p", "2").await;
    assert_eq!(get(&mut fresh, "p").await.as_deref(), Some("2"));
    assert!(
        shared.pinned(Duration::ZERO).await.is_err(),
        "a zero response timeout is refused"
    );
}

/// The server's count of connections it has accepted (`INFO stats`).
async fn connections_received(admin: &mut impl ConnectionLike) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(admin)
        .await
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("no total_connections_received in {info}"))
}

/// The shared connection to a single server is replaced before the next command once the
/// server closes it: the first command after each restart succeeds (a command sent on the old
/// socket would fail with `broken pipe` or a reset). While the server is down, a command fails
/// with a refusal that says it was not sent. Many clones that all need the replacement at once
/// make one connection between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_connection_is_replaced_before_the_next_command() {
    let server = RedisServer::start().await.unwrap();
    let shared = connection::connect(&ConnectionOptions::new(server.url()))
        .await
        .unwrap();
    let ping = |conn: Connection| async move { conn.query::<String>(&redis::cmd("PING")).await };
    for round in 0..3 {
        server.restart().await.unwrap();
        let reply = ping(shared.clone()).await;
        assert_eq!(
            reply.as_deref().ok(),
            Some("PONG"),
            "round {round}: {reply:?}"
        );
    }

    server.kill().unwrap();
    // A command sent before the client has seen the socket close fails on it (it may have
    // reached the server, for all the client knows); the one after is refused a connection.
    let first = ping(shared.clone()).await.unwrap_err();
    if !connection::was_not_sent(&first) {
        let second = ping(shared.clone()).await.unwrap_err();
        assert!(connection::was_not_sent(&second), "{first}, then {second}");
    }

    server.restart().await.unwrap();
    let mut admin = server.connection().await.unwrap();
    let before = connections_received(&mut admin).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|_| tokio::spawn(ping(shared.clone())))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "PONG");
    }
    let after = connections_received(&mut admin).await.unwrap();
    assert_eq!(
        after - before,
        1,
        "connections made for 32 commands at once"
    );
}

/// Commands that all find the single-server connection gone share one reconnection attempt,
/// and its failure: with the server paused (`SIGSTOP`), its kernel still completes each TCP
/// connection, so once it resumes, its count of accepted connections says how many were tried.
/// One attempt is two connections (the first and its retry), however many commands waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_waiting_for_a_reconnection_share_one_attempt() {
    let server = RedisServer::start().await.unwrap();
    let options = ConnectionOptions::new(server.url())
        .with_connect_timeout(Duration::from_millis(300))
        .with_response_timeout(Duration::from_millis(300));
    let shared = connection::connect(&options).await.unwrap();
    // A restart closes the shared connection; the next command must make a new one.
    server.restart().await.unwrap();
    let mut admin = server.connection().await.unwrap();
    let before = connections_received(&mut admin).await.unwrap();

    server.pause().unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let conn = shared.clone();
            tokio::spawn(async move { conn.query::<String>(&redis::cmd("PING")).await })
        })
        .collect();
    for task in tasks {
        assert!(
            task.await.unwrap().is_err(),
            "a command reached a paused server"
        );
    }
    server.resume().unwrap();
    // The server accepts every connection waiting in its backlog at once, but may answer the
    // admin connection first: wait until it has accepted some, then count them all.
    redstream_testkit::wait_until("the paused attempts to be accepted", HANG_GUARD, || {
        let mut admin = admin.clone();
        async move {
            if connections_received(&mut admin).await? >= before + 2 {
                Ok(())
            } else {
                Err("not yet accepted".to_owned())
            }
        }
    })
    .await
    .unwrap();
    let after = connections_received(&mut admin).await.unwrap();
    assert_eq!(
        after - before,
        2,
        "connections tried by 16 waiting commands"
    );
    // And once the server answers again, the next command reconnects.
    assert_eq!(
        shared.query::<String>(&redis::cmd("PING")).await.unwrap(),
        "PONG"
    );
}

#[tokio::test]
async fn unix_socket() {
    // A relative path: the server creates it in its data directory.
    let server = RedisServer::builder()
        .config("unixsocket", "redis.sock")
        .config("unixsocketperm", "700")
        .start()
        .await
        .unwrap();
    let path = server.data_dir().join("redis.sock");
    for scheme in ["redis+unix", "unix"] {
        let url = format!("{scheme}://{}", path.display());
        let mut conn = connection::connect(&ConnectionOptions::new(&url))
            .await
            .unwrap();
        assert_eq!(conn.topology(), Topology::Single);
        set(&mut conn, "myapp:unix", scheme).await;
        assert_eq!(get(&mut conn, "myapp:unix").await.as_deref(), Some(scheme));
    }
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

#[tokio::test]
async fn wrong_password_is_an_auth_error_that_does_not_show_it() {
    let server = RedisServer::builder()
        .password("right-one")
        .start()
        .await
        .unwrap();
    let url = format!("redis://:{CANARY}@{}:{}", server.host(), server.port());
    let err = connection::connect(&ConnectionOptions::new(url))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.to_string().contains(CANARY), "{err}");
    assert!(!format!("{err:?}").contains(CANARY), "{err:?}");
}

#[tokio::test]
async fn rediss_with_a_private_ca() {
    let server = RedisServer::builder().tls(true).start().await.unwrap();
    let options = ConnectionOptions::new(server.url())
        .with_tls(TlsOptions::default().with_ca_cert_pem(server.ca_cert_pem().unwrap().to_owned()));
    let mut conn = connection::connect(&options).await.unwrap();
    set(&mut conn, "myapp:tls", "yes").await;
    assert_eq!(get(&mut conn, "myapp:tls").await.as_deref(), Some("yes"));
}

// ---------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------

fn cluster_url(cluster: &RedisCluster, seeds: usize) -> String {
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .take(seeds)
        .map(|node| format!("{}:{}", node.server().host(), node.port()))
        .collect();
    format!("redis-cluster://:{CANARY}@{}", hosts.join(","))
}

/// Makes every master's writes reach its replica, so a killed master loses none of them.
async fn replicate_everything(conn: &Connection) {
    for master in conn.cluster_masters().await.unwrap() {
        let acked: i64 = conn
            .query_node(&master, redis::cmd("WAIT").arg(1).arg(10_000))
            .await
            .unwrap();
        assert_eq!(acked, 1, "{master}");
    }
}

#[tokio::test]
async fn cluster_routes_keys_of_every_slot_and_survives_a_killed_master() {
    tokio::time::timeout(HANG_GUARD, async {
        let cluster = RedisCluster::builder()
            .password(CANARY)
            .start()
            .await
            .unwrap();
        // One seed is enough to discover the cluster.
        let options = ConnectionOptions::new(cluster_url(&cluster, 1));
        let mut conn = connection::connect(&options).await.unwrap();
        assert_eq!(conn.topology(), Topology::Cluster);
        assert!(!conn.target().contains(CANARY));

        let keys: Vec<String> = (0..300).map(|i| format!("myapp:key:{i}")).collect();
        let slots: HashSet<u16> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
        assert!(slots.len() > 250, "{} slots", slots.len());
        for key in &keys {
            set(&mut conn, key, key).await;
        }
        for key in &keys {
            assert_eq!(get(&mut conn, key).await.as_deref(), Some(key.as_str()));
        }

        // Every master, and a keyspace-wide count summed over them.
        let masters = conn.cluster_masters().await.unwrap();
        assert_eq!(masters.len(), 3, "{masters:?}");
        let ports: HashSet<u16> = cluster
            .masters()
            .await
            .unwrap()
            .iter()
            .map(|n| n.port())
            .collect();
        assert_eq!(
            masters.iter().map(|m| m.port).collect::<HashSet<_>>(),
            ports
        );
        let mut total = 0;
        for master in &masters {
            let size: i64 = conn
                .query_node(master, &redis::cmd("DBSIZE"))
                .await
                .unwrap();
            total += size;
        }
        assert_eq!(total, 300);

        // A script on one key goes to that key's master (EVALSHA, loaded on NOSCRIPT).
        let script = redis::Script::new(
            "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])",
        );
        let reply: String = script
            .key("{order.created}:script")
            .arg("ran")
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(reply, "ran");

        // A dedicated connection works too (its own ClusterConnection).
        let mut dedicated = conn.dedicated(Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            get(&mut dedicated, "myapp:key:7").await.as_deref(),
            Some("myapp:key:7")
        );

        // Kill the master of one key; once a replica took over, the same connection serves
        // every key again, old and new, without being reopened.
        replicate_everything(&conn).await;
        let victim = cluster.master_for_key(b"myapp:key:0").await.unwrap();
        let victim_port = victim.port();
        let promoted = cluster.kill_master(victim).await.unwrap();
        assert_ne!(promoted.port(), victim_port);
        for key in &keys {
            assert_eq!(
                get(&mut conn, key).await.as_deref(),
                Some(key.as_str()),
                "{key}"
            );
        }
        for key in &keys {
            set(&mut conn, key, "after").await;
        }
        assert_eq!(
            get(&mut conn, "myapp:key:0").await.as_deref(),
            Some("after")
        );
        assert_eq!(
            get(&mut dedicated, "myapp:key:0").await.as_deref(),
            Some("after")
        );
        let reply: String = script
            .key("{order.created}:script")
            .arg("again")
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(reply, "again");
        let masters = conn.cluster_masters().await.unwrap();
        assert_eq!(masters.len(), 3, "{masters:?}");
        assert!(masters.contains(&NodeAddress::new(promoted.server().host(), promoted.port())));
        assert!(
            !masters.iter().any(|m| m.port == victim_port),
            "{masters:?}"
        );
    })
    .await
    .expect("the cluster scenario hung");
}

#[tokio::test]
async fn cluster_follows_a_moved_slot() {
    tokio::time::timeout(HANG_GUARD, async {
        let cluster = RedisCluster::builder()
            .password(CANARY)
            .replicas_per_master(0)
            .start()
            .await
            .unwrap();
        let mut conn = connection::connect(&ConnectionOptions::new(cluster_url(&cluster, 3)))
            .await
            .unwrap();
        let key = "events:{order.created}";
        set(&mut conn, key, "before").await;
        let slot = key_slot(key.as_bytes());
        let owner = cluster.master_for_slot(slot).await.unwrap().port();
        let masters = cluster.masters().await.unwrap();
        let to = masters.iter().find(|m| m.port() != owner).unwrap();
        cluster.move_slot(slot, to).await.unwrap();
        assert_eq!(get(&mut conn, key).await.as_deref(), Some("before"));
        set(&mut conn, key, "after").await;
        let mut direct = to.server().connection().await.unwrap();
        assert_eq!(get(&mut direct, key).await.as_deref(), Some("after"));
    })
    .await
    .expect("the slot move hung");
}

// ---------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sentinel_writes_follow_kill_and_failover_in_the_same_process() {
    tokio::time::timeout(HANG_GUARD, async {
        let group = RedisSentinel::builder()
            .password(CANARY)
            .sentinel_password("sentinel-Canary")
            .start()
            .await
            .unwrap();
        // The testkit's URL without credentials; the data nodes' password goes in it.
        let url = group.url().replacen(
            "redis-sentinel://",
            &format!("redis-sentinel://:{CANARY}@"),
            1,
        );
        let options = ConnectionOptions::new(&url).with_sentinel_password("sentinel-Canary");
        let mut conn = connection::connect(&options).await.unwrap();
        assert_eq!(conn.topology(), Topology::Sentinel);
        assert!(!format!("{conn:?} {options:?}").contains("Canary"));
        let mut dedicated = conn.dedicated(Duration::from_secs(10)).await.unwrap();

        set(&mut conn, "myapp:before", "1").await;
        let replicas: i64 = redis::cmd("WAIT")
            .arg(2)
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(replicas, 2);

        // A crash: the sentinels promote a replica; the same connection writes to it.
        let first = group.master().await.unwrap().port();
        let promoted = group.kill_master().await.unwrap();
        assert_ne!(promoted.port(), first);
        set(&mut conn, "myapp:after-kill", "2").await;
        let mut direct = promoted.connection().await.unwrap();
        assert_eq!(
            get(&mut direct, "myapp:after-kill").await.as_deref(),
            Some("2")
        );
        assert_eq!(get(&mut direct, "myapp:before").await.as_deref(), Some("1"));
        // So does the dedicated connection, and a pipeline.
        set(&mut dedicated, "myapp:dedicated", "3").await;
        assert_eq!(
            get(&mut direct, "myapp:dedicated").await.as_deref(),
            Some("3")
        );
        let () = redis::pipe()
            .cmd("SET")
            .arg("myapp:pipe")
            .arg("4")
            .ignore()
            .cmd("INCR")
            .arg("myapp:n")
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(get(&mut direct, "myapp:pipe").await.as_deref(), Some("4"));
        let replicas: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(replicas, 1);

        // A failover without failure: the old master becomes a replica; writes follow.
        let second = promoted.port();
        let third = group.failover().await.unwrap();
        assert_ne!(third.port(), second);
        set(&mut conn, "myapp:after-failover", "5").await;
        set(&mut dedicated, "myapp:dedicated", "6").await;
        let mut direct = third.connection().await.unwrap();
        assert_eq!(
            get(&mut direct, "myapp:after-failover").await.as_deref(),
            Some("5")
        );
        assert_eq!(
            get(&mut direct, "myapp:dedicated").await.as_deref(),
            Some("6")
        );
        assert_eq!(get(&mut direct, "myapp:before").await.as_deref(), Some("1"));
        assert_eq!(get(&mut conn, "myapp:pipe").await.as_deref(), Some("4"));
    })
    .await
    .expect("the sentinel scenario hung");
}

#[tokio::test]
async fn sentinel_without_its_password_is_refused_without_showing_passwords() {
    let group = RedisSentinel::builder()
        .password(CANARY)
        .sentinel_password("sentinel-Canary")
        .replicas(1)
        .start()
        .await
        .unwrap();
    let url = group.url().replacen(
        "redis-sentinel://",
        &format!("redis-sentinel://:{CANARY}@"),
        1,
    );
    let err = connection::connect(&ConnectionOptions::new(url))
        .await
        .unwrap_err();
    // The sentinels refuse the lookup; the message says where the sentinels' password goes.
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("sentinel_password"), "{err}");
    assert!(!format!("{err} {err:?}").contains("Canary"), "{err:?}");
}

/// Clones of one connection in several tasks write through a master crash: while the
/// sentinels elect a replica their writes fail with retryable errors, and once it is promoted
/// every task writes to it, with no task reconnecting by hand.
#[tokio::test]
async fn clones_in_many_tasks_follow_a_sentinel_failover_together() {
    tokio::time::timeout(HANG_GUARD, async {
        let group = RedisSentinel::builder().replicas(1).start().await.unwrap();
        let conn = connection::connect(&ConnectionOptions::new(group.url()))
            .await
            .unwrap();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..4)
            .map(|task| {
                let mut conn = conn.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    let key = format!("myapp:task:{task}");
                    let mut failures = Vec::new();
                    while !*stop.borrow_and_update() {
                        let result: redis::RedisResult<()> = redis::cmd("INCR")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await
                            .map(|_: i64| ());
                        if let Err(err) = result {
                            let err = redstream_core::Error::from_redis("INCR", key.clone(), err);
                            failures.push(err.kind());
                            // Pacing while the group is down, not a wait for an event.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        tokio::task::yield_now().await;
                    }
                    // After the failover, the first write succeeds.
                    set(&mut conn, &key, "done").await;
                    failures
                })
            })
            .collect();
        let promoted = group.kill_master().await.unwrap();
        stop_tx.send(true).unwrap();
        let mut direct = promoted.connection().await.unwrap();
        for (task, handle) in tasks.into_iter().enumerate() {
            let failures = handle.await.unwrap();
            assert!(
                failures.iter().all(|kind| kind.is_retryable()),
                "task {task}: {failures:?}"
            );
            let key = format!("myapp:task:{task}");
            assert_eq!(
                get(&mut direct, &key).await.as_deref(),
                Some("done"),
                "{key}"
            );
        }
    })
    .await
    .expect("the failover with many tasks hung");
}

#[tokio::test]
async fn sentinel_with_an_unknown_master_name_says_so() {
    let group = RedisSentinel::builder().replicas(1).start().await.unwrap();
    let url = group.url().replace("/mymaster", "/nosuchmaster");
    let err = connection::connect(&ConnectionOptions::new(url))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("check the master name"), "{err}");
    assert!(err.to_string().contains("nosuchmaster"), "{err}");
}

/// Makes `to` the master and `from` its replica by hand, then points the sentinels at `to`.
/// Unlike a Sentinel failover, nothing closes the clients of `from`: they stay connected to
/// what is now a replica.
async fn swap_roles(group: &RedisSentinel, from: &RedisServer, to: &RedisServer) {
    let mut to_conn = to.connection().await.unwrap();
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut to_conn)
        .await
        .unwrap();
    let mut from_conn = from.connection().await.unwrap();
    let () = redis::cmd("REPLICAOF")
        .arg(to.host())
        .arg(to.port())
        .query_async(&mut from_conn)
        .await
        .unwrap();
    for sentinel in group.sentinels() {
        let mut conn = sentinel.connection().await.unwrap();
        let () = redis::cmd("SENTINEL")
            .arg("REMOVE")
            .arg(group.master_name())
            .query_async(&mut conn)
            .await
            .unwrap();
        let () = redis::cmd("SENTINEL")
            .arg("MONITOR")
            .arg(group.master_name())
            .arg(to.host())
            .arg(to.port())
            .arg(2)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Whether `server` still has a client named `name` (the connection under test).
async fn has_client(server: &RedisServer, name: &str) -> bool {
    let mut conn = server.connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.contains(&format!(" name={name} "))
}

/// A command that reaches a demoted master over a connection that stayed open is refused
/// with `READONLY`; it ran no write, so the connection asks the sentinels again and sends it
/// to the new master: first a command, then a pipeline of writes.
#[tokio::test]
async fn sentinel_resends_what_a_demoted_master_refused_with_readonly() {
    tokio::time::timeout(HANG_GUARD, async {
        let group = RedisSentinel::builder().replicas(1).start().await.unwrap();
        let mut conn = connection::connect(&ConnectionOptions::new(group.url()))
            .await
            .unwrap();
        let first = group.master().await.unwrap();
        let second = group
            .data_nodes()
            .iter()
            .find(|node| node.port() != first.port())
            .unwrap();
        let () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("under-test-1")
            .query_async(&mut conn)
            .await
            .unwrap();

        swap_roles(&group, first, second).await;
        assert!(
            has_client(first, "under-test-1").await,
            "the connection was closed"
        );
        set(&mut conn, "myapp:readonly", "resent").await;
        let mut direct = second.connection().await.unwrap();
        assert_eq!(
            get(&mut direct, "myapp:readonly").await.as_deref(),
            Some("resent")
        );

        // The connection is now to `second`; swap back and send a pipeline of writes.
        let () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("under-test-2")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(has_client(second, "under-test-2").await);
        swap_roles(&group, second, first).await;
        assert!(
            has_client(second, "under-test-2").await,
            "the connection was closed"
        );
        let () = redis::pipe()
            .cmd("SET")
            .arg("myapp:pipeline:a")
            .arg("1")
            .ignore()
            .cmd("SET")
            .arg("myapp:pipeline:b")
            .arg("2")
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut direct = first.connection().await.unwrap();
        assert_eq!(
            get(&mut direct, "myapp:pipeline:a").await.as_deref(),
            Some("1")
        );
        assert_eq!(
            get(&mut direct, "myapp:pipeline:b").await.as_deref(),
            Some("2")
        );
    })
    .await
    .expect("the READONLY scenario hung");
}

/// A master that hangs (`SIGSTOP`) keeps its sockets open, so no disconnection tells the
/// connection to move, and its calls would time out. The connection hears the sentinels
/// announce the new master (`+switch-master`) and moves at once: the first call after the
/// promotion reaches the promoted replica, while the old master is still hung.
#[tokio::test]
async fn sentinel_moves_off_a_hung_master_when_the_sentinels_announce_the_switch() {
    tokio::time::timeout(HANG_GUARD, async {
        let group = RedisSentinel::builder().start().await.unwrap();
        let options = ConnectionOptions::new(group.url())
            .with_connect_timeout(Duration::from_millis(500))
            .with_response_timeout(Duration::from_millis(500));
        let mut conn = connection::connect(&options).await.unwrap();
        set(&mut conn, "myapp:before", "1").await;
        let first = group.master().await.unwrap().port();

        let promoted = group.pause_master().await.unwrap();
        assert_ne!(promoted.port(), first);
        // `pause_master` returned once the group settled, well after the sentinels announced
        // the switch: no call times out against the hung master, the first goes to the
        // promoted one. (Without the announcement, the first call would time out.)
        let () = redis::cmd("SET")
            .arg("myapp:after")
            .arg("2")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("the first call after the switch failed: {err}"));
        let mut direct = promoted.connection().await.unwrap();
        assert_eq!(get(&mut direct, "myapp:after").await.as_deref(), Some("2"));
        let paused = group
            .data_nodes()
            .iter()
            .find(|node| node.port() == first)
            .unwrap();
        assert!(paused.is_paused(), "the old master was resumed too early");
        paused.resume().unwrap();
    })
    .await
    .expect("the hung-master scenario hung");
}
