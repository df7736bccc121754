//! [`ApiError`]: every way the admin API refuses or fails, and the one place
//! the admin plane turns one into an answer
//! (`{"error","message","fields"?}` with its status and headers).
//!
//! It never quotes a secret back: messages and field errors are redacted
//! when rendered. It knows nothing of routes, callers or the store's
//! internals beyond [`StoreError`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use thiserror::Error;

use crate::refusal::{DenyCode, Refusal};
use crate::store::{StoreError, UpdateError};
use crate::token::{FieldErrors, TokenId};
use crate::web::json as json_response;

use super::wire::{ErrorBody, MAX_BODY};

/// A refusal of the admin API. Each variant names the condition; its status,
/// code and headers follow from it ([`ApiError::status`], [`ApiError::code`]).
#[derive(Debug, Error)]
pub enum ApiError {
    /// No route has this path.
    #[error("No such admin route; see docs/admin-api.yaml.")]
    NoRoute,
    /// The path exists under other methods (`allowed`, as in `Allow`).
    #[error("This route accepts {allowed}.")]
    MethodNotAllowed { allowed: String },
    /// Too many wrong keys from this address.
    #[error(
        "This address sent too many wrong keys: every key from it is refused for {} s more (Retry-After; failed_auth), a generated admin key excepted.",
        seconds(.retry_after)
    )]
    RateLimited { retry_after: HeaderValue },
    /// Too many changes by this workspace's tokens (`admin.change_limit`).
    #[error(
        "Too many token changes by this workspace's tokens on this gate (admin.change_limit); wait {} s (Retry-After).",
        seconds(.retry_after)
    )]
    ChangeLimited { retry_after: HeaderValue },
    /// Too many changes by this workspace's tokens today
    /// (`admin.daily_change_limit`).
    #[error(
        "Too many token changes by this workspace's tokens on this gate today (admin.daily_change_limit); the next may come in {} s (Retry-After).",
        seconds(.retry_after)
    )]
    DailyChangeLimited { retry_after: HeaderValue },
    /// Too many reads by this workspace's tokens (`admin.read_limit`).
    #[error(
        "Too many reads by this workspace's tokens on this gate (admin.read_limit); wait {} s (Retry-After).",
        seconds(.retry_after)
    )]
    ReadLimited { retry_after: HeaderValue },
    /// No key, or not a valid one.
    #[error("{0}")]
    Unauthorized(Cow<'static, str>),
    /// A valid caller that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such token, or one the caller may not know of.
    #[error("No token with id `{0}`.")]
    NotFound(String),
    /// The request is malformed; `fields` says where.
    #[error("{message}")]
    BadRequest {
        message: String,
        fields: FieldErrors,
    },
    /// A well-formed token request with invalid fields.
    #[error("The token request has invalid fields; see `fields`.")]
    Validation(FieldErrors),
    /// The token is in a state that forbids the action.
    #[error("{message}")]
    State {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// The store already holds a token with the new id.
    #[error("A token with this id already exists; try again.")]
    IdTaken,
    /// The store could not serve the request.
    #[error("The token store cannot serve this request: {}; try again shortly.", .0.public())]
    StoreUnavailable(StoreError),
    /// Token callers hold every request slot they may.
    #[error("Token callers hold all the admin request slots they may; try again shortly.")]
    Overloaded,
    /// The body came too slowly (the listener answers it; this is for the
    /// metrics and any caller outside a listener).
    #[error("The request body came too slowly.")]
    BodyTimeout,
    /// The body is over [`MAX_BODY`].
    #[error("The body is larger than {MAX_BODY} bytes.")]
    PayloadTooLarge,
}

/// The error code of an answer, left in its extensions for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    pub fn bad_request(message: impl Into<String>, fields: FieldErrors) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            fields,
        }
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::Unauthorized(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(message.into())
    }

    pub fn not_found(id: &str) -> Self {
        ApiError::NotFound(id.to_owned())
    }

    /// A store failure, logged here once.
    pub fn store(e: StoreError) -> Self {
        tracing::warn!(error = %e, "admin operation failed in the store");
        match e {
            StoreError::Conflict => ApiError::IdTaken,
            other => ApiError::StoreUnavailable(other),
        }
    }

    /// A fault of the gate itself before the store (randomness), answered
    /// as the store being unable to serve.
    pub fn fault(e: impl std::fmt::Display) -> Self {
        Self::store(StoreError::Unavailable(e.to_string()))
    }

    /// An [`update`](crate::store::update) that did not happen.
    pub fn from_update(e: UpdateError<ApiError>, id: &TokenId) -> Self {
        match e {
            UpdateError::NotFound => Self::not_found(id.as_str()),
            UpdateError::Refused(e) => e,
            UpdateError::Store(e) => Self::store(e),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoRoute | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RateLimited { .. }
            | ApiError::ChangeLimited { .. }
            | ApiError::DailyChangeLimited { .. }
            | ApiError::ReadLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::State { .. } | ApiError::IdTaken => StatusCode::CONFLICT,
            ApiError::StoreUnavailable(_) | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The documented error code (`error` in the body): a request refusal's
    /// own code where the condition is the same (`crate::refusal`), else
    /// one of the admin plane's.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NoRoute | ApiError::NotFound(_) => Refusal::NotFound("").code(),
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::RateLimited { .. }
            | ApiError::ChangeLimited { .. }
            | ApiError::DailyChangeLimited { .. }
            | ApiError::ReadLimited { .. } => DenyCode::RateLimited.as_str(),
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest { .. } => Refusal::BadRequest.code(),
            ApiError::Validation(_) => "validation_failed",
            ApiError::State { code, .. } => code,
            ApiError::IdTaken => "conflict",
            ApiError::StoreUnavailable(_) => DenyCode::StoreUnavailable.as_str(),
            ApiError::Overloaded => Refusal::Overloaded.code(),
            ApiError::BodyTimeout => Refusal::BodyTimeout.code(),
            ApiError::PayloadTooLarge => "payload_too_large",
        }
    }

    fn fields(&self) -> Option<&FieldErrors> {
        match self {
            ApiError::BadRequest { fields, .. } | ApiError::Validation(fields) => Some(fields),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Messages may quote the caller's input; a token value or key in it
        // (pasted into the wrong field) is not sent back.
        let redact = |t: &str| crate::telemetry::redact_secrets(t).into_owned();
        let status = self.status();
        let body = ErrorBody {
            error: self.code().to_owned(),
            message: redact(&self.to_string()),
            fields: self
                .fields()
                .map(|f| f.iter().map(|(k, v)| (redact(k), redact(v))).collect()),
        };
        let body = serde_json::to_value(&body).unwrap_or_default();
        let mut res = json_response(status, &body).map(Body::new);
        let h = res.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"hawzu-admin\""),
                );
            }
            ApiError::StoreUnavailable(_) | ApiError::Overloaded => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RateLimited { retry_after }
            | ApiError::ChangeLimited { retry_after }
            | ApiError::DailyChangeLimited { retry_after }
            | ApiError::ReadLimited { retry_after } => {
                h.insert(header::RETRY_AFTER, retry_after.clone());
            }
            ApiError::MethodNotAllowed { allowed } => {
                if let Ok(v) = HeaderValue::from_str(allowed) {
                    h.insert(header::ALLOW, v);
                }
            }
            _ => {}
        }
        res.extensions_mut().insert(ErrorCode(self.code()));
        res
    }
}

