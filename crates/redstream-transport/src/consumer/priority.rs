//! An envelope's priority, read off its JSON text without decoding the envelope.
//!
//! The reader picks each entry's buffer lane from its priority, and the worker that takes the
//! entry decodes it. Decoding in the reader kept a whole read's decoding on one task, with
//! the workers waiting for it. A serde pass that skips everything but the priority
//! (`IgnoredAny`) added 4,583 instructions per consumed entry under callgrind (consume + ack
//! 22,669 without any look at the priority, 27,252 with it); this scan adds about 1,700.
//! [`scan`] walks the text once, skipping strings with `memchr` and everything else byte by
//! byte, and stops at the priority. It gives up (`None`) on anything it is not sure of: a key or a priority written
//! with escapes, a top level that is not an object, text that is not JSON. The caller then
//! asks serde ([`Peek`](super::dispatch::Peek)).
//!
//! Why not a crate: the JSON path readers we found (`gjson`, `sonic-rs`) take `&str` (so a
//! UTF-8 pass first) or bring SIMD parsers much larger than this one question.

use redstream_core::Priority;

/// The priority of the envelope `json`, as decoding it would give when it decodes: the
/// top-level `metadata` object's `priority`, `Normal` when either is missing or `null`.
/// `None` when the text is not plain enough to be sure (see the module docs). What it says of
/// an envelope that does not decode does not matter: such an entry is dead-lettered in
/// whichever lane it waited.
pub(crate) fn scan(json: &[u8]) -> Option<Priority> {
    let mut s = Scanner { json, at: 0 };
    s.expect(b'{')?;
    if s.peek_token()? == b'}' {
        return Some(Priority::Normal);
    }
    loop {
        let key = s.key()?;
        if key == b"metadata" {
            return s.metadata_priority();
        }
        s.skip_value()?;
        match s.next_token()? {
            b',' => {}
            b'}' => return Some(Priority::Normal),
            _ => return None,
        }
    }
}

