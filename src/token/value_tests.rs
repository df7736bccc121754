use super::*;
use proptest::prelude::*;

fn fresh() -> TokenSecret {
    TokenSecret::generate().expect("OS random source")
}

#[test]
fn generated_token_has_the_documented_shape() {
    let t = fresh();
    let v = t.expose();
    assert_eq!(v.len(), 40);
    assert!(v.starts_with("hwz_"));
    assert!(v[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
}

#[test]
fn secret_redacts_itself_in_debug_and_display() {
    let t = fresh();
    let v = t.expose().to_owned();
    let shown = format!("{t} {t:?} {:?}", Some(&t));
    assert!(!shown.contains(&v[4..]), "secret leaked: {shown}");
    assert!(shown.contains("redacted"));
}

#[test]
fn hash_is_blake3_derive_key_with_the_documented_context() {
    let t = fresh();
    let expected = blake3::derive_key("hawzu-gate access token v1", t.expose().as_bytes());
    assert_eq!(t.hash().0, expected);
}

#[test]
fn parse_names_each_kind_of_fault() {
    let v = fresh().expose().to_owned();
    assert_eq!(
        TokenSecret::parse(&v.replacen("hwz_", "hwx_", 1)).unwrap_err(),
        ParseError::Prefix
    );
    assert_eq!(TokenSecret::parse("").unwrap_err(), ParseError::Prefix);
    assert_eq!(
        TokenSecret::parse(&v[..39]).unwrap_err(),
        ParseError::Length
    );
    assert_eq!(
        TokenSecret::parse(&format!("{v}A")).unwrap_err(),
        ParseError::Length
    );
    let mut bad = v.clone().into_bytes();
    bad[10] = b'-';
    assert_eq!(
        TokenSecret::parse(std::str::from_utf8(&bad).unwrap()).unwrap_err(),
        ParseError::Alphabet
    );
    // A multi-byte character keeps the byte length at 40 but is not base62.
    let multibyte = format!("{}é{}", &v[..20], &v[22..]);
    assert_eq!(multibyte.len(), 40);
    assert_eq!(
        TokenSecret::parse(&multibyte).unwrap_err(),
        ParseError::Alphabet
    );
}

#[test]
fn checksum_is_six_base62_digits_of_crc32() {
    let v = fresh().expose().to_owned();
    let mut sum = crc32fast::hash(&v.as_bytes()[..34]) as u64;
    let mut digits = Vec::new();
    for _ in 0..6 {
        digits.push(BASE62[(sum % 62) as usize]);
        sum /= 62;
    }
    digits.reverse();
    assert_eq!(&v.as_bytes()[34..], &digits[..]);
}

#[test]
fn hash_hex_round_trips() {
    let h = fresh().hash();
    assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
    assert_eq!(TokenHash::from_hex(&h.to_hex().to_uppercase()), Some(h));
    assert_eq!(TokenHash::from_hex("zz"), None);
    assert_eq!(TokenHash::from_hex(&"g".repeat(64)), None);
}

#[test]
fn token_ids_parse_and_refuse() {
    let id = TokenId::generate().unwrap();
    assert_eq!(TokenId::parse(id.as_str()), Ok(id.clone()));
    assert!(TokenId::parse("tok_short").is_err());
    assert!(TokenId::parse("tak_0123456789abcdef").is_err());
    assert!(TokenId::parse("tok_0123456789abcde!").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_generated_token_parses_and_hashes_stably(_seed in any::<u8>()) {
        let t = fresh();
        let parsed = TokenSecret::parse(t.expose()).unwrap();
        prop_assert_eq!(parsed.hash(), t.hash());
        prop_assert_eq!(parsed.hash(), TokenSecret::parse(t.expose()).unwrap().hash());
    }

    #[test]
    fn any_single_character_change_is_refused(pos in 4usize..40, replacement in 0usize..62) {
        let v = fresh().expose().to_owned();
        let mut bytes = v.clone().into_bytes();
        let new = BASE62[replacement];
        prop_assume!(bytes[pos] != new);
        bytes[pos] = new;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(TokenSecret::parse(&changed).unwrap_err(), ParseError::Checksum);
    }

    #[test]
    fn arbitrary_input_never_panics(s in ".{0,64}") {
        let _ = TokenSecret::parse(&s);
        let _ = TokenId::parse(&s);
    }
}
