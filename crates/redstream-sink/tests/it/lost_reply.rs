//! A reply lost after the batch script ran: the connection is cut once the script has run and
//! before its reply reaches the sink, the one failure where the sink cannot know whether it
//! wrote.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redstream_core::{BatchSink, SourcePosition};
use redstream_sink::RedisSink;
use redstream_testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{config, events, ids, stream_ids};

/// A TCP proxy that, while `armed`, cuts the first connection that sends `EVALSHA` as soon as
/// the server has started to answer it (so the script has run), without passing the answer on.
async fn start_cutting_proxy(target: String, armed: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(&target).await.unwrap();
            tokio::spawn(relay(client, server, Arc::clone(&armed)));
        }
    });
    port
}

async fn relay(mut client: TcpStream, mut server: TcpStream, armed: Arc<AtomicBool>) {
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = client.read(&mut from_client) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                let chunk = &from_client[..n];
                if server.write_all(chunk).await.is_err() {
                    return;
                }
                if armed.load(Ordering::SeqCst) && contains(chunk, b"$7\r\nEVALSHA\r\n") {
                    wait_for_reply(&mut server, &mut from_server).await;
                    armed.store(false, Ordering::SeqCst);
                    return; // Dropping both sockets cuts the connection.
                }
            }
            n = server.read(&mut from_server) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                if client.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits until the server has begun to answer: Redis runs a script before it writes its
/// reply, and nothing else is in flight on the sink's connection.
async fn wait_for_reply(server: &mut TcpStream, buf: &mut [u8]) {
    let n = server.read(buf).await.unwrap();
    assert!(n > 0, "server closed before answering the script");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_the_script_ran_writes_nothing_twice() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{lost}.events";
    let armed = Arc::new(AtomicBool::new(false));
    let port = start_cutting_proxy(
        format!("{}:{}", server.host(), server.port()),
        Arc::clone(&armed),
    )
    .await;
    let sink = RedisSink::new(config(&format!("redis://127.0.0.1:{port}"), stream)).unwrap();

    let first = events(3);
    sink.send_batch(first.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap();

    armed.store(true, Ordering::SeqCst);
    let second = events(3);
    let ack = sink
        .send_batch(second.clone(), Some(SourcePosition::new("2")))
        .await
        .unwrap();
    // The proxy did cut, after the script ran. The script is sent once more at once (a run of
    // it that finds its batch recorded writes nothing), and that run found the batch written.
    assert!(!armed.load(Ordering::SeqCst));
    assert_eq!(sink.stats().skipped_batches, 1);
    assert_eq!(ack.written, 0);
    assert_eq!(ack.skipped_duplicates, 3);

    let mut conn = server.connection().await.unwrap();
    let mut expected = ids(&first);
    expected.extend(ids(&second));
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
}
