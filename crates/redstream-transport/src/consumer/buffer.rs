//! The bounded buffer between reading and handling, with one lane per priority.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};

use redstream_core::{
    BackpressureConfig, BackpressureQueue, BackpressureStats, ErrorKind, Priority, PushOutcome,
    Result,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::lock;
use super::sub::Delivery;

const LANES: usize = 4;

/// The lane index of a priority: 0 is the most urgent.
pub(crate) fn lane_of(priority: Priority) -> usize {
    match priority {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

/// A bounded buffer with one FIFO lane per priority.
///
/// A [`BackpressureQueue`] of unit tickets does the accounting (capacity, strategy, stats,
/// warnings); the entries themselves wait in the lanes, so that a worker takes the most urgent
/// one whatever order they were read in. An entry is put in its lane before its ticket is
/// pushed and taken after a ticket is popped, so a popped ticket always finds an entry.
#[derive(Clone)]
pub(crate) struct Buffer {
    tickets: BackpressureQueue<()>,
    lanes: Arc<Mutex<[VecDeque<Delivery>; LANES]>>,
    /// Signalled when a worker takes an entry.
    room: Arc<Notify>,
}

/// What became of a pushed delivery.
pub(crate) enum Pushed {
    Queued,
    /// The buffer was full: these (the strategy's victims) are out of it.
    Dropped(Vec<Delivery>),
    /// The buffer is closed: the delivery is handed back (if it was still there).
    Closed(Option<Box<Delivery>>),
}

impl Buffer {
    pub(super) fn new(config: BackpressureConfig) -> Result<Self> {
        Ok(Self {
            tickets: BackpressureQueue::new(config)?,
            lanes: Arc::default(),
            room: Arc::default(),
        })
    }

    fn lanes(&self) -> MutexGuard<'_, [VecDeque<Delivery>; LANES]> {
        lock(&self.lanes)
    }

    pub(super) fn stats(&self) -> BackpressureStats {
        self.tickets.stats()
    }

    /// Puts `delivery` in its lane at once, then waits for a ticket (with the `Block` strategy)
    /// in the returned future.
    pub(crate) fn push(&self, delivery: Delivery) -> impl Future<Output = Pushed> + Send + '_ {
        let lane = delivery.lane.min(LANES - 1);
        let key = (delivery.stream, delivery.id.clone());
        self.lanes()[lane].push_back(delivery);
        async move {
            match self.tickets.push(()).await {
                Ok(PushOutcome::Queued) => Pushed::Queued,
                Ok(PushOutcome::DroppedOldest(())) => Pushed::Dropped(self.evict(true)),
                Ok(PushOutcome::DroppedNewest(())) => Pushed::Dropped(self.evict(false)),
                Err(err) if err.kind() == ErrorKind::QueueFull => {
                    Pushed::Dropped(self.evict(false))
                }
                Err(_closed) => {
                    let mut lanes = self.lanes();
                    let position = lanes[lane]
                        .iter()
                        .rposition(|d| d.stream == key.0 && d.id == key.1);
                    Pushed::Closed(position.and_then(|p| lanes[lane].remove(p)).map(Box::new))
                }
            }
        }
    }

    /// Takes the least urgent entry out: the oldest or the newest of the lowest non-empty lane.
    fn evict(&self, oldest: bool) -> Vec<Delivery> {
        let mut lanes = self.lanes();
        let victim = lanes
            .iter_mut()
            .rev()
            .find(|lane| !lane.is_empty())
            .and_then(|lane| {
                if oldest {
                    lane.pop_front()
                } else {
                    lane.pop_back()
                }
            });
        victim.into_iter().collect()
    }

    /// The most urgent entry, waiting for one; `None` once closed.
    pub(crate) async fn take(&self) -> Option<Delivery> {
        loop {
            self.tickets.pop().await?;
            let delivery = self.lanes().iter_mut().find_map(VecDeque::pop_front);
            self.room.notify_waiters();
            if delivery.is_some() {
                return delivery;
            }
        }
    }

    /// Free places.
    pub(crate) fn free(&self) -> usize {
        self.tickets.capacity().saturating_sub(self.tickets.len())
    }

    /// Waits until there is a free place; `false` if `stop` came first.
    pub(super) async fn room(&self, stop: &CancellationToken) -> bool {
        loop {
            let mut notified = pin!(self.room.notified());
            notified.as_mut().enable();
            if self.free() > 0 {
                return true;
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = notified => {}
            }
        }
    }

    pub(super) fn close(&self) {
        self.tickets.close();
    }

    /// Everything still in the buffer.
    pub(super) fn drain(&self) -> Vec<Delivery> {
        while self.tickets.try_pop().is_some() {}
        self.lanes().iter_mut().flat_map(std::mem::take).collect()
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("tickets", &self.tickets)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redstream_core::BackpressureStrategy;

    fn delivery(lane: usize, n: u32) -> Delivery {
        Delivery {
            stream: lane,
            lane,
            id: format!("{n}-0"),
            deliveries: 1,
            fields: Vec::new(),
            decoded: None,
        }
    }

    fn buffer(size: usize, strategy: BackpressureStrategy) -> Buffer {
        Buffer::new(
            BackpressureConfig::default()
                .with_max_queue_size(size)
                .with_strategy(strategy),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_most_urgent_lane_is_taken_first() {
        let buffer = buffer(10, BackpressureStrategy::Block);
        for (lane, n) in [(3, 1), (2, 2), (1, 3), (0, 4), (2, 5)] {
            assert!(matches!(
                buffer.push(delivery(lane, n)).await,
                Pushed::Queued
            ));
        }
        let mut order = Vec::new();
        while buffer.free() < 10 {
            order.push(buffer.take().await.unwrap().id);
        }
        assert_eq!(order, ["4-0", "3-0", "2-0", "5-0", "1-0"]);
    }

    #[tokio::test]
    async fn drops_evict_the_least_urgent_entry() {
        let buffer = buffer(2, BackpressureStrategy::DropNewest);
        buffer.push(delivery(3, 1)).await;
        buffer.push(delivery(2, 2)).await;
        // A critical entry arrives at a full buffer: the low one makes room.
        let Pushed::Dropped(victims) = buffer.push(delivery(0, 3)).await else {
            panic!("the buffer is full");
        };
        assert_eq!(victims[0].id, "1-0");
        // A low entry arrives: it is itself the least urgent, newest entry.
        let Pushed::Dropped(victims) = buffer.push(delivery(3, 4)).await else {
            panic!("the buffer is full");
        };
        assert_eq!(victims[0].id, "4-0");
        assert_eq!(buffer.take().await.unwrap().id, "3-0");
        assert_eq!(buffer.take().await.unwrap().id, "2-0");
        assert_eq!(buffer.tickets.stats().dropped_events, 2);

        let oldest = self::buffer(2, BackpressureStrategy::DropOldest);
        oldest.push(delivery(2, 1)).await;
        oldest.push(delivery(2, 2)).await;
        let Pushed::Dropped(victims) = oldest.push(delivery(2, 3)).await else {
            panic!("the buffer is full");
        };
        assert_eq!(victims[0].id, "1-0");
    }

    #[tokio::test]
    async fn closing_hands_back_everything() {
        let buffer = buffer(1, BackpressureStrategy::Block);
        buffer.push(delivery(2, 1)).await;
        let waiting = {
            let buffer = buffer.clone();
            tokio::spawn(async move {
                matches!(buffer.push(delivery(2, 2)).await, Pushed::Closed(Some(_)))
            })
        };
        while buffer.lanes()[2].len() < 2 {
            tokio::task::yield_now().await;
        }
        buffer.close();
        assert!(waiting.await.unwrap());
        let rest: Vec<String> = buffer.drain().into_iter().map(|d| d.id).collect();
        assert_eq!(rest, ["1-0"]);
        assert!(buffer.take().await.is_none());
    }
}
