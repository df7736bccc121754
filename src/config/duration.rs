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

/// Longer than any setting can mean: refused as it is read, so that no
/// check or use downstream (a doubling, a deadline, a cache's lifetime)
/// can overflow.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

impl HumanDuration {
    /// `Err("must be between <min> and <max>, not <self>")` when outside.
    pub fn within(self, min: Duration, max: Duration) -> Result<(), String> {
        if (min..=max).contains(&self.0) {
            return Ok(());
        }
        Err(format!(
            "must be between {} and {}, not {}",
            short(min),
            short(max),
            short(self.0)
        ))
    }
}

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
        let d = humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration ({e}); write it like 250ms, 60s, 5m, 30d"
            ))
        })?;
        if d > LONGEST {
            return Err(serde::de::Error::custom(format!(
                "`{s}` is longer than any setting can mean (100 years)"
            )));
        }
        Ok(HumanDuration(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
