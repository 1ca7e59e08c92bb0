use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::timeout;

use super::*;
use crate::ErrorKind;

/// Only detects a hang; never used to order events.
const HANG: Duration = Duration::from_secs(10);

fn queue<T>(size: usize, strategy: BackpressureStrategy) -> BackpressureQueue<T> {
    BackpressureQueue::new(
        BackpressureConfig::default()
            .with_max_queue_size(size)
            .with_strategy(strategy),
    )
    .unwrap()
}

fn drain<T>(queue: &BackpressureQueue<T>) -> Vec<T> {
    std::iter::from_fn(|| queue.try_pop()).collect()
}

/// Lets spawned tasks on a current-thread runtime run until they block.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn config_defaults_seed_literal_validation_and_serde() {
    let config = BackpressureConfig::default();
    assert_eq!(config.max_queue_size, 1000);
    assert_eq!(config.strategy, BackpressureStrategy::Block);
    assert_eq!(config.warning_threshold, 0.8);
    config.validate().unwrap();
    BackpressureConfig {
        max_queue_size: 1000,
        strategy: BackpressureStrategy::DropOldest,
        warning_threshold: 0.8,
    }
    .validate()
    .unwrap();
    config.with_warning_threshold(1.0).validate().unwrap();

    let bad = [
        (config.with_max_queue_size(0), "backpressure.max_queue_size"),
        (
            config.with_warning_threshold(0.0),
            "backpressure.warning_threshold",
        ),
        (
            config.with_warning_threshold(1.5),
            "backpressure.warning_threshold",
        ),
        (
            config.with_warning_threshold(f64::NAN),
            "backpressure.warning_threshold",
        ),
    ];
    for (config, field) in bad {
        let err = BackpressureQueue::<()>::new(config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }

    let json =
        serde_json::to_value(config.with_strategy(BackpressureStrategy::DropNewest)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "max_queue_size": 1000,
            "strategy": "drop_newest",
            "warning_threshold": 0.8,
        })
    );
    let read: BackpressureConfig =
        serde_json::from_str(r#"{"strategy": "drop_oldest", "max_queue_size": 5}"#).unwrap();
    assert_eq!(
        read,
        config
            .with_max_queue_size(5)
            .with_strategy(BackpressureStrategy::DropOldest)
    );
    for (name, strategy) in [
        ("block", BackpressureStrategy::Block),
        ("reject", BackpressureStrategy::Reject),
    ] {
        assert_eq!(
            serde_json::from_value::<BackpressureStrategy>(name.into()).unwrap(),
            strategy
        );
    }
    assert!(serde_json::from_str::<BackpressureStrategy>(r#""Block""#).is_err());
}

#[test]
fn fill_ratio() {
    let queue = queue(4, BackpressureStrategy::Reject);
    assert_eq!(queue.stats().fill_ratio(), 0.0);
    queue.try_push(1).unwrap();
    assert_eq!(queue.stats().fill_ratio(), 0.25);
    for i in 2..=4 {
        queue.try_push(i).unwrap();
    }
    assert_eq!(queue.stats().fill_ratio(), 1.0);
    let empty = BackpressureStats {
        max_queue_size: 0,
        ..queue.stats()
    };
    assert_eq!(empty.fill_ratio(), 0.0);
}

#[tokio::test]
async fn block_waits_until_a_pop_frees_space() {
    let queue = queue(2, BackpressureStrategy::Block);
    assert_eq!(queue.push(1).await.unwrap(), PushOutcome::Queued);
    assert_eq!(queue.push(2).await.unwrap(), PushOutcome::Queued);
    let pusher = tokio::spawn({
        let queue = queue.clone();
        async move { queue.push(3).await }
    });
    settle().await;
    assert!(
        !pusher.is_finished(),
        "a push into a full Block queue waits"
    );
    assert_eq!(queue.len(), 2);
    assert_eq!(queue.pop().await, Some(1));
    let outcome = timeout(HANG, pusher).await.unwrap().unwrap().unwrap();
    assert_eq!(outcome, PushOutcome::Queued);
    assert_eq!(drain(&queue), vec![2, 3]);
    let stats = queue.stats();
    assert_eq!((stats.dropped_events, stats.rejected_events), (0, 0));
    assert_eq!((stats.total_pushed, stats.total_popped), (3, 3));
}

#[test]
fn try_push_on_a_full_block_queue_fails_instead_of_waiting() {
    let queue = queue(1, BackpressureStrategy::Block);
    queue.try_push(1).unwrap();
    let err = queue.try_push(2).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull);
    assert_eq!(queue.stats().rejected_events, 1);
    assert_eq!(drain(&queue), vec![1]);
}

#[tokio::test]
async fn try_push_all_pushes_all_or_none() {
    for strategy in [
        BackpressureStrategy::Block,
        BackpressureStrategy::DropOldest,
        BackpressureStrategy::DropNewest,
        BackpressureStrategy::Reject,
    ] {
        let queue = queue(4, strategy);
        queue.try_push_all(vec![1, 2]).unwrap();
        // Three more do not fit in the two free places: none is pushed, nothing dropped.
        assert_eq!(queue.try_push_all(vec![3, 4, 5]), Err(vec![3, 4, 5]));
        queue.try_push_all(vec![3, 4]).unwrap();
        assert_eq!(queue.try_push_all(vec![]), Ok(()));
        let stats = queue.stats();
        assert_eq!(stats.total_pushed, 4, "{strategy:?}");
        assert_eq!(
            stats.dropped_events + stats.rejected_events,
            0,
            "{strategy:?}"
        );
        assert_eq!(drain(&queue), vec![1, 2, 3, 4]);
    }
    let queue = queue(4, BackpressureStrategy::Block);
    // A taker waiting for an item gets one of the batch.
    let taker = tokio::spawn({
        let queue = queue.clone();
        async move { queue.pop().await }
    });
    settle().await;
    queue.try_push_all(vec![7, 8]).unwrap();
    assert_eq!(taker.await.unwrap(), Some(7));
    queue.close();
    assert_eq!(queue.try_push_all(vec![9]), Err(vec![9]));
    assert_eq!(drain(&queue), vec![8]);
}

#[tokio::test]
async fn drop_oldest_hands_back_the_oldest() {
    let queue = queue(3, BackpressureStrategy::DropOldest);
    for i in 1..=3 {
        assert_eq!(queue.push(i).await.unwrap(), PushOutcome::Queued);
    }
    assert_eq!(queue.push(4).await.unwrap(), PushOutcome::DroppedOldest(1));
    assert_eq!(queue.try_push(5).unwrap(), PushOutcome::DroppedOldest(2));
    assert_eq!(queue.len(), 3);
    assert_eq!(drain(&queue), vec![3, 4, 5]);
    let stats = queue.stats();
    assert_eq!(stats.dropped_events, 2);
    assert_eq!(stats.total_pushed, 5);
}

#[tokio::test]
async fn drop_newest_hands_back_the_new_item() {
    let queue = queue(2, BackpressureStrategy::DropNewest);
    queue.push(1).await.unwrap();
    queue.push(2).await.unwrap();
    let outcome = queue.push(3).await.unwrap();
    assert!(!outcome.is_queued());
    assert_eq!(outcome.into_dropped(), Some(3));
    assert_eq!(queue.try_push(4).unwrap(), PushOutcome::DroppedNewest(4));
    assert_eq!(drain(&queue), vec![1, 2]);
    let stats = queue.stats();
    assert_eq!(stats.dropped_events, 2);
    assert_eq!(stats.total_pushed, 2);
}

#[tokio::test]
async fn reject_fails_and_loses_nothing_accepted() {
    let queue = queue(2, BackpressureStrategy::Reject);
    queue.push("a").await.unwrap();
    queue.push("b").await.unwrap();
    let err = queue.push("c").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull);
    assert!(err.is_retryable());
    assert!(matches!(err, Error::QueueFull { capacity: 2 }));
    assert!(queue.try_push("d").is_err());
    assert_eq!(queue.stats().rejected_events, 2);
    assert_eq!(queue.pop().await, Some("a"));
    queue.push("e").await.unwrap();
    assert_eq!(drain(&queue), vec!["b", "e"]);
}

