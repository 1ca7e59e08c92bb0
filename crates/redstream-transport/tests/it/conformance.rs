//! The core conformance suite, run against the Redis transport: one test per case, each with a
//! private redis-server.
//!
//! Every member is a transport of its own with a unique consumer name. Redelivery goes through
//! claiming, so the claim idle time is short. One worker per subscription
//! (`handler_concurrency = 1`) is what the ordering cases ("one worker") describe.

use redstream_core::conformance::{self, BusFactory};
use redstream_testkit::RedisServer;
use redstream_transport::RedisTransport;

use crate::support::{fast, transport, unique};

struct Redis {
    server: RedisServer,
    prefix: String,
}

impl Redis {
    async fn start() -> Self {
        Self {
            server: RedisServer::start().await.unwrap(),
            prefix: unique("conformance"),
        }
    }
}

impl BusFactory for Redis {
    type Bus = RedisTransport;

    async fn member(&self, group: &str) -> RedisTransport {
        transport(
            &self.server,
            &self.prefix,
            group,
            fast().with_handler_concurrency(1),
        )
        .await
    }
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            conformance::$case(&Redis::start().await).await;
        }
    )*};
}

cases!(
    publish_subscribe,
    publish_batch_delivers_in_order,
    groups_share_work,
    broadcast_across_groups,
    several_types_in_one_subscription,
    redelivery_on_error,
    unsubscribe_drains,
    ordering_with_one_worker,
    invalid_event_type_rejected,
    subscribe_rejects_invalid_types,
);
