//! How a dead letter's `event` field holds the fields of an entry that is not an envelope, byte
//! for byte: a name or value that is valid UTF-8 is a JSON string, any other is an object
//! `{"base64": "<standard base64, padded>"}`. A JSON string never holds bytes that are not
//! UTF-8, so the two cannot be confused, and text stays readable in `redis-cli` and in any
//! language's JSON reader.
//!
//! | entry | `event` |
//! |---|---|
//! | raw (a raw subscription's, or one with a decoder) | `[[name, value], ...]` in order, repeats kept |
//! | undecodable | `{name: value, ...}`, a repeated name's values in an array; when a name is not UTF-8, the array of pairs instead |

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

/// The key of the object that holds bytes that are not UTF-8.
const BASE64: &str = "base64";

/// One name or value: a JSON string when it is UTF-8, `{"base64": "..."}` otherwise.
pub(crate) fn encode(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => {
            let mut object = Map::new();
            object.insert(BASE64.to_owned(), Value::String(STANDARD.encode(bytes)));
            Value::Object(object)
        }
    }
}

/// The bytes of one name or value written by [`encode`]; `None` for anything else.
pub(crate) fn decode(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::String(text) => Some(text.clone().into_bytes()),
        Value::Object(object) if object.len() == 1 => {
            STANDARD.decode(object.get(BASE64)?.as_str()?).ok()
        }
        _ => None,
    }
}

/// A JSON array of the `[name, value]` pairs, in order.
pub(crate) fn pairs(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let pairs: Vec<Value> = fields
        .iter()
        .map(|(name, value)| Value::Array(vec![encode(name), encode(value)]))
        .collect();
    Value::Array(pairs).to_string()
}

/// A JSON object of the fields (a repeated name's values in an array, in order), or the array
/// of pairs when a name is not UTF-8 (an object key must be text).
pub(crate) fn object(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut map = Map::new();
    for (name, value) in fields {
        let Ok(name) = std::str::from_utf8(name) else {
            return pairs(fields);
        };
        let value = encode(value);
        match map.get_mut(name) {
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                map.insert(name.to_owned(), value);
            }
        }
    }
    Value::Object(map).to_string()
}

/// The fields held in a dead letter's `event` field, as bytes: the pairs of an array (either
/// body), or the names and values of an undecodable entry's object (a repeated name's values in
/// turn). `None` when the text is neither; `raw` accepts the array only.
pub(crate) fn fields(text: &str, raw: bool) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    match serde_json::from_str(text).ok()? {
        Value::Array(pairs) => pairs
            .iter()
            .map(|pair| match pair.as_array()?.as_slice() {
                [name, value] => Some((decode(name)?, decode(value)?)),
                _ => None,
            })
            .collect(),
        Value::Object(object) if !raw => {
            let mut fields = Vec::new();
            for (name, value) in object {
                match value {
                    Value::Array(values) => {
                        for value in &values {
                            fields.push((name.clone().into_bytes(), decode(value)?));
                        }
                    }
                    value => fields.push((name.into_bytes(), decode(&value)?)),
                }
            }
            Some(fields)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b"event_id".to_vec(), b"e1".to_vec()),
            (b"blob".to_vec(), vec![0xff, 0x00, b'x', 0xc3]),
            (b"event_id".to_vec(), b"e2".to_vec()),
            (b"nul".to_vec(), b"a\0b".to_vec()),
        ]
    }

    #[test]
    fn text_stays_text_and_other_bytes_are_base64() {
        assert_eq!(encode(b"caf\xc3\xa9"), Value::String("café".to_owned()));
        assert_eq!(encode(b"a\0b"), Value::String("a\0b".to_owned()));
        assert_eq!(
            encode(&[0xff, 0x00]),
            serde_json::json!({ "base64": "/wA=" })
        );
        assert_eq!(
            decode(&serde_json::json!({ "base64": "/wA=" })),
            Some(vec![0xff, 0])
        );
        assert_eq!(decode(&serde_json::json!({ "base64": "!" })), None);
        assert_eq!(
            decode(&serde_json::json!({ "base64": "/wA=", "x": 1 })),
            None
        );
        assert_eq!(decode(&serde_json::json!(1)), None);
    }

    #[test]
    fn pairs_keep_every_byte_in_order() {
        let text = pairs(&binary());
        assert_eq!(
            text,
            r#"[["event_id","e1"],["blob",{"base64":"/wB4ww=="}],["event_id","e2"],["nul","a\u0000b"]]"#
        );
        assert_eq!(fields(&text, true).unwrap(), binary());
        assert!(fields("{}", true).is_none());
        assert!(fields(r#"[["a"]]"#, true).is_none());
    }

    #[test]
    fn objects_keep_every_byte_and_fall_back_to_pairs_for_binary_names() {
        let text = object(&binary());
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["event_id"], serde_json::json!(["e1", "e2"]));
        assert_eq!(json["blob"], serde_json::json!({ "base64": "/wB4ww==" }));
        let mut back = fields(&text, false).unwrap();
        let mut expected = binary();
        back.sort();
        expected.sort();
        assert_eq!(back, expected);

        let named = vec![(vec![0xfe], b"v".to_vec()), (b"k".to_vec(), vec![0x80])];
        let text = object(&named);
        assert!(text.starts_with('['), "{text}");
        assert_eq!(fields(&text, false).unwrap(), named);
    }
}
