//! The conformance suite against `MemoryBus`: one test per case, so a failure names its case.

use redstream_core::MemoryBus;
use redstream_core::conformance::{self, BusFactory};

/// Members of one shared bus, each in the group it is asked for.
struct MemoryFactory {
    bus: MemoryBus,
}

impl MemoryFactory {
    fn new() -> Self {
        Self {
            bus: MemoryBus::new(),
        }
    }
}

impl BusFactory for MemoryFactory {
    type Bus = MemoryBus;

    async fn member(&self, group: &str) -> MemoryBus {
        self.bus.with_group(group)
    }
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                conformance::$case(&MemoryFactory::new()).await;
            }
        )*
    };
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

/// The whole suite on one bus and a single-threaded runtime, as a user's `#[tokio::test]` runs.
#[tokio::test]
async fn run_all_on_one_bus_current_thread() {
    conformance::run_all(&MemoryFactory::new()).await;
}

/// The cases' futures are `Send`, so a transport's tests may `tokio::spawn` them. Compile-time
/// check: the futures are made and dropped, never run.
#[test]
fn case_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let factory = MemoryFactory::new();
    send(conformance::run_all(&factory));
    send(conformance::publish_subscribe(&factory));
    send(conformance::publish_batch_delivers_in_order(&factory));
    send(conformance::groups_share_work(&factory));
    send(conformance::broadcast_across_groups(&factory));
    send(conformance::several_types_in_one_subscription(&factory));
    send(conformance::redelivery_on_error(&factory));
    send(conformance::unsubscribe_drains(&factory));
    send(conformance::ordering_with_one_worker(&factory));
    send(conformance::invalid_event_type_rejected(&factory));
    send(conformance::subscribe_rejects_invalid_types(&factory));
}
