//! `HumanDuration`: a duration written as `250ms`, `60s`, `5m`, `30d` in
//! the file and the environment. Owns parsing and printing only; it must
//! never know which key it is read for.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `250ms`, `60s`, `5m`, `30d`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&short(self.0))
    }
}

/// A duration in its shortest exact spelling, as one writes it in the
/// config: `90d`, `24h`, `5min`, `30s`, `250ms` (read back as the same
/// duration; `min`, never the `m` that reads as a month elsewhere), or
/// humantime's long form when no one unit is exact (`1s 500us`).
pub fn short(d: Duration) -> String {
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

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&short(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a duration ({e}); write it like 250ms, 60s, 5m, 30d"
                ))
            })
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
