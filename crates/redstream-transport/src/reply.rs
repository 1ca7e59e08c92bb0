//! The one parser of Redis replies in the crate: stream entries, `XREAD`/`XREADGROUP` and
//! `XAUTOCLAIM` replies, and the maps and lists of `XINFO`, `XPENDING` and `TIME`, from redis-rs
//! [`Value`]s in RESP2 or RESP3.
//!
//! Hand parsing is kept for what redis-rs's typed replies lose: the exact bytes of field names
//! and values, nil entries (`XREADGROUP ... 0` and Redis 6.2's `XAUTOCLAIM` answer a pending
//! entry that was deleted with nil fields), and `XAUTOCLAIM`'s list of deleted ids. Nothing here
//! panics: a reply of an unexpected shape is an error message or `None`.

use redis::Value;

/// The fields of a stream entry as written: names and values, raw bytes, in order.
pub(crate) type RawFields = Vec<(Vec<u8>, Vec<u8>)>;

/// One stream entry: its id and its field/value pairs, or `None` when the entry was deleted
/// while pending.
pub(crate) struct RawEntry {
    pub(crate) id: String,
    pub(crate) fields: Option<RawFields>,
}

/// Bytes of a string-like value.
pub(crate) fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        Value::Attribute { data, .. } => bytes(*data),
        _ => None,
    }
}

/// A string-like value that is UTF-8.
pub(crate) fn string(value: Value) -> Option<String> {
    bytes(value).and_then(|b| String::from_utf8(b).ok())
}

/// An integer, sent as a number or as text.
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Attribute { data, .. } => int(data),
        _ => None,
    }
}

/// A non-negative integer; `None` for nil, negative numbers (Redis's "unknown") and text that
/// is not a number.
pub(crate) fn count(value: &Value) -> Option<u64> {
    int(value).and_then(|n| u64::try_from(n).ok())
}

/// Text of a string-like value (lossy UTF-8).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        Value::Int(n) => Some(n.to_string()),
        Value::Attribute { data, .. } => text(data),
        _ => None,
    }
}

/// The items of an array or a set.
pub(crate) fn sequence(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Attribute { data, .. } => sequence(data),
        _ => None,
    }
}

/// A RESP3 map, or a RESP2 flat list of names and values, as pairs.
pub(crate) fn map(value: &Value) -> Option<Vec<(String, &Value)>> {
    match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| Some((text(k)?, v))).collect(),
        Value::Attribute { data, .. } => map(data),
        other => {
            let flat = sequence(other)?;
            if flat.len() % 2 != 0 {
                return None;
            }
            flat.chunks_exact(2)
                .map(|pair| Some((text(&pair[0])?, &pair[1])))
                .collect()
        }
    }
}

/// The value of `name` in a [`map`].
pub(crate) fn field<'a>(fields: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn pair_bytes(id: &str, name: Value, value: Value) -> Result<(Vec<u8>, Vec<u8>), String> {
    let name = bytes(name).ok_or_else(|| format!("entry {id}: a field name is not a string"))?;
    let value = bytes(value).ok_or_else(|| format!("entry {id}: a field value is not a string"))?;
    Ok((name, value))
}

/// One entry, `[id, [field, value, ...]]` (or fields as a RESP3 map, or nil).
pub(crate) fn entry(value: Value) -> Result<RawEntry, String> {
    let Value::Array(parts) = value else {
        return Err(format!("a stream entry is not an array: {value:?}"));
    };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("a stream entry is not an [id, fields] pair".to_owned());
    };
    let id = string(id).ok_or("a stream entry id is not a string")?;
    let fields = match fields {
        Value::Nil => None,
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(format!(
                    "entry {id} has an odd number of field names and values"
                ));
            }
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                pairs.push(pair_bytes(&id, name, value)?);
            }
            Some(pairs)
        }
        Value::Map(map) => Some(
            map.into_iter()
                .map(|(name, value)| pair_bytes(&id, name, value))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(format!(
                "entry {id} has fields of an unexpected shape: {other:?}"
            ));
        }
    };
    Ok(RawEntry { id, fields })
}

/// A list of entries (`XRANGE`, `XREVRANGE`, and the middle of `XAUTOCLAIM`).
pub(crate) fn entries(value: Value) -> Result<Vec<RawEntry>, String> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(entry).collect(),
        other => Err(format!(
            "a list of stream entries is not an array: {other:?}"
        )),
    }
}

/// An `XREAD`/`XREADGROUP` reply: entries per stream key. Nil (nothing new) is empty.
pub(crate) fn read_reply(value: Value) -> Result<Vec<(String, Vec<RawEntry>)>, String> {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(map) => map,
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    match (pair.next(), pair.next()) {
                        (Some(key), Some(entries)) => Ok((key, entries)),
                        _ => Err("a stream reply is not a [key, entries] pair".to_owned()),
                    }
                }
                other => Err(format!(
                    "a stream reply is not a [key, entries] pair: {other:?}"
                )),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("unexpected XREADGROUP reply: {other:?}")),
    };
    pairs
        .into_iter()
        .map(|(key, entries_value)| {
            let key = string(key).ok_or("a stream key is not a string")?;
            Ok((key, entries(entries_value)?))
        })
        .collect()
}

