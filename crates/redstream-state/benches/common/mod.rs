//! What the state store's two benches share: the value both sides store, its keys, and the raw
//! redis-rs commands that do the store's writes by hand. Each builder takes the user's keys and
//! values and prefixes and encodes them itself, in the caller's timed loop, as the store must.

use redis::{Cmd, Pipeline, ScriptInvocation};
use serde::{Deserialize, Serialize};

/// Keys the benches cycle through.
const KEYS: u64 = 1_000;

/// TTL of the `put_many_with_ttl` cases.
pub(crate) const TTL_MS: u64 = 3_600_000;

/// The checkpoint both sides write.
pub(crate) const CHECKPOINT: &str = "orders";

/// A seed-sized value: an order with a few fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Order {
    order_id: String,
    total: f64,
    items: u32,
}

/// The `n`th order.
pub(crate) fn order(n: u64) -> Order {
    Order {
        order_id: n.to_string(),
        total: 99.99,
        items: 3,
    }
}

/// The user's key of the `n`th operation: `order:<n mod 1,000>`.
pub(crate) fn key(n: u64) -> String {
    format!("order:{}", n % KEYS)
}

/// Raw redis-rs's connection for the benches: multiplexed, with the store's default response
/// timeout (5 s), as a call of the store gives up after it: the same promise, and the same
/// timer per call.
pub(crate) async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(std::time::Duration::from_secs(5))),
        )
        .await
        .unwrap()
}

/// Raw redis-rs's `get::<Order>`: `GET` of `redis_key` (the caller prefixed it) and
/// `serde_json::from_slice`; the order is kept from being optimised away.
pub(crate) async fn raw_get(conn: &mut impl redis::aio::ConnectionLike, redis_key: String) {
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(redis_key)
        .query_async(conn)
        .await
        .unwrap();
    let found: Order = serde_json::from_slice(&bytes.unwrap()).unwrap();
    std::hint::black_box(found);
}

/// `items` with their Redis keys (the store's plain layout, `prefix:key`) and JSON values.
fn encoded(
    prefix: &str,
    items: impl IntoIterator<Item = (String, Order)>,
) -> impl Iterator<Item = (String, Vec<u8>)> {
    items.into_iter().map(move |(key, value)| {
        (
            format!("{prefix}:{key}"),
            serde_json::to_vec(&value).unwrap(),
        )
    })
}

/// `put_many`: one `MSET`.
pub(crate) fn mset(prefix: &str, items: impl IntoIterator<Item = (String, Order)>) -> Cmd {
    let mut cmd = redis::cmd("MSET");
    for (key, value) in encoded(prefix, items) {
        cmd.arg(key).arg(value);
    }
    cmd
}

/// `put_many_with_ttl` as `SET .. PX` per key in `MULTI`/`EXEC`: atomic against other clients,
/// but a refused `MULTI` lets the `SET`s run alone and a failing `SET` does not stop the others.
pub(crate) fn set_px_multi(
    prefix: &str,
    items: impl IntoIterator<Item = (String, Order)>,
) -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (key, value) in encoded(prefix, items) {
        pipe.cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(TTL_MS)
            .ignore();
    }
    pipe
}

/// A plain Lua loop of `SET .. PX`: nothing in between, but no check before the first write
/// (a refused `SET` stops it halfway).
static SET_PX_LOOP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i], 'PX', ARGV[#ARGV]) end",
    )
});

/// `put_many_with_ttl` as [`SET_PX_LOOP`].
pub(crate) fn set_px_lua(
    prefix: &str,
    items: impl IntoIterator<Item = (String, Order)>,
) -> ScriptInvocation<'static> {
    let mut invocation = SET_PX_LOOP.prepare_invoke();
    for (key, value) in encoded(prefix, items) {
        invocation.key(key).arg(value);
    }
    invocation.arg(TTL_MS);
    invocation
}

/// A transaction of puts: the same `SET`s in `MULTI`/`EXEC`.
pub(crate) fn set_multi(
    prefix: &str,
    items: impl IntoIterator<Item = (String, Order)>,
) -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (key, value) in encoded(prefix, items) {
        pipe.cmd("SET").arg(key).arg(value).ignore();
    }
    pipe
}

/// `save_checkpoint` in `MULTI`/`EXEC`: a `SET` per key, `DEL` of the record (`record`, its
/// Redis key), and the record's `HSET` (format, position, time of saving, a `state:<key>`
/// field per key).
pub(crate) fn checkpoint_multi(
    prefix: &str,
    record: &str,
    position: &str,
    items: impl IntoIterator<Item = (String, Order)>,
) -> Pipeline {
    let saved_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut hset = redis::cmd("HSET");
    hset.arg(record)
        .arg("format")
        .arg("1")
        .arg("position")
        .arg(position)
        .arg("saved_at_ms")
        .arg(saved_at_ms.to_string());
    for (key, value) in items {
        let value = serde_json::to_vec(&value).unwrap();
        pipe.cmd("SET")
            .arg(format!("{prefix}:{key}"))
            .arg(&value)
            .ignore();
        hset.arg(format!("state:{key}")).arg(value);
    }
    pipe.cmd("DEL").arg(record).ignore();
    pipe.add_command(hset).ignore();
    pipe
}
