//! The embedded store: a redb file under `data_dir`, for a single gate.
//!
//! redb is synchronous, so every call runs on tokio's blocking pool and the
//! async caller waits at most the configured timeout. Writes are ACID and
//! durable when they return; the file survives restarts. Its change feed is
//! local: the changes made through this process, never interrupted (one
//! gate owns the file).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::audit::AuditLog;
use super::feed::LocalFeed;
use super::list::{Batch, readable};
use super::{
    ChangeFeed, Changes, Cursor, ListQuery, Page, StoreError, Stored, TokenStore, created_ms,
    paginate,
};
use crate::audit::{AuditEvent, AuditPage, AuditQuery, DEFAULT_MAX_EVENTS, PageBuilder, Position};
use crate::token::{TokenHash, TokenId, TokenRecord};

/// File name of the database inside `data_dir`.
pub const FILE_NAME: &str = "tokens.redb";

/// hash → record JSON.
const TOKENS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("tokens");
/// token id → hash.
const IDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("ids");
/// (workspace, created ms, id): the per-workspace index.
const BY_WORKSPACE: TableDefinition<'_, (&str, u64, &str), ()> =
    TableDefinition::new("by_workspace");
/// (created ms, id): every token.
const ALL: TableDefinition<'_, (u64, &str), ()> = TableDefinition::new("all");
/// (token id, hour) → (allowed, refused): usage per token per hour
/// (`embedded_usage`).
pub(super) const USAGE_HOURS: TableDefinition<'_, (&str, u32), (u64, u64)> =
    TableDefinition::new("usage_hours");
/// token id → JSON of its recent clients and last refusal.
pub(super) const USAGE_RECENT: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("usage_recent");
/// (ms, seq) → audit event JSON: the audit log, oldest first.
pub(super) const AUDIT: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("audit");
/// (workspace id, ms, seq): the audit log's events by workspace, so that
/// a workspace's pages read its own events only (a tenant's page never
/// stops on, nor hands back the position of, another's event).
pub(super) const AUDIT_BY_WORKSPACE: TableDefinition<'_, (&str, u64, u64), ()> =
    TableDefinition::new("audit_by_workspace");
/// `"to"` → (ms, seq): the last audit event indexed by workspace; behind
/// the log's last event when a version without the index wrote to it.
const AUDIT_INDEXED: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("audit_indexed");
/// webhook name → (ms, seq): the last audit event done for it
/// (`embedded_outbox`).
pub(super) const WEBHOOK_CURSORS: TableDefinition<'_, &str, (u64, u64)> =
    TableDefinition::new("webhook_cursors");
/// notice key → until (ms): notices written once (`embedded_outbox`).
pub(super) const NOTICES: TableDefinition<'_, &str, u64> = TableDefinition::new("notices");

/// Index entries read per blocking call while listing.
const SCAN_BATCH: usize = 256;

