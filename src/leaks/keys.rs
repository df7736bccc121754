//! GitHub's signing keys for secret-scanning reports: fetched from
//! `leaks.github_keys_url` (or read from `leaks.github_keys_file`), trusted
//! for `leaks.github_keys_ttl`, and looked up by key id.
//!
//! A key id the list does not name makes the list be read again — at most
//! once per [`REFETCH_GAP`], so forged ids cannot turn the gate into a
//! fetch loop; and so does a list that is stale, never read, or could not
//! be read (the reports meanwhile answered from the last error, or — for
//! one more TTL after the list went stale — from the last list read). A key GitHub stopped listing is refused once the list it came
//! in is older than the TTL and a new list no longer names it: that is what
//! a "stale" report is (GitHub's signatures carry no time; a replayed report
//! changes nothing, see `revoke`). Every fetch is bounded in time and size;
//! no lock is held across one but the one that makes concurrent fetches
//! share a single request.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

use super::github::{KeyListError, PublicKey, parse_key_list};
use crate::config::LeakSettings;

/// Shortest time between two reads of the key list caused by unknown ids.
pub const REFETCH_GAP: Duration = Duration::from_secs(60);
/// Largest key list read.
const MAX_KEY_LIST: usize = 256 * 1024;

/// Why no key could be had for a report.
#[derive(Debug, Clone, Error)]
pub enum KeyError {
    #[error("no secret-scanning key `{0}` is listed")]
    Unknown(String),
    #[error("the secret-scanning keys cannot be read: {0}")]
    Unavailable(String),
}

/// Where keys come from.
#[derive(Debug)]
enum Source {
    Url {
        uri: Uri,
        client: Box<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>>,
    },
    File(PathBuf),
}

/// The keys last read, and when.
#[derive(Debug, Default)]
struct Held {
    keys: Vec<PublicKey>,
    read_at: Option<Instant>,
    /// The last attempt (successful or not), for [`REFETCH_GAP`].
    tried_at: Option<Instant>,
    /// Why the last attempt failed, while it is the last.
    failed: Option<KeyError>,
}

/// GitHub's keys, cached.
#[derive(Debug)]
pub struct GithubKeys {
    source: Source,
    ttl: Duration,
    timeout: Duration,
    held: Mutex<Held>,
    /// Concurrent reads of the list share one request.
    fetching: tokio::sync::Mutex<()>,
    /// Reads of the list (for tests and the log).
    reads: std::sync::atomic::AtomicU64,
}

