//! Who is calling the admin API ([`Caller`]), and the one check between a
//! caller and a token it creates or acts on ([`Caller::may_reach`]).
//!
//! The admin key reaches everything; a workspace token with `tokens:manage`
//! reaches only tokens of its own workspace within its own permissions, and
//! never hands out a secret that outlives it (a rotated value in its
//! overlap manages nothing). A console session stands for
//! the caller its sign-in resolved to, and only with its CSRF header from
//! the console's origin. A token caller is judged when its request comes
//! in and again, from its record in the store, right before a change
//! ([`judged_now`]). This module decides; it reads only a caller's own
//! record, never writes the store, and never logs a presented key.

use http::Method;
use jiff::Timestamp;

use crate::cache::{CachedRecord, CachedScope};
use crate::console::{self, CSRF_HEADER, SessionCookie, SignedIn, session_cookie};
use crate::decide::{self, ClientAddr, Credentials};
use crate::doors::credentials;
use crate::policy::Policy;
use crate::policy::net::IpNet;
use crate::policy::roles::{PermissionSet, TOKENS_MANAGE};
use crate::refusal::DenyCode;
use crate::store::{StoreError, TokenStore};
use crate::token::{Scope, TokenHash, TokenId, TokenRecord, TokenSecret};

use super::error::ApiError;
use super::state::{AdminState, ConsoleState};

/// Who is calling the admin API.
#[derive(Debug, Clone)]
pub enum Caller {
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
        /// The caller's own `allow_from` (empty: anywhere): nothing it
        /// makes may be usable from elsewhere.
        allow_from: Box<[IpNet]>,
        /// The address it called from (the admin listener's peer), against
        /// which its `allow_from` is judged again before a change.
        client: std::net::IpAddr,
        /// Its secret's hash, by which it is read again before a change
        /// (as it signed in: not through the id's index, which a Redis
        /// fault may lose).
        hash: TokenHash,
    },
}

/// What a caller is about to do to a token, for the words of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Create a token with this scope.
    Create,
    /// Any action on an existing token: show, explain, disable, enable,
    /// revoke, rotate (and seeing it in a list).
    Existing,
}

impl Caller {
    pub fn label(&self) -> String {
        match self {
            Caller::Admin => ADMIN_LABEL.into(),
            Caller::Token { id, .. } => format!("token:{id}"),
        }
    }

