//! The token console's door on the admin listener (`admin.console`): its
//! files under `/console/`, and its sign-in, `/console/session` (`POST`
//! signs in with the admin key or a `tokens:manage` token, `GET` says who
//! is signed in and hands the page its CSRF token again, `DELETE` signs
//! out). Every answer carries the console's security headers.
//!
//! Sign-in checks a credential exactly as a bearer is checked
//! (`caller::caller_of`, under the same wrong-key limit); what the page
//! then does goes through the admin API itself, with the session cookie
//! as the credential. No handler here acts on a token, and none logs or
//! answers a presented credential.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Path, State};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

use crate::console::{self, CSRF_HEADER, SessionCookie, SessionView, assets, session_cookie};

use super::caller::{Caller, caller_of, session_signed_in};
use super::error::ApiError;
use super::extract::{JsonBody, Reply};
use super::state::{AdminState, ConsoleState, Peer};
use super::wire::{SessionAnswer, SignInRequest};

/// The console's routes (merged into the admin router when it is on).
pub fn router() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/console", get(to_console))
        .route("/console/", get(page))
        .route("/console/{file}", get(file))
        .route(
            "/console/session",
            get(who).post(sign_in).delete(sign_out).fallback(|| async {
                ApiError::MethodNotAllowed {
                    allowed: "GET, POST, DELETE".into(),
                }
            }),
        )
        .layer(map_response(with_secure_headers))
}

async fn with_secure_headers(mut res: Response) -> Response {
    console::secure_headers(res.headers_mut());
    res
}

/// `GET /console`: the page lives at `/console/`.
async fn to_console() -> Response {
    let mut res = StatusCode::PERMANENT_REDIRECT.into_response();
    res.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(console::PATH));
    res
}

async fn page() -> Response {
    serve(assets::find(""))
}

async fn file(Path(name): Path<String>) -> Response {
    serve(assets::find(&name))
}

fn serve(asset: Option<&'static assets::Asset>) -> Response {
    let Some(a) = asset else {
        return ApiError::NoRoute.into_response();
    };
    let mut res = Response::new(Body::from(a.body));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    res
}

/// The console's state; the router is only built with the console on.
fn console_of(api: &AdminState) -> Result<&ConsoleState, ApiError> {
    api.console.as_ref().ok_or(ApiError::NoRoute)
}

fn answer(view: &SessionView, caller: &Caller) -> SessionAnswer {
    SessionAnswer {
        caller: caller.label(),
        workspace: caller.workspace().map(str::to_owned),
        csrf_token: view.csrf().to_owned(),
        expires_in: view.remaining.as_secs(),
        idle_timeout: console::session::IDLE.as_secs(),
    }
}

