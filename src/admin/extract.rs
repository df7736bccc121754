//! What the admin handlers take from a request and give back: a JSON body
//! read under [`MAX_BODY`] ([`JsonBody`], or [`OptionalJsonBody`] where an
//! empty body means the defaults), the token id of the path
//! ([`PathId`]), and a JSON answer ([`Reply`]).
//!
//! Every refusal here is an [`ApiError`]; nothing else reads a body or
//! writes an answer of the admin API. No policy, no store.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::doors::listener::is_body_timeout;
use crate::token::{FieldErrors, TokenId};
use crate::web::json as json_response;

use super::error::{ApiError, field};
use super::wire::{
    CreateRequest, ExplainRequest, MAX_BODY, RotateRequest, SignInRequest, UpdateRequest,
};

/// A request body type, named for the refusal of one that does not parse.
pub trait Described {
    /// `a token request`
    const WHAT: &'static str;
    /// What the body should be, for `fields.body`.
    const SHAPE: &'static str;
}

impl Described for CreateRequest {
    const WHAT: &'static str = "a token request";
    const SHAPE: &'static str =
        "a JSON object with name, workspace_id, scope, expires and optionally created_by";
}

impl Described for RotateRequest {
    const WHAT: &'static str = "a rotate request";
    const SHAPE: &'static str = "empty, or a JSON object with optionally expires and overlap (e.g. {\"expires\":\"3mo\",\"overlap\":\"24h\"})";
}

impl Described for UpdateRequest {
    const WHAT: &'static str = "an update request";
    const SHAPE: &'static str = "a JSON object with any of name, description and expires";
}

impl Described for SignInRequest {
    const WHAT: &'static str = "a sign-in request";
    const SHAPE: &'static str = "a JSON object with credential (the admin key or a token)";
}

impl Described for ExplainRequest {
    const WHAT: &'static str = "an explain request";
    const SHAPE: &'static str = "a JSON object with token_id, method and path";
}

/// A JSON request body of at most [`MAX_BODY`] bytes. No `Content-Type`
/// is required.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Described,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req.into_body()).await?;
        parse::<T>(&bytes).map(JsonBody)
    }
}

/// As [`JsonBody`], but an empty body (or only whitespace) is `T::default()`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Described + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req.into_body()).await?;
        if bytes.trim_ascii().is_empty() {
            return Ok(Self(T::default()));
        }
        parse::<T>(&bytes).map(Self)
    }
}

fn parse<T: DeserializeOwned + Described>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            format!("The body is not {}: {e}", T::WHAT),
            field("body", T::SHAPE),
        )
    })
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        // The listener answers it (408, connection closed); this is for
        // the metrics and any caller outside a listener.
        Err(e) if is_body_timeout(&*e) => Err(ApiError::BodyTimeout),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge),
        Err(e) => Err(ApiError::bad_request(
            format!("The body could not be read: {e}"),
            FieldErrors::new(),
        )),
    }
}

/// The `{id}` of the path, a well-formed token id. It is read as sent, not
/// percent-decoded: no character of a token id needs encoding, so an
/// encoded one is refused as malformed.
#[derive(Debug)]
pub struct PathId(pub TokenId);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let malformed = |why: String| {
            ApiError::bad_request("The token id in the path is malformed.", field("id", why))
        };
        // The segment where the matched template has `{id}`.
        let raw = parts
            .extensions
            .get::<MatchedPath>()
            .and_then(|t| t.as_str().split('/').position(|seg| seg == "{id}"))
            .and_then(|i| parts.uri.path().split('/').nth(i))
            .ok_or_else(|| malformed("the path has no token id".into()))?;
        TokenId::parse(raw)
            .map(PathId)
            .map_err(|e| malformed(e.to_string()))
    }
}

/// A JSON answer with `no-store` caching.
#[derive(Debug)]
pub struct Reply<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        // Through a `Value`: keys in the same (sorted) order as every other
        // JSON answer of the gate.
        let value = serde_json::to_value(&self.1).unwrap_or_default();
        json_response(self.0, &value).map(Body::new)
    }
}
