//! `HumanDuration`: a duration written as `250ms`, `60s`, `5m`, `30d` in
//! the file and the environment. Owns parsing and printing only; it must
//! never know which key it is read for.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::token::short_duration as short;

/// A duration written as `250ms`, `60s`, `5m`, `30d`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&short(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&short(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if months_as_m(&s) {
            return Err(serde::de::Error::custom(format!(
                "`{s}`: `M` is a month in this syntax, `m` a minute; write months out (`3months`) or use days (`90d`)"
            )));
        }
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a duration ({e}); write it like 250ms, 60s, 5m, 30d"
                ))
            })
    }
}

/// Whether `s` has a unit written `M` alone (humantime's month): too
/// close to `m`, a minute, for a setting where the difference is months.
fn months_as_m(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'M'
            && b[..i]
                .iter()
                .rev()
                .find(|c| !c.is_ascii_whitespace())
                .is_some_and(u8::is_ascii_digit)
            && !b.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_written_m_is_refused_and_months_written_out_are_not() {
        let parse = |s: &str| serde_json::from_value::<HumanDuration>(serde_json::json!(s));
        for bad in ["5M", "5 M", "1M30d", "2h 3M"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("`M` is a month"), "{bad}: {e}");
        }
        for ok in ["5m", "3months", "1month", "5min", "90d", "250ms"] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn durations_print_as_written_and_read_back() {
        for (d, text) in [
            (Duration::from_secs(90 * 86_400), "90d"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5min"),
            (Duration::from_millis(250), "250ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(short(d), text);
            assert_eq!(humantime::parse_duration(text).unwrap(), d, "{text}");
        }
        let odd = Duration::from_micros(1_500_250);
        assert_eq!(humantime::parse_duration(&short(odd)).unwrap(), odd);
    }
}