/// One field error.
pub fn field(name: &str, msg: impl Into<String>) -> FieldErrors {
    BTreeMap::from([(name.to_owned(), msg.into())])
}

/// A `Retry-After` value as the seconds it says.
fn seconds(retry_after: &HeaderValue) -> &str {
    retry_after.to_str().unwrap_or("some")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenSecret;

    #[tokio::test]
    async fn errors_never_send_back_a_secret_quoted_from_the_input() {
        use http_body_util::BodyExt;
        let t = TokenSecret::generate().unwrap();
        let t = t.expose();
        let e = ApiError::bad_request(
            format!("unknown field `{t}`"),
            field(t, format!("unknown role `{t}`; admin hwzadm_Abc")),
        );
        let res = e.into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(!body.contains(&t[4..]), "{body}");
        assert!(!body.contains("Abc"), "{body}");
        assert!(body.contains("unknown role `hwz_…redacted`"), "{body}");
    }

    /// The store's own error text (a Redis message, an address, a path)
    /// goes to the log, not to the caller, who may be a token holder.
    #[tokio::test]
    async fn a_store_failure_names_no_detail_of_the_store() {
        use http_body_util::BodyExt;
        for e in [
            StoreError::Unavailable("Connection refused (os error 111) at 10.9.8.7:6379".into()),
            StoreError::Corrupt("hawzu:tok:10.9.8.7 holds no hash".into()),
        ] {
            let res = ApiError::store(e).into_response();
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(!body.contains("10.9.8.7"), "{body}");
            assert!(body.contains("\"store_unavailable\""), "{body}");
            assert!(body.contains("try again"), "{body}");
        }
    }
}
