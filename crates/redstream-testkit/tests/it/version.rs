//! The server's name and version.

use redstream_testkit::{RedisServer, ServerName, ServerVersion};

#[tokio::test]
async fn the_server_says_which_binary_and_version_it_runs() {
    let server = RedisServer::start().await.unwrap();
    let version = server.server_version().unwrap().clone();
    assert_eq!(ServerVersion::detect().unwrap(), version);
    assert!(
        matches!(version.name, ServerName::Redis | ServerName::Valkey),
        "{version}"
    );
    // Every server the kit supports is Redis 7 or Valkey 7.2 and newer.
    assert!(version.at_least(7, 0), "{version}");

    // The server agrees.
    let mut con = server.connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .unwrap();
    let (major, minor, patch) = version.version;
    let field = match version.name {
        ServerName::Valkey => "valkey_version",
        _ => "redis_version",
    };
    assert!(
        info.contains(&format!("{field}:{major}.{minor}.{patch}")),
        "{version} vs {info}"
    );
}