struct Scanner<'a> {
    json: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    /// The next byte that is not JSON whitespace, without moving past it.
    fn peek_token(&mut self) -> Option<u8> {
        while let Some(&b) = self.json.get(self.at) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    fn next_token(&mut self) -> Option<u8> {
        let b = self.peek_token()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, token: u8) -> Option<()> {
        (self.next_token()? == token).then_some(())
    }

    /// A string's bytes, after its opening quote, if it has no escapes.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        let rest = self.json.get(self.at..)?;
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] == b'\\' {
            return None;
        }
        self.at += end + 1;
        Some(&rest[..end])
    }

    /// Moves past a string, after its opening quote, escapes and all.
    fn skip_string(&mut self) -> Option<()> {
        loop {
            let rest = self.json.get(self.at..)?;
            let end = memchr::memchr2(b'"', b'\\', rest)?;
            if rest[end] == b'"' {
                self.at += end + 1;
                return Some(());
            }
            // A backslash and the byte it escapes (for `\u`, the first of its four digits).
            self.at += end + 2;
        }
    }

    /// An object's key and the colon after it.
    fn key(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let key = self.plain_string()?;
        self.expect(b':')?;
        Some(key)
    }

    /// Moves past one value (the caller saw no token of it yet).
    fn skip_value(&mut self) -> Option<()> {
        match self.next_token()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 1usize;
                while depth > 0 {
                    let b = *self.json.get(self.at)?;
                    self.at += 1;
                    match b {
                        b'"' => self.skip_string()?,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth -= 1,
                        _ => {}
                    }
                }
                Some(())
            }
            // A number, `true`, `false` or `null`: up to the next delimiter.
            _ => {
                while let Some(&b) = self.json.get(self.at) {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.at += 1;
                }
                Some(())
            }
        }
    }

    /// The priority in the `metadata` value the scanner is at.
    fn metadata_priority(&mut self) -> Option<Priority> {
        match self.next_token()? {
            b'{' => {}
            b'n' => {
                return self.json[self.at..]
                    .starts_with(b"ull")
                    .then_some(Priority::Normal);
            }
            _ => return None,
        }
        if self.peek_token()? == b'}' {
            return Some(Priority::Normal);
        }
        loop {
            let key = self.key()?;
            if key == b"priority" {
                return match self.next_token()? {
                    b'"' => match self.plain_string()? {
                        b"low" => Some(Priority::Low),
                        b"normal" => Some(Priority::Normal),
                        b"high" => Some(Priority::High),
                        b"critical" => Some(Priority::Critical),
                        _ => None,
                    },
                    b'n' if self.json[self.at..].starts_with(b"ull") => Some(Priority::Normal),
                    _ => None,
                };
            }
            self.skip_value()?;
            match self.next_token()? {
                b',' => {}
                b'}' => return Some(Priority::Normal),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use redstream_core::wire::{self, EVENT_FIELD};
    use redstream_core::{Event, EventLimits, EventMetadata};
    use serde_json::{Value, json};

    use super::*;
    use crate::consumer::dispatch::Peek;

    /// What decoding the envelope gives, if it decodes.
    fn decoded(json: &[u8]) -> Option<Priority> {
        let fields = [(EVENT_FIELD.as_bytes(), json)];
        wire::decode_stream_entry("1-0", fields, &EventLimits::DEFAULT)
            .ok()
            .map(|event| event.priority())
    }

    #[test]
    fn reads_the_priority_of_envelopes() {
        for priority in Priority::ALL {
            let event = Event::new(
                "order.created",
                json!({"metadata": {"priority": "critical"}, "s": "a \" } ] \\ b", "n": [1, {"x": null}]}),
                EventMetadata::default(),
            )
            .with_priority(priority);
            let json = wire::encode(&event, &EventLimits::DEFAULT).unwrap();
            assert_eq!(scan(json.as_bytes()), Some(priority), "{json}");
        }
        let cases: &[(&str, Option<Priority>)] = &[
            (r#"{"v":1,"id":"x","type":"t"}"#, Some(Priority::Normal)),
            (r#"{}"#, Some(Priority::Normal)),
            (
                r#" { "metadata" : { "priority" : "high" } } "#,
                Some(Priority::High),
            ),
            (r#"{"metadata":null}"#, Some(Priority::Normal)),
            (r#"{"metadata":{}}"#, Some(Priority::Normal)),
            (r#"{"metadata":{"priority":null}}"#, Some(Priority::Normal)),
            (
                r#"{"metadata":{"source":"s","priority":"low"}}"#,
                Some(Priority::Low),
            ),
            (
                r#"{"payload":{"metadata":{"priority":"high"}},"metadata":{}}"#,
                Some(Priority::Normal),
            ),
            // Escapes, in a key or in the priority: serde's to read.
            (r#"{"metad\u0061ta":{"priority":"high"}}"#, None),
            (r#"{"metadata":{"priority":"hi\u0067h"}}"#, None),
            // Not an envelope: whatever the lane, it does not decode.
            (r#"[]"#, None),
            (r#"{"metadata":{"priority":"urgent"}}"#, None),
            (r#"{"metadata":5}"#, None),
            (r#"{"payload":{"#, None),
            (r#"{"metadata":{"priority":"#, None),
            ("", None),
        ];
        for (json, expected) in cases {
            assert_eq!(scan(json.as_bytes()), *expected, "{json}");
        }
    }

    /// A JSON value of any shape, with strings full of what the scanner must skip.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z\"\\\\{}\\[\\],: \u{e9}\u{1F600}]{0,8}".prop_map(Value::String),
            prop::sample::select(vec![
                "low", "normal", "high", "critical", "metadata", "priority"
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["metadata", "priority", "payload", "type", "k"]),
                        inner
                    ),
                    0..4
                )
                .prop_map(|pairs| Value::Object(
                    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        /// Where the scanner answers, it answers as decoding (for an envelope that decodes)
        /// and as serde's peek do; compact or pretty, whatever the payload holds.
        #[test]
        fn agrees_with_decoding_and_with_serde(
            payload in any_json(),
            metadata in any_json(),
            priority in prop::sample::select(Priority::ALL.to_vec()),
            pretty in any::<bool>(),
            first in any::<bool>(),
        ) {
            let mut envelope = serde_json::Map::new();
            let meta = match metadata {
                Value::Object(mut m) => {
                    m.insert("priority".into(), json!(priority));
                    Value::Object(m)
                }
                other => other,
            };
            if first {
                envelope.insert("metadata".into(), meta.clone());
            }
            envelope.insert("v".into(), json!(1));
            envelope.insert("id".into(), json!("e-1"));
            envelope.insert("type".into(), json!("t"));
            envelope.insert("payload".into(), payload);
            if !first {
                envelope.insert("metadata".into(), meta);
            }
            let value = Value::Object(envelope);
            let json = if pretty {
                serde_json::to_vec_pretty(&value).unwrap()
            } else {
                serde_json::to_vec(&value).unwrap()
            };
            if let Some(scanned) = scan(&json) {
                if let Some(decoded) = decoded(&json) {
                    prop_assert_eq!(scanned, decoded);
                }
                let fields = [(EVENT_FIELD.as_bytes().to_vec(), json.clone())];
                prop_assert_eq!(scanned, Peek::of(&fields).priority());
            }
        }

        /// Arbitrary bytes never make it panic.
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = scan(&bytes);
        }
    }
}
