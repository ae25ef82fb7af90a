//! HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760): MD5, SHA-256 and
//! SHA-512/256, each also in its `-sess` form; `qop=auth` and `auth-int`; stateless nonces
//! (an HMAC of their timestamp, so any node holding the secret can check them, and an old
//! one is answered `stale=true`); `nc` read as hex and guarded against replay.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Sha256, Sha512_256};

use crate::text::{split_top, trim, unquote};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Self> {
        let s = unquote(s);
        [
            ("MD5", Self::Md5),
            ("MD5-sess", Self::Md5Sess),
            ("SHA-256", Self::Sha256),
            ("SHA-256-sess", Self::Sha256Sess),
            ("SHA-512-256", Self::Sha512_256),
            ("SHA-512-256-sess", Self::Sha512_256Sess),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, a)| a)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
            Self::Sha512_256 => "SHA-512-256",
            Self::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(
            self,
            Self::Md5Sess | Self::Sha256Sess | Self::Sha512_256Sess
        )
    }

    /// The HA1 a subscriber table stores for this algorithm's hash (the `-sess` forms use
    /// their base hash's HA1).
    pub fn base(self) -> Self {
        match self {
            Self::Md5 | Self::Md5Sess => Self::Md5,
            Self::Sha256 | Self::Sha256Sess => Self::Sha256,
            Self::Sha512_256 | Self::Sha512_256Sess => Self::Sha512_256,
        }
    }

    /// Lower-case hex of the hash of `parts` joined by `:`.
    pub fn hash(self, parts: &[&[u8]]) -> String {
        fn run<D: md5::Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            hex(&d.finalize())
        }
        match self.base() {
            Self::Md5 => run::<Md5>(parts),
            Self::Sha256 => run::<Sha256>(parts),
            _ => run::<Sha512_256>(parts),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// HA1 = H(username ":" realm ":" password), what a subscriber table stores instead of
/// the password.
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    Auth,
    AuthInt,
}

impl Qop {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthInt => "auth-int",
        }
    }
}

/// Why credentials or a challenge could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DigestError(pub &'static str);

/// `Digest k=v, k="v", ...` -> the parameter list, or an error for another scheme.
fn digest_params(value: &str) -> Result<impl Iterator<Item = (&str, &str)>, DigestError> {
    let value = trim(value);
    let sp = value
        .find([' ', '\t'])
        .ok_or(DigestError("not a Digest value"))?;
    if !value[..sp].eq_ignore_ascii_case("Digest") {
        return Err(DigestError("authentication scheme is not Digest"));
    }
    Ok(split_top(&value[sp..], b',')
        .filter_map(Result::ok)
        .filter_map(|p| {
            let i = p.find('=')?;
            Some((trim(&p[..i]), unquote(&p[i + 1..])))
        })
        .take(32))
}

/// A WWW-Authenticate or Proxy-Authenticate challenge, borrowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge<'a> {
    pub realm: &'a str,
    pub nonce: &'a str,
    pub opaque: Option<&'a str>,
    pub algorithm: Option<&'a str>,
    pub qop: Option<&'a str>,
    pub stale: bool,
}

