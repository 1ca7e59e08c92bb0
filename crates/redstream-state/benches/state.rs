//! Operations per second of the state store against a private redis-server, each figure next
//! to raw redis-rs sending the same commands in the same run.
//!
//! `cargo bench -p redstream-state` (set `REDSTREAM_BENCH_OPS` to change the 100,000 single
//! operations per run at concurrency 64; concurrency 1 runs a fifth of that). Set
//! `REDSTREAM_BENCH_ROUNDS` for more rounds than 5, and `REDSTREAM_BENCH_ONLY` to a
//! comma-separated list of `single` (1 task), `concurrent` (64 tasks), `many` (`get_many`,
//! `put_many`, `put_many_with_ttl`) and `atomic` (`transaction`, `save_checkpoint`) to run only
//! those parts: many rounds of one line are how a change of a few percent shows through the
//! noise of a 2-core machine.
//!
//! | line | redstream | raw redis-rs |
//! |---|---|---|
//! | get, 1 task | `get::<Order>` | `GET` + `serde_json::from_slice` |
//! | get, 64 tasks | `get::<Order>` from 64 tasks | the same from 64 tasks on one multiplexed connection |
//! | put, 1 task / 64 tasks | `put(key, &order)` | `serde_json::to_vec` + `SET` |
//! | get_many, 1,000 keys | `get_many::<Order, _>` | `MGET` of 1,000 keys + decoding |
//! | put_many, 1,000 keys | `put_many`: one `MSET` (all or nothing by itself) | encoding + `MSET` of 1,000 keys |
//! | put_many_with_ttl vs MULTI/EXEC | `put_many_with_ttl`: the crate's all-or-nothing script of `SET .. PX` per key, which checks each `SET`'s permission before its first write | the same `SET .. PX`s in `MULTI`/`EXEC` (a refused `MULTI` lets them run alone; a failing `SET` does not stop the others) |
//! | put_many_with_ttl vs Lua loop | the same | `EVALSHA` of a Lua loop of the same `SET .. PX`s, without checks (a refused `SET` stops it with the ones before applied) |
//! | transaction, 1,000 puts | `transaction` of 1,000 `put`s: the crate's all-or-nothing script, every `SET` checked before the first write | encoding + the same `SET`s in `MULTI`/`EXEC` |
//! | save_checkpoint, 1,000 keys | `save_checkpoint` of 1,000 keys: the same script, the `SET`s, `DEL` of the record and its `HSET` | encoding + the same `SET`s, `DEL` and `HSET` (format, position, time, a `state:<key>` field per key) in `MULTI`/`EXEC` |
//!
//! Both sides get the same input (the user's keys, `order:<n>`, and values) and do the same
//! JSON work; the raw side prefixes each key (`bench:order:<n>`, the store's plain layout) in the
//! timed loop, as the store does. So the ratio is the store's own overhead: key building, the
//! circuit breaker, its connection manager. The store runs with its default config (fallback
//! off, no default TTL). Each line prints the median rates, the median of the rounds' ratios,
//! their range, their geometric mean and its 95% confidence interval
//! (`redstream_testkit::bench::Ratios`). The 64-task lines also print each side's CPU time per
//! operation, of the bench's own process (the client) and of the server, which tell a slower
//! client from one that asks more of the server.

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redstream_state::{StateBackend, StateStore, Transaction};
use redstream_testkit::RedisServer;
use redstream_testkit::bench::{ProcessCpu, Ratios, median};

use common::{
    CHECKPOINT, Order, TTL_MS, checkpoint_multi, key, mset, order, raw_connection, set_multi,
    set_px_lua, set_px_multi,
};

/// Keys per `get_many` / `put_many` call.
const BATCH: u64 = 1_000;
/// Rounds per figure; each runs redstream and raw redis-rs back to back, alternating which
/// goes first, and the median rate of each side is reported. One machine runs both the server
/// and the client, so single runs are noisy.
/// Rounds per line unless `REDSTREAM_BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 5;

/// The rounds per line.
fn rounds() -> usize {
    redstream_testkit::bench::rounds(ROUNDS)
}

/// The keys and values of the `call`th batch call: the same keys each time, new values.
fn items(call: u64) -> impl Iterator<Item = (String, Order)> {
    (0..BATCH).map(move |n| (key(n), order(n + call)))
}

/// One single-key operation, numbered; both sides are boxed the same way.
type Op = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Splits `total` operations over `tasks` tasks; `op(n)` runs operation `n`.
async fn run(tasks: usize, total: u64, op: Op) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let next = Arc::clone(&next);
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    op(n).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    started.elapsed()
}

