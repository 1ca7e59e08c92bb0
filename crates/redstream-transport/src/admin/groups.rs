//! Managing consumer groups by hand: create, destroy, move a group's last-delivered id, delete a
//! consumer (never one with pending entries unless forced), acknowledge and claim entries by id.

use std::time::Duration;

use redis::Value;
use redstream_core::{Error, ErrorKind, Result};

use super::checks::{check_entry_id, require_stream};
use super::{reads, writes};
use crate::commands::is_nogroup;
use crate::inspect::{check_non_empty, no_such_group};
use crate::keys::validate_stream_name;
use crate::reply::{count, sequence, text};
use crate::transport::RedisTransport;

/// Checks and then deletes a consumer, in one script so that no entry becomes pending for it in
/// between: `{'deleted', <pending dropped>}`, `{'refused', <pending>}`, or what is missing.
const DELETE_CONSUMER: &str = r"
local t = redis.call('TYPE', KEYS[1])
t = t['ok'] or t
if t == 'none' then return {'no_stream'} end
if t ~= 'stream' then return {'wrong_type', t} end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return {'no_group'} end
for _, c in ipairs(consumers) do
  local name, pending
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
  end
  if name == ARGV[2] then
    if pending > 0 and ARGV[3] ~= '1' then return {'refused', pending} end
    return {'deleted', redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])}
  end
end
return {'no_consumer'}
";

/// What [`RedisTransport::delete_consumer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerDeletion {
    /// The consumer is gone; `pending` entries it held left the group's pending list (0 unless
    /// forced).
    Deleted {
        /// Pending entries dropped with it.
        pending: u64,
    },
    /// Nothing was deleted: the consumer holds `pending` entries and deleting it would drop
    /// them from the group (they would never be acknowledged or claimed).
    Refused {
        /// Its pending entries.
        pending: u64,
    },
}

/// Checks a group start or `SETID` position: `$` (the end), `0` (the start) or an entry id.
fn check_position(position: &str) -> Result<()> {
    if position == "$" || position == "0" {
        return Ok(());
    }
    check_entry_id("position", position).map_err(|_| {
        Error::invalid_input(
            format!("position {position:?}"),
            "expected `$` (the end of the stream), `0` (its start) or an entry id such as \
             1700000000000-0",
        )
    })
}

fn check_ids(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::invalid_input("entry ids", "none given"));
    }
    if ids.len() > RedisTransport::MAX_INSPECT_COUNT {
        return Err(Error::invalid_input(
            format!("{} entry ids", ids.len()),
            format!("at most {} per call", RedisTransport::MAX_INSPECT_COUNT),
        ));
    }
    ids.iter().try_for_each(|id| check_entry_id("entry id", id))
}

/// NOGROUP as the typed "no such group".
fn group_error(stream: &str, group: &str) -> impl Fn(Error) -> Error {
    move |err| {
        if is_nogroup(&err) {
            no_such_group(stream, group)
        } else {
            err
        }
    }
}

