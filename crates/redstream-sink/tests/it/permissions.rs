//! What a sink's ACL user needs, and what happens without it: the exact list docs/sink.md gives
//! works; each command removed from it, the progress key denied or made read-only, the stream
//! made read-only, and the issue's user allowed `XADD` but not the rest all fail at once with a
//! `PermissionDenied` naming the command, nothing written to the stream or the progress key,
//! no retry and no panic. (The operation the errors name is "batch script" or the command
//! sent, so a command named in an error comes from the refusal, not from the operation.)

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_core::{BatchSink, ErrorKind, RetryPolicy, SourcePosition};
use redstream_sink::{Durability, RedisSink};
use redstream_testkit::RedisServer;

use crate::replicas::replica_of;
use crate::{config, events, ids, stream_ids};

/// The stream of these tests, and the progress key of its sink (`config`'s id `test-sink`).
const STREAM: &str = "orders.events";
const PROGRESS_KEY: &str = "{orders.events}:redstream-sink:test-sink";

/// The commands of docs/sink.md's ACL for a sink user, as `ACL SETUSER` rules: the batch script
/// and what it runs, the read of the progress key, `WAIT` (with `durability`) and the `PING`
/// with which core's connection module checks a new connection.
const COMMANDS: [&str; 8] = [
    "+evalsha",
    "+script|load",
    "+xadd",
    "+hset",
    "+hmget",
    "+type",
    "+wait",
    "+ping",
];

/// The keys of docs/sink.md's ACL: the stream, its progress key, and read access to the name
/// earlier versions gave the progress key (so the sink can check that no progress was left
/// there).
const KEYS: [&str; 3] = [
    "~orders.events",
    "~{orders.events}:redstream-sink:test-sink",
    "%R~orders.events:redstream-sink:test-sink",
];

/// `docs/sink.md` lists exactly these commands.
#[test]
fn the_docs_list_these_commands() {
    let docs = include_str!("../../../../docs/sink.md");
    let marker = format!("<!-- acl:sink -->`{}`", COMMANDS.join(" "));
    assert!(docs.contains(&marker), "docs/sink.md should list {marker}");
    for key in KEYS {
        let documented = key.replace("test-sink", "orders-redis");
        assert!(
            docs.contains(&documented),
            "docs/sink.md should give {documented}"
        );
    }
}

