//! Checking what a request names: stream names, counts, group names, dead-letter ids.
//!
//! Everything is checked before Redis sees it, so that bad input is a 400 naming the parameter
//! rather than whatever the server would have said.

use redstream_core::ErrorKind;
#[cfg(doc)]
use redstream_transport::RedisTransport;

use super::state::AppState;

use super::config::MAX_COUNT;
use super::error::ApiError;

/// The longest stream name, group name or id accepted in a path or a query, in bytes.
const MAX_NAME_BYTES: usize = 512;

/// The stream a path names, as the CLI reads names ([`RedisTransport::resolve_stream`]): a
/// stream name that exists is itself (`events.raw`, `events:order.created`, which a URL may
/// percent-encode as `events%3Aorder.created`); otherwise `dlq` is the dead-letter stream and an
/// event type (`order.created`) its stream under the prefix. The `EXISTS` this takes is a read,
/// and its failure is answered like any Redis failure.
///
/// A name the dashboard's user may not read (`NOPERM` on `TYPE`: an ACL that grants the prefix
/// only, see docs/dashboard.md) is not a stream the dashboard can show: it is read as an event
/// type, whose stream is under the prefix.
pub(crate) async fn stream_key(state: &AppState, raw: &str) -> Result<String, ApiError> {
    check_text("stream name", raw).map_err(ApiError::stream_name)?;
    let transport = state.transport();
    let resolved = match transport.resolve_stream(raw).await {
        Err(err) if err.kind() == ErrorKind::PermissionDenied => transport.stream_key_for(raw),
        other => other,
    };
    resolved.map_err(|err| match err.kind() {
        ErrorKind::InvalidInput => ApiError::stream_name(state.scrub(&err.to_string())),
        _ => state.fail(err),
    })
}

/// `count` from a query: absent means `default`; otherwise a whole number from 1 to
/// [`MAX_COUNT`].
pub(crate) fn count(raw: Option<&str>, default: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let invalid = || {
        ApiError::parameter(format!(
            "count {raw:?} is not valid: give a whole number from 1 to {MAX_COUNT}"
        ))
    };
    let value: usize = raw.trim().parse().map_err(|_| invalid())?;
    if value == 0 || value > MAX_COUNT {
        return Err(invalid());
    }
    Ok(value)
}

/// A required name in a query or a path (`group`).
pub(crate) fn name(what: &str, raw: Option<&str>) -> Result<String, ApiError> {
    let raw =
        raw.ok_or_else(|| ApiError::parameter(format!("the {what} parameter is required")))?;
    check_text(what, raw).map_err(ApiError::parameter)?;
    Ok(raw.to_owned())
}

/// `startId` of a stream read: `-` (the default) for the oldest entry, an id
/// (`1700000000000-0`, or `1700000000000` for its first entry), or `(` and an id to start
/// after it. Both numbers of an id are 64-bit unsigned. Everything else is refused here, with
/// the reason, so that Redis never refuses one: `+` (the end: a read from it is empty), `(-` and
/// `(+`, numbers past 2^64, and `(` before the largest id, which nothing comes after.
pub(crate) fn start_id(raw: Option<String>) -> Result<String, ApiError> {
    let Some(raw) = raw else {
        return Ok("-".to_owned());
    };
    check_text("startId", &raw).map_err(ApiError::parameter)?;
    if raw == "-" {
        return Ok(raw);
    }
    let invalid = |why: &str| {
        ApiError::parameter(format!(
            "startId {:?} is not valid: {why}; give - for the oldest entry, an id like \
             1700000000000-0 (or a millisecond time like 1700000000000), or ( and an id to start \
             after it",
            shorten(&raw)
        ))
    };
    let (exclusive, id) = match raw.strip_prefix('(') {
        Some(id) => (true, id),
        None => (false, raw.as_str()),
    };
    if id == "+" {
        return Err(invalid(
            "+ is the end of the stream, and nothing comes from it",
        ));
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    if !digits(ms) || !digits(seq) {
        return Err(invalid("an id is two whole numbers joined by -"));
    }
    if ms.parse::<u64>().is_err() || seq.parse::<u64>().is_err() {
        return Err(invalid(
            "the numbers of an id are at most 18446744073709551615 (2^64 - 1)",
        ));
    }
    if exclusive && after(id).is_none() {
        return Err(invalid("no id comes after the largest one"));
    }
    Ok(raw)
}

/// The `startId` of the read that goes on after entry `id` (`(id`); `None` after the largest id.
pub(crate) fn after(id: &str) -> Option<String> {
    let largest = id.split_once('-').is_some_and(|(ms, seq)| {
        ms.parse::<u64>() == Ok(u64::MAX) && seq.parse::<u64>() == Ok(u64::MAX)
    });
    (!largest).then(|| format!("({id}"))
}

/// A stream entry id as `XADD` makes them: `<milliseconds>-<sequence>`, both 64-bit unsigned
/// numbers (what Redis accepts, so a valid-looking id never becomes a Redis refusal).
pub(crate) fn entry_id(raw: &str) -> Result<(), String> {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok();
    match raw.split_once('-') {
        Some((ms, seq)) if digits(ms) && digits(seq) => Ok(()),
        _ => Err(format!(
            "{:?} is not a dead-letter id: expected a stream entry id like 1700000000000-0",
            shorten(raw)
        )),
    }
}

/// Refuses empty, overlong, and control or whitespace characters.
fn check_text(what: &str, raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err(format!("the {what} must not be empty"));
    }
    if raw.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the {what} is {} bytes long; at most {MAX_NAME_BYTES} are accepted",
            raw.len()
        ));
    }
    if let Some(c) = raw.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "the {what} {:?} contains {c:?}; names have no spaces or control characters",
            shorten(raw)
        ));
    }
    Ok(())
}

