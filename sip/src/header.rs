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
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
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
        let candidates: &[(&[u8], HeaderName)] = match name.len() {
            2 => &[(b"to", To)],
            3 => &[(b"via", Via)],
            4 => &[
                (b"from", From),
                (b"cseq", CSeq),
                (b"path", Path),
                (b"date", Date),
            ],
            5 => &[(b"route", Route), (b"allow", Allow), (b"event", Event)],
            6 => &[(b"accept", Accept), (b"server", Server)],
            7 => &[
                (b"call-id", CallId),
                (b"contact", Contact),
                (b"expires", Expires),
                (b"require", Require),
                (b"subject", Subject),
            ],
            8 => &[(b"refer-to", ReferTo)],
            9 => &[(b"supported", Supported)],
            10 => &[(b"user-agent", UserAgent)],
            11 => &[
                (b"min-expires", MinExpires),
                (b"retry-after", RetryAfter),
                (b"unsupported", Unsupported),
            ],
            12 => &[
                (b"max-forwards", MaxForwards),
                (b"content-type", ContentType),
                (b"record-route", RecordRoute),
            ],
            13 => &[
                (b"authorization", Authorization),
                (b"proxy-require", ProxyRequire),
            ],
            14 => &[(b"content-length", ContentLength)],
            16 => &[
                (b"www-authenticate", WwwAuthenticate),
                (b"content-encoding", ContentEncoding),
            ],
            18 => &[(b"proxy-authenticate", ProxyAuthenticate)],
            19 => &[(b"proxy-authorization", ProxyAuthorization)],
            _ => &[],
        };
        candidates
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(Other, |&(_, h)| h)
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
}
