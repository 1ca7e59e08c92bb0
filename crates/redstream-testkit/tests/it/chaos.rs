//! kill, restart, pause and resume.

use std::time::Duration;

use redis::AsyncCommands as _;
use redis::AsyncConnectionConfig;
use redstream_testkit::{Error, RedisServer};

#[tokio::test]
async fn appendonly_data_survives_kill_and_restart() {
    let server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let port = server.port();
    let old_pid = server.pid();
    let mut con = server.connection().await.unwrap();
    let () = con.set("order:1", "paid").await.unwrap();

    server.kill().unwrap();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);

    server.restart().await.unwrap();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), old_pid);

    let mut con = server.connection().await.unwrap();
    let value: Option<String> = con.get("order:1").await.unwrap();
    assert_eq!(value.as_deref(), Some("paid"));
}

#[tokio::test]
async fn without_appendonly_data_is_gone_after_restart() {
    let server = RedisServer::start().await.unwrap();
    let mut con = server.connection().await.unwrap();
    let () = con.set("order:1", "paid").await.unwrap();

    server.kill().unwrap();
    server.restart().await.unwrap();

    let mut con = server.connection().await.unwrap();
    let value: Option<String> = con.get("order:1").await.unwrap();
    assert_eq!(value, None);
}

#[tokio::test]
async fn restart_of_a_running_server_kills_it_first() {
    let server = RedisServer::start().await.unwrap();
    let old_pid = server.pid().unwrap();
    server.restart().await.unwrap();
    let new_pid = server.pid().unwrap();
    assert_ne!(old_pid, new_pid);
    let mut con = server.connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn killed_server_refuses_connections() {
    let server = RedisServer::start().await.unwrap();
    server.kill().unwrap();
    server.kill().unwrap(); // idempotent
    let err = server.connection().await.unwrap_err();
    let Error::Redis(err) = err else {
        panic!("expected a redis error, got {err}");
    };
    assert!(err.is_connection_refusal(), "{err}");
    assert!(matches!(server.pause(), Err(Error::NotRunning { .. })));
}

/// A killed server's port stays its own until it restarts: nothing else can listen on it (so
/// no other test's server is started there, where the killed server's clients would reach it),
/// and connections to it are refused; the restart takes it back.
#[tokio::test]
async fn a_killed_servers_port_is_held_until_it_restarts() {
    let server = RedisServer::start().await.unwrap();
    server.kill().unwrap();
    // A listener binds with `SO_REUSEADDR`, as servers do.
    if let Ok(taken) = std::net::TcpListener::bind(("127.0.0.1", server.port())) {
        drop(taken);
        // The one case the kit documents: a connection lingering on the port in `TIME_WAIT`
        // keeps the hold from binding. Where the kit takes its ports from the kernel's
        // ephemeral range (too little room below it), that can be another test's client, which
        // was given the port as its own end before this server took it.
        assert!(
            time_wait_on(server.port()),
            "another listener took the killed server's port, and no connection lingers on it"
        );
    }
    let err = server.connection().await.unwrap_err();
    let Error::Redis(err) = err else {
        panic!("expected a redis error, got {err}");
    };
    assert!(err.is_connection_refusal(), "{err}");
    server.restart().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn pause_makes_commands_time_out_and_resume_recovers() {
    let server = RedisServer::start().await.unwrap();
    let config =
        AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_millis(300)));
    let mut con = server
        .client()
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let () = con.set("k", "before").await.unwrap();

    server.pause().unwrap();
    assert!(server.is_paused());
    assert!(server.is_running(), "a paused server is still alive");
    // The outer timeout only detects a hang; the response timeout is what should fire.
    let stalled: redis::RedisResult<Option<String>> =
        tokio::time::timeout(Duration::from_secs(10), con.get("k"))
            .await
            .expect("the response timeout did not fire");
    let err = stalled.unwrap_err();
    assert!(err.is_timeout(), "expected a timeout, got {err}");

    server.resume().unwrap();
    assert!(!server.is_paused());
    let value: Option<String> = con.get("k").await.unwrap();
    assert_eq!(value.as_deref(), Some("before"));
}

#[tokio::test]
async fn a_paused_server_is_killed_on_drop() {
    let server = RedisServer::start().await.unwrap();
    let pid = server.pid().unwrap();
    server.pause().unwrap();
    server.pause().unwrap(); // idempotent
    drop(server);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    assert_eq!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    );
}

#[tokio::test]
async fn a_paused_server_can_be_killed_and_restarted() {
    let server = RedisServer::start().await.unwrap();
    server.pause().unwrap();
    server.kill().unwrap();
    assert!(!server.is_paused());
    server.restart().await.unwrap();
    let mut con = server.connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// Whether a TCP connection on 127.0.0.1:`port` is in `TIME_WAIT` (Linux's `/proc/net/tcp`:
/// local address `0100007F:<port in hex>`, state `06`).
fn time_wait_on(port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|table| {
        table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"06")
        })
    })
}
