//! Change feeds: how a store tells the caches in front of it that records
//! changed, and that they may have missed some.
//!
//! [`ChangeFeed`] is the store's half of cache invalidation: publish a
//! change, follow the changes as a stream of [`Change`]s that says when it
//! was cut off and when it came back. A backend owns its transport (Redis
//! pub/sub in `redis::events`; an in-process channel here for the embedded
//! store); a consumer (the cache) sees only this module. It never decides
//! what a consumer does with a change, and never names a backend.

use std::future::Future;

use tokio::sync::{broadcast, mpsc};

use super::StoreError;
use crate::token::TokenHash;

/// One item of a change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The record stored under this hash changed (created, replaced,
    /// disabled, revoked): a copy held anywhere is stale.
    Token(TokenHash),
    /// The feed follows the store's changes for the first time: changes
    /// made before it were not heard (a follower drops what it held).
    Started,
    /// The feed was cut off: changes made from now on may be missed until
    /// [`Change::Resumed`].
    Interrupted,
    /// The feed follows the changes again, and the store answers reads:
    /// changes made meanwhile may have been missed, so nothing held is to
    /// be trusted.
    Resumed,
}

/// The store's events: what it tells followers, and how to follow them.
/// Both backends implement it; a cache depends on this and nothing else of
/// the backend.
pub trait ChangeFeed: Send + Sync + 'static {
    /// Tells every follower of this store (this gate's and, with a shared
    /// store, every other gate's) that the record under `hash` changed.
    /// The store's own writes already do (all but `touch`); this is for a
    /// change made behind its back.
    fn publish(&self, hash: &TokenHash) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Starts following the changes (from now on): the stream begins with
    /// [`Change::Started`] once it is really following, and runs until
    /// dropped. An error means it can never follow (a bad address).
    fn changes(&self) -> Result<Changes, StoreError>;
}

/// A stream of [`Change`]s; dropping it stops the work that feeds it.
#[derive(Debug)]
pub struct Changes {
    source: String,
    inner: Source,
}

#[derive(Debug)]
enum Source {
    /// Changes made in this process; never interrupted, but a follower
    /// that falls too far behind has missed some.
    Local {
        started: bool,
        rx: broadcast::Receiver<TokenHash>,
    },
    /// Changes passed on by a task that follows a remote source.
    Task {
        rx: mpsc::UnboundedReceiver<Change>,
        task: tokio::task::JoinHandle<()>,
    },
}

impl Changes {
    /// The changes sent on `tx` (see [`LocalFeed`]).
    pub(crate) fn local(source: impl Into<String>, rx: broadcast::Receiver<TokenHash>) -> Self {
        Self {
            source: source.into(),
            inner: Source::Local { started: false, rx },
        }
    }

    /// The changes `task` sends on the other end of `rx`; the task is
    /// stopped when this stream is dropped.
    pub(crate) fn from_task(
        source: impl Into<String>,
        rx: mpsc::UnboundedReceiver<Change>,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            source: source.into(),
            inner: Source::Task { rx, task },
        }
    }

    /// What is followed, for logs (the Redis channel; `local`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The next change; `None` once the feed has ended for good.
    pub async fn next(&mut self) -> Option<Change> {
        match &mut self.inner {
            Source::Local { started, rx } => {
                if !*started {
                    *started = true;
                    return Some(Change::Started);
                }
                match rx.recv().await {
                    Ok(hash) => Some(Change::Token(hash)),
                    // Fell behind: some changes were overwritten unseen.
                    Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Resumed),
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            }
            Source::Task { rx, .. } => rx.recv().await,
        }
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        if let Source::Task { task, .. } = &self.inner {
            task.abort();
        }
    }
}

/// Changes made in this process, for a store no other process writes (the
/// embedded one). Sending never waits; with no follower it costs nothing.
#[derive(Debug, Clone)]
pub(crate) struct LocalFeed {
    tx: broadcast::Sender<TokenHash>,
}

/// Changes a slow follower may fall behind by before it is told it missed
/// some ([`Change::Resumed`]).
const LOCAL_BACKLOG: usize = 1024;

impl LocalFeed {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::channel(LOCAL_BACKLOG).0,
        }
    }

    pub(crate) fn publish(&self, hash: &TokenHash) {
        // An error only says nobody follows.
        let _ = self.tx.send(*hash);
    }

    pub(crate) fn changes(&self) -> Changes {
        Changes::local("local", self.tx.subscribe())
    }
}
