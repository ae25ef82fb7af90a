//! Header field names: the ones an SBC reads get a variant, compact forms (RFC 3261 §7.3.3)
//! map to their long names, anything else is [`HeaderName::Other`] and travels unchanged.

/// A header field name, recognised case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Accept,
    Allow,
    Authorization,
    CallId,
    Contact,
    ContentEncoding,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Event,
    Expires,
    From,
    MaxForwards,
    MinExpires,
    Path,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RecordRoute,
    ReferTo,
    Require,
    RetryAfter,
    Route,
    Server,
    Subject,
    Supported,
    To,
    Unsupported,
    UserAgent,
    Via,
    WwwAuthenticate,
    /// Any other name, kept as written.
    Other,
}

impl HeaderName {
    /// Recognises `name` (already trimmed), compact forms included.
    pub fn from_bytes(name: &[u8]) -> Self {
        use HeaderName::*;
        // Length and first letter pick the one name it can be (Call-ID and Contact also
        // need the second), then one case-insensitive comparison decides: this runs for
        // every header line of every message.
        let Some(&first) = name.first() else {
            return Other;
        };
        let letter = first | 0x20;
        if name.len() == 1 {
            return match letter {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'k' => Supported,
                b's' => Subject,
                b'e' => ContentEncoding,
                b'o' => Event,
                b'u' => Allow,
                b'r' => ReferTo,
                _ => Other,
            };
        }
        let candidate = match (name.len(), letter) {
            (2, b't') => To,
            (3, b'v') => Via,
            (4, b'f') => From,
            (4, b'c') => CSeq,
            (4, b'p') => Path,
            (4, b'd') => Date,
            (5, b'e') => Event,
            (5, b'a') => Allow,
            (5, b'r') => Route,
            (6, b'a') => Accept,
            (6, b's') => Server,
            (7, b'c') if name[1] | 0x20 == b'a' => CallId,
            (7, b'c') => Contact,
            (7, b's') => Subject,
            (7, b'e') => Expires,
            (7, b'r') => Require,
            (8, b'r') => ReferTo,
            (9, b's') => Supported,
            (10, b'u') => UserAgent,
            (11, b'm') => MinExpires,
            (11, b'r') => RetryAfter,
            (11, b'u') => Unsupported,
            (12, b'c') => ContentType,
            (12, b'm') => MaxForwards,
            (12, b'r') => RecordRoute,
            (13, b'a') => Authorization,
            (13, b'p') => ProxyRequire,
            (14, b'c') => ContentLength,
            (16, b'c') => ContentEncoding,
            (16, b'w') => WwwAuthenticate,
            (18, b'p') => ProxyAuthenticate,
            (19, b'p') => ProxyAuthorization,
            _ => return Other,
        };
        // Names are nearly always written as the RFC writes them: an exact comparison first.
        let canonical = candidate.as_str().as_bytes();
        if name == canonical || name.eq_ignore_ascii_case(canonical) {
            candidate
        } else {
            Other
        }
    }

    /// The canonical long name, as written when Limes adds the header.
    pub fn as_str(self) -> &'static str {
        use HeaderName::*;
        match self {
            Accept => "Accept",
            Allow => "Allow",
            Authorization => "Authorization",
            CallId => "Call-ID",
            Contact => "Contact",
            ContentEncoding => "Content-Encoding",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            CSeq => "CSeq",
            Date => "Date",
            Event => "Event",
            Expires => "Expires",
            From => "From",
            MaxForwards => "Max-Forwards",
            MinExpires => "Min-Expires",
            Path => "Path",
            ProxyAuthenticate => "Proxy-Authenticate",
            ProxyAuthorization => "Proxy-Authorization",
            ProxyRequire => "Proxy-Require",
            RecordRoute => "Record-Route",
            ReferTo => "Refer-To",
            Require => "Require",
            RetryAfter => "Retry-After",
            Route => "Route",
            Server => "Server",
            Subject => "Subject",
            Supported => "Supported",
            To => "To",
            Unsupported => "Unsupported",
            UserAgent => "User-Agent",
            Via => "Via",
            WwwAuthenticate => "WWW-Authenticate",
            Other => "",
        }
    }

    /// Headers whose value is a comma-separated list that may also be split over several
    /// lines (RFC 3261 §7.3.1); the others hold one value.
    pub fn is_list(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            Via | Contact
                | Route
                | RecordRoute
                | Path
                | Allow
                | Supported
                | Require
                | ProxyRequire
                | Unsupported
                | Accept
                | ContentEncoding
        )
    }

    /// Headers that RFC 3261 allows only once per message; a second one is a 400.
    pub fn is_single(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            CallId | CSeq | From | To | MaxForwards | ContentType | Expires | MinExpires
        )
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName::{self, *};

    #[test]
    fn names_and_compact_forms_are_case_insensitive() {
        let table: &[(&str, HeaderName)] = &[
            ("Via", Via),
            ("vIA", Via),
            ("v", Via),
            ("V", Via),
            ("f", From),
            ("t", To),
            ("i", CallId),
            ("m", Contact),
            ("l", ContentLength),
            ("c", ContentType),
            ("k", Supported),
            ("s", Subject),
            ("e", ContentEncoding),
            ("o", Event),
            ("u", Allow),
            ("CALL-ID", CallId),
            ("cseq", CSeq),
            ("Max-Forwards", MaxForwards),
            ("record-route", RecordRoute),
            ("WWW-Authenticate", WwwAuthenticate),
            ("Proxy-Authorization", ProxyAuthorization),
            ("Unsupported", Unsupported),
            ("Content-Length", ContentLength),
            ("Content-Encoding", ContentEncoding),
            ("X-Carrier", Other),
            ("x", Other),
            ("Vias", Other),
            ("r", ReferTo),
            // Same length and first letter as a known name, but not it.
            ("Contakt", Other),
            ("Call-IX", Other),
            ("Vix", Other),
            ("Tx", Other),
            ("\u{0}ia", Other),
        ];
        for (name, want) in table {
            assert_eq!(HeaderName::from_bytes(name.as_bytes()), *want, "{name}");
        }
    }

    #[test]
    fn every_long_name_is_recognised_in_any_case() {
        let all = [
            Accept,
            Allow,
            Authorization,
            CallId,
            Contact,
            ContentEncoding,
            ContentLength,
            ContentType,
            CSeq,
            Date,
            Event,
            Expires,
            From,
            MaxForwards,
            MinExpires,
            Path,
            ProxyAuthenticate,
            ProxyAuthorization,
            ProxyRequire,
            RecordRoute,
            ReferTo,
            Require,
            RetryAfter,
            Route,
            Server,
            Subject,
            Supported,
            To,
            Unsupported,
            UserAgent,
            Via,
            WwwAuthenticate,
        ];
        for h in all {
            let name = h.as_str();
            for written in [name.to_owned(), name.to_lowercase(), name.to_uppercase()] {
                assert_eq!(HeaderName::from_bytes(written.as_bytes()), h, "{written}");
            }
        }
    }
}
