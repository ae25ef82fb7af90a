//! Bounds on what one message may contain.
//!
//! Every bound is checked before the work it guards, so an oversized input costs at most
//! the bound, never an allocation proportional to the attack.

/// Configurable bounds for parsing; [`Limits::default`] gives values that fit every message
/// of RFC 4475 and RFC 5118 and any real carrier traffic seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, start line to end of body, in octets (default 65,535: the largest UDP
    /// payload). Past it: 513 Message Too Large.
    pub max_message_size: usize,
    /// Most header fields (lines, after unfolding) in one message (default 128).
    pub max_headers: usize,
    /// Longest start line or header field, after unfolding, in octets (default 8,192).
    pub max_line_len: usize,
    /// Most comma-separated values read from one header list such as Via or Contact
    /// (default 64).
    pub max_list_values: usize,
    /// Longest URI in the Request-URI or a name-addr, in octets (default 2,048).
    pub max_uri_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 65_535,
            max_headers: 128,
            max_line_len: 8_192,
            max_list_values: 64,
            max_uri_len: 2_048,
        }
    }
}
