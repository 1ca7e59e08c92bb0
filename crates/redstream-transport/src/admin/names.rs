//! Names: what stream an operator means by a name (`stream_key_for`, `resolve_stream`).

use redstream_core::{Error, Result};

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

    /// The stream an operator means by `name`: `name` itself when it is a stream
    /// (`events.raw`, seed 004's topics), otherwise [`stream_key_for`](Self::stream_key_for).
    /// When the two differ, one round trip of two `TYPE`s, bypassing the circuit breaker like
    /// the other reads; none otherwise. A name the user may not read (`NOPERM`) is not taken
    /// as a stream.
    ///
    /// # Errors
    ///
    /// As [`stream_key_for`](Self::stream_key_for), and
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) when `name` is a stream and the stream
    /// [`stream_key_for`](Self::stream_key_for) gives also is (`events.raw` and
    /// `events:events.raw`): the error names both, and the caller names one in full (a transport
    /// with the empty prefix reads every name as it is). A Redis error if `TYPE` fails.
    pub async fn resolve_stream(&self, name: &str) -> Result<String> {
        let derived = self.stream_key_for(name)?;
        if derived == name {
            return Ok(derived);
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("TYPE")
            .arg(name)
            .cmd("TYPE")
            .arg(&derived);
        let types: Vec<redis::RedisResult<String>> = reads(self).pipe("TYPE", name, &pipe).await?;
        // A key this user may not read (`NOPERM`: a dashboard user limited to `events:*`) is not
        // a stream it can mean; any other error is the server's.
        let mut is_stream = [false; 2];
        for (slot, result) in is_stream.iter_mut().zip(types) {
            match result {
                Ok(kind) => *slot = kind == "stream",
                Err(err) if err.code() == Some("NOPERM") => {}
                Err(err) => return Err(Error::from_redis("TYPE", name.to_owned(), err)),
            }
        }
        let [own, other] = is_stream;
        match (own, other) {
            (true, true) => Err(Error::invalid_input(
                "stream name",
                format!(
                    "{name:?} names two streams: the stream {name:?} itself and {derived:?}, the \
                 stream of the event type {name:?} under the prefix {:?}; name the one you mean \
                 in full (`{derived}`), or use the empty prefix to read names as they are",
                    self.inner.names.prefix()
                ),
            )),
            (true, false) => Ok(name.to_owned()),
            (false, _) => Ok(derived),
        }
    }
}
