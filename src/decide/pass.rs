//! Requests the gate passes instead of judging: those that present no Hawzu
//! token (`policy.other_credentials = "pass"`: a session cookie, another
//! bearer such as a JWT, nothing) and those on a public route
//! (`access = "public"`).
//!
//! This module says what "presents a Hawzu token" means — anything shaped
//! like one, even malformed, in any scheme — and when such a request may
//! pass. It never lets a request with a Hawzu-shaped credential pass
//! unjudged, and a passed request never carries an identity. Pure: no I/O.

use std::sync::Arc;

use crate::cache::CachedRecord;
use crate::decide::{Credentials, Decision, RequestFacts, check_request};
use crate::policy::prefixes::TokenPrefixes;
use crate::policy::rules::normalize;
use crate::policy::{Access, OtherCredentials, Policy};
use crate::refusal::DenyCode;
use crate::token::TokenSecret;
use crate::token::value::BODY_LEN;

/// Why a request went through without the gate granting it anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassReason {
    /// It presents no Hawzu token and `policy.other_credentials = "pass"`:
    /// the API judges its own credentials.
    NoHawzuToken,
    /// The rule for its method and path is `access = "public"`.
    Public,
}

impl PassReason {
    /// The reason as `X-Hawzu-Passed` and `explain` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            PassReason::NoHawzuToken => "no_token",
            PassReason::Public => "public",
        }
    }

    /// The reason in words, as `explain` ends with it.
    pub fn words(self) -> &'static str {
        match self {
            PassReason::NoHawzuToken => "passed: no Hawzu token",
            PassReason::Public => "passed: public route",
        }
    }
}

/// A passed request: no identity, whatever it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub reason: PassReason,
    /// The Hawzu token it presented, checked valid (a public route only);
    /// `None` when it presented none, so its credentials are its own, for
    /// the API, and are forwarded untouched.
    pub record: Option<Arc<CachedRecord>>,
}

impl Passed {
    /// Whether the request's credentials are its own, not a Hawzu token.
    pub fn own_credentials(&self) -> bool {
        self.record.is_none()
    }
}

/// Whether the `Authorization` headers present anything shaped like a Hawzu
/// token: a word (split at spaces, `,`, `=`, `"`, `:`) starting with one
/// of the deployment's token `prefixes` (`hwz_` by default) in any case,
/// in any scheme, or a well-formed token (its checksum right) anywhere,
/// whatever surrounds it (`Bearer;hwz_…`, quoted, glued) — also inside a
/// `Basic` credential; or more than one header. Such a request is always
/// judged, never passed. A JWT or another opaque bearer is one word that
/// does not start so, and holds a well-formed token only where it holds
/// the prefix and 36 base62 characters whose checksum (CRC32) happens to
/// match: a chance of one in 2³².
pub fn presents_token(credentials: Credentials<'_>, prefixes: &TokenPrefixes) -> bool {
    match credentials {
        Credentials::None => false,
        Credentials::Several => true,
        Credentials::One(v) => {
            if has_token_word(v, prefixes) {
                return true;
            }
            // `Basic base64(user:password)`: a token sent as either.
            let mut words = v
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty());
            match (words.next(), words.next()) {
                (Some(scheme), Some(cred)) if scheme.eq_ignore_ascii_case(b"basic") => {
                    base64_decode(cred).is_some_and(|d| has_token_word(&d, prefixes))
                }
                _ => false,
            }
        }
    }
}

fn has_token_word(v: &[u8], prefixes: &TokenPrefixes) -> bool {
    v.split(|b| b.is_ascii_whitespace() || matches!(b, b',' | b'=' | b'"' | b':'))
        .any(|w| prefixes.starts_any_case(w))
        || holds_token(v, prefixes)
}

/// Whether `v` holds a well-formed token anywhere: each place a prefix
/// stands (found with `memmem`: a JWT of a kilobyte is scanned in tens of
/// nanoseconds, not byte by byte), judged whole.
fn holds_token(v: &[u8], prefixes: &TokenPrefixes) -> bool {
    prefixes.accepted().iter().any(|p| {
        let p = p.as_bytes();
        memchr::memmem::find_iter(v, p).any(|at| {
            v.get(at..at + p.len() + BODY_LEN)
                .and_then(|w| std::str::from_utf8(w).ok())
                .is_some_and(|w| TokenSecret::parse_with(w, prefixes).is_ok())
        })
    })
}

/// Standard or URL-safe base64, padding optional; `None` when it is not.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let s = s.strip_suffix(b"==").or(s.strip_suffix(b"=")).unwrap_or(s);
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Whether the first rule for `method` and `path` is public. A path that
/// cannot be read one way matches no rule, so never a public one.
pub fn public_route(policy: &Policy, method: &http::Method, raw_path: &str) -> bool {
    if !policy.rules.has_public() {
        return false;
    }
    normalize(raw_path).is_ok_and(|path| {
        policy
            .rules
            .find(method, &path)
            .is_some_and(|m| m.rule.access == Access::Public)
    })
}

/// The decision for a request that presents no Hawzu token, refused with
/// `code` unless it passes: on a public route, or anywhere with
/// `other_credentials = "pass"`. What it asks beyond its method and path
/// is checked as for a token (a protocol upgrade or a `_method` override is
/// refused: neither can be forwarded as what was passed).
pub fn without_token<'a>(
    policy: &Policy,
    facts: &RequestFacts<'a>,
    code: DenyCode,
) -> Decision<'a> {
    let reason = if public_route(policy, facts.method, facts.path) {
        PassReason::Public
    } else if policy.other_credentials == OtherCredentials::Pass {
        PassReason::NoHawzuToken
    } else {
        return Decision::deny_only(code);
    };
    match check_request(facts.query, facts.upgrade, facts.override_header) {
        Err(code) => Decision::deny_only(code),
        Ok(()) => Decision::Pass(Passed {
            reason,
            record: None,
        }),
    }
}

/// Whether the request would pass: it presents no Hawzu token and passes
/// (the failed-auth limit lets such a request through: it looks up
/// nothing).
pub fn would_pass(policy: &Policy, facts: &RequestFacts<'_>) -> bool {
    !presents_token(facts.credentials, &policy.prefixes)
        && matches!(
            without_token(policy, facts, DenyCode::MissingToken),
            Decision::Pass(_)
        )
}

#[cfg(test)]
#[path = "pass_tests.rs"]
mod tests;
