//! Names: what stream an operator means by a name (`stream_key_for`, `resolve_stream`).

use redstream_core::Result;

use super::reads;
use crate::keys::{DLQ, validate_event_type, validate_stream_name};
use crate::transport::RedisTransport;

/// # Administration
///
/// Operations an operator runs by hand; see the module docs of `admin` for the names they
/// accept and their errors.
impl RedisTransport {
    /// The stream an operator means by `name`, without asking Redis (see the module docs of
    /// `admin.rs`): `dlq` is the dead-letter stream, a stream name of this prefix and layout is
    /// itself, an event type is its stream, and any other valid stream name is itself.
    ///
    /// ```no_run
    /// # async fn demo(transport: redstream_transport::RedisTransport) -> redstream_transport::Result<()> {
    /// // With the default prefix `events` and the plain layout:
    /// assert_eq!(transport.stream_key_for("order.created")?, "events:order.created");
    /// assert_eq!(transport.stream_key_for("events:order.created")?, "events:order.created");
    /// assert_eq!(transport.stream_key_for("dlq")?, "events:dlq");
    /// assert_eq!(transport.stream_key_for("{orders}.events")?, "{orders}.events");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) for an empty name or
    /// one that cannot name a stream (whitespace, control characters, longer than 512 bytes).
    pub fn stream_key_for(&self, name: &str) -> Result<String> {
        let names = &self.inner.names;
        validate_stream_name(name)?;
        if name == DLQ {
            return Ok(names.dlq());
        }
        if names.is_dlq(name) || names.event_type(name).is_some() {
            return Ok(name.to_owned());
        }
        if validate_event_type(name, &self.inner.options.limits).is_ok() {
            return Ok(names.stream(name));
        }
        Ok(name.to_owned())
    }

    /// The stream an operator means by `name`: `name` itself when a key of that name exists
    /// (`events.raw`, seed 004's topics), otherwise [`stream_key_for`](Self::stream_key_for).
    /// One `EXISTS`, bypassing the circuit breaker like the other reads.
    ///
    /// # Errors
    ///
    /// As [`stream_key_for`](Self::stream_key_for); a Redis error if `EXISTS` fails.
    pub async fn resolve_stream(&self, name: &str) -> Result<String> {
        validate_stream_name(name)?;
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(name);
        let exists: i64 = reads(self).query("EXISTS", name, &cmd).await?;
        if exists > 0 {
            return Ok(name.to_owned());
        }
        self.stream_key_for(name)
    }
}
