//! Redaction of credentials in connection URLs, for `Debug`, `Display`, errors and logs.

use std::borrow::Cow;
use std::fmt;

/// Returns `url` with any password replaced by `***`.
///
/// `redis://user:secret@host:6379/0` becomes `redis://user:***@host:6379/0`, and
/// `redis://:secret@host` becomes `redis://:***@host`. A URL without a password is returned
/// unchanged (and without allocating).
///
/// The rule cannot leak whatever the password holds: everything between `://` and the **last**
/// `@` of the whole text is taken as credentials, so an unencoded `/`, `?`, `#` or `@` in a
/// password (base64 passwords often hold `/`) is masked with the rest. The user name before the
/// first `:` is kept only when it holds none of `/?#` and the scheme is one of a Redis
/// connection (`redis`, `rediss`, `valkey`, the `unix` and Sentinel forms); otherwise all of
/// it is masked. The
/// values of `password`, `pass`, `passwd`, `pwd`, `secret` and `token` query parameters
/// (`redis+unix:///run/redis.sock?pass=...`) are masked too. Text without `://`, or whose
/// `://` does not follow a scheme (a letter, then letters, digits, `+`, `-` or `.`), is masked
/// before its last `@`. When in doubt (an `@` in a path or a query), more is masked, never
/// less.
#[must_use]
pub fn redact_url(url: &str) -> Cow<'_, str> {
    // Query parameters first, so that an `@` inside a `pass=` value is masked with it.
    let masked = mask_query(url);
    match mask_userinfo(&masked) {
        Some(out) => Cow::Owned(out),
        None => masked,
    }
}

/// `text` with everything between `://` and its last `@` masked (see [`redact_url`]), or
/// `None` when it has no `@`.
fn mask_userinfo(text: &str) -> Option<String> {
    // A `://` counts only after a scheme as RFC 3986 spells one (a letter, then letters,
    // digits, `+`, `-` or `.`): one inside a password (`:pa://ss@host`) must not make the text
    // before it look like a scheme and the password like a host.
    let scheme_end = text.find("://").filter(|&end| is_scheme(&text[..end]));
    let Some(scheme_end) = scheme_end else {
        let at = text.rfind('@')?;
        return Some(format!("***{}", &text[at..]));
    };
    let start = scheme_end + 3;
    let at = start + text[start..].rfind('@')?;
    let userinfo = &text[start..at];
    // The user name is kept only in a URL of a scheme a Redis connection uses: in any other
    // text, `name://` may be the start of a password written after a user name without a
    // scheme (`app://secret@host` for the user `app` and the password `//secret`), and what
    // looks like a user name would be part of the password.
    let kept_user = match userinfo.split_once(':') {
        Some((user, _))
            if !user.contains(['/', '?', '#'])
                && REDIS_SCHEMES
                    .iter()
                    .any(|scheme| text[..scheme_end].eq_ignore_ascii_case(scheme)) =>
        {
            Some(user)
        }
        _ => None,
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    if let Some(user) = kept_user {
        out.push_str(user);
        out.push(':');
    }
    out.push_str("***");
    out.push_str(&text[at..]);
    Some(out)
}

/// The schemes of Redis connection URLs (redis-rs's, Valkey's and the Sentinel forms redstream
/// reads): the only ones whose user name a redacted URL shows.
const REDIS_SCHEMES: [&str; 8] = [
    "redis",
    "rediss",
    "redis+unix",
    "unix",
    "valkey",
    "valkeys",
    "redis-sentinel",
    "rediss-sentinel",
];

/// Whether `text` is a URL scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `text` with the values of credential-like query parameters masked.
fn mask_query(text: &str) -> Cow<'_, str> {
    const SECRET_PARAMS: [&str; 6] = ["password", "pass", "passwd", "pwd", "secret", "token"];
    let Some(query_start) = text.find('?') else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..=query_start]);
    let mut changed = false;
    for (i, pair) in text[query_start + 1..].split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p)) => {
                out.push_str(name);
                out.push_str("=***");
                changed = true;
            }
            _ => out.push_str(pair),
        }
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
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
            // The shapes that leaked: unencoded `/`, `#`, `?` and `@` in a password.
            (
                "redis://:sec/ret@127.0.0.1:6379",
                "redis://:***@127.0.0.1:6379",
            ),
            ("redis://u:c#an?ary@h:1/0", "redis://u:***@h:1/0"),
            ("redis://:a@b/c?d#e@h", "redis://:***@h"),
            ("redis://:canary@@h", "redis://:***@h"),
            ("redis://us/er:x@h", "redis://***@h"),
            // A `://` inside a password, with no scheme in front (found by the canary).
            (":CANARYXCANARYY://@127.0.0.1:6379", "***@127.0.0.1:6379"),
            ("u:pa://ss@h", "***@h"),
            // The user `a` and the password `//CANARYX:CANARYY` without a scheme read as the
            // scheme `a` (found by the canary): another scheme's user name is masked too.
            (
                "a://CANARYX:CANARYY@127.0.0.1:6379",
                "a://***@127.0.0.1:6379",
            ),
            ("http://user:pw@proxy:3128", "http://***@proxy:3128"),
            ("VALKEYS://app:pw@cache", "VALKEYS://app:***@cache"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=secret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "redis-sentinel://:pw@s1:26379,s2:26379/mymaster",
                "redis-sentinel://:***@s1:26379,s2:26379/mymaster",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "{input}");
        }
    }

    #[test]
    fn unchanged_urls_do_not_allocate() {
        assert!(matches!(redact_url("redis://h:1/0"), Cow::Borrowed(_)));
    }

    mod canary {
        use proptest::prelude::*;

        use super::super::redact_url;

        /// Characters a password may hold unencoded by mistake, and base64's alphabet.
        fn noise() -> impl Strategy<Value = String> {
            "[A-Za-z0-9+/=:@#?%&._~ -]{0,12}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]
            /// Whatever the URL's shape, no part of the password survives redaction.
            #[test]
            fn no_password_survives(
                scheme in prop::sample::select(vec![
                    "redis://", "rediss://", "redis+unix://", "unix://", "redis-sentinel://", "", "http://",
                ]),
                // Never a Redis scheme's name: with no scheme and a password starting with
                // `//`, `redis` + `:` + `//X:Y` is `redis://X:Y`, a URL whose user name is `X`
                // by any reading, and whose user name the redactor shows.
                user in "[a-z]{0,6}".prop_filter("a Redis scheme's name", |user| {
                    !matches!(user.as_str(), "redis" | "rediss" | "unix" | "valkey")
                }),
                a in noise(), b in noise(), c in noise(),
                host in prop::sample::select(vec![
                    "127.0.0.1:6379", "[::1]:6379", "cache", "s1:26379,s2:26379", "/run/redis.sock",
                ]),
                path in prop::sample::select(vec!["", "/0", "/mymaster", "/0?protocol=resp3"]),
                in_query in any::<bool>(),
            ) {
                let password = format!("{a}CANARYX{b}CANARYY{c}");
                let url = if in_query {
                    format!("{scheme}{host}{path}?db=0&pass={}", password.replace(['&', '#'], "_"))
                } else {
                    format!("{scheme}{user}:{password}@{host}{path}")
                };
                let shown = redact_url(&url);
                prop_assert!(!shown.contains("CANARYX") && !shown.contains("CANARYY"), "{} -> {}", url, shown);
            }
        }
    }
}
