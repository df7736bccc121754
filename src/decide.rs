//! The decision: request facts in, [`Decision`] out.
//!
//! Every front door translates its protocol into [`RequestFacts`], calls
//! [`decide`], and renders the [`Decision`] back. This module holds the
//! policy and no HTTP; its only I/O is the token lookup. A deny is a
//! `Decision`, not an error: errors are the gate's own faults, and even those
//! end as a deny (`store_unavailable`) — the gate fails closed.

use jiff::Timestamp;

use crate::store::{StoreError, TokenStore};
use crate::token::{TokenKind, TokenRecord, TokenSecret};

/// Why a request was refused. The string forms are the documented codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyCode {
    MissingToken,
    MalformedToken,
    UnknownToken,
    TokenRevoked,
    TokenDisabled,
    TokenExpired,
    StoreUnavailable,
}

impl DenyCode {
    pub const ALL: [DenyCode; 7] = [
        DenyCode::MissingToken,
        DenyCode::MalformedToken,
        DenyCode::UnknownToken,
        DenyCode::TokenRevoked,
        DenyCode::TokenDisabled,
        DenyCode::TokenExpired,
        DenyCode::StoreUnavailable,
    ];

    /// The code in `X-Hawzu-Error` and in JSON bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::MissingToken => "missing_token",
            DenyCode::MalformedToken => "malformed_token",
            DenyCode::UnknownToken => "unknown_token",
            DenyCode::TokenRevoked => "token_revoked",
            DenyCode::TokenDisabled => "token_disabled",
            DenyCode::TokenExpired => "token_expired",
            DenyCode::StoreUnavailable => "store_unavailable",
        }
    }

    /// The HTTP status every door uses for this code.
    pub fn status(self) -> u16 {
        match self {
            DenyCode::StoreUnavailable => 503,
            _ => 401,
        }
    }

    /// One sentence for a person.
    pub fn message(self) -> &'static str {
        match self {
            DenyCode::MissingToken => {
                "No access token was sent; send `Authorization: Bearer hwz_…`."
            }
            DenyCode::MalformedToken => {
                "The Authorization header does not hold a well-formed Hawzu access token."
            }
            DenyCode::UnknownToken => "This access token is not known.",
            DenyCode::TokenRevoked => "This access token has been revoked.",
            DenyCode::TokenDisabled => "This access token is disabled.",
            DenyCode::TokenExpired => "This access token has expired.",
            DenyCode::StoreUnavailable => "The token store cannot be reached; try again shortly.",
        }
    }

    /// The `WWW-Authenticate` challenge, where the code has one.
    pub fn challenge(self) -> Option<String> {
        let realm = crate::headers::REALM;
        match self {
            DenyCode::MissingToken => Some(format!("Bearer realm=\"{realm}\"")),
            DenyCode::StoreUnavailable => None,
            _ => Some(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                self.message().trim_end_matches('.')
            )),
        }
    }
}

/// The `Authorization` headers of a request, as the door found them.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// No `Authorization` header.
    None,
    /// Exactly one, with this value.
    One(&'a [u8]),
    /// More than one: always refused.
    Several,
}

/// What a door knows about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub credentials: Credentials<'a>,
    /// The decision instant; expiry is exact to it.
    pub now: Timestamp,
}

/// Who is calling, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub kind: TokenKind,
    pub workspace_id: String,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Principal),
    Deny(DenyCode),
}

/// The bearer token of a request, checked in memory. A malformed token never
/// reaches the store.
pub fn extract_token(credentials: Credentials<'_>) -> Result<TokenSecret, DenyCode> {
    let value = match credentials {
        Credentials::None => return Err(DenyCode::MissingToken),
        Credentials::Several => return Err(DenyCode::MalformedToken),
        Credentials::One(v) => v,
    };
    let looks_like_token = |v: &[u8]| v.windows(4).any(|w| w == b"hwz_");
    // `Bearer` (any case), one or more spaces, the token, nothing else.
    let Some((scheme, rest)) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|i| value.split_at(i))
    else {
        return Err(if looks_like_token(value) {
            DenyCode::MalformedToken
        } else {
            DenyCode::MissingToken
        });
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(if looks_like_token(rest) {
            DenyCode::MalformedToken
        } else {
            DenyCode::MissingToken
        });
    }
    let token = rest.trim_ascii_start();
    let token = std::str::from_utf8(token).map_err(|_| DenyCode::MalformedToken)?;
    TokenSecret::parse(token).map_err(|_| DenyCode::MalformedToken)
}

/// The state checks of the decision path, at `now`: revoked, disabled,
/// expired, in that order.
pub fn check_state(record: &TokenRecord, now: Timestamp) -> Result<(), DenyCode> {
    if record.revoked_at.is_some() {
        Err(DenyCode::TokenRevoked)
    } else if record.disabled_at.is_some() {
        Err(DenyCode::TokenDisabled)
    } else if record.expires_at.is_some_and(|e| e <= now) {
        Err(DenyCode::TokenExpired)
    } else {
        Ok(())
    }
}

/// Parses the token, looks it up and checks its state. Also returns the
/// record when one was found, for callers that need more than the decision.
pub async fn authenticate<S: TokenStore>(
    store: &S,
    facts: &RequestFacts<'_>,
) -> Result<TokenRecord, DenyCode> {
    let secret = extract_token(facts.credentials)?;
    let hash = secret.hash();
    let record = match store.get(&hash).await {
        Ok(Some(record)) => record,
        Ok(None) => return Err(DenyCode::UnknownToken),
        Err(StoreError::Conflict) => return Err(DenyCode::StoreUnavailable),
        Err(e) => {
            tracing::warn!(error = %e, "token lookup failed; refusing (fail closed)");
            return Err(DenyCode::StoreUnavailable);
        }
    };
    check_state(&record, facts.now)?;
    Ok(record)
}

/// The one decision every door calls.
pub async fn decide<S: TokenStore>(store: &S, facts: &RequestFacts<'_>) -> Decision {
    match authenticate(store, facts).await {
        Ok(record) => Decision::Allow(Principal {
            token_id: record.id.as_str().to_owned(),
            kind: record.scope.kind(),
            workspace_id: record.workspace_id,
        }),
        Err(code) => Decision::Deny(code),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
