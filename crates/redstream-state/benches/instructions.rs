//! Instructions per operation, counted by callgrind: the state store next to raw redis-rs doing
//! the same work. Instruction counts do not move with the load of the machine, so they are the
//! figure to compare across commits on a noisy 2-core machine (the throughput bench, `state`,
//! moves by 10-20% from run to run).
//!
//! `cargo bench -p redstream-state --bench instructions`. With `REDSTREAM_CALLGRIND_DIR=<dir>`
//! each run's profile is kept there (`get-1200.out`...) for `callgrind_annotate --inclusive=yes`.
//! `... -- --check` also compares the store's figures with those recorded in
//! `benches/instructions.baseline` and fails when one grew by more than 10%, as the
//! transport's bench does; `... -- --record` rewrites that file.
//!
//! How (as the transport's `instructions` bench): this binary runs itself under
//! `valgrind --tool=callgrind` as a child doing one case (`--case <name> <ops> <url>`) on a
//! current-thread runtime, once with 200 and once with 1,200 operations; the difference of the
//! two totals over 1,000 is one operation's cost, with the start, the runtime and the
//! connection cancelled out. The redis-server and the kernel are not counted.
//!
//! | case | redstream | raw redis-rs |
//! |---|---|---|
//! | `get` | `get::<Order>` | `GET` + `serde_json::from_slice` |
//! | `put` | `put(key, &order)` | `serde_json::to_vec` + `SET` |
//! | `get_many` (per key) | `get_many::<Order, _>` of 100 keys | `MGET` of the 100 prefixed keys + decoding |
//! | `put_many` (per key) | `put_many` of 100 keys: one `MSET` | encoding + `MSET` of the 100 prefixed keys |
//! | `put_many_with_ttl` vs `MULTI`/`EXEC` (per key) | `put_many_with_ttl` of 100 keys: the crate's all-or-nothing script | encoding + the 100 `SET .. PX` in `MULTI`/`EXEC` |
//! | `put_many_with_ttl` vs Lua loop (per key) | the same | encoding + `EVALSHA` of a plain Lua loop of the 100 `SET .. PX` (redis-rs's `Script`) |
//! | `transaction` vs `MULTI`/`EXEC` (per key) | `transaction` of 100 `put`s: the crate's all-or-nothing script | encoding + the 100 `SET`s in `MULTI`/`EXEC` |
//! | `save_checkpoint` vs `MULTI`/`EXEC` (per key) | `save_checkpoint` of 100 keys: the crate's all-or-nothing script | encoding + the 100 `SET`s, `DEL` of the record and its `HSET` (format, position, time, a `state:<key>` field per key) in `MULTI`/`EXEC` |
//!
//! Two more lines are printed, not checked against the baseline: `get, 64 tasks`, the same
//! gets from 64 tasks at once on the child's one thread (each boxed, as the `state` bench's
//! tasks are), run with callgrind's cache simulation (`Callgrind::count_cache`, a fixed
//! 32 KiB first-level data cache): instructions and first-level data cache misses per get.
//! With 64 futures alive at once their memory no longer fits that cache, and a get whose
//! future is spread over more cache lines pays for it there, where instructions do not show
//! it. The misses move by a few percent with the code's layout from build to build.
//!
//! Both sides get the same input (the user's keys, `order:<n>`) and build the prefixed Redis
//! key (`bench:order:<n>`, and the record's `state:order:<n>` fields) in the counted loop.

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::MultiplexedConnection;
use redstream_state::{StateBackend, StateStore, Transaction};
use redstream_testkit::RedisServer;
use redstream_testkit::callgrind::{Baseline, Callgrind, Run, per_unit};

use common::{
    CHECKPOINT, Order, TTL_MS, checkpoint_multi, key, mset, order, raw_connection, raw_get,
    set_multi, set_px_lua, set_px_multi,
};

const SHORT: u64 = 200;
const LONG: u64 = 1_200;
/// Keys per `get_many` / `put_many` call.
const BATCH: u64 = 100;
const PREFIX: &str = "bench";
/// Tasks of the `get, 64 tasks` line.
const TASKS: u64 = 64;
/// Gets of its short and long runs: 10 and 100 per task.
const TASKS_SHORT: u64 = 640;
const TASKS_LONG: u64 = 6_400;

/// The Redis key of the checkpoint's record.
const RECORD: &str = "bench#checkpoint:orders";

