//! Redaction of credentials in connection URLs, for `Debug`, `Display`, errors and logs.

use std::borrow::Cow;
use std::fmt;

/// Returns `url` with any password replaced by `***`.
///
/// `redis://user:secret@host:6379/0` becomes `redis://user:***@host:6379/0`, and
/// `redis://:secret@host` becomes `redis://:***@host`. A URL without a password is returned
/// unchanged (and without allocating). Text that is not a URL is returned unchanged unless it
/// looks like it carries credentials, in which case everything before `@` is masked.
#[must_use]
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return match url.rfind('@') {
            Some(at) => Cow::Owned(format!("***{}", &url[at..])),
            None => Cow::Borrowed(url),
        };
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // The userinfo ends at the last '@' of the authority (a password may itself contain '@').
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(url);
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => {
            let user = &userinfo[..colon];
            Cow::Owned(format!(
                "{}{user}:***{}",
                &url[..authority_start],
                &url[authority_start + at..]
            ))
        }
        // `redis://secret@host`: redis-rs reads a lone userinfo as the password... only with a
        // colon, but other clients differ; mask it to be safe.
        None => Cow::Owned(format!(
            "{}***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        )),
    }
}

/// A URL that prints with its password redacted, for use in `Debug` and `Display`.
///
/// ```
/// use redstream_core::RedactedUrl;
/// let url = RedactedUrl("redis://app:hunter2@cache:6379/1");
/// assert_eq!(url.to_string(), "redis://app:***@cache:6379/1");
/// assert_eq!(format!("{url:?}"), "\"redis://app:***@cache:6379/1\"");
/// ```
#[derive(Clone, Copy)]
pub struct RedactedUrl<'a>(pub &'a str);

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.0))
    }
}

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*redact_url(self.0), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://:secret@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "rediss://app:secret@cache:6380/2",
                "rediss://app:***@cache:6380/2",
            ),
            ("redis://app:p@ss@cache/0", "redis://app:***@cache/0"),
            ("redis://secret@cache", "redis://***@cache"),
            ("redis://cache/0?user=x", "redis://cache/0?user=x"),
            (
                "redis+unix:///tmp/redis.sock",
                "redis+unix:///tmp/redis.sock",
            ),
            ("user:secret@host", "***@host"),
            ("not a url", "not a url"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "{input}");
        }
    }

    #[test]
    fn unchanged_urls_do_not_allocate() {
        assert!(matches!(redact_url("redis://h:1/0"), Cow::Borrowed(_)));
    }
}
