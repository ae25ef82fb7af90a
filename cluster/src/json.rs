//! JSON text written by hand, for the records made on every call (a journal line, a saved
//! dialog, a CDR): serde_json escapes strings byte by byte through a table and writes
//! numbers and addresses through `core::fmt`, which made these records some 30,000
//! instructions of a call. What is written here is the text serde_json writes for the same
//! values (the tests hold the two equal), so the records are read back with serde.

/// Appends `s` as a JSON string literal, escaped as serde_json escapes it: `"` and `\`
/// with a backslash, the control characters below U+0020 as `\b \t \n \f \r` or `\u00XX`;
/// everything else (DEL, any non-ASCII character) as it is.
pub fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    if is_clean(s.as_bytes()) {
        out.push_str(s);
    } else {
        push_escaped(out, s);
    }
    out.push('"');
}

/// Whether no byte needs an escape. Most text has none: checked eight bytes at a time
/// (a word with a byte below 0x20, or equal to `"` or `\`, has a high bit left in the
/// mask), the last few one by one.
fn is_clean(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero (or, `x - n * ONES`, below n, for n <= 0x80): the high bit
    // of that byte is set; a higher byte may be flagged by a borrow only after a lower
    // byte that is flagged itself, so a zero mask is exact.
    let below = |x: u64, n: u64| x.wrapping_sub(n * ONES) & !x & HIGHS;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let x = u64::from_le_bytes(word);
        if below(x, 0x20)
            | below(x ^ (u64::from(b'"') * ONES), 1)
            | below(x ^ (u64::from(b'\\') * ONES), 1)
            != 0
        {
            return false;
        }
    }
    !words.remainder().iter().any(|&b| escaped(b))
}

fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn push_escaped(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if !escaped(b) {
            continue;
        }
        out.push_str(&s[start..i]);
        start = i + 1;
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x0c => out.push_str("\\f"),
            b'\r' => out.push_str("\\r"),
            _ => {
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
        }
    }
    out.push_str(&s[start..]);
}

/// A JSON object being written: its members in the order given, as serde_json writes a
/// struct (no spaces). [`Object::end`] closes it.
pub struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    /// Starts a member: writes its name and the colon; the caller writes the value into
    /// what is returned. Names are the program's own: written as they are (a debug build
    /// checks that none needs an escape).
    pub fn member(&mut self, name: &str) -> &mut String {
        debug_assert!(is_clean(name.as_bytes()), "{name:?}");
        self.out.push_str(if self.first { "\"" } else { ",\"" });
        self.first = false;
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }

    /// As [`Object::member`], for a name from outside (a map's key): escaped.
    pub fn member_escaped(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_str(self.out, name);
        self.out.push(':');
        self.out
    }

    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        push_str(self.member(name), value);
        self
    }

    /// `null` when absent.
    pub fn opt_str(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(name, v),
            None => self.raw(name, "null"),
        }
    }

    pub fn int(&mut self, name: &str, value: impl itoa::Integer) -> &mut Self {
        let mut digits = itoa::Buffer::new();
        self.member(name).push_str(digits.format(value));
        self
    }

    /// `null` when absent.
    pub fn opt_int(&mut self, name: &str, value: Option<impl itoa::Integer>) -> &mut Self {
        match value {
            Some(v) => self.int(name, v),
            None => self.raw(name, "null"),
        }
    }

    /// A member whose value is already JSON text.
    pub fn raw(&mut self, name: &str, json: &str) -> &mut Self {
        self.member(name).push_str(json);
        self
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

/// Appends a JSON array of strings.
pub fn push_str_array<'s>(out: &mut String, items: impl IntoIterator<Item = &'s str>) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, item);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn literal(s: &str) -> String {
        let mut out = String::new();
        push_str(&mut out, s);
        out
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "sip:alice@example.com;tag=1",
            "\"Alice\" <sip:a@b>",
            "back\\slash",
            "tab\tnew\nline\r\u{8}\u{c}",
            "\u{0}\u{1f}\u{7f}",
            "Grüße, 日本",
            "sixteen bytes!!\"",
        ] {
            assert_eq!(literal(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn objects_are_written_as_serde_json_writes_a_struct() {
        #[derive(serde::Serialize)]
        struct S<'a> {
            a: &'a str,
            b: Option<&'a str>,
            c: u64,
            d: Option<i64>,
            e: Vec<&'a str>,
        }
        let s = S {
            a: "x\"y",
            b: None,
            c: 42,
            d: Some(-7),
            e: vec!["p", "q\n"],
        };
        let mut out = String::new();
        let mut o = Object::new(&mut out);
        o.str("a", s.a)
            .opt_str("b", s.b)
            .int("c", s.c)
            .opt_int("d", s.d);
        push_str_array(o.member("e"), s.e.iter().copied());
        o.end();
        assert_eq!(out, serde_json::to_string(&s).unwrap());
    }

    proptest! {
        /// The word at a time check against the byte at a time one, on text made mostly
        /// of the bytes near the ones it looks for.
        #[test]
        fn the_word_check_equals_the_byte_check(
            bytes in proptest::collection::vec(
                prop_oneof![0u8..0x24, 0x5a..0x5fu8, 0x7e..0x82u8, any::<u8>()], 0..40)
        ) {
            prop_assert_eq!(is_clean(&bytes), !bytes.iter().any(|&b| escaped(b)));
        }

        #[test]
        fn any_string_reads_back_as_itself(s in any::<String>()) {
            let text = literal(&s);
            prop_assert_eq!(&text, &serde_json::to_string(&s).unwrap());
            prop_assert_eq!(serde_json::from_str::<String>(&text).unwrap(), s);
        }
    }
}
