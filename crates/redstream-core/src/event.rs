//! The [`Event`] envelope: what every redstream crate publishes, stores and delivers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Limits applied when events are validated, encoded and decoded.
///
/// The defaults suit most deployments; raise `max_encoded_bytes` for large payloads, keeping in
/// mind that every stream entry lives in Redis memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventLimits {
    /// Longest accepted event type name, in bytes.
    pub max_event_type_len: usize,
    /// Largest accepted encoded envelope (the `event` field), in bytes. Also bounds decoding.
    pub max_encoded_bytes: usize,
    /// Most headers an event may carry.
    pub max_headers: usize,
    /// Longest accepted header name, header value, id or metadata string, in bytes.
    pub max_string_len: usize,
}

impl EventLimits {
    /// The default limits: 256-byte type names, 1 MiB envelopes, 64 headers, 8 KiB strings.
    pub const DEFAULT: Self = Self {
        max_event_type_len: 256,
        max_encoded_bytes: 1024 * 1024,
        max_headers: 64,
        max_string_len: 8 * 1024,
    };

    /// Sets [`max_encoded_bytes`](Self::max_encoded_bytes), the payload size limit.
    #[must_use]
    pub fn with_max_encoded_bytes(mut self, bytes: usize) -> Self {
        self.max_encoded_bytes = bytes;
        self
    }

    /// Sets [`max_event_type_len`](Self::max_event_type_len).
    #[must_use]
    pub fn with_max_event_type_len(mut self, len: usize) -> Self {
        self.max_event_type_len = len;
        self
    }

    /// Checks that every limit is positive.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("max_event_type_len", self.max_event_type_len),
            ("max_encoded_bytes", self.max_encoded_bytes),
            ("max_headers", self.max_headers),
            ("max_string_len", self.max_string_len),
        ];
        for (name, value) in fields {
            if value == 0 {
                return Err(Error::invalid_input(
                    format!("config field limits.{name}"),
                    "must be greater than 0",
                ));
            }
        }
        Ok(())
    }
}

impl Default for EventLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Checks that `name` is a valid event type: non-empty, at most `max_len` bytes, and free of
/// whitespace and control characters (it becomes part of a Redis key and of log lines).
pub fn validate_event_type(name: &str, max_len: usize) -> Result<()> {
    let what = || format!("event type {name:?}");
    if name.is_empty() {
        return Err(Error::invalid_input("event type \"\"", "must not be empty"));
    }
    if name.len() > max_len {
        return Err(Error::invalid_input(
            format!("event type of {} bytes", name.len()),
            format!("must be at most {max_len} bytes"),
        ));
    }
    // Printable ASCII without spaces, the usual case, is valid as it is; only other text needs
    // the Unicode checks.
    if name.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(());
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid_input(
            what(),
            format!("must not contain whitespace or control characters (found {c:?})"),
        ));
    }
    Ok(())
}

fn validate_string(what: &str, value: &str, max_len: usize) -> Result<()> {
    if value.len() > max_len {
        return Err(Error::invalid_input(
            format!("{what} of {} bytes", value.len()),
            format!("must be at most {max_len} bytes"),
        ));
    }
    // ASCII control characters are bytes below 0x20 and 0x7f; other control characters are
    // not ASCII, so text that is all ASCII needs no decoding.
    let control = if value.is_ascii() {
        value.bytes().any(|b| b.is_ascii_control())
    } else {
        value.chars().any(char::is_control)
    };
    if control {
        return Err(Error::invalid_input(
            format!("{what} {value:?}"),
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A unique, time-ordered event identifier.
///
/// New ids are UUIDv7 strings, so ids sort by creation time. Ids read from other writers may be
/// any non-empty string without control characters; they are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// A new UUIDv7 id.
    #[must_use]
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn validate(&self, limits: &EventLimits) -> Result<()> {
        if self.0.is_empty() {
            return Err(Error::invalid_input("event id \"\"", "must not be empty"));
        }
        validate_string("event id", &self.0, limits.max_string_len)
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EventId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let id = Self(s.to_owned());
        id.validate(&EventLimits::DEFAULT)?;
        Ok(id)
    }
}

impl AsRef<str> for EventId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// How urgent an event is. Consumers handle `High` and `Critical` events before `Normal` and
/// `Low` ones when a backlog builds up (see the transport's documentation for how).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background work that may wait.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Handled before `Normal` and `Low`.
    High,
    /// Handled first.
    Critical,
}

impl Priority {
    /// All priorities, lowest first.
    pub const ALL: [Self; 4] = [Self::Low, Self::Normal, Self::High, Self::Critical];

    /// The lowercase name used on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid_input(
                    format!("priority {s:?}"),
                    "expected one of low, normal, high, critical",
                )
            })
    }
}

