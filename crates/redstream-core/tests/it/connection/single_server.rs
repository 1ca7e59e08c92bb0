//! `connect` to a single server: commands, pipelines, scripts and blocking reads; the pinned
//! connection; replacement after a restart; a Unix socket; authentication and TLS.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redstream_core::connection::{self, Connection, ConnectionOptions, Topology};
use redstream_core::{ErrorKind, TlsOptions};
use redstream_testkit::RedisServer;

use super::{CANARY, HANG_GUARD, get, set};

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

/// `evalsha` sends the caller's `EVALSHA`, and loads the script only when the server answers
/// `NOSCRIPT` (it ran nothing then); any other error is the script's own, returned as it is,
/// never sent twice.
#[tokio::test]
async fn evalsha_loads_the_script_only_when_the_server_does_not_know_it() {
    let server = RedisServer::start().await.unwrap();
    let conn = connection::connect(&ConnectionOptions::new(server.url()))
        .await
        .unwrap();
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let mut call = redis::cmd("EVALSHA");
    call.arg(script.get_hash()).arg(1).arg("n").arg(5);
    // Never loaded, then known, then flushed as after a restart.
    assert_eq!(conn.evalsha::<i64>(&script, &call).await.unwrap(), 5);
    assert_eq!(conn.evalsha::<i64>(&script, &call).await.unwrap(), 10);
    server.flush_scripts().await.unwrap();
    assert_eq!(conn.evalsha::<i64>(&script, &call).await.unwrap(), 15);

    let failing =
        redis::Script::new("redis.call('INCR', KEYS[1]) return redis.error_reply('ERR boom')");
    let mut call = redis::cmd("EVALSHA");
    call.arg(failing.get_hash()).arg(1).arg("m");
    let err = conn.evalsha::<i64>(&failing, &call).await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    // Loaded once on NOSCRIPT, run once: the failure was not sent again.
    assert_eq!(
        conn.query::<i64>(redis::cmd("GET").arg("m")).await.unwrap(),
        1
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
