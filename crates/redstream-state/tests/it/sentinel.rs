//! The store on a Sentinel-managed master: a killed master is followed to the promoted
//! replica in the same process, for commands and for transactions that `WATCH`.

use std::time::Duration;

use redstream_core::connection::{self, ConnectionOptions};
use redstream_state::{StateBackend, StateConfig, StateStore, Transaction};
use redstream_testkit::RedisSentinel;

use crate::support::{capture_logs, unique};

/// How long the scenario may take before it fails as hung: it starts a Sentinel group and
/// waits for a failover. Never a performance limit.
const SCENARIO: Duration = Duration::from_secs(180);

const SENTINEL_PASSWORD: &str = "sentinel-Canary-pw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_followed_to_the_promoted_replica() {
    let scenario = async {
        capture_logs();
        let group = RedisSentinel::builder()
            .replicas(1)
            .sentinel_password(SENTINEL_PASSWORD)
            .start()
            .await
            .unwrap();
        let prefix = unique("app");
        // The master name in its field, the sentinels' password in its own.
        let url = group
            .url()
            .trim_end_matches(&format!("/{}", group.master_name()))
            .to_owned();
        let config = StateConfig::new(StateBackend::redis(url, &prefix))
            .with_master_name(group.master_name())
            .with_sentinel_password(SENTINEL_PASSWORD);
        assert!(!format!("{config:?}").contains("Canary"));
        // Without the sentinels' password, or with a wrong one: Auth at open, with a hint of
        // where each password goes, and no password in the message.
        for wrong in [None, Some("wrong-Canary")] {
            let mut refused = config.clone();
            refused.connection.sentinel_password = wrong.map(str::to_owned);
            let err = StateStore::with_config(refused).await.unwrap_err();
            assert_eq!(err.kind(), redstream_state::ErrorKind::Auth, "{err}");
            let text = err.to_string();
            assert!(text.contains("sentinel_password"), "{text}");
            assert!(!text.contains("Canary"), "{text}");
        }
        let store = StateStore::with_config(config.clone()).await.unwrap();
        // Sentinel is not a cluster: the plain layout.
        assert_eq!(
            store.redis_key("k").as_deref(),
            Some(format!("{prefix}:k").as_str())
        );

        store.put("before", 1).await.unwrap();
        let mut tx = Transaction::new();
        tx.incr("count").put("last", "before");
        assert_eq!(store.transaction(tx).await.unwrap(), vec![1]);
        store
            .save_checkpoint("cp", "1-0", [("a", 1), ("b", 2)])
            .await
            .unwrap();

        // Every write so far reaches the replica: a marker through a connection of its own,
        // then WAIT (replication is in order).
        let options = ConnectionOptions::new(group.url()).with_sentinel_password(SENTINEL_PASSWORD);
        let mut raw = connection::connect(&options).await.unwrap();
        let () = redis::cmd("SET")
            .arg("marker")
            .arg(1)
            .query_async(&mut raw)
            .await
            .unwrap();
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(acked, 1);

        let first = group.master().await.unwrap().port();
        let promoted = group.kill_master().await.unwrap();
        assert_ne!(promoted.port(), first);

        // The same store, without being reopened: writes go to the promoted replica, reads
        // see them and what was written before.
        store.put("after", 2).await.unwrap();
        assert_eq!(store.get::<i64>("after").await.unwrap(), Some(2));
        assert_eq!(store.get::<i64>("before").await.unwrap(), Some(1));
        let mut direct = promoted.connection().await.unwrap();
        let on_promoted: Option<String> = redis::cmd("GET")
            .arg(format!("{prefix}:after"))
            .query_async(&mut direct)
            .await
            .unwrap();
        assert_eq!(on_promoted.as_deref(), Some("2"));
        // A transaction with increments, on a pooled dedicated connection that followed too.
        let mut tx = Transaction::new();
        tx.incr("count").put("last", "after");
        assert_eq!(store.transaction(tx).await.unwrap(), vec![2]);
        assert_eq!(
            store.get::<String>("last").await.unwrap().as_deref(),
            Some("after")
        );
        let restored = store
            .restore_checkpoint::<i64>("cp")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(restored.position, "1-0");
        assert_eq!(
            store.list_keys("").await.unwrap(),
            vec!["a", "after", "b", "before", "count", "last"]
        );
    };
    tokio::time::timeout(SCENARIO, scenario)
        .await
        .expect("the sentinel scenario hung");
}