/// Who sent an event, when, why, and how urgently.
///
/// `EventMetadata::default()` stamps the current time (to the millisecond, the wire format's
/// precision) and leaves everything else empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// When the event was created. On the wire: RFC 3339 with milliseconds, written in UTC
    /// (`Z`); read with any offset (`+02:00`) and normalised to UTC.
    #[serde(with = "rfc3339")]
    pub timestamp: SystemTime,
    /// The service or component that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Groups every event of one business operation or request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// How urgent the event is.
    #[serde(default)]
    pub priority: Priority,
    /// The user on whose behalf the event was produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Free-form string headers, e.g. a W3C `traceparent`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl Default for EventMetadata {
    fn default() -> Self {
        Self {
            timestamp: truncate_to_millis(SystemTime::now()),
            source: None,
            correlation_id: None,
            causation_id: None,
            priority: Priority::Normal,
            user_id: None,
            headers: BTreeMap::new(),
        }
    }
}

impl EventMetadata {
    fn validate(&self, limits: &EventLimits) -> Result<()> {
        let strings = [
            ("source", &self.source),
            ("correlation id", &self.correlation_id),
            ("causation id", &self.causation_id),
            ("user id", &self.user_id),
        ];
        for (what, value) in strings {
            if let Some(value) = value {
                validate_string(what, value, limits.max_string_len)?;
            }
        }
        if self.headers.len() > limits.max_headers {
            return Err(Error::invalid_input(
                format!("{} headers", self.headers.len()),
                format!("an event may carry at most {} headers", limits.max_headers),
            ));
        }
        for (name, value) in &self.headers {
            if name.is_empty() {
                return Err(Error::invalid_input(
                    "header name \"\"",
                    "must not be empty",
                ));
            }
            validate_string("header name", name, limits.max_string_len)?;
            validate_string("header value", value, limits.max_string_len)?;
        }
        Ok(())
    }
}

/// One event: a typed, identified JSON payload with metadata.
///
/// ```
/// use redstream_core::{Event, EventMetadata, Priority};
/// use serde_json::json;
///
/// let event = Event::new("order.created", json!({ "order_id": "12345" }), EventMetadata::default())
///     .with_priority(Priority::High)
///     .with_correlation_id("req-42")
///     .with_header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert_eq!(event.event_type(), "order.created");
/// assert_eq!(event.payload()["order_id"], "12345");
/// event.validate().unwrap();
/// ```
///
/// `Event`'s serde form is the wire envelope (see `docs/wire-format.md`), so a consumer in any
/// language, or `serde_json::from_str::<Event>`, can read the `event` field of a stream entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub(crate) id: EventId,
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) payload: Value,
    #[serde(default)]
    pub(crate) metadata: EventMetadata,
}

impl Event {
    /// A new event with a fresh id.
    ///
    /// The type is not checked here (so the seed-style constructor stays infallible); publishers
    /// call [`validate`](Self::validate), and [`try_new`](Self::try_new) checks at once.
    pub fn new(event_type: impl Into<String>, payload: Value, metadata: EventMetadata) -> Self {
        Self {
            id: EventId::new(),
            event_type: event_type.into(),
            payload,
            metadata,
        }
    }

    /// Like [`new`](Self::new) with default metadata, but validates the event type at once.
    pub fn try_new(event_type: impl Into<String>, payload: Value) -> Result<Self> {
        let event = Self::new(event_type, payload, EventMetadata::default());
        validate_event_type(&event.event_type, EventLimits::DEFAULT.max_event_type_len)?;
        Ok(event)
    }

    /// Builds an event from all of its parts, e.g. to re-create one read elsewhere.
    pub fn from_parts(
        id: EventId,
        event_type: impl Into<String>,
        payload: Value,
        metadata: EventMetadata,
    ) -> Self {
        Self {
            id,
            event_type: event_type.into(),
            payload,
            metadata,
        }
    }

