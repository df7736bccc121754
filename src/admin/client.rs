//! The admin API client the CLI uses: one JSON request, one JSON answer.
//! Request bodies are the `admin::wire` structs; the answer is handed back
//! as sent, for the CLI to print as is (`--json`) or read into its struct.
//!
//! It never prints; the CLI decides what a person or a script sees.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

/// How long the CLI waits for the admin API.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a call did not get an answer from the server.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("--admin-url `{0}` is not an http:// or https:// URL such as http://127.0.0.1:9091")]
    Url(String),
    #[error(
        "--admin-url `{0}` carries a user and password: the admin API takes the key (--admin-key, $HAWZU_GATE_ADMIN_KEY), never credentials in the URL"
    )]
    UrlCredentials(String),
    /// The request could not be made (`http`'s reason, which quotes
    /// nothing of it): a path or query the CLI built is not a valid URI.
    #[error(
        "the request cannot be sent to the admin API: {0} (a value on the command line that cannot be put in a URL?)"
    )]
    Request(String),
    #[error("TLS for the admin API: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(
        "the admin key is empty or holds a character a header cannot carry (a line break inside it?); check --admin-key, $HAWZU_GATE_ADMIN_KEY or admin.key"
    )]
    Key,
    #[error(
        "cannot reach the admin API at {url}: {reason} (is `hawzu-gate serve` running? see --admin-url)"
    )]
    Connect { url: String, reason: String },
    #[error("the admin API at {0} did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
    #[error("the admin API at {url} answered {status} with a body that is not JSON")]
    NotJson { url: String, status: StatusCode },
}

/// A client of one admin API. `Debug` never shows the key.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    key: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .field("key", &"***")
            .finish_non_exhaustive()
    }
}

/// TLS settings of the client, for an `https://` admin URL.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// A CA (PEM) to trust beside the public roots.
    pub ca_file: Option<PathBuf>,
    /// Certificate and key to present when the admin listener requires mTLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl AdminClient {
    /// `base` is like `http://127.0.0.1:9091` or `https://gate:9091`.
    pub fn new(base: &str, key: String, tls: &ClientTls) -> Result<Self, ClientError> {
        let trimmed = base.trim_end_matches('/');
        let shown = || crate::redact::redact_url(base);
        let uri: Uri = trimmed.parse().map_err(|_| ClientError::Url(shown()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ClientError::Url(shown()));
        }
        // The admin API takes the key: a user and password in the URL
        // would be sent nowhere, and shown in every error naming it.
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(ClientError::UrlCredentials(shown()));
        }
        // A key pasted with its line break is the key; one no header can
        // carry is the key's fault (said without the key).
        let key = key.trim().to_owned();
        if key.is_empty() || HeaderValue::from_str(&format!("Bearer {key}")).is_err() {
            return Err(ClientError::Key);
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let identity = tls
            .identity
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let config = crate::tls::client_config_with_identity(tls.ca_file.as_deref(), identity)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            base: trimmed.to_owned(),
            key,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends one request without a body; any HTTP status is an answer.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
    ) -> Result<(StatusCode, Value), ClientError> {
        self.exchange(method, path_and_query, None).await
    }

    /// Sends one request with `body` (one of the `admin::wire` requests) as
    /// JSON; any HTTP status is an answer.
    pub async fn send<B: Serialize>(
        &self,
        method: Method,
        path_and_query: &str,
        body: &B,
    ) -> Result<(StatusCode, Value), ClientError> {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.exchange(method, path_and_query, Some(bytes)).await
    }

    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let url = format!("{}{path_and_query}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key))
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let exchange = async {
            let res = self.http.request(req).await.map_err(|e| {
                let reason = std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.to_string());
                ClientError::Connect {
                    url: self.base.clone(),
                    reason,
                }
            })?;
            let status = res.status();
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Connect {
                    url: self.base.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            let value = serde_json::from_slice(&body).map_err(|_| ClientError::NotJson {
                url: self.base.clone(),
                status,
            })?;
            Ok((status, value))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(ClientError::Timeout(self.base.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let c = AdminClient::new(
            "http://127.0.0.1:9090",
            "hwzadm_secretkeyvalue0123".into(),
            &ClientTls::default(),
        )
        .unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("secretkeyvalue"), "{dump}");
        assert!(dump.contains("127.0.0.1:9090"), "{dump}");
    }

    /// A password in `--admin-url` is never shown (the admin API takes
    /// the key, never credentials in the URL: such a URL is refused), and
    /// neither is one in a URL that cannot be read.
    #[test]
    fn a_password_in_the_admin_url_is_refused_unshown() {
        let tls = ClientTls::default();
        for url in [
            "http://u:s3cret@gate:9091",
            "http://u:s3cret@",
            "ftp://u:s3cret@gate",
        ] {
            let e = AdminClient::new(url, "hwzadm_k".into(), &tls).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("--admin-url"), "{shown}");
        }
    }

    /// A key pasted with its line break (`$(cat admin.key)` keeps none, an
    /// editor or `echo` may) is the key; one that no header can carry is
    /// named as the key's fault, never the URL's.
    #[test]
    fn the_key_is_trimmed_and_a_bad_one_is_named() {
        let tls = ClientTls::default();
        let c = AdminClient::new("http://127.0.0.1:9090", " hwzadm_k\n".into(), &tls).unwrap();
        assert_eq!(c.key, "hwzadm_k");
        let e = AdminClient::new("http://127.0.0.1:9090", "hwzadm_k\nx".into(), &tls)
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin key") && !e.contains("--admin-url"), "{e}");
    }

    /// A path or query that no URI can carry (an unencoded space) is said
    /// to be the request's fault, never the `--admin-url`'s.
    #[tokio::test]
    async fn a_request_that_cannot_be_built_is_not_blamed_on_the_url() {
        let c = AdminClient::new(
            "http://127.0.0.1:9",
            "hwzadm_k".into(),
            &ClientTls::default(),
        )
        .unwrap();
        let e = c
            .call(Method::GET, "/admin/v1/tokens?since=1d 12h")
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Request(_)), "{e:?}");
        let e = e.to_string();
        assert!(!e.contains("--admin-url"), "{e}");
        assert!(e.contains("cannot be sent"), "{e}");
    }
}
