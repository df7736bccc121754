//! The invalidation listener: follows the store's change feed and keeps
//! the cache honest — a changed token is dropped, everything is distrusted
//! (read again before its next use) when the feed comes back after an
//! interruption, and the cache says
//! whether it is following (readiness, `pubsub_connected`).
//!
//! It consumes [`Changes`] and never names a backend: how changes travel,
//! and when a feed counts as interrupted, is the store's business.

use std::sync::Arc;

use super::TokenCache;
use crate::store::{Change, ChangeFeed, TokenStore};

/// Follows the changes of `feed` and invalidates `cache` accordingly, until
/// the feed ends (never, for a live store). While the feed is interrupted
/// the cache is kept: cached tokens keep working for their lifetime; when
/// it resumes, the whole cache is distrusted, since changes may have been
/// missed meanwhile (see [`TokenCache::invalidate_all`]).
pub async fn listen_for_invalidations<S: TokenStore, F: ChangeFeed>(
    cache: Arc<TokenCache<S>>,
    feed: F,
) {
    let mut changes = match feed.changes() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalidation listener: cannot follow the store's changes; cache invalidation is off");
            return;
        }
    };
    let channel = changes.source().to_owned();
    cache.set_subscribed(false);
    while let Some(change) = changes.next().await {
        match change {
            Change::Token(hash) => {
                // Counted while following; events heard while a
                // subscription is being checked are acted on, not counted.
                if cache.is_subscribed() {
                    cache.metrics.invalidations.inc();
                }
                cache.invalidate(&hash).await;
            }
            Change::Started => {
                // What was looked up before the first subscription (the
                // doors answer from the start) may have changed unheard.
                cache.invalidate_all();
                tracing::info!(%channel, "invalidation listener subscribed");
                cache.set_subscribed(true);
            }
            Change::Interrupted => cache.set_subscribed(false),
            Change::Resumed => {
                cache.invalidate_all();
                tracing::info!(
                    %channel,
                    "invalidation listener resubscribed; cache distrusted (each token read again before its next use)"
                );
                cache.set_subscribed(true);
            }
        }
    }
}