    /// The unique id.
    #[must_use]
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// The event type, e.g. `order.created`.
    #[must_use]
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The JSON payload.
    #[must_use]
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// Deserializes the payload into `T`.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.payload).map_err(|err| {
            Error::invalid_input(
                format!("payload of event {} ({})", self.id, self.event_type),
                err.to_string(),
            )
        })
    }

    /// The metadata.
    #[must_use]
    pub fn metadata(&self) -> &EventMetadata {
        &self.metadata
    }

    /// The metadata, mutably.
    pub fn metadata_mut(&mut self) -> &mut EventMetadata {
        &mut self.metadata
    }

    /// Shorthand for `metadata().priority`.
    #[must_use]
    pub fn priority(&self) -> Priority {
        self.metadata.priority
    }

    /// Splits the event into id, type, payload and metadata.
    #[must_use]
    pub fn into_parts(self) -> (EventId, String, Value, EventMetadata) {
        (self.id, self.event_type, self.payload, self.metadata)
    }

    /// Replaces the id (for example to keep an id assigned upstream).
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Sets the producing service.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.metadata.source = Some(source.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id (the id of the event that caused this one).
    #[must_use]
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.causation_id = Some(id.into());
        self
    }

    /// Marks this event as caused by `cause`: copies its correlation id (or uses its id) and sets
    /// the causation id to its id.
    #[must_use]
    pub fn caused_by(mut self, cause: &Event) -> Self {
        self.metadata.causation_id = Some(cause.id.to_string());
        self.metadata.correlation_id = Some(
            cause
                .metadata
                .correlation_id
                .clone()
                .unwrap_or_else(|| cause.id.to_string()),
        );
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.metadata.priority = priority;
        self
    }

    /// Sets the user id.
    #[must_use]
    pub fn with_user_id(mut self, user_id: impl Into<String>) -> Self {
        self.metadata.user_id = Some(user_id.into());
        self
    }

    /// Adds (or replaces) a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the timestamp.
    ///
    /// The wire format keeps milliseconds, so the time is truncated to a whole millisecond here
    /// and an event compares equal to itself after a round trip through a stream.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.metadata.timestamp = truncate_to_millis(timestamp);
        self
    }

    /// Checks the event against the default [`EventLimits`].
    pub fn validate(&self) -> Result<()> {
        self.validate_with(&EventLimits::DEFAULT)
    }

    /// Checks the event type, id and metadata strings against `limits`. The payload's size is
    /// checked when the event is encoded, where it costs nothing extra.
    pub fn validate_with(&self, limits: &EventLimits) -> Result<()> {
        validate_event_type(&self.event_type, limits.max_event_type_len)?;
        self.id.validate(limits)?;
        self.metadata.validate(limits)
    }
}

/// `t` without its sub-millisecond part (times before 1970 are left as they are).
pub(crate) fn truncate_to_millis(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => {
            let extra = since.subsec_nanos() % 1_000_000;
            t - std::time::Duration::from_nanos(u64::from(extra))
        }
        Err(_) => t,
    }
}

/// The latest instant the wire format writes, 9999-12-31T23:59:59Z, in seconds since the Unix
/// epoch: RFC 3339 has four-digit years.
pub(crate) const MAX_WIRE_SECS: u64 = 253_402_300_799;

/// The shape of a timestamp the wire format reads, named when one is refused for its shape.
const RFC3339_SHAPE: &str = "expected YYYY-MM-DDThh:mm:ss[.fraction] followed by Z or an offset \
                             from -23:59 to +23:59 such as +02:00";

