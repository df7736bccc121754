//! `POST /admin/v1/explain`: why a request with a given token would be
//! allowed or refused, step by step.
//!
//! The verdict is `decide`'s own (state, request checks, then
//! `authorize_traced`), and the rule steps are the trace that
//! `authorize_traced` records while it decides ([`Steps`]): explain never
//! walks the rules a second time, so it cannot tell a different story from
//! the doors. It reads the token through the caller's reach; it never
//! writes.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::{Method, StatusCode};
use jiff::Timestamp;

use crate::cache::CachedRecord;
use crate::decide::pass::{public_route, without_token};
use crate::decide::{
    ClientAddr, Credentials, Decision, Deny, Detail, NO_PROJECT, RequestFacts, Trace,
    authorize_traced, check_context, check_request, check_state,
};
use crate::policy::rules::{AmbiguousPath, Captures, Rule, normalize};
use crate::policy::{Access, OtherCredentials};
use crate::refusal::DenyCode;
use crate::token::{FieldErrors, TokenId, TokenRecord};

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{JsonBody, Reply};
use super::state::AdminState;
use super::tokens::find_for;
use super::wire::{ExplainRequest, Explained, RuleView, TokenView};

/// The steps of an explanation, in words; the rule steps come from
/// [`authorize_traced`] as it takes them.
#[derive(Debug)]
struct Steps<'q> {
    method: &'q Method,
    raw_path: &'q str,
    words: Vec<String>,
    rule: Option<RuleView>,
}

impl Trace<'_> for Steps<'_> {
    fn ambiguous(&mut self, why: &AmbiguousPath) {
        self.words.push(format!(
            "path {} is refused as ambiguous: {why}",
            self.raw_path
        ));
    }

    fn no_rule(&mut self) {
        self.words.push(format!(
            "no rule matches {} {}: tokens are refused here (deny by default)",
            self.method, self.raw_path
        ));
    }

    fn rule(&mut self, r: &Rule, captures: &Captures<'_>) {
        self.words.push(match r.access {
            Access::Permission(p) => format!(
                "rule {} matches: {:?} {} needs {p}",
                r.origin,
                r.methods,
                r.template.as_str(),
            ),
            Access::Public => format!(
                "rule {} matches: {:?} {} is public (needs no credentials; a token is only checked valid)",
                r.origin,
                r.methods,
                r.template.as_str(),
            ),
        });
        if let Some(ws) = captures.workspace {
            self.words.push(format!("the path's workspace is {ws}"));
        }
        if let Some(p) = captures.project {
            self.words.push(format!("the path's project is {p}"));
        }
        self.rule = Some(RuleView {
            origin: r.origin.clone(),
            methods: format!("{:?}", r.methods),
            template: r.template.as_str().to_owned(),
            permission: r.access.to_string(),
        });
    }
}

