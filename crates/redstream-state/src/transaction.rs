//! [`Transaction`]: puts, deletes and increments applied all together or not at all.
//!
//! Redis's `MULTI`/`EXEC` applies a group of commands without any other client's command in
//! between, but it does not roll back: if one command fails while `EXEC` runs (an `INCRBY` on
//! a key holding text, say), the others still take effect. So a transaction with increments
//! first `WATCH`es their keys, reads them and checks, in order, that every increment will
//! succeed (the key is absent or holds an integer, and the sum does not overflow); only then
//! does it queue the writes and send `EXEC`. If another client changed a watched key in
//! between, `EXEC` does nothing and the whole transaction is tried again, up to
//! [`update_max_attempts`](crate::StateConfig::update_max_attempts) times. `MULTI` itself goes
//! in the same round trip as the reads and its reply is checked before any write is sent: a
//! user whose ACL refuses `MULTI` gets an error and nothing is written (a pipelined `MULTI`
//! that is refused would let the writes behind it run one by one).
//!
//! A transaction of only puts and deletes needs no `WATCH`: it is one round trip, a script of
//! the store's own (with the guarantees of core's `redstream_core::atomic`) that checks the user
//! may run every command before it runs any, and that Redis refuses as a whole when it is out
//! of memory.
//!
//! The memory backend checks and applies the same way, under its lock.

use std::collections::HashMap;
use std::time::Duration;

use redstream_core::{Error, ErrorKind, Result};
use serde::Serialize;

use crate::value::encode;

/// A group of writes applied atomically by
/// [`StateStore::transaction`](crate::StateStore::transaction): all of them, or, if any would
/// fail, none.
///
/// The builder methods never fail: a value that cannot be encoded, or an empty key, is
/// reported by `transaction`, which then applies nothing.
///
/// ```no_run
/// # async fn demo(store: redstream_state::StateStore) -> redstream_state::Result<()> {
/// use redstream_state::Transaction;
///
/// let mut tx = Transaction::new();
/// tx.put("order:42", "paid")
///     .incr_by("orders:paid", 1)
///     .incr_by("revenue_cents", 9_999)
///     .delete("cart:42");
/// let increments = store.transaction(tx).await?;
/// println!("orders paid: {}, revenue: {}", increments[0], increments[1]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Transaction {
    pub(crate) ops: Vec<TxOp>,
    /// The first builder error, reported when the transaction is applied.
    pub(crate) error: Option<Error>,
}

/// One write of a transaction, with its value already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxOp {
    /// `SET key value`, with the given TTL or, for `None`, the store's implicit one.
    Put {
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    /// `DEL key`.
    Delete { key: String },
    /// `INCRBY key by`; a key it creates gets the store's implicit TTL.
    IncrBy { key: String, by: i64 },
}

impl TxOp {
    pub(crate) fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } | Self::IncrBy { key, .. } => key,
        }
    }
}

impl Transaction {
    /// An empty transaction.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under `key` with the store's default TTL, like
    /// [`StateStore::put`](crate::StateStore::put).
    pub fn put<V: Serialize>(&mut self, key: &str, value: V) -> &mut Self {
        self.push_put(key, &value, None)
    }

    /// Stores `value` under `key`, expiring after `ttl`.
    pub fn put_with_ttl<V: Serialize>(&mut self, key: &str, value: V, ttl: Duration) -> &mut Self {
        if let Err(err) = crate::config::validate_ttl(&format!("TTL for key {key:?}"), ttl) {
            self.fail(err);
        }
        self.push_put(key, &value, Some(ttl))
    }

    /// Deletes `key` (nothing happens if it does not exist).
    pub fn delete(&mut self, key: &str) -> &mut Self {
        self.check_key(key);
        self.ops.push(TxOp::Delete {
            key: key.to_owned(),
        });
        self
    }