fn ours_get(store: &StateStore) -> Op {
    let store = store.clone();
    Arc::new(move |n| {
        let store = store.clone();
        Box::pin(async move {
            let found: Option<Order> = store.get(&key(n)).await.unwrap();
            assert!(found.is_some());
        })
    })
}

fn ours_put(store: &StateStore) -> Op {
    let store = store.clone();
    Arc::new(move |n| {
        let store = store.clone();
        Box::pin(async move { store.put(&key(n), &order(n)).await.unwrap() })
    })
}

fn raw_get<C>(conn: &C, prefix: &str) -> Op
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let conn = conn.clone();
    let prefix = prefix.to_owned();
    Arc::new(move |n| {
        let mut conn = conn.clone();
        let redis_key = format!("{prefix}:{}", key(n));
        Box::pin(async move { common::raw_get(&mut conn, redis_key).await })
    })
}

fn raw_put<C>(conn: &C, prefix: &str) -> Op
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let conn = conn.clone();
    let prefix = prefix.to_owned();
    Arc::new(move |n| {
        let mut conn = conn.clone();
        let redis_key = format!("{prefix}:{}", key(n));
        Box::pin(async move {
            let bytes = serde_json::to_vec(&order(n)).unwrap();
            let () = redis::cmd("SET")
                .arg(redis_key)
                .arg(bytes)
                .query_async(&mut conn)
                .await
                .unwrap();
        })
    })
}

async fn ours_get_many(store: &StateStore, calls: u64) -> Duration {
    let keys: Vec<String> = (0..BATCH).map(key).collect();
    let started = Instant::now();
    for _ in 0..calls {
        let found: Vec<Option<Order>> = store.get_many(&keys).await.unwrap();
        assert_eq!(found.len(), BATCH as usize);
    }
    started.elapsed()
}

async fn raw_get_many(conn: &MultiplexedConnection, prefix: &str, calls: u64) -> Duration {
    let mut conn = conn.clone();
    // The same input as the store's: the user's keys, prefixed in the timed loop.
    let keys: Vec<String> = (0..BATCH).map(key).collect();
    let started = Instant::now();
    for _ in 0..calls {
        let mut cmd = redis::cmd("MGET");
        for key in &keys {
            cmd.arg(format!("{prefix}:{key}"));
        }
        let found: Vec<Option<Vec<u8>>> = cmd.query_async(&mut conn).await.unwrap();
        let decoded: Vec<Option<Order>> = found
            .into_iter()
            .map(|b| b.map(|b| serde_json::from_slice(&b).unwrap()))
            .collect();
        assert_eq!(decoded.len(), BATCH as usize);
    }
    started.elapsed()
}

async fn ours_put_many(store: &StateStore, calls: u64) -> Duration {
    let started = Instant::now();
    for call in 0..calls {
        store.put_many(items(call)).await.unwrap();
    }
    started.elapsed()
}