/// At most 64 characters of user input, for messages.
fn shorten(raw: &str) -> String {
    match raw.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &raw[..end]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        check_text("x", "events.raw").unwrap();
        for bad in ["", "a b", "a\u{7}", "a\u{a0}b"] {
            assert!(check_text("x", bad).is_err(), "{bad:?}");
        }
        assert!(check_text("x", &"a".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert_eq!(name("group", None).unwrap_err().kind, "invalid_parameter");
        assert_eq!(name("group", Some("g")).unwrap(), "g");
        assert_eq!(start_id(None).unwrap(), "-");
        for good in [
            "-",
            "0",
            "0-0",
            "(0",
            "(1-0",
            "1700000000000",
            "1700000000000-5",
            "18446744073709551615-18446744073709551615",
            "(18446744073709551615",
            "(18446744073709551615-18446744073709551614",
            "(18446744073709551614-18446744073709551615",
        ] {
            assert_eq!(start_id(Some(good.to_owned())).unwrap(), good);
        }
        for bad in [
            String::new(),
            "1".repeat(MAX_NAME_BYTES + 1),
            "1\u{0}".to_owned(),
            "+".to_owned(),
            "(".to_owned(),
            "(-".to_owned(),
            "(+".to_owned(),
            "((1-0".to_owned(),
            "(18446744073709551615-18446744073709551615".to_owned(),
            "18446744073709551616".to_owned(),
            "1-18446744073709551616".to_owned(),
            "99999999999999999999999-0".to_owned(),
            "1-".to_owned(),
            "-1".to_owned(),
            "1-2-3".to_owned(),
            "+1".to_owned(),
            "1-+2".to_owned(),
            "abc".to_owned(),
        ] {
            let error = start_id(Some(bad.clone())).unwrap_err();
            assert_eq!(error.kind, "invalid_parameter", "{bad:?}");
            assert!(error.message.contains("startId"), "{}", error.message);
        }
        assert_eq!(after("1-0").unwrap(), "(1-0");
        assert_eq!(after("18446744073709551615-18446744073709551615"), None);
    }

    #[test]
    fn counts_are_bounded() {
        assert_eq!(count(None, 7).unwrap(), 7);
        assert_eq!(count(Some("1"), 7).unwrap(), 1);
        assert_eq!(count(Some("1000"), 7).unwrap(), 1000);
        for bad in [
            "0",
            "1001",
            "-1",
            "ten",
            "",
            "1e3",
            "99999999999999999999999",
        ] {
            assert_eq!(
                count(Some(bad), 7).unwrap_err().kind,
                "invalid_parameter",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ids_are_checked() {
        entry_id("1700000000000-0").unwrap();
        entry_id("18446744073709551615-18446744073709551615").unwrap();
        for bad in [
            "",
            "1",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "(1-0",
            "+",
            "+1-0",
            "1-+0",
            "18446744073709551616-0",
            "99999999999999999999-0",
        ] {
            assert!(entry_id(bad).is_err(), "{bad:?}");
        }
    }
}