/// A token store in one local file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Handle>,
    path: PathBuf,
    pub(super) read_timeout: Duration,
    pub(super) write_timeout: Duration,
    /// Every change written through any clone of this store.
    feed: LocalFeed,
    /// The hour whose usage past retention was last pruned.
    pub(super) pruned_hour: Arc<AtomicU32>,
    /// The minute whose lapsed notice claims were last pruned.
    pub(super) pruned_minute: Arc<AtomicU64>,
    /// The audit log keeps about this many events (`audit.max_events`).
    audit_max: u64,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Opens `name` in `dir` (the data_dir, opened once and judged: see
/// [`crate::files::OpenedDir`]) for reading and writing, readable by its
/// owner only: created empty with mode 0600 when absent (redb initializes
/// an empty file), whatever the umask, and tightened when present and open
/// to others (names, the audit log and clients' addresses live in it). The
/// file is judged as the one opened, through the directory opened: never
/// by a name that another user could point elsewhere meanwhile.
fn open_owner_only(dir: &crate::files::OpenedDir, name: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let rw = OFlags::RDWR | OFlags::CLOEXEC;
    match rustix::fs::openat(
        &dir.fd,
        name,
        rw | OFlags::CREATE | OFlags::EXCL,
        Mode::RUSR | Mode::WUSR,
    ) {
        Ok(fd) => return Ok(std::fs::File::from(fd)),
        Err(e) if e != rustix::io::Errno::EXIST => return Err(e.into()),
        Err(_) => {}
    }
    let file = std::fs::File::from(rustix::fs::openat(&dir.fd, name, rw, Mode::empty())?);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    // Whatever the name holds now must be the file opened (or a link to
    // it): a name swapped since is refused, not judged in its place.
    let link = rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(link.st_mode) != FileType::Symlink
        && (link.st_dev, link.st_ino) != (meta.dev(), meta.ino())
    {
        return Err(std::io::Error::other("it changed while it was opened"));
    }
    if let Some(owner) = dir.planted_entry(link.st_uid, &meta) {
        // Whoever put it there could have written token records of their
        // choosing into it.
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "it belongs to uid {owner}, not to this user or root, in a directory others may write: whoever put it there could have written tokens into it; `chown` it to the user the gate runs as"
            ),
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0
        && let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
    {
        // Not ours to change (another owner, a group-writable mount): it
        // opened before, it opens now; say so.
        tracing::warn!(
            path = %dir.path.join(name).display(),
            mode = format!("{:o}", mode & 0o777),
            error = %e,
            "the token store file is open to other users and cannot be made 0600"
        );
    }
    Ok(file)
}

/// The open file, and its reopening after an I/O error: redb then refuses
/// every later call ("Previous I/O error occurred") until the file is
/// opened again — a disk that was full once, or a write past `ulimit -f`,
/// would stop every revoke until the gate restarted.
struct Handle {
    /// `None` while being reopened (or when reopening failed: the next
    /// call tries again).
    current: std::sync::RwLock<Option<Arc<Database>>>,
    /// One reopening at a time, and when the last one that found none
    /// open began (those are tried at most every [`REOPEN_PAUSE`]).
    reopening: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// The least time between two tries to open a file that could not be
/// opened again: each call meanwhile is refused at once.
const REOPEN_PAUSE: Duration = Duration::from_millis(200);

/// How an error that stopped the file starts its text (see [`unavailable`]).
const STOPPED: &str = "the token store file failed an I/O";

pub(super) fn unavailable(e: impl Into<redb::Error>) -> StoreError {
    let e = e.into();
    match e {
        // The file takes no more calls until reopened ([`Handle`]).
        redb::Error::Io(_) | redb::Error::PreviousIo => {
            StoreError::Unavailable(format!("{STOPPED}: {e}"))
        }
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// Opens (or creates) `<data_dir>/tokens.redb`, owner-only, its tables
/// made; blocking.
fn open_file(data_dir: &Path) -> Result<Database, StoreError> {
    let cannot = |e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!(
            "cannot open {}: {e}",
            data_dir.join(FILE_NAME).display()
        ))
    };
    // The data_dir judged as the directory the file is opened from (the
    // start judged it by name, before).
    let dir = crate::files::OpenedDir::open(data_dir).map_err(|e| cannot(&e))?;
    if let Some(owner) = dir.planted() {
        return Err(cannot(&format!(
            "its directory belongs to uid {owner}, not to this user or root, in a directory others may write"
        )));
    }
    let file = open_owner_only(&dir, FILE_NAME).map_err(|e| cannot(&e))?;
    let backend = redb::backends::FileBackend::new(file).map_err(|e| cannot(&e))?;
    let db = Database::builder()
        .create_with_backend(backend)
        .map_err(|e| cannot(&e))?;
    // Create the tables so that read transactions always find them.
    let txn = db.begin_write().map_err(unavailable)?;
    txn.open_table(TOKENS).map_err(unavailable)?;
    txn.open_table(IDS).map_err(unavailable)?;
    txn.open_table(BY_WORKSPACE).map_err(unavailable)?;
    txn.open_table(ALL).map_err(unavailable)?;
    txn.open_table(USAGE_HOURS).map_err(unavailable)?;
    txn.open_table(USAGE_RECENT).map_err(unavailable)?;
    txn.open_table(AUDIT).map_err(unavailable)?;
    txn.open_table(AUDIT_BY_WORKSPACE).map_err(unavailable)?;
    // A file written by a version without the index (first, or between
    // two with it): its events indexed now.
    index_audit_log(&txn)?;
    txn.open_table(WEBHOOK_CURSORS).map_err(unavailable)?;
    txn.open_table(NOTICES).map_err(unavailable)?;
    txn.commit().map_err(unavailable)?;
    Ok(db)
}

impl EmbeddedStore {
    /// Opens (or creates) `<data_dir>/tokens.redb`. Reads wait at most
    /// `timeout`; writes, which sync to disk, at most ten times that.
    pub async fn open(data_dir: &Path, timeout: Duration) -> Result<Self, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let dir = data_dir.to_owned();
        let db = tokio::task::spawn_blocking(move || open_file(&dir))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        Ok(Self {
            db: Arc::new(Handle {
                current: std::sync::RwLock::new(Some(Arc::new(db))),
                reopening: tokio::sync::Mutex::new(None),
            }),
            path,
            read_timeout: timeout,
            write_timeout: timeout * 10,
            feed: LocalFeed::new(),
            pruned_hour: Arc::new(AtomicU32::new(0)),
            pruned_minute: Arc::new(AtomicU64::new(0)),
            audit_max: DEFAULT_MAX_EVENTS,
        })
    }

    /// Keeps the last `n` audit events (at least one).
    pub fn with_audit_max_events(mut self, n: u64) -> Self {
        self.audit_max = n.max(1);
        self
    }

    /// How many audit events the log keeps.
    pub(super) fn audit_max(&self) -> u64 {
        self.audit_max
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the blocking pool, bounded by `limit`.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = match self.database() {
            Some(db) => db,
            None => {
                // Boxed: the rare path keeps every call's future shallow.
                Box::pin(self.reopen(None)).await;
                self.database().ok_or_else(|| {
                    StoreError::Unavailable(format!("{STOPPED} and cannot be opened again yet"))
                })?
            }
        };
        let opened = Arc::as_ptr(&db) as usize;
        let task = tokio::task::spawn_blocking(move || f(&db));
        let result = match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(StoreError::Unavailable(join.to_string())),
            Err(_) => Err(StoreError::Timeout(limit)),
        };
        if matches!(&result, Err(StoreError::Unavailable(m)) if m.starts_with(STOPPED)) {
            Box::pin(self.reopen(Some(opened))).await;
        }
        result
    }

    /// The file as open now; `None` while it is being opened again.
    fn database(&self) -> Option<Arc<Database>> {
        self.db
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Opens the file again after the I/O error a call on `failed` (the
    /// address of the one it used; `None`: none is open) met: once every
    /// other call has let go of it (at most two write timeouts: one still
    /// running then keeps it, and the next failure tries again), the old
    /// one is dropped and the file opened anew. A failure to open leaves
    /// none open: the next call tries again.
    async fn reopen(&self, failed: Option<usize>) {
        let Ok(mut last) = self.db.reopening.try_lock() else {
            return; // another call is at it
        };
        let now = tokio::time::Instant::now();
        if failed.is_none() && last.is_some_and(|at| now < at + REOPEN_PAUSE) {
            return;
        }
        *last = failed.is_none().then_some(now);
        let old = {
            let mut current = self
                .db
                .current
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            match (current.as_ref(), failed) {
                (Some(db), Some(f)) if Arc::as_ptr(db) as usize == f => current.take(),
                (None, _) => None,
                // Opened again already, by another call.
                (Some(_), _) => return,
            }
        };
        if let Some(mut old) = old {
            let deadline = tokio::time::Instant::now() + self.write_timeout * 2;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still) if tokio::time::Instant::now() < deadline => {
                        old = still;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(still) => {
                        tracing::error!(
                            path = %self.path.display(),
                            "the token store file failed an I/O and is still in use; it will be opened again at the next failure"
                        );
                        *self
                            .db
                            .current
                            .write()
                            .unwrap_or_else(PoisonError::into_inner) = Some(still);
                        return;
                    }
                }
            }
        }
        let dir = self.path.parent().map(Path::to_owned).unwrap_or_default();
        match tokio::task::spawn_blocking(move || open_file(&dir)).await {
            Ok(Ok(db)) => {
                tracing::warn!(
                    path = %self.path.display(),
                    "the token store file failed an I/O (a full disk, a file-size limit?); it was opened again and takes calls"
                );
                *self
                    .db
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
            }
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "the token store file failed an I/O and cannot be opened again yet (a full disk?); the next call tries again"
            ),
            Err(e) => tracing::error!(error = %e, "opening the token store file again stopped"),
        }
    }
}

