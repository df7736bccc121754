//! Hot pieces of the token path: parse (prefix, length, alphabet, checksum),
//! hash (BLAKE3 derive-key), and bearer extraction from a header value.
//! Numbers and the commit they were measured on: docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use criterion::{Criterion, criterion_group, criterion_main};
use hawzu_gate::decide::{Credentials, extract_token};
use hawzu_gate::policy::prefixes::{Prefix, TokenPrefixes};
use hawzu_gate::token::TokenSecret;
use std::hint::black_box;

fn token_path(c: &mut Criterion) {
    let secret = TokenSecret::generate().expect("OS random source");
    let value = secret.expose().to_owned();
    let header = format!("Bearer {value}");

    c.bench_function("token/parse", |b| {
        b.iter(|| TokenSecret::parse(black_box(&value)).is_ok())
    });
    c.bench_function("token/parse+hash", |b| {
        b.iter(|| TokenSecret::parse(black_box(&value)).map(|t| t.hash()))
    });
    c.bench_function("token/extract+parse+hash", |b| {
        b.iter(|| {
            extract_token(
                Credentials::One(black_box(header.as_bytes())),
                &TokenPrefixes::default(),
            )
            .map(|t| t.hash())
        })
    });
    // An operator who changed prefix twice: the token under the oldest.
    let p = |s| Prefix::parse(s).expect("a prefix");
    let three = TokenPrefixes::new(p("acme_"), [p("acmeold_"), p("hwz_")]);
    c.bench_function("token/parse_third_prefix", |b| {
        b.iter(|| TokenSecret::parse_with(black_box(&value), &three).is_ok())
    });
    let mut bad = value.clone().into_bytes();
    bad[12] = if bad[12] == b'a' { b'b' } else { b'a' };
    let bad = String::from_utf8(bad).expect("ascii");
    c.bench_function("token/reject_checksum", |b| {
        b.iter(|| TokenSecret::parse(black_box(&bad)).is_err())
    });
}

criterion_group!(benches, token_path);
criterion_main!(benches);
