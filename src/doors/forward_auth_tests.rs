//! Unit tests of the forward-auth door's one pass over the request's
//! headers: it must find what the hashed lookups it replaced found.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::headers::{
    HTTP2_SETTINGS, UPGRADE, X_FORWARDED_FOR, X_FORWARDED_METHOD, X_FORWARDED_URI,
    X_ORIGINAL_METHOD, X_ORIGINAL_URI, X_ORIGINAL_URL, asks_upgrade,
};

/// The names the pass looks for, and others beside them: a name one byte
/// off, a standard one, a longer one with the same start.
fn names() -> Vec<HeaderName> {
    vec![
        X_ORIGINAL_METHOD,
        X_ORIGINAL_URL,
        X_ORIGINAL_URI,
        X_FORWARDED_METHOD,
        X_FORWARDED_URI,
        X_FORWARDED_FOR,
        UPGRADE,
        HTTP2_SETTINGS,
        HeaderName::from_static("x-original-ur"),
        HeaderName::from_static("x-original-urls"),
        HeaderName::from_static("x-forwarded-host"),
        http::header::AUTHORIZATION,
    ]
}

/// What the old lookups said of one name's values.
fn looked_up<'h>(h: &'h HeaderMap, name: &HeaderName) -> (Option<&'h HeaderValue>, bool) {
    (h.get(name), h.get_all(name).iter().count() > 1)
}

fn seen(v: Values<'_>) -> (Option<&HeaderValue>, bool) {
    (v.first, v.several)
}

#[test]
fn one_pass_finds_what_the_hashed_lookups_found() {
    let names = names();
    let values = [
        HeaderValue::from_static("GET"),
        HeaderValue::from_static("/a?b=1"),
        HeaderValue::from_bytes(b"\xff").unwrap(),
    ];
    let mut maps = 0;
    // Every map of up to three headers from the names (repeats included),
    // each with a value chosen by its position.
    let n = names.len();
    for count in 0..=3u32 {
        for code in 0..n.pow(count) {
            let mut h = HeaderMap::new();
            let mut c = code;
            for i in 0..count as usize {
                let name = &names[c % n];
                c /= n;
                h.append(name.clone(), values[(i + code) % values.len()].clone());
            }
            let r = Read::of(&h, &IdentityHeaders::default(), true);
            assert_eq!(seen(r.original_method), looked_up(&h, &X_ORIGINAL_METHOD));
            assert_eq!(seen(r.original_url), looked_up(&h, &X_ORIGINAL_URL));
            assert_eq!(seen(r.original_uri), looked_up(&h, &X_ORIGINAL_URI));
            assert_eq!(seen(r.forwarded_method), looked_up(&h, &X_FORWARDED_METHOD));
            assert_eq!(seen(r.forwarded_uri), looked_up(&h, &X_FORWARDED_URI));
            assert_eq!(r.forwarded_for, h.contains_key(X_FORWARDED_FOR), "{h:?}");
            assert_eq!(r.upgrade, asks_upgrade(&h), "{h:?}");
            maps += 1;
        }
    }
    assert_eq!(maps, 1 + 12 + 144 + 1728);
}

#[test]
fn a_single_value_is_one_two_are_ambiguous() {
    let mut h = HeaderMap::new();
    h.append(X_ORIGINAL_URI, HeaderValue::from_static("/a"));
    assert_eq!(
        Read::of(&h, &IdentityHeaders::default(), true)
            .original_uri
            .one(),
        Ok(Some("/a"))
    );
    h.append(X_ORIGINAL_URI, HeaderValue::from_static("/a"));
    assert_eq!(
        Read::of(&h, &IdentityHeaders::default(), true)
            .original_uri
            .one(),
        Err(DenyCode::AmbiguousPath)
    );
    let mut h = HeaderMap::new();
    h.append(X_ORIGINAL_URI, HeaderValue::from_bytes(b"/\xff").unwrap());
    assert_eq!(
        Read::of(&h, &IdentityHeaders::default(), true)
            .original_uri
            .one(),
        Err(DenyCode::AmbiguousPath)
    );
    assert_eq!(
        Read::of(&HeaderMap::new(), &IdentityHeaders::default(), true)
            .original_uri
            .one(),
        Ok(None)
    );
}
