//! The `[headers]` section: the identity header prefix and the client
//! headers the API must never get. Owns its defaults and the check of the
//! strip list; header handling itself stays in `crate::headers`.

use serde::{Deserialize, Deserializer, Serialize};

/// Identity headers, and the client headers the API must never get.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderSettings {
    /// Prefix of every identity header; incoming headers with it are removed
    /// (`_` read as `-`, case ignored).
    pub prefix: String,
    /// Client headers removed by the proxy before forwarding, and named for
    /// removal in Envoy allow answers (`_` read as `-`, case ignored): method
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

/// A list of header names, trimmed; empty entries (an empty environment
/// variable) are skipped. Checked in [`HeaderSettings::validate`].
fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}
