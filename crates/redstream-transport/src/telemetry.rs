//! Metric names, recorded through the `metrics` facade. Install any `metrics` recorder (for
//! example a Prometheus exporter) to collect them; without one they cost next to nothing.
//!
//! The per-event metrics are registered once and their handles kept: a subscription's when it
//! starts, an event type's `published_total` at its first publish, the publish latency when
//! the transport is made. They report to the recorder installed at that moment, so install it
//! before creating the transport.
//!
//! The `event_type` label is the event's type for events published or consumed by type, and
//! the stream's name for entries published with `publish_fields` and consumed from a stream
//! subscribed by name (whose entries may be of any type, or none): labels stay bounded by the
//! streams an application names.

/// `messaging.system` of the transport's spans (OpenTelemetry's messaging conventions have no
/// value of their own for Redis Streams; the convention allows one).
pub(crate) const MESSAGING_SYSTEM: &str = "redis";

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

/// Whether the transport's circuit breaker is open (1) or not (0). Labels: `server` (the URL,
/// its password redacted). Registered when the transport connects, set on every state change.
pub(crate) const CIRCUIT_OPEN: &str = "redstream_transport_circuit_open";
/// Times the transport's circuit breaker opened. Labels: `server`.
pub(crate) const CIRCUIT_OPENED: &str = "redstream_transport_circuit_opened_total";

/// Exports `breaker`'s state as [`CIRCUIT_OPEN`] and [`CIRCUIT_OPENED`] for `server`.
pub(crate) fn export_breaker_state(
    breaker: &redstream_core::CircuitBreaker,
    server: &str,
) -> redstream_core::Result<()> {
    let label: std::sync::Arc<str> = std::sync::Arc::from(server);
    // Registered (at 0 when new) without a value, so that a second transport to the same
    // server does not reset what the first one reported.
    let _ = metrics::gauge!(CIRCUIT_OPEN, "server" => std::sync::Arc::clone(&label));
    let _ = metrics::counter!(CIRCUIT_OPENED, "server" => std::sync::Arc::clone(&label));
    breaker.on_state_change(move |state| {
        let open = state == redstream_core::CircuitState::Open;
        metrics::gauge!(CIRCUIT_OPEN, "server" => std::sync::Arc::clone(&label)).set(if open {
            1.0
        } else {
            0.0
        });
        if open {
            metrics::counter!(CIRCUIT_OPENED, "server" => std::sync::Arc::clone(&label))
                .increment(1);
        }
    })
}