async fn raw_put_many(conn: &MultiplexedConnection, prefix: &str, calls: u64) -> Duration {
    let mut conn = conn.clone();
    let started = Instant::now();
    for call in 0..calls {
        let () = mset(prefix, items(call))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    started.elapsed()
}

async fn ours_put_many_ttl(store: &StateStore, calls: u64) -> Duration {
    let started = Instant::now();
    for call in 0..calls {
        store
            .put_many_with_ttl(items(call), Duration::from_millis(TTL_MS))
            .await
            .unwrap();
    }
    started.elapsed()
}

/// `SET .. PX` per key in `MULTI`/`EXEC` (see `common::set_px_multi`).
async fn raw_put_many_multi(conn: &MultiplexedConnection, prefix: &str, calls: u64) -> Duration {
    let mut conn = conn.clone();
    let started = Instant::now();
    for call in 0..calls {
        let () = set_px_multi(prefix, items(call))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    started.elapsed()
}

/// A plain Lua loop of `SET .. PX` (see `common::set_px_lua`).
async fn raw_put_many_script(conn: &MultiplexedConnection, prefix: &str, calls: u64) -> Duration {
    let mut conn = conn.clone();
    let started = Instant::now();
    for call in 0..calls {
        let () = set_px_lua(prefix, items(call))
            .invoke_async(&mut conn)
            .await
            .unwrap();
    }
    started.elapsed()
}

async fn ours_transaction(store: &StateStore, calls: u64) -> Duration {
    let started = Instant::now();
    for call in 0..calls {
        let mut tx = Transaction::new();
        for n in 0..BATCH {
            tx.put(&key(n), order(n + call));
        }
        store.transaction(tx).await.unwrap();
    }
    started.elapsed()
}

/// The same `SET`s in `MULTI`/`EXEC`.
async fn raw_transaction(conn: &MultiplexedConnection, prefix: &str, calls: u64) -> Duration {
    let mut conn = conn.clone();
    let started = Instant::now();
    for call in 0..calls {
        let () = set_multi(prefix, items(call))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    started.elapsed()
}

async fn ours_save_checkpoint(store: &StateStore, calls: u64) -> Duration {
    let started = Instant::now();
    for call in 0..calls {
        store
            .save_checkpoint(CHECKPOINT, &format!("{call}-0"), items(call))
            .await
            .unwrap();
    }
    started.elapsed()
}

/// The store's writes in `MULTI`/`EXEC` (see `common::checkpoint_multi`).
async fn raw_save_checkpoint(conn: &MultiplexedConnection, prefix: &str, calls: u64) -> Duration {
    let mut conn = conn.clone();
    let record = format!("{prefix}#checkpoint:{CHECKPOINT}");
    let started = Instant::now();
    for call in 0..calls {
        let () = checkpoint_multi(prefix, &record, &format!("{call}-0"), items(call))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    started.elapsed()
}

fn rate(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

/// The rounds' ratios of `ours` to `theirs`, summed up.
fn ratios(ours: &[f64], theirs: &[f64]) -> Ratios {
    Ratios::of(ours, theirs).expect("every round has a rate on each side, finite and above zero")
}

fn line(name: &str, ours: &[f64], raw: &[f64]) {
    let ratios = ratios(ours, raw);
    println!(
        "{name:<30} redstream {:>10.0} ops/s   raw redis-rs {:>10.0} ops/s   ratio {ratios}",
        median(ours),
        median(raw),
    );
}

/// Runs `ours` and `raw` for [`rounds`] rounds, alternating which goes first, and prints the
/// median rates of `ops` operations per run, the median of the rounds' ratios and their range.
async fn compare<A, B, FA, FB>(name: &str, ops: u64, ours: A, raw: B)
where
    A: Fn() -> FA,
    B: Fn() -> FB,
    FA: std::future::Future<Output = Duration>,
    FB: std::future::Future<Output = Duration>,
{
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds() {
        if round % 2 == 0 {
            a.push(rate(ops, ours().await));
            b.push(rate(ops, raw().await));
        } else {
            b.push(rate(ops, raw().await));
            a.push(rate(ops, ours().await));
        }
    }
    line(name, &a, &b);
}

/// As [`compare`], with a third side in every round (the three in an order that rotates):
/// the raw loop through redis-rs's `ConnectionManager`, which the store sends through for its
/// reconnections. Its line says how much of a gap is the manager's. Under it, each side's
/// CPU time per operation, of this process and of the server (read on `admin`): a gap in the
/// client, or more work asked of the server.
async fn compare_with_manager<A, B, C, FA, FB, FC>(
    name: &str,
    ops: u64,
    admin: &MultiplexedConnection,
    ours: A,
    raw: B,
    managed: C,
) where
    A: Fn() -> FA,
    B: Fn() -> FB,
    C: Fn() -> FC,
    FA: std::future::Future<Output = Duration>,
    FB: std::future::Future<Output = Duration>,
    FC: std::future::Future<Output = Duration>,
{
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut cpu: [Vec<f64>; 3] = Default::default();
    let mut server: [Vec<f64>; 3] = Default::default();
    let mut per_read: [Vec<f64>; 3] = Default::default();
    let server_cpu = || async {
        redstream_testkit::bench::server_cpu(&mut admin.clone())
            .await
            .unwrap()
    };
    let server_reads = || async {
        redstream_testkit::bench::server_reads(&mut admin.clone())
            .await
            .unwrap()
    };
    let per_op = |time: Duration| time.as_secs_f64() * 1e6 / ops as f64;
    for round in 0..rounds() {
        for turn in 0..3 {
            let side = (round + turn) % 3;
            let reads_start = server_reads().await;
            let (start, server_start) = (ProcessCpu::now(), server_cpu().await);
            let elapsed = match side {
                0 => ours().await,
                1 => raw().await,
                _ => managed().await,
            };
            rates[side].push(rate(ops, elapsed));
            cpu[side].push(per_op(ProcessCpu::now().since(start).total()));
            server[side].push(per_op(server_cpu().await.saturating_sub(server_start)));
            // The admin's own `INFO`s are a few reads among tens of thousands.
            let reads = server_reads().await.saturating_sub(reads_start).max(1);
            per_read[side].push(ops as f64 / reads as f64);
        }
    }
    let [ours, raw, managed] = &rates;
    line(name, ours, raw);
    for (whose, times) in [("client", cpu), ("server", server)] {
        let [ours, raw, managed] = times.map(|t| median(&t));
        println!(
            "{:<30} {whose} CPU per op (median): redstream {ours:.2} µs, raw redis-rs \
             {raw:.2} µs, through ConnectionManager {managed:.2} µs",
            ""
        );
    }
    let [ours_reads, raw_reads, managed_reads] = per_read.map(|r| median(&r));
    println!(
        "{:<30} commands per server read (median): redstream {ours_reads:.1}, raw redis-rs \
         {raw_reads:.1}, through ConnectionManager {managed_reads:.1}",
        ""
    );
    let managed_rate = median(managed);
    println!(
        "{:<30} raw redis-rs through ConnectionManager {managed_rate:.0} ops/s: {:.2}x of the \
         baseline; redstream {:.2}x of it",
        "",
        ratios(managed, raw).median,
        ratios(ours, managed).median,
    );
}

fn main() {
    let total: u64 = std::env::var("REDSTREAM_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let server = RedisServer::start().await.unwrap();
        let raw = raw_connection(&server.url()).await;
        let prefix = "bench";
        let store = StateStore::new(StateBackend::redis(server.url(), prefix))
            .await
            .unwrap();
        // Both sides read the same keys, written once up front.
        store.put_many(items(0)).await.unwrap();
        println!(
            "redstream-state, {total} operations at 64 tasks, {} at 1, median of {} rounds, {} \
             on 127.0.0.1:{}",
            total / 5,
            rounds(),
            server
                .server_version()
                .map_or_else(|| "an unknown server".to_owned(), ToString::to_string),
            server.port()
        );

        if redstream_testkit::bench::part("single") {
            let ops = total / 5;
            compare(
                "get, 1 task",
                ops,
                || run(1, ops, ours_get(&store)),
                || run(1, ops, raw_get(&raw, prefix)),
            )
            .await;
            compare(
                "put, 1 task",
                ops,
                || run(1, ops, ours_put(&store)),
                || run(1, ops, raw_put(&raw, prefix)),
            )
            .await;
        }
        if redstream_testkit::bench::part("concurrent") {
            let manager = redis::aio::ConnectionManager::new_with_config(
                server.client().unwrap(),
                redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(5))),
            )
            .await
            .unwrap();
            compare_with_manager(
                "get, 64 tasks",
                total,
                &raw,
                || run(64, total, ours_get(&store)),
                || run(64, total, raw_get(&raw, prefix)),
                || run(64, total, raw_get(&manager, prefix)),
            )
            .await;
            compare_with_manager(
                "put, 64 tasks",
                total,
                &raw,
                || run(64, total, ours_put(&store)),
                || run(64, total, raw_put(&raw, prefix)),
                || run(64, total, raw_put(&manager, prefix)),
            )
            .await;
        }
        // Keys per second, 1,000 per call.
        let calls = (total / 500).max(10);
        if redstream_testkit::bench::part("many") {
            compare(
                "get_many, 1,000 keys",
                calls * BATCH,
                || ours_get_many(&store, calls),
                || raw_get_many(&raw, prefix, calls),
            )
            .await;
            compare(
                "put_many, 1,000 keys",
                calls * BATCH,
                || ours_put_many(&store, calls),
                || raw_put_many(&raw, prefix, calls),
            )
            .await;
            compare(
                "put_many_with_ttl vs MULTI/EXEC",
                calls * BATCH,
                || ours_put_many_ttl(&store, calls),
                || raw_put_many_multi(&raw, prefix, calls),
            )
            .await;
            compare(
                "put_many_with_ttl vs Lua loop",
                calls * BATCH,
                || ours_put_many_ttl(&store, calls),
                || raw_put_many_script(&raw, prefix, calls),
            )
            .await;
        }
        if redstream_testkit::bench::part("atomic") {
            compare(
                "transaction, 1,000 puts",
                calls * BATCH,
                || ours_transaction(&store, calls),
                || raw_transaction(&raw, prefix, calls),
            )
            .await;
            compare(
                "save_checkpoint, 1,000 keys",
                calls * BATCH,
                || ours_save_checkpoint(&store, calls),
                || raw_save_checkpoint(&raw, prefix, calls),
            )
            .await;
        }
        drop(server);
    });
}
