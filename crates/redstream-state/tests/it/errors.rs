//! Errors a caller must be able to act on: authentication and ACL failures that fail fast
//! with a clear message, and passwords that never appear in a message.

use std::time::Duration;

use redstream_state::{CircuitBreakerConfig, ErrorKind, StateBackend, StateConfig, StateStore};
use redstream_testkit::RedisServer;

use crate::support::{capture_logs, within};

const PASSWORD: &str = "s3cret-pw";

fn impatient(url: String, prefix: &str) -> StateConfig {
    StateConfig::new(StateBackend::redis(url, prefix))
        .with_connect_timeout(Duration::from_secs(2))
        .with_response_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_wrong_passwords_fail_fast_at_open() {
    capture_logs();
    let server = RedisServer::builder()
        .password(PASSWORD)
        .start()
        .await
        .unwrap();

    let err = within(
        "open without a password",
        StateStore::with_config(impatient(server.url_without_auth(), "app")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("NOAUTH"), "{text}");
    assert!(text.contains("check the password"), "{text}");

    let wrong = format!("redis://:wrong-{PASSWORD}@127.0.0.1:{}", server.port());
    let err = within(
        "open with a wrong password",
        StateStore::with_config(impatient(wrong, "app")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let text = err.to_string();
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(text.contains(":***@127.0.0.1"), "{text}");

    // The right password works.
    let store = StateStore::with_config(impatient(server.url(), "app"))
        .await
        .unwrap();
    store.put("k", 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noperm_on_a_key_outside_the_acl_pattern_names_the_key() {
    capture_logs();
    let server = RedisServer::builder()
        .acl_user("app", "app-pass", "app:*")
        .start()
        .await
        .unwrap();
    let url = server.url_with_user("app", "app-pass");

    let allowed = StateStore::with_config(impatient(url.clone(), "app"))
        .await
        .unwrap();
    allowed.put("k", 1).await.unwrap();
    assert_eq!(allowed.incr("k").await.unwrap(), 2);

    let other = StateStore::with_config(impatient(url, "other"))
        .await
        .unwrap();
    let err = other.put("k", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("other:k"), "{text}");
    assert!(text.contains("ACL user lacks"), "{text}");
    assert!(!text.contains("app-pass"), "{text}");
    // A permission error says nothing about the server's health: the breaker stays closed.
    for _ in 0..10 {
        assert_eq!(
            other.get::<i64>("k").await.unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
    }
    let stats = other.circuit_breaker_stats().unwrap();
    assert_eq!(stats.failure_count, 0);
    assert_eq!(stats.opened_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_appear_in_messages_or_debug() {
    capture_logs();
    let server = RedisServer::builder()
        .password(PASSWORD)
        .start()
        .await
        .unwrap();
    let config = impatient(server.url(), "app")
        .with_circuit_breaker(CircuitBreakerConfig::default().with_failure_threshold(1));
    let store = StateStore::with_config(config).await.unwrap();
    store.put("k", 1).await.unwrap();
    let shown = format!("{store:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(shown.contains(":***@"), "{shown}");

    server.kill().unwrap();
    let err = store.get::<i64>("k").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let text = format!("{err} / {err:?}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(text.contains("\"k\""), "{text}");
    assert!(text.contains(":***@127.0.0.1"), "{text}");
}
