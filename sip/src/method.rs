//! SIP methods: the RFC 3261 set and the common extensions get a variant, any other token
//! is an extension method kept as written (RFC 4475 §3.1.1.2).

use std::fmt;

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// An extension method (a `token`), case-sensitive as RFC 3261 §7.1 says.
    Extension(Bytes),
}

impl Method {
    /// Recognises a method name. Method names are case-sensitive (RFC 3261 §7.1), so
    /// `invite` is an extension method, not INVITE.
    pub fn from_bytes(b: &[u8]) -> Self {
        match b {
            b"INVITE" => Self::Invite,
            b"ACK" => Self::Ack,
            b"BYE" => Self::Bye,
            b"CANCEL" => Self::Cancel,
            b"REGISTER" => Self::Register,
            b"OPTIONS" => Self::Options,
            b"INFO" => Self::Info,
            b"UPDATE" => Self::Update,
            b"PRACK" => Self::Prack,
            b"SUBSCRIBE" => Self::Subscribe,
            b"NOTIFY" => Self::Notify,
            b"REFER" => Self::Refer,
            b"MESSAGE" => Self::Message,
            b"PUBLISH" => Self::Publish,
            other => Self::Extension(Bytes::copy_from_slice(other)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Extension methods are checked to be tokens (ASCII) before they are built.
            Self::Extension(b) => std::str::from_utf8(b).unwrap_or("EXTENSION"),
            known => known.label(),
        }
    }

    /// The method's name, and a bounded label for metrics: extension methods share one
    /// value, `other`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Extension(_) => "other",
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Register => "REGISTER",
            Self::Options => "OPTIONS",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Publish => "PUBLISH",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
