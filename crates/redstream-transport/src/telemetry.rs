//! Metric names, recorded through the `metrics` facade. Install any `metrics` recorder (for
//! example a Prometheus exporter) to collect them; without one they cost next to nothing.
//!
//! The `event_type` label is the event's type for events published or consumed by type, and
//! the stream's name for entries published with `publish_fields` and consumed from a stream
//! subscribed by name (whose entries may be of any type, or none): labels stay bounded by the
//! streams an application names.

/// Events published. Labels: `event_type`.
pub(crate) const PUBLISHED: &str = "redstream_transport_published_total";
/// Publish calls that failed at the breaker or at Redis (events refused by validation are not
/// counted). Labels: `kind` (an `ErrorKind` name).
pub(crate) const PUBLISH_ERRORS: &str = "redstream_transport_publish_errors_total";
/// Seconds from calling publish to the entry id coming back. Labels: none.
pub(crate) const PUBLISH_LATENCY: &str = "redstream_transport_publish_latency_seconds";
/// Entries delivered to handlers. Labels: `event_type`, `group`.
pub(crate) const CONSUMED: &str = "redstream_transport_consumed_total";
/// Entries acknowledged. Labels: `group`.
pub(crate) const ACKED: &str = "redstream_transport_acked_total";
/// Handler failures left for redelivery. Labels: `event_type`, `group`.
pub(crate) const RETRIED: &str = "redstream_transport_retried_total";
/// Entries moved to the dead-letter stream. Labels: `reason` (`handler`, `decode`, `manual`,
/// `wrong_type`).
pub(crate) const DEAD_LETTERED: &str = "redstream_transport_dead_lettered_total";
/// Entries claimed from other consumers. Labels: `group`.
pub(crate) const CLAIMED: &str = "redstream_transport_claimed_total";
/// Pending entries found trimmed away while claiming. Labels: `group`.
pub(crate) const CLAIM_DELETED: &str = "redstream_transport_claim_deleted_total";
/// Entries that could not be decoded. Labels: `stream`.
pub(crate) const DECODE_FAILURES: &str = "redstream_transport_decode_failures_total";
/// Seconds a handler ran. Labels: `event_type`, `group`.
pub(crate) const HANDLER_LATENCY: &str = "redstream_transport_handler_latency_seconds";
