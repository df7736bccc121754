//! The `[leaks]` section: where GitHub's secret-scanning keys come from, how
//! long they are trusted, and how much a report may weigh. Owns defaults
//! and checks; it must never fetch a key or read a report (`crate::leaks`).
//! The listener itself is `listen.leaks` (off unless set).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// GitHub's list of secret-scanning signing keys.
pub const GITHUB_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";

/// Leaked-token reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeakSettings {
    /// Where GitHub's public keys are fetched (`https://`; `http://` only
    /// to a loopback address, for tests; no user info).
    pub github_keys_url: String,
    /// Read the keys from this file (GitHub's JSON) instead of fetching
    /// them: for air-gapped gates. Read at start and again for an unknown
    /// key, at most once a minute (or per `github_keys_ttl` if shorter).
    pub github_keys_file: Option<PathBuf>,
    /// How long a fetched key list is trusted: a key GitHub stopped listing
    /// is refused at most this long after (what "stale" means here).
    pub github_keys_ttl: HumanDuration,
    /// Longest wait for the key list (1ms–10s: a report is answered within
    /// 20 s, its key read included).
    pub github_keys_timeout: HumanDuration,
    /// Largest report body; a larger one is refused with 413 before it is
    /// read (by `Content-Length`) or as soon as it passes this.
    pub max_body_bytes: usize,
    /// Most tokens in one GitHub report (a longer one is 413).
    pub max_tokens_per_report: usize,
    /// Most bytes of GitHub report bodies the gate holds at once before
    /// their signatures are checked: what strangers can make it keep. A
    /// report's bytes are counted as they arrive; one that does not fit is
    /// answered 503 `overloaded` with `Retry-After` (GitHub sends again).
    /// Unset: the larger of 16 MiB and `max_body_bytes` (see
    /// [`LeakSettings::unverified_budget`]).
    pub max_unverified_bytes: Option<usize>,
}

impl Default for LeakSettings {
    fn default() -> Self {
        Self {
            github_keys_url: GITHUB_KEYS_URL.to_owned(),
            github_keys_file: None,
            github_keys_ttl: HumanDuration(Duration::from_secs(3600)),
            github_keys_timeout: HumanDuration(Duration::from_secs(10)),
            max_body_bytes: 4 * 1024 * 1024,
            max_tokens_per_report: 10_000,
            max_unverified_bytes: None,
        }
    }
}

/// `leaks.max_unverified_bytes` when unset, unless one body is larger.
pub const UNVERIFIED_BUDGET: usize = 16 * 1024 * 1024;

impl LeakSettings {
    /// Bytes of GitHub bodies held at once before their signatures are
    /// checked: `max_unverified_bytes`, else the larger of
    /// [`UNVERIFIED_BUDGET`] and `max_body_bytes` (a config that raised
    /// the body limit needs no new key to start).
    pub fn unverified_budget(&self) -> usize {
        self.max_unverified_bytes
            .unwrap_or_else(|| UNVERIFIED_BUDGET.max(self.max_body_bytes))
    }

    /// Checks `leaks.*`; `invalid(key, message)` names the key at fault.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        // Never quote a password back, even one refused for being there.
        let shown = crate::redact::redact_url(&self.github_keys_url);
        let url: http::Uri = self
            .github_keys_url
            .parse()
            .map_err(|_| invalid("leaks.github_keys_url", format!("`{shown}` is not a URL")))?;
        if url.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid(
                "leaks.github_keys_url",
                format!(
                    "`{shown}` must not carry a user or password (GitHub's key list is public)"
                ),
            ));
        }
        let loopback = url.host().is_some_and(|h| {
            h == "localhost"
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match url.scheme_str() {
            Some("https") if url.host().is_some() => {}
            Some("http") if loopback => {}
            _ => {
                return Err(invalid(
                    "leaks.github_keys_url",
                    format!(
                        "`{shown}` must be an https:// URL (keys fetched in the clear could be replaced on the way; http:// only to a loopback address)"
                    ),
                ));
            }
        }
        if self.github_keys_ttl.0 < Duration::from_secs(1) {
            return Err(invalid(
                "leaks.github_keys_ttl",
                "must be at least 1s".into(),
            ));
        }
        // A report (its key list read included) must be answered within
        // 20 s, well inside GitHub's 30 s.
        self.github_keys_timeout
            .within(Duration::from_millis(1), Duration::from_secs(10))
            .map_err(|why| invalid("leaks.github_keys_timeout", why))?;
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "leaks.max_body_bytes",
                "must be between 1024 and 67108864".into(),
            ));
        }
        if let Some(budget) = self.max_unverified_bytes
            && !(self.max_body_bytes..=1024 * 1024 * 1024).contains(&budget)
        {
            return Err(invalid(
                "leaks.max_unverified_bytes",
                format!(
                    "must be between leaks.max_body_bytes ({}) and 1073741824",
                    self.max_body_bytes
                ),
            ));
        }
        if self.max_tokens_per_report == 0 {
            return Err(invalid(
                "leaks.max_tokens_per_report",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
