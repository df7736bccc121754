//! The `[log]` section: log format and level. Owns their defaults; the
//! subscriber itself is set up in `crate::telemetry`.

use serde::{Deserialize, Serialize};

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` for people, `json` for collectors.
    pub format: LogFormat,
    /// A tracing filter (`info`, `hawzu_gate=debug`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl LogSettings {
    /// `level` is a filter `tracing` understands (`info`, `warn`,
    /// `hawzu_gate=debug,info`): a word it does not know would otherwise
    /// turn every log line off without a word.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        let level = self.level.trim();
        let bad = || {
            invalid(
                "log.level",
                format!(
                    "`{level}` is not a log level or filter; use one of {}, or a filter such as `hawzu_gate=debug,info`",
                    LEVELS.join(", ")
                ),
            )
        };
        if level.is_empty() {
            return Err(bad());
        }
        // Each directive is `level` or `target=level` (a span/field filter
        // in brackets is left to tracing itself).
        for directive in level.split(',').map(str::trim) {
            let lvl = directive
                .rsplit_once('=')
                .map_or(directive, |(_, l)| l)
                .trim();
            if directive.contains('[') {
                continue;
            }
            if !LEVELS.contains(&lvl.to_ascii_lowercase().as_str()) {
                return Err(bad());
            }
        }
        tracing_subscriber::EnvFilter::try_new(level).map_err(|_| bad())?;
        Ok(())
    }
}

/// The levels `log.level` takes (alone or after `target=`).
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    Text,
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("`{s}` is not a log format; use text or json")),
        }
    }
}
