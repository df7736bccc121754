//! Unit tests of the per-thread rendered identity headers: the same as a
//! fresh rendering, never another token's or another grant's, never a
//! record's that changed, and bounded.

use http::HeaderValue;
use jiff::Timestamp;

use super::*;
use crate::token::{ProjectGrant, Scope, TokenRecord};

fn record(scope: Scope, expires: bool) -> TokenRecord {
    let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    TokenRecord {
        expires_at: expires.then(|| "2027-06-01T00:00:00Z".parse().unwrap()),
        ..TokenRecord::sample(scope, now)
    }
}

fn workspace(role: &str, expires: bool) -> TokenRecord {
    record(Scope::Workspace { role: role.into() }, expires)
}

fn principal<'a>(
    record: &Arc<CachedRecord>,
    grant: Grant,
    project: Option<&'a str>,
) -> Principal<'a> {
    Principal {
        record: record.clone(),
        grant,
        permission: Permission::parse("testcases:read").unwrap(),
        project,
    }
}

/// What rendering afresh gives.
fn fresh(headers: &IdentityHeaders, p: &Principal<'_>, kind: Rendered) -> HeaderMap {
    render(headers, p, kind)
}

fn get<'m>(m: &'m HeaderMap, name: &str) -> Option<&'m str> {
    m.get(name).map(|v| v.to_str().unwrap())
}

#[test]
fn a_rendered_map_is_what_rendering_afresh_gives_and_is_made_once() {
    let headers = IdentityHeaders::default();
    let ws = Arc::new(CachedRecord::new(&workspace("tester", true)));
    let p = principal(&ws, Grant::Workspace, None);
    let first = rendered(&headers, &p, Rendered::Upstream);
    assert_eq!(*first, fresh(&headers, &p, Rendered::Upstream));
    assert_eq!(get(&first, "x-hawzu-role"), Some("tester"));
    assert_eq!(get(&first, "x-hawzu-token-id"), Some(ws.id()));
    assert!(first.get("hawzu-token-expires").is_none());
    // The second time: the same map, not a second rendering.
    let again = rendered(&headers, &p, Rendered::Upstream);
    assert!(Arc::ptr_eq(&first, &again));

    // A forward-auth answer adds the client's expiry header.
    let answer = rendered(&headers, &p, Rendered::Answer);
    assert_eq!(*answer, fresh(&headers, &p, Rendered::Answer));
    assert_eq!(
        answer.get("hawzu-token-expires"),
        ws.expires_header(),
        "{answer:?}"
    );

    // A token that never expires has none.
    let never = Arc::new(CachedRecord::new(&workspace("tester", false)));
    let answer = rendered(
        &headers,
        &principal(&never, Grant::Workspace, None),
        Rendered::Answer,
    );
    assert!(answer.get("hawzu-token-expires").is_none());
    assert!(answer.get("x-hawzu-token-expires").is_none());
}

#[test]
fn a_changed_record_is_rendered_anew_never_served_the_old_headers() {
    let headers = IdentityHeaders::default();
    let before = workspace("admin", true);
    let old = Arc::new(CachedRecord::new(&before));
    let shown = rendered(
        &headers,
        &principal(&old, Grant::Workspace, None),
        Rendered::Upstream,
    );
    assert_eq!(get(&shown, "x-hawzu-role"), Some("admin"));
    // The same token after its role changed in the store: a new cached
    // record. The old one is dropped by the cache, so the allocator may
    // hand its address to the new one; the entry still holds it, so it
    // cannot.
    let mut after = before.clone();
    after.scope = Scope::Workspace {
        role: "viewer".into(),
    };
    drop(old);
    let new = Arc::new(CachedRecord::new(&after));
    let shown = rendered(
        &headers,
        &principal(&new, Grant::Workspace, None),
        Rendered::Upstream,
    );
    assert_eq!(get(&shown, "x-hawzu-role"), Some("viewer"));
}