/// `POST /console/session`: sign in. Refused from another origin (a
/// sign-in forced on a browser), under the wrong-key limit (but for an
/// unguessable admin key), and counted in it when wrong. All three are
/// judged before the body is read (the admin key's exception after), and the
/// sign-in holds one of the token callers' request slots while it is (the
/// admin key's reserve is never a sign-in's, however slowly it sends).
async fn sign_in(
    State(api): State<Arc<AdminState>>,
    Extension(Peer(peer)): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let console = console_of(&api)?;
    let client = peer.ip().to_canonical();
    let rate_limited = || ApiError::RateLimited {
        retry_after: api.failed_auth.retry_after().clone(),
    };
    // Under the limit only an unguessable admin key signs in (read from
    // the body, so only then is it read): whoever shares the operator's
    // address must not shut the operator out of the console either.
    let refused = api.failed_auth.is_refused(client);
    if refused && !api.key.unguessable() {
        return Err(rate_limited());
    }
    console::same_origin(&headers, &method, &uri, console.tls)
        .map_err(|e| ApiError::forbidden(format!("Refused as a cross-site request: {e}.")))?;
    let _share = api.token_share.take().ok_or(ApiError::Overloaded)?;
    let JsonBody(req) = JsonBody::<SignInRequest>::from_request(request, &api).await?;
    if refused && !api.key.verify_unguessable(req.credential.trim().as_bytes()) {
        return Err(rate_limited());
    }
    let (caller, signed_in) = match caller_of(&api, req.credential.trim().as_bytes(), client).await
    {
        Ok(found) => found,
        Err(e) => {
            if let ApiError::Unauthorized(_) = e {
                api.failed_auth.failed(client);
            }
            tracing::info!(
                target: "hawzu_gate::admin",
                op = "console_sign_in",
                code = e.code(),
                client = %client,
                "console sign-in refused"
            );
            return Err(e);
        }
    };
    // A browser signing in again leaves no session of its own behind.
    if let SessionCookie::One(old) = session_cookie(&headers, console::cookie_name(console.tls)) {
        console.sessions.close(old);
    }
    let opened = console
        .sessions
        .open(signed_in, caller.label(), caller.workspace(), client)
        .map_err(ApiError::fault)?;
    tracing::info!(
        target: "hawzu_gate::admin",
        op = "console_sign_in",
        by = %caller.label(),
        client = %client,
        "console signed in"
    );
    let mut res = Reply(StatusCode::OK, answer(&opened.view, &caller)).into_response();
    let cookie = console::set_cookie(
        console.tls,
        &opened.cookie,
        console.sessions.max_age().as_secs(),
    )
    .ok_or_else(|| ApiError::fault("the session cookie is not a header value"))?;
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

/// The session of a request's cookie, from the console's origin.
fn session_of<'h>(
    console: &ConsoleState,
    method: &Method,
    uri: &Uri,
    headers: &'h HeaderMap,
    client: std::net::IpAddr,
) -> Result<(&'h str, SessionView), ApiError> {
    console::same_origin(headers, method, uri, console.tls)
        .map_err(|e| ApiError::forbidden(format!("Refused as a cross-site request: {e}.")))?;
    let ended =
        || ApiError::unauthorized("Not signed in to the console, or the session has ended.");
    let SessionCookie::One(cookie) = session_cookie(headers, console::cookie_name(console.tls))
    else {
        return Err(ended());
    };
    let view = console.sessions.find(cookie, client).ok_or_else(ended)?;
    Ok((cookie, view))
}

/// `GET /console/session`: who is signed in, and the session's CSRF token
/// (readable only by the console's own pages: no CORS).
async fn who(
    State(api): State<Arc<AdminState>>,
    Extension(Peer(peer)): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Reply<SessionAnswer>, ApiError> {
    let console = console_of(&api)?;
    let (cookie, view) = session_of(console, &method, &uri, &headers, peer.ip().to_canonical())?;
    let caller = session_signed_in(
        &api,
        console,
        cookie,
        &view.signed_in,
        peer.ip().to_canonical(),
    )
    .await?;
    Ok(Reply(StatusCode::OK, answer(&view, &caller)))
}

/// `DELETE /console/session`: sign out (the session ends on the server,
/// and the cookie is cleared). Needs the session's CSRF header.
async fn sign_out(
    State(api): State<Arc<AdminState>>,
    Extension(Peer(peer)): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let console = console_of(&api)?;
    match session_of(console, &method, &uri, &headers, peer.ip().to_canonical()) {
        Ok((cookie, view)) => {
            let presented = headers.get(CSRF_HEADER).map(|v| v.as_bytes());
            if !presented.is_some_and(|p| view.csrf_matches(p)) {
                return Err(ApiError::forbidden(
                    "Signing out needs the session's X-Hawzu-Csrf header.",
                ));
            }
            console.sessions.close(cookie);
            tracing::info!(target: "hawzu_gate::admin", op = "console_sign_out", by = %view.label, "console signed out");
        }
        // No live session: nothing to end, the cookie is cleared anyway.
        Err(ApiError::Unauthorized(_)) => {}
        Err(e) => return Err(e),
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, console::clear_cookie(console.tls));
    Ok(res)
}
