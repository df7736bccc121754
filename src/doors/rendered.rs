//! Identity headers rendered once per door thread for each token, grant,
//! permission and project, then cloned into every answer or forwarded
//! request that carries them.
//!
//! Rendering costs a header-safety check and a copy per value and a hashed
//! insert per name: 2.7k of a forward-auth answer's 23k instructions
//! (benches/load/instructions.py). A clone of the rendered map costs two
//! allocations and a reference count per value. The map is its thread's
//! own: on the door threads (one single-threaded runtime each, the
//! upstream pool's connections included) its values' clones are written
//! and dropped on the thread that rendered them, so no count is a cache
//! line two threads take turns on (see [`crate::headers::copied`]).
//!
//! Never stale: an entry holds the cached record it was rendered from, so
//! while the entry lives that record's address names it alone; a token
//! changed in the store is a new cached record, at a new address. The
//! names' configuration is a key too ([`IdentityHeaders::generation`]).
//! Bounded: [`SLOTS`] entries per thread, a new one replacing whatever held
//! its slot.

use std::cell::RefCell;
use std::sync::Arc;

use http::HeaderMap;

use crate::cache::CachedRecord;
use crate::decide::{Grant, Principal};
use crate::headers::{HAWZU_TOKEN_EXPIRES, IdentityHeaders, copied};
use crate::policy::roles::Permission;

/// Entries per thread.
pub const SLOTS: usize = 64;

/// Which headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rendered {
    /// What the API receives: the identity headers.
    Upstream,
    /// A forward-auth allow: the identity headers, and `Hawzu-Token-Expires`
    /// for a proxy that copies it to its client.
    Answer,
}

struct Entry {
    record: Arc<CachedRecord>,
    grant: Grant,
    permission: Permission,
    project: Option<Box<str>>,
    generation: u64,
    kind: Rendered,
    map: Arc<HeaderMap>,
}

impl Entry {
    fn is_for(&self, headers: &IdentityHeaders, p: &Principal<'_>, kind: Rendered) -> bool {
        Arc::ptr_eq(&self.record, &p.record)
            && self.grant == p.grant
            && self.permission == p.permission
            && self.project.as_deref() == p.project
            && self.generation == headers.generation()
            && self.kind == kind
    }
}

thread_local! {
    static MEMO: RefCell<Box<[Option<Entry>]>> =
        RefCell::new((0..SLOTS).map(|_| None).collect());
}

/// The headers `kind` for the allowed request of `p`, rendered by
/// `headers` on this thread at most once while the entry lives.
pub fn rendered(headers: &IdentityHeaders, p: &Principal<'_>, kind: Rendered) -> Arc<HeaderMap> {
    use std::hash::BuildHasher;
    let slot = foldhash::fast::FixedState::default().hash_one((
        Arc::as_ptr(&p.record) as usize,
        p.grant,
        p.permission,
        p.project,
        kind,
    )) as usize
        % SLOTS;
    MEMO.with_borrow_mut(|memo| match &memo[slot] {
        Some(e) if e.is_for(headers, p, kind) => e.map.clone(),
        _ => {
            let map = Arc::new(render(headers, p, kind));
            memo[slot] = Some(Entry {
                record: p.record.clone(),
                grant: p.grant,
                permission: p.permission,
                project: p.project.map(Into::into),
                generation: headers.generation(),
                kind,
                map: map.clone(),
            });
            map
        }
    })
}

fn render(headers: &IdentityHeaders, p: &Principal<'_>, kind: Rendered) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(8);
    headers.insert(&mut h, p);
    if kind == Rendered::Answer
        && let Some(v) = p.record.expires_header()
    {
        h.insert(HAWZU_TOKEN_EXPIRES, copied(v));
    }
    h
}

#[cfg(test)]
#[path = "rendered_tests.rs"]
mod tests;
