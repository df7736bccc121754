//! Token values: the secret a client presents, its lookup hash and the public id.
//!
//! Everything here is pure and in memory. A malformed value is refused by
//! [`TokenSecret::parse`] before any cache or store is consulted, and the
//! secret is never printed: its `Debug` and `Display` are redacted.

use std::fmt;
use std::sync::LazyLock;

use blake3::hazmat::{self, ContextKey, HasherExt};
use thiserror::Error;

use crate::policy::prefixes::{MAX_PREFIX_LEN, Prefix, TokenPrefixes};

/// The prefix of every token value when `tokens.prefix` does not say.
pub const TOKEN_PREFIX: &str = crate::policy::prefixes::DEFAULT_PREFIX;
/// Random base62 characters after the prefix.
pub const RANDOM_LEN: usize = 30;
/// Base62 characters of the CRC32 checksum at the end.
pub const CHECKSUM_LEN: usize = 6;
/// What follows the prefix: 30 random + 6 checksum base62 characters.
pub const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
/// Length of a token value with the default prefix: `hwz_` + 30 + 6.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + BODY_LEN;
/// Longest token value (the longest prefix allowed).
pub const MAX_TOKEN_LEN: usize = MAX_PREFIX_LEN + BODY_LEN;
/// BLAKE3 derive-key context for the lookup hash. Changing it orphans every token.
pub const HASH_CONTEXT: &str = "hawzu-gate access token v1";

/// Public token ids: `tok_` + 16 base62 characters.
pub const ID_PREFIX: &str = "tok_";
/// Random base62 characters in a token id.
pub const ID_RANDOM_LEN: usize = 16;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The default prefixes (`hwz_` only), for [`TokenSecret::parse`].
static DEFAULT_PREFIXES: LazyLock<TokenPrefixes> = LazyLock::new(TokenPrefixes::default);

/// Why a presented value is not a token. Carries no part of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("the token does not start with an accepted prefix (`hwz_` unless tokens.prefix says)")]
    Prefix,
    #[error("the token is not its prefix and 36 characters long")]
    Length,
    #[error("the token contains a character outside 0-9, A-Z, a-z")]
    Alphabet,
    #[error("the token's checksum does not match (mistyped or truncated)")]
    Checksum,
}

/// The operating system's random source failed; no token can be made.
#[derive(Debug, Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(getrandom::Error);

// === impl TokenSecret ===

/// A well-formed token value: a prefix, 30 random and 6 checksum base62
/// characters, held inline (no allocation on the request path). Redacted in
/// `Debug` and `Display`; the only way to the characters is
/// [`TokenSecret::expose`], used once, to show it at creation.
#[derive(Clone)]
pub struct TokenSecret {
    bytes: [u8; MAX_TOKEN_LEN],
    len: u8,
}

impl TokenSecret {
    /// A new token value with the default prefix, from the OS CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        Self::generate_with(Prefix::default())
    }

    /// A new token value with `prefix` (`tokens.prefix`), from the OS CSPRNG.
    pub fn generate_with(prefix: Prefix) -> Result<Self, RandomError> {
        let p = prefix.len();
        let mut bytes = [0u8; MAX_TOKEN_LEN];
        bytes[..p].copy_from_slice(prefix.as_bytes());
        fill_base62(&mut bytes[p..p + RANDOM_LEN])?;
        let sum = crc32fast::hash(&bytes[..p + RANDOM_LEN]);
        encode_checksum(sum, &mut bytes[p + RANDOM_LEN..p + BODY_LEN]);
        Ok(Self {
            bytes,
            len: (p + BODY_LEN) as u8,
        })
    }

    /// [`TokenSecret::parse_with`] the default prefix (`hwz_`) only.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        Self::parse_with(value, &DEFAULT_PREFIXES)
    }

    /// Checks prefix (one of `prefixes`), length, alphabet and checksum, in
    /// memory, in that order. The checksum covers the prefix, so a token
    /// keeps the prefix it was minted with.
    pub fn parse_with(value: &str, prefixes: &TokenPrefixes) -> Result<Self, ParseError> {
        let bytes = value.as_bytes();
        let mut fault = ParseError::Prefix;
        for prefix in prefixes.accepted() {
            if !bytes.starts_with(prefix.as_bytes()) {
                continue;
            }
            match check_body(bytes, prefix.len()) {
                Ok(()) => {
                    let mut out = [0u8; MAX_TOKEN_LEN];
                    out[..bytes.len()].copy_from_slice(bytes);
                    return Ok(Self {
                        bytes: out,
                        len: bytes.len() as u8,
                    });
                }
                // The first prefix that fits names the fault.
                Err(e) if fault == ParseError::Prefix => fault = e,
                Err(_) => {}
            }
        }
        Err(fault)
    }

    fn value(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The lookup key: BLAKE3 in derive-key mode over the whole value.
    pub fn hash(&self) -> TokenHash {
        // The context key is derived once; each hash then costs one
        // compression instead of two (same output as `blake3::derive_key`),
        // and a hasher made from the key is not a copy of a kept one (its
        // ~1.9 KB, ~200 instructions a request).
        static CONTEXT_KEY: LazyLock<ContextKey> =
            LazyLock::new(|| hazmat::hash_derive_key_context(HASH_CONTEXT));
        let mut h = blake3::Hasher::new_from_context_key(&CONTEXT_KEY);
        h.update(self.value());
        TokenHash(*h.finalize().as_bytes())
    }

    /// The value itself. Call it only to hand the value to its owner.
    pub fn expose(&self) -> &str {
        // Built only from ASCII in `generate`/`parse`.
        std::str::from_utf8(self.value()).unwrap_or_default()
    }

    /// The token's prefix (public: it is in the pattern scanners match).
    pub fn prefix(&self) -> &str {
        let v = self.expose();
        &v[..v.len() - BODY_LEN]
    }
}

