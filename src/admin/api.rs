//! The admin HTTP API (`listen.admin`): create, list, show, disable, enable,
//! revoke and rotate tokens.
//!
//! Callers present the admin key, or a workspace token whose role holds
//! `tokens:manage`; such a token reaches only tokens of its own workspace
//! whose permissions are within its own — to create, list, show, explain,
//! disable, enable, revoke or rotate, all through one check
//! (`Caller::may_reach`) — and never hands out a secret that outlives it.
//! Every read-check-write is one compare-and-set. The secret of a token
//! appears in the answer that creates it (create, rotate) and in no other
//! answer, ever.
//! `docs/admin-api.yaml` describes every route of [`ROUTES`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::cache::{CachedRecord, CachedScope, TokenCache};
use crate::clients::FailedAuth;
use crate::decide::{
    Credentials, Decision, Detail, RequestFacts, authenticate, authorize, check_request,
    check_state,
};
use crate::doors::PolicyHandle;
use crate::doors::credentials;
use crate::policy::Policy;
use crate::policy::roles::{PermissionSet, TOKENS_MANAGE};
use crate::policy::rules::normalize;
use crate::refusal::DenyCode;
use crate::store::{
    Cursor, DEFAULT_PAGE, ListFilter, ListQuery, MAX_PAGE, Store, StoreError, TokenStore,
    UpdateError, update,
};
use crate::token::{
    CreateToken, FieldErrors, Scope, TokenId, TokenKind, TokenRecord, TokenSecret, TokenState,
    record::RECORD_VERSION,
};
use crate::web::json as json_response;

use super::AdminKey;

/// Largest request body the admin API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    List,
    Show,
    Disable,
    Enable,
    Revoke,
    Rotate,
    Explain,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::List => "list",
            Op::Show => "show",
            Op::Disable => "disable",
            Op::Enable => "enable",
            Op::Revoke => "revoke",
            Op::Rotate => "rotate",
            Op::Explain => "explain",
        }
    }
}

/// One route: method, path template (`{id}` captures a token id), operation.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub template: &'static str,
    pub op: Op,
}

/// Every route of the admin API. The router matches only these, and a test
/// checks that `docs/admin-api.yaml` describes each of them.
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::POST,
        template: "/admin/v1/tokens",
        op: Op::Create,
    },
    Route {
        method: Method::GET,
        template: "/admin/v1/tokens",
        op: Op::List,
    },
    Route {
        method: Method::GET,
        template: "/admin/v1/tokens/{id}",
        op: Op::Show,
    },
    Route {
        method: Method::DELETE,
        template: "/admin/v1/tokens/{id}",
        op: Op::Revoke,
    },
    Route {
        method: Method::POST,
        template: "/admin/v1/tokens/{id}/disable",
        op: Op::Disable,
    },
    Route {
        method: Method::POST,
        template: "/admin/v1/tokens/{id}/enable",
        op: Op::Enable,
    },
    Route {
        method: Method::POST,
        template: "/admin/v1/tokens/{id}/rotate",
        op: Op::Rotate,
    },
    Route {
        method: Method::POST,
        template: "/admin/v1/explain",
        op: Op::Explain,
    },
];

/// Matches `path` against a template; returns the `{id}` capture, if any.
fn match_template<'p>(template: &str, path: &'p str) -> Option<Option<&'p str>> {
    let mut capture = None;
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(capture),
            (Some("{id}"), Some(seg)) if !seg.is_empty() => capture = Some(seg),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

/// The route for a request: `Ok((route, id))`, or `Err(allowed methods)`
/// when the path exists under other methods (empty when it does not exist).
fn route<'p>(
    method: &Method,
    path: &'p str,
) -> Result<(&'static Route, Option<&'p str>), Vec<&'static str>> {
    let mut allowed = Vec::new();
    for r in ROUTES {
        if let Some(id) = match_template(r.template, path) {
            if r.method == method {
                return Ok((r, id));
            }
            allowed.push(r.method.as_str());
        }
    }
    Err(allowed)
}

// === errors ===

