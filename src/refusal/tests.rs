use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;

use super::render::grpc_percent_encode;
use super::*;

/// Every refusal there is (one `NotFound` stands for all).
fn every() -> Vec<Refusal> {
    let mut all: Vec<Refusal> = DenyCode::ALL.iter().map(|&c| Refusal::Deny(c)).collect();
    all.extend([
        Refusal::Overloaded,
        Refusal::BodyTimeout,
        Refusal::BadRequest,
        Refusal::UpstreamUnavailable,
        Refusal::UpstreamError,
        Refusal::UpstreamTimeout,
        Refusal::NotFound("This listener serves /x."),
    ]);
    all
}

fn render() -> Render {
    Render::new(
        HeaderName::from_static("x-hawzu-error"),
        HeaderValue::from_static("37"),
    )
}

#[test]
fn codes_are_distinct_and_snake_case() {
    let all = every();
    let mut codes: Vec<&str> = all.iter().map(|r| r.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len(), "two refusals share a code");
    for c in codes {
        assert!(
            c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{c}"
        );
    }
}

#[tokio::test]
async fn the_json_answer_carries_status_code_message_request_id_and_headers() {
    let id = HeaderValue::from_static("req-1");
    for r in every() {
        let res = render().json(r, Some(&id));
        assert_eq!(res.status(), r.status(), "{r:?}");
        let h = res.headers();
        assert_eq!(h["x-hawzu-error"], r.code(), "{r:?}");
        assert_eq!(h["x-request-id"], "req-1");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(
            h.get("www-authenticate").map(|v| v.to_str().unwrap()),
            r.challenge(),
            "{r:?}"
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], r.code());
        assert_eq!(v["message"], r.message());
        assert_eq!(v["request_id"], "req-1");
    }
}

#[test]
fn retry_after_is_one_second_for_a_busy_gate_and_the_limit_window_for_rate_limited() {
    let r = render();
    let after = |x: Refusal| {
        r.json(x, None)
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(after(Refusal::Overloaded).as_deref(), Some("1"));
    assert_eq!(
        after(Refusal::Deny(DenyCode::StoreUnavailable)).as_deref(),
        Some("1")
    );
    assert_eq!(
        after(Refusal::Deny(DenyCode::RateLimited)).as_deref(),
        Some("37")
    );
    assert_eq!(after(Refusal::Deny(DenyCode::UnknownToken)), None);
}

#[tokio::test]
async fn the_nginx_answer_is_empty_and_says_rate_limited_as_401() {
    for r in every() {
        let res = render().empty(r);
        let want = if r == Refusal::Deny(DenyCode::RateLimited) {
            StatusCode::UNAUTHORIZED
        } else {
            r.status()
        };
        assert_eq!(res.status(), want, "{r:?}");
        assert_eq!(res.headers()["x-hawzu-error"], r.code());
        assert_eq!(res.headers()["content-length"], "0");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "{r:?}");
    }
}

#[test]
fn the_envoy_answer_has_the_http_status_the_grpc_code_and_the_json_body() {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    let id = HeaderValue::from_static("req-2");
    for r in every() {
        let res = render().envoy_denied(r, &id);
        assert_eq!(res.status.as_ref().unwrap().code, r.grpc() as i32, "{r:?}");
        let Some(HttpResponse::DeniedResponse(d)) = &res.http_response else {
            panic!("{r:?}: no denied response");
        };
        assert_eq!(
            d.status.as_ref().unwrap().code,
            i32::from(r.status().as_u16()),
            "{r:?}"
        );
        let header = |name: &str| {
            d.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == name)
                .map(|h| h.value.clone())
        };
        assert_eq!(header("x-hawzu-error").as_deref(), Some(r.code()));
        assert_eq!(header("x-request-id").as_deref(), Some("req-2"));
        let v: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(v["error"], r.code());
        assert_eq!(v["request_id"], "req-2");
    }
}

#[test]
fn the_grpc_trailers_carry_the_grpc_code_and_name_the_refusal() {
    for r in every() {
        let res = render().grpc_trailers(r);
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], r.grpc().as_str());
        assert_eq!(r.grpc().as_str(), (r.grpc() as i32).to_string());
        let message = h["grpc-message"].to_str().unwrap();
        assert!(message.contains(r.code()), "{message}");
    }
}