impl EmbeddedStore {
    /// Compare-and-set of one record: `new` replaces `current` if the file
    /// still holds `current`'s bytes. With `notify`, followers are told
    /// from the blocking task once the write is committed: a write that
    /// lands after its caller stopped waiting (`Timeout`) is told all the
    /// same.
    async fn write(
        &self,
        current: &Stored,
        new: &TokenRecord,
        notify: bool,
    ) -> Result<bool, StoreError> {
        let changed = current.hash;
        let hash = current.hash.0;
        let expected = current.raw.clone();
        let new = new.to_json();
        let feed = notify.then(|| self.feed.clone());
        self.run(self.write_timeout, move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut tokens = txn.open_table(TOKENS).map_err(unavailable)?;
                if !holds(&tokens, &hash, &expected)? {
                    return Ok(false);
                }
                tokens.insert(&hash[..], &new[..]).map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            if let Some(feed) = feed {
                feed.publish(&changed);
            }
            Ok(true)
        })
        .await
    }
}

impl ChangeFeed for EmbeddedStore {
    async fn publish(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.feed.publish(hash);
        Ok(())
    }

    fn changes(&self) -> Result<Changes, StoreError> {
        Ok(self.feed.changes())
    }
}

/// Whether `tokens` holds exactly `expected` under `hash`: the
/// compare of every compare-and-set here.
fn holds(
    tokens: &impl ReadableTable<&'static [u8], &'static [u8]>,
    hash: &[u8; 32],
    expected: &[u8],
) -> Result<bool, StoreError> {
    Ok(tokens
        .get(&hash[..])
        .map_err(unavailable)?
        .is_some_and(|raw| raw.value() == expected))
}

