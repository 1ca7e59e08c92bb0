//! Tables fit the terminal: at `COLUMNS=80` no line is wider, and ids, names and timestamps are
//! never cut inside a word; a table that cannot fit is stacked as `NAME: value` lines. Without a
//! terminal or `COLUMNS` (a pipe), rows are never wrapped.

use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Cli, Output};

fn at_width(cli: &Cli, columns: &str, args: &[&str]) -> String {
    let out = cli.command(args).env("COLUMNS", columns).output().unwrap();
    let out = Output {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    out.ok()
}

#[tokio::test]
async fn tables_fit_80_columns_without_cutting_words() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let transport = cli.transport().await;
    let long_type = "order.created.by.the.storefront.checkout";
    let mut ids = Vec::new();
    for n in 0..3 {
        let event = Event::new(long_type, json!({ "n": n }), EventMetadata::default());
        let error = "connection timeout after 5000ms while calling the payment provider";
        ids.push(transport.publish_to_dlq(event, error).await.unwrap());
        transport
            .publish(Event::new(
                long_type,
                json!({ "n": n }),
                EventMetadata::default(),
            ))
            .await
            .unwrap();
    }
    let stream = cli.stream(long_type);
    for args in [
        &["dlq", "list"][..],
        &["streams"],
        &["info", long_type],
        &["dlq", "show", &ids[0]],
    ] {
        let printed = at_width(&cli, "80", args);
        for line in printed.lines() {
            assert!(
                line.chars().count() <= 80,
                "{args:?}: a line over 80 columns: {line:?}\n{printed}"
            );
        }
        let whole = |word: &str| printed.lines().any(|line| line.contains(word));
        assert!(whole(&stream) || args[0] == "dlq", "{args:?}: {printed}");
        if args[0] == "dlq" {
            assert!(whole(&ids[0]), "{args:?}: {printed}");
            assert!(whole(long_type), "{args:?}: {printed}");
        }
    }
    // The dead letters do not fit in a table at 80 columns: stacked, every field on its line.
    let stacked = at_width(&cli, "80", &["dlq", "list"]);
    for id in &ids {
        assert!(stacked.contains(&format!("ID: {id}")), "{stacked}");
    }
    assert!(stacked.contains(&format!("TYPE: {long_type}")), "{stacked}");
    // Wide enough: a table, with its borders.
    let wide = at_width(&cli, "250", &["dlq", "list"]);
    assert!(wide.contains('│') && !wide.contains("ID: "), "{wide}");
    // A pipe: a table whose rows are never wrapped, however long.
    let piped = cli.run(&["dlq", "list"]).ok();
    assert!(
        piped
            .lines()
            .any(|line| line.contains(&ids[0]) && line.contains("while calling the payment")),
        "{piped}"
    );
}
