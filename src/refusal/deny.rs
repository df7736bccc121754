//! The deny codes of the decision: the documented strings, their HTTP
//! status, message and `WWW-Authenticate` challenge.

/// Why a request was refused. The string forms are the documented codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyCode {
    MissingToken,
    MalformedToken,
    UnknownToken,
    TokenRevoked,
    TokenDisabled,
    TokenExpired,
    InsufficientRole,
    WorkspaceMismatch,
    ProjectNotGranted,
    NoMatchingRule,
    AmbiguousPath,
    StoreUnavailable,
    RateLimited,
    MethodOverride,
    /// A path override header (`X-Original-URL`, …) at a door that cannot
    /// remove it: the API might serve another path than the one judged.
    PathOverride,
    UpgradeRefused,
    MissingOriginal,
    /// A protected header spelled with another separator than `-`
    /// (`X-Hawzu.Role`, `X_Forwarded_For`) at a door that cannot remove
    /// it: a CGI-style API reads it as the gate's own.
    AmbiguousHeader,
    /// The token may not be used from the client's address (`allow_from`).
    AddressNotAllowed,
    /// The token's `not_before` is still to come.
    TokenNotYetValid,
}

impl DenyCode {
    /// Every code, in declaration order (metrics index by it).
    pub const ALL: [DenyCode; 20] = [
        DenyCode::MissingToken,
        DenyCode::MalformedToken,
        DenyCode::UnknownToken,
        DenyCode::TokenRevoked,
        DenyCode::TokenDisabled,
        DenyCode::TokenExpired,
        DenyCode::InsufficientRole,
        DenyCode::WorkspaceMismatch,
        DenyCode::ProjectNotGranted,
        DenyCode::NoMatchingRule,
        DenyCode::AmbiguousPath,
        DenyCode::StoreUnavailable,
        DenyCode::RateLimited,
        DenyCode::MethodOverride,
        DenyCode::PathOverride,
        DenyCode::UpgradeRefused,
        DenyCode::MissingOriginal,
        DenyCode::AmbiguousHeader,
        DenyCode::AddressNotAllowed,
        DenyCode::TokenNotYetValid,
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
            DenyCode::InsufficientRole => "insufficient_role",
            DenyCode::WorkspaceMismatch => "workspace_mismatch",
            DenyCode::ProjectNotGranted => "project_not_granted",
            DenyCode::NoMatchingRule => "no_matching_rule",
            DenyCode::AmbiguousPath => "ambiguous_path",
            DenyCode::StoreUnavailable => "store_unavailable",
            DenyCode::RateLimited => "rate_limited",
            DenyCode::MethodOverride => "method_override",
            DenyCode::PathOverride => "path_override",
            DenyCode::UpgradeRefused => "upgrade_refused",
            DenyCode::MissingOriginal => "missing_original",
            DenyCode::AmbiguousHeader => "ambiguous_header",
            DenyCode::AddressNotAllowed => "address_not_allowed",
            DenyCode::TokenNotYetValid => "token_not_yet_valid",
        }
    }

    /// The HTTP status every door uses for this code.
    pub fn status(self) -> u16 {
        match self {
            DenyCode::MissingToken
            | DenyCode::MalformedToken
            | DenyCode::UnknownToken
            | DenyCode::TokenRevoked
            | DenyCode::TokenDisabled
            | DenyCode::TokenExpired
            | DenyCode::TokenNotYetValid => 401,
            DenyCode::InsufficientRole
            | DenyCode::WorkspaceMismatch
            | DenyCode::ProjectNotGranted
            | DenyCode::NoMatchingRule
            | DenyCode::AddressNotAllowed => 403,
            DenyCode::AmbiguousPath
            | DenyCode::MethodOverride
            | DenyCode::PathOverride
            | DenyCode::UpgradeRefused
            | DenyCode::MissingOriginal
            | DenyCode::AmbiguousHeader => 400,
            DenyCode::StoreUnavailable => 503,
            DenyCode::RateLimited => 429,
        }
    }

    /// One sentence for a person.
    pub fn message(self) -> &'static str {
        match self {
            DenyCode::MissingToken => {
                "No access token was sent; send `Authorization: Bearer <access token>`."
            }
            DenyCode::MalformedToken => {
                "The Authorization header does not hold a well-formed Hawzu access token; send `Authorization: Bearer <access token>`, the whole value as it was created."
            }
            DenyCode::UnknownToken => "This access token is not known.",
            DenyCode::TokenRevoked => "This access token has been revoked.",
            DenyCode::TokenDisabled => "This access token is disabled.",
            DenyCode::TokenExpired => "This access token has expired.",
            DenyCode::InsufficientRole => "The token's role does not allow this request.",
            DenyCode::WorkspaceMismatch => "The token belongs to another workspace.",
            DenyCode::ProjectNotGranted => "The token is not linked to this project.",
            DenyCode::NoMatchingRule => {
                "Access tokens cannot be used on this path; they work on API routes only."
            }
            DenyCode::AmbiguousPath => {
                "The request path could be read more than one way and is refused."
            }
            DenyCode::StoreUnavailable => "The token store cannot be reached; try again shortly.",
            DenyCode::RateLimited => {
                "Too many requests with invalid tokens from this address; wait for Retry-After."
            }
            DenyCode::MethodOverride => {
                "A method override (a `_method` query parameter, or an X-HTTP-Method-Override, X-HTTP-Method or X-Method-Override header) asks for another method; send the request with the method it means."
            }
            DenyCode::PathOverride => {
                "A path override header (X-Original-URL, X-Rewrite-URL or X-Original-URI) asks for another path; send the request to the path it means, without it."
            }
            DenyCode::UpgradeRefused => {
                "Protocol upgrades (h2c, WebSocket) are not allowed through the gate."
            }
            DenyCode::MissingOriginal => {
                "The proxy did not say which request it asks about: /auth/nginx needs X-Original-Method and X-Original-URI (or X-Original-URL), /auth/traefik needs X-Forwarded-Method and X-Forwarded-Uri (see deploy/)."
            }
            DenyCode::AmbiguousHeader => {
                "A header name spelled with `_`, `.` or another separator than `-` reads as one the gate sets or removes (X-Hawzu-*, X-Forwarded-For, an override); send it spelled with `-`, or not at all."
            }
            DenyCode::AddressNotAllowed => {
                "This access token may not be used from this client address."
            }
            DenyCode::TokenNotYetValid => "This access token is not valid yet.",
        }
    }

    /// The `WWW-Authenticate` challenge, where the code has one.
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            DenyCode::MissingToken => Some(r#"Bearer realm="hawzu""#),
            DenyCode::MalformedToken => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="The Authorization header does not hold a well-formed Hawzu access token; send `Authorization: Bearer <access token>`, the whole value as it was created""#,
            ),
            DenyCode::UnknownToken => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="This access token is not known""#,
            ),
            DenyCode::TokenRevoked => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="This access token has been revoked""#,
            ),
            DenyCode::TokenDisabled => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="This access token is disabled""#,
            ),
            DenyCode::TokenExpired => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="This access token has expired""#,
            ),
            DenyCode::TokenNotYetValid => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="This access token is not valid yet""#,
            ),
            DenyCode::InsufficientRole
            | DenyCode::WorkspaceMismatch
            | DenyCode::ProjectNotGranted
            | DenyCode::NoMatchingRule => {
                Some(r#"Bearer realm="hawzu", error="insufficient_scope""#)
            }
            // RFC 6750 has one error for a 403: the token is valid but
            // does not reach this request; the description says why.
            DenyCode::AddressNotAllowed => Some(
                r#"Bearer realm="hawzu", error="insufficient_scope", error_description="This access token may not be used from this client address""#,
            ),
            DenyCode::AmbiguousPath
            | DenyCode::StoreUnavailable
            | DenyCode::RateLimited
            | DenyCode::MethodOverride
            | DenyCode::PathOverride
            | DenyCode::UpgradeRefused
            | DenyCode::MissingOriginal
            | DenyCode::AmbiguousHeader => None,
        }
    }
}