#[test]
fn stats_count_everything() {
    let queue = queue(3, BackpressureStrategy::DropOldest);
    for i in 0..10 {
        let _ = queue.try_push(i).unwrap();
    }
    queue.try_pop().unwrap();
    let stats = queue.stats();
    assert_eq!(stats.current_queue_size, 2);
    assert_eq!(stats.max_queue_size, 3);
    assert_eq!(stats.dropped_events, 7);
    assert_eq!(stats.rejected_events, 0);
    assert_eq!(stats.total_pushed, 10);
    assert_eq!(stats.total_popped, 1);
    assert_eq!(stats.strategy, BackpressureStrategy::DropOldest);
    assert_eq!(stats.warning_threshold, 0.8);
    assert_eq!(queue.capacity(), 3);
    assert!(!queue.is_empty());
}

#[test]
fn warns_once_per_rise_above_the_threshold() {
    let queue = BackpressureQueue::new(
        BackpressureConfig::default()
            .with_max_queue_size(10)
            .with_strategy(BackpressureStrategy::DropOldest)
            .with_warning_threshold(0.8),
    )
    .unwrap();
    for i in 0..7 {
        queue.try_push(i).unwrap();
    }
    assert_eq!(queue.stats().warnings_emitted, 0, "7/10 is below 0.8");
    queue.try_push(7).unwrap();
    assert_eq!(queue.stats().warnings_emitted, 1, "8/10 reaches 0.8");
    for i in 8..100 {
        let _ = queue.try_push(i).unwrap();
    }
    assert_eq!(queue.stats().warnings_emitted, 1, "not once per item");
    // Down to 8/10: still at the threshold, not re-armed.
    queue.try_pop().unwrap();
    queue.try_pop().unwrap();
    queue.try_push(100).unwrap();
    assert_eq!(queue.stats().warnings_emitted, 1);
    // Down to 7/10: re-armed; back to 8/10: a second warning.
    queue.try_pop().unwrap();
    queue.try_pop().unwrap();
    assert_eq!(queue.len(), 7);
    queue.try_push(101).unwrap();
    assert_eq!(queue.stats().warnings_emitted, 2);
}

