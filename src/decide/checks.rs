//! The decision's pure checks, each a step of docs/design.md § The decision
//! path: the bearer token read from the request (steps 1-2), the token's
//! state (step 5) and context limits (client address, not-before), and the
//! request's own shape (upgrades, method overrides). No I/O, no HTTP:
//! `decide` runs them on every request, `explain` to say why.

use jiff::Timestamp;

use super::facts::{ClientAddr, Credentials, Override};
use crate::cache::CachedRecord;
use crate::policy::prefixes::TokenPrefixes;
use crate::policy::rules::names_method_override;
use crate::refusal::DenyCode;
use crate::token::{TokenRecord, TokenSecret};

/// The bearer token of a request, checked in memory against the
/// deployment's `prefixes`. A malformed token never reaches the cache or
/// the store.
pub fn extract_token(
    credentials: Credentials<'_>,
    prefixes: &TokenPrefixes,
) -> Result<TokenSecret, DenyCode> {
    let value = match credentials {
        Credentials::None => return Err(DenyCode::MissingToken),
        Credentials::Several => return Err(DenyCode::MalformedToken),
        Credentials::One(v) => v,
    };
    let looks_like_token = |v: &[u8]| prefixes.found_in(v);
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
    TokenSecret::parse_with(token, prefixes).map_err(|_| DenyCode::MalformedToken)
}

/// The state checks of the decision path, at `now`: revoked, disabled,
/// expired, in that order.
pub fn check_state(record: &TokenRecord, now: Timestamp) -> Result<(), DenyCode> {
    state_at(
        record.refused_from(),
        record.disabled_at.is_some(),
        record.expires_at,
        now,
    )
}

/// [`check_state`] for a cached token.
pub fn check_cached_state(record: &CachedRecord, now: Timestamp) -> Result<(), DenyCode> {
    state_at(
        record.revoked_at(),
        record.is_disabled(),
        record.expires_at(),
        now,
    )
}

fn state_at(
    revoked_at: Option<Timestamp>,
    disabled: bool,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<(), DenyCode> {
    // A future revocation is a rotation's overlap: the value works until then.
    if revoked_at.is_some_and(|r| r <= now) {
        Err(DenyCode::TokenRevoked)
    } else if disabled {
        Err(DenyCode::TokenDisabled)
    } else if expires_at.is_some_and(|e| e <= now) {
        Err(DenyCode::TokenExpired)
    } else {
        Ok(())
    }
}

/// Step 5, continued: the token's context limits at `now` for the client
/// `client` — not before its `not_before` (`token_not_yet_valid`), and
/// only from its `allow_from` networks (`address_not_allowed`; an unknown
/// client is refused). A token without limits costs one pointer test, and
/// the client address is asked for only when the token lists networks.
pub fn check_context(
    record: &CachedRecord,
    now: Timestamp,
    client: ClientAddr<'_>,
) -> Result<(), DenyCode> {
    let Some(limits) = record.limits() else {
        return Ok(());
    };
    if limits.not_before.is_some_and(|nb| now < nb) {
        return Err(DenyCode::TokenNotYetValid);
    }
    if !limits.allow_from.is_empty() {
        let allowed = client
            .get()
            .is_some_and(|ip| limits.allow_from.iter().any(|n| n.contains(ip)));
        if !allowed {
            return Err(DenyCode::AddressNotAllowed);
        }
    }
    Ok(())
}

/// The first checks of step 6, for a valid token: what the request asks
/// beyond its method and path. No route allows a protocol upgrade (an h2c
/// or WebSocket connection would carry requests the gate never judged), and
/// a `_method` query parameter — or an override header the door cannot
/// remove (`override_header`) — would have the API act on a method or path
/// the gate never judged; none can be removed without forwarding something
/// other than what was judged, so all are refused. Pure: `explain` calls
/// it too.
pub fn check_request(
    query: Option<&str>,
    upgrade: bool,
    override_header: Option<Override>,
) -> Result<(), DenyCode> {
    if upgrade {
        return Err(DenyCode::UpgradeRefused);
    }
    match override_header {
        Some(Override::Path) => Err(DenyCode::PathOverride),
        Some(Override::Method) => Err(DenyCode::MethodOverride),
        Some(Override::Identity) => Err(DenyCode::AmbiguousHeader),
        None if query.is_some_and(names_method_override) => Err(DenyCode::MethodOverride),
        None => Ok(()),
    }
}
