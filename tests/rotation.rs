//! Rotation for the everyday case and token updates, through the admin API
//! on real sockets: a new expiry, an overlap capped by
//! `admin.max_rotation_overlap` (and ending on a gate that holds the old
//! value in its cache, with no store read), rotating a token that expired
//! within `admin.rotate_after_expiry`, and `PATCH /admin/v1/tokens/{id}`
//! (name, description, a shorter expiry; never a wider scope).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use hawzu_gate::store::{RedisStore, TokenStore, redis::RedisOptions};
use hawzu_gate::token::{Scope, TokenId, TokenRecord, TokenSecret, record::RECORD_VERSION};
use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use common::{Answer, InProcessGate, create_token, nginx_auth, workspace_token};

const KEY: &str = "a-test-admin-key-that-is-long-enough-0123456789";

fn body(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

async fn rotate(gate: &InProcessGate, id: &str, body: Value) -> Answer {
    gate.admin()
        .post(&format!("/admin/v1/tokens/{id}/rotate"), body)
        .await
}

/// Rotates `id` with `body`: the successor's id and secret.
async fn rotated(gate: &InProcessGate, id: &str, with: Value) -> (String, String) {
    let a = rotate(gate, id, with).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", body(&a));
    let v = a.json();
    (
        v["token"]["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

async fn patch(gate: &InProcessGate, id: &str, body: Value) -> Answer {
    gate.admin()
        .request(Method::PATCH, &format!("/admin/v1/tokens/{id}"))
        .json(body)
        .go()
        .await
}

async fn show(gate: &InProcessGate, id: &str) -> Value {
    gate.admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json()["token"]
        .clone()
}

fn ts(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

/// (status, X-Hawzu-Error) of `/auth/nginx` for `secret`.
async fn auth(gate: &InProcessGate, secret: &str) -> (StatusCode, Option<String>) {
    let a = nginx_auth(gate, secret).await;
    (a.status, a.header("x-hawzu-error").map(str::to_owned))
}

#[tokio::test]
async fn rotate_takes_a_new_expiry_and_an_overlap_capped_by_the_config() {
    let gate = InProcessGate::start(&[("admin.max_rotation_overlap", "2d")]).await;
    let (id, old_secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_member", "1w"),
    )
    .await;

    // Over the cap: 422 naming the cap; `3m` names both readings.
    let a = rotate(&gate, &id, json!({"expires": "3mo", "overlap": "3d"})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", body(&a));
    let f = &a.json()["fields"];
    assert!(
        f["overlap"]
            .as_str()
            .unwrap()
            .contains("admin.max_rotation_overlap (2d)"),
        "{f}"
    );
    let a = rotate(&gate, &id, json!({"expires": "3m"})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", body(&a));
    assert!(
        a.json()["fields"]["expires"]
            .as_str()
            .unwrap()
            .starts_with("3m: a minute or a month? write 3mo"),
        "{}",
        body(&a)
    );
    let a = rotate(&gate, &id, json!({"overlap": "24h", "colour": 1})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", body(&a));
    // Nothing changed by the refusals.
    assert_eq!(auth(&gate, &old_secret).await.0, StatusCode::OK);

    let before = Timestamp::now();
    let a = rotate(&gate, &id, json!({"expires": "3mo", "overlap": "24h"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", body(&a));
    let v = a.json();
    let new_id = v["token"]["id"].as_str().unwrap().to_owned();
    let new_secret = v["secret"].as_str().unwrap().to_owned();
    let expires = ts(&v["token"]["expires_at"]);
    assert!(
        expires > before + SignedDuration::from_hours(24 * 88),
        "{v}"
    );
    assert_eq!(v["token"]["rotated_from"], id.as_str());
    assert_eq!(v["old"]["id"], id.as_str());
    assert_eq!(v["old"]["state"], "enabled");
    assert_eq!(v["old"]["rotated_to"], new_id.as_str());
    let until = ts(&v["old"]["revoked_at"]);
    // Shown truncated to the second, as every admin timestamp.
    assert!(
        until >= before + SignedDuration::from_hours(24) - SignedDuration::from_secs(1)
            && until <= Timestamp::now() + SignedDuration::from_hours(24),
        "{v}"
    );

    // Both values work during the overlap; `show` says when the old stops.
    assert_eq!(auth(&gate, &old_secret).await.0, StatusCode::OK);
    assert_eq!(auth(&gate, &new_secret).await.0, StatusCode::OK);
    let old = show(&gate, &id).await;
    assert_eq!(old["state"], "enabled");
    assert_eq!(ts(&old["revoked_at"]), until);
    assert_eq!(old["rotated_to"], new_id.as_str());
    assert!(old.get("revoked_by").is_none(), "an overlap: {old}");

    // Rotated already: the successor is the one to rotate.
    let a = rotate(&gate, &id, json!({})).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", body(&a));
    assert_eq!(a.json()["error"], "token_revoked");
    assert!(a.json()["message"].as_str().unwrap().contains(&new_id));

    // Revoking the old token ends the overlap now.
    let a = gate.admin().delete(&format!("/admin/v1/tokens/{id}")).await;
    assert_eq!(a.json()["token"]["state"], "revoked");
    assert_eq!(a.json()["token"]["revoked_by"], "admin");
    assert_eq!(
        auth(&gate, &old_secret).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
    assert_eq!(auth(&gate, &new_secret).await.0, StatusCode::OK);

    // Without a body: the old expiry, the old value refused at once.
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{new_id}/rotate"))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", body(&a));
    assert_eq!(ts(&a.json()["token"]["expires_at"]), expires);
    assert_eq!(a.json()["old"]["state"], "revoked");
    assert_eq!(a.json()["old"]["revoked_by"], "admin");
    assert!(
        a.json()["token"].get("revoked_by").is_none(),
        "{}",
        body(&a)
    );
    assert_eq!(
        auth(&gate, &new_secret).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );

    // A disabled token does not rotate.
    let (id, _) = create_token(
        &gate,
        workspace_token("Off", "ws_1", "workspace_member", "1w"),
    )
    .await;
    gate.admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    let a = rotate(&gate, &id, json!({})).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", body(&a));
    assert_eq!(a.json()["error"], "token_disabled");
}

/// Gate b holds the old value in its cache (as valid, during the overlap);
/// when the overlap ends it refuses it at once, from the instant its cached
/// record carries, without reading the store (its cache misses do not
/// move) and with no message from gate a (nothing is written then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overlap_ends_on_another_gate_that_holds_the_old_value_in_its_cache() {
    let prefix = common::unique_prefix("overlap_fleet");
    let url = common::redis_url();
    let settings = [
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
        ("admin.key", KEY),
        ("cache.ttl", "5m"),
    ];
    let a = InProcessGate::start(&settings).await;
    let b = InProcessGate::start(&settings).await;
    let (id, old_secret) = create_token(
        &a,
        workspace_token("Fleet", "ws_1", "workspace_viewer", "1w"),
    )
    .await;
    let r = rotate(&a, &id, json!({"overlap": "3s"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", body(&r));
    // The wire shows the end truncated to its second: the real end is
    // within a second after it.
    let until = ts(&r.json()["old"]["revoked_at"]) + SignedDuration::from_secs(1);
    let new_secret = r.json()["secret"].as_str().unwrap().to_owned();

    // Gate b caches the old record during the overlap (a second request
    // after any in-flight invalidation of the rotate has landed).
    assert_eq!(auth(&b, &old_secret).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(auth(&b, &old_secret).await.0, StatusCode::OK, "b cached it");
    assert!(
        Timestamp::now() < until,
        "the overlap ended too soon to test"
    );
    let misses = cache_misses(&b).await;

    let wait = until.duration_since(Timestamp::now());
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    assert!(Timestamp::now() >= until);
    assert_eq!(
        auth(&b, &old_secret).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
    assert_eq!(cache_misses(&b).await, misses, "b read the store");
    assert_eq!(
        auth(&a, &old_secret).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
    assert_eq!(auth(&b, &new_secret).await.0, StatusCode::OK);
    assert_eq!(show(&a, &id).await["state"], "revoked");
}

/// `hawzu_gate_cache_misses_total` of `gate`.
async fn cache_misses(gate: &InProcessGate) -> u64 {
    let text = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
    text.lines()
        .find(|l| l.starts_with("hawzu_gate_cache_misses_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map(|n| n as u64)
        .expect("the cache miss counter")
}

/// A record written straight into the gate's Redis, expired `ago`.
async fn expired_token(gate: &InProcessGate, ago: SignedDuration) -> (String, String) {
    let s = &gate.loaded.settings.store;
    let store = RedisStore::new(RedisOptions {
        url: s.redis.url.clone(),
        key_prefix: s.redis.key_prefix.clone(),
        timeout: Duration::from_secs(1),
        retention: s.retention.0,
    })
    .unwrap();
    let secret = TokenSecret::generate().unwrap();
    let now = Timestamp::now();
    let record = TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: "Nightly".into(),
        description: Some("the nightly export".into()),
        workspace_id: "ws_1".into(),
        scope: Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        created_by: "tests".into(),
        created_at: now - SignedDuration::from_hours(24 * 60),
        expires_at: Some(now - ago),
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    };
    store.create(&secret.hash(), &record).await.unwrap();
    (record.id.to_string(), secret.expose().to_owned())
}

#[tokio::test]
async fn a_token_that_expired_lately_rotates_with_a_new_expiry() {
    let gate = InProcessGate::redis("rotate_expired").await;
    let (id, secret) = expired_token(&gate, SignedDuration::from_hours(2)).await;
    assert_eq!(
        auth(&gate, &secret).await,
        (StatusCode::UNAUTHORIZED, Some("token_expired".into()))
    );
    // Its old expiry is past: the successor needs a new one.
    let a = rotate(&gate, &id, json!({})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", body(&a));
    assert!(
        a.json()["fields"]["expires"]
            .as_str()
            .unwrap()
            .starts_with("is required: the token expired at"),
        "{}",
        body(&a)
    );
    let a = rotate(&gate, &id, json!({"expires": "30d"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", body(&a));
    let v = a.json();
    assert_eq!(v["token"]["name"], "Nightly");
    assert_eq!(v["token"]["description"], "the nightly export");
    assert_eq!(v["token"]["state"], "enabled");
    let new_secret = v["secret"].as_str().unwrap();
    assert_eq!(auth(&gate, new_secret).await.0, StatusCode::OK);

    // Longer ago than admin.rotate_after_expiry (7d): a new grant is needed.
    let (id, _) = expired_token(&gate, SignedDuration::from_hours(24 * 8)).await;
    let a = rotate(&gate, &id, json!({"expires": "30d"})).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", body(&a));
    assert_eq!(a.json()["error"], "token_expired");
    assert!(
        a.json()["message"]
            .as_str()
            .unwrap()
            .contains("admin.rotate_after_expiry (7d)"),
        "{}",
        body(&a)
    );
}

#[tokio::test]
async fn update_changes_name_description_and_shortens_the_expiry_only() {
    let gate = InProcessGate::embedded().await;
    let created = gate
        .admin()
        .post(
            "/admin/v1/tokens",
            json!({
                "name": "CI",
                "description": "builds main",
                "workspace_id": "ws_1",
                "scope": { "type": "workspace", "role": "workspace_member" },
                "expires": "3mo",
            }),
        )
        .await
        .json();
    let id = created["token"]["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(created["token"]["description"], "builds main");
    let expires = ts(&created["token"]["expires_at"]);

    let a = patch(
        &gate,
        &id,
        json!({"name": "CI (old)", "description": "", "expires": "7d"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", body(&a));
    let t = &a.json()["token"];
    assert_eq!(t["name"], "CI (old)");
    assert!(t.get("description").is_none(), "{t}");
    let shorter = ts(&t["expires_at"]);
    assert!(
        shorter < expires - SignedDuration::from_hours(24 * 60),
        "{t}"
    );
    assert_eq!(show(&gate, &id).await["name"], "CI (old)");
    assert_eq!(auth(&gate, &secret).await.0, StatusCode::OK);

    // Never later, never another scope or workspace: 422 naming the field.
    for later in ["1y", "never"] {
        let a = patch(&gate, &id, json!({ "expires": later })).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", body(&a));
        assert!(
            a.json()["fields"]["expires"]
                .as_str()
                .unwrap()
                .starts_with("can only be shortened"),
            "{}",
            body(&a)
        );
    }
    let a = patch(
        &gate,
        &id,
        json!({"scope": {"type": "workspace", "role": "workspace_manager"}, "workspace_id": "ws_2"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", body(&a));
    let f = &a.json()["fields"];
    assert!(f["scope"].as_str().unwrap().contains("never widens"), "{f}");
    assert!(
        f["workspace_id"]
            .as_str()
            .unwrap()
            .contains("cannot be changed"),
        "{f}"
    );
    let t = show(&gate, &id).await;
    assert_eq!(t["scope"]["role"], "workspace_member");
    assert_eq!(ts(&t["expires_at"]), shorter);

    // The caller check of every action: a token manager of another
    // workspace does not find it; one without tokens:manage may not.
    let (_, other_ws) = create_token(
        &gate,
        workspace_token("Mgr", "ws_2", "workspace_manager", "1w"),
    )
    .await;
    let a = gate
        .admin()
        .request(Method::PATCH, &format!("/admin/v1/tokens/{id}"))
        .token(&other_ws)
        .json(json!({"name": "mine now"}))
        .go()
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", body(&a));
    let (_, viewer) = create_token(
        &gate,
        workspace_token("V", "ws_1", "workspace_viewer", "1w"),
    )
    .await;
    let a = gate
        .admin()
        .request(Method::PATCH, &format!("/admin/v1/tokens/{id}"))
        .token(&viewer)
        .json(json!({"name": "mine now"}))
        .go()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", body(&a));
    assert_eq!(show(&gate, &id).await["name"], "CI (old)");

    // A revoked token is not changed.
    gate.admin().delete(&format!("/admin/v1/tokens/{id}")).await;
    let a = patch(&gate, &id, json!({"name": "again"})).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", body(&a));
    assert_eq!(a.json()["error"], "token_revoked");
}

/// Revoking the value a rotation made ends the overlap of the value it
/// replaced: whoever revokes the token the list shows as current (a CI host
/// holding both values was compromised) must not leave the other working
/// for days. The old value is refused as revoked, at once, and says by whom.
#[tokio::test]
async fn revoking_a_successor_ends_its_predecessors_overlap() {
    let gate = InProcessGate::embedded().await;
    let (id, old_secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_member", "1w"),
    )
    .await;
    let a = rotate(&gate, &id, json!({"overlap": "7d"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", body(&a));
    let v = a.json();
    let new_id = v["token"]["id"].as_str().unwrap().to_owned();
    let new_secret = v["secret"].as_str().unwrap().to_owned();
    assert_eq!(auth(&gate, &old_secret).await.0, StatusCode::OK);

    let a = gate
        .admin()
        .request(Method::DELETE, &format!("/admin/v1/tokens/{new_id}"))
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", body(&a));
    assert_eq!(
        auth(&gate, &new_secret).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
    assert_eq!(
        auth(&gate, &old_secret).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
    let old = show(&gate, &id).await;
    assert_eq!(old["state"], "revoked", "{old}");
    assert_eq!(old["revoked_by"], "admin", "{old}");
}

/// The same along a chain: a token rotated again while the value before it
/// still works leaves two earlier values working. Revoking the newest, or
/// rotating the middle one without an overlap (a revoke of it), ends every
/// overlap behind it — not only the one of the value it replaced.
#[tokio::test]
async fn revoking_the_newest_value_ends_every_overlap_of_its_chain() {
    let gate = InProcessGate::embedded().await;
    let (a_id, a_secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_member", "1w"),
    )
    .await;
    let (b_id, b_secret) = rotated(&gate, &a_id, json!({"overlap": "7d"})).await;
    let (c_id, c_secret) = rotated(&gate, &b_id, json!({"overlap": "7d"})).await;
    for s in [&a_secret, &b_secret, &c_secret] {
        assert_eq!(auth(&gate, s).await.0, StatusCode::OK);
    }

    let a = gate
        .admin()
        .request(Method::DELETE, &format!("/admin/v1/tokens/{c_id}"))
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", body(&a));
    for s in [&c_secret, &b_secret, &a_secret] {
        assert_eq!(
            auth(&gate, s).await,
            (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
        );
    }
    let first = show(&gate, &a_id).await;
    assert_eq!(first["state"], "revoked", "{first}");
    assert_eq!(first["revoked_by"], "admin", "{first}");
    let events = gate
        .admin()
        .get(&format!("/admin/v1/audit?token={a_id}"))
        .await
        .json();
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "rotate", "create"], "{events}");
}

#[tokio::test]
async fn rotating_a_value_without_an_overlap_ends_the_overlap_of_the_one_before_it() {
    let gate = InProcessGate::embedded().await;
    let (a_id, a_secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_member", "1w"),
    )
    .await;
    let (b_id, b_secret) = rotated(&gate, &a_id, json!({"overlap": "7d"})).await;
    // B is revoked at once, as a `DELETE` of it would: A goes with it —
    // just after the answer (the rotate does not wait for the walk).
    let a = rotate(&gate, &b_id, json!({})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", body(&a));
    let c_secret = a.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(auth(&gate, &c_secret).await.0, StatusCode::OK);
    assert_eq!(
        auth(&gate, &b_secret).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
    let refused = common::eventually("A refused", Duration::from_secs(5), || async {
        let got = auth(&gate, &a_secret).await;
        (got.0 != StatusCode::OK).then_some(got)
    })
    .await;
    assert_eq!(
        refused,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
}
