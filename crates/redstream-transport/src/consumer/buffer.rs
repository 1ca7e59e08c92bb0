//! The bounded buffer between reading and handling, with one lane per priority.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redstream_core::{
    BackpressureConfig, BackpressureQueue, BackpressureStats, BackpressureStrategy, ErrorKind,
    Priority, PushOutcome, Result,
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
    lanes: Arc<Mutex<Lanes>>,
    /// Signalled when a worker takes an entry, if `room_waiters` says a reader waits.
    room: Arc<Notify>,
    room_waiters: Arc<AtomicUsize>,
    /// Places the readers leave free for the claim passes (with the `Block` strategy: a tenth
    /// of the capacity), so that failed entries come back while a backlog is read.
    claim_reserve: usize,
    /// Where workers with nothing to do wait (see [`Buffer::take`]).
    work: Arc<Notify>,
    /// Workers in [`Buffer::take`] looking for an entry (not waiting on `work`), plus a worker
    /// woken by a push or by another worker and not yet running, which counts as looking.
    /// A push wakes a waiting worker only when this is 0.
    searching: Arc<AtomicUsize>,
    /// Workers waiting in `take`: counted for the tests only (a shared count written on every
    /// wait would cost the workers for nothing).
    #[cfg(test)]
    workers_waiting: Arc<AtomicUsize>,
    /// Times a waiting worker was woken: counted for the tests only.
    #[cfg(test)]
    wakeups: Arc<AtomicUsize>,
}

/// The entries by lane, each with the number of its push (to find it again if the push fails).
#[derive(Default)]
struct Lanes {
    lanes: [VecDeque<(u64, Delivery)>; LANES],
    pushes: u64,
}

impl Lanes {
    fn pop_most_urgent(&mut self) -> Option<Delivery> {
        self.lanes
            .iter_mut()
            .find_map(VecDeque::pop_front)
            .map(|(_, delivery)| delivery)
    }
}

