//! Small lexical helpers shared by the header views: whitespace, tokens, quoted strings,
//! separated lists and numbers, all on borrowed text.

/// Linear white space as SIP sees it after unfolding: space and horizontal tab.
#[inline]
pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

#[inline]
pub(crate) fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    let (mut start, mut end) = (0, b.len());
    while start < end && is_ws(b[start]) {
        start += 1;
    }
    while end > start && is_ws(b[end - 1]) {
        end -= 1;
    }
    &s[start..end]
}

/// Index of the first `b` in `s`: a plain loop on the short strings of URIs and
/// parameters (below the length where SIMD `memchr` repays its set-up), `memchr` past it.
#[inline]
pub(crate) fn find_byte(s: &str, b: u8) -> Option<usize> {
    let bytes = s.as_bytes();
    if bytes.len() < 32 {
        bytes.iter().position(|&c| c == b)
    } else {
        memchr::memchr(b, bytes)
    }
}

/// RFC 3261 §25.1 `token` characters, as a table: the header-name check runs on every
/// byte of every header name.
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    t
};

#[inline]
pub(crate) fn is_token_byte(b: u8) -> bool {
    TOKEN[b as usize]
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Splits `s` at each top-level `sep`: separators inside a quoted string (with `\`
/// escapes) or inside `<...>` do not count. Yields at most `max` parts, the last one
/// holding the rest; `None` marks an unterminated quote or bracket.
pub(crate) fn split_top(s: &str, sep: u8) -> SplitTop<'_> {
    SplitTop { rest: Some(s), sep }
}

pub(crate) struct SplitTop<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for SplitTop<'a> {
    type Item = Result<&'a str, Unbalanced>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.rest?;
        match find_top(s, self.sep) {
            Ok(Some(i)) => {
                self.rest = Some(&s[i + 1..]);
                Some(Ok(&s[..i]))
            }
            Ok(None) => {
                self.rest = None;
                Some(Ok(s))
            }
            Err(e) => {
                self.rest = None;
                Some(Err(e))
            }
        }
    }
}

/// A quoted string or an angle bracket that never closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unbalanced;

/// Index of the first top-level `sep` in `s`.
pub(crate) fn find_top(s: &str, sep: u8) -> Result<Option<usize>, Unbalanced> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(off) = memchr::memchr3(sep, b'"', b'<', &b[i..]) {
        let at = i + off;
        match b[at] {
            b'"' => i = end_of_quoted(b, at)?,
            b'<' => match memchr::memchr(b'>', &b[at..]) {
                Some(close) => i = at + close + 1,
                None => return Err(Unbalanced),
            },
            _ => return Ok(Some(at)),
        }
        if i >= b.len() {
            break;
        }
    }
    Ok(None)
}

/// Given `b[start] == '"'`, the index just past the closing quote.
pub(crate) fn end_of_quoted(b: &[u8], start: usize) -> Result<usize, Unbalanced> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(Unbalanced)
}

/// Removes the quotes of a quoted string (escapes are kept as written); other text is
/// returned trimmed.
pub(crate) fn unquote(s: &str) -> &str {
    let s = trim(s);
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// Parses decimal digits only (no sign, no spaces) into a `u32`; `None` on overflow.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    // Ten digits at most: the sum fits in 64 bits.
    let mut n = 0u64;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    u32::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_top_respects_quotes_and_brackets() {
        let parts: Vec<_> = split_top(r#""a,b" <sip:x;y,z>, c"#, b',')
            .map(|p| p.unwrap())
            .collect();
        assert_eq!(parts, vec![r#""a,b" <sip:x;y,z>"#, " c"]);
        assert!(split_top(r#""open, x"#, b',').any(|p| p.is_err()));
        assert!(split_top("<sip:a, b", b',').any(|p| p.is_err()));
    }

    #[test]
    fn numbers_do_not_overflow() {
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("36893488147419103232"), None);
        assert_eq!(parse_u32("-1"), None);
        assert_eq!(parse_u32(""), None);
    }
}
