//! Token expiry: a length (`7d`, `2w`, `3mo`, `1y`, with long forms such as
//! `3months`), a custom date or RFC 3339 instant, or an explicit `never`.
//! Lengths are calendar arithmetic in UTC, so "1 month" from 31 January is
//! the last day of February, not 30 days.
//!
//! `m` alone is refused: in config durations it is a minute, and for an
//! expiry people mean a month, so it names both readings. The admin API
//! keeps the two spellings it documented before (`1m`, `6m`: months) for the
//! clients written against it ([`ExpirySpec::parse_api`]); the CLI does not.

use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ToSpan};
use thiserror::Error;

/// What a user may ask for when creating (or rotating, or shortening) a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpirySpec {
    /// A length from now: `7d`, `2w`, `3mo`, `1y`, `12h`.
    In(Length),
    /// `never`: the token does not expire. Must be said explicitly.
    Never,
    /// An RFC 3339 instant (`2027-03-01T12:00:00Z`) or a date
    /// (`2027-03-01`, meaning 00:00:00 UTC that day: the token stops
    /// working as that day begins in UTC).
    At(Timestamp),
}

/// A length of time from now, counted in one calendar unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    pub count: u16,
    pub unit: Unit,
}

/// The units of an expiry length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    /// Every spelling of each unit, short one first.
    const SPELLINGS: [(Unit, &'static [&'static str]); 5] = [
        (Unit::Hour, &["h", "hour", "hours"]),
        (Unit::Day, &["d", "day", "days"]),
        (Unit::Week, &["w", "week", "weeks"]),
        (Unit::Month, &["mo", "month", "months"]),
        (Unit::Year, &["y", "year", "years"]),
    ];

    fn parse(s: &str) -> Option<Unit> {
        Self::SPELLINGS
            .iter()
            .find(|(_, names)| names.contains(&s))
            .map(|(u, _)| *u)
    }

    fn short(self) -> &'static str {
        Self::SPELLINGS
            .iter()
            .find(|(u, _)| *u == self)
            .map_or("", |(_, names)| names[0])
    }
}

impl Length {
    fn span(self) -> Span {
        let n = i64::from(self.count);
        match self.unit {
            Unit::Hour => n.hours(),
            Unit::Day => n.days(),
            Unit::Week => (n * 7).days(),
            Unit::Month => n.months(),
            Unit::Year => n.years(),
        }
    }
}

/// The longest length accepted, in its unit (a typo guard: `10000y`).
const MAX_COUNT: u16 = 1000;

/// Accepted spellings, for error messages and help text.
pub const EXPIRY_HELP: &str = "a length such as 7d, 2w, 3mo (or 3months), 1y, never, or a future \
     date or RFC 3339 instant such as 2027-03-01 (00:00 UTC that day) or 2027-03-01T12:00:00Z";

/// Why an expiry was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExpiryError {
    #[error("`{0}` is not an expiry; use {EXPIRY_HELP}")]
    Syntax(String),
    #[error(
        "{0}m: a minute or a month? write {0}mo for a month (an expiry is counted in h, d, w, mo or y)"
    )]
    Ambiguous(String),
    #[error("{0} is not in the future; use {EXPIRY_HELP}")]
    InPast(Timestamp),
    #[error("the expiry is out of range (at most {MAX_COUNT} of a unit)")]
    Range,
    #[error(
        "{0} is past the latest expiry date the gate can hold (9999-12-30); use a nearer date or never"
    )]
    DateRange(String),
}

impl FromStr for ExpirySpec {
    type Err = ExpiryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "never" {
            return Ok(Self::Never);
        }
        let syntax = || ExpiryError::Syntax(s.to_owned());
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && digits < s.len() && !s[digits..].starts_with('-') {
            let (count, unit) = s.split_at(digits);
            if unit == "m" {
                return Err(ExpiryError::Ambiguous(count.to_owned()));
            }
            let unit = Unit::parse(unit).ok_or_else(syntax)?;
            let count: u16 = count.parse().map_err(|_| ExpiryError::Range)?;
            if count == 0 {
                return Err(syntax());
            }
            if count > MAX_COUNT {
                return Err(ExpiryError::Range);
            }
            return Ok(Self::In(Length { count, unit }));
        }
        // A date alone is midnight UTC; a date-time must carry its offset
        // (`Z` or `+02:00`): a local time would be a guess.
        if s.len() == 10 {
            let date: jiff::civil::Date = s.parse().map_err(|_| syntax())?;
            let ts = date
                .to_zoned_datetime(TimeZone::UTC)
                .map_err(|_| ExpiryError::DateRange(s.to_owned()))?
                .timestamp();
            Ok(Self::At(ts))
        } else {
            Ok(Self::At(s.parse().map_err(|_| syntax())?))
        }
    }
}

