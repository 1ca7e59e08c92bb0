//! Every conformance case can fail: each one is run against a bus with a deliberate defect and
//! must panic with a message naming the case.
//!
//! The faulty bus wraps `MemoryBus`. Time is paused, so a case that waits for something that
//! never comes fails at its hang timeout at once instead of after 30 real seconds.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redstream_core::conformance::{self, BusFactory};
use redstream_core::{
    Error, Event, EventLimits, HandlerResult, MemoryBus, Publisher, Result, Subscriber,
    SubscriptionHandle, validate_event_type,
};
use serde_json::json;

/// One defect each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `publish` replaces the payload.
    AltersPayload,
    /// `publish` returns the same id every time.
    ConstantIds,
    /// `publish` drops every third event but reports success.
    LosesEveryThird,
    /// `publish_batch` writes the batch backwards.
    ReversesBatches,
    /// Every event is handed to the handler twice.
    DeliversTwice,
    /// `subscribe` listens to the first event type only.
    FirstTypeOnly,
    /// A handler's error counts as success: nothing is redelivered.
    IgnoresErrors,
    /// `unsubscribe` returns at once and stops the subscription in the background.
    ReturnsBeforeDrain,
    /// Each pair of published events is written in swapped order.
    SwapsPairs,
    /// `publish` reports success for an invalid event type (and drops the event).
    AcceptsBadTypes,
    /// `publish_batch` writes the valid events of a batch, then reports the invalid one.
    PublishesValidPartOfBatch,
    /// `subscribe` drops invalid types instead of rejecting the call.
    SubscribesToValidTypes,
}

struct FaultyFactory {
    bus: MemoryBus,
    fault: Fault,
    published: Arc<AtomicUsize>,
    held_back: Arc<Mutex<Option<Event>>>,
}

impl BusFactory for FaultyFactory {
    type Bus = FaultyBus;

    async fn member(&self, group: &str) -> FaultyBus {
        FaultyBus {
            bus: self.bus.with_group(group),
            fault: self.fault,
            published: Arc::clone(&self.published),
            held_back: Arc::clone(&self.held_back),
        }
    }
}

struct FaultyBus {
    bus: MemoryBus,
    fault: Fault,
    published: Arc<AtomicUsize>,
    held_back: Arc<Mutex<Option<Event>>>,
}

fn is_valid(event_type: &str) -> bool {
    validate_event_type(event_type, EventLimits::DEFAULT.max_event_type_len).is_ok()
}

impl Publisher for FaultyBus {
    async fn publish(&self, event: Event) -> Result<String> {
        let n = self.published.fetch_add(1, Ordering::SeqCst);
        match self.fault {
            Fault::AltersPayload => {
                let (id, event_type, _, metadata) = event.into_parts();
                let altered = Event::from_parts(id, event_type, json!("altered"), metadata);
                self.bus.publish(altered).await
            }
            Fault::ConstantIds => self.bus.publish(event).await.map(|_| "1-0".to_owned()),
            Fault::LosesEveryThird if n % 3 == 2 => Ok(format!("{}-0", 1_000_000 + n)),
            Fault::SwapsPairs => {
                let earlier = self.held_back.lock().unwrap().take();
                match earlier {
                    None => {
                        *self.held_back.lock().unwrap() = Some(event);
                        Ok(format!("{}-0", 1_000_000 + n))
                    }
                    Some(earlier) => {
                        let id = self.bus.publish(event).await?;
                        self.bus.publish(earlier).await?;
                        Ok(id)
                    }
                }
            }
            Fault::AcceptsBadTypes if !is_valid(event.event_type()) => Ok("1-1".to_owned()),
            _ => self.bus.publish(event).await,
        }
    }

    async fn publish_batch(&self, mut events: Vec<Event>) -> Result<Vec<String>> {
        match self.fault {
            Fault::ReversesBatches => {
                events.reverse();
                self.bus.publish_batch(events).await
            }
            Fault::PublishesValidPartOfBatch => {
                let (valid, invalid): (Vec<Event>, Vec<Event>) =
                    events.into_iter().partition(|e| is_valid(e.event_type()));
                let ids = self.bus.publish_batch(valid).await?;
                match invalid.first() {
                    Some(bad) => Err(Error::invalid_input(
                        format!("event type {:?}", bad.event_type()),
                        "invalid",
                    )),
                    None => Ok(ids),
                }
            }
            _ => self.bus.publish_batch(events).await,
        }
    }
}