/// `POST /admin/v1/explain`.
pub async fn explain(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<ExplainRequest>,
) -> Result<Reply<Explained>, ApiError> {
    let now = Timestamp::now();
    let mut errors = FieldErrors::new();
    // No token id: the request presents no Hawzu token.
    let id = match req.token_id.as_deref().map(TokenId::parse) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            errors.insert("token_id".into(), e.to_string());
            None
        }
    };
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
    let client = match req.client.as_deref().map(str::trim) {
        None => ClientAddr::Unknown,
        Some(s) => match s.parse::<IpAddr>() {
            Ok(ip) => ClientAddr::Known(ip.to_canonical()),
            Err(_) => {
                errors.insert(
                    "client".into(),
                    format!("`{s}` is not an IP address; write it like 192.0.2.7 or 2001:db8::7"),
                );
                ClientAddr::Unknown
            }
        },
    };
    if !raw_path.starts_with('/') {
        errors.insert(
            "path".into(),
            "must be a request path starting with `/`".into(),
        );
    }
    let (Some(method), true) = (method, errors.is_empty()) else {
        return Err(ApiError::bad_request(
            "The explain request has invalid fields; see `fields`.",
            errors,
        ));
    };
    let Some(id) = id else {
        return Ok(Reply(
            StatusCode::OK,
            without_token_explained(&api, &method, raw_path, query, now),
        ));
    };
    let full = find_for(&api, &caller, &id).await?;
    let record = Arc::new(CachedRecord::new(&full));
    let policy = api.policy();
    let mut steps = Steps {
        method: &method,
        raw_path,
        words: vec![format!(
            "token {} is a {} token of workspace {}, {} now",
            full.id,
            full.scope.kind().as_str(),
            full.workspace_id,
            full.state(now).as_str()
        )],
        rule: None,
    };
    context_steps(&full, now, client, &mut steps.words);
    // The rule walk is told even when an earlier check refuses: explain
    // shows where the request would have gone.
    let authorized = authorize_traced(&policy, record.clone(), &method, raw_path, &mut steps);
    let deny = |code, record| {
        Decision::Deny(Deny {
            code,
            record,
            detail: None,
        })
    };
    let decision = match check_state(&full, now).and_then(|()| check_context(&record, now, client))
    {
        Err(code) => deny(code, None),
        Ok(()) => match check_request(query, false, None) {
            Err(code) => deny(code, Some(record)),
            Ok(()) => authorized,
        },
    };
    let Steps {
        words: mut steps,
        rule,
        ..
    } = steps;
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
        Decision::Pass(_) => ("passed", None, None, None, None),
        Decision::Deny(d) => {
            let why = match (&d.code, &d.detail) {
                (
                    DenyCode::InsufficientRole,
                    Some(Detail::Rule {
                        role: Some(role),
                        permission,
                        ..
                    }),
                ) => format!("role {role} lacks {permission}"),
                (DenyCode::InsufficientRole, _) => NO_PROJECT.into(),
                (DenyCode::WorkspaceMismatch, _) => {
                    format!("the token belongs to workspace {}", full.workspace_id)
                }
                (DenyCode::ProjectNotGranted, _) => {
                    "the token is not linked to that project".into()
                }
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
    steps.push(match (&decision, code) {
        (Decision::Pass(p), _) => p.reason.words().to_owned(),
        (_, None) => "allow".to_owned(),
        (_, Some(c)) => format!("deny: {c} ({status})"),
    });
    Ok(Reply(
        StatusCode::OK,
        Explained {
            decision: verdict.to_owned(),
            code: code.map(str::to_owned),
            status,
            token: Some(TokenView::of(&full, now)),
            rule,
            role,
            project,
            permission,
            steps,
        },
    ))
}

/// What `explain` says of a token's context limits, before the rule walk.
fn context_steps(
    full: &TokenRecord,
    now: Timestamp,
    client: ClientAddr<'_>,
    words: &mut Vec<String>,
) {
    if let Some(nb) = full.not_before {
        words.push(if now < nb {
            format!("the token is not valid before {nb}: refused until then")
        } else {
            format!("the token is valid from {nb}")
        });
    }
    if full.allow_from.is_empty() {
        return;
    }
    let nets: Vec<String> = full.allow_from.iter().map(ToString::to_string).collect();
    let nets = nets.join(", ");
    words.push(match client.get() {
        None => format!(
            "the token may be used only from {nets}; no client address was given (--client), so it is refused"
        ),
        Some(ip) if full.allow_from.iter().any(|n| n.contains(ip)) => {
            format!("the token may be used only from {nets}; client {ip} is inside")
        }
        Some(ip) => format!("the token may be used only from {nets}; client {ip} is not"),
    });
}

/// The explanation for a request that presents no Hawzu token: passed on
/// a public route or with `policy.other_credentials = "pass"`, else
/// refused as the doors refuse it. The verdict is [`without_token`]'s, the
/// doors' own.
fn without_token_explained(
    api: &AdminState,
    method: &Method,
    raw_path: &str,
    query: Option<&str>,
    now: Timestamp,
) -> Explained {
    let policy = api.policy();
    let facts = RequestFacts {
        method,
        path: raw_path,
        query,
        upgrade: false,
        override_header: None,
        credentials: Credentials::None,
        now,
        client: ClientAddr::Unknown,
    };
    let decision = without_token(&policy, &facts, DenyCode::MissingToken);
    let mut steps =
        vec!["the request presents no Hawzu token (a session cookie, another bearer such as a JWT, or nothing)".to_owned()];
    let public = public_route(&policy, method, raw_path);
    if public {
        steps.push(format!("the first rule for {method} {raw_path} is public"));
    } else if policy.other_credentials == OtherCredentials::Pass {
        steps.push(
            "policy.other_credentials is \"pass\": the API judges the request's own credentials"
                .to_owned(),
        );
    } else {
        steps.push("policy.other_credentials is \"refuse\" and no public rule matches".to_owned());
    }
    let (verdict, code, status) = match &decision {
        Decision::Pass(p) => {
            steps.push("no identity headers are set".to_owned());
            steps.push(p.reason.words().to_owned());
            ("passed", None, 200)
        }
        Decision::Allow(_) => ("allow", None, 200),
        Decision::Deny(d) => {
            if d.code != DenyCode::MissingToken {
                steps.push(d.code.message().trim_end_matches('.').to_owned());
            }
            steps.push(format!("deny: {} ({})", d.code.as_str(), d.code.status()));
            ("deny", Some(d.code.as_str().to_owned()), d.code.status())
        }
    };
    let rule = public
        .then(|| normalize(raw_path).ok())
        .flatten()
        .and_then(|p| {
            policy.rules.find(method, &p).map(|m| RuleView {
                origin: m.rule.origin.clone(),
                methods: format!("{:?}", m.rule.methods),
                template: m.rule.template.as_str().to_owned(),
                permission: m.rule.access.to_string(),
            })
        });
    Explained {
        decision: verdict.to_owned(),
        code,
        status,
        token: None,
        rule,
        role: None,
        project: None,
        permission: None,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::authorize;
    use crate::policy::Policy;
    use crate::token::{ProjectGrant, Scope, TokenRecord, record::RECORD_VERSION};

    fn viewer_of_proj_a() -> Arc<CachedRecord> {
        Arc::new(CachedRecord::new(&TokenRecord {
            v: RECORD_VERSION,
            id: TokenId::generate().unwrap(),
            name: "CI".into(),
            workspace_id: "ws_1".into(),
            scope: Scope::Project {
                projects: vec![ProjectGrant {
                    project_id: "proj_a".into(),
                    role: "project_viewer".into(),
                }],
            },
            created_by: "alice".into(),
            created_at: Timestamp::UNIX_EPOCH,
            expires_at: None,
            disabled_at: None,
            disabled_by: None,
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
            rotated_from: None,
            description: None,
            rotated_to: None,
            allow_from: Vec::new(),
            not_before: None,
            limits_by: None,
        }))
    }

    /// The steps `authorize_traced` tells, and whether its decision is
    /// `authorize`'s own.
    fn walk(method: Method, path: &str) -> (Vec<String>, Option<RuleView>) {
        let policy = Policy::default();
        let record = viewer_of_proj_a();
        let mut steps = Steps {
            method: &method,
            raw_path: path,
            words: Vec::new(),
            rule: None,
        };
        let traced = authorize_traced(&policy, record.clone(), &method, path, &mut steps);
        assert_eq!(traced, authorize(&policy, record, &method, path));
        (steps.words, steps.rule)
    }

    #[test]
    fn explain_steps_are_the_walk_authorize_took() {
        let (words, rule) = walk(
            Method::POST,
            "/api/v1/workspaces/ws_1/projects/proj_a/testcases",
        );
        let rule = rule.unwrap();
        assert_eq!(rule.permission, "testcases:write");
        assert_eq!(rule.origin, "default");
        assert!(words[0].starts_with("rule default matches"), "{words:?}");
        assert_eq!(words[1], "the path's workspace is ws_1");
        assert_eq!(words[2], "the path's project is proj_a");

        let (words, rule) = walk(Method::GET, "/settings/access-tokens");
        assert!(rule.is_none());
        assert_eq!(
            words,
            [
                "no rule matches GET /settings/access-tokens: tokens are refused here (deny by default)"
            ]
        );

        let (words, rule) = walk(Method::GET, "/api/v1/workspaces/ws_1/..%20/x");
        assert!(rule.is_none());
        assert_eq!(words.len(), 1);
        assert!(words[0].contains("is refused as ambiguous"), "{words:?}");
    }
}