    /// Adds `by` (which may be negative) to the integer under `key`; an absent key counts
    /// as 0. The new value is in the result of
    /// [`StateStore::transaction`](crate::StateStore::transaction).
    pub fn incr_by(&mut self, key: &str, by: i64) -> &mut Self {
        self.check_key(key);
        self.ops.push(TxOp::IncrBy {
            key: key.to_owned(),
            by,
        });
        self
    }

    /// Adds 1 to the integer under `key`.
    pub fn incr(&mut self, key: &str) -> &mut Self {
        self.incr_by(key, 1)
    }

    /// Subtracts 1 from the integer under `key`.
    pub fn decr(&mut self, key: &str) -> &mut Self {
        self.incr_by(key, -1)
    }

    /// The number of writes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there is no write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn push_put<V: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &V,
        ttl: Option<Duration>,
    ) -> &mut Self {
        self.check_key(key);
        match encode(|| format!("key {key:?}"), value) {
            Ok(value) => self.ops.push(TxOp::Put {
                key: key.to_owned(),
                value,
                ttl,
            }),
            Err(err) => self.fail(err),
        }
        self
    }

    fn check_key(&mut self, key: &str) {
        if let Err(err) = check_key(key) {
            self.fail(err);
        }
    }

    fn fail(&mut self, err: Error) {
        self.error.get_or_insert(err);
    }

    /// The writes, or the first builder error.
    pub(crate) fn into_ops(self) -> Result<Vec<TxOp>> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(self.ops),
        }
    }
}

/// A key given by the caller: any non-empty text.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_input("key \"\"", "a key must not be empty"));
    }
    Ok(())
}

/// What a key holds before a transaction's increment touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    Absent,
    Int(i64),
    /// A string that is not an integer Redis can increment.
    NotInteger,
    /// A value of another type (a hash).
    WrongType,
}

impl Known {
    /// What a stored string means to `INCRBY`.
    pub(crate) fn of_string(bytes: &[u8]) -> Self {
        parse_redis_int(bytes).map_or(Self::NotInteger, Self::Int)
    }
}

/// The outcome of a transaction, computed before anything is applied.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The new value of each increment, in order.
    pub(crate) results: Vec<i64>,
    /// For each op: whether it is an increment that creates its key (which then gets the
    /// implicit TTL).
    pub(crate) creates: Vec<bool>,
}

/// Runs the transaction on what its keys hold, without applying it, and fails the way the
/// first failing increment would. `initial` says what an incremented key holds before the
/// transaction; `target` names a key in errors.
pub(crate) fn plan(
    ops: &[TxOp],
    initial: impl Fn(&str) -> Known,
    target: impl Fn(&str) -> String,
) -> Result<Plan> {
    let mut state: HashMap<&str, Known> = HashMap::new();
    let mut plan = Plan {
        results: Vec::new(),
        creates: Vec::with_capacity(ops.len()),
    };
    for op in ops {
        let mut creates = false;
        match op {
            TxOp::Put { key, value, .. } => {
                state.insert(key, Known::of_string(value));
            }
            TxOp::Delete { key } => {
                state.insert(key, Known::Absent);
            }
            TxOp::IncrBy { key, by } => {
                let before = *state.entry(key).or_insert_with(|| initial(key));
                let current = match before {
                    Known::Absent => {
                        creates = true;
                        0
                    }
                    Known::Int(n) => n,
                    Known::NotInteger => {
                        return Err(not_an_integer("INCRBY", &target(key)));
                    }
                    Known::WrongType => return Err(wrong_type("INCRBY", &target(key))),
                };
                let next = current
                    .checked_add(*by)
                    .ok_or_else(|| overflow("INCRBY", &target(key)))?;
                state.insert(key, Known::Int(next));
                plan.results.push(next);
            }
        }
        plan.creates.push(creates);
    }
    Ok(plan)
}

