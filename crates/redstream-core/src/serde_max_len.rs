//! Serde for the `max_stream_length` fields of configuration files: one meaning everywhere.
//!
//! A stream's length limit is a `usize` in every config (the transport's
//! `RedisConfig::max_stream_length` and `TransportOptions::max_stream_lengths`, the sink's
//! `SinkConfig::max_stream_length`): `0` means no limit, any other `n` trims the stream with
//! `XADD ... MAXLEN ~ n`. `usize` keeps the seed's struct literal (`max_stream_length: 10000`)
//! compiling; `0` for none is the seed's own convention. In a file the field may also be
//! absent or `null`, both meaning `0`. Use it with
//! `#[serde(deserialize_with = "redstream_core::serde_max_len::deserialize")]`.

use serde::{Deserialize, Deserializer};

/// Reads a length limit: a number, or `null` for none (`0`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(Option::<usize>::deserialize(d)?.unwrap_or(0))
}

/// The `MAXLEN ~` bound of a length limit: `None` for `0` (no limit).
#[must_use]
pub fn trim_bound(max_stream_length: usize) -> Option<usize> {
    (max_stream_length > 0).then_some(max_stream_length)
}