/// (name, redstream's child case, raw redis-rs's child case, keys per operation).
const CASES: [(&str, &str, &str, u64); 8] = [
    ("get", "get", "raw-get", 1),
    ("put", "put", "raw-put", 1),
    ("get_many, per key", "get_many", "raw-get_many", BATCH),
    ("put_many, per key", "put_many", "raw-put_many", BATCH),
    (
        "put_many_with_ttl vs MULTI/EXEC, per key",
        "put_many_ttl",
        "raw-put_many_ttl_multi",
        BATCH,
    ),
    (
        "put_many_with_ttl vs Lua loop, per key",
        "put_many_ttl",
        "raw-put_many_ttl_lua",
        BATCH,
    ),
    (
        "transaction vs MULTI/EXEC, per key",
        "transaction",
        "raw-transaction_multi",
        BATCH,
    ),
    (
        "save_checkpoint vs MULTI/EXEC, per key",
        "save_checkpoint",
        "raw-save_checkpoint_multi",
        BATCH,
    ),
];

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let flags = match Run::from_args() {
        Run::Child { case, args } => {
            let ops: u64 = args[0].parse().unwrap();
            runtime.block_on(child(&case, ops, &args[1]));
            return ExitCode::SUCCESS;
        }
        Run::Driver(flags) => flags,
    };
    let counted = runtime.block_on(driver());
    Baseline::new(
        env!("CARGO_MANIFEST_DIR"),
        "# Instructions per operation (per key for the batches) of the state store, recorded by\n\
         # `cargo bench -p redstream-state --bench instructions -- --record`.\n\
         # `-- --check` fails when a figure grows by more than 10%.\n",
    )
    .apply(&counted, flags)
}

/// The keys and values of the `n`th batch operation.
fn items(n: u64) -> impl Iterator<Item = (String, Order)> {
    (0..BATCH).map(move |k| (key(n * BATCH + k), order(n + k)))
}

async fn child(case: &str, ops: u64, url: &str) {
    if let Some(raw) = concurrent_case(case) {
        concurrent_gets(raw, ops, url).await;
        return;
    }
    match case {
        "get" | "put" | "get_many" | "put_many" | "put_many_ttl" | "transaction"
        | "save_checkpoint" => {
            let store = StateStore::new(StateBackend::redis(url, PREFIX))
                .await
                .unwrap();
            for n in 0..ops {
                match case {
                    "get" => {
                        let found: Option<Order> = store.get(&key(n)).await.unwrap();
                        assert!(found.is_some());
                    }
                    "put" => store.put(&key(n), &order(n)).await.unwrap(),
                    "get_many" => {
                        let keys: Vec<String> = (0..BATCH).map(|k| key(n * BATCH + k)).collect();
                        let found: Vec<Option<Order>> = store.get_many(&keys).await.unwrap();
                        assert!(found.iter().all(Option::is_some));
                    }
                    "put_many" => {
                        store.put_many(items(n)).await.unwrap();
                    }
                    "put_many_ttl" => {
                        store
                            .put_many_with_ttl(items(n), std::time::Duration::from_millis(TTL_MS))
                            .await
                            .unwrap();
                    }
                    "transaction" => {
                        let mut tx = Transaction::new();
                        for k in 0..BATCH {
                            tx.put(&key(n * BATCH + k), order(n + k));
                        }
                        store.transaction(tx).await.unwrap();
                    }
                    _ => {
                        store
                            .save_checkpoint(CHECKPOINT, &format!("{n}-0"), items(n))
                            .await
                            .unwrap();
                    }
                }
            }
        }
        _ => {
            let mut conn = raw_connection(url).await;
            for n in 0..ops {
                raw_op(&mut conn, case, n).await;
            }
        }
    }
}

/// The cases of the `get, 64 tasks` line: whether `case` is one, and if so whether it is raw
/// redis-rs's.
fn concurrent_case(case: &str) -> Option<bool> {
    match case {
        "get-64" => Some(false),
        "raw-get-64" => Some(true),
        _ => None,
    }
}