/// Length, alphabet and checksum of `bytes` after a prefix of `prefix_len`.
fn check_body(bytes: &[u8], prefix_len: usize) -> Result<(), ParseError> {
    if bytes.len() != prefix_len + BODY_LEN {
        return Err(ParseError::Length);
    }
    // No early exit: a fold over every byte vectorizes (valid tokens, the
    // common case, are read to the end anyway).
    let alphabet = bytes[prefix_len..]
        .iter()
        .fold(true, |ok, b| ok & b.is_ascii_alphanumeric());
    if !alphabet {
        return Err(ParseError::Alphabet);
    }
    let body_len = prefix_len + RANDOM_LEN;
    let mut expected = [0u8; CHECKSUM_LEN];
    encode_checksum(crc32fast::hash(&bytes[..body_len]), &mut expected);
    if expected != bytes[body_len..] {
        return Err(ParseError::Checksum);
    }
    Ok(())
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSecret({}…redacted)", self.prefix())
    }
}

impl fmt::Display for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…redacted", self.prefix())
    }
}

// === impl TokenHash ===

/// The 32-byte lookup key of a token. Not secret by itself, but it is the key
/// of the store, so it is shown only as hex in store keys and events.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Lower-case hex, as used in the Redis key schema.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 0xf) as usize] as char);
        }
        s
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.to_hex())
    }
}

// === impl TokenId ===

/// The public id of a token (`tok_` + 16 base62). Safe to log and to show.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId(String);

impl TokenId {
    pub fn generate() -> Result<Self, RandomError> {
        let mut buf = [0u8; ID_RANDOM_LEN];
        fill_base62(&mut buf)?;
        let mut s = String::with_capacity(ID_PREFIX.len() + ID_RANDOM_LEN);
        s.push_str(ID_PREFIX);
        s.extend(buf.iter().map(|&b| b as char));
        Ok(Self(s))
    }

    pub fn parse(value: &str) -> Result<Self, InvalidTokenId> {
        let ok = value.len() == ID_PREFIX.len() + ID_RANDOM_LEN
            && value.starts_with(ID_PREFIX)
            && value.as_bytes()[ID_PREFIX.len()..]
                .iter()
                .all(u8::is_ascii_alphanumeric);
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidTokenId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The greatest id there can be (`tok_zzzzzzzzzzzzzzzz`, in byte
    /// order): a listing cursor with it stands before every token of its
    /// instant, naming none.
    pub fn last() -> Self {
        let mut s = String::with_capacity(ID_PREFIX.len() + ID_RANDOM_LEN);
        s.push_str(ID_PREFIX);
        s.extend(std::iter::repeat_n('z', ID_RANDOM_LEN));
        Self(s)
    }
}

/// A string that is not a token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a token id is `tok_` followed by 16 characters from 0-9, A-Z, a-z")]
pub struct InvalidTokenId;

impl TryFrom<String> for TokenId {
    type Error = InvalidTokenId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TokenId> for String {
    fn from(id: TokenId) -> Self {
        id.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === base62 helpers ===

/// Fills `out` with uniformly random base62 characters (rejection sampling:
/// bytes >= 248 are dropped so that `b % 62` has no bias).
pub(crate) fn fill_base62(out: &mut [u8]) -> Result<(), RandomError> {
    let mut pool = [0u8; 64];
    let mut filled = 0;
    while filled < out.len() {
        getrandom::fill(&mut pool).map_err(RandomError)?;
        for &b in &pool {
            if b < 248 {
                out[filled] = BASE62[(b % 62) as usize];
                filled += 1;
                if filled == out.len() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// CRC32 as exactly six base62 digits, most significant first
/// (62^6 > 2^32, so every value fits).
fn encode_checksum(mut sum: u32, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(sum % 62) as usize];
        sum /= 62;
    }
}

#[cfg(test)]
#[path = "value_tests.rs"]
mod tests;
