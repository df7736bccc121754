//! Self-inspection: `GET /.well-known/hawzu-token` on the proxy and the
//! forward-auth listeners answers, for the token presented and only for
//! it, what it is and what it may do — id, name, type, workspace, scopes
//! with their permissions, expiry — never the secret. The token is judged
//! as every request's is (steps 1-5: malformed, unknown, revoked, disabled,
//! expired, not yet valid, not from this address: refused with the same
//! codes, under the same failed-auth limit); no rule is looked for, and
//! nothing is forwarded upstream.
//!
//! The name is not in the cache: an inspection reads the whole record
//! from the store (with the store's timeout), at most once per token per
//! `cache::WHOLE_FOR`, shared by concurrent inspections. It is not the
//! request path of the API.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::Shared;
use super::lifecycle::Exchange;
use crate::decide::{Deny, RequestFacts, extract_token};
use crate::headers::HAWZU_TOKEN_EXPIRES;
use crate::refusal::{DenyCode, Refusal};
use crate::token::Scope;

/// The path served on the proxy and forward-auth listeners.
pub const SELF_PATH: &str = "/.well-known/hawzu-token";

/// Whether a request asks for self-inspection (a `GET` of [`SELF_PATH`]).
pub fn asks(method: &Method, path: &str) -> bool {
    path == SELF_PATH && (method == Method::GET || method == Method::HEAD)
}

/// Answers a self-inspection: the token's description, or the refusal the
/// doors give (JSON body, challenge, `X-Hawzu-Error`).
pub async fn answer(
    shared: &Shared,
    exchange: &mut Exchange<'_, '_>,
    facts: &RequestFacts<'_>,
    request_id: &HeaderValue,
    agent: Option<&HeaderValue>,
) -> Response<Full<Bytes>> {
    let refuse = |code: DenyCode| shared.render.json(Refusal::Deny(code), Some(request_id));
    let agent = agent.map(HeaderValue::as_bytes);
    let record = match exchange.authenticate(facts, agent).await {
        Ok(r) => r,
        Err(Deny { code, .. }) => return refuse(code),
    };
    // The full record, for its name: one store read.
    let Ok(secret) = extract_token(facts.credentials, &shared.policy.load().prefixes) else {
        return refuse(DenyCode::MalformedToken);
    };
    let full = match shared.cache.whole(&secret.hash()).await {
        Ok(Some(full)) if full.id.as_str() == record.id() => full,
        Ok(_) => return refuse(DenyCode::UnknownToken),
        Err(e) => {
            tracing::debug!(error = %e, "self-inspection could not read the token; refusing");
            return refuse(DenyCode::StoreUnavailable);
        }
    };
    let policy = shared.policy.load();
    let scope = |kind: &str, project: Option<&str>, role: &str| {
        let found = policy.roles.get(role);
        json!({
            "scope": kind,
            "project_id": project,
            "role": role,
            "permissions": found
                .map(|r| r.permissions.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>())
                .unwrap_or_default(),
        })
    };
    let scopes: Vec<_> = match &full.scope {
        Scope::Workspace { role } => vec![scope("workspace", None, role)],
        Scope::Project { projects } => projects
            .iter()
            .map(|g| scope("project", Some(&g.project_id), &g.role))
            .collect(),
    };
    let whole = |t: jiff::Timestamp| jiff::Timestamp::from_second(t.as_second()).unwrap_or(t);
    let mut body = json!({
        "id": full.id.as_str(),
        "name": full.name,
        "type": full.scope.kind().as_str(),
        "workspace_id": full.workspace_id,
        "scopes": scopes,
        "expires_at": full.expires_at.map(|t| whole(t).to_string()),
    });
    if let Some(nb) = full.not_before {
        body["not_before"] = json!(whole(nb).to_string());
    }
    let mut res = crate::web::json(StatusCode::OK, &body);
    if let Some(v) = record.expires_header() {
        res.headers_mut().insert(HAWZU_TOKEN_EXPIRES, v.clone());
    }
    res
}