    pub fn workspace(&self) -> Option<&str> {
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
    pub fn may_reach(
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
                None => other_workspace(own),
            });
        }
        // A role the policy does not define holds nothing today and
        // whatever its definition grants when it comes back: only the
        // admin key reaches such a token.
        // Not named: the target may be above the caller, whose lists never
        // show it.
        if roles_of(scope).any(|r| policy.roles.get(r).is_none()) {
            return Err(ApiError::forbidden(
                "A token cannot act on a token whose role this gate does not define; only the admin key can.",
            ));
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
            // What that token holds is not shown: a caller learns nothing
            // of a token above it.
            Reach::Existing => "A token cannot act on a token above its own role.".to_owned(),
        }))
    }

    /// Whether the caller may make tokens in `workspace_id` at all: the
    /// admin key anywhere, a token caller in its own workspace only (403).
    /// Checked before a create request is judged, so that nothing of
    /// another workspace (its limits) shows in a refusal.
    pub fn may_enter(&self, workspace_id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Token {
                workspace_id: own, ..
            } if own != workspace_id => Err(other_workspace(own)),
            _ => Ok(()),
        }
    }

    /// [`Caller::may_reach`] for a stored record.
    pub fn may_act_on(&self, policy: &Policy, record: &TokenRecord) -> Result<(), ApiError> {
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
    pub fn outlived_by(&self, expires_at: Option<Timestamp>) -> Option<String> {
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

/// A token caller of `own` asked to make a token elsewhere.
fn other_workspace(own: &str) -> ApiError {
    ApiError::forbidden(format!("This token manages workspace `{own}` only."))
}

impl Caller {
    /// A token caller limited to some networks cannot hand out a secret
    /// usable from elsewhere: what it creates, rotates or sets `allow_from`
    /// on must be limited to networks within its own. `None` when allowed
    /// (always, for a caller usable from anywhere), else why not.
    pub fn widened_by(&self, allow_from: &[IpNet]) -> Option<String> {
        let Caller::Token {
            allow_from: own, ..
        } = self
        else {
            return None;
        };
        if own.is_empty() {
            return None;
        }
        let own_list = || {
            own.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if allow_from.is_empty() {
            return Some(format!(
                "must list networks within the acting token's own allow_from ({}): a token limited to them cannot make one usable from anywhere",
                own_list()
            ));
        }
        allow_from
            .iter()
            .find(|net| !own.iter().any(|o| o.covers(net)))
            .map(|net| {
                format!(
                    "`{net}` is not within the acting token's own allow_from ({})",
                    own_list()
                )
            })
    }
}

/// Who did it, in `created_by` and `disabled_by`, for the admin key.
pub const ADMIN_LABEL: &str = "admin";

/// The permissions a token of `scope` holds under `policy` (all its roles
/// together; a role the policy no longer knows holds nothing).
fn permissions_of(policy: &Policy, scope: &Scope) -> PermissionSet {
    roles_of(scope).fold(PermissionSet::EMPTY, |acc, name| {
        acc.union(
            policy
                .roles
                .get(name)
                .map(|r| r.permissions)
                .unwrap_or_default(),
        )
    })
}

/// The role names a token of `scope` holds (one per project).
pub fn roles_of(scope: &Scope) -> impl Iterator<Item = &str> {
    let (one, many) = match scope {
        Scope::Workspace { role } => (Some(role.as_str()), &[][..]),
        Scope::Project { projects } => (None, &projects[..]),
    };
    one.into_iter().chain(many.iter().map(|g| g.role.as_str()))
}

/// Whether [`authenticate`] judges a credential of this request — one
/// `Authorization` header and no session cookie — so that its refusal is a
/// wrong credential, counted in the wrong-key limit. A request refused as
/// ambiguous (a bearer with a cookie, two bearers) had nothing judged:
/// no guess was tried, and a script's left-over cookie must not lock out an
/// admin key the operator chose.
pub fn judges_a_credential(api: &AdminState, headers: &http::HeaderMap) -> bool {
    let cookie = match &api.console {
        Some(c) => session_cookie(headers, console::cookie_name(c.tls)),
        None => SessionCookie::None,
    };
    matches!(
        (credentials(headers), cookie),
        (Credentials::One(_), SessionCookie::None)
    )
}

/// Who is calling: the admin key, or a workspace token whose role holds
/// `tokens:manage`, used from `client` within its context limits; sent as
/// a bearer, or (with the console on) as the console's session cookie
/// with its CSRF header, from the console's own origin. Both at once are
/// refused as ambiguous. Never logs what was presented.
pub async fn authenticate(
    api: &AdminState,
    method: &Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    client: std::net::IpAddr,
) -> Result<Caller, ApiError> {
    let unauthorized = |m: &'static str| ApiError::unauthorized(m);
    let creds = credentials(headers);
    let cookie = match &api.console {
        Some(c) => session_cookie(headers, console::cookie_name(c.tls)),
        None => SessionCookie::None,
    };
    let value = match (creds, cookie) {
        (Credentials::None, SessionCookie::None) => {
            return Err(unauthorized(
                "Send the admin key as `Authorization: Bearer <key>`.",
            ));
        }
        (Credentials::None, SessionCookie::Several) => {
            return Err(unauthorized("Send the console's session cookie once."));
        }
        (Credentials::None, SessionCookie::One(value)) => {
            return match &api.console {
                Some(c) => session_caller(api, c, value, method, uri, headers, client).await,
                None => Err(unauthorized("The console is off.")),
            };
        }
        (_, SessionCookie::One(_) | SessionCookie::Several) => {
            return Err(unauthorized(
                "Send either an Authorization header or the console's session cookie, not both.",
            ));
        }
        (Credentials::Several, SessionCookie::None) => {
            return Err(unauthorized("Send one Authorization header."));
        }
        (Credentials::One(v), SessionCookie::None) => v,
    };
    let presented = bearer(value)
        .ok_or_else(|| unauthorized("Use the Bearer scheme: `Authorization: Bearer <key>`."))?;
    caller_of(api, presented, client).await.map(|(c, _)| c)
}

/// What an `Authorization: Bearer <value>` presents (scheme in any case).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    value
        .split_at_checked(7)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, rest)| rest.trim_ascii())
}

