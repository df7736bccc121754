//! Token prefixes of a deployment (`tokens.prefix`, `tokens.accepted_prefixes`):
//! the one new tokens are minted with, and every one a presented token may
//! start with (tokens minted under an earlier prefix keep working: the store
//! is keyed by hash, never by prefix). Pure data, checked once at start-up;
//! it must never hold or see a token value (`token::value` parses with it).

use std::fmt;

use thiserror::Error;

/// The prefix when the config does not say.
pub const DEFAULT_PREFIX: &str = "hwz_";
/// Longest prefix: a token then is at most 16 + 36 characters.
pub const MAX_PREFIX_LEN: usize = 16;
/// Shortest prefix (GitHub's secret scanning wants a distinctive one).
pub const MIN_PREFIX_LEN: usize = 3;
/// The admin key's prefix: a token prefix must differ, or the admin API
/// could not tell a key from a token.
pub const ADMIN_KEY_PREFIX: &str = "hwzadm_";

/// Why a configured prefix is refused. Names the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PrefixError {
    #[error(
        "`{0}` is not a token prefix: use {MIN_PREFIX_LEN} to {MAX_PREFIX_LEN} lowercase letters and `_`, starting with a letter and ending with `_` (like `hwz_`)"
    )]
    Shape(String),
    #[error("`{ADMIN_KEY_PREFIX}` is the admin key's prefix; choose another")]
    AdminKey,
}

/// One checked prefix, held inline (no allocation to compare with it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    bytes: [u8; MAX_PREFIX_LEN],
    len: u8,
}

impl Prefix {
    /// Checks the shape: lowercase letters and `_`, a letter first, `_`
    /// last (the random part is base62, so a prefix's end is never in
    /// doubt), at most [`MAX_PREFIX_LEN`].
    pub fn parse(text: &str) -> Result<Self, PrefixError> {
        let b = text.as_bytes();
        let ok = (MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.ends_with(b"_")
            && b.iter().all(|&c| c.is_ascii_lowercase() || c == b'_');
        if !ok {
            return Err(PrefixError::Shape(text.to_owned()));
        }
        if text == ADMIN_KEY_PREFIX {
            return Err(PrefixError::AdminKey);
        }
        let mut bytes = [0u8; MAX_PREFIX_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Self {
            bytes,
            len: b.len() as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Checked ASCII in `parse`.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Prefix {
    fn default() -> Self {
        let mut bytes = [0u8; MAX_PREFIX_LEN];
        bytes[..DEFAULT_PREFIX.len()].copy_from_slice(DEFAULT_PREFIX.as_bytes());
        Self {
            bytes,
            len: DEFAULT_PREFIX.len() as u8,
        }
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prefix new tokens get and every prefix a presented token may have
/// (the minting one first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrefixes {
    accepted: Vec<Prefix>,
}

impl Default for TokenPrefixes {
    fn default() -> Self {
        Self {
            accepted: vec![Prefix::default()],
        }
    }
}

impl TokenPrefixes {
    /// `mint` first, then `also` (duplicates dropped).
    pub fn new(mint: Prefix, also: impl IntoIterator<Item = Prefix>) -> Self {
        let mut accepted = vec![mint];
        for p in also {
            if !accepted.contains(&p) {
                accepted.push(p);
            }
        }
        Self { accepted }
    }

    /// The prefix new tokens are minted with (`tokens.prefix`).
    pub fn mint(&self) -> Prefix {
        self.accepted.first().copied().unwrap_or_default()
    }

    /// Every accepted prefix, the minting one first.
    pub fn accepted(&self) -> &[Prefix] {
        &self.accepted
    }

    /// Whether `value` starts with an accepted prefix, in any case (what
    /// "shaped like a Hawzu token" means: judged, never passed).
    pub fn starts_any_case(&self, value: &[u8]) -> bool {
        self.accepted.iter().any(|p| {
            let p = p.as_bytes();
            value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p)
        })
    }

    /// Whether `value` holds an accepted prefix anywhere (exact case).
    pub fn found_in(&self, value: &[u8]) -> bool {
        self.accepted.iter().any(|p| {
            let p = p.as_bytes();
            value.windows(p.len()).any(|w| w == p)
        })
    }

    /// The regular expression a secret scanner matches tokens with: one of
    /// the prefixes, then 36 base62 (30 random, 6 checksum), on word
    /// boundaries. The checksum then rejects look-alikes.
    pub fn pattern(&self, body_len: usize) -> String {
        let alternatives = self
            .accepted
            .iter()
            .map(Prefix::as_str)
            .collect::<Vec<_>>()
            .join("|");
        format!(r"\b(?:{alternatives})[0-9A-Za-z]{{{body_len}}}\b")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_lowercase_letters_and_underscores_ending_in_one() {
        for good in ["hwz_", "acme_", "ab_", "a_b_c_", "abcdefghijklmno_"] {
            assert_eq!(Prefix::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "hwz",
            "Hwz_",
            "_hwz_",
            "hw-z_",
            "hwz1_",
            "a_",
            "abcdefghijklmnop_",
            "hwz_ ",
        ] {
            assert!(
                matches!(Prefix::parse(bad), Err(PrefixError::Shape(_))),
                "{bad}"
            );
        }
        assert_eq!(Prefix::parse("hwzadm_"), Err(PrefixError::AdminKey));
    }

    #[test]
    fn the_minting_prefix_comes_first_and_duplicates_go() {
        let p = |s| Prefix::parse(s).unwrap();
        let set = TokenPrefixes::new(p("acme_"), [p("hwz_"), p("acme_")]);
        assert_eq!(set.mint(), p("acme_"));
        assert_eq!(set.accepted(), &[p("acme_"), p("hwz_")]);
        assert!(set.starts_any_case(b"HWZ_abc"));
        assert!(!set.starts_any_case(b"hw"));
        assert!(set.found_in(b"x acme_1"));
        assert!(!set.found_in(b"ACME_1"));
        assert_eq!(
            set.pattern(36),
            r"\b(?:acme_|hwz_)[0-9A-Za-z]{36}\b".to_owned()
        );
    }
}