/// Parses `bytes` as `INCRBY` does (Redis's `string2ll`): an optional `-`, then digits without
/// a leading zero (except `0` itself), fitting an `i64`; no spaces, no `+`.
pub(crate) fn parse_redis_int(bytes: &[u8]) -> Option<i64> {
    if bytes == b"0" {
        return Some(0);
    }
    let digits = match bytes.split_first() {
        Some((b'-', rest)) => rest,
        _ => bytes,
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    text.parse().ok()
}

/// The error Redis gives for an increment of a non-integer, naming the key.
pub(crate) fn not_an_integer(operation: &'static str, target: &str) -> Error {
    Error::backend(
        ErrorKind::Server,
        operation,
        target.to_owned(),
        "ERR value is not an integer or out of range (nothing was changed)",
    )
}

/// The error Redis gives for a key of another type, naming the key.
pub(crate) fn wrong_type(operation: &'static str, target: &str) -> Error {
    Error::backend(
        ErrorKind::WrongType,
        operation,
        target.to_owned(),
        "WRONGTYPE Operation against a key holding the wrong kind of value (nothing was changed)",
    )
}

/// The error Redis gives for an overflowing increment, naming the key.
pub(crate) fn overflow(operation: &'static str, target: &str) -> Error {
    Error::backend(
        ErrorKind::Server,
        operation,
        target.to_owned(),
        "ERR increment or decrement would overflow (nothing was changed)",
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        for (text, expected) in [
            ("0", Some(0)),
            ("42", Some(42)),
            ("-42", Some(-42)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-0", None),
            ("007", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("", None),
            ("-", None),
            ("1.0", None),
            ("\"1\"", None),
        ] {
            assert_eq!(parse_redis_int(text.as_bytes()), expected, "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn every_i64_round_trips_through_its_json(n in any::<i64>()) {
            let json = serde_json::to_vec(&n).unwrap();
            prop_assert_eq!(parse_redis_int(&json), Some(n));
        }
    }

    fn incr(key: &str, by: i64) -> TxOp {
        TxOp::IncrBy {
            key: key.into(),
            by,
        }
    }

    #[test]
    fn plans_follow_the_order_of_the_writes() {
        let ops = vec![
            incr("a", 2),
            TxOp::Put {
                key: "b".into(),
                value: b"10".to_vec(),
                ttl: None,
            },
            incr("b", 5),
            TxOp::Delete { key: "a".into() },
            incr("a", 1),
            incr("c", -1),
        ];
        let initial = |key: &str| {
            if key == "c" {
                Known::Int(7)
            } else {
                Known::Absent
            }
        };
        let plan = plan(&ops, initial, str::to_owned).unwrap();
        assert_eq!(plan.results, vec![2, 15, 1, 6]);
        assert_eq!(plan.creates, vec![true, false, false, false, true, false]);
    }

    #[test]
    fn a_failing_increment_fails_the_plan_and_names_the_key() {
        let text = TxOp::Put {
            key: "t".into(),
            value: b"\"x\"".to_vec(),
            ttl: None,
        };
        let cases = [
            (vec![text, incr("t", 1)], ErrorKind::Server, "t"),
            (vec![incr("h", 1)], ErrorKind::WrongType, "h"),
            (vec![incr("max", 1)], ErrorKind::Server, "max"),
        ];
        for (ops, kind, key) in cases {
            let initial = |k: &str| match k {
                "h" => Known::WrongType,
                "max" => Known::Int(i64::MAX),
                _ => Known::Absent,
            };
            let err = plan(&ops, initial, |k| format!("key {k:?}")).unwrap_err();
            assert_eq!(err.kind(), kind, "{err}");
            assert!(err.to_string().contains(&format!("key {key:?}")), "{err}");
        }
    }

    #[test]
    fn builder_errors_are_kept_for_commit() {
        let mut tx = Transaction::new();
        tx.put("ok", 1).put("", 2).incr("n");
        let err = tx.into_ops().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("key \"\""), "{err}");
        let mut tx = Transaction::new();
        tx.put_with_ttl("k", 1, Duration::ZERO);
        assert!(tx.into_ops().unwrap_err().to_string().contains("TTL"));
    }
}
