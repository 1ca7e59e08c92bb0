//! A password in `--url` or `REDIS_URL` never appears in what the binary prints, whatever the
//! URL's shape (unencoded `/`, `#`, `?` or `@` in the password, a `pass=` query parameter), in
//! tables, `--json`, or debug logs, against an unreachable port and a server that refuses it.

use std::process::Command;

use redstream_testkit::RedisServer;

const SHAPES: [&str; 7] = [
    "redis://:CAN/ARY@HOST",
    "redis://u:CAN#ARY?x@HOST/0",
    "redis://:CANARY@@HOST",
    "redis://:CAN@ARY@HOST",
    "redis://app:CANARY==/+x@HOST/1",
    "redis://:CAN%2FARY@HOST",
    "redis+unix:///tmp/redstream-nope.sock?db=0&pass=CANARY",
];

fn run(url: &str, args: &[&str], env: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_redstream"));
    command.env_remove("RUST_LOG").env_remove("REDIS_URL");
    if env {
        command.env("REDIS_URL", url);
    } else {
        command.args(["--url", url]);
    }
    let out = command.args(args).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{url} {args:?} should fail");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn the_password_never_appears_whatever_the_url_shape() {
    let server = RedisServer::builder()
        .password("the-real-one")
        .start()
        .await
        .unwrap();
    let live = format!("127.0.0.1:{}", server.port());
    for host in ["127.0.0.1:1", live.as_str()] {
        for shape in SHAPES {
            let url = shape.replace("HOST", host);
            for args in [
                &["streams"][..],
                &["--json", "streams"],
                &["--log", "debug", "info", "x"],
                &["state", "get", "k"],
                &["dlq", "list"],
                &["publish", "t", "{}"],
            ] {
                for env in [false, true] {
                    let printed = run(&url, args, env);
                    for secret in ["CANARY", "CAN/ARY", "CAN#ARY", "CAN@ARY", "CAN%2FARY"] {
                        assert!(
                            !printed.contains(secret),
                            "{url} {args:?} (env {env}) printed the password: {printed}"
                        );
                    }
                }
            }
        }
    }
}