/// A refusal of the admin API, rendered as
/// `{"error","message","fields"?}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Option<FieldErrors>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: None,
        }
    }

    fn bad_request(message: impl Into<String>, fields: FieldErrors) -> Self {
        Self {
            fields: Some(fields),
            ..Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
        }
    }

    fn validation(fields: FieldErrors) -> Self {
        Self {
            fields: Some(fields),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "The token request has invalid fields; see `fields`.",
            )
        }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("No token with id `{id}`."),
        )
    }

    fn store(e: StoreError) -> Self {
        tracing::warn!(error = %e, "admin operation failed in the store");
        match e {
            StoreError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "A token with this id already exists; try again.",
            ),
            other => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("The token store cannot serve this request: {other}"),
            ),
        }
    }

    fn render(&self) -> Response<Full<Bytes>> {
        // Messages may quote the caller's input; a token value or key in it
        // (pasted into the wrong field) is not sent back.
        let redact = |t: &str| crate::telemetry::redact_secrets(t).into_owned();
        let mut body = json!({ "error": self.code, "message": redact(&self.message) });
        if let Some(fields) = &self.fields {
            let fields: FieldErrors = fields.iter().map(|(k, v)| (redact(k), redact(v))).collect();
            body["fields"] = json!(fields);
        }
        let mut res = json_response(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hawzu-admin\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

fn field(name: &str, msg: impl Into<String>) -> FieldErrors {
    BTreeMap::from([(name.to_owned(), msg.into())])
}

// === callers ===

/// Who is calling the admin API.
#[derive(Debug, Clone)]
enum Caller {
    /// The admin key: everything.
    Admin,
    /// A workspace token with `tokens:manage`: its own workspace, up to its
    /// own permissions and its own lifetime.
    Token {
        id: String,
        workspace_id: String,
        permissions: PermissionSet,
        /// The caller's own expiry: nothing it makes may outlive it.
        expires_at: Option<Timestamp>,
    },
}

/// What a caller is about to do to a token, for the words of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Create a token with this scope.
    Create,
    /// Any action on an existing token: show, explain, disable, enable,
    /// revoke, rotate (and seeing it in a list).
    Existing,
}

impl Caller {
    fn label(&self) -> String {
        match self {
            Caller::Admin => ADMIN_LABEL.into(),
            Caller::Token { id, .. } => format!("token:{id}"),
        }
    }

    fn workspace(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Token { workspace_id, .. } => Some(workspace_id),
        }
    }

    /// The one check between a caller and a token it creates or acts on:
    /// the admin key reaches every token; a token caller reaches tokens of
    /// its own workspace (others answer 404: their existence is not
    /// revealed) whose permissions, all roles together, are within its own
    /// (else 403). Every admin action on a token goes through here.
    fn may_reach(
        &self,
        policy: &Policy,
        workspace_id: &str,
        scope: &Scope,
        id: Option<&TokenId>,
        reach: Reach,
    ) -> Result<(), ApiError> {
        let Caller::Token {
            workspace_id: own,
            permissions,
            ..
        } = self
        else {
            return Ok(());
        };
        if workspace_id != own {
            return Err(match id {
                Some(id) => ApiError::not_found(id.as_str()),
                None => ApiError::forbidden(format!("This token manages workspace `{own}` only.")),
            });
        }
        let wanted = permissions_of(policy, scope);
        if wanted.is_subset_of(*permissions) {
            return Ok(());
        }
        // Name a few of the permissions beyond the caller's, not all 40.
        const NAMED: usize = 6;
        let extra: Vec<String> = wanted
            .minus(*permissions)
            .iter()
            .map(|p| p.to_string())
            .collect();
        let mut named = extra[..extra.len().min(NAMED)].join(", ");
        if extra.len() > NAMED {
            named.push_str(&format!(" and {} more", extra.len() - NAMED));
        }
        Err(ApiError::forbidden(match reach {
            Reach::Create => format!(
                "A token cannot create a token above its own role; the new token would add {named}."
            ),
            Reach::Existing => format!(
                "A token cannot act on a token above its own role; that token also holds {named}."
            ),
        }))
    }

    /// [`Caller::may_reach`] for a stored record.
    fn may_act_on(&self, policy: &Policy, record: &TokenRecord) -> Result<(), ApiError> {
        self.may_reach(
            policy,
            &record.workspace_id,
            &record.scope,
            Some(&record.id),
            Reach::Existing,
        )
    }

    /// A token caller cannot hand out a secret that outlives itself: what it
    /// creates or rotates must expire no later than it does. `None` when
    /// allowed, else why not.
    fn outlived_by(&self, expires_at: Option<Timestamp>) -> Option<String> {
        let Caller::Token {
            expires_at: Some(own),
            ..
        } = self
        else {
            return None;
        };
        match expires_at {
            Some(at) if at <= *own => None,
            Some(at) => Some(format!(
                "must not be later than the creating token's own expiry ({own}); {at} is later"
            )),
            None => Some(format!(
                "must not be `never`: the creating token expires at {own}, and what it creates must expire by then"
            )),
        }
    }
}