fn read_stored(db: &Database, id: &str) -> Result<Option<Stored>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let ids = txn.open_table(IDS).map_err(unavailable)?;
    let Some(hash) = ids.get(id).map_err(unavailable)? else {
        return Ok(None);
    };
    let hash: [u8; 32] = hash
        .value()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("id index of {id} holds no hash")))?;
    let tokens = txn.open_table(TOKENS).map_err(unavailable)?;
    let Some(raw) = tokens.get(&hash[..]).map_err(unavailable)? else {
        return Ok(None);
    };
    let raw = raw.value().to_vec();
    let record = TokenRecord::from_json(&raw).map_err(StoreError::Corrupt)?;
    Ok(Some(Stored {
        hash: TokenHash(hash),
        record,
        raw,
    }))
}

impl TokenStore for EmbeddedStore {
    async fn get(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        let hash = hash.0;
        self.run(self.read_timeout, move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let tokens = txn.open_table(TOKENS).map_err(unavailable)?;
            match tokens.get(&hash[..]).map_err(unavailable)? {
                None => Ok(None),
                Some(raw) => TokenRecord::from_json(raw.value())
                    .map(Some)
                    .map_err(StoreError::Corrupt),
            }
        })
        .await
    }

    async fn get_stored(&self, hash: &TokenHash) -> Result<Option<Stored>, StoreError> {
        let hash = *hash;
        self.run(self.read_timeout, move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let tokens = txn.open_table(TOKENS).map_err(unavailable)?;
            let Some(raw) = tokens.get(&hash.0[..]).map_err(unavailable)? else {
                return Ok(None);
            };
            let raw = raw.value().to_vec();
            let record = TokenRecord::from_json(&raw).map_err(StoreError::Corrupt)?;
            Ok(Some(Stored { hash, record, raw }))
        })
        .await
    }

    async fn find(&self, id: &TokenId) -> Result<Option<Stored>, StoreError> {
        let id = id.clone();
        self.run(self.read_timeout, move |db| read_stored(db, id.as_str()))
            .await
    }

    async fn create(&self, hash: &TokenHash, record: &TokenRecord) -> Result<(), StoreError> {
        let changed = *hash;
        let hash = hash.0;
        let record = record.clone();
        let feed = self.feed.clone();
        self.run(self.write_timeout, move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut tokens = txn.open_table(TOKENS).map_err(unavailable)?;
                let mut ids = txn.open_table(IDS).map_err(unavailable)?;
                if tokens.get(&hash[..]).map_err(unavailable)?.is_some()
                    || ids.get(record.id.as_str()).map_err(unavailable)?.is_some()
                {
                    return Err(StoreError::Conflict);
                }
                tokens
                    .insert(&hash[..], &record.to_json()[..])
                    .map_err(unavailable)?;
                ids.insert(record.id.as_str(), &hash[..])
                    .map_err(unavailable)?;
                let ms = created_ms(&record);
                txn.open_table(BY_WORKSPACE)
                    .map_err(unavailable)?
                    .insert((record.workspace_id.as_str(), ms, record.id.as_str()), ())
                    .map_err(unavailable)?;
                txn.open_table(ALL)
                    .map_err(unavailable)?
                    .insert((ms, record.id.as_str()), ())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            // A follower may hold a "no such token" for this hash.
            feed.publish(&changed);
            Ok(())
        })
        .await
    }

    async fn replace(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.write(current, new, true).await
    }

    /// One file, written durably at commit: nothing to write again, only
    /// whether the file still holds `current` — and followers told again,
    /// as the Redis store does (the write being confirmed may be one whose
    /// caller gave up waiting).
    async fn confirm(&self, current: &Stored) -> Result<bool, StoreError> {
        let changed = current.hash;
        let hash = current.hash.0;
        let expected = current.raw.clone();
        let holds = self
            .run(self.read_timeout, move |db| {
                let txn = db.begin_read().map_err(unavailable)?;
                let tokens = txn.open_table(TOKENS).map_err(unavailable)?;
                holds(&tokens, &hash, &expected)
            })
            .await;
        if matches!(holds, Ok(true)) {
            self.feed.publish(&changed);
        }
        holds
    }

    /// One write transaction: the record (while it holds `current`), its
    /// id and its index entries.
    async fn remove(&self, current: &Stored) -> Result<bool, StoreError> {
        let changed = current.hash;
        let hash = current.hash.0;
        let expected = current.raw.clone();
        let record = current.record.clone();
        let feed = self.feed.clone();
        self.run(self.write_timeout, move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut tokens = txn.open_table(TOKENS).map_err(unavailable)?;
                if !holds(&tokens, &hash, &expected)? {
                    return Ok(false);
                }
                tokens.remove(&hash[..]).map_err(unavailable)?;
                let mut ids = txn.open_table(IDS).map_err(unavailable)?;
                let ours = ids
                    .get(record.id.as_str())
                    .map_err(unavailable)?
                    .is_some_and(|h| h.value() == &hash[..]);
                if ours {
                    ids.remove(record.id.as_str()).map_err(unavailable)?;
                }
                let ms = created_ms(&record);
                txn.open_table(BY_WORKSPACE)
                    .map_err(unavailable)?
                    .remove((record.workspace_id.as_str(), ms, record.id.as_str()))
                    .map_err(unavailable)?;
                txn.open_table(ALL)
                    .map_err(unavailable)?
                    .remove((ms, record.id.as_str()))
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            feed.publish(&changed);
            Ok(true)
        })
        .await
    }

    /// Not a change to any decision: followers are not told.
    async fn touch(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.write(current, new, false).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        let workspace = query.workspace.as_deref();
        paginate(&query, SCAN_BATCH, |after| {
            let workspace = workspace.map(str::to_owned);
            self.run(self.read_timeout, move |db| {
                scan_batch(db, workspace.as_deref(), after.as_ref())
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(self.read_timeout, |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            txn.open_table(TOKENS).map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

impl AuditLog for EmbeddedStore {
    /// One write transaction: the event at the next position (this
    /// millisecond, or after the last one should the clock have gone
    /// back), then the oldest events beyond `audit_max` dropped.
    async fn append(&self, event: &AuditEvent) -> Result<Position, StoreError> {
        let raw = event.to_stored();
        let max = self.audit_max;
        let now = Position::at(jiff::Timestamp::now());
        self.run(self.write_timeout, move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let position = append_in(&txn, &raw, max, now)?;
            txn.commit().map_err(unavailable)?;
            Ok(position)
        })
        .await
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let query = query.clone();
        self.run(self.read_timeout, move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let log = txn.open_table(AUDIT).map_err(unavailable)?;
            let floor = query.floor();
            if query.cursor.is_some_and(|c| c <= floor) {
                return Ok(PageBuilder::new(&query).end());
            }
            let mut page = PageBuilder::new(&query);
            if let Some(ws) = query.workspace.as_deref() {
                // A workspace's events only, through its index.
                let index = txn.open_table(AUDIT_BY_WORKSPACE).map_err(unavailable)?;
                let from = (ws, floor.ms, floor.seq);
                let range = match query.cursor {
                    Some(c) => index.range(from..(ws, c.ms, c.seq)),
                    None => index.range(from..=(ws, u64::MAX, u64::MAX)),
                }
                .map_err(unavailable)?;
                for entry in range.rev() {
                    let (k, _) = entry.map_err(unavailable)?;
                    let (_, ms, seq) = k.value();
                    let position = Position { ms, seq };
                    let Some(raw) = log.get((ms, seq)).map_err(unavailable)? else {
                        // Dropped with the event; not reached in practice.
                        if page.pass(position) {
                            return Ok(page.cut());
                        }
                        continue;
                    };
                    let event = AuditEvent::from_stored(position, raw.value())
                        .map_err(StoreError::Corrupt)?;
                    // Only this workspace's event is shown here.
                    let full = if event.workspace_id == ws {
                        page.push(position, event)
                    } else {
                        page.pass(position)
                    };
                    if full {
                        return Ok(page.cut());
                    }
                }
                return Ok(page.end());
            }
            let from = (floor.ms, floor.seq);
            let range = match query.cursor {
                Some(c) => log.range(from..(c.ms, c.seq)),
                None => log.range(from..),
            }
            .map_err(unavailable)?;
            for entry in range.rev() {
                let (k, v) = entry.map_err(unavailable)?;
                let (ms, seq) = k.value();
                let position = Position { ms, seq };
                let event =
                    AuditEvent::from_stored(position, v.value()).map_err(StoreError::Corrupt)?;
                if page.push(position, event) {
                    return Ok(page.cut());
                }
            }
            Ok(page.end())
        })
        .await
    }
}

/// Appends `raw` to the audit log in `txn` at the next position (`now`,
/// or after the last one should the clock have gone back), indexed under
/// its workspace, then drops the oldest events beyond `max` (and their
/// index entries).
pub(super) fn append_in(
    txn: &redb::WriteTransaction,
    raw: &[u8],
    max: u64,
    now: Position,
) -> Result<Position, StoreError> {
    let mut log = txn.open_table(AUDIT).map_err(unavailable)?;
    let mut index = txn.open_table(AUDIT_BY_WORKSPACE).map_err(unavailable)?;
    let last = log.last().map_err(unavailable)?.map(|(k, _)| k.value());
    let position = match last {
        Some((ms, seq)) if ms >= now.ms => Position { ms, seq: seq + 1 },
        _ => now,
    };
    log.insert((position.ms, position.seq), raw)
        .map_err(unavailable)?;
    if let Some(ws) = AuditEvent::stored_workspace(raw) {
        index
            .insert((ws.as_str(), position.ms, position.seq), ())
            .map_err(unavailable)?;
    }
    txn.open_table(AUDIT_INDEXED)
        .map_err(unavailable)?
        .insert("to", (position.ms, position.seq))
        .map_err(unavailable)?;
    let mut excess = log.len().map_err(unavailable)?.saturating_sub(max);
    while excess > 0 {
        let Some((k, v)) = log.pop_first().map_err(unavailable)? else {
            break;
        };
        let (ms, seq) = k.value();
        if let Some(ws) = AuditEvent::stored_workspace(v.value()) {
            index.remove((ws.as_str(), ms, seq)).map_err(unavailable)?;
        }
        excess -= 1;
    }
    Ok(position)
}

/// Brings the index by workspace level with the audit log when a version
/// without the index wrote to it (the file's first open by this one, or
/// one after a downgrade): indexes the events after the last one indexed
/// (all of them the first time) and drops the entries of events it
/// trimmed. Nothing to do, and no scan, when the index is level.
fn index_audit_log(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let log = txn.open_table(AUDIT).map_err(unavailable)?;
    let mut index = txn.open_table(AUDIT_BY_WORKSPACE).map_err(unavailable)?;
    let mut indexed = txn.open_table(AUDIT_INDEXED).map_err(unavailable)?;
    let (Some((first, _)), Some((last, _))) = (
        log.first().map_err(unavailable)?,
        log.last().map_err(unavailable)?,
    ) else {
        return Ok(());
    };
    let (first, last) = (first.value(), last.value());
    let to = indexed.get("to").map_err(unavailable)?.map(|v| v.value());
    if to == Some(last) {
        return Ok(());
    }
    let range = match to {
        Some(to) if to >= first => log.range((to.0, to.1)..),
        _ => log.range(first..),
    }
    .map_err(unavailable)?;
    for entry in range {
        let (k, v) = entry.map_err(unavailable)?;
        let (ms, seq) = k.value();
        if let Some(ws) = AuditEvent::stored_workspace(v.value()) {
            index
                .insert((ws.as_str(), ms, seq), ())
                .map_err(unavailable)?;
        }
    }
    index
        .retain(|(_, ms, seq), ()| (ms, seq) >= first)
        .map_err(unavailable)?;
    indexed.insert("to", last).map_err(unavailable)?;
    Ok(())
}

/// Up to [`SCAN_BATCH`] index entries older than `after` (newest first),
/// each with its record (`None` if the index points at nothing).
fn scan_batch(
    db: &Database,
    workspace: Option<&str>,
    after: Option<&Cursor>,
) -> Result<Batch, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let mut entries: Vec<(u64, String)> = Vec::with_capacity(SCAN_BATCH);
    match workspace {
        Some(ws) => {
            let index = txn.open_table(BY_WORKSPACE).map_err(unavailable)?;
            let range = match after {
                Some(c) => index.range((ws, 0, "")..(ws, c.created_ms, c.id.as_str())),
                None => index.range((ws, 0, "")..=(ws, u64::MAX, "")),
            }
            .map_err(unavailable)?;
            for entry in range.rev().take(SCAN_BATCH) {
                let (key, _) = entry.map_err(unavailable)?;
                let (_, ms, id) = key.value();
                entries.push((ms, id.to_owned()));
            }
        }
        None => {
            let index = txn.open_table(ALL).map_err(unavailable)?;
            let range = match after {
                Some(c) => index.range((0, "")..(c.created_ms, c.id.as_str())),
                None => index.range((0, "")..=(u64::MAX, "")),
            }
            .map_err(unavailable)?;
            for entry in range.rev().take(SCAN_BATCH) {
                let (key, _) = entry.map_err(unavailable)?;
                let (ms, id) = key.value();
                entries.push((ms, id.to_owned()));
            }
        }
    }
    let ids = txn.open_table(IDS).map_err(unavailable)?;
    let tokens = txn.open_table(TOKENS).map_err(unavailable)?;
    entries
        .into_iter()
        .map(|(ms, id)| {
            let record = match ids.get(id.as_str()).map_err(unavailable)? {
                None => None,
                Some(hash) => match tokens.get(hash.value()).map_err(unavailable)? {
                    None => None,
                    Some(raw) => readable(&id, raw.value()),
                },
            };
            let id = TokenId::parse(&id)
                .map_err(|_| StoreError::Corrupt(format!("index holds a bad token id {id:?}")))?;
            Ok((Cursor { created_ms: ms, id }, record))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic

    use super::*;

    /// A store file another user put in a directory others may write
    /// could hold that user's tokens: not opened. In a directory only its
    /// owner writes, opened as before. (Needs root to make one; the rule is
    /// `files::planted`.)
    #[tokio::test]
    async fn a_store_file_another_user_planted_is_not_opened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(
            EmbeddedStore::open(dir.path(), Duration::from_secs(5))
                .await
                .unwrap(),
        );
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(dir.path().join(FILE_NAME), Some(4242), None).unwrap();
            let mode = |m| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m));
            mode(0o700).unwrap();
            drop(
                EmbeddedStore::open(dir.path(), Duration::from_secs(5))
                    .await
                    .unwrap(),
            );
            mode(0o777).unwrap();
            let Err(e) = EmbeddedStore::open(dir.path(), Duration::from_secs(5)).await else {
                panic!("opened a file uid 4242 owns")
            };
            assert!(e.to_string().contains("4242"), "{e}");
        }
    }

    /// The data_dir is judged as the directory the store file is opened
    /// from. The start judged it by name (`admin::create_data_dir`), then
    /// opened `<data_dir>/tokens.redb` by name: where the data_dir's parent
    /// lets others rename its entries, another user could exchange their
    /// directory (theirs, 0700, their store inside) for the operator's in
    /// between, and the gate served their token records. Here the caller's
    /// check by name is made as the start makes it, and a thread exchanges
    /// the two directories as fast as it can. (Needs root.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_data_dir_swapped_before_the_store_opens_is_judged_as_the_one_opened() {
        use std::os::unix::fs::PermissionsExt;
        if !rustix::process::geteuid().is_root() {
            println!("skipped: needs root to make another user's directory");
            return;
        }
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let (data, evil) = (shared.path().join("data"), shared.path().join("evil"));
        let scope = Scope::Workspace {
            role: "workspace_manager".into(),
        };
        let theirs = TokenSecret::generate().unwrap().hash();
        for dir in [&data, &evil] {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            let store = EmbeddedStore::open(dir, Duration::from_secs(5))
                .await
                .unwrap();
            if dir == &evil {
                let record = TokenRecord::sample(scope.clone(), Timestamp::now());
                store.create(&theirs, &record).await.unwrap();
            }
            drop(store);
        }
        std::os::unix::fs::chown(evil.join(FILE_NAME), Some(4242), None).unwrap();
        std::os::unix::fs::chown(&evil, Some(4242), None).unwrap();
        let exchanger = crate::files::Exchanger::start(&data, &evil);
        let (mut ours, mut refused, mut wrong) = (0u32, 0u32, 0u32);
        let started = std::time::Instant::now();
        while (ours + refused + wrong < 1_000 || ours == 0 || refused == 0)
            && started.elapsed() < Duration::from_secs(20)
        {
            // The start's check, by name (admin::create_data_dir).
            let named = std::fs::metadata(&data).unwrap();
            if crate::files::planted(&data, &named).is_some() {
                refused += 1;
                continue;
            }
            match EmbeddedStore::open(&data, Duration::from_secs(5)).await {
                Ok(store) => {
                    if store.get(&theirs).await.unwrap().is_some() {
                        wrong += 1;
                    } else {
                        ours += 1;
                    }
                }
                Err(e) => {
                    if refused == 0 {
                        println!("refused: {e}");
                    }
                    refused += 1
                }
            }
        }
        drop(exchanger);
        println!("{ours} ours, {refused} refused, {wrong} theirs");
        assert_eq!(
            wrong, 0,
            "their store was opened {wrong} times ({ours} ours, {refused} refused)"
        );
        assert!(ours > 0 && refused > 0, "{ours} ours, {refused} refused");
    }

    /// A link another user put where the store file goes, in a directory
    /// others may write, pointing at a file root owns: judged as the link
    /// (theirs), never followed — a gate running as root once made the
    /// target 0600 (`/etc/passwd`, say) before the store failed to open.
    #[tokio::test]
    async fn a_link_another_user_planted_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("roots-file");
        std::fs::write(&target, "not a store").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join(FILE_NAME);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(4242), None).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let Err(e) = EmbeddedStore::open(dir.path(), Duration::from_secs(5)).await else {
            panic!("opened through a link uid 4242 owns")
        };
        assert!(e.to_string().contains("4242"), "{e}");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the link's target was changed");
    }
    use crate::store::feed::Change;
    use crate::token::{Scope, TokenSecret};
    use jiff::Timestamp;

    /// One record this gate cannot read is left out of a list, not made
    /// the whole list's failure (as on Redis: tests/store_suite.rs).
    #[tokio::test]
    async fn an_unreadable_record_is_left_out_of_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Duration::from_secs(5))
            .await
            .unwrap();
        let scope = Scope::Workspace {
            role: "workspace_member".into(),
        };
        let now = Timestamp::now();
        let good = TokenRecord::sample(scope.clone(), now);
        let bad = TokenRecord::sample(scope, now);
        let bad_hash = TokenSecret::generate().unwrap().hash();
        store
            .create(&TokenSecret::generate().unwrap().hash(), &good)
            .await
            .unwrap();
        store.create(&bad_hash, &bad).await.unwrap();
        let txn = store.database().unwrap().begin_write().unwrap();
        txn.open_table(TOKENS)
            .unwrap()
            .insert(&bad_hash.0[..], &br#"{"v":9}"#[..])
            .unwrap();
        txn.commit().unwrap();
        let page = store
            .list(crate::store::ListQuery {
                workspace: None,
                cursor: None,
                limit: 10,
                filter: crate::store::ListFilter::all(now),
            })
            .await
            .unwrap();
        let ids: Vec<_> = page.tokens.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, [good.id]);
    }

    /// A write that outlives its caller's wait (the file busy with another
    /// write transaction) still tells the followers once it lands: no
    /// cache may keep the record it replaced until its lifetime ends.
    #[tokio::test]
    async fn a_write_that_lands_after_its_timeout_still_tells_the_followers() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Duration::from_millis(20))
            .await
            .unwrap();
        let secret = TokenSecret::generate().unwrap();
        let record = TokenRecord::sample(
            Scope::Workspace {
                role: "workspace_member".into(),
            },
            Timestamp::now(),
        );
        store.create(&secret.hash(), &record).await.unwrap();
        let current = store.find(&record.id).await.unwrap().unwrap();
        let mut changes = store.changes().unwrap();
        assert!(matches!(changes.next().await, Some(Change::Started)));

        // Another write transaction holds the file past the write timeout.
        let db = store.database().unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let txn = db.begin_write().unwrap();
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            txn.abort().unwrap();
        });
        held_rx.recv().unwrap();
        let revoked = TokenRecord {
            revoked_at: Some(Timestamp::now()),
            revoked_by: Some("admin".into()),
            ..record.clone()
        };
        let answer = store.replace(&current, &revoked).await;
        assert!(matches!(answer, Err(StoreError::Timeout(_))), "{answer:?}");
        go_tx.send(()).unwrap();
        holder.join().unwrap();

        // The revoke lands after its caller gave up, and is told.
        let told = tokio::time::timeout(Duration::from_secs(5), changes.next()).await;
        assert!(
            matches!(told, Ok(Some(Change::Token(h))) if h == current.hash),
            "{told:?}"
        );
        assert_eq!(
            store.find(&record.id).await.unwrap().unwrap().record,
            revoked
        );
    }
}
