//! `GET /admin/v1/roles`: the role table as the gate holds it now (built-in
//! roles and the config's `[roles]`, after the last reload), for any
//! authenticated caller. Reads the policy; never the store, never a token.

use std::sync::Arc;

use axum::extract::State;
use http::StatusCode;

use super::error::ApiError;
use super::extract::Reply;
use super::state::AdminState;
use super::wire::RolesAnswer;

/// `GET /admin/v1/roles`. Who may call was settled by `routes::admit`: the
/// admin key or a `tokens:manage` token; both see every role, as both may
/// name any role they hold at create.
pub async fn roles(State(api): State<Arc<AdminState>>) -> Result<Reply<RolesAnswer>, ApiError> {
    Ok(Reply(StatusCode::OK, RolesAnswer::of(&api.policy().roles)))
}
