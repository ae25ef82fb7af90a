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
        let mut lower = [0u8; 19];
        if name.is_empty() || name.len() > lower.len() {
            return Other;
        }
        for (l, b) in lower.iter_mut().zip(name) {
            *l = b.to_ascii_lowercase();
        }
        match &lower[..name.len()] {
            b"v" | b"via" => Via,
            b"f" | b"from" => From,
            b"t" | b"to" => To,
            b"i" | b"call-id" => CallId,
            b"m" | b"contact" => Contact,
            b"l" | b"content-length" => ContentLength,
            b"c" | b"content-type" => ContentType,
            b"k" | b"supported" => Supported,
            b"s" | b"subject" => Subject,
            b"e" | b"content-encoding" => ContentEncoding,
            b"o" | b"event" => Event,
            b"u" | b"allow" => Allow,
            b"r" | b"refer-to" => ReferTo,
            b"cseq" => CSeq,
            b"path" => Path,
            b"date" => Date,
            b"route" => Route,
            b"accept" => Accept,
            b"server" => Server,
            b"expires" => Expires,
            b"require" => Require,
            b"user-agent" => UserAgent,
            b"min-expires" => MinExpires,
            b"retry-after" => RetryAfter,
            b"unsupported" => Unsupported,
            b"max-forwards" => MaxForwards,
            b"record-route" => RecordRoute,
            b"authorization" => Authorization,
            b"proxy-require" => ProxyRequire,
            b"www-authenticate" => WwwAuthenticate,
            b"proxy-authenticate" => ProxyAuthenticate,
            b"proxy-authorization" => ProxyAuthorization,
            _ => Other,
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