/// Parses an RFC 3339 timestamp and returns the instant it names, in UTC.
///
/// The `time` crate's RFC 3339 parser reads it: `YYYY-MM-DD`, then `T`, `t` or a space (RFC 3339
/// section 5.6 allows both of the latter), `hh:mm:ss`, an optional fraction of one or more digits
/// (kept to the nanosecond, further digits dropped), and a zone: `Z`, `z` or a numeric offset
/// `+hh:mm` / `-hh:mm` (hours 00-23, minutes 00-59; `-00:00` is UTC). Before it,
/// [`legacy_rfc3339`] adapts the few spellings redstream has always read that `time` reads
/// otherwise (no zone, a leap second, the date-time separator). After it, the instant must lie
/// between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z, the range the wire format
/// writes.
///
/// The error is a short reason; the caller names the value.
pub(crate) fn parse_rfc3339(text: &str) -> std::result::Result<SystemTime, String> {
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};

    let adapted = legacy_rfc3339(text)?;
    let parsed =
        OffsetDateTime::parse(&adapted, &Rfc3339).map_err(|err| parse_failure(text, &err))?;
    // Whole seconds since the epoch in UTC, rounded down: 1969-12-31T23:59:59.5Z is -1.
    let Ok(secs) = u64::try_from(parsed.unix_timestamp()) else {
        return Err(
            "it is before 1970-01-01T00:00:00Z, the earliest time the wire format carries"
                .to_owned(),
        );
    };
    if secs > MAX_WIRE_SECS {
        return Err(
            "it is after 9999-12-31T23:59:59Z, the latest time RFC 3339 can write".to_owned(),
        );
    }
    SystemTime::UNIX_EPOCH
        .checked_add(std::time::Duration::new(secs, parsed.nanosecond()))
        .ok_or_else(|| "it is past the latest time this platform represents".to_owned())
}

/// `text` with the spellings older redstream versions read (through humantime and then the
/// crate's own parser) put in the form the `time` crate's RFC 3339 parser reads the same way, so
/// that what was read before still reads as the same instant. Exactly three cases, by position
/// in the fixed-width `YYYY-MM-DDThh:mm:ss` prefix; everything else is left to `time`:
///
/// - no zone after the seconds or their fraction (`2024-12-01T10:00:00`): redstream has always
///   read it as UTC, `time` requires a zone, so `Z` is appended;
/// - a leap second (`:60`): read as `:59` with its fraction, as humantime read it, while `time`
///   takes one only as 23:59:60 UTC on the last day of a month and makes it 23:59:59.999999999;
///   so the `60` is written `59`;
/// - the character between date and time: RFC 3339 allows `T`, `t` and a space, the old
///   parser refused anything else, `time` takes any byte there; so another one is refused here.
fn legacy_rfc3339(text: &str) -> std::result::Result<std::borrow::Cow<'_, str>, String> {
    let b = text.as_bytes();
    if b.get(10).is_some_and(|c| !matches!(c, b'T' | b't' | b' ')) {
        return Err(RFC3339_SHAPE.to_owned());
    }
    let leap_second = b.get(16..19) == Some(b":60".as_slice());
    let no_zone = b.get(19..).is_some_and(|rest| {
        rest.is_empty()
            || rest
                .strip_prefix(b".")
                .is_some_and(|fraction| fraction.iter().all(u8::is_ascii_digit))
    });
    if !leap_second && !no_zone {
        return Ok(std::borrow::Cow::Borrowed(text));
    }
    let mut adapted = text.to_owned();
    if leap_second {
        // Bytes 16..19 are the ASCII `:60`, so 17..19 is on character boundaries.
        adapted.replace_range(17..19, "59");
    }
    if no_zone {
        adapted.push('Z');
    }
    Ok(std::borrow::Cow::Owned(adapted))
}

/// Why `time` refused `text`: its own words (the component it could not read or found out of
/// range), the offset as written when the offset is at fault, and the shape expected when the
/// text does not have it.
fn parse_failure(text: &str, err: &time::error::Parse) -> String {
    use time::error::{Parse, ParseFromDescription, TryFromParsed};

    let component = match err {
        Parse::ParseFromDescription(ParseFromDescription::InvalidComponent(name)) => Some(*name),
        Parse::TryFromParsed(TryFromParsed::ComponentRange(range)) => Some(range.name()),
        _ => None,
    };
    let mut reason = String::new();
    if component.is_some_and(|name| name.starts_with("offset")) {
        // The zone is what follows the seconds and their fraction; the checks of the prefix
        // passed, so byte 19 is on a character boundary when `time` got as far as the offset.
        let zone = text.get(19..).unwrap_or_default();
        let zone = match zone.strip_prefix('.') {
            Some(fraction) => fraction.trim_start_matches(|c: char| c.is_ascii_digit()),
            None => zone,
        };
        reason.push_str(&format!("offset {}: ", excerpt(zone, 16)));
    }
    reason.push_str(&err.to_string());
    if matches!(err, Parse::ParseFromDescription(_)) {
        reason.push_str("; ");
        reason.push_str(RFC3339_SHAPE);
    }
    reason
}

