//! The token parser and the bearer extraction in front of it: any bytes in,
//! an answer out, never a panic. An accepted value is exactly 40 characters
//! of the documented shape and round-trips through `expose`.
#![no_main]

use hawzu_gate::decide::{Credentials, extract_token};
use hawzu_gate::refusal::DenyCode;
use hawzu_gate::token::value::{TOKEN_LEN, TOKEN_PREFIX};
use hawzu_gate::token::{TokenHash, TokenId, TokenSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As an `Authorization` header value (bytes, as a door hands them over).
    match extract_token(Credentials::One(data)) {
        Ok(secret) => {
            assert!(data.len() >= TOKEN_LEN + "bearer ".len());
            assert!(data[..6].eq_ignore_ascii_case(b"bearer"));
            assert!(data.ends_with(secret.expose().as_bytes()));
        }
        Err(code) => assert!(matches!(
            code,
            DenyCode::MissingToken | DenyCode::MalformedToken
        )),
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(secret) = TokenSecret::parse(text) {
        assert_eq!(secret.expose(), text);
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(text.starts_with(TOKEN_PREFIX));
        assert!(
            text[TOKEN_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        assert_eq!(
            secret.hash(),
            TokenSecret::parse(text).map(|s| s.hash()).unwrap()
        );
        // Never printed.
        assert!(!format!("{secret:?}{secret}").contains(&text[TOKEN_PREFIX.len()..]));
    }
    if let Ok(id) = TokenId::parse(text) {
        assert_eq!(id.as_str(), text);
    }
    if let Some(hash) = TokenHash::from_hex(text) {
        assert!(hash.to_hex().eq_ignore_ascii_case(text));
    }
});