#[test]
fn deny_codes_map_to_the_documented_grpc_codes() {
    use DenyCode::*;
    assert_eq!(
        Refusal::Deny(UnknownToken).grpc(),
        GrpcCode::Unauthenticated
    );
    assert_eq!(
        Refusal::Deny(InsufficientRole).grpc(),
        GrpcCode::PermissionDenied
    );
    assert_eq!(
        Refusal::Deny(StoreUnavailable).grpc(),
        GrpcCode::Unavailable
    );
    assert_eq!(
        Refusal::Deny(RateLimited).grpc(),
        GrpcCode::ResourceExhausted
    );
    assert_eq!(
        Refusal::Deny(AmbiguousPath).grpc(),
        GrpcCode::InvalidArgument
    );
    assert_eq!(Refusal::Overloaded.grpc(), GrpcCode::Unavailable);
    assert_eq!(Refusal::BodyTimeout.grpc(), GrpcCode::DeadlineExceeded);
}

#[test]
fn grpc_messages_are_percent_encoded() {
    assert_eq!(grpc_percent_encode("a b%c…"), "a b%25c%E2%80%A6");
}

#[test]
fn the_raw_http1_answer_parses_and_closes_the_connection() {
    let bytes = render().http1_close(Refusal::Overloaded);
    let text = std::str::from_utf8(&bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    assert_eq!(lines.next(), Some("HTTP/1.1 503 Service Unavailable"));
    let headers: Vec<(&str, &str)> = lines.map(|l| l.split_once(": ").unwrap()).collect();
    let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    assert_eq!(get("connection"), Some("close"));
    assert_eq!(get("retry-after"), Some("1"));
    assert_eq!(get("x-hawzu-error"), Some("overloaded"));
    assert_eq!(get("content-length"), Some(body.len().to_string().as_str()));
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"], "overloaded");
}

#[test]
fn every_code_has_the_documented_status_and_challenge() {
    for code in DenyCode::ALL {
        assert!(!code.message().is_empty());
        let challenge = code.challenge();
        match code {
            DenyCode::MissingToken => {
                assert_eq!(code.status(), 401);
                assert_eq!(challenge, Some(r#"Bearer realm="hawzu""#));
            }
            DenyCode::MalformedToken
            | DenyCode::UnknownToken
            | DenyCode::TokenRevoked
            | DenyCode::TokenDisabled
            | DenyCode::TokenExpired
            | DenyCode::TokenNotYetValid => {
                assert_eq!(code.status(), 401);
                let c = challenge.unwrap();
                assert!(
                    c.starts_with(
                        r#"Bearer realm="hawzu", error="invalid_token", error_description=""#
                    ),
                    "{c}"
                );
                assert!(c.contains(code.message().trim_end_matches('.')), "{c}");
            }
            DenyCode::InsufficientRole
            | DenyCode::WorkspaceMismatch
            | DenyCode::ProjectNotGranted
            | DenyCode::NoMatchingRule => {
                assert_eq!(code.status(), 403);
                assert_eq!(
                    challenge,
                    Some(r#"Bearer realm="hawzu", error="insufficient_scope""#)
                );
            }
            DenyCode::AmbiguousPath
            | DenyCode::MethodOverride
            | DenyCode::PathOverride
            | DenyCode::UpgradeRefused
            | DenyCode::MissingOriginal
            | DenyCode::AmbiguousHeader => {
                assert_eq!(code.status(), 400);
                assert_eq!(challenge, None);
            }
            DenyCode::AddressNotAllowed => {
                assert_eq!(code.status(), 403);
                let c = challenge.unwrap();
                assert!(
                    c.starts_with(
                        r#"Bearer realm="hawzu", error="insufficient_scope", error_description=""#
                    ),
                    "{c}"
                );
                assert!(c.contains(code.message().trim_end_matches('.')), "{c}");
            }
            DenyCode::StoreUnavailable => {
                assert_eq!(code.status(), 503);
                assert_eq!(challenge, None);
            }
            DenyCode::RateLimited => {
                assert_eq!(code.status(), 429);
                assert_eq!(challenge, None);
            }
        }
    }
}