/// Who did it, in `created_by` and `disabled_by`, for the admin key.
const ADMIN_LABEL: &str = "admin";

/// The permissions a token of `scope` holds under `policy` (all its roles
/// together; a role the policy no longer knows holds nothing).
fn permissions_of(policy: &Policy, scope: &Scope) -> PermissionSet {
    let role = |name: &str| {
        policy
            .roles
            .get(name)
            .map(|r| r.permissions)
            .unwrap_or_default()
    };
    match scope {
        Scope::Workspace { role: r } => role(r),
        Scope::Project { projects } => projects
            .iter()
            .fold(PermissionSet::EMPTY, |acc, g| acc.union(role(&g.role))),
    }
}

// === impl AdminApi ===

/// The admin API. It writes through the cache, so this gate sees its own
/// changes at once (and the Redis store tells the others).
#[derive(Debug)]
pub struct AdminApi {
    cache: Arc<TokenCache<Store>>,
    policy: PolicyHandle,
    key: AdminKey,
    /// Wrong keys per client address: the same limit as the doors', its
    /// own buckets.
    failed_auth: FailedAuth,
    /// The request slots token callers may hold together.
    token_share: TokenShare,
}

impl AdminApi {
    pub fn new(
        cache: Arc<TokenCache<Store>>,
        policy: PolicyHandle,
        key: AdminKey,
        failed_auth: FailedAuth,
        token_requests: usize,
    ) -> Arc<Self> {
        let token_share = TokenShare::new(
            token_requests,
            cache.metrics().overload("admin", ADMIN_RESERVE),
        );
        Arc::new(Self {
            cache,
            policy,
            key,
            failed_auth,
            token_share,
        })
    }