impl Subscriber for FaultyBus {
    async fn subscribe<F, Fut>(
        &self,
        event_types: Vec<String>,
        handler: F,
    ) -> Result<SubscriptionHandle>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        match self.fault {
            Fault::DeliversTwice => {
                let handler = Arc::new(handler);
                let twice = move |event: Event| {
                    let handler = Arc::clone(&handler);
                    async move {
                        handler(event.clone()).await?;
                        handler(event).await
                    }
                };
                self.bus.subscribe(event_types, twice).await
            }
            Fault::IgnoresErrors => {
                let lenient = move |event: Event| {
                    let outcome = handler(event);
                    async move {
                        let _ = outcome.await;
                        HandlerResult::Ok(())
                    }
                };
                self.bus.subscribe(event_types, lenient).await
            }
            Fault::FirstTypeOnly => {
                let first = event_types.into_iter().take(1).collect();
                self.bus.subscribe(first, handler).await
            }
            Fault::SubscribesToValidTypes => {
                let valid: Vec<String> = event_types.into_iter().filter(|t| is_valid(t)).collect();
                if valid.is_empty() {
                    return Ok(SubscriptionHandle::new(0, "none", Vec::new()));
                }
                self.bus.subscribe(valid, handler).await
            }
            _ => self.bus.subscribe(event_types, handler).await,
        }
    }

    async fn unsubscribe(&self, handle: &SubscriptionHandle) -> Result<()> {
        if self.fault == Fault::ReturnsBeforeDrain {
            let (bus, handle) = (self.bus.clone(), handle.clone());
            tokio::spawn(async move { bus.unsubscribe(&handle).await });
            return Ok(());
        }
        self.bus.unsubscribe(handle).await
    }
}

/// Runs `case` against a bus with `fault` and returns the panic message it must produce.
async fn failure_of<C, Fut>(fault: Fault, case: C) -> String
where
    C: FnOnce(Arc<FaultyFactory>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let factory = Arc::new(FaultyFactory {
        bus: MemoryBus::new(),
        fault,
        published: Arc::default(),
        held_back: Arc::default(),
    });
    let outcome = tokio::spawn(case(factory)).await;
    let err = match outcome {
        Ok(()) => panic!("the case passed against a bus with fault {fault:?}"),
        Err(err) => err,
    };
    let payload = err.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

macro_rules! must_fail {
    ($($test:ident: $case:ident with $fault:ident, saying $says:literal;)*) => {
        $(
            #[tokio::test(start_paused = true)]
            async fn $test() {
                let message = failure_of(Fault::$fault, |factory| async move {
                    conformance::$case(&*factory).await
                })
                .await;
                let prefix = concat!("conformance case ", stringify!($case), ": ");
                assert!(message.starts_with(prefix), "unexpected failure: {message}");
                assert!(message.contains($says), "unexpected failure: {message}");
            }
        )*
    };
}

must_fail! {
    altered_payload_fails_publish_subscribe:
        publish_subscribe with AltersPayload, saying "arrived changed";
    repeated_ids_fail_publish_subscribe:
        publish_subscribe with ConstantIds, saying "twice";
    lost_events_fail_publish_subscribe:
        publish_subscribe with LosesEveryThird, saying "did not arrive";
    reversed_batch_fails_publish_batch_delivers_in_order:
        publish_batch_delivers_in_order with ReversesBatches, saying "out of order";
    duplicates_fail_groups_share_work:
        groups_share_work with DeliversTwice, saying "2 times";
    lost_events_fail_groups_share_work:
        groups_share_work with LosesEveryThird, saying "did not arrive";
    duplicates_fail_broadcast_across_groups:
        broadcast_across_groups with DeliversTwice, saying "2 times";
    lost_events_fail_broadcast_across_groups:
        broadcast_across_groups with LosesEveryThird, saying "did not arrive";
    one_type_only_fails_several_types_in_one_subscription:
        several_types_in_one_subscription with FirstTypeOnly, saying "did not arrive";
    ignored_errors_fail_redelivery_on_error:
        redelivery_on_error with IgnoresErrors, saying "redelivered";
    early_return_fails_unsubscribe_drains:
        unsubscribe_drains with ReturnsBeforeDrain, saying "still running";
    swapped_events_fail_ordering_with_one_worker:
        ordering_with_one_worker with SwapsPairs, saying "out of order";
    accepted_bad_type_fails_invalid_event_type_rejected:
        invalid_event_type_rejected with AcceptsBadTypes, saying "must be rejected";
    partial_batch_fails_invalid_event_type_rejected:
        invalid_event_type_rejected with PublishesValidPartOfBatch, saying "batch was rejected";
    lenient_subscribe_fails_subscribe_rejects_invalid_types:
        subscribe_rejects_invalid_types with SubscribesToValidTypes, saying "must be rejected";
}

/// `run_all` stops at the first failing case.
#[tokio::test(start_paused = true)]
async fn run_all_fails_on_a_faulty_bus() {
    let message = failure_of(Fault::SwapsPairs, |factory| async move {
        conformance::run_all(&*factory).await
    })
    .await;
    assert!(message.starts_with("conformance case "), "{message}");
}