/// Whether the request is the admin key's own, when that key has the
/// generated form (`AdminKey::verify_unguessable`): its one
/// `Authorization` is the key (one hash compared in constant time), or it
/// has no `Authorization` and its console cookie names a live session the
/// key signed in from this address (in memory). No store read either way.
/// Such a request is let through the wrong-key limit: whoever shares the
/// operator's address (a port-forward, a page the operator's browser
/// opens) could otherwise shut the operator out.
pub fn the_admin_keys_own(
    api: &AdminState,
    headers: &http::HeaderMap,
    client: std::net::IpAddr,
) -> bool {
    match credentials(headers) {
        Credentials::One(v) => return bearer(v).is_some_and(|k| api.key.verify_unguessable(k)),
        Credentials::Several => return false,
        Credentials::None => {}
    }
    if !api.key.unguessable() {
        return false;
    }
    let Some(console) = &api.console else {
        return false;
    };
    match session_cookie(headers, console::cookie_name(console.tls)) {
        SessionCookie::One(cookie) => console
            .sessions
            .find(cookie, client)
            .is_some_and(|s| matches!(s.signed_in, SignedIn::Admin)),
        _ => false,
    }
}

/// Who a presented credential (a bearer's value, or what the console's
/// sign-in form sent) is, and what a console session keeps of it: the
/// admin key, or a workspace token with `tokens:manage` (by its hash).
pub async fn caller_of(
    api: &AdminState,
    presented: &[u8],
    client: std::net::IpAddr,
) -> Result<(Caller, SignedIn), ApiError> {
    let policy = api.policy();
    if !policy.prefixes.starts_any_case(presented) {
        return if api.key.verify(presented) {
            Ok((Caller::Admin, SignedIn::Admin))
        } else {
            Err(ApiError::unauthorized("The admin key is not valid."))
        };
    }
    let secret = std::str::from_utf8(presented)
        .ok()
        .and_then(|s| TokenSecret::parse_with(s, &policy.prefixes).ok())
        .ok_or_else(|| ApiError::unauthorized(DenyCode::MalformedToken.message()))?;
    let hash = secret.hash();
    let caller = token_caller(api, &hash, client).await?;
    Ok((caller, SignedIn::Token(hash)))
}

/// A console session's caller: the request must come from the console's
/// origin and carry the session's CSRF token; a manager token is judged
/// again (a token disabled, revoked, expired or stripped of
/// `tokens:manage` since sign-in ends the session).
async fn session_caller(
    api: &AdminState,
    console: &ConsoleState,
    cookie: &str,
    method: &Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    client: std::net::IpAddr,
) -> Result<Caller, ApiError> {
    console::same_origin(headers, method, uri, console.tls)
        .map_err(|e| ApiError::forbidden(format!("Refused as a cross-site request: {e}.")))?;
    let session = console.sessions.find(cookie, client).ok_or_else(|| {
        ApiError::unauthorized("The console session has ended or is not known; sign in again.")
    })?;
    let csrf = headers.get(CSRF_HEADER).ok_or_else(|| {
        ApiError::forbidden(
            "A request with the console's session cookie needs the session's X-Hawzu-Csrf header.",
        )
    })?;
    if !session.csrf_matches(csrf.as_bytes()) {
        return Err(ApiError::forbidden(
            "The X-Hawzu-Csrf header does not match the console session.",
        ));
    }
    session_signed_in(api, console, cookie, &session.signed_in, client).await
}

