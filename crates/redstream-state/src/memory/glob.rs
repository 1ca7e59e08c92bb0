//! Redis's glob (`SCAN .. MATCH`, `stringmatchlen`), for `list_keys_matching` in memory.

/// Whether `text` matches the glob `pattern` the way Redis's `MATCH` (`stringmatchlen`) reads
/// it: `*` any run of bytes, `?` one byte, `[abc]`, `[^abc]`, `[a-z]` one byte of (or not of) a
/// set, `\` makes the next byte literal (also inside a set); everything else is literal.
pub(super) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, and the text it last stopped at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            if pattern[p] == b'*' {
                p += 1;
                star = Some((p, t));
                continue;
            }
            if let Some(len) = match_one(&pattern[p..], text[t]) {
                p += len;
                t += 1;
                continue;
            }
        }
        // Every token but `*` matches exactly one byte, so trying the last `*` one byte longer
        // is the only way left.
        let Some((after, from)) = star else {
            return false;
        };
        p = after;
        t = from + 1;
        star = Some((after, from + 1));
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// If the token at the start of `pattern` (not `*`) matches the byte `c`, how many pattern bytes
/// it spans.
fn match_one(pattern: &[u8], c: u8) -> Option<usize> {
    match pattern[0] {
        b'?' => Some(1),
        // A trailing `\` is literal, as in Redis.
        b'\\' if pattern.len() >= 2 => (pattern[1] == c).then_some(2),
        b'[' => {
            let mut i = 1;
            let negated = pattern.get(i) == Some(&b'^');
            if negated {
                i += 1;
            }
            let mut matched = false;
            // An unterminated set ends with the pattern, as in Redis.
            while i < pattern.len() {
                let b = pattern[i];
                if b == b'\\' && i + 1 < pattern.len() {
                    i += 1;
                    matched |= pattern[i] == c;
                } else if b == b']' {
                    break;
                } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
                    let (lo, hi) = (b.min(pattern[i + 2]), b.max(pattern[i + 2]));
                    matched |= (lo..=hi).contains(&c);
                    i += 2;
                } else {
                    matched |= b == c;
                }
                i += 1;
            }
            let len = (i + 1).min(pattern.len());
            (matched != negated).then_some(len)
        }
        b => (b == c).then_some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_as_redis_reads_them() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:1", true),
            ("user:*", "users:1", false),
            ("u?er", "user", true),
            ("u?er", "uer", false),
            ("*:1", "a:b:1", true),
            ("a*b*c", "abxbc", true),
            ("a*b*c", "acb", false),
            ("[abc]x", "bx", true),
            ("[abc]x", "dx", false),
            ("[^abc]x", "dx", true),
            ("[^abc]x", "ax", false),
            ("[a-c]", "b", true),
            ("[c-a]", "b", true),
            ("[a-c]", "d", false),
            ("[\\]]", "]", true),
            ("[]", "]", false),
            ("[ab", "a", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("a\\", "a\\", true),
            ("\\[x\\]", "[x]", true),
            ("**", "abc", true),
        ];
        for &(pattern, text, expected) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern:?} on {text:?}"
            );
        }
    }
}
