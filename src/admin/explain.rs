//! `POST /admin/v1/explain`: why a request with a given token would be
//! allowed or refused, step by step.
//!
//! The verdict is `decide`'s own (state, request checks, then
//! `authorize_traced`), and the rule steps are the trace that
//! `authorize_traced` records while it decides ([`Steps`]): explain never
//! walks the rules a second time, so it cannot tell a different story from
//! the doors. It reads the token through the caller's reach; it never
//! writes.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::{Method, StatusCode};
use jiff::Timestamp;

use crate::cache::CachedRecord;
use crate::decide::{Decision, Deny, Detail, Trace, authorize_traced, check_request, check_state};
use crate::policy::rules::{AmbiguousPath, Captures, Rule};
use crate::refusal::DenyCode;
use crate::token::{FieldErrors, TokenId};

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
        self.words.push(format!(
            "rule {} matches: {:?} {} needs {}",
            r.origin,
            r.methods,
            r.template.as_str(),
            r.permission
        ));
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
            permission: r.permission.to_string(),
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
    let decision = match check_state(&full, now) {
        Err(code) => deny(code, None),
        Ok(()) => match check_request(query, false) {
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
                (DenyCode::InsufficientRole, _) => {
                    "the route names no project, and a project token acts only inside its projects"
                        .into()
                }
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
    steps.push(match code {
        None => "allow".to_owned(),
        Some(c) => format!("deny: {c} ({status})"),
    });
    Ok(Reply(
        StatusCode::OK,
        Explained {
            decision: verdict.to_owned(),
            code: code.map(str::to_owned),
            status,
            token: TokenView::of(&full, now),
            rule,
            role,
            project,
            permission,
            steps,
        },
    ))
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
            last_used_at: None,
            rotated_from: None,
            description: None,
            rotated_to: None,
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
