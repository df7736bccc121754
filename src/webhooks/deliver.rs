//! One webhook POST: the hyper client (HTTP/1.1, TLS by rustls with the
//! public roots and an optional CA, connect and whole-attempt timeouts,
//! redirects never followed) and one signed attempt. A 2xx is delivered;
//! anything else, or no answer in time, is a [`Failure`] the caller may
//! retry. Never logs or returns the secret or the body.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ring::hmac;

use crate::headers::{HAWZU_EVENT_ID, HAWZU_EVENT_TYPE, HAWZU_SIGNATURE};
use crate::tls::TlsError;

use super::sign::signature;

/// The User-Agent of every webhook POST.
pub const AGENT: &str = concat!("hawzu-gate/", env!("CARGO_PKG_VERSION"));

/// The client of one webhook.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for a webhook: `timeout` also bounds connecting.
pub fn client(ca_file: Option<&Path>, timeout: Duration) -> Result<HttpClient, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let tls = crate::tls::client_config(ca_file)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2)
        .build(connector))
}

/// Why an attempt did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the receiver answered {0}")]
    Status(http::StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the receiver: {0}")]
    Connection(String),
    #[error("the request cannot be built: {0}")]
    Request(String),
}

/// One attempt: POSTs `body`, signed now, to `uri`.
pub async fn attempt(
    client: &HttpClient,
    uri: &Uri,
    key: &hmac::Key,
    id: &str,
    kind: &str,
    body: &Bytes,
    timeout: Duration,
) -> Result<(), Failure> {
    let t = jiff::Timestamp::now().as_second();
    let req = Request::post(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, AGENT)
        .header(HAWZU_EVENT_ID, id)
        .header(HAWZU_EVENT_TYPE, kind)
        .header(HAWZU_SIGNATURE, signature(key, t, body))
        .body(Full::new(body.clone()))
        .map_err(|e| Failure::Request(e.to_string()))?;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(Failure::Timeout(timeout)),
        Ok(Err(e)) => Err(Failure::Connection(connection_error(&e))),
        // The answer's body is not read: only its status counts.
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(Failure::Status(resp.status())),
    }
}

/// The error and its causes, in one line (they name no URL or secret).
fn connection_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