#[tokio::test]
async fn close_drains_then_ends_and_refuses_pushes() {
    let queue = queue(4, BackpressureStrategy::Block);
    queue.push(1).await.unwrap();
    queue.push(2).await.unwrap();
    queue.close();
    queue.close();
    assert!(queue.is_closed());
    let err = queue.push(3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(err.to_string(), "backpressure queue is closed");
    assert_eq!(queue.try_push(3).unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(queue.pop().await, Some(1));
    assert_eq!(queue.try_pop(), Some(2));
    assert_eq!(queue.pop().await, None);
    assert_eq!(queue.try_pop(), None);
}

#[tokio::test]
async fn close_wakes_waiting_pushers_and_poppers() {
    let full = queue(1, BackpressureStrategy::Block);
    full.push(0).await.unwrap();
    let pushers: Vec<_> = (1..=3)
        .map(|i| {
            let queue = full.clone();
            tokio::spawn(async move { queue.push(i).await })
        })
        .collect();
    let empty = queue::<u32>(1, BackpressureStrategy::Block);
    let poppers: Vec<_> = (0..3)
        .map(|_| {
            let queue = empty.clone();
            tokio::spawn(async move { queue.pop().await })
        })
        .collect();
    settle().await;
    assert!(pushers.iter().all(|t| !t.is_finished()));
    assert!(poppers.iter().all(|t| !t.is_finished()));
    full.close();
    empty.close();
    for pusher in pushers {
        let err = timeout(HANG, pusher).await.unwrap().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
    }
    for popper in poppers {
        assert_eq!(timeout(HANG, popper).await.unwrap().unwrap(), None);
    }
    assert_eq!(drain(&full), vec![0], "the queued item survives the close");
}

#[tokio::test]
async fn a_cancelled_blocked_push_enqueues_nothing_and_leaks_nothing() {
    let queue = queue(1, BackpressureStrategy::Block);
    let first = Arc::new("first");
    let cancelled = Arc::new("cancelled");
    queue.push(Arc::clone(&first)).await.unwrap();
    {
        let push = queue.push(Arc::clone(&cancelled));
        tokio::select! {
            biased;
            _ = push => panic!("the queue is full"),
            () = tokio::task::yield_now() => {}
        }
    }
    assert_eq!(
        Arc::strong_count(&cancelled),
        1,
        "the item was dropped with the future"
    );
    assert_eq!(queue.len(), 1);
    assert!(Arc::ptr_eq(&queue.pop().await.unwrap(), &first));
    assert_eq!(queue.try_pop(), None);
    queue.push(Arc::clone(&first)).await.unwrap();
    assert_eq!(queue.len(), 1);
}

#[tokio::test]
async fn a_wake_up_for_a_cancelled_pusher_passes_to_the_next() {
    let queue = queue(1, BackpressureStrategy::Block);
    queue.push(0).await.unwrap();
    let a = tokio::spawn({
        let queue = queue.clone();
        async move { queue.push(1).await }
    });
    settle().await;
    let b = tokio::spawn({
        let queue = queue.clone();
        async move { queue.push(2).await }
    });
    settle().await;
    // The freed slot's wake-up goes to `a`, the first waiter, which is cancelled before it
    // runs: the wake-up must reach `b`.
    assert_eq!(queue.try_pop(), Some(0));
    a.abort();
    assert!(timeout(HANG, a).await.unwrap().unwrap_err().is_cancelled());
    assert_eq!(
        timeout(HANG, b).await.unwrap().unwrap().unwrap(),
        PushOutcome::Queued
    );
    assert_eq!(drain(&queue), vec![2]);
}

#[tokio::test]
async fn pop_waits_for_a_push() {
    let queue = queue(4, BackpressureStrategy::Block);
    let popper = tokio::spawn({
        let queue = queue.clone();
        async move { queue.pop().await }
    });
    settle().await;
    assert!(!popper.is_finished());
    queue.push(7).await.unwrap();
    assert_eq!(timeout(HANG, popper).await.unwrap().unwrap(), Some(7));
}

/// (pop waiters, push waiters) as the queue counts them.
fn waiters<T>(queue: &BackpressureQueue<T>) -> (usize, usize) {
    let state = queue.shared.lock();
    (state.pop_waiters, state.push_waiters)
}

#[tokio::test]
async fn a_batch_wakes_as_many_waiting_pops_as_it_has_items() {
    let queue = queue::<u32>(8, BackpressureStrategy::Block);
    let poppers: Vec<_> = (0..3)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.pop().await })
        })
        .collect();
    settle().await;
    assert_eq!(waiters(&queue), (3, 0));
    queue.try_push_all(vec![1, 2, 3]).unwrap();
    let mut popped = Vec::new();
    for popper in poppers {
        popped.push(timeout(HANG, popper).await.unwrap().unwrap().unwrap());
    }
    popped.sort_unstable();
    assert_eq!(popped, [1, 2, 3]);
    assert_eq!(waiters(&queue), (0, 0));
}