    /// The policy now (reloads swap it whole).
    fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Serves one request of the admin listener.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let (route, id) = match route(&parts.method, parts.uri.path()) {
            Ok(found) => found,
            Err(allowed) if allowed.is_empty() => {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "No such admin route; see docs/admin-api.yaml.",
                )
                .render();
            }
            Err(allowed) => {
                let mut res = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("This route accepts {}.", allowed.join(", ")),
                )
                .render();
                if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                    res.headers_mut().insert(header::ALLOW, v);
                }
                return res;
            }
        };
        // A client that keeps presenting wrong keys is refused before its
        // next one is checked.
        let client = peer.ip().to_canonical();
        if self.failed_auth.is_refused(client) {
            self.cache
                .metrics()
                .admin(route.op.as_str(), "rate_limited");
            let mut res = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests with a wrong key from this address; wait for Retry-After.",
            )
            .render();
            res.headers_mut()
                .insert(header::RETRY_AFTER, self.failed_auth.retry_after().clone());
            return res;
        }
        let caller = match self.authenticate(&parts.headers).await {
            Ok(c) => c,
            Err(e) => {
                if e.status == StatusCode::UNAUTHORIZED {
                    self.failed_auth.failed(client);
                }
                self.cache.metrics().admin(route.op.as_str(), e.code);
                return e.render();
            }
        };
        // Token callers hold at most their share of the listener's request
        // slots, taken before any body is read: the admin key's reserve is
        // never theirs, however slowly they send.
        let _share = match &caller {
            Caller::Admin => None,
            Caller::Token { .. } => match self.token_share.take() {
                Some(slot) => Some(slot),
                None => {
                    let e = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "Token callers hold all the admin request slots they may; try again shortly.",
                    );
                    self.cache.metrics().admin(route.op.as_str(), e.code);
                    return e.render();
                }
            },
        };
        let id = match id.map(TokenId::parse).transpose() {
            Ok(id) => id,
            Err(e) => {
                return ApiError::bad_request(
                    "The token id in the path is malformed.",
                    field("id", e.to_string()),
                )
                .render();
            }
        };
        let now = Timestamp::now();
        let result = match (route.op, id) {
            (Op::Create, _) => match read_body(body).await {
                Ok(bytes) => self.create(&caller, &bytes, now).await,
                Err(e) => Err(e),
            },
            (Op::List, _) => {
                self.list(&caller, parts.uri.query().unwrap_or(""), now)
                    .await
            }
            (Op::Explain, _) => match read_body(body).await {
                Ok(bytes) => self.explain(&caller, &bytes, now).await,
                Err(e) => Err(e),
            },
            (op, Some(id)) => self.on_token(&caller, op, &id, now).await,
            (_, None) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No token id.",
            )),
        };
        let metrics = self.cache.metrics();
        match result {
            Ok((status, body)) => {
                metrics.admin(route.op.as_str(), "ok");
                json_response(status, &body)
            }
            Err(e) => {
                metrics.admin(route.op.as_str(), e.code);
                e.render()
            }
        }
    }

    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let creds = credentials(headers);
        let value = match creds {
            Credentials::One(v) => v,
            Credentials::None => {
                return Err(unauthorized(
                    "Send the admin key as `Authorization: Bearer <key>`.",
                ));
            }
            Credentials::Several => return Err(unauthorized("Send one Authorization header.")),
        };
        let presented = value
            .split_at_checked(7)
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|(_, rest)| rest.trim_ascii())
            .ok_or_else(|| unauthorized("Use the Bearer scheme: `Authorization: Bearer <key>`."))?;
        if !presented.starts_with(b"hwz_") {
            return if self.key.verify(presented) {
                Ok(Caller::Admin)
            } else {
                Err(unauthorized("The admin key is not valid."))
            };
        }
        // A workspace token with `tokens:manage`.
        let facts = RequestFacts {
            method: &Method::POST,
            path: "/admin/v1",
            query: None,
            upgrade: false,
            credentials: creds,
            now: Timestamp::now(),
        };
        let record = authenticate(&self.cache, &facts).await.map_err(|deny| {
            if deny.code == DenyCode::StoreUnavailable {
                ApiError::store(StoreError::Unavailable("token lookup failed".into()))
            } else {
                unauthorized(deny.code.message())
            }
        })?;
        let CachedScope::Workspace { role } = record.scope() else {
            return Err(ApiError::forbidden(
                "Only workspace tokens whose role has tokens:manage may manage tokens.",
            ));
        };
        let permissions = self
            .policy()
            .roles
            .get(role)
            .map(|r| r.permissions)
            .unwrap_or_default();
        if !permissions.contains(TOKENS_MANAGE) {
            return Err(ApiError::forbidden(format!(
                "Role `{role}` does not have tokens:manage."
            )));
        }
        Ok(Caller::Token {
            id: record.id().to_owned(),
            workspace_id: record.workspace_id().to_owned(),
            permissions,
            expires_at: record.expires_at(),
        })
    }

    async fn create(
        &self,
        caller: &Caller,
        body: &[u8],
        now: Timestamp,
    ) -> Result<(StatusCode, Value), ApiError> {
        let mut req: CreateToken = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                format!("The body is not a token request: {e}"),
                field("body", "a JSON object with name, workspace_id, scope, expires and optionally created_by"),
            )
        })?;
        if let Caller::Token { .. } = caller {
            // A token caller is the creator; it cannot claim to be someone else.
            req.created_by = Some(caller.label());
        }
        let valid = req
            .validate(&self.policy().roles, now)
            .map_err(ApiError::validation)?;
        caller.may_reach(
            &self.policy(),
            &valid.workspace_id,
            &valid.scope,
            None,
            Reach::Create,
        )?;
        if let Some(why) = caller.outlived_by(valid.expires_at) {
            return Err(ApiError::validation(field("expires", why)));
        }
        let secret = TokenSecret::generate()
            .map_err(|e| ApiError::store(StoreError::Unavailable(e.to_string())))?;
        let record = TokenRecord {
            v: RECORD_VERSION,
            id: TokenId::generate()
                .map_err(|e| ApiError::store(StoreError::Unavailable(e.to_string())))?,
            name: valid.name,
            workspace_id: valid.workspace_id,
            scope: valid.scope,
            created_by: valid.created_by,
            created_at: stamp(now),
            expires_at: valid.expires_at,
            disabled_at: None,
            disabled_by: None,
            revoked_at: None,
            last_used_at: None,
            rotated_from: None,
        };
        self.cache
            .create(&secret.hash(), &record)
            .await
            .map_err(ApiError::store)?;
        tracing::info!(
            target: "hawzu_gate::admin",
            op = "create",
            token_id = %record.id,
            workspace_id = %record.workspace_id,
            token_type = record.scope.kind().as_str(),
            by = %caller.label(),
            "token created"
        );
        Ok((
            StatusCode::CREATED,
            json!({ "token": view(&record, now), "secret": secret.expose() }),
        ))
    }

    async fn list(
        &self,
        caller: &Caller,
        query: &str,
        now: Timestamp,
    ) -> Result<(StatusCode, Value), ApiError> {
        let mut workspace = None;
        let mut filter = ListFilter {
            kind: None,
            state: None,
            now,
        };
        let mut cursor = None;
        let mut limit = DEFAULT_PAGE;
        let mut errors = FieldErrors::new();
        let mut seen = std::collections::HashSet::new();
        for (k, v) in parse_query(query) {
            if !seen.insert(k.clone()) {
                errors.insert(k.clone(), "is given more than once".into());
                continue;
            }
            match k.as_str() {
                "workspace" if crate::token::record::valid_id(&v) => workspace = Some(v),
                "workspace" => {
                    errors.insert(
                        k,
                        "must be 1-64 characters of A-Z, a-z, 0-9, `_` and `-`".into(),
                    );
                }
                "type" => match v.as_str() {
                    "workspace" => filter.kind = Some(TokenKind::Workspace),
                    "project" => filter.kind = Some(TokenKind::Project),
                    _ => {
                        errors.insert(k, format!("`{v}` is not a type; use workspace or project"));
                    }
                },
                "state" => {
                    match TokenState::parse(&v) {
                        Some(s) => filter.state = Some(s),
                        None => {
                            errors.insert(
                            k,
                            format!("`{v}` is not a state; use enabled, disabled, expired or revoked"),
                        );
                        }
                    }
                }
                "cursor" => match Cursor::decode(&v) {
                    Some(c) => cursor = Some(c),
                    None => {
                        errors.insert(k, "is not a next_cursor from a previous page".into());
                    }
                },
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                    _ => {
                        errors.insert(k, format!("must be a number from 1 to {MAX_PAGE}"));
                    }
                },
                _ => {
                    errors.insert(
                        k,
                        "is not a parameter; use workspace, type, state, cursor, limit".into(),
                    );
                }
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::bad_request(
                "The list query has invalid parameters; see `fields`.",
                errors,
            ));
        }
        if let Some(own) = caller.workspace() {
            match &workspace {
                Some(ws) if ws != own => {
                    return Err(ApiError::forbidden(format!(
                        "This token manages workspace `{own}` only."
                    )));
                }
                _ => workspace = Some(own.to_owned()),
            }
        }
        let page = self
            .cache
            .list(ListQuery {
                workspace,
                cursor,
                limit,
                filter,
            })
            .await
            .map_err(ApiError::store)?;
        // A token caller sees only the tokens it may act on.
        let policy = self.policy();
        let tokens: Vec<Value> = page
            .tokens
            .iter()
            .filter(|r| caller.may_act_on(&policy, r).is_ok())
            .map(|r| view(r, now))
            .collect();
        Ok((
            StatusCode::OK,
            json!({ "tokens": tokens, "next_cursor": page.next.map(|c| c.encode()) }),
        ))
    }

    /// Reads token `id` for `caller`: 404 when it does not exist or lies
    /// outside the caller's workspace, 403 when it is above the caller.
    async fn find_for(&self, caller: &Caller, id: &TokenId) -> Result<TokenRecord, ApiError> {
        let stored = self
            .cache
            .find(id)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::not_found(id.as_str()))?;
        caller.may_act_on(&self.policy(), &stored.record)?;
        Ok(stored.record)
    }

    async fn on_token(
        &self,
        caller: &Caller,
        op: Op,
        id: &TokenId,
        now: Timestamp,
    ) -> Result<(StatusCode, Value), ApiError> {
        if op == Op::Rotate {
            return self.rotate(caller, id, now).await;
        }
        if op == Op::Show {
            let record = self.find_for(caller, id).await?;
            return Ok((StatusCode::OK, json!({ "token": view(&record, now) })));
        }
        let policy = self.policy();
        // The checks run inside the compare-and-set: they judge the record
        // that is written over, never an older read.
        let stored = update(&*self.cache, id, |r| {
            caller.may_act_on(&policy, r)?;
            let mut next = r.clone();
            match op {
                Op::Disable | Op::Enable if r.revoked_at.is_some() => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "token_revoked",
                        "The token is revoked; a revoked token cannot be disabled or enabled.",
                    ));
                }
                Op::Disable if r.disabled_at.is_none() => {
                    next.disabled_at = Some(stamp(now));
                    next.disabled_by = Some(caller.label());
                }
                Op::Enable if r.disabled_at.is_some() => {
                    // A disable by the admin key (or of unknown origin: one
                    // written before `disabled_by` was recorded) is an
                    // operator's decision; a token caller cannot undo it.
                    let by_admin = r.disabled_by.as_deref().is_none_or(|by| by == ADMIN_LABEL);
                    if by_admin && !matches!(caller, Caller::Admin) {
                        return Err(ApiError::forbidden(
                            "The token was disabled with the admin key; only the admin key can enable it.",
                        ));
                    }
                    next.disabled_at = None;
                    next.disabled_by = None;
                }
                Op::Revoke if r.revoked_at.is_none() => next.revoked_at = Some(stamp(now)),
                // Already in the asked state: nothing to write.
                _ => return Ok(None),
            }
            Ok(Some(next))
        })
        .await
        .map_err(|e| update_error(e, id))?;
        tracing::info!(
            target: "hawzu_gate::admin",
            op = op.as_str(),
            token_id = %id,
            workspace_id = %stored.record.workspace_id,
            by = %caller.label(),
            "token {}", past_tense(op)
        );
        Ok((
            StatusCode::OK,
            json!({ "token": view(&stored.record, now) }),
        ))
    }

    /// A new secret and id with the same name, scope, expiry and enabled
    /// state; the old token is revoked and named in `rotated_from`.
    ///
    /// The old token's state check and its revocation are one
    /// compare-and-set, so of concurrent rotates (on any gate of a fleet)
    /// exactly one wins and the others answer 409 `token_revoked`. Only the
    /// winner creates the successor; should that write fail, the revocation
    /// is undone (again by compare-and-set) and the caller gets the error.
    async fn rotate(
        &self,
        caller: &Caller,
        id: &TokenId,
        now: Timestamp,
    ) -> Result<(StatusCode, Value), ApiError> {
        let fault = |e: String| ApiError::store(StoreError::Unavailable(e));
        let secret = TokenSecret::generate().map_err(|e| fault(e.to_string()))?;
        let new_id = TokenId::generate().map_err(|e| fault(e.to_string()))?;
        let policy = self.policy();
        let revoked_at = stamp(now);
        let old = update(&*self.cache, id, |r| {
            caller.may_act_on(&policy, r)?;
            match r.state(now) {
                TokenState::Revoked => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "token_revoked",
                        "The token is revoked; create a new token instead.",
                    ));
                }
                TokenState::Expired => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "token_expired",
                        "The token has expired; create a new token instead.",
                    ));
                }
                TokenState::Enabled | TokenState::Disabled => {}
            }
            if let Some(why) = caller.outlived_by(r.expires_at) {
                return Err(ApiError::forbidden(format!(
                    "A token cannot rotate a token that would outlive it: its expiry {why}."
                )));
            }
            Ok(Some(TokenRecord {
                revoked_at: Some(revoked_at),
                ..r.clone()
            }))
        })
        .await
        .map_err(|e| update_error(e, id))?;
        let new = TokenRecord {
            id: new_id,
            created_by: caller.label(),
            created_at: stamp(now),
            last_used_at: None,
            revoked_at: None,
            rotated_from: Some(old.record.id.clone()),
            ..old.record
        };
        if let Err(e) = self.cache.create(&secret.hash(), &new).await {
            // Give the old token back: nobody holds a successor.
            let undone = update(&*self.cache, id, |r| {
                Ok::<_, std::convert::Infallible>((r.revoked_at == Some(revoked_at)).then(|| {
                    TokenRecord {
                        revoked_at: None,
                        ..r.clone()
                    }
                }))
            })
            .await;
            if let Err(undo) = undone {
                tracing::error!(
                    target: "hawzu_gate::admin",
                    op = "rotate",
                    token_id = %id,
                    error = %undo,
                    "a failed rotate could not restore the old token; it stays revoked"
                );
            }
            return Err(ApiError::store(e));
        }
        tracing::info!(
            target: "hawzu_gate::admin",
            op = "rotate",
            token_id = %new.id,
            rotated_from = %id,
            workspace_id = %new.workspace_id,
            by = %caller.label(),
            "token rotated"
        );
        Ok((
            StatusCode::CREATED,
            json!({ "token": view(&new, now), "secret": secret.expose() }),
        ))
    }
}

