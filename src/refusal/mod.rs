//! Refusals: every way a request is refused or fails, as one typed value.
//!
//! A [`Refusal`] is a deny code from the decision ([`DenyCode`]) or one of
//! the gate's own answers (overloaded, a body that came too slowly, an
//! upstream that failed, a path no door serves). Each knows its code, HTTP
//! status, gRPC status, message, challenge and `Retry-After`; the
//! [`Render`] below turns one into each wire form exactly once: the JSON
//! answer, the empty-bodied answer `auth_request` wants, Envoy's
//! `DeniedHttpResponse`, and a trailers-only gRPC answer. No other module
//! spells a refusal code or builds an error body.
//!
//! This module decides nothing and imports nothing above [`crate::web`].

use http::{HeaderName, StatusCode};

mod deny;
mod render;

pub use deny::DenyCode;
pub use render::{Render, json_answer};

/// Every way a request is refused or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The decision refused the request.
    Deny(DenyCode),
    /// The decision refused the request, and the message says why more
    /// closely than the code's own (as `explain` words it).
    Because(DenyCode, &'static str),
    /// The listener is serving `limits.max_requests` already.
    Overloaded,
    /// The request body came too slowly (`limits.body_read_timeout`,
    /// `limits.min_body_rate`).
    BodyTimeout,
    /// The request body could not be read (malformed or cut short).
    BadRequest,
    /// The upstream could not be connected to.
    UpstreamUnavailable,
    /// The upstream failed while answering, or the request could not be
    /// sent on.
    UpstreamError,
    /// The upstream did not answer within `upstream.response_timeout`.
    UpstreamTimeout,
    /// No endpoint of this listener has this path; the text names the
    /// ones it has.
    NotFound(&'static str),
}

impl From<DenyCode> for Refusal {
    fn from(code: DenyCode) -> Self {
        Refusal::Deny(code)
    }
}

/// A gRPC answer's status code (in the trailers, or the headers of a
/// trailers-only answer).
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// A gRPC status code (the numbers of `google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    OutOfRange = 11,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The `grpc-status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcCode::InvalidArgument => "3",
            GrpcCode::DeadlineExceeded => "4",
            GrpcCode::NotFound => "5",
            GrpcCode::PermissionDenied => "7",
            GrpcCode::ResourceExhausted => "8",
            GrpcCode::OutOfRange => "11",
            GrpcCode::Internal => "13",
            GrpcCode::Unavailable => "14",
            GrpcCode::Unauthenticated => "16",
        }
    }

    /// As tonic knows it.
    pub fn tonic(self) -> tonic::Code {
        tonic::Code::from_i32(self as i32)
    }
}

/// How long a client should wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// One second: the gate or the store is busy or away.
    OneSecond,
    /// The failed-auth limit's window (`limits.failed_auth`).
    FailedAuth,
}

impl Refusal {
    /// The refusal with its code's own message (for matching on the code).
    pub(crate) fn plain(self) -> Self {
        match self {
            Refusal::Because(c, _) => Refusal::Deny(c),
            r => r,
        }
    }

    /// The code in `X-Hawzu-Error`, in JSON bodies, metrics and logs.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Deny(c) | Refusal::Because(c, _) => c.as_str(),
            Refusal::Overloaded => "overloaded",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::BadRequest => "bad_request",
            Refusal::UpstreamUnavailable => "upstream_unavailable",
            Refusal::UpstreamError => "upstream_error",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::NotFound(_) => "not_found",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Deny(c) | Refusal::Because(c, _) => {
                StatusCode::from_u16(c.status()).unwrap_or(StatusCode::FORBIDDEN)
            }
            Refusal::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::UpstreamUnavailable | Refusal::UpstreamError => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    /// The gRPC status: of the ext_authz check for a deny, of the call
    /// itself for the listener's own refusals.
    pub fn grpc(self) -> GrpcCode {
        match self {
            Refusal::Deny(c) | Refusal::Because(c, _) => match c.status() {
                401 => GrpcCode::Unauthenticated,
                503 => GrpcCode::Unavailable,
                429 => GrpcCode::ResourceExhausted,
                400 => GrpcCode::InvalidArgument,
                _ => GrpcCode::PermissionDenied,
            },
            // The message did not arrive in time.
            Refusal::BodyTimeout | Refusal::UpstreamTimeout => GrpcCode::DeadlineExceeded,
            Refusal::Overloaded | Refusal::UpstreamUnavailable => GrpcCode::Unavailable,
            Refusal::BadRequest => GrpcCode::InvalidArgument,
            Refusal::UpstreamError => GrpcCode::Internal,
            Refusal::NotFound(_) => GrpcCode::NotFound,
        }
    }

    /// One sentence for a person.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Deny(c) => c.message(),
            Refusal::Because(_, why) => why,
            Refusal::Overloaded => {
                "The gate is serving as many connections or requests as it may; try again shortly."
            }
            Refusal::BodyTimeout => {
                "The request body came too slowly (limits.body_read_timeout, limits.min_body_rate); the request was aborted."
            }
            Refusal::BadRequest => "The request body could not be read.",
            Refusal::UpstreamUnavailable => "The API behind the gate cannot be reached.",
            Refusal::UpstreamError => "The API behind the gate failed to answer.",
            Refusal::UpstreamTimeout => "The API behind the gate did not answer in time.",
            Refusal::NotFound(m) => m,
        }
    }

    /// The `WWW-Authenticate` challenge, where there is one.
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            Refusal::Deny(c) | Refusal::Because(c, _) => c.challenge(),
            _ => None,
        }
    }

    /// The `Retry-After` the answer carries, if any.
    pub fn retry_after(self) -> Option<RetryAfter> {
        match self.plain() {
            Refusal::Deny(DenyCode::StoreUnavailable) | Refusal::Overloaded => {
                Some(RetryAfter::OneSecond)
            }
            Refusal::Deny(DenyCode::RateLimited) => Some(RetryAfter::FailedAuth),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
