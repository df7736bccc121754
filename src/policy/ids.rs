//! The shape of workspace and project ids: used by the rules (a path
//! segment that names one) and by token records (the ids a token is
//! granted). Pure; imports nothing of the crate.

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
