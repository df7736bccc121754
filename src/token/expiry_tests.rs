//! Tests of `token::expiry`: lengths, dates, `never`, and the refused `m`.

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[test]
fn lengths_are_calendar_arithmetic_in_utc() {
    let now = ts("2027-01-31T10:00:00Z");
    let at = |s: &str| s.parse::<ExpirySpec>().unwrap().resolve(now).unwrap();
    assert_eq!(at("1w"), Some(ts("2027-02-07T10:00:00Z")));
    assert_eq!(at("2w"), Some(ts("2027-02-14T10:00:00Z")));
    assert_eq!(at("1week"), Some(ts("2027-02-07T10:00:00Z")));
    assert_eq!(at("7d"), Some(ts("2027-02-07T10:00:00Z")));
    assert_eq!(at("30d"), Some(ts("2027-03-02T10:00:00Z")));
    assert_eq!(at("1day"), Some(ts("2027-02-01T10:00:00Z")));
    assert_eq!(at("12h"), Some(ts("2027-01-31T22:00:00Z")));
    assert_eq!(at("1mo"), Some(ts("2027-02-28T10:00:00Z")));
    assert_eq!(at("1month"), Some(ts("2027-02-28T10:00:00Z")));
    assert_eq!(at("3mo"), Some(ts("2027-04-30T10:00:00Z")));
    assert_eq!(at("3months"), Some(ts("2027-04-30T10:00:00Z")));
    assert_eq!(at("6mo"), Some(ts("2027-07-31T10:00:00Z")));
    assert_eq!(at("1y"), Some(ts("2028-01-31T10:00:00Z")));
    assert_eq!(at("1year"), Some(ts("2028-01-31T10:00:00Z")));
    assert_eq!(at("2years"), Some(ts("2029-01-31T10:00:00Z")));
    assert_eq!(at("never"), None);
    let leap = ts("2028-02-29T00:00:00Z");
    assert_eq!(
        "1y".parse::<ExpirySpec>().unwrap().resolve(leap).unwrap(),
        Some(ts("2029-02-28T00:00:00Z"))
    );
}

#[test]
fn lengths_print_in_their_short_form() {
    for (given, shown) in [("3months", "3mo"), ("1week", "1w"), ("30d", "30d")] {
        assert_eq!(given.parse::<ExpirySpec>().unwrap().to_string(), shown);
    }
}

#[test]
fn custom_dates_are_midnight_utc_and_instants_carry_an_offset() {
    let now = ts("2027-01-01T00:00:00Z");
    let spec: ExpirySpec = "2027-03-01".parse().unwrap();
    assert!(ExpirySpec::is_date_only("2027-03-01"));
    assert!(!ExpirySpec::is_date_only("2027-03-01T00:00:00Z"));
    assert_eq!(spec.resolve(now).unwrap(), Some(ts("2027-03-01T00:00:00Z")));
    let spec: ExpirySpec = "2027-03-01T12:00:00+02:00".parse().unwrap();
    assert_eq!(spec.resolve(now).unwrap(), Some(ts("2027-03-01T10:00:00Z")));
    let past: ExpirySpec = "2026-12-31T23:59:59Z".parse().unwrap();
    assert!(matches!(past.resolve(now), Err(ExpiryError::InPast(_))));
    assert!(matches!(
        ExpirySpec::At(now).resolve(now),
        Err(ExpiryError::InPast(_))
    ));
}

#[test]
fn m_alone_names_both_readings() {
    for (bad, count) in [("1m", "1"), ("6m", "6"), ("30m", "30")] {
        let err = bad.parse::<ExpirySpec>().unwrap_err();
        assert_eq!(err, ExpiryError::Ambiguous(count.into()));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{count}m: a minute or a month? write {count}mo")),
            "{msg}"
        );
    }
}

#[test]
fn the_admin_api_keeps_its_documented_month_spellings() {
    let now = ts("2027-01-31T10:00:00Z");
    let at = |s: &str| ExpirySpec::parse_api(s).unwrap().resolve(now).unwrap();
    assert_eq!(at("1m"), Some(ts("2027-02-28T10:00:00Z")));
    assert_eq!(at("6m"), Some(ts("2027-07-31T10:00:00Z")));
    assert_eq!(at("3mo"), Some(ts("2027-04-30T10:00:00Z")));
    assert!(matches!(
        ExpirySpec::parse_api("3m"),
        Err(ExpiryError::Ambiguous(_))
    ));
}

#[test]
fn unknown_or_out_of_range_spellings_are_refused() {
    for bad in [
        "",
        "d",
        "0d",
        "1",
        "1 d",
        "-1d",
        "1.5y",
        "1min",
        "1M",
        "forever",
        "2027-03-01T12:00:00",
        "2027-13-01",
        "03/01/2027",
    ] {
        let err = bad.parse::<ExpirySpec>().unwrap_err();
        assert!(
            err.to_string()
                .contains("7d, 2w, 3mo (or 3months), 1y, never"),
            "{bad}: {err}"
        );
    }
    for big in ["1001y", "99999999999d"] {
        assert_eq!(big.parse::<ExpirySpec>(), Err(ExpiryError::Range), "{big}");
    }
    // A date past the last instant the gate can hold says so, not "1000 of
    // a unit".
    let err = "9999-12-31".parse::<ExpirySpec>().unwrap_err();
    assert_eq!(err, ExpiryError::DateRange("9999-12-31".into()));
    assert!(err.to_string().contains("9999-12-31"), "{err}");
}
