//! [`Webhook`]: one `[[webhooks]]` entry made ready to send — its URL
//! parsed, its secret read (from the config or `secret_file`) into an HMAC
//! key, its client built. The secret is never kept as text, logged or
//! shown by `Debug`.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use ring::hmac;

use crate::config::{WebhookSettings, check_secret};
use crate::tls::TlsError;

use super::deliver::{self, HttpClient};
use super::sign;

/// Why a webhook could not be set up (names the key, never the secret).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhooks[{index}].secret_file: cannot read {path}: {error}")]
    SecretFile {
        index: usize,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("webhooks[{index}].secret_file: {message}")]
    WeakSecret { index: usize, message: String },
    #[error("webhooks[{index}].url: {message}")]
    Url { index: usize, message: String },
    #[error("webhooks[{index}].ca_file: {source}")]
    Tls { index: usize, source: TlsError },
}

/// A webhook ready to send.
pub struct Webhook {
    pub name: String,
    pub uri: Uri,
    pub key: hmac::Key,
    pub events: Vec<String>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub poll_interval: Duration,
    pub claim_after: Duration,
    pub client: HttpClient,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Entry `index` of `[[webhooks]]`, already checked by the config.
    pub fn new(index: usize, s: &WebhookSettings) -> Result<Self, WebhookError> {
        let secret = match (&s.secret, &s.secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|error| WebhookError::SecretFile {
                        index,
                        path: path.clone(),
                        error,
                    })?;
                let secret = text.trim_end().to_owned();
                check_secret(&secret)
                    .map_err(|message| WebhookError::WeakSecret { index, message })?;
                secret
            }
            (None, None) => {
                return Err(WebhookError::WeakSecret {
                    index,
                    message: "no secret".into(),
                });
            }
        };
        let uri: Uri = s.url.parse().map_err(|_| WebhookError::Url {
            index,
            message: "is not a URL".into(),
        })?;
        let client = deliver::client(s.ca_file.as_deref(), s.timeout.0)
            .map_err(|source| WebhookError::Tls { index, source })?;
        Ok(Self {
            name: s.name(),
            uri,
            key: sign::key(secret.as_bytes()),
            events: s.events.clone(),
            timeout: s.timeout.0,
            max_attempts: s.max_attempts,
            retry_initial: s.retry_initial.0,
            retry_max: s.retry_max.0,
            poll_interval: s.poll_interval.0,
            claim_after: s.claim_after.0,
            client,
        })
    }

    /// Whether this webhook is sent events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events
            .iter()
            .any(|e| e == crate::config::ALL_EVENTS || e == event_type)
    }

    /// The wait after failed attempt `n` (1-based): `retry_initial`
    /// doubled per failure, at most `retry_max`, less a random part of up
    /// to half (so a fleet's retries spread out).
    pub fn backoff(&self, n: u32) -> Duration {
        let full = self
            .retry_initial
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.retry_max);
        let mut r = [0u8; 4];
        let fraction = match getrandom::fill(&mut r) {
            Ok(()) => f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX),
            Err(_) => 0.5,
        };
        full.mul_f64(1.0 - fraction / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_retry_max_less_at_most_half() {
        let settings = WebhookSettings {
            url: "http://127.0.0.1:9/h".into(),
            secret: Some("0123456789abcdef".into()),
            events: vec!["*".into()],
            ..WebhookSettings::default()
        };
        let hook = Webhook::new(0, &settings).unwrap();
        let second = Duration::from_secs(1);
        for _ in 0..50 {
            let first = hook.backoff(1);
            assert!(first <= second && first >= second / 2, "{first:?}");
            let third = hook.backoff(3);
            assert!(third <= 4 * second && third >= 2 * second, "{third:?}");
            let late = hook.backoff(30);
            let max = Duration::from_secs(60);
            assert!(late <= max && late >= max / 2, "{late:?}");
        }
        assert!(format!("{hook:?}").contains("name"));
        assert!(!format!("{hook:?}").contains("0123456789abcdef"));
    }
}
