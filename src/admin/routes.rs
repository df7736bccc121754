//! The admin API's routes: the table ([`ROUTES`]), the axum [`Router`]
//! built from it, and [`admit`], the middleware every matched route passes
//! before its handler (wrong-key limit, who is calling, token callers'
//! request slots, metrics).
//!
//! Owns where a request goes and who may get that far; never what a handler
//! does to a token (`admin::tokens`, `admin::explain`).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use http::{HeaderValue, Method};

use crate::audit::Origin;

use super::caller::{Caller, authenticate, judges_a_credential, the_admin_keys_own};
use super::error::{ApiError, ErrorCode};
use super::state::{AdminState, Peer, RequestId};
use super::{audit, change, console, explain, roles, tokens, usage};

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
    Update,
    Explain,
    Roles,
    Usage,
    Audit,
}

impl Op {
    /// Whether the operation changes a token (and is recorded in the audit
    /// log when it succeeds).
    pub fn is_change(self) -> bool {
        matches!(
            self,
            Op::Create | Op::Disable | Op::Enable | Op::Revoke | Op::Rotate | Op::Update
        )
    }

    /// What a token caller's read is charged against `admin.read_limit`:
    /// what it may cost the store every tenant's token checks share. A
    /// list may walk four index pages, an audit read scan 5,000 entries,
    /// a usage read one key per hour of its window.
    pub fn read_cost(self) -> u32 {
        match self {
            Op::Audit | Op::Usage => 10,
            Op::List => 4,
            _ => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::List => "list",
            Op::Show => "show",
            Op::Disable => "disable",
            Op::Enable => "enable",
            Op::Revoke => "revoke",
            Op::Rotate => "rotate",
            Op::Update => "update",
            Op::Explain => "explain",
            Op::Roles => "roles",
            Op::Usage => "usage",
            Op::Audit => "audit",
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

/// Every route of the admin API. The router is built from this table and
/// serves nothing else, and a test checks that `docs/admin-api.yaml`
/// describes each of them.
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
        method: Method::PATCH,
        template: "/admin/v1/tokens/{id}",
        op: Op::Update,
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
        method: Method::GET,
        template: "/admin/v1/tokens/{id}/usage",
        op: Op::Usage,
    },
    Route {
        method: Method::POST,
        template: "/admin/v1/explain",
        op: Op::Explain,
    },
    Route {
        method: Method::GET,
        template: "/admin/v1/roles",
        op: Op::Roles,
    },
    Route {
        method: Method::GET,
        template: "/admin/v1/audit",
        op: Op::Audit,
    },
];

/// The methods a path template accepts, as in `Allow` (`POST, GET`).
fn allowed(template: &str) -> String {
    ROUTES
        .iter()
        .filter(|r| r.template == template)
        .map(|r| r.method.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The router of the admin API over `state`.
pub fn router(state: Arc<AdminState>) -> Router {
    let router = table(|op, methods| match op {
        Op::Create => on(methods, tokens::create),
        Op::List => on(methods, tokens::list),
        Op::Show => on(methods, tokens::show),
        Op::Disable => on(methods, tokens::disable),
        Op::Enable => on(methods, tokens::enable),
        Op::Revoke => on(methods, tokens::revoke),
        Op::Rotate => on(methods, change::rotate),
        Op::Update => on(methods, change::update_token),
        Op::Explain => on(methods, explain::explain),
        Op::Roles => on(methods, roles::roles),
        Op::Usage => on(methods, usage::usage),
        Op::Audit => on(methods, audit::list),
    })
    // Only matched routes are admitted: an unknown path (404) or method
    // (405) is answered before any key is checked.
    .route_layer(from_fn_with_state(state.clone(), admit));
    // The console's pages and sign-in, outside `admit` (they are how a
    // browser gets a credential); with the console off, /console/ is 404.
    let router = if state.console.is_some() {
        router.merge(console::router())
    } else {
        router
    };
    router.with_state(state)
}

/// The routes of [`ROUTES`], each served by `endpoint(op, method)`, with the
/// answers for a path under another method (405 with `Allow`) and for no
/// path at all (404).
fn table<S>(endpoint: impl Fn(Op, MethodFilter) -> MethodRouter<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = Router::new();
    let mut templates: Vec<&'static str> = Vec::new();
    for r in ROUTES {
        if !templates.contains(&r.template) {
            templates.push(r.template);
        }
    }
    for template in templates {
        let mut methods = MethodRouter::new();
        for r in ROUTES.iter().filter(|r| r.template == template) {
            #[allow(clippy::expect_used)] // ROUTES holds only standard methods
            let filter = MethodFilter::try_from(r.method.clone()).expect("a standard method");
            methods = methods.merge(endpoint(r.op, filter));
        }
        let allowed = allowed(template);
        methods = methods.fallback(move || {
            let allowed = allowed.clone();
            async move { ApiError::MethodNotAllowed { allowed } }
        });
        router = router.route(template, methods);
    }
    router.fallback(|| async { ApiError::NoRoute })
}

/// Between the router and a handler: a client that keeps presenting wrong
/// keys is refused before its next one is checked; the caller is
/// authenticated and put in the request's extensions; a token caller takes
/// one of its share of the request slots (before any body is read: the
/// admin key's reserve is never theirs, however slowly they send) and holds
/// it until the answer. Counts every answer by operation and code.
pub async fn admit(State(api): State<Arc<AdminState>>, mut req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    // `on(GET)` also answers HEAD; the admin API does not.
    let Some(op) = ROUTES
        .iter()
        .find(|r| r.template == template && r.method == req.method())
        .map(|r| r.op)
    else {
        return ApiError::MethodNotAllowed {
            allowed: allowed(&template),
        }
        .into_response();
    };
    let metrics = api.cache.metrics();
    let Some(Peer(peer)) = req.extensions().get::<Peer>().copied() else {
        // Only `AdminApi::handle` serves this router, and it names the peer.
        metrics.admin(op.as_str(), "unavailable");
        return ApiError::fault("the admin request has no client address").into_response();
    };
    let client = peer.ip().to_canonical();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|r| r.0.to_str().ok())
        .map(str::to_owned);
    // A refused change is no change: not in the audit log (a caller
    // could flood the bounded log with refusals and push real events out),
    // but in the admin log, with who, from where and why.
    let refused = |by: &str, code: &str| {
        if op.is_change() {
            tracing::info!(
                target: "hawzu_gate::admin",
                op = op.as_str(),
                code,
                by,
                client = %client,
                request_id = request_id.as_deref().unwrap_or(""),
                "admin change not done"
            );
        }
    };
    let refuse = |e: ApiError| {
        metrics.admin(op.as_str(), e.code());
        refused("unauthenticated", e.code());
        e.into_response()
    };
    // Before any credential is judged: a rebound page reads no answer to a
    // guess and uses up nothing of the wrong-key allowance.
    if let Some(host) = crate::console::rebound_host(req.headers(), req.uri(), api.tls) {
        return refuse(ApiError::forbidden(format!(
            "A browser's request over plain HTTP is taken at an address or localhost only, not at `{host}` (a name another site could point at this gate): open it at the address, or set tls.admin."
        )));
    }
    if api.failed_auth.is_refused(client) && !the_admin_keys_own(&api, req.headers(), client) {
        return refuse(ApiError::RateLimited {
            retry_after: api.failed_auth.retry_after().clone(),
        });
    }
    let caller = match authenticate(&api, req.method(), req.uri(), req.headers(), client).await {
        Ok(c) => c,
        Err(e) => {
            // The limit counts credentials that were wrong: a session
            // cookie is 256 random bits, guessed by no one, and a second
            // one planted by another service of the host (any port) must
            // not lock the browser's address out.
            if let ApiError::Unauthorized(_) = e
                && judges_a_credential(&api, req.headers())
            {
                api.failed_auth.failed(client);
            }
            return refuse(e);
        }
    };
    let _share = match &caller {
        Caller::Admin => None,
        Caller::Token { .. } => match api.token_share.take() {
            Some(slot) => Some(slot),
            None => {
                metrics.admin(op.as_str(), ApiError::Overloaded.code());
                refused(&caller.label(), ApiError::Overloaded.code());
                return ApiError::Overloaded.into_response();
            }
        },
    };
    // One tenant's tokens cannot fill the shared audit log, the webhooks
    // and the store with changes, nor keep the store every tenant's token
    // checks share busy with reads (a read may scan thousands of audit
    // entries or usage hours). The admin key is never limited.
    if let Caller::Token { workspace_id, .. } = &caller {
        let (bucket, result) = if op.is_change() {
            (&api.changes, "change_limited")
        } else {
            (&api.reads, "read_limited")
        };
        let now = Instant::now();
        // A revoke is not held to the day's limit: a tenant revoking its
        // tokens in an incident is never slowed to one every few seconds
        // (a token is revoked once, and so is each value of the chain of
        // rotations a revoke walks: revokes are bounded anyway).
        let daily = op.is_change() && op != Op::Revoke;
        let (result, refused_by) = if daily && api.daily_changes.is_empty(workspace_id, now) {
            let retry_after = api.daily_changes.retry_after().clone();
            let e = ApiError::DailyChangeLimited { retry_after };
            ("daily_change_limited", Some(e))
        } else if let Some(wait) = bucket.take_n(
            workspace_id.clone(),
            if op.is_change() { 1 } else { op.read_cost() },
            now,
        ) {
            // Until the call's whole cost is back, in whole seconds.
            let retry_after = HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64);
            let e = if op.is_change() {
                ApiError::ChangeLimited { retry_after }
            } else {
                ApiError::ReadLimited { retry_after }
            };
            (result, Some(e))
        } else {
            if daily {
                api.daily_changes.try_take(workspace_id.clone(), now);
            }
            (result, None)
        };
        if let Some(e) = refused_by {
            // Told apart from wrong keys' `rate_limited` in the metric.
            metrics.admin(op.as_str(), result);
            refused(&caller.label(), e.code());
            return e.into_response();
        }
    }
    let label = caller.label();
    req.extensions_mut().insert(Origin {
        actor: label.clone(),
        client: Some(client.to_string()),
        request_id: request_id.clone(),
    });
    req.extensions_mut().insert(caller);
    let res = next.run(req).await;
    let code = res.extensions().get::<ErrorCode>().map_or("ok", |c| c.0);
    metrics.admin(op.as_str(), code);
    if code != "ok" {
        refused(&label, code);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// The table with handlers that name their operation.
    fn named() -> Router {
        table(|op, methods| on(methods, move || async move { op.as_str() }))
    }

    async fn send(method: Method, path: &str) -> (StatusCode, Option<String>, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let res = named().oneshot(req).await.unwrap();
        let status = res.status();
        let allow = res
            .headers()
            .get(http::header::ALLOW)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, allow, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes_match_their_templates_only() {
        let (status, _, body) = send(
            Method::POST,
            "/admin/v1/tokens/tok_0123456789abcdef/disable",
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "disable"));
        assert_eq!(send(Method::GET, "/admin/v1/tokens").await.2, "list");
        assert_eq!(send(Method::DELETE, "/admin/v1/tokens/x").await.2, "revoke");
        let (status, allow, body) = send(Method::PUT, "/admin/v1/tokens").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(allow.as_deref(), Some("POST, GET"));
        assert!(body.contains("method_not_allowed"), "{body}");
        for path in [
            "/admin/v1/tokens/",
            "/admin/v1/tokens/a/b",
            "/admin/v2/tokens",
        ] {
            let (status, allow, body) = send(Method::GET, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(allow, None, "{path}");
            assert!(body.contains("\"not_found\""), "{body}");
        }
    }
}