#[test]
fn grant_project_permission_and_names_each_get_their_own_headers() {
    let headers = IdentityHeaders::default();
    let projects = vec![
        ProjectGrant {
            project_id: "pr_1".into(),
            role: "project_admin".into(),
        },
        ProjectGrant {
            project_id: "pr_2".into(),
            role: "project_viewer".into(),
        },
    ];
    let rec = Arc::new(CachedRecord::new(&record(
        Scope::Project { projects },
        true,
    )));
    let one = rendered(
        &headers,
        &principal(&rec, Grant::Project(0), Some("pr_1")),
        Rendered::Upstream,
    );
    let two = rendered(
        &headers,
        &principal(&rec, Grant::Project(1), Some("pr_2")),
        Rendered::Upstream,
    );
    assert_eq!(get(&one, "x-hawzu-project-id"), Some("pr_1"));
    assert_eq!(get(&one, "x-hawzu-role"), Some("project_admin"));
    assert_eq!(get(&two, "x-hawzu-project-id"), Some("pr_2"));
    assert_eq!(get(&two, "x-hawzu-role"), Some("project_viewer"));

    let mut write = principal(&rec, Grant::Project(0), Some("pr_1"));
    write.permission = Permission::parse("testcases:write").unwrap();
    let w = rendered(&headers, &write, Rendered::Upstream);
    assert_eq!(get(&w, "x-hawzu-permission"), Some("testcases:write"));
    // Asked again after the write: still the read's own headers.
    let read = rendered(
        &headers,
        &principal(&rec, Grant::Project(0), Some("pr_1")),
        Rendered::Upstream,
    );
    assert_eq!(get(&read, "x-hawzu-permission"), Some("testcases:read"));
    assert_eq!(
        get(
            &rendered(&headers, &write, Rendered::Upstream),
            "x-hawzu-permission"
        ),
        Some("testcases:write")
    );

    // Another prefix: other names, never the first prefix's map.
    let other = IdentityHeaders::new("X-Api-").unwrap();
    let o = rendered(
        &other,
        &principal(&rec, Grant::Project(0), Some("pr_1")),
        Rendered::Upstream,
    );
    assert_eq!(get(&o, "x-api-project-id"), Some("pr_1"));
    assert!(o.get("x-hawzu-project-id").is_none());
    assert_eq!(
        *o,
        fresh(
            &other,
            &principal(&rec, Grant::Project(0), Some("pr_1")),
            Rendered::Upstream
        )
    );
}

#[test]
fn a_thread_holds_at_most_slots_entries() {
    let headers = IdentityHeaders::default();
    let records: Vec<_> = (0..SLOTS * 3)
        .map(|_| Arc::new(CachedRecord::new(&workspace("tester", true))))
        .collect();
    for r in &records {
        let m = rendered(
            &headers,
            &principal(r, Grant::Workspace, None),
            Rendered::Upstream,
        );
        assert_eq!(
            m.get("x-hawzu-token-id"),
            Some(&HeaderValue::from_str(r.id()).unwrap())
        );
    }
    // An entry holds its record; a replaced entry lets its record go.
    let kept = records.iter().filter(|r| Arc::strong_count(r) > 1).count();
    assert!(kept > 0 && kept <= SLOTS, "{kept}");
}

#[test]
fn an_entry_is_for_its_own_record_grant_permission_project_names_and_kind_alone() {
    // The slot a key hashes to is no part of the check: two keys can share
    // a slot, so the entry itself must tell them apart.
    let headers = IdentityHeaders::default();
    let rec = Arc::new(CachedRecord::new(&workspace("admin", true)));
    let p = principal(&rec, Grant::Workspace, Some("pr_1"));
    let entry = Entry {
        record: rec.clone(),
        grant: p.grant,
        permission: p.permission,
        project: Some("pr_1".into()),
        generation: headers.generation(),
        kind: Rendered::Upstream,
        map: Arc::new(render(&headers, &p, Rendered::Upstream)),
    };
    assert!(entry.is_for(&headers, &p, Rendered::Upstream));
    // The same token's content in another cached record.
    let same = Arc::new(CachedRecord::new(&workspace("admin", true)));
    assert!(!entry.is_for(
        &headers,
        &principal(&same, Grant::Workspace, Some("pr_1")),
        Rendered::Upstream
    ));
    assert!(!entry.is_for(
        &headers,
        &principal(&rec, Grant::Project(0), Some("pr_1")),
        Rendered::Upstream
    ));
    assert!(!entry.is_for(
        &headers,
        &principal(&rec, Grant::Workspace, Some("pr_2")),
        Rendered::Upstream
    ));
    assert!(!entry.is_for(
        &headers,
        &principal(&rec, Grant::Workspace, None),
        Rendered::Upstream
    ));
    let mut write = principal(&rec, Grant::Workspace, Some("pr_1"));
    write.permission = Permission::parse("testcases:write").unwrap();
    assert!(!entry.is_for(&headers, &write, Rendered::Upstream));
    assert!(!entry.is_for(&headers, &p, Rendered::Answer));
    assert!(!entry.is_for(&IdentityHeaders::default(), &p, Rendered::Upstream));
}
