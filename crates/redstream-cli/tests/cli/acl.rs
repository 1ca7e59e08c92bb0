//! The ACL the CLI needs, as `docs/security.md` lists it: a read-only user runs every command
//! that only looks, and is refused (with the command named) by those that change something; a
//! user with the write additions runs those too.

use redstream_testkit::RedisServer;

use crate::support::{Cli, unique};

/// What the read-only commands send (`streams`, `info`, `groups`, `pending`, `tail` without a
/// group, `dlq list`, `dlq show`).
const READ_ONLY: &str = "+ping +info +time +scan +type +xlen +xrange +xrevrange +xread +xinfo|stream +xinfo|groups +xinfo|consumers +xpending";
/// What the commands that change something add (`publish`, `tail --group`, `claim`,
/// `dlq redrive`, `dlq purge`).
const WRITES: &str =
    "+xadd +evalsha +eval +script|load +xgroup|create +xreadgroup +xack +xautoclaim +xdel +xtrim";

fn rules(commands: &str, prefix: &str) -> Vec<String> {
    let mut rules = vec![format!("~{prefix}:*"), "-@all".to_owned()];
    rules.extend(commands.split_whitespace().map(str::to_owned));
    rules
}

#[test]
fn the_docs_list_these_commands() {
    let docs = include_str!("../../../../docs/security.md");
    for (role, commands) in [("cli-read-only", READ_ONLY), ("cli-writes", WRITES)] {
        let marker = format!("<!-- acl:{role} -->`{commands}`");
        assert!(
            docs.contains(&marker),
            "docs/security.md should list {marker}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cli_role_works_with_exactly_its_documented_acl() {
    let prefix = unique("cli-acl");
    let both = format!("{READ_ONLY} {WRITES}");
    let reader_rules = rules(READ_ONLY, &prefix);
    let writer_rules = rules(&both, &prefix);
    let reader_rules: Vec<&str> = reader_rules.iter().map(String::as_str).collect();
    let writer_rules: Vec<&str> = writer_rules.iter().map(String::as_str).collect();
    let server = RedisServer::builder()
        .acl_user_rules("reader", "pw-acl", &reader_rules)
        .acl_user_rules("writer", "pw-acl", &writer_rules)
        .start()
        .await
        .unwrap();
    let as_user = |user: &str| Cli {
        url: server.url_with_user(user, "pw-acl"),
        prefix: prefix.clone(),
    };
    let (reader, writer) = (as_user("reader"), as_user("writer"));
    let stream = writer.stream("order.created");

    writer.run(&["publish", "order.created", r#"{"n":1}"#]).ok();
    writer
        .run_with_stdin(
            &["publish", "order.created", "--file", "-"],
            "{\"n\":2}\n{\"n\":3}\n",
        )
        .ok();
    let transport = writer.transport().await;
    transport
        .publish_to_dlq(
            redstream_core::Event::new(
                "order.created",
                serde_json::json!({"n": 4}),
                Default::default(),
            ),
            "by hand",
        )
        .await
        .unwrap();
    let dead = transport.dlq_entries(1).await.unwrap()[0].id.clone();
    // Groups made by an administrator: `ops` reads from the start, `stuck` has pending entries.
    let mut admin = server.connection().await.unwrap();
    for group in ["ops", "stuck"] {
        let () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(group)
            .arg("0")
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("stuck")
        .arg("gone")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut admin)
        .await
        .unwrap();

    for args in [
        vec!["streams"],
        vec!["info", "order.created"],
        vec!["info", stream.as_str()],
        vec!["groups", "order.created"],
        vec!["pending", "order.created", "stuck"],
        vec!["dlq", "list"],
        vec!["dlq", "show", dead.as_str()],
        vec!["tail", "order.created", "--from", "-", "--count", "2"],
    ] {
        let out = reader.run(&args);
        assert_eq!(out.code, Some(0), "reader {args:?}: {out:#?}");
    }
    // Writes are refused for the reader, naming the command.
    reader
        .run(&["publish", "order.created", r#"{"n":9}"#])
        .fails_with("evalsha");

    for args in [
        vec!["tail", "order.created", "--group", "ops", "--count", "2"],
        vec![
            "claim",
            "order.created",
            "stuck",
            "ops-2",
            "--min-idle",
            "0ms",
        ],
        vec!["dlq", "redrive", "--id", dead.as_str(), "--yes"],
        vec!["dlq", "purge", "--yes"],
    ] {
        let out = writer.run(&args);
        assert_eq!(out.code, Some(0), "writer {args:?}: {out:#?}");
    }
}