/// `text` cut to at most `max` bytes (on a character boundary), with `...` when it was cut, so a
/// hostile value cannot blow up an error message.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// `metadata` as the wire decoder reads it: [`EventMetadata`] with the timestamp optional and
/// still text, so that the reader supplies a missing one (the stream entry id's time) and a bad
/// one is its own error instead of a JSON shape error.
#[derive(Default, Deserialize)]
pub(crate) struct WireMetadata {
    #[serde(default)]
    pub(crate) timestamp: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    causation_id: Option<String>,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl WireMetadata {
    /// The metadata with `timestamp`. The struct literal names every field of
    /// [`EventMetadata`], so a field added there does not compile until it is read here too.
    pub(crate) fn into_metadata(self, timestamp: SystemTime) -> EventMetadata {
        let Self {
            timestamp: _,
            source,
            correlation_id,
            causation_id,
            priority,
            user_id,
            headers,
        } = self;
        EventMetadata {
            timestamp,
            source,
            correlation_id,
            causation_id,
            priority,
            user_id,
            headers,
        }
    }
}

/// RFC 3339 timestamps: written in UTC (`Z`) with milliseconds, or with as many more digits as
/// the instant needs (micro- or nanoseconds, for a timestamp read with them), so that decoding
/// and encoding again never changes it; read with any offset.
mod rfc3339 {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        // Times before 1970 cannot be written as RFC 3339 by humantime; clamp them to the epoch.
        let t = (*t).max(UNIX_EPOCH);
        let nanos = t
            .duration_since(UNIX_EPOCH)
            .map(|since| since.subsec_nanos())
            .unwrap_or_default();
        if nanos.is_multiple_of(1_000_000) {
            s.collect_str(&humantime::format_rfc3339_millis(t))
        } else if nanos.is_multiple_of(1_000) {
            s.collect_str(&humantime::format_rfc3339_micros(t))
        } else {
            s.collect_str(&humantime::format_rfc3339_nanos(t))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_rfc3339(&text).map_err(|reason| {
            let text = super::excerpt(&text, 64);
            D::Error::custom(format!("invalid timestamp {text:?}: {reason}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    #[test]
    fn seed_constructor_works_and_ids_are_unique_and_ordered() {
        let a = Event::new("order.created", json!({"a": 1}), EventMetadata::default());
        let b = Event::new("order.created", json!({"a": 1}), EventMetadata::default());
        assert_ne!(a.id(), b.id());
        assert!(a.id() < b.id(), "UUIDv7 ids sort by creation");
        assert_eq!(a.priority(), Priority::Normal);
        a.validate().unwrap();
    }

    #[test]
    fn event_type_validation_names_the_problem() {
        for bad in ["", "order created", "order\ncreated", "tab\there", "nul\0"] {
            let err = validate_event_type(bad, 256).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains("event type"), "{err}");
        }
        let long = "a".repeat(257);
        let err = validate_event_type(&long, 256).unwrap_err();
        assert!(err.to_string().contains("at most 256 bytes"), "{err}");
        validate_event_type("order.created", 256).unwrap();
        validate_event_type("überweisung.erstellt", 256).unwrap();
    }

    #[test]
    fn try_new_rejects_bad_types() {
        assert!(Event::try_new("bad type", json!(null)).is_err());
        assert!(Event::try_new("good.type", json!(null)).is_ok());
    }

    #[test]
    fn metadata_validation() {
        let event = Event::new("a", json!(1), EventMetadata::default()).with_header("", "x");
        assert!(
            event
                .validate()
                .unwrap_err()
                .to_string()
                .contains("header name")
        );
        let event = Event::new("a", json!(1), EventMetadata::default()).with_source("svc\r\n");
        assert!(event.validate().unwrap_err().to_string().contains("source"));
        let mut event = Event::new("a", json!(1), EventMetadata::default());
        for i in 0..65 {
            event = event.with_header(format!("h{i}"), "v");
        }
        assert!(
            event
                .validate()
                .unwrap_err()
                .to_string()
                .contains("at most 64 headers")
        );
    }

    #[test]
    fn caused_by_links_events() {
        let first = Event::new("a", json!(1), EventMetadata::default());
        let second = Event::new("b", json!(2), EventMetadata::default()).caused_by(&first);
        assert_eq!(
            second.metadata().causation_id.as_deref(),
            Some(first.id().as_str())
        );
        assert_eq!(
            second.metadata().correlation_id.as_deref(),
            Some(first.id().as_str())
        );
        let third = Event::new("c", json!(3), EventMetadata::default()).caused_by(&second);
        assert_eq!(
            third.metadata().correlation_id,
            second.metadata().correlation_id
        );
    }

    #[test]
    fn priority_parses_and_orders() {
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
        assert!("urgent".parse::<Priority>().is_err());
    }

    #[test]
    fn limits_validate() {
        EventLimits::default().validate().unwrap();
        let err = EventLimits::default()
            .with_max_encoded_bytes(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("limits.max_encoded_bytes"));
    }

    /// Seconds since the epoch of a UTC time spelled out, computed by humantime (an independent
    /// implementation of the calendar).
    fn utc(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn timestamps_in_utc_read_as_before() {
        let t = utc("2024-12-01T10:00:00Z");
        for text in [
            "2024-12-01T10:00:00Z",
            "2024-12-01T10:00:00z",
            "2024-12-01t10:00:00Z",
            "2024-12-01T10:00:00+00:00",
            "2024-12-01T10:00:00-00:00",
            "2024-12-01T10:00:00",
            "2024-12-01 10:00:00Z",
            "2024-12-01T10:00:00.000Z",
        ] {
            assert_eq!(parse_rfc3339(text).unwrap(), t, "{text}");
        }
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let cases = [
            ("2024-12-01T10:00:00+02:00", "2024-12-01T08:00:00Z"),
            ("2024-12-01T10:00:00-05:30", "2024-12-01T15:30:00Z"),
            ("2024-12-01T10:00:00.250+05:45", "2024-12-01T04:15:00.250Z"),
            // Across midnight, a month end and a leap day.
            ("2024-03-01T01:00:00+02:00", "2024-02-29T23:00:00Z"),
            ("2023-12-31T22:00:00-03:00", "2024-01-01T01:00:00Z"),
            ("2024-12-01T10:00:00+23:59", "2024-11-30T10:01:00Z"),
            ("2024-12-01T10:00:00-23:59", "2024-12-02T09:59:00Z"),
            // Earliest and latest instants, reached through an offset.
            ("1970-01-01T01:00:00+01:00", "1970-01-01T00:00:00Z"),
            ("1969-12-31T23:00:00-01:00", "1970-01-01T00:00:00Z"),
            ("9999-12-31T22:59:59.999-01:00", "9999-12-31T23:59:59.999Z"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_rfc3339(text).unwrap(), utc(expected), "{text}");
        }
    }

    #[test]
    fn seconds_fractions_keep_nanoseconds() {
        let base = utc("2024-12-01T10:00:00Z");
        let cases = [
            ("2024-12-01T10:00:00.1Z", 100_000_000),
            ("2024-12-01T10:00:00.123Z", 123_000_000),
            ("2024-12-01T10:00:00.123456789Z", 123_456_789),
            // Digits past the nanosecond are dropped, not rounded.
            ("2024-12-01T10:00:00.1234567899999+00:00", 123_456_789),
            ("2024-12-01T12:00:00.5+02:00", 500_000_000),
        ];
        for (text, nanos) in cases {
            assert_eq!(
                parse_rfc3339(text).unwrap(),
                base + std::time::Duration::from_nanos(nanos),
                "{text}"
            );
        }
        // A leap second reads as the last second of its minute, as before.
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z").unwrap(),
            utc("2016-12-31T23:59:59Z")
        );
    }

    /// The three spellings `legacy_rfc3339` adapts are read as the hand-written parser and
    /// humantime read them, also where the `time` crate alone would refuse them or read another
    /// instant.
    #[test]
    fn spellings_older_versions_read_are_read_the_same() {
        let cases = [
            // No zone: UTC, with or without a fraction.
            ("2024-12-01T10:00:00.5", "2024-12-01T10:00:00.500Z"),
            ("2024-12-01 10:00:00", "2024-12-01T10:00:00Z"),
            // A leap second anywhere is the last second of its minute, its fraction kept: `time`
            // refuses one that is not 23:59:60 UTC at a month's end, and reads that one as
            // 23:59:59.999999999.
            ("2016-12-31T23:59:60.250Z", "2016-12-31T23:59:59.250Z"),
            ("2024-12-01T10:00:60+02:00", "2024-12-01T08:00:59Z"),
            ("2024-12-01T10:00:60", "2024-12-01T10:00:59Z"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_rfc3339(text).unwrap(), utc(expected), "{text}");
        }
        // `time` takes any byte between date and time; RFC 3339 and older versions do not.
        for text in [
            "2024-12-01_10:00:00Z",
            "2024-12-01\u{e9}10:00:00Z",
            "2024-12-01:10:00:00Z",
        ] {
            let err = parse_rfc3339(text).unwrap_err();
            assert!(err.contains("expected YYYY-MM-DD"), "{text:?}: {err}");
        }
        // A trailing fraction point without digits is not mistaken for a missing zone.
        let err = parse_rfc3339("2024-12-01T10:00:00.").unwrap_err();
        assert!(err.contains("'subsecond' component"), "{err}");
    }

    #[test]
    fn invalid_timestamps_say_why() {
        let cases = [
            ("", "expected YYYY-MM-DD"),
            ("2024-12-01", "expected YYYY-MM-DD"),
            ("2024-12-01T10:00Z", "expected YYYY-MM-DD"),
            ("2024/12/01T10:00:00Z", "expected YYYY-MM-DD"),
            ("2024-12-01X10:00:00Z", "expected YYYY-MM-DD"),
            ("2024-12-01T10:00:00+0200", "expected YYYY-MM-DD"),
            ("2024-12-01T10:00:00+02", "expected YYYY-MM-DD"),
            ("2024-12-01T10:00:00 +02:00", "expected YYYY-MM-DD"),
            ("2024-12-01T10:00:00+02:00 ", "expected YYYY-MM-DD"),
            ("2024-12-01T10:00:00ZZ", "expected YYYY-MM-DD"),
            ("2024-12-01T10:00:00UTC", "expected YYYY-MM-DD"),
            ("+2024-12-01T10:00:00Z", "expected YYYY-MM-DD"),
            ("２０２４-12-01T10:00:00Z", "expected YYYY-MM-DD"),
            ("2024-12-01T10:00:00.Z", "'subsecond' component"),
            ("2024-12-01T10:00:00.+02:00", "'subsecond' component"),
            (
                "2024-12-01T10:00:00+24:00",
                "offset +24:00: the 'offset hour'",
            ),
            (
                "2024-12-01T10:00:00-99:00",
                "offset -99:00: the 'offset hour'",
            ),
            ("2024-12-01T10:00:00+02:60", "offset +02:60: offset minute"),
            (
                "2024-12-01T10:00:00.123+05:99",
                "offset +05:99: offset minute was not in range",
            ),
            ("2024-13-01T10:00:00Z", "month was not in range"),
            ("2024-00-01T10:00:00Z", "'month' component"),
            ("2023-02-29T10:00:00Z", "day was not in range"),
            ("2024-04-31T10:00:00Z", "day was not in range"),
            ("2024-12-00T10:00:00Z", "day was not in range"),
            ("2024-12-01T24:00:00Z", "hour was not in range"),
            ("2024-12-01T10:60:00Z", "minute was not in range"),
            ("2024-12-01T10:00:61Z", "second was not in range"),
            ("1969-12-31T23:59:59Z", "before 1970"),
            ("1970-01-01T00:30:00+01:00", "before 1970"),
            ("9999-12-31T23:30:00-01:00", "after 9999"),
        ];
        for (text, reason) in cases {
            let err = parse_rfc3339(text).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn event_serde_reads_offsets_and_writes_utc() {
        let event: Event = serde_json::from_value(json!({
            "id": "e-1",
            "type": "order.created",
            "payload": null,
            "metadata": {"timestamp": "2024-12-01T10:00:00.5+02:00"}
        }))
        .unwrap();
        assert_eq!(event.metadata().timestamp, utc("2024-12-01T08:00:00.500Z"));
        let written = serde_json::to_value(&event).unwrap();
        assert_eq!(written["metadata"]["timestamp"], "2024-12-01T08:00:00.500Z");

        let err = serde_json::from_value::<Event>(json!({
            "id": "e-1",
            "type": "t",
            "metadata": {"timestamp": format!("2024-12-01T10:00:00+25:00{}", "x".repeat(500))}
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid timestamp"), "{err}");
        assert!(err.len() < 400, "{err}");
    }

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        assert_eq!(excerpt("short", 64), "short");
        assert_eq!(excerpt("ééé", 3), "é...");
        assert_eq!(excerpt(&"x".repeat(100), 4), "xxxx...");
    }
}
