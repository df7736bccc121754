//! Token expiry: the presets users know (1 week … 1 year), a custom RFC 3339
//! date, or an explicit `never`. Presets are calendar arithmetic in UTC, so
//! "1 month" from 31 January is the last day of February, not 30 days.

use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ToSpan};
use thiserror::Error;

/// What a user may ask for when creating a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpirySpec {
    /// `1w`, `1m`, `6m`, `1y`.
    Preset(Preset),
    /// `never`: the token does not expire. Must be said explicitly.
    Never,
    /// An RFC 3339 timestamp (`2027-03-01T12:00:00Z`) or a date
    /// (`2027-03-01`, meaning 00:00:00 UTC that day).
    At(Timestamp),
}

/// The expiry presets of the product guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    OneWeek,
    OneMonth,
    SixMonths,
    OneYear,
}

impl Preset {
    fn span(self) -> Span {
        match self {
            Preset::OneWeek => 7.days(),
            Preset::OneMonth => 1.month(),
            Preset::SixMonths => 6.months(),
            Preset::OneYear => 1.year(),
        }
    }
}

/// Accepted spellings, for error messages and help text.
pub const EXPIRY_HELP: &str =
    "1w, 1m, 6m, 1y, never, or a future RFC 3339 date such as 2027-03-01 or 2027-03-01T12:00:00Z";

/// Why an expiry was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExpiryError {
    #[error("`{0}` is not an expiry; use {EXPIRY_HELP}")]
    Syntax(String),
    #[error("{0} is not in the future; use {EXPIRY_HELP}")]
    InPast(Timestamp),
    #[error("the expiry is out of range")]
    Range,
}

impl FromStr for ExpirySpec {
    type Err = ExpiryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "1w" => Self::Preset(Preset::OneWeek),
            "1m" => Self::Preset(Preset::OneMonth),
            "6m" => Self::Preset(Preset::SixMonths),
            "1y" => Self::Preset(Preset::OneYear),
            "never" => Self::Never,
            _ => {
                let syntax = || ExpiryError::Syntax(s.to_owned());
                // A date alone is midnight UTC; a date-time must carry its
                // offset (`Z` or `+02:00`): a local time would be a guess.
                if s.len() == 10 {
                    let date: jiff::civil::Date = s.parse().map_err(|_| syntax())?;
                    let ts = date
                        .to_zoned_datetime(TimeZone::UTC)
                        .map_err(|_| ExpiryError::Range)?
                        .timestamp();
                    Self::At(ts)
                } else {
                    Self::At(s.parse().map_err(|_| syntax())?)
                }
            }
        })
    }
}

impl fmt::Display for ExpirySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Preset(Preset::OneWeek) => f.write_str("1w"),
            Self::Preset(Preset::OneMonth) => f.write_str("1m"),
            Self::Preset(Preset::SixMonths) => f.write_str("6m"),
            Self::Preset(Preset::OneYear) => f.write_str("1y"),
            Self::Never => f.write_str("never"),
            Self::At(ts) => write!(f, "{ts}"),
        }
    }
}

impl ExpirySpec {
    /// The expiry instant for a token created at `now` (`None` = never).
    pub fn resolve(self, now: Timestamp) -> Result<Option<Timestamp>, ExpiryError> {
        match self {
            Self::Never => Ok(None),
            Self::Preset(p) => now
                .to_zoned_datetime(TimeZone::UTC)
                .checked_add(p.span())
                .map(|z| Some(z.timestamp()))
                .map_err(|_| ExpiryError::Range),
            Self::At(ts) if ts <= now => Err(ExpiryError::InPast(ts)),
            Self::At(ts) => Ok(Some(ts)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn presets_are_calendar_arithmetic_in_utc() {
        let now = ts("2027-01-31T10:00:00Z");
        let at = |s: &str| s.parse::<ExpirySpec>().unwrap().resolve(now).unwrap();
        assert_eq!(at("1w"), Some(ts("2027-02-07T10:00:00Z")));
        assert_eq!(at("1m"), Some(ts("2027-02-28T10:00:00Z")));
        assert_eq!(at("6m"), Some(ts("2027-07-31T10:00:00Z")));
        assert_eq!(at("1y"), Some(ts("2028-01-31T10:00:00Z")));
        assert_eq!(at("never"), None);
        let leap = ts("2028-02-29T00:00:00Z");
        assert_eq!(
            ExpirySpec::Preset(Preset::OneYear).resolve(leap).unwrap(),
            Some(ts("2029-02-28T00:00:00Z"))
        );
    }

    #[test]
    fn custom_dates_are_rfc3339_and_in_the_future() {
        let now = ts("2027-01-01T00:00:00Z");
        let spec: ExpirySpec = "2027-03-01".parse().unwrap();
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
    fn ambiguous_or_unknown_spellings_are_refused() {
        for bad in [
            "",
            "1d",
            "2w",
            "forever",
            "2027-03-01T12:00:00",
            "2027-13-01",
            "03/01/2027",
        ] {
            let err = bad.parse::<ExpirySpec>().unwrap_err();
            assert!(
                err.to_string().contains("1w, 1m, 6m, 1y, never"),
                "{bad}: {err}"
            );
        }
    }
}
