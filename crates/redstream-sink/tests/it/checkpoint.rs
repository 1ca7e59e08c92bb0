use std::sync::{Arc, Mutex};

use redstream_core::{ErrorKind, RetryPolicy, SourcePosition};
use redstream_sink::{Delivery, RedisSink};
use redstream_testkit::RedisServer;

use crate::{config, events};

#[tokio::test]
async fn hook_runs_after_each_batch_is_in_the_stream() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{ckpt}.events";
    let sink = RedisSink::new(config(&server.url(), stream)).unwrap();
    let seen: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let hook = {
        let seen = Arc::clone(&seen);
        let client = server.client().unwrap();
        move |position: SourcePosition| {
            let seen = Arc::clone(&seen);
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let len: usize = redis::cmd("XLEN")
                    .arg(stream)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                seen.lock().unwrap().push((position.to_string(), len));
                Ok(())
            }
        }
    };
    for i in 1..=3 {
        let delivery = sink
            .send_and_checkpoint(events(2), Some(SourcePosition::new(i.to_string())), &hook)
            .await
            .unwrap();
        assert!(matches!(delivery, Delivery::Acknowledged(ref ack) if ack.written == 2));
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("1".into(), 2), ("2".into(), 4), ("3".into(), 6)]
    );
}

fn recording_hook(
    seen: &Arc<Mutex<Vec<String>>>,
) -> impl Fn(SourcePosition) -> std::future::Ready<redstream_core::Result<()>> {
    let seen = Arc::clone(seen);
    move |position| {
        seen.lock().unwrap().push(position.to_string());
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn required_sink_failure_blocks_the_checkpoint() {
    let server = RedisServer::start().await.unwrap();
    server.kill().unwrap();
    let sink =
        RedisSink::new(config(&server.url(), "{req}.events").with_retry(RetryPolicy::none()))
            .unwrap();
    let seen = Arc::default();
    let err = sink
        .send_and_checkpoint(events(1), Some("1".into()), &recording_hook(&seen))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn optional_sink_failure_never_blocks_the_checkpoint() {
    let server = RedisServer::start().await.unwrap();
    server.kill().unwrap();
    let sink = RedisSink::new(
        config(&server.url(), "{opt}.events")
            .with_required(false)
            .with_retry(RetryPolicy::none()),
    )
    .unwrap();
    let seen = Arc::default();
    let delivery = sink
        .send_and_checkpoint(events(1), Some("1".into()), &recording_hook(&seen))
        .await
        .unwrap();
    assert!(matches!(delivery, Delivery::Dropped(ref err) if err.is_retryable()));
    assert_eq!(*seen.lock().unwrap(), vec!["1".to_owned()]);
    assert_eq!(sink.stats().failed_batches, 1);
}
