//! Starting, using, configuring and dropping servers.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use redis::AsyncCommands as _;
use redstream_testkit::{Error, RedisServer};

use crate::set_get;

#[tokio::test]
async fn start_ping_set_get() {
    let server = RedisServer::start().await.unwrap();
    assert!(server.is_running());
    assert_eq!(server.host(), "127.0.0.1");
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    assert_ne!(server.port(), 6379, "must never use the shared Redis port");

    let mut con = server.connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(
        set_get(&mut con, "greeting", "hello").await.unwrap(),
        "hello"
    );
}

#[tokio::test]
async fn two_servers_are_independent() {
    let first = RedisServer::start().await.unwrap();
    let second = RedisServer::start().await.unwrap();
    assert_ne!(first.port(), second.port());
    assert_ne!(first.pid(), second.pid());
    assert_ne!(first.data_dir(), second.data_dir());

    let mut a = first.connection().await.unwrap();
    let mut b = second.connection().await.unwrap();
    let () = a.set("only-in-first", "1").await.unwrap();
    let seen: Option<String> = b.get("only-in-first").await.unwrap();
    assert_eq!(seen, None);
}

#[tokio::test]
async fn drop_stops_the_process_and_removes_the_directory() {
    let server = RedisServer::start().await.unwrap();
    let pid = server.pid().expect("a started server has a pid");
    let port = server.port();
    let dir = server.data_dir().to_owned();
    assert!(dir.join("redis.conf").is_file());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    drop(server);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    assert_eq!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH),
        "the redis-server process still exists"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[tokio::test]
async fn config_set_changes_a_setting() {
    let server = RedisServer::start().await.unwrap();
    server
        .config_set("maxmemory-policy", "allkeys-lru")
        .await
        .unwrap();

    let mut con = server.connection().await.unwrap();
    let (key, value): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(key, "maxmemory-policy");
    assert_eq!(value, "allkeys-lru");
}

#[tokio::test]
async fn config_set_rejects_unknown_settings() {
    let server = RedisServer::start().await.unwrap();
    let err = server.config_set("no-such-setting", "1").await.unwrap_err();
    assert!(matches!(err, Error::Redis(_)), "{err}");
}

#[tokio::test]
async fn flush_scripts_makes_the_server_forget_loaded_scripts() {
    let server = RedisServer::start().await.unwrap();
    let mut con = server.connection().await.unwrap();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query_async(&mut con)
        .await
        .unwrap();
    let exists = |sha: String| redis::cmd("SCRIPT").arg("EXISTS").arg(sha).clone();
    let known: Vec<bool> = exists(sha.clone()).query_async(&mut con).await.unwrap();
    assert_eq!(known, [true]);

    server.flush_scripts().await.unwrap();

    let known: Vec<bool> = exists(sha.clone()).query_async(&mut con).await.unwrap();
    assert_eq!(known, [false]);
    let err = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(0)
        .query_async::<i64>(&mut con)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOSCRIPT"), "{err}");
}

#[tokio::test]
async fn extra_config_directives_are_applied() {
    let server = RedisServer::builder()
        .config("hz", "42")
        .start()
        .await
        .unwrap();
    let mut con = server.connection().await.unwrap();
    let (_, hz): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("hz")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(hz, "42");
}

#[tokio::test]
async fn debug_command_can_be_enabled() {
    let server = RedisServer::builder()
        .enable_debug_command(true)
        .start()
        .await
        .unwrap();
    let mut con = server.connection().await.unwrap();
    redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(0)
        .exec_async(&mut con)
        .await
        .unwrap();
}

#[tokio::test]
async fn debug_command_is_off_by_default() {
    let server = RedisServer::start().await.unwrap();
    let mut con = server.connection().await.unwrap();
    let result = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(0)
        .exec_async(&mut con)
        .await;
    assert!(result.is_err(), "DEBUG should be refused by default");
}

#[tokio::test]
async fn a_bad_config_reports_the_server_log() {
    let err = RedisServer::builder()
        .config("no-such-directive", "1")
        .start()
        .await
        .unwrap_err();
    let Error::NotReady { log_tail, .. } = &err else {
        panic!("expected NotReady, got {err}");
    };
    assert!(log_tail.contains("no-such-directive"), "{log_tail}");
}

#[tokio::test]
async fn a_missing_binary_says_what_to_install() {
    let err = RedisServer::builder()
        .redis_server_binary("/nonexistent/redis-server")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotInstalled { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("apt-get install redis-server"),
        "{message}"
    );
    assert!(message.contains("brew install redis"), "{message}");
    assert!(message.contains("`docker` feature"), "{message}");
    // `unwrap()` prints Debug, which must carry the same advice.
    assert_eq!(format!("{err:?}"), message);
}

#[tokio::test]
async fn debug_output_hides_the_password() {
    let server = RedisServer::builder()
        .password("hunter2")
        .start()
        .await
        .unwrap();
    let debug = format!("{server:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("password: Some(\"***\")"), "{debug}");
}

#[tokio::test(start_paused = true)]
async fn starts_under_a_paused_tokio_clock() {
    // With a paused clock tokio timers fire as soon as the runtime idles, so readiness must not
    // depend on them.
    let server = RedisServer::start().await.unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");
}

/// `bench::server_cpu` reads the server's CPU time: it grows by what a command made the
/// server compute (a Lua loop of a million steps, several milliseconds).
#[tokio::test]
async fn server_cpu_grows_with_the_work_the_server_does() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let before = redstream_testkit::bench::server_cpu(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("EVAL")
        .arg("for i = 1, 1000000 do end")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let after = redstream_testkit::bench::server_cpu(&mut conn)
        .await
        .unwrap();
    assert!(
        after > before + std::time::Duration::from_millis(1),
        "server CPU {before:?} -> {after:?} across a million-step script"
    );
}
