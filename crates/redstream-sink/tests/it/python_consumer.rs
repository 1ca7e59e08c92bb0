//! Seed 003's Python consumer reads what the sink writes.
//!
//! The script is the seed's consumer-group loop (`xgroup_create`, `xreadgroup`,
//! `json.loads(data[b"event"])`, `xack`), stopping when a read comes back empty instead of
//! looping forever. It needs `python3` and redis-py; the test installs redis-py from PyPI
//! when it is missing, and fails (never skips) when it cannot.

use std::process::Command;

use redstream_core::{BatchSink, SourcePosition};
use redstream_sink::RedisSink;
use redstream_testkit::RedisServer;

use crate::{config, events, ids};

const CONSUMER: &str = r#"
import json, sys
import redis

r = redis.Redis.from_url(sys.argv[1])
stream = sys.argv[2]
try:
    r.xgroup_create(stream, "mygroup", id="0", mkstream=True)
except redis.ResponseError:
    pass

seen = []
while True:
    events = r.xreadgroup("mygroup", "worker1", {stream: ">"}, count=10, block=200)
    if not events:
        break
    for _stream, messages in events:
        for msg_id, data in messages:
            event = json.loads(data[b"event"])
            seen.append(event["id"])
            r.xack(stream, "mygroup", msg_id)
print(json.dumps(seen))
"#;

fn ensure_redis_py() {
    let has = |python: &str| {
        Command::new(python)
            .args(["-c", "import redis"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has("python3") {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "redis"])
        .status()
        .expect("python3 is needed for seed 003's Python consumer");
    assert!(
        status.success() && has("python3"),
        "could not install redis-py (python3 -m pip install redis)"
    );
}

#[tokio::test]
async fn seed_003_python_consumer_finds_every_event_id() {
    ensure_redis_py();
    let server = RedisServer::start().await.unwrap();
    let stream = "{py}.orders.events";
    let sink = RedisSink::new(config(&server.url(), stream)).unwrap();
    let mut written = Vec::new();
    for batch in 0..5 {
        let batch_events = events(23);
        written.extend(ids(&batch_events));
        sink.send_batch(batch_events, Some(SourcePosition::new(batch.to_string())))
            .await
            .unwrap();
    }

    let output = tokio::process::Command::new("python3")
        .args(["-c", CONSUMER, &server.url(), stream])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen, written);
}