#[tokio::test]
async fn waits_that_end_or_are_dropped_leave_no_count_behind() {
    let queue = queue::<u32>(1, BackpressureStrategy::Block);
    // A pop that waits, then is dropped (a select that went the other way).
    let popper = tokio::spawn({
        let queue = queue.clone();
        async move { queue.pop().await }
    });
    settle().await;
    assert_eq!(waiters(&queue), (1, 0));
    popper.abort();
    assert!(popper.await.unwrap_err().is_cancelled());
    assert_eq!(waiters(&queue), (0, 0));
    // A push that waits for room, then gets it.
    queue.push(1).await.unwrap();
    let pusher = tokio::spawn({
        let queue = queue.clone();
        async move { queue.push(2).await.map(|outcome| outcome.is_queued()) }
    });
    settle().await;
    assert_eq!(waiters(&queue), (0, 1));
    assert_eq!(queue.pop().await, Some(1));
    assert!(timeout(HANG, pusher).await.unwrap().unwrap().unwrap());
    assert_eq!(waiters(&queue), (0, 0));
    // Nobody waits: pushes and pops signal nothing, and the queue still works.
    assert_eq!(queue.pop().await, Some(2));
    assert_eq!(waiters(&queue), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_item_is_popped_exactly_once_with_many_producers_and_consumers() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 2_000;
    let queue = queue::<u64>(8, BackpressureStrategy::Block);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = queue.clone();
            tokio::spawn(async move {
                for i in 0..PER_PRODUCER {
                    let outcome = queue.push(p * PER_PRODUCER + i).await.unwrap();
                    assert_eq!(outcome, PushOutcome::Queued);
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(item) = queue.pop().await {
                    assert!(queue.len() <= queue.capacity());
                    seen.push(item);
                }
                seen
            })
        })
        .collect();
    for producer in producers {
        timeout(HANG, producer).await.unwrap().unwrap();
    }
    queue.close();
    let mut all = Vec::new();
    for consumer in consumers {
        let seen = timeout(HANG, consumer).await.unwrap().unwrap();
        // Each producer's items reach any one consumer in the order they were pushed.
        for p in 0..PRODUCERS {
            let mine: Vec<_> = seen.iter().filter(|i| **i / PER_PRODUCER == p).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
        }
        all.extend(seen);
    }
    let total = PRODUCERS * PER_PRODUCER;
    assert_eq!(all.len() as u64, total);
    assert_eq!(
        all.iter().copied().collect::<HashSet<_>>(),
        (0..total).collect()
    );
    let stats = queue.stats();
    assert_eq!((stats.total_pushed, stats.total_popped), (total, total));
}

