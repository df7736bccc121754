//! Context limits of a token: the client networks it may be used from
//! (`allow_from`) and the instant it starts to work (`not_before`), as a
//! create or an update asks for them. Pure validation; the doors check the
//! limits in `decide`.
//!
//! An empty `allow_from` means anywhere, and costs a stored record and a
//! cached one nothing. Networks are stored as written once checked: an
//! IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is the IPv4 network it
//! maps (`10.0.0.0/8`), and a network with bits set beyond its prefix
//! (`10.1.2.3/8`) is refused as ambiguous, naming the network meant.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;

use super::expiry::ExpirySpec;
use crate::policy::net::IpNet;

/// Field path → what would be accepted (`record::FieldErrors`, spelled
/// out here: `record` imports this file).
type FieldErrors = BTreeMap<String, String>;

/// Most networks one token may list.
pub const MAX_ALLOW_FROM: usize = 64;

/// Accepted spellings of `not_before`, for messages and help.
pub const NOT_BEFORE_HELP: &str = "an RFC 3339 instant such as 2027-03-01T09:00:00Z, a date such as \
     2027-03-01 (00:00 UTC that day), or a length from now such as 12h or 2d";

/// Checked context limits, ready for a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextLimits {
    pub allow_from: Vec<IpNet>,
    pub not_before: Option<Timestamp>,
}

/// The networks of `list`, each checked; every faulty entry is recorded
/// under `allow_from[i]`. `None` when one was refused.
pub fn parse_allow_from(list: &[String], errors: &mut FieldErrors) -> Option<Vec<IpNet>> {
    if list.len() > MAX_ALLOW_FROM {
        errors.insert(
            "allow_from".into(),
            format!(
                "at most {MAX_ALLOW_FROM} networks per token (got {})",
                list.len()
            ),
        );
        return None;
    }
    let mut nets = Vec::with_capacity(list.len());
    let mut seen = HashSet::new();
    let mut ok = true;
    for (i, raw) in list.iter().enumerate() {
        let field = format!("allow_from[{i}]");
        match raw.trim().parse::<IpNet>() {
            Err(why) => {
                errors.insert(field, why);
                ok = false;
            }
            Ok(net) if net.has_host_bits() => {
                errors.insert(
                    field,
                    format!(
                        "`{}` has address bits set beyond its prefix; write the network's first address (like {})",
                        raw.trim(),
                        net.network()
                    ),
                );
                ok = false;
            }
            Ok(net) if !seen.insert(net) => {
                errors.insert(
                    field,
                    format!("`{net}` is listed twice; give each network once"),
                );
                ok = false;
            }
            Ok(net) => nets.push(net),
        }
    }
    ok.then_some(nets)
}

/// The instant of a `not_before` at `now`: an instant or a date as written
/// (a past one is allowed: it limits nothing), or a length from now.
pub fn parse_not_before(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    let refused = || format!("`{s}` is not a start time; use {NOT_BEFORE_HELP}");
    match s.trim().parse::<ExpirySpec>() {
        Ok(ExpirySpec::At(at)) => Ok(at),
        // From now, to the whole second: shown as stored.
        Ok(spec @ ExpirySpec::In(_)) => spec
            .resolve(now)
            .ok()
            .flatten()
            .and_then(|t| Timestamp::from_second(t.as_second()).ok())
            .ok_or_else(|| "is out of range".to_owned()),
        Ok(ExpirySpec::Never) => Err(refused()),
        Err(super::ExpiryError::Ambiguous(n)) => Err(format!(
            "{n}m: a minute or a month? write {n}mo for a month, or an RFC 3339 instant"
        )),
        Err(_) => Err(refused()),
    }
}

/// The limits a create asks for, checked against its expiry: a token that
/// would start only once it has expired would never work.
pub fn validate(
    allow_from: Option<&[String]>,
    not_before: Option<&str>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
    errors: &mut FieldErrors,
) -> ContextLimits {
    let allow_from = allow_from
        .and_then(|list| parse_allow_from(list, errors))
        .unwrap_or_default();
    let not_before = not_before.and_then(|s| match parse_not_before(s, now) {
        Ok(at) => {
            check_window(Some(at), expires_at, errors);
            Some(at)
        }
        Err(why) => {
            errors.insert("not_before".into(), why);
            None
        }
    });
    ContextLimits {
        allow_from,
        not_before,
    }
}

/// Records an error when `not_before` is not before `expires_at`.
pub fn check_window(
    not_before: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    errors: &mut FieldErrors,
) {
    if let (Some(nb), Some(exp)) = (not_before, expires_at)
        && nb >= exp
    {
        errors.insert(
            "not_before".into(),
            format!(
                "{nb:.0} is not before the token's expiry ({exp:.0}): the token would never work"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Result<Vec<String>, FieldErrors> {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        let mut errors = FieldErrors::new();
        match parse_allow_from(&list, &mut errors) {
            Some(n) => Ok(n.iter().map(ToString::to_string).collect()),
            None => Err(errors),
        }
    }

    #[test]
    fn networks_are_normalised_and_ambiguous_ones_refused() {
        assert_eq!(
            nets(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]).unwrap(),
            ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]
        );
        // IPv4-mapped IPv6 is the IPv4 network it maps.
        assert_eq!(nets(&["::ffff:10.0.0.0/104"]).unwrap(), ["10.0.0.0/8"]);
        let e = nets(&["10.1.2.3/8"]).unwrap_err();
        assert!(e["allow_from[0]"].contains("like 10.0.0.0"), "{e:?}");
        let e = nets(&["10.0.0.0/8", "::ffff:10.0.0.0/104"]).unwrap_err();
        assert!(e["allow_from[1]"].contains("listed twice"), "{e:?}");
        let e = nets(&["ten"]).unwrap_err();
        assert!(e["allow_from[0]"].contains("not an IP address"), "{e:?}");
        let many: Vec<String> = (0..=MAX_ALLOW_FROM)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        let mut errors = FieldErrors::new();
        assert!(parse_allow_from(&many, &mut errors).is_none());
        assert!(errors["allow_from"].contains("at most 64"));
    }

    #[test]
    fn not_before_reads_instants_dates_and_lengths() {
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        assert_eq!(
            parse_not_before("2026-12-05T09:00:00Z", now).unwrap(),
            "2026-12-05T09:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_not_before("2027-01-01", now).unwrap(),
            "2027-01-01T00:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_not_before("2d", now).unwrap(),
            "2026-12-06T10:00:00Z".parse::<Timestamp>().unwrap()
        );
        // A past start limits nothing, but is not an error.
        assert!(parse_not_before("2020-01-01", now).is_ok());
        assert!(parse_not_before("never", now).is_err());
        assert!(
            parse_not_before("5m", now)
                .unwrap_err()
                .contains("minute or a month")
        );
        let mut errors = FieldErrors::new();
        let limits = validate(
            None,
            Some("2027-02-01"),
            Some("2027-01-01T00:00:00Z".parse().unwrap()),
            now,
            &mut errors,
        );
        assert!(errors["not_before"].contains("never work"), "{errors:?}");
        assert!(limits.allow_from.is_empty());
    }
}