/// `ops` gets from [`TASKS`] tasks at once, on the child's one thread, each boxed as the
/// throughput bench does: the store's `get::<Order>`, or (`raw`) `GET` and
/// `serde_json::from_slice` on a multiplexed connection cloned for each get. With 64 futures
/// alive at once their memory no longer fits the first-level cache, as in a busy service.
async fn concurrent_gets(raw: bool, ops: u64, url: &str) {
    let store = StateStore::new(StateBackend::redis(url, PREFIX))
        .await
        .unwrap();
    let conn = raw_connection(url).await;
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (next, store, conn) = (Arc::clone(&next), store.clone(), conn.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= ops {
                        break;
                    }
                    let get: Pin<Box<dyn Future<Output = ()> + Send>> = if raw {
                        let mut conn = conn.clone();
                        let redis_key = format!("{PREFIX}:{}", key(n));
                        Box::pin(async move { raw_get(&mut conn, redis_key).await })
                    } else {
                        let store = store.clone();
                        Box::pin(async move {
                            let found: Option<Order> = store.get(&key(n)).await.unwrap();
                            assert!(found.is_some());
                        })
                    };
                    get.await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn raw_op(conn: &mut MultiplexedConnection, case: &str, n: u64) {
    match case {
        "raw-get" => raw_get(conn, format!("{PREFIX}:{}", key(n))).await,
        "raw-put" => {
            let bytes = serde_json::to_vec(&order(n)).unwrap();
            let () = redis::cmd("SET")
                .arg(format!("{PREFIX}:{}", key(n)))
                .arg(bytes)
                .query_async(conn)
                .await
                .unwrap();
        }
        "raw-get_many" => {
            let keys: Vec<String> = (0..BATCH).map(|k| key(n * BATCH + k)).collect();
            let mut cmd = redis::cmd("MGET");
            for key in &keys {
                cmd.arg(format!("{PREFIX}:{key}"));
            }
            let found: Vec<Option<Vec<u8>>> = cmd.query_async(conn).await.unwrap();
            let decoded: Vec<Option<Order>> = found
                .into_iter()
                .map(|b| b.map(|b| serde_json::from_slice(&b).unwrap()))
                .collect();
            assert!(decoded.iter().all(Option::is_some));
        }
        "raw-put_many" => {
            let () = mset(PREFIX, items(n)).query_async(conn).await.unwrap();
        }
        "raw-put_many_ttl_multi" => {
            let () = set_px_multi(PREFIX, items(n))
                .query_async(conn)
                .await
                .unwrap();
        }
        "raw-put_many_ttl_lua" => {
            let () = set_px_lua(PREFIX, items(n))
                .invoke_async(conn)
                .await
                .unwrap();
        }
        "raw-transaction_multi" => {
            let () = set_multi(PREFIX, items(n)).query_async(conn).await.unwrap();
        }
        "raw-save_checkpoint_multi" => {
            let () = checkpoint_multi(PREFIX, RECORD, &format!("{n}-0"), items(n))
                .query_async(conn)
                .await
                .unwrap();
        }
        other => panic!("unknown case {other}"),
    }
}

/// Instructions per key of `case`: the difference of a long and a short run.
fn per_key(case: &str, keys_per_op: u64, url: &str, callgrind: &Callgrind) -> f64 {
    let [short, long] = [SHORT, LONG].map(|ops| {
        let args = [ops.to_string(), url.to_owned()];
        callgrind.count(&format!("{case}-{ops}"), case, &args)
    });
    per_unit(short, long, (LONG - SHORT) * keys_per_op)
}

/// Prints the table; returns the store's figure per case.
async fn driver() -> Vec<(&'static str, f64)> {
    let server = RedisServer::start().await.unwrap();
    let callgrind = Callgrind::new();
    // Every key the cases read exists.
    let store = StateStore::new(StateBackend::redis(server.url(), PREFIX))
        .await
        .unwrap();
    store
        .put_many((0..1_000).map(|n| (key(n), order(n))))
        .await
        .unwrap();
    println!(
        "redstream-state, instructions per operation (callgrind; runs of {LONG} minus {SHORT} \
         operations, {BATCH} keys per get_many/put_many), redis-server on 127.0.0.1:{}",
        server.port()
    );
    // Each redstream case is counted once, even when printed against two baselines.
    let mut counted: Vec<(&'static str, f64)> = Vec::new();
    for (name, case, raw_case, keys) in CASES {
        let ours = match counted.iter().find(|(c, _)| *c == case) {
            Some((_, ours)) => *ours,
            None => {
                let ours = per_key(case, keys, &server.url(), &callgrind);
                counted.push((case, ours));
                ours
            }
        };
        let raw = per_key(raw_case, keys, &server.url(), &callgrind);
        println!(
            "{name:<40} redstream {ours:>9.0} instr/op   raw redis-rs {raw:>9.0} instr/op   ratio {:.2}x",
            ours / raw
        );
    }
    // Not in the baseline: a line for reading, not a check (see the module's documentation).
    let [ours, raw] = ["get-64", "raw-get-64"].map(|case| {
        let [short, long] = [TASKS_SHORT, TASKS_LONG].map(|ops| {
            let args = [ops.to_string(), server.url()];
            callgrind.count_cache(&format!("{case}-{ops}"), case, &args)
        });
        let units = TASKS_LONG - TASKS_SHORT;
        (
            per_unit(short.instructions, long.instructions, units),
            per_unit(short.d1_misses, long.d1_misses, units),
        )
    });
    println!(
        "{:<40} redstream {:>9.0} instr/op   raw redis-rs {:>9.0} instr/op   ratio {:.2}x",
        "get, 64 tasks",
        ours.0,
        raw.0,
        ours.0 / raw.0
    );
    println!(
        "{:<40} redstream {:>9.1} misses/op  raw redis-rs {:>9.1} misses/op  ratio {:.2}x",
        "get, 64 tasks: L1 data cache misses",
        ours.1,
        raw.1,
        ours.1 / raw.1
    );
    counted
}