impl fmt::Display for ExpirySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::In(l) => write!(f, "{}{}", l.count, l.unit.short()),
            Self::Never => f.write_str("never"),
            Self::At(ts) => write!(f, "{ts}"),
        }
    }
}

impl ExpirySpec {
    /// As the admin API reads it: the CLI's spellings, and the two it
    /// documented before lengths had units of their own, `1m` and `6m`
    /// (months), kept for the clients written against them.
    pub fn parse_api(s: &str) -> Result<Self, ExpiryError> {
        let months = |count| {
            Ok(Self::In(Length {
                count,
                unit: Unit::Month,
            }))
        };
        match s {
            "1m" => months(1),
            "6m" => months(6),
            _ => s.parse(),
        }
    }

    /// Whether this is a date without a time (`2027-03-01`): the output
    /// says which instant it became.
    pub fn is_date_only(s: &str) -> bool {
        s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok()
    }

    /// The expiry instant for a token created at `now` (`None` = never).
    pub fn resolve(self, now: Timestamp) -> Result<Option<Timestamp>, ExpiryError> {
        match self {
            Self::Never => Ok(None),
            Self::In(l) => now
                .to_zoned_datetime(TimeZone::UTC)
                .checked_add(l.span())
                .map(|z| Some(z.timestamp()))
                .map_err(|_| ExpiryError::Range),
            Self::At(ts) if ts <= now => Err(ExpiryError::InPast(ts)),
            Self::At(ts) => Ok(Some(ts)),
        }
    }
}

/// A window ahead of now for "expiring within" (`7d`, `12h`, `1mo`): a
/// length as an expiry is written, never an instant or `never`.
pub fn parse_within(s: &str) -> Result<ExpirySpec, String> {
    match s.parse::<ExpirySpec>() {
        Ok(spec @ ExpirySpec::In(_)) => Ok(spec),
        Err(ExpiryError::Ambiguous(n)) => Err(format!(
            "{n}m: a minute or a month? write {n}mo for a month, or use h, d or w"
        )),
        _ => Err(format!(
            "`{s}` is not a window; write a length such as 1d, 7d, 30d or 12h"
        )),
    }
}

impl ExpirySpec {
    /// The calendar span of a length (`90d`, `3mo`); `None` for anything
    /// else.
    pub fn span_of(s: &str) -> Option<Span> {
        match s.parse::<ExpirySpec>() {
            Ok(ExpirySpec::In(l)) => Some(l.span()),
            _ => None,
        }
    }
}

/// The end of a window of `within` (a length) from `now`.
pub fn window_end(within: ExpirySpec, now: Timestamp) -> Option<Timestamp> {
    within.resolve(now).ok().flatten()
}

/// A duration in its shortest exact spelling, as one writes it in the
/// config: `90d`, `24h`, `5min`, `30s`, `250ms` (read back as the same
/// duration; `min`, never the `m` that reads as a month elsewhere), or
/// humantime's long form when no one unit is exact (`1s 500us`).
pub fn short_duration(d: std::time::Duration) -> String {
    const UNITS: [(&str, u128); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return humantime::format_duration(d).to_string();
    }
    if ms == 0 {
        return "0s".to_owned();
    }
    UNITS
        .iter()
        .find(|(_, n)| ms.is_multiple_of(*n))
        .map_or_else(|| format!("{ms}ms"), |(u, n)| format!("{}{u}", ms / n))
}

#[cfg(test)]
#[path = "expiry_tests.rs"]
mod tests;