#[test]
fn queue_handles_are_send_sync_and_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<BackpressureQueue<std::cell::Cell<u8>>>();
    let queue = queue(1, BackpressureStrategy::Reject);
    let other = queue.clone();
    queue.try_push(1).unwrap();
    assert_eq!(other.try_pop(), Some(1));
    assert!(format!("{queue:?}").contains("capacity: 1"));
}

#[derive(Debug, Clone, Copy)]
enum Op {
    TryPush,
    Push,
    Pop,
}

fn strategy() -> impl Strategy<Value = BackpressureStrategy> {
    prop_oneof![
        Just(BackpressureStrategy::Block),
        Just(BackpressureStrategy::DropOldest),
        Just(BackpressureStrategy::DropNewest),
        Just(BackpressureStrategy::Reject),
    ]
}

proptest! {
    #[test]
    fn bounded_accounted_and_fifo(
        capacity in 1usize..8,
        strategy in strategy(),
        ops in proptest::collection::vec(
            prop_oneof![Just(Op::TryPush), Just(Op::Push), Just(Op::Pop)],
            0..200,
        ),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let queue = queue::<u64>(capacity, strategy);
        let mut model = VecDeque::new();
        let (mut next, mut popped, mut evicted) = (0u64, Vec::new(), 0u64);
        for op in ops {
            let blocking_push_on_full =
                strategy == BackpressureStrategy::Block && model.len() == capacity;
            match op {
                Op::Pop => {
                    let item = queue.try_pop();
                    prop_assert_eq!(item, model.pop_front());
                    popped.extend(item);
                }
                // A blocking push on a full queue would wait forever in this single task.
                Op::Push if blocking_push_on_full => {}
                Op::Push | Op::TryPush => {
                    let item = next;
                    next += 1;
                    let result = match op {
                        Op::Push => runtime.block_on(queue.push(item)),
                        _ => queue.try_push(item),
                    };
                    let expected = if model.len() < capacity {
                        model.push_back(item);
                        Some(PushOutcome::Queued)
                    } else {
                        match strategy {
                            BackpressureStrategy::Block | BackpressureStrategy::Reject => None,
                            BackpressureStrategy::DropNewest => {
                                Some(PushOutcome::DroppedNewest(item))
                            }
                            BackpressureStrategy::DropOldest => {
                                evicted += 1;
                                let oldest = model.pop_front().unwrap();
                                model.push_back(item);
                                Some(PushOutcome::DroppedOldest(oldest))
                            }
                        }
                    };
                    match (result, expected) {
                        (Ok(outcome), Some(expected)) => prop_assert_eq!(outcome, expected),
                        (Err(err), None) => prop_assert_eq!(err.kind(), ErrorKind::QueueFull),
                        (result, expected) => {
                            prop_assert!(false, "got {:?}, expected {:?}", result, expected);
                        }
                    }
                }
            }
            let stats = queue.stats();
            prop_assert!(queue.len() <= capacity);
            prop_assert_eq!(stats.current_queue_size, model.len());
            prop_assert_eq!(stats.total_pushed, stats.total_popped + model.len() as u64 + evicted);
            prop_assert_eq!(stats.total_popped, popped.len() as u64);
        }
        // Survivors and popped items alike come out in push order.
        popped.extend(drain(&queue));
        prop_assert!(popped.windows(2).all(|w| w[0] < w[1]), "{:?}", popped);
    }
}