fn rules<'a>(commands: &[&'a str], keys: &[&'a str]) -> Vec<&'a str> {
    commands.iter().chain(keys).copied().collect()
}

/// A sink for `STREAM` as `user`, with durability when `durable` (one replica), that would retry
/// for ever: only failing fast ends a refused batch.
fn sink_as(server: &RedisServer, user: &str, durable: bool) -> RedisSink {
    let url = server.url_with_user(user, "pw");
    let mut config = config(&url, STREAM).with_retry(RetryPolicy::unlimited());
    if durable {
        config = config.with_durability(Some(Durability::new(1, Duration::from_secs(2))));
    }
    RedisSink::new(config).unwrap()
}

async fn progress_fields(conn: &mut MultiplexedConnection) -> Vec<(String, String)> {
    redis::cmd("HGETALL")
        .arg(PROGRESS_KEY)
        .query_async(conn)
        .await
        .unwrap()
}

/// A batch that `sink` must refuse with `PermissionDenied` naming `command`: nothing written
/// to the stream or the progress key, no retry.
async fn assert_refused(sink: &RedisSink, conn: &mut MultiplexedConnection, command: &str) {
    let before = stream_ids(conn, STREAM).await;
    let progress = progress_fields(conn).await;
    let err = sink
        .send_batch(events(3), Some(SourcePosition::new("9")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{command}: {err}");
    assert!(
        err.to_string().to_lowercase().contains(command),
        "the error does not name {command}: {err}"
    );
    assert_eq!(sink.stats().retries, 0, "{command}: {err}");
    assert_eq!(stream_ids(conn, STREAM).await, before, "{command}: {err}");
    assert_eq!(progress_fields(conn).await, progress, "{command}: {err}");
}

/// A user with exactly the documented list writes batches, with and without `durability`, and
/// reads its progress; with any one command taken off the list, a batch is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_is_enough_and_each_command_in_it_is_needed() {
    let mut builder = RedisServer::builder().acl_user_rules("sink", "pw", &rules(&COMMANDS, &KEYS));
    for (n, removed) in COMMANDS.iter().enumerate() {
        let commands: Vec<&str> = COMMANDS.iter().copied().filter(|c| c != removed).collect();
        builder = builder.acl_user_rules(format!("without{n}"), "pw", &rules(&commands, &KEYS));
    }
    let server = builder.start().await.unwrap();
    let _replica = replica_of(&server).await;
    let mut conn = server.connection().await.unwrap();

    for durable in [false, true] {
        let sink = sink_as(&server, "sink", durable);
        let batch = events(3);
        let position = SourcePosition::new(format!("durable-{durable}"));
        let ack = sink
            .send_batch(batch.clone(), Some(position.clone()))
            .await
            .unwrap();
        assert_eq!(ack.written, 3);
        let recorded = sink.recorded_progress().await.unwrap().unwrap();
        assert_eq!(recorded.position, Some(position.clone()));
        // Found written, it is confirmed (HSET and WAIT) rather than written again.
        let again = sink_as(&server, "sink", durable);
        let ack = again
            .send_batch(batch.clone(), Some(position))
            .await
            .unwrap();
        assert_eq!((ack.written, ack.skipped_duplicates), (0, 3));
        again.confirm_recorded().await.unwrap();
    }
    assert_eq!(stream_ids(&mut conn, STREAM).await.len(), 6);

    for (n, removed) in COMMANDS.iter().enumerate() {
        let command = removed.trim_start_matches('+');
        // WAIT is sent with durability only.
        let durable = command == "wait";
        let sink = sink_as(&server, &format!("without{n}"), durable);
        // The first batch of a sink reads the progress first (HMGET); SCRIPT LOAD is needed
        // only where the server does not have the script yet.
        if command == "script|load" {
            server.flush_scripts().await.unwrap();
        }
        assert_refused(&sink, &mut conn, command).await;
    }
}

/// The issue's reproduction: a user allowed `XADD` (and `EXEC`, `PING`) but not `MULTI` nor
/// anything else the sink runs, and a user with no write permission at all.
#[tokio::test]
async fn the_issues_users_are_refused_with_nothing_written() {
    let server = RedisServer::builder()
        .acl_user_rules(
            "xadd-only",
            "pw",
            &["-@all", "+xadd", "+exec", "+ping", "~*"],
        )
        // `PING` too, which core's connection module sends to check a new connection.
        .acl_user_rules("reader", "pw", &["-@all", "+@read", "+ping", "~*"])
        .start()
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    // The first batch of a sink reads its progress before anything else.
    assert_refused(&sink_as(&server, "xadd-only", false), &mut conn, "hmget").await;
    assert_refused(&sink_as(&server, "reader", false), &mut conn, "evalsha").await;
}

/// A user allowed everything but `MULTI` and `EXEC` writes batches: the sink uses neither. One
/// that may not run scripts is refused naming `EVALSHA`.
#[tokio::test]
async fn no_multi_is_needed_and_no_scripting_is_refused() {
    let server = RedisServer::builder()
        .acl_user_rules("no-multi", "pw", &["+@all", "-multi", "-exec", "~*"])
        .acl_user_rules("no-scripts", "pw", &["+@all", "-@scripting", "~*"])
        .start()
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    let batch = events(2);
    let ack = sink_as(&server, "no-multi", false)
        .send_batch(batch.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap();
    assert_eq!(ack.written, 2);
    assert_eq!(stream_ids(&mut conn, STREAM).await, ids(&batch));
    assert_refused(&sink_as(&server, "no-scripts", false), &mut conn, "evalsha").await;
}

/// Keys: a user denied the progress key is refused at its read; one that may only read it is
/// refused by the batch script's check of `HSET`, before its `XADD`s; one that may only read
/// the stream is refused by its check of `XADD`.
#[tokio::test]
async fn a_progress_key_or_stream_denied_or_read_only_is_refused_before_any_write() {
    // Everything but `WAIT`.
    let commands: Vec<&str> = COMMANDS.iter().copied().filter(|c| *c != "+wait").collect();
    let commands = &commands[..];
    let server = RedisServer::builder()
        .acl_user_rules("stream-only", "pw", &rules(commands, &["~orders.events"]))
        .acl_user_rules(
            "progress-read-only",
            "pw",
            &rules(commands, &["~orders.events", "%R~{orders.events}:*"]),
        )
        .acl_user_rules(
            "stream-read-only",
            "pw",
            &rules(commands, &["%R~orders.events", "~{orders.events}:*"]),
        )
        .start()
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    assert_refused(&sink_as(&server, "stream-only", false), &mut conn, "hmget").await;
    // The server checks the keys a script declares before it runs it, and says only that one
    // of them is refused: the sink's error names the commands the script runs on each key and
    // the access they need.
    for user in ["progress-read-only", "stream-read-only"] {
        let sink = sink_as(&server, user, false);
        let command = if user.starts_with("stream") {
            "xadd"
        } else {
            "hset"
        };
        assert_refused(&sink, &mut conn, command).await;
        let err = sink.send_batch(events(1), None).await.unwrap_err();
        let message = err.to_string();
        for part in [
            "XADD on the stream \"orders.events\"",
            &format!("HSET, HMGET and TYPE on the progress key \"{PROGRESS_KEY}\""),
            "read and write access",
        ] {
            assert!(message.contains(part), "{part} not in: {message}");
        }
    }
}