/// A reader (in `room_waiters`) or, in tests, a worker (in `workers_waiting`) counted while it
/// waits, until the wait ends or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
        // With a dropping strategy the readers never wait for room, and a claim's push makes
        // room for itself as theirs do.
        let claim_reserve = match config.strategy {
            BackpressureStrategy::Block => config.max_queue_size / 10,
            _ => 0,
        };
        Ok(Self {
            tickets: BackpressureQueue::new(config)?,
            lanes: Arc::default(),
            room: Arc::default(),
            room_waiters: Arc::default(),
            claim_reserve,
            work: Arc::default(),
            searching: Arc::default(),
            #[cfg(test)]
            workers_waiting: Arc::default(),
            #[cfg(test)]
            wakeups: Arc::default(),
        })
    }

    fn lanes(&self) -> MutexGuard<'_, Lanes> {
        lock(&self.lanes)
    }

    pub(super) fn stats(&self) -> BackpressureStats {
        self.tickets.stats()
    }

    /// Puts `delivery` in its lane at once, then waits for a ticket (with the `Block` strategy)
    /// in the returned future.
    pub(crate) fn push(&self, delivery: Delivery) -> impl Future<Output = Pushed> + Send + '_ {
        let lane = delivery.lane.min(LANES - 1);
        let push = {
            let mut lanes = self.lanes();
            lanes.pushes += 1;
            let push = lanes.pushes;
            lanes.lanes[lane].push_back((push, delivery));
            push
        };
        async move {
            match self.tickets.push(()).await {
                Ok(PushOutcome::Queued) => {
                    self.wake_a_worker();
                    Pushed::Queued
                }
                Ok(PushOutcome::DroppedOldest(())) => Pushed::Dropped(self.evict(true)),
                Ok(PushOutcome::DroppedNewest(())) => Pushed::Dropped(self.evict(false)),
                Err(err) if err.kind() == ErrorKind::QueueFull => {
                    Pushed::Dropped(self.evict(false))
                }
                Err(_closed) => {
                    let mut lanes = self.lanes();
                    let lane = &mut lanes.lanes[lane];
                    let position = lane.iter().rposition(|(n, _)| *n == push);
                    Pushed::Closed(
                        position
                            .and_then(|p| lane.remove(p))
                            .map(|(_, delivery)| Box::new(delivery)),
                    )
                }
            }
        }
    }

    /// Puts every one of `deliveries` in its lane if the buffer has room for all of them now,
    /// with one lock of the lanes and of the tickets and one wake-up for the batch (a read's
    /// entries, which would otherwise take both locks and a look for a worker to wake per
    /// entry). Otherwise (not enough room, or closed) none is pushed and all are handed back,
    /// for [`push`](Self::push) one at a time. Never waits, never drops.
    ///
    /// The tickets are pushed under the lanes' lock (the one place that holds both, always in
    /// this order), so a worker that pops one of them waits for the lanes and finds its entry.
    pub(crate) fn push_all(&self, deliveries: Vec<Delivery>) -> Result<(), Vec<Delivery>> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut lanes = self.lanes();
        if self
            .tickets
            .try_push_all(vec![(); deliveries.len()])
            .is_err()
        {
            return Err(deliveries);
        }
        for delivery in deliveries {
            lanes.pushes += 1;
            let push = lanes.pushes;
            lanes.lanes[delivery.lane.min(LANES - 1)].push_back((push, delivery));
        }
        drop(lanes);
        self.wake_a_worker();
        Ok(())
    }

    /// Takes the least urgent entry out: the oldest or the newest of the lowest non-empty lane.
    fn evict(&self, oldest: bool) -> Vec<Delivery> {
        let mut lanes = self.lanes();
        let victim = lanes
            .lanes
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
        victim.into_iter().map(|(_, delivery)| delivery).collect()
    }

    /// The most urgent entry, waiting for one; `None` once closed and empty.
    ///
    /// Waiting workers are woken one at a time, and a woken worker that takes an entry wakes
    /// the next one if entries are left: a burst of entries reaches as many waiting workers
    /// as there are entries (handlers that wait for each other all run), while a worker that
    /// keeps up with the entries on its own is not joined by the others for each entry (a
    /// wake-up, often of another thread, per entry). No entry is left waiting while a worker
    /// waits: a push wakes a worker unless one is looking (`searching`), and a worker that
    /// stops looking says so before it looks a last time, both in the tickets' lock order.
    pub(crate) async fn take(&self) -> Option<Delivery> {
        self.searching.fetch_add(1, Ordering::SeqCst);
        loop {
            if let Some(delivery) = self.try_take() {
                self.stop_searching();
                if !self.tickets.is_empty() {
                    self.wake_a_worker();
                }
                return Some(delivery);
            }
            if self.tickets.is_closed() {
                self.stop_searching();
                return None;
            }
            let mut notified = pin!(self.work.notified());
            if notified.as_mut().enable() {
                // A wake-up was waiting for whoever came next: this worker takes it over, with
                // its place in `searching`, and gives up its own.
                self.stop_searching();
                continue;
            }
            self.stop_searching();
            // After the count went down: a push from now on sees it and wakes this wait.
            if !self.tickets.is_empty() || self.tickets.is_closed() {
                // An entry came (or the end) between the look and the count: look again.
                // Dropping `notified` hands a wake-up it got on to another waiter.
                self.searching.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            {
                #[cfg(test)]
                let _waiting = {
                    self.workers_waiting.fetch_add(1, Ordering::Relaxed);
                    Waiting(&self.workers_waiting)
                };
                notified.await;
            }
            #[cfg(test)]
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            // Woken by a push or a worker, in whose `searching` place this worker now is; or by
            // `close`, after which the count no longer matters.
        }
    }

    /// Wakes a waiting worker unless a worker is looking for entries already (or was woken
    /// for them). Without a waiting worker, the next worker to wait returns at once.
    fn wake_a_worker(&self) {
        if self
            .searching
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.work.notify_one();
        }
    }

    /// One worker fewer looking for entries (never below none: after `close` wakes every
    /// worker, those woken so hold no place in the count).
    fn stop_searching(&self) {
        let _ = self
            .searching
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Workers waiting for an entry.
    #[cfg(test)]
    fn workers_waiting(&self) -> usize {
        self.workers_waiting.load(Ordering::Relaxed)
    }

    /// The most urgent entry if one is waiting, without waiting.
    pub(crate) fn try_take(&self) -> Option<Delivery> {
        self.tickets.try_pop()?;
        self.taken()
    }

    /// After a ticket was popped: its entry, and a wake-up for a reader waiting for room.
    fn taken(&self) -> Option<Delivery> {
        let delivery = self.lanes().pop_most_urgent();
        // `notify_waiters` takes the wait list's lock even with nobody on it; readers waiting
        // in `room` say so first.
        if self.room_waiters.load(Ordering::SeqCst) > 0 && self.free() > self.claim_reserve {
            self.room.notify_waiters();
        }
        delivery
    }

    /// Free places.
    pub(crate) fn free(&self) -> usize {
        self.tickets.capacity().saturating_sub(self.tickets.len())
    }

    /// Whether a reader may push now: more places free than the claims' reserve.
    pub(super) fn has_room(&self) -> bool {
        self.free() > self.claim_reserve
    }

    /// How many entries a reader may push before it looks again, leaving the claims' reserve
    /// free: `None` when it need not look (a dropping strategy has no reserve: a full buffer
    /// drops, as configured; a buffer too small for a reserve makes the push itself wait).
    /// `Some(0)`: wait for [`room`](Self::room) first.
    pub(super) fn reader_budget(&self) -> Option<usize> {
        (self.claim_reserve > 0).then(|| self.free().saturating_sub(self.claim_reserve))
    }

    /// Waits until a reader may push ([`has_room`](Self::has_room)); `false` if `stop` came
    /// first.
    pub(super) async fn room(&self, stop: &CancellationToken) -> bool {
        if self.has_room() {
            return true;
        }
        // Counted before the wait is enabled and the room looked at again, so a taker that
        // frees a place after that look sees the count and wakes this wait.
        self.room_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.room_waiters);
        loop {
            let mut notified = pin!(self.room.notified());
            notified.as_mut().enable();
            if self.has_room() {
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
        self.work.notify_waiters();
    }

    /// Everything still in the buffer.
    pub(super) fn drain(&self) -> Vec<Delivery> {
        while self.tickets.try_pop().is_some() {}
        self.lanes()
            .lanes
            .iter_mut()
            .flat_map(std::mem::take)
            .map(|(_, delivery)| delivery)
            .collect()
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
        }
    }

    /// Far longer than any of these tests takes: only a hang reaches it.
    const HANG: std::time::Duration = std::time::Duration::from_secs(60);

    fn buffer(size: usize, strategy: BackpressureStrategy) -> Buffer {
        Buffer::new(
            BackpressureConfig::default()
                .with_max_queue_size(size)
                .with_strategy(strategy),
        )
        .unwrap()
    }

    /// With `Block`, readers leave a tenth of the buffer to the claim passes; with a dropping
    /// strategy or a buffer under ten places they never wait for it.
    #[tokio::test]
    async fn readers_leave_a_tenth_of_a_blocking_buffer_to_the_claims() {
        let blocking = buffer(20, BackpressureStrategy::Block);
        assert_eq!(blocking.reader_budget(), Some(18));
        for n in 0..17 {
            assert!(matches!(
                blocking.push(delivery(2, n)).await,
                Pushed::Queued
            ));
        }
        assert_eq!(blocking.reader_budget(), Some(1));
        assert!(blocking.has_room());
        assert!(matches!(
            blocking.push(delivery(2, 17)).await,
            Pushed::Queued
        ));
        assert_eq!(blocking.reader_budget(), Some(0));
        assert!(!blocking.has_room());
        // A claim may still push into the reserve; a worker's take makes room for readers.
        assert!(matches!(
            blocking.push(delivery(2, 18)).await,
            Pushed::Queued
        ));
        let stop = CancellationToken::new();
        let waiting = blocking.room(&stop);
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        blocking.try_take().unwrap();
        assert!(
            futures_util::poll!(waiting.as_mut()).is_pending(),
            "one place: the reserve"
        );
        blocking.try_take().unwrap();
        assert_eq!(tokio::time::timeout(HANG, waiting).await, Ok(true));

        assert_eq!(
            buffer(20, BackpressureStrategy::DropOldest).reader_budget(),
            None
        );
        assert_eq!(buffer(9, BackpressureStrategy::Block).reader_budget(), None);
        assert!(buffer(9, BackpressureStrategy::Block).has_room());
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

        // The same entries pushed in one go; a batch that does not fit is not pushed at all.
        let batch = [(3, 1), (2, 2), (1, 3), (0, 4), (2, 5)].map(|(lane, n)| delivery(lane, n));
        assert!(buffer.push_all(batch.into()).is_ok());
        let too_many: Vec<_> = (6..12).map(|n| delivery(0, n)).collect();
        assert_eq!(buffer.push_all(too_many).map_err(|back| back.len()), Err(6));
        let mut order = Vec::new();
        while buffer.free() < 10 {
            order.push(buffer.take().await.unwrap().id);
        }
        assert_eq!(order, ["4-0", "3-0", "2-0", "5-0", "1-0"]);
        buffer.close();
        assert!(buffer.push_all(vec![delivery(2, 13)]).is_err(), "closed");
    }

    /// Workers take every entry, whatever the interleaving of pushes and takes on several
    /// threads, and every waiting worker returns once the buffer is closed: no wake-up is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiting_workers_take_every_entry_of_bursts() {
        const PUSHERS: u32 = 3;
        const PER_PUSHER: u32 = 3_000;
        const WORKERS: usize = 8;
        let buffer = buffer(64, BackpressureStrategy::Block);
        let (taken_tx, mut taken_rx) = tokio::sync::mpsc::unbounded_channel();
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (buffer, taken_tx) = (buffer.clone(), taken_tx.clone());
                tokio::spawn(async move {
                    while let Some(delivery) = buffer.take().await {
                        // Some handlers take a moment, most none.
                        if w % 3 == 0 {
                            tokio::task::yield_now().await;
                        }
                        taken_tx.send(delivery.id).unwrap();
                    }
                })
            })
            .collect();
        drop(taken_tx);
        let pushers: Vec<_> = (0..PUSHERS)
            .map(|p| {
                let buffer = buffer.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while n < PER_PUSHER {
                        // The first pusher pushes as a reader does: 25 entries in one go when
                        // they all fit, else one at a time.
                        if p == 0 {
                            let batch: Vec<_> = (n..(n + 25).min(PER_PUSHER))
                                .map(|n| delivery(2, p * PER_PUSHER + n))
                                .collect();
                            let len = batch.len() as u32;
                            if buffer.push_all(batch).is_ok() {
                                n += len;
                                tokio::task::yield_now().await;
                                continue;
                            }
                        }
                        let pushed = buffer.push(delivery(2, p * PER_PUSHER + n)).await;
                        assert!(matches!(pushed, Pushed::Queued));
                        // Bursts with pauses between them, so the workers go back to waiting.
                        if n % 50 == 49 {
                            tokio::task::yield_now().await;
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        let all_taken = async {
            for pusher in pushers {
                pusher.await.unwrap();
            }
            let mut seen = std::collections::HashSet::new();
            while seen.len() < (PUSHERS * PER_PUSHER) as usize {
                let id = taken_rx.recv().await.unwrap();
                assert!(seen.insert(id.clone()), "{id} taken twice");
            }
            buffer.close();
            for worker in workers {
                worker.await.unwrap();
            }
        };
        // A lost wake-up leaves entries waiting for ever: a deadline turns it into a failure.
        tokio::time::timeout(HANG, all_taken)
            .await
            .expect("entries were left in the buffer with every worker waiting");
        assert!(
            taken_rx.recv().await.is_none(),
            "nothing taken past the pushes"
        );
    }

    /// Entries pushed into an empty buffer reach as many waiting workers as there are
    /// entries: four handlers that each wait for the other three all get to run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_reaches_a_worker_per_entry() {
        burst_reaches_a_worker_per_entry(false).await;
    }

    /// The same for entries pushed in one go, as a reader pushes a read (one wake-up for all).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_reaches_a_worker_per_entry() {
        burst_reaches_a_worker_per_entry(true).await;
    }

    async fn burst_reaches_a_worker_per_entry(in_one_go: bool) {
        const WORKERS: usize = 4;
        let buffer = buffer(16, BackpressureStrategy::Block);
        let barrier = Arc::new(tokio::sync::Barrier::new(WORKERS));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (buffer, barrier) = (buffer.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    let delivery = buffer.take().await;
                    assert!(delivery.is_some());
                    barrier.wait().await;
                })
            })
            .collect();
        // Every worker waits before the burst.
        while buffer.workers_waiting() < WORKERS {
            tokio::task::yield_now().await;
        }
        if in_one_go {
            let batch = (0..WORKERS).map(|n| delivery(2, n as u32)).collect();
            assert!(buffer.push_all(batch).is_ok());
        } else {
            for n in 0..WORKERS {
                buffer.push(delivery(2, n as u32)).await;
            }
        }
        let all_ran = async {
            for worker in workers {
                worker.await.unwrap();
            }
        };
        tokio::time::timeout(HANG, all_ran)
            .await
            .expect("a worker was not woken for an entry of the burst");
    }

    /// A burst that one worker takes on its own wakes two of eight waiting workers: the first
    /// for the burst, the second by the first when it took an entry and saw more (it finds
    /// none and waits again). One wake-up per entry, as a `Notify` per push gives, woke all
    /// eight.
    #[tokio::test]
    async fn a_burst_one_worker_keeps_up_with_wakes_two_workers() {
        const WORKERS: usize = 8;
        const ENTRIES: u32 = 100;
        let buffer = buffer(128, BackpressureStrategy::Block);
        let (taken_tx, mut taken_rx) = tokio::sync::mpsc::unbounded_channel();
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (buffer, taken_tx) = (buffer.clone(), taken_tx.clone());
                tokio::spawn(async move {
                    while let Some(delivery) = buffer.take().await {
                        taken_tx.send(delivery.id).unwrap();
                    }
                })
            })
            .collect();
        while buffer.workers_waiting() < WORKERS {
            tokio::task::yield_now().await;
        }
        // The burst, without a yield in between: on this one-thread runtime no worker runs
        // before it is all in.
        for n in 0..ENTRIES {
            assert!(matches!(buffer.push(delivery(2, n)).await, Pushed::Queued));
        }
        for _ in 0..ENTRIES {
            tokio::time::timeout(HANG, taken_rx.recv())
                .await
                .expect("an entry was left in the buffer")
                .unwrap();
        }
        while buffer.workers_waiting() < WORKERS {
            tokio::task::yield_now().await;
        }
        assert_eq!(buffer.wakeups.load(Ordering::Relaxed), 2);
        buffer.close();
        for worker in workers {
            worker.await.unwrap();
        }
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
        while buffer.lanes().lanes[2].len() < 2 {
            tokio::task::yield_now().await;
        }
        buffer.close();
        assert!(waiting.await.unwrap());
        let rest: Vec<String> = buffer.drain().into_iter().map(|d| d.id).collect();
        assert_eq!(rest, ["1-0"]);
        assert!(buffer.take().await.is_none());
    }
}