/// A list of ids; nil is empty.
fn ids(value: Option<Value>) -> Result<Vec<String>, String> {
    match value {
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(Value::Array(ids)) => ids
            .into_iter()
            .map(|id| string(id).ok_or_else(|| "an entry id is not a string".to_owned()))
            .collect(),
        Some(other) => Err(format!("a list of ids is not an array: {other:?}")),
    }
}

/// An `XCLAIM` reply: the claimed entries. Redis 6.2 answers an entry deleted from the stream
/// with a bare nil in the list, where 7.0 and Valkey drop it from the pending list and leave it
/// out; such a nil is skipped.
pub(crate) fn claimed(value: Value) -> Result<Vec<RawEntry>, String> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .filter(|item| !matches!(item, Value::Nil))
            .map(entry)
            .collect(),
        other => entries(other),
    }
}

/// An `XAUTOCLAIM ... JUSTID` reply: `[cursor, [id...], [deleted id...]]` (the third part is
/// Redis 7's; empty on 6.2).
pub(crate) fn autoclaim_ids(value: Value) -> Result<(String, Vec<String>, Vec<String>), String> {
    let Value::Array(parts) = value else {
        return Err(format!("unexpected XAUTOCLAIM reply: {value:?}"));
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .and_then(string)
        .ok_or("the XAUTOCLAIM cursor is missing")?;
    let claimed = ids(parts.next())?;
    let deleted = ids(parts.next())?;
    Ok((cursor, claimed, deleted))
}

/// The first value of the field `name` among an entry's fields, as text (lossy UTF-8).
pub(crate) fn text_field(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k.as_slice() == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn read_reply_resp2_and_resp3_and_nil() {
        let entries = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("event"), bulk("{}")]),
            ]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("s"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("s"), entries)]);
        for reply in [resp2, resp3] {
            let parsed = read_reply(reply).unwrap();
            assert_eq!(parsed.len(), 1);
            assert_eq!(parsed[0].0, "s");
            assert_eq!(parsed[0].1[0].id, "1-0");
            assert_eq!(
                parsed[0].1[0].fields.as_deref(),
                Some(&[(b"event".to_vec(), b"{}".to_vec())][..])
            );
            assert!(parsed[0].1[1].fields.is_none());
        }
        assert!(read_reply(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            Value::Int(3),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![bulk("s"), Value::Int(1)])]),
            Value::Array(vec![Value::Array(vec![
                bulk("s"),
                Value::Array(vec![Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("odd")]),
                ])]),
            ])]),
        ] {
            assert!(read_reply(bad).is_err());
        }
        assert!(autoclaim_ids(Value::Nil).is_err());
        assert!(autoclaim_ids(Value::Array(vec![])).is_err());
        assert!(autoclaim_ids(Value::Int(1)).is_err());
        assert!(entry(Value::Int(3)).is_err());
    }

    #[test]
    fn claimed_entries_skip_the_nils_of_deleted_ones() {
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("a"), bulk("b")])]),
            Value::Nil,
            Value::Array(vec![bulk("3-0"), Value::Array(vec![bulk("c"), bulk("d")])]),
        ]);
        let ids: Vec<String> = claimed(reply).unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["1-0", "3-0"]);
        assert!(claimed(Value::Nil).unwrap().is_empty());
        assert!(claimed(Value::Array(vec![Value::Int(1)])).is_err());
        assert!(claimed(Value::Int(1)).is_err());
    }

    #[test]
    fn autoclaim_with_and_without_deleted_ids() {
        let v62 = Value::Array(vec![bulk("5-0"), Value::Array(vec![])]);
        let (cursor, ids, deleted) = autoclaim_ids(v62).unwrap();
        assert_eq!((cursor.as_str(), ids.len(), deleted.len()), ("5-0", 0, 0));
        let justid = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![bulk("1-0"), bulk("2-0")]),
            Value::Array(vec![bulk("3-0")]),
        ]);
        let (cursor, ids, deleted) = autoclaim_ids(justid).unwrap();
        assert_eq!((cursor.as_str(), ids.len(), deleted.len()), ("0-0", 2, 1));
    }

    #[test]
    fn resp2_and_resp3_maps_read_alike() {
        let resp2 = Value::Array(vec![bulk("name"), bulk("g"), bulk("lag"), Value::Nil]);
        let resp3 = Value::Map(vec![
            (Value::SimpleString("name".into()), bulk("g")),
            (Value::SimpleString("lag".into()), Value::Nil),
        ]);
        for value in [resp2, resp3] {
            let fields = map(&value).unwrap();
            assert_eq!(field(&fields, "name").and_then(text).as_deref(), Some("g"));
            assert_eq!(field(&fields, "lag").and_then(count), None);
        }
        assert!(map(&Value::Array(vec![Value::Nil])).is_none());
        assert_eq!(count(&Value::Int(-1)), None);
        assert_eq!(count(&bulk("7")), Some(7));
    }
}