/// An [`update`] that did not happen, as the API answers it.
fn update_error(e: UpdateError<ApiError>, id: &TokenId) -> ApiError {
    match e {
        UpdateError::NotFound => ApiError::not_found(id.as_str()),
        UpdateError::Refused(e) => e,
        UpdateError::Store(e) => ApiError::store(e),
    }
}

/// The body of `POST /admin/v1/explain`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainRequest {
    token_id: String,
    method: String,
    path: String,
}

impl AdminApi {
    /// Why a request with this token would be allowed or refused, step by
    /// step. The verdict is `decide`'s own (state, then `authorize`); the
    /// steps only put it into words.
    async fn explain(
        &self,
        caller: &Caller,
        body: &[u8],
        now: Timestamp,
    ) -> Result<(StatusCode, Value), ApiError> {
        let req: ExplainRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                format!("The body is not an explain request: {e}"),
                field("body", "a JSON object with token_id, method and path"),
            )
        })?;
        let mut errors = FieldErrors::new();
        let id = TokenId::parse(&req.token_id)
            .map_err(|e| errors.insert("token_id".into(), e.to_string()))
            .ok();
        let method = Method::from_bytes(req.method.as_bytes())
            .ok()
            .filter(|m| m.as_str().bytes().all(|b| b.is_ascii_uppercase()));
        if method.is_none() {
            errors.insert(
                "method".into(),
                "must be an HTTP method in capitals, like GET or POST".into(),
            );
        }
        let (raw_path, query) = match req.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.path.as_str(), None),
        };
        if !raw_path.starts_with('/') {
            errors.insert(
                "path".into(),
                "must be a request path starting with `/`".into(),
            );
        }
        let (Some(id), Some(method), true) = (id, method, errors.is_empty()) else {
            return Err(ApiError::bad_request(
                "The explain request has invalid fields; see `fields`.",
                errors,
            ));
        };
        let full = self.find_for(caller, &id).await?;
        let record = Arc::new(CachedRecord::new(&full));
        let policy = self.policy();
        let mut steps = vec![format!(
            "token {} is a {} token of workspace {}, {} now",
            full.id,
            full.scope.kind().as_str(),
            full.workspace_id,
            full.state(now).as_str()
        )];
        let decision = match check_state(&full, now) {
            Err(code) => Decision::Deny(crate::decide::Deny {
                code,
                record: None,
                detail: None,
            }),
            Ok(()) => match check_request(query, false) {
                Err(code) => Decision::Deny(crate::decide::Deny {
                    code,
                    record: Some(record.clone()),
                    detail: None,
                }),
                Ok(()) => authorize(&policy, record.clone(), &method, raw_path),
            },
        };
        let mut rule_json = Value::Null;
        match normalize(raw_path) {
            Err(why) => steps.push(format!("path {raw_path} is refused as ambiguous: {why}")),
            Ok(path) => match policy.rules.find(&method, &path) {
                None => steps.push(format!(
                    "no rule matches {method} {raw_path}: tokens are refused here (deny by default)"
                )),
                Some(m) => {
                    let r = m.rule;
                    steps.push(format!(
                        "rule {} matches: {:?} {} needs {}",
                        r.origin,
                        r.methods,
                        r.template.as_str(),
                        r.permission
                    ));
                    if let Some(ws) = m.captures.workspace {
                        steps.push(format!("the path's workspace is {ws}"));
                    }
                    if let Some(p) = m.captures.project {
                        steps.push(format!("the path's project is {p}"));
                    }
                    rule_json = json!({
                        "origin": r.origin,
                        "methods": format!("{:?}", r.methods),
                        "template": r.template.as_str(),
                        "permission": r.permission.to_string(),
                    });
                }
            },
        }
        let (verdict, code, role, project, permission) = match &decision {
            Decision::Allow(p) => {
                steps.push(format!("role {} has {}", p.role(), p.permission));
                (
                    "allow",
                    None,
                    Some(p.role().to_owned()),
                    p.project_id().map(str::to_owned),
                    Some(p.permission.to_string()),
                )
            }
            Decision::Deny(d) => {
                let why = match (&d.code, &d.detail) {
                    (DenyCode::InsufficientRole, Some(Detail::Rule { role: Some(role), permission, .. })) => {
                        format!("role {role} lacks {permission}")
                    }
                    (DenyCode::InsufficientRole, _) => {
                        "the route names no project, and a project token acts only inside its projects".into()
                    }
                    (DenyCode::WorkspaceMismatch, _) => {
                        format!("the token belongs to workspace {}", full.workspace_id)
                    }
                    (DenyCode::ProjectNotGranted, _) => "the token is not linked to that project".into(),
                    _ => d.code.message().trim_end_matches('.').to_owned(),
                };
                steps.push(why);
                let role = match &d.detail {
                    Some(Detail::Rule { role, .. }) => role.clone(),
                    _ => None,
                };
                ("deny", Some(d.code.as_str()), role, None, None)
            }
        };
        let status = decision.code().map_or(200, DenyCode::status);
        steps.push(match code {
            None => "allow".to_owned(),
            Some(c) => format!("deny: {c} ({status})"),
        });
        Ok((
            StatusCode::OK,
            json!({
                "decision": verdict,
                "code": code,
                "status": status,
                "token": view(&full, now),
                "rule": rule_json,
                "role": role,
                "project": project,
                "permission": permission,
                "steps": steps,
            }),
        ))
    }
}