/// Administration of consumer groups. Writes: they go through the circuit breaker.
impl RedisTransport {
    /// Creates consumer group `group` of `stream`, whose first read starts after `start`: `$`
    /// (only entries added from now on), `0` (every entry in the stream) or an entry id
    /// (`XGROUP CREATE`). With `mkstream` a missing stream is created empty (`MKSTREAM`);
    /// without, a missing stream is [`ErrorKind::NotFound`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an invalid name or position, or a group that already
    /// exists (`BUSYGROUP`); [`ErrorKind::WrongType`] for a key that is not a stream.
    pub async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: &str,
        mkstream: bool,
    ) -> Result<()> {
        const OP: &str = "XGROUP CREATE";
        validate_stream_name(stream)?;
        check_non_empty("consumer group name", group)?;
        check_position(start)?;
        if mkstream {
            super::checks::require_stream_or_missing(&reads(self), stream).await?;
        } else {
            require_stream(&reads(self), stream).await?;
        }
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(stream).arg(group).arg(start);
        if mkstream {
            cmd.arg("MKSTREAM");
        }
        writes(self)
            .query::<()>(OP, stream, &cmd)
            .await
            .map_err(|err| {
                if err.to_string().contains("BUSYGROUP") {
                    Error::invalid_input(
                        format!("consumer group {group:?} of stream {stream:?}"),
                        "already exists",
                    )
                } else {
                    err
                }
            })
    }

    /// Deletes consumer group `group` of `stream` with its consumers and its pending entries
    /// list (`XGROUP DESTROY`). The stream's entries stay.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] for a missing stream or group; [`ErrorKind::WrongType`] for a
    /// key that is not a stream.
    pub async fn destroy_group(&self, stream: &str, group: &str) -> Result<()> {
        const OP: &str = "XGROUP DESTROY";
        validate_stream_name(stream)?;
        check_non_empty("consumer group name", group)?;
        require_stream(&reads(self), stream).await?;
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("DESTROY").arg(stream).arg(group);
        let destroyed: u64 = writes(self).query(OP, stream, &cmd).await?;
        if destroyed == 0 {
            return Err(no_such_group(stream, group));
        }
        Ok(())
    }

    /// Moves the last-delivered id of `group` to `position` (`XGROUP SETID`): `$` skips every
    /// entry not delivered yet, `0` delivers the whole stream again to the group's next reads,
    /// an id delivers what follows it. Pending entries stay pending.
    ///
    /// # Errors
    ///
    /// As for [`destroy_group`](Self::destroy_group), and
    /// [`ErrorKind::InvalidInput`] for an invalid position.
    pub async fn set_group_id(&self, stream: &str, group: &str, position: &str) -> Result<()> {
        const OP: &str = "XGROUP SETID";
        validate_stream_name(stream)?;
        check_non_empty("consumer group name", group)?;
        check_position(position)?;
        require_stream(&reads(self), stream).await?;
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("SETID").arg(stream).arg(group).arg(position);
        writes(self)
            .query::<()>(OP, stream, &cmd)
            .await
            .map_err(group_error(stream, group))
    }

    /// Deletes `consumer` from `group` (`XGROUP DELCONSUMER`), unless it holds pending entries:
    /// deleting it would drop them from the group's pending list, so nobody would ever
    /// acknowledge or claim them. With `force` it is deleted all the same. The check and the
    /// deletion are one script, so no entry becomes pending for the consumer in between.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] for a missing stream, group or consumer;
    /// [`ErrorKind::WrongType`] for a key that is not a stream; [`ErrorKind::InvalidInput`]
    /// for an invalid name.
    pub async fn delete_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        force: bool,
    ) -> Result<ConsumerDeletion> {
        const OP: &str = "XGROUP DELCONSUMER";
        validate_stream_name(stream)?;
        check_non_empty("consumer group name", group)?;
        check_non_empty("consumer name", consumer)?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(DELETE_CONSUMER)
            .arg(1)
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(if force { "1" } else { "0" });
        let reply: Value = writes(self).query(OP, stream, &cmd).await?;
        let parts = sequence(&reply).unwrap_or_default();
        let number = || parts.get(1).and_then(count);
        match parts.first().and_then(text).as_deref() {
            Some("deleted") => Ok(ConsumerDeletion::Deleted {
                pending: number().unwrap_or(0),
            }),
            Some("refused") => Ok(ConsumerDeletion::Refused {
                pending: number().unwrap_or(0),
            }),
            Some("no_stream") => Err(Error::not_found(
                format!("stream {stream:?}"),
                "the key does not exist (list_streams() shows the streams)",
            )),
            Some("wrong_type") => Err(super::checks::wrong_type(
                stream,
                &parts.get(1).and_then(text).unwrap_or_default(),
            )),
            Some("no_group") => Err(no_such_group(stream, group)),
            Some("no_consumer") => Err(Error::not_found(
                format!("consumer {consumer:?} of group {group:?} of stream {stream:?}"),
                "consumers() lists the group's consumers",
            )),
            _ => Err(Error::backend(
                ErrorKind::Unexpected,
                OP,
                stream,
                "unexpected reply from the delete-consumer script",
            )),
        }
    }

    /// Acknowledges entries `ids` for `group` (`XACK`): they leave its pending list. Returns
    /// how many were pending (ids that were not are ignored by Redis). Acknowledging never
    /// deletes an entry from the stream.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for no ids, more than
    /// [`MAX_INSPECT_COUNT`](Self::MAX_INSPECT_COUNT), or a malformed one;
    /// [`ErrorKind::NotFound`] for a missing stream or group.
    pub async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<u64> {
        const OP: &str = "XACK";
        validate_stream_name(stream)?;
        check_non_empty("consumer group name", group)?;
        check_ids(ids)?;
        require_stream(&reads(self), stream).await?;
        // XACK answers 0 for a missing group: ask first, so a typo is not a silent no-op.
        self.require_group(stream, group).await?;
        let mut cmd = redis::cmd(OP);
        cmd.arg(stream).arg(group).arg(ids);
        writes(self)
            .query(OP, stream, &cmd)
            .await
            .map_err(group_error(stream, group))
    }

    /// Hands pending entries `ids` of `group` to `consumer` when they have been idle for at
    /// least `min_idle` (`XCLAIM ... JUSTID`: their delivery counts stay, their idle time
    /// starts again), and returns the ids claimed; ids not pending in the group, or not idle
    /// long enough, are left out. The consumer is created if it is new.
    ///
    /// # Errors
    ///
    /// As for [`ack`](Self::ack), and [`ErrorKind::InvalidInput`] for an empty consumer name.
    pub async fn claim_ids(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[String],
    ) -> Result<Vec<String>> {
        const OP: &str = "XCLAIM";
        validate_stream_name(stream)?;
        check_non_empty("consumer group name", group)?;
        check_non_empty("consumer name", consumer)?;
        check_ids(ids)?;
        require_stream(&reads(self), stream).await?;
        let min_idle_ms = i64::try_from(min_idle.as_millis()).unwrap_or(i64::MAX);
        let mut cmd = redis::cmd(OP);
        cmd.arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(min_idle_ms)
            .arg(ids)
            .arg("JUSTID");
        let claimed: Vec<String> = writes(self)
            .query(OP, stream, &cmd)
            .await
            .map_err(group_error(stream, group))?;
        if !claimed.is_empty() {
            tracing::info!(
                stream,
                group,
                consumer,
                claimed = claimed.len(),
                "entries claimed by id"
            );
        }
        Ok(claimed)
    }

    /// Fails with the typed "no such consumer group" unless `group` exists on `stream`.
    async fn require_group(&self, stream: &str, group: &str) -> Result<()> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("GROUPS").arg(stream);
        let reply: redis::streams::StreamInfoGroupsReply =
            reads(self).query("XINFO GROUPS", stream, &cmd).await?;
        if reply.groups.iter().any(|g| g.name == group) {
            Ok(())
        } else {
            Err(no_such_group(stream, group))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_checked() {
        for good in ["$", "0", "0-0", "1700000000000-0"] {
            check_position(good).unwrap();
        }
        for bad in ["", "-", "+", ">", "(1-0", "x"] {
            assert!(check_position(bad).is_err(), "{bad:?}");
        }
        assert!(check_ids(&[]).is_err());
        assert!(check_ids(&["1-0".to_owned(), "nope".to_owned()]).is_err());
        check_ids(&["1-0".to_owned()]).unwrap();
    }
}