/// The caller a live session stands for now; a manager token that no
/// longer may manage ends the session.
pub async fn session_signed_in(
    api: &AdminState,
    console: &ConsoleState,
    cookie: &str,
    signed_in: &SignedIn,
    client: std::net::IpAddr,
) -> Result<Caller, ApiError> {
    match signed_in {
        SignedIn::Admin => Ok(Caller::Admin),
        SignedIn::Token(hash) => {
            let judged = token_caller(api, hash, client).await;
            if let Err(ApiError::Unauthorized(_) | ApiError::Forbidden(_)) = &judged {
                console.sessions.close(cookie);
            }
            judged
        }
    }
}

/// A workspace token, by its hash, as a caller: usable now from `client`,
/// and its role holds `tokens:manage`.
async fn token_caller(
    api: &AdminState,
    hash: &TokenHash,
    client: std::net::IpAddr,
) -> Result<Caller, ApiError> {
    // The admin listener believes no forwarded address: its peer.
    let record = decide::lookup(
        &api.cache,
        hash,
        Timestamp::now(),
        ClientAddr::Known(client),
    )
    .await
    .map_err(|deny| refused_token(deny.code))?;
    let caller = manager(api, &record, client, *hash)?;
    // A manager that only manages is in use: `last_used_at` says so (the
    // unused-token policy reads it), though no API request is counted.
    api.usage
        .note_record(&record, || Some(*hash), Timestamp::now());
    Ok(caller)
}

/// `caller` judged again, now, from its record as the store holds it (not
/// the cache, nor what was judged when the request came in): what every
/// change calls once the request's body is read, right before it writes.
/// A manager token disabled, revoked (on this gate or any other of the
/// fleet), expired, moved out of `allow_from` or stripped of
/// `tokens:manage` while its request was in flight changes nothing — 401
/// or 403 as its next request would get. The admin key is not read again.
/// The answer is the caller as it is now (its permissions, expiry and
/// networks), for the change's own checks.
pub async fn judged_now(api: &AdminState, caller: Caller) -> Result<Caller, ApiError> {
    let Caller::Token { client, hash, .. } = &caller else {
        return Ok(caller);
    };
    let (client, hash) = (*client, *hash);
    let stored = api
        .cache
        .get(&hash)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::unauthorized(DenyCode::UnknownToken.message()))?;
    let record = CachedRecord::new(&stored);
    let now = Timestamp::now();
    decide::check_cached_state(&record, now)
        .and_then(|()| decide::check_context(&record, now, ClientAddr::Known(client)))
        .map_err(refused_token)?;
    manager(api, &record, client, hash)
}

/// The admin API's refusal of a token that the doors would refuse with
/// `code`.
fn refused_token(code: DenyCode) -> ApiError {
    match code {
        DenyCode::StoreUnavailable => {
            ApiError::store(StoreError::Unavailable("token lookup failed".into()))
        }
        DenyCode::AddressNotAllowed => ApiError::forbidden(code.message()),
        code => ApiError::unauthorized(code.message()),
    }
}

/// The caller a usable token `record`, used from `client`, is: a workspace
/// token whose role holds `tokens:manage`, and not a rotated value in its
/// overlap.
fn manager(
    api: &AdminState,
    record: &CachedRecord,
    client: std::net::IpAddr,
    hash: TokenHash,
) -> Result<Caller, ApiError> {
    // A value whose end is set (a rotation's overlap: it still opens the
    // API) is on its way out: it must neither mint what outlives it nor
    // take its successor from the successor's holder.
    if let Some(until) = record.revoked_at() {
        return Err(ApiError::forbidden(format!(
            "This token was rotated: its old value works for API calls until {until:.0} but cannot manage tokens; use the new value."
        )));
    }
    let CachedScope::Workspace { role } = record.scope() else {
        return Err(ApiError::forbidden(
            "Only workspace tokens whose role has tokens:manage may manage tokens.",
        ));
    };
    let permissions = api
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
        allow_from: record
            .limits()
            .map(|l| l.allow_from.clone())
            .unwrap_or_default(),
        client,
        hash,
    })
}