/// A timestamp as the admin API writes it: whole milliseconds, as the list
/// index orders them. (States are judged at the precise instant.)
fn stamp(now: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now)
}

fn past_tense(op: Op) -> &'static str {
    match op {
        Op::Disable => "disabled",
        Op::Enable => "enabled",
        Op::Revoke => "revoked",
        _ => op.as_str(),
    }
}

/// A record as the API shows it: the record fields plus `state` at `now`.
pub fn view(record: &TokenRecord, now: Timestamp) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("v");
        obj.insert("state".into(), json!(record.state(now).as_str()));
    }
    v
}

// === impl TokenShare ===

/// The `limit` label of a token caller refused for the admin key's reserve.
const ADMIN_RESERVE: &str = "admin_reserve";

/// The admin listener's request slots that token callers may hold
/// together: `limits.max_requests - admin.reserved_requests`.
#[derive(Debug)]
struct TokenShare {
    max: usize,
    held: std::sync::atomic::AtomicUsize,
    refused: prometheus::IntCounter,
}

/// A token caller's place in the [`TokenShare`], until dropped.
struct TokenShareSlot<'a>(&'a TokenShare);

impl TokenShare {
    fn new(max: usize, refused: prometheus::IntCounter) -> Self {
        Self {
            max,
            held: std::sync::atomic::AtomicUsize::new(0),
            refused,
        }
    }