impl<'a> Challenge<'a> {
    pub fn parse(value: &'a str) -> Result<Self, DigestError> {
        let mut c = Challenge::default();
        for (k, v) in digest_params(value)? {
            match k.to_ascii_lowercase().as_str() {
                "realm" => c.realm = v,
                "nonce" => c.nonce = v,
                "opaque" => c.opaque = Some(v),
                "algorithm" => c.algorithm = Some(v),
                "qop" => c.qop = Some(v),
                "stale" => c.stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if c.nonce.is_empty() {
            return Err(DigestError("challenge without nonce"));
        }
        Ok(c)
    }

    pub fn algorithm(&self) -> Option<Algorithm> {
        self.algorithm
            .map_or(Some(Algorithm::Md5), Algorithm::parse)
    }

    /// The qop a client picks: `auth` when offered, else `auth-int`, else none (RFC 2069).
    pub fn pick_qop(&self) -> Option<Qop> {
        let offered = self.qop?;
        let has = |q: &str| offered.split(',').any(|o| trim(o).eq_ignore_ascii_case(q));
        if has("auth") {
            Some(Qop::Auth)
        } else if has("auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }
}

/// The value of a challenge header this element sends.
pub fn challenge_value(
    realm: &str,
    nonce: &str,
    algorithm: Algorithm,
    stale: bool,
    opaque: Option<&str>,
) -> String {
    let mut s = format!(
        "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
        algorithm.as_str()
    );
    if let Some(o) = opaque {
        let _ = write!(s, ", opaque=\"{o}\"");
    }
    if stale {
        s.push_str(", stale=true");
    }
    s
}

/// An Authorization or Proxy-Authorization value, borrowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
    pub uri: &'a str,
    pub response: &'a str,
    pub algorithm: Option<&'a str>,
    pub cnonce: Option<&'a str>,
    pub opaque: Option<&'a str>,
    pub qop: Option<&'a str>,
    /// The nonce count, read as the 8 hex digits RFC 7616 §3.4 says it is.
    pub nc: Option<u32>,
}

impl<'a> Credentials<'a> {
    pub fn parse(value: &'a str) -> Result<Self, DigestError> {
        let mut c = Credentials::default();
        for (k, v) in digest_params(value)? {
            match k.to_ascii_lowercase().as_str() {
                "username" => c.username = v,
                "realm" => c.realm = v,
                "nonce" => c.nonce = v,
                "uri" => c.uri = v,
                "response" => c.response = v,
                "algorithm" => c.algorithm = Some(v),
                "cnonce" => c.cnonce = Some(v),
                "opaque" => c.opaque = Some(v),
                "qop" => c.qop = Some(v),
                "nc" => {
                    let ok = v.len() == 8 && v.bytes().all(|b| b.is_ascii_hexdigit());
                    c.nc = Some(
                        u32::from_str_radix(v, 16)
                            .ok()
                            .filter(|_| ok)
                            .ok_or(DigestError("malformed nc"))?,
                    );
                }
                _ => {}
            }
        }
        if c.username.is_empty() || c.nonce.is_empty() || c.response.is_empty() || c.uri.is_empty()
        {
            return Err(DigestError(
                "credentials miss username, nonce, uri or response",
            ));
        }
        if c.qop.is_some() && (c.cnonce.is_none() || c.nc.is_none()) {
            return Err(DigestError("qop without cnonce or nc"));
        }
        Ok(c)
    }

    pub fn algorithm(&self) -> Option<Algorithm> {
        self.algorithm
            .map_or(Some(Algorithm::Md5), Algorithm::parse)
    }

    pub fn qop(&self) -> Result<Option<Qop>, DigestError> {
        match self.qop {
            None => Ok(None),
            Some(q) if q.eq_ignore_ascii_case("auth") => Ok(Some(Qop::Auth)),
            Some(q) if q.eq_ignore_ascii_case("auth-int") => Ok(Some(Qop::AuthInt)),
            Some(_) => Err(DigestError("unknown qop")),
        }
    }

    /// Checks `response` against the stored HA1 (for the credentials' algorithm's base
    /// hash) in constant time. `body` is needed only for `auth-int`.
    pub fn verify(&self, method: &str, ha1: &str, body: &[u8]) -> bool {
        let (Some(alg), Ok(qop)) = (self.algorithm(), self.qop()) else {
            return false;
        };
        let expected = response(
            alg,
            ha1,
            &Answer {
                nonce: self.nonce,
                cnonce: self.cnonce.unwrap_or(""),
                nc: self.nc.unwrap_or(0),
                qop,
            },
            method,
            self.uri,
            body,
        );
        constant_time_eq(
            expected.as_bytes(),
            self.response.to_ascii_lowercase().as_bytes(),
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client-chosen parts of a response computation.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub nonce: &'a str,
    pub cnonce: &'a str,
    pub nc: u32,
    pub qop: Option<Qop>,
}

/// The `response` value (RFC 7616 §3.4.1; RFC 2069 form when no qop).
pub fn response(
    alg: Algorithm,
    ha1: &str,
    a: &Answer<'_>,
    method: &str,
    uri: &str,
    body: &[u8],
) -> String {
    let ha1 = if alg.is_sess() {
        alg.hash(&[ha1.as_bytes(), a.nonce.as_bytes(), a.cnonce.as_bytes()])
    } else {
        ha1.to_ascii_lowercase()
    };
    let ha2 = match a.qop {
        Some(Qop::AuthInt) => {
            let hbody = alg.hash(&[body]);
            alg.hash(&[method.as_bytes(), uri.as_bytes(), hbody.as_bytes()])
        }
        _ => alg.hash(&[method.as_bytes(), uri.as_bytes()]),
    };
    match a.qop {
        Some(q) => {
            let nc = format!("{:08x}", a.nc);
            alg.hash(&[
                ha1.as_bytes(),
                a.nonce.as_bytes(),
                nc.as_bytes(),
                a.cnonce.as_bytes(),
                q.as_str().as_bytes(),
                ha2.as_bytes(),
            ])
        }
        None => alg.hash(&[ha1.as_bytes(), a.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// What a client needs to answer a challenge.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentials<'a> {
    pub username: &'a str,
    /// The password, or `None` with `ha1` set when only the hash is known.
    pub password: Option<&'a str>,
    pub ha1: Option<&'a str>,
}

/// The Authorization / Proxy-Authorization value answering `challenge` (client side).
/// `cnonce` must be fresh and unpredictable (the caller draws it); `nc` counts the uses of
/// this nonce, starting at 1.
pub fn authorize(
    challenge: &Challenge<'_>,
    creds: &ClientCredentials<'_>,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
    body: &[u8],
) -> Result<String, DigestError> {
    let alg = challenge
        .algorithm()
        .ok_or(DigestError("unsupported algorithm"))?;
    let ha1 = match (creds.ha1, creds.password) {
        (Some(h), _) => h.to_owned(),
        (None, Some(p)) => ha1(alg.base(), creds.username, challenge.realm, p),
        (None, None) => return Err(DigestError("no password or HA1")),
    };
    let qop = challenge.pick_qop();
    let answer = Answer {
        nonce: challenge.nonce,
        cnonce,
        nc,
        qop,
    };
    let resp = response(alg, &ha1, &answer, method, uri, body);
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}",
        creds.username,
        challenge.realm,
        challenge.nonce,
        alg.as_str()
    );
    if qop.is_some() || alg.is_sess() {
        let _ = write!(v, ", cnonce=\"{cnonce}\"");
    }
    if let Some(q) = qop {
        let _ = write!(v, ", qop={}, nc={nc:08x}", q.as_str());
    }
    if let Some(o) = challenge.opaque {
        let _ = write!(v, ", opaque=\"{o}\"");
    }
    Ok(v)
}

/// Stateless nonces: `hex(timestamp) || hex(salt) || hex(HMAC-SHA256(secret, timestamp ||
/// salt || realm))[..32]`. The salt (a counter or a random number the caller draws) makes
/// every challenge's nonce unique, so two clients challenged in the same second never
/// share one (their first `nc` would collide in the replay guard).
#[derive(Clone)]
pub struct NonceKey {
    secret: Vec<u8>,
    /// How long a nonce stays fresh, in seconds.
    pub max_age: u64,
}

/// How a presented nonce checks out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    Fresh,
    /// Made by this key but too old: challenge again with `stale=true` (RFC 7616 §3.3).
    Stale,
    /// Not made by this key (or for another realm, or from the future).
    Invalid,
}

impl NonceKey {
    pub fn new(secret: &[u8], max_age: u64) -> Self {
        Self {
            secret: secret.to_vec(),
            max_age,
        }
    }

    fn mac(&self, ts: u64, salt: u64, realm: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        mac.update(&ts.to_be_bytes());
        mac.update(&salt.to_be_bytes());
        mac.update(realm.as_bytes());
        let mut h = hex(&mac.finalize().into_bytes());
        h.truncate(32);
        h
    }

    /// A nonce for `realm` made at `now` (Unix seconds), unique by `salt`.
    pub fn make(&self, now: u64, salt: u64, realm: &str) -> String {
        format!("{now:016x}{salt:016x}{}", self.mac(now, salt, realm))
    }

    pub fn check(&self, nonce: &str, now: u64, realm: &str) -> NonceStatus {
        if nonce.len() != 64 || !nonce.is_ascii() {
            return NonceStatus::Invalid;
        }
        let (Ok(ts), Ok(salt)) = (
            u64::from_str_radix(&nonce[..16], 16),
            u64::from_str_radix(&nonce[16..32], 16),
        ) else {
            return NonceStatus::Invalid;
        };
        if !constant_time_eq(
            self.mac(ts, salt, realm).as_bytes(),
            &nonce.as_bytes()[32..],
        ) || ts > now + 5
        {
            return NonceStatus::Invalid;
        }
        if now.saturating_sub(ts) > self.max_age {
            NonceStatus::Stale
        } else {
            NonceStatus::Fresh
        }
    }

    /// The time a nonce was made, for [`ReplayGuard`].
    pub fn timestamp(nonce: &str) -> Option<u64> {
        nonce
            .get(..16)
            .and_then(|t| u64::from_str_radix(t, 16).ok())
    }
}

/// What [`ReplayGuard::check`] makes of a nonce count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// A count above every one seen for the nonce: accepted and recorded.
    New,
    /// The last accepted count again, for the same request (a retransmission over UDP):
    /// the request may be processed again, it changes nothing a second time.
    Repeat,
    /// A count already used by another request, or a lower one: refuse.
    Replayed,
    /// A nonce too old for the guard to remember: challenge again with `stale=true`.
    Forgotten,
}

/// Refuses a nonce count that does not grow (RFC 7616 §3.4: the server should check `nc`
/// to detect replays). Bounded: at most `capacity` nonces are tracked, the oldest first out;
/// a nonce made no later than the newest one evicted is [`Replay::Forgotten`], so an
/// eviction never reopens a nonce to replay.
pub struct ReplayGuard {
    /// Nonce (by a 64-bit hash) -> (last count, the request that used it).
    last: HashMap<u64, (u32, u64)>,
    /// Nonces in arrival order, with the time each was made.
    order: VecDeque<(u64, Option<u64>)>,
    capacity: usize,
    /// The newest timestamp among evicted nonces.
    floor: Option<u64>,
}

/// Nonces are keyed by a hash: 16 bytes a nonce instead of its text (a million nonces
/// tracked cost some 50 MB, not 200); a collision among them is a 1 in 10^7 event that
/// would answer one client `stale=true`.
fn nonce_key(nonce: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    nonce.hash(&mut h);
    h.finish()
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> Self {
        Self {
            last: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            floor: None,
        }
    }

    /// Checks count `nc` of `nonce` for the request identified by `request` (a hash of its
    /// Call-ID and CSeq) and records it when new.
    pub fn check(&mut self, nonce: &str, nc: u32, request: u64) -> Replay {
        let key = nonce_key(nonce);
        if let Some((last, by)) = self.last.get_mut(&key) {
            return if nc > *last {
                (*last, *by) = (nc, request);
                Replay::New
            } else if nc == *last && *by == request {
                Replay::Repeat
            } else {
                Replay::Replayed
            };
        }
        let made = NonceKey::timestamp(nonce);
        if self.floor.is_some_and(|f| made.is_none_or(|t| t <= f)) {
            return Replay::Forgotten;
        }
        if self.order.len() == self.capacity {
            if let Some((old, ts)) = self.order.pop_front() {
                self.last.remove(&old);
                let t = ts.unwrap_or(u64::MAX);
                self.floor = Some(self.floor.map_or(t, |f| f.max(t)));
            }
        }
        self.order.push_back((key, made));
        self.last.insert(key, (nc, request));
        Replay::New
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests;
