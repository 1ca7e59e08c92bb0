//! An entry over the event size limit leaves a bounded dead letter: a preview, its size, and
//! where the entry is; it is not redriven.

use redis::AsyncCommands;
use redstream_core::{Event, HandlerResult};
use redstream_testkit::RedisServer;

use crate::support::{fast, field, transport, unique, until, xrange};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_40_mib_entry_leaves_a_preview_in_the_dead_letter_stream() {
    const SIZE: usize = 40 * 1024 * 1024;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("oversized");
    let transport = transport(&server, &prefix, "workers", fast()).await;
    let stream = transport.names().stream("blob.stored");
    let handle = transport
        .subscribe(vec!["blob.stored".to_owned()], |_: Event| async {
            HandlerResult::Ok(())
        })
        .await
        .unwrap();
    // Writing 40 MiB can outlast redis-rs's default response timeout (half a second) on a
    // busy machine: this connection waits as long as the server takes.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = server
        .client()
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let huge = "x".repeat(SIZE);
    let entry_id: String = conn
        .xadd(&stream, "*", &[("event", huge.as_str())])
        .await
        .unwrap();
    drop(huge);
    let dlq = transport.names().dlq();
    until("the dead letter", || async {
        !xrange(&server, &dlq).await.is_empty()
    })
    .await;
    transport.unsubscribe(&handle).await.unwrap();

    let letters = xrange(&server, &dlq).await;
    let fields = &letters[0].1;
    let bytes: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    println!("dead letter of a {SIZE}-byte entry: {bytes} bytes");
    assert!(bytes < 64 * 1024, "{bytes} bytes");
    assert_eq!(field(fields, "truncated"), "true");
    assert_eq!(field(fields, "size"), (SIZE + "event".len()).to_string());
    assert_eq!(field(fields, "entry_id"), entry_id);
    assert_eq!(field(fields, "stream"), stream);

    let dead = transport.dlq_entries(10).await.unwrap();
    assert_eq!(dead[0].truncated_size, Some((SIZE + 5) as u64));
    let preview = dead[0].fields.as_ref().unwrap();
    assert_eq!(preview[0].0, "event");
    assert_eq!(preview[0].1, "x".repeat(512));
    let report = transport.redrive_all().await.unwrap();
    assert_eq!(report.redriven, 0);
    assert!(report.skipped[0].reason.contains("preview"), "{report:?}");
    assert_eq!(xrange(&server, &dlq).await.len(), 1, "kept");
    let len: usize = conn.xlen(&stream).await.unwrap();
    assert_eq!(len, 1, "the entry stays in its stream");
}
