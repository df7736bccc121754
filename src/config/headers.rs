//! The `[headers]` section: the identity header prefix and the client
//! headers the API must never get. Owns its defaults and the check of the
//! strip list; header handling itself stays in `crate::headers`.

use serde::{Deserialize, Deserializer, Serialize};

/// Identity headers, and the client headers the API must never get.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderSettings {
    /// Prefix of every identity header; incoming headers with it are removed
    /// (every separator — `_`, `.`, `+`… — read as `-`, case ignored).
    pub prefix: String,
    /// Client headers removed by the proxy before forwarding, and named for
    /// removal in Envoy allow answers (every separator read as `-`, case
    /// ignored): method
    /// and path overrides by default, which would make the API act on a
    /// request the gate never judged. Environment: comma-separated.
    #[serde(deserialize_with = "header_names")]
    pub strip: Vec<String>,
}

impl Default for HeaderSettings {
    fn default() -> Self {
        Self {
            prefix: crate::headers::DEFAULT_PREFIX.into(),
            strip: crate::headers::DEFAULT_STRIP.map(str::to_owned).to_vec(),
        }
    }
}

impl HeaderSettings {
    /// Checks `headers.strip`; `invalid(key, message)` builds the error
    /// naming the key at fault.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        if let Err(e) = crate::headers::IdentityHeaders::default().with_strip(&self.strip) {
            return Err(invalid("headers.strip", e.to_string()));
        }
        Ok(())
    }
}

impl HeaderSettings {
    /// A warning for each default of `headers.strip` a configured list
    /// leaves out: the list replaces the defaults, so writing one header
    /// meant as an addition lets the method and path overrides through
    /// (the API might act on a method or path the gate never judged).
    pub(crate) fn dropped_defaults(&self) -> Vec<String> {
        let kept = |d: &str| {
            let canon = |s: &str| crate::headers::folded(s);
            self.strip.iter().any(|s| canon(s) == canon(d))
        };
        let dropped: Vec<&str> = crate::headers::DEFAULT_STRIP
            .into_iter()
            .filter(|d| !kept(d))
            .collect();
        if dropped.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "headers.strip replaces the default list and leaves out {}: the API gets them from clients (and /auth/nginx and /auth/traefik no longer refuse a method override). If your API honours none of them, ignore this; to add a header, list the defaults too",
            dropped.join(", ")
        )]
    }
}

/// A list of header names, trimmed; empty entries (an empty environment
/// variable) are skipped. Checked in [`HeaderSettings::validate`].
fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}
