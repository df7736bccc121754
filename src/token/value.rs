//! Token values: the secret a client presents, its lookup hash and the public id.
//!
//! Everything here is pure and in memory. A malformed value is refused by
//! [`TokenSecret::parse`] before any cache or store is consulted, and the
//! secret is never printed: its `Debug` and `Display` are redacted.

use std::fmt;
use std::sync::LazyLock;

use thiserror::Error;

/// Every token value starts with this.
pub const TOKEN_PREFIX: &str = "hwz_";
/// Random base62 characters after the prefix.
pub const RANDOM_LEN: usize = 30;
/// Base62 characters of the CRC32 checksum at the end.
pub const CHECKSUM_LEN: usize = 6;
/// Total length of a token value: `hwz_` + 30 + 6.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// BLAKE3 derive-key context for the lookup hash. Changing it orphans every token.
pub const HASH_CONTEXT: &str = "hawzu-gate access token v1";

/// Public token ids: `tok_` + 16 base62 characters.
pub const ID_PREFIX: &str = "tok_";
/// Random base62 characters in a token id.
pub const ID_RANDOM_LEN: usize = 16;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented value is not a token. Carries no part of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("the token does not start with `hwz_`")]
    Prefix,
    #[error("the token is not 40 characters long")]
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

/// A well-formed token value. Redacted in `Debug` and `Display`; the only way
/// to the characters is [`TokenSecret::expose`], used once, to show it at
/// creation.
#[derive(Clone)]
pub struct TokenSecret([u8; TOKEN_LEN]);

impl TokenSecret {
    /// A new token value from the OS CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut out = [0u8; TOKEN_LEN];
        out[..TOKEN_PREFIX.len()].copy_from_slice(TOKEN_PREFIX.as_bytes());
        fill_base62(&mut out[TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + RANDOM_LEN])?;
        let body_len = TOKEN_PREFIX.len() + RANDOM_LEN;
        let sum = crc32fast::hash(&out[..body_len]);
        encode_checksum(sum, &mut out[body_len..]);
        Ok(Self(out))
    }

    /// Checks prefix, length, alphabet and checksum, in memory, in that order.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let bytes = value.as_bytes();
        if !bytes.starts_with(TOKEN_PREFIX.as_bytes()) {
            return Err(ParseError::Prefix);
        }
        let bytes: &[u8; TOKEN_LEN] = bytes.try_into().map_err(|_| ParseError::Length)?;
        if !bytes[TOKEN_PREFIX.len()..]
            .iter()
            .all(u8::is_ascii_alphanumeric)
        {
            return Err(ParseError::Alphabet);
        }
        let body_len = TOKEN_PREFIX.len() + RANDOM_LEN;
        let mut expected = [0u8; CHECKSUM_LEN];
        encode_checksum(crc32fast::hash(&bytes[..body_len]), &mut expected);
        if expected != bytes[body_len..] {
            return Err(ParseError::Checksum);
        }
        Ok(Self(*bytes))
    }

    /// The lookup key: BLAKE3 in derive-key mode over the whole value.
    pub fn hash(&self) -> TokenHash {
        // The context key is derived once; each hash then costs one
        // compression instead of two (same output as `blake3::derive_key`).
        static HASHER: LazyLock<blake3::Hasher> =
            LazyLock::new(|| blake3::Hasher::new_derive_key(HASH_CONTEXT));
        let mut h = HASHER.clone();
        h.update(&self.0);
        TokenHash(*h.finalize().as_bytes())
    }

    /// The value itself. Call it only to hand the value to its owner.
    pub fn expose(&self) -> &str {
        // Built only from ASCII in `generate`/`parse`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(hwz_…redacted)")
    }
}

impl fmt::Display for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hwz_…redacted")
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
