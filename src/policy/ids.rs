//! The shape of workspace and project ids: [`valid_id`], the shape every id
//! has (1-64 of `A-Z a-z 0-9 _ -`, as ids travel in paths and headers),
//! used by the rules (a path segment that names one) and by token records;
//! and [`IdPattern`], the configured `policy.id_pattern` (default
//! [`DEFAULT_ID_PATTERN`]) a create's ids must also match. Pure; imports
//! nothing of the crate.

use std::fmt;

use regex::Regex;

/// Longest workspace or project id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Checks an id used in paths and headers: 1-64 of `A-Z a-z 0-9 _ -`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The default: the shape the Hawzu API's ids have (`ws_1`, `proj_a`,
/// `a1b2c3`): a letter or digit, then up to 63 letters, digits, `_` or `-`.
pub const DEFAULT_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$";

/// Largest compiled pattern accepted (bytes of the regex's program).
const SIZE_LIMIT: usize = 1 << 20;

/// A checked id pattern. The whole id must match (the pattern is anchored
/// whether or not it says `^…$`).
#[derive(Clone)]
pub struct IdPattern {
    source: String,
    regex: Regex,
}

impl IdPattern {
    /// Compiles `pattern`, or says why it cannot be used.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.trim().is_empty() {
            return Err(format!(
                "must be a regular expression such as {DEFAULT_ID_PATTERN}"
            ));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| {
                let e = e.to_string();
                // The regex crate's message spans lines (pattern, caret, error).
                let why = e.lines().last().unwrap_or("").trim_start_matches("error: ");
                format!("`{pattern}` is not a regular expression: {why}")
            })?;
        Ok(Self {
            source: pattern.to_owned(),
            regex,
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `id` may be used: the base shape and the pattern.
    pub fn matches(&self, id: &str) -> bool {
        valid_id(id) && self.regex.is_match(id)
    }

    /// What a refused `id` should have been, for a field error.
    pub fn help(&self, id: &str) -> String {
        if valid_id(id) {
            format!(
                "must match the id pattern `{}` (policy.id_pattern)",
                self.source
            )
        } else {
            format!(
                "must be 1-64 characters of A-Z, a-z, 0-9, `_` and `-` and match the id \
                 pattern `{}` (policy.id_pattern)",
                self.source
            )
        }
    }
}

impl Default for IdPattern {
    fn default() -> Self {
        #[allow(clippy::expect_used)] // a literal, tested below
        Self::new(DEFAULT_ID_PATTERN).expect("the default id pattern compiles")
    }
}

impl fmt::Debug for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdPattern").field(&self.source).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_takes_the_apis_ids_and_refuses_odd_ones() {
        let ids = IdPattern::default();
        for ok in ["ws_1", "proj_a", "a", "A-1_b", &"x".repeat(64)] {
            assert!(ids.matches(ok), "{ok}");
        }
        for bad in [
            "",
            "_ws",
            "-ws",
            "ws 1",
            "ws/1",
            "ws.1",
            "wś",
            &"x".repeat(65),
        ] {
            assert!(!ids.matches(bad), "{bad:?}");
        }
        assert!(ids.help("_ws").contains(DEFAULT_ID_PATTERN));
        assert!(ids.help("ws.1").contains("1-64 characters"));
    }

    #[test]
    fn a_pattern_is_anchored_and_never_widens_the_base_shape() {
        let ids = IdPattern::new("ws_[0-9]+").unwrap();
        assert!(ids.matches("ws_12"));
        assert!(!ids.matches("xws_12") && !ids.matches("ws_12x"));
        let wide = IdPattern::new(".+").unwrap();
        assert!(!wide.matches("ws.1") && !wide.matches("a/b"));
    }

    #[test]
    fn a_bad_pattern_says_why() {
        let e = IdPattern::new("[a-z").unwrap_err();
        assert!(e.contains("`[a-z` is not a regular expression"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(
            IdPattern::new(" ")
                .unwrap_err()
                .contains(DEFAULT_ID_PATTERN)
        );
    }
}