    /// A place, or `None` when token callers hold the whole share.
    fn take(&self) -> Option<TokenShareSlot<'_>> {
        use std::sync::atomic::Ordering;
        if self.held.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.held.fetch_sub(1, Ordering::AcqRel);
            self.refused.inc();
            return None;
        }
        Some(TokenShareSlot(self))
    }
}

impl Drop for TokenShareSlot<'_> {
    fn drop(&mut self) {
        self.0
            .held
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        // The listener answers it (408, connection closed); this is for
        // the metrics and any caller outside a listener.
        Err(e) if crate::doors::listener::is_body_timeout(&*e) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            crate::refusal::Refusal::BodyTimeout.code(),
            "The request body came too slowly.",
        )),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The body is larger than {MAX_BODY} bytes."),
        )),
        Err(e) => Err(ApiError::bad_request(
            format!("The body could not be read: {e}"),
            FieldErrors::new(),
        )),
    }
}

/// `a=1&b=two%20words` → pairs, percent-decoded (`+` is a space).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_never_send_back_a_secret_quoted_from_the_input() {
        use http_body_util::BodyExt;
        let t = TokenSecret::generate().unwrap();
        let t = t.expose();
        let e = ApiError::bad_request(
            format!("unknown field `{t}`"),
            field(t, format!("unknown role `{t}`; admin hwzadm_Abc")),
        );
        let res = e.render();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(!body.contains(&t[4..]), "{body}");
        assert!(!body.contains("Abc"), "{body}");
        assert!(body.contains("unknown role `hwz_…redacted`"), "{body}");
    }

    #[test]
    fn routes_match_their_templates_only() {
        let (r, id) = route(
            &Method::POST,
            "/admin/v1/tokens/tok_0123456789abcdef/disable",
        )
        .unwrap();
        assert_eq!(r.op, Op::Disable);
        assert_eq!(id, Some("tok_0123456789abcdef"));
        assert_eq!(
            route(&Method::GET, "/admin/v1/tokens").unwrap().0.op,
            Op::List
        );
        assert_eq!(
            route(&Method::DELETE, "/admin/v1/tokens/x").unwrap().0.op,
            Op::Revoke
        );
        assert_eq!(
            route(&Method::PUT, "/admin/v1/tokens").unwrap_err(),
            vec!["POST", "GET"]
        );
        assert!(
            route(&Method::GET, "/admin/v1/tokens/")
                .unwrap_err()
                .is_empty()
        );
        assert!(
            route(&Method::GET, "/admin/v1/tokens/a/b")
                .unwrap_err()
                .is_empty()
        );
        assert!(
            route(&Method::GET, "/admin/v2/tokens")
                .unwrap_err()
                .is_empty()
        );
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        assert_eq!(
            parse_query("workspace=ws%5F1&state=enabled&x"),
            vec![
                ("workspace".into(), "ws_1".into()),
                ("state".into(), "enabled".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("a+b"), "a b");
    }
}
