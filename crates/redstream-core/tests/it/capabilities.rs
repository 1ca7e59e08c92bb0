//! `Connection::capabilities`: the stream commands newer than Redis 7 that a real server has,
//! read from its own `COMMAND DOCS`, on one server, a cluster, and for a user who may not ask.

use redis::Value;
use redstream_core::connection::{self, Capabilities, CommandDocs, ConnectionOptions};
use redstream_testkit::{RedisCluster, RedisServer, ServerName, ServerVersion};

/// The capabilities this server is expected to have, by name, from its name and version:
/// Redis gained them in 8.2 (XACKDEL), 8.4 (XREADGROUP CLAIM), 8.6 (XADD IDMP) and 8.8
/// (XNACK); no Valkey has them (Valkey 9 included).
fn expected(version: &ServerVersion) -> Vec<&'static str> {
    let names: Vec<&str> = [
        (2, "XACKDEL"),
        (4, "XREADGROUP CLAIM"),
        (6, "XADD IDMP"),
        (8, "XNACK"),
    ]
    .into_iter()
    .filter(|(minor, _)| version.name == ServerName::Redis && version.version >= (8, *minor, 0))
    .map(|(_, name)| name)
    .collect();
    eprintln!("server under test: {version:?}; expecting {names:?}");
    names
}

#[tokio::test]
async fn a_servers_commands_and_arguments_are_read_from_its_command_docs() {
    let server = RedisServer::start().await.unwrap();
    let version = server
        .server_version()
        .expect("the testkit knows the version")
        .clone();
    let mut raw = server.connection().await.unwrap();

    // The reader on this server's real reply: commands it has and arguments nested in blocks
    // (XADD's MAXLEN sits inside its trimming block) are found; others are not.
    let reply: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("XADD")
        .arg("XREADGROUP")
        .arg("XAUTOCLAIM")
        .query_async(&mut raw)
        .await
        .unwrap();
    let docs = CommandDocs::new(&reply);
    assert!(docs.has_command("XAUTOCLAIM"), "{reply:?}");
    assert!(docs.has_command("xadd"));
    assert!(!docs.has_command("XNOSUCHCOMMAND"));
    assert!(docs.has_argument("XADD", "NOMKSTREAM"), "{reply:?}");
    assert!(docs.has_argument("XADD", "MAXLEN"), "{reply:?}");
    assert!(docs.has_argument("XREADGROUP", "NOACK"), "{reply:?}");
    assert!(!docs.has_argument("XADD", "NOSUCHTOKEN"));

    let conn = connection::connect(&ConnectionOptions::new(server.url()))
        .await
        .unwrap();
    let found = conn.capabilities().await.unwrap();
    assert_eq!(found.names(), expected(&version));
}

#[tokio::test]
async fn a_user_who_may_not_ask_gets_none_and_no_error() {
    let server = RedisServer::builder()
        .acl_user_rules("app", "app-Secret", &["~*", "&*", "+@all", "-command"])
        .start()
        .await
        .unwrap();
    let conn = connection::connect(&ConnectionOptions::new(
        server.url_with_user("app", "app-Secret"),
    ))
    .await
    .unwrap();
    // The user really is refused `COMMAND DOCS`...
    let refused = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("XADD")
        .query_async::<Value>(&mut conn.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("NOPERM"), "{refused}");
    // ...and that means "none", not an error that would stop a working connection.
    assert_eq!(conn.capabilities().await.unwrap(), Capabilities::NONE);
}

#[tokio::test]
async fn a_cluster_has_what_all_its_masters_have() {
    let cluster = RedisCluster::builder()
        .replicas_per_master(0)
        .start()
        .await
        .unwrap();
    let version = ServerVersion::detect().unwrap();
    let node = &cluster.nodes()[0];
    let url = format!("redis-cluster://{}:{}", node.server().host(), node.port());
    let conn = connection::connect(&ConnectionOptions::new(url))
        .await
        .unwrap();
    assert_eq!(
        conn.capabilities().await.unwrap().names(),
        expected(&version)
    );
}