impl GithubKeys {
    /// The keys of `settings`; nothing is read yet.
    pub fn new(settings: &LeakSettings) -> Result<Self, KeyError> {
        let source = match &settings.github_keys_file {
            Some(path) => Source::File(path.clone()),
            None => {
                let uri: Uri = settings.github_keys_url.parse().map_err(|_| {
                    KeyError::Unavailable("leaks.github_keys_url is not a URL".into())
                })?;
                let tls = crate::tls::client_config(None)
                    .map_err(|e| KeyError::Unavailable(e.to_string()))?;
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(settings.github_keys_timeout.0));
                http.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                Source::Url {
                    uri,
                    client: Box::new(Client::builder(TokioExecutor::new()).build(connector)),
                }
            }
        };
        Ok(Self {
            source,
            ttl: settings.github_keys_ttl.0,
            timeout: settings.github_keys_timeout.0,
            held: Mutex::new(Held::default()),
            fetching: tokio::sync::Mutex::new(()),
            reads: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Reads `leaks.github_keys_file` now, so a missing or bad file stops
    /// the start; a URL is fetched when the first report needs a key.
    pub async fn preload(&self) -> Result<(), KeyError> {
        if let Source::File(_) = self.source {
            let keys = self.read().await?;
            let mut held = self.lock();
            held.keys = keys;
            held.read_at = Some(Instant::now());
            held.tried_at = held.read_at;
        }
        Ok(())
    }

    /// Times the list was read.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key named `id`: from the list held while it is fresh, else from
    /// a new read (at most one per [`REFETCH_GAP`], or per TTL when that is
    /// shorter, whatever the reports name).
    pub async fn key(&self, id: &str) -> Result<PublicKey, KeyError> {
        if let Some(found) = self.held_key(id, false) {
            return found;
        }
        let _one = self.fetching.lock().await;
        // Another request may have read the list meanwhile, or tried to.
        if let Some(found) = self.held_key(id, true) {
            return found;
        }
        self.note_try();
        match self.read().await {
            Ok(keys) => {
                self.reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(keys = keys.len(), "secret-scanning keys read");
                let mut held = self.lock();
                held.keys = keys;
                held.read_at = Some(Instant::now());
                held.failed = None;
                find(&held.keys, id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the secret-scanning keys");
                let mut held = self.lock();
                held.failed = Some(e.clone());
                // The last list still answers for the ids it names, for
                // one more TTL once stale.
                if self.within_grace(&held) {
                    find(&held.keys, id)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Whether the last list read may still answer while a new one cannot
    /// be read: for its TTL and one more. A failed read (GitHub down or
    /// rate-limited) must not stop the revocation of real leaks at once;
    /// a key GitHub stopped listing is refused as soon as a list is read
    /// again.
    fn within_grace(&self, held: &Held) -> bool {
        held.read_at
            .is_some_and(|t| t.elapsed() < self.ttl.saturating_mul(2))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_try(&self) {
        self.lock().tried_at = Some(Instant::now());
    }

    /// An answer without a new read, when one can be given: the key while
    /// the list is fresh; "unknown" for an id it lacks, and the last read's
    /// error for a list that is not fresh, while the last try is recent
    /// (within [`REFETCH_GAP`], or the TTL when shorter) — that one only
    /// `after_try` (holding the fetch lock: a try may be under way, and its
    /// list is the answer). `None`: read.
    fn held_key(&self, id: &str, after_try: bool) -> Option<Result<PublicKey, KeyError>> {
        let held = self.lock();
        let fresh = held.read_at.is_some_and(|t| t.elapsed() < self.ttl);
        let recent = held
            .tried_at
            .is_some_and(|t| t.elapsed() < REFETCH_GAP.min(self.ttl));
        match (fresh, find(&held.keys, id)) {
            (true, Ok(k)) => Some(Ok(k)),
            (true, Err(e)) => recent.then_some(Err(e)),
            // Stale, and the last read failed lately: the last list, while
            // it may still answer.
            (false, Ok(k))
                if after_try && recent && held.failed.is_some() && self.within_grace(&held) =>
            {
                Some(Ok(k))
            }
            (false, _) => (after_try && recent).then(|| {
                Err(held.failed.clone().unwrap_or_else(|| {
                    KeyError::Unavailable("the key list is stale; read again shortly".into())
                }))
            }),
        }
    }

    /// One read of the list, bounded in time and size.
    async fn read(&self) -> Result<Vec<PublicKey>, KeyError> {
        let bytes = match &self.source {
            Source::File(path) => {
                let path = path.clone();
                tokio::fs::read(&path).await.map_err(|e| {
                    KeyError::Unavailable(format!("leaks.github_keys_file {}: {e}", path.display()))
                })?
            }
            Source::Url { uri, client } => {
                let req = Request::get(uri.clone())
                    .header(header::ACCEPT, "application/json")
                    // GitHub's API refuses requests without one.
                    .header(header::USER_AGENT, "hawzu-gate")
                    .body(Empty::new())
                    .map_err(|e| KeyError::Unavailable(e.to_string()))?;
                let fetch = async {
                    let res = client
                        .request(req)
                        .await
                        .map_err(|e| KeyError::Unavailable(format!("{uri}: {e}")))?;
                    if !res.status().is_success() {
                        return Err(KeyError::Unavailable(format!(
                            "{uri} answered {}",
                            res.status()
                        )));
                    }
                    Limited::new(res.into_body(), MAX_KEY_LIST)
                        .collect()
                        .await
                        .map(|b| b.to_bytes().to_vec())
                        .map_err(|e| KeyError::Unavailable(format!("{uri}: {e}")))
                };
                tokio::time::timeout(self.timeout, fetch)
                    .await
                    .map_err(|_| {
                        KeyError::Unavailable(format!(
                            "{uri} did not answer within {:?}",
                            self.timeout
                        ))
                    })??
            }
        };
        parse_key_list(&bytes).map_err(|e: KeyListError| KeyError::Unavailable(e.to_string()))
    }
}

fn find(keys: &[PublicKey], id: &str) -> Result<PublicKey, KeyError> {
    keys.iter()
        .find(|k| k.id == id)
        .cloned()
        .ok_or_else(|| KeyError::Unknown(id.chars().take(200).collect()))
}

/// Shared keys.
pub type KeysHandle = Arc<GithubKeys>;
