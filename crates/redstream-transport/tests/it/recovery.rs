//! Recovery after a restart: the first publish after the server is back succeeds, and the
//! breaker is not kept open by a connection that died with the old server.

use std::time::{Duration, Instant};

use redstream_core::{CircuitBreakerConfig, Error, ErrorKind, Event, HandlerResult};
use redstream_testkit::RedisServer;

use crate::support::{event, fast, transport, unique};

/// The reproduction: breaker threshold 1, open 5 s; publish; SIGKILL and restart; the
/// next publish used to fail with `broken pipe` on the dead connection and open the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publish_after_a_restart_succeeds() {
    let server = RedisServer::start().await.unwrap();
    let breaker = CircuitBreakerConfig::default()
        .with_failure_threshold(1)
        .with_open_duration(Duration::from_secs(5));
    let transport = transport(
        &server,
        &unique("restart"),
        "g",
        fast().with_circuit_breaker(breaker),
    )
    .await;
    transport.publish(event("order.created", 1)).await.unwrap();
    server.kill().unwrap();
    server.restart().await.unwrap();
    transport.publish(event("order.created", 2)).await.unwrap();
    transport.publish(event("order.created", 3)).await.unwrap();
    assert_eq!(transport.circuit_breaker_stats().await.opened_count, 0);
}

/// Publishing while the server is down fails (saying nothing was sent) and opens the breaker
/// (default settings: 5 failures, open 1 s); once the server is back, the breaker's first trial
/// is a publish that succeeds: after a restart nothing fails but the breaker's own short wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_resumes_as_soon_as_the_server_is_back() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, &unique("down"), "g", fast()).await;
    transport.publish(event("order.created", 1)).await.unwrap();
    server.kill().unwrap();
    // The first call after the kill may still go out on the dying connection (an ambiguous
    // `broken pipe`); once the connection is known dead, calls are refused a connection and
    // say that nothing was sent.
    let mut ambiguous = Vec::new();
    for n in 0..10 {
        let err = transport
            .publish(event("order.created", n))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        if err.kind() == ErrorKind::Connection && !err.to_string().contains("nothing was sent") {
            ambiguous.push(err.to_string());
        }
    }
    assert!(ambiguous.len() <= 1, "{ambiguous:?}");
    let opened = transport.circuit_breaker_stats().await.opened_count;
    assert_eq!(opened, 1, "the outage opened the breaker");
    server.restart().await.unwrap();
    let back = Instant::now();
    let id = loop {
        match transport.publish(event("order.created", 99)).await {
            Ok(id) => break id,
            Err(Error::CircuitOpen { retry_after }) => tokio::time::sleep(retry_after).await,
            Err(err) => panic!("a publish after the restart failed: {err}"),
        }
    };
    assert_eq!(
        transport.circuit_breaker_stats().await.opened_count,
        opened,
        "the first trial succeeded"
    );
    println!(
        "first publish after the restart: {id}, {:?} after it",
        back.elapsed()
    );
}

/// A subscription reads again soon after a restart: an event published once the server is
/// back (with AOF, so the group survives) reaches the handler. Prints how long that took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_resumes_after_a_restart() {
    let server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let transport = transport(&server, &unique("consume-down"), "g", fast()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["order.created".to_owned()], move |event: Event| {
            let _ = tx.send(crate::support::number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    transport.publish(event("order.created", 1)).await.unwrap();
    assert_eq!(crate::support::recv(&mut rx, "before the restart").await, 1);
    server.kill().unwrap();
    server.restart().await.unwrap();
    let back = Instant::now();
    loop {
        match transport.publish(event("order.created", 2)).await {
            Ok(_) => break,
            Err(Error::CircuitOpen { retry_after }) => tokio::time::sleep(retry_after).await,
            Err(err) => panic!("a publish after the restart failed: {err}"),
        }
    }
    assert_eq!(crate::support::recv(&mut rx, "after the restart").await, 2);
    println!("handled {:?} after the server was back", back.elapsed());
    transport.unsubscribe(&handle).await.unwrap();
}

/// A subscription that cannot read says so at the warning level once, not at every retry
/// (retries come up to every second), and says when it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscription_warns_once_and_when_it_reads_again() {
    let server = RedisServer::start().await.unwrap();
    let group = unique("stall-group");
    let transport = transport(&server, &unique("stall"), &group, fast()).await;
    let handle = transport
        .subscribe(vec!["order.created".to_owned()], |_: Event| async {
            HandlerResult::Ok(())
        })
        .await
        .unwrap();
    let ours = |needle: &str| {
        crate::support::logged(needle)
            .into_iter()
            .filter(|line| line.contains(&group))
            .count()
    };
    let down = Instant::now();
    server.kill().unwrap();
    crate::support::until("the stall's first warning", || async {
        ours("reading failed") >= 1
    })
    .await;
    // The outage the test simulates: 3 s, several retries (at most 1 s apart).
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().await.unwrap();
    crate::support::until("the recovery's message", || async {
        ours("reading again after a stall") == 1
    })
    .await;
    let recovered = crate::support::logged("reading again after a stall")
        .into_iter()
        .find(|line| line.contains(&group))
        .unwrap();
    let failures: u32 = recovered
        .split("failures=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failure count in {recovered}"));
    assert!(failures >= 2, "{recovered}");
    let warnings = ours("reading failed");
    let allowed = 1 + down.elapsed().as_secs() / 10;
    assert!(
        (1..=allowed as usize).contains(&warnings),
        "{warnings} warnings for a stall of {:?}",
        down.elapsed()
    );
    transport.unsubscribe(&handle).await.unwrap();
}
