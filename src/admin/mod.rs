//! The token management plane: the admin HTTP API, the client the CLI uses
//! (`client`), the wire format they share (`wire`), and the admin key.
//!
//! The API is an axum router served by the gate's own listener: `api` (the
//! service), `state` (what handlers share), `routes` (the table, the
//! router, who may get in), `caller` (who is asking; `may_reach`), `tokens`,
//! `change` (rotate, update), `explain`, `roles` and `audit` (the handlers;
//! `audit` also records every change's event), `extract`
//! (bodies, path ids, answers), `error` (every
//! refusal, rendered in one place).
//!
//! The admin key is compared by hash in constant time and never logged.
//! With no key configured, the server generates one into
//! `<data_dir>/admin.key` (mode 0600), where the CLI finds it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::token::value::fill_base62;

pub mod api;
mod audit;
mod caller;
mod change;
pub mod client;
mod console;
mod error;
mod explain;
mod extract;
mod roles;
mod routes;
mod state;
mod tokens;
mod usage;
pub mod wire;

pub use error::ApiError;

/// File name of the generated admin key inside `data_dir`.
pub const KEY_FILE: &str = "admin.key";
/// Environment variable the CLI reads the admin key from.
pub const KEY_ENV: &str = "HAWZU_GATE_ADMIN_KEY";
const KEY_PREFIX: &str = "hwzadm_";
const KEY_RANDOM_LEN: usize = 43;
const KEY_HASH_CONTEXT: &str = "hawzu-gate admin key v1";

/// The admin key as the server holds it: a hash, compared in constant time.
#[derive(Clone)]
pub struct AdminKey {
    hash: [u8; 32],
    /// The key has the generated form (`hwzadm_` and 43 letters and
    /// digits: 256 random bits), so no limit on guessing it is needed.
    unguessable: bool,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(***)")
    }
}

impl AdminKey {
    pub fn new(secret: &str) -> Self {
        let unguessable = secret.strip_prefix(KEY_PREFIX).is_some_and(|random| {
            random.len() == KEY_RANDOM_LEN && random.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        Self {
            hash: blake3::derive_key(KEY_HASH_CONTEXT, secret.as_bytes()),
            unguessable,
        }
    }

    /// Whether `presented` is the key. Time does not depend on where the
    /// two differ, nor on their lengths.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let h = blake3::derive_key(KEY_HASH_CONTEXT, presented);
        h.ct_eq(&self.hash).into()
    }

    /// Whether the key has the generated form (256 random bits).
    pub fn unguessable(&self) -> bool {
        self.unguessable
    }

    /// Whether `presented` is the key *and* the key has the generated form
    /// (256 random bits): what the wrong-key limit may let through, since
    /// guessing it is hopeless however fast it is tried. A key an operator
    /// chose may be weaker, and stays under the limit. At most 1 KiB of
    /// what is presented is hashed.
    pub fn verify_unguessable(&self, presented: &[u8]) -> bool {
        self.unguessable && presented.len() <= 1024 && self.verify(presented)
    }
}

/// Why the admin key could not be had.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot create data_dir {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("cannot open data_dir {path}: {source}")]
    DataDirOpen { path: PathBuf, source: io::Error },
    #[error(
        "data_dir {path} belongs to uid {owner}, not to this user or root, in a directory others may write: whoever made it there chose its key and token records; use a data_dir of this user's (`chown` it, or set data_dir elsewhere)"
    )]
    DataDirOwner { path: PathBuf, owner: u32 },
    #[error("cannot read the admin key {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the admin key {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "the admin key {path} can be read or written by its group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "the admin key {path} belongs to uid {owner}, not to this user or root, in a directory others may write: whoever put it there chose the key; `chown` it to the user the gate runs as, or delete it and a new key is made at start"
    )]
    Owner { path: PathBuf, owner: u32 },
    #[error("the admin key file {path} is empty or not one line of text")]
    Empty { path: PathBuf },
    #[error(
        "the admin key file {path} must hold at least 32 printable ASCII characters, no spaces (as admin.key must); delete it and a new key is made at start"
    )]
    Weak { path: PathBuf },
    #[error(transparent)]
    Random(#[from] crate::token::value::RandomError),
}

/// Where the server's admin key came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Config,
    File(PathBuf),
    Generated(PathBuf),
}

/// The key from config, else from `<data_dir>/admin.key`, else a new one
/// written there with mode 0600.
pub fn load_or_generate(
    configured: Option<&str>,
    data_dir: &Path,
) -> Result<(AdminKey, KeySource), KeyError> {
    if let Some(k) = configured {
        return Ok((AdminKey::new(k), KeySource::Config));
    }
    let path = data_dir.join(KEY_FILE);
    // The data_dir is opened once, judged as the directory opened, and the
    // key read from it: never by its name again, which whoever may rename
    // entries of its parent could point at a directory of theirs between
    // the looks.
    match DataDir::open(data_dir).and_then(|dir| {
        // The key file's own directory may be one only its maker writes:
        // the data_dir another user made (where anyone may) is theirs too.
        dir.not_planted()?;
        let mut file = KeyFile::open_in(&dir, &path)?;
        let key = file.read()?;
        file.not_planted(&dir)?;
        Ok(key)
    }) {
        Ok(k) => return Ok((AdminKey::new(&k), KeySource::File(path))),
        Err(KeyError::Read { source, .. } | KeyError::DataDirOpen { source, .. })
            if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create_data_dir(data_dir)?;
    let mut buf = [0u8; KEY_RANDOM_LEN];
    fill_base62(&mut buf)?;
    let mut key = String::from(KEY_PREFIX);
    key.extend(buf.iter().map(|&b| b as char));
    write_key_file(data_dir, &path, &key).map_err(|source| KeyError::Write {
        path: path.clone(),
        source,
    })?;
    Ok((AdminKey::new(&key), KeySource::Generated(path)))
}

/// Writes a new key file (mode 0600) that must not exist yet: written whole
/// beside it (a name of this process's own), then linked into place, so a
/// crash never leaves a half-written key file that the next start refuses,
/// and the link, like `create_new`, never replaces a key file that appeared
/// meanwhile. Where the filesystem has no hard links, written in place with
/// `create_new` as before.
fn write_key_file(data_dir: &Path, path: &Path, key: &str) -> io::Result<()> {
    let write = |to: &Path| -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)?;
        file.write_all(format!("{key}\n").as_bytes())?;
        file.sync_all()
    };
    let tmp = data_dir.join(format!("{KEY_FILE}.{}.tmp", std::process::id()));
    // One left by a crashed process of the same id is stale.
    let _ = fs::remove_file(&tmp);
    write(&tmp)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // The new name made durable where the directory can be synced.
            let _ = fs::File::open(data_dir).and_then(|d| d.sync_all());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // No hard links here (vfat, some FUSE and SMB mounts).
        Err(_) => write(path),
    }
}

/// Creates `data_dir` (mode 0700) if it does not exist; refuses one
/// another user may have made (see [`crate::files::planted`]): made in a
/// directory anyone may write (`/tmp`) before the gate's first start, its
/// key file and store would be theirs, in a directory only they write.
pub fn create_data_dir(data_dir: &Path) -> Result<(), KeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|source| KeyError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
    data_dir_is_ours(data_dir)
}

/// Refuses a `data_dir` another user may have made (see
/// [`crate::files::planted`]).
fn data_dir_is_ours(data_dir: &Path) -> Result<(), KeyError> {
    let meta = fs::metadata(data_dir).map_err(|source| KeyError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    match crate::files::planted(data_dir, &meta) {
        Some(owner) => Err(KeyError::DataDirOwner {
            path: data_dir.to_owned(),
            owner,
        }),
        None => Ok(()),
    }
}

/// The data_dir opened once (see [`crate::files::OpenedDir`]): judged, and
/// its key file opened, through it.
struct DataDir(crate::files::OpenedDir);

impl DataDir {
    fn open(path: &Path) -> Result<Self, KeyError> {
        crate::files::OpenedDir::open(path)
            .map(Self)
            .map_err(|source| KeyError::DataDirOpen {
                path: path.to_owned(),
                source,
            })
    }

    /// Refuses a data_dir another user may have made (see
    /// [`crate::files::planted`]), judged as the directory opened.
    fn not_planted(&self) -> Result<(), KeyError> {
        match self.0.planted() {
            Some(owner) => Err(KeyError::DataDirOwner {
                path: self.0.path.clone(),
                owner,
            }),
            None => Ok(()),
        }
    }
}

/// A key file opened once: its owner and mode are judged, and its key
/// read, from the one file opened (`fstat` of the descriptor), never by
/// its name again, which whoever may write the directory could point
/// elsewhere between a check and the read.
struct KeyFile {
    path: PathBuf,
    file: fs::File,
    meta: fs::Metadata,
}

/// How a key file is opened: for reading, and without waiting (a FIFO put
/// where the key goes would hold the start until someone writes to it).
fn key_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC
}

impl KeyFile {
    /// The key file at `path` (the CLI's: judged only by its mode).
    fn open(path: &Path) -> Result<Self, KeyError> {
        let file = rustix::fs::open(path, key_flags(), rustix::fs::Mode::empty());
        Self::opened(path, file)
    }

    /// The key file of `dir` (the server's), opened through the directory
    /// judged.
    fn open_in(dir: &DataDir, path: &Path) -> Result<Self, KeyError> {
        let file = rustix::fs::openat(&dir.0.fd, KEY_FILE, key_flags(), rustix::fs::Mode::empty());
        Self::opened(path, file)
    }

    fn opened(
        path: &Path,
        file: rustix::io::Result<rustix::fd::OwnedFd>,
    ) -> Result<Self, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = fs::File::from(file.map_err(|e| read(e.into()))?);
        let meta = file.metadata().map_err(read)?;
        if !meta.is_file() {
            return Err(read(io::Error::other("it is not a regular file")));
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            meta,
        })
    }

    /// The key, refusing a file that group or others may read.
    fn read(&mut self) -> Result<String, KeyError> {
        let path = &self.path;
        let mode = self.meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.clone(),
                mode,
            });
        }
        let mut text = String::new();
        io::Read::read_to_string(&mut self.file, &mut text).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        let key = text.trim();
        if key.is_empty() || key.contains(['\n', '\r']) {
            return Err(KeyError::Empty { path: path.clone() });
        }
        // What `admin.key` must be, so a file the operator wrote is no
        // weaker.
        if key.len() < crate::config::MIN_ADMIN_KEY_LEN
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(KeyError::Weak { path: path.clone() });
        }
        Ok(key.to_owned())
    }

    /// Refuses a key file another user may have planted (see
    /// [`crate::files::planted`]) in `dir`, the directory it was opened
    /// from: the server would take their key as the operator's. The CLI
    /// reading it only sends it, and is not asked. The file judged is the
    /// one read; a link to it, by its name in `dir`, is judged as itself
    /// too (another user's link is theirs).
    fn not_planted(&self, dir: &DataDir) -> Result<(), KeyError> {
        use rustix::fs::{AtFlags, FileType};
        use std::os::unix::fs::MetadataExt;
        // Whatever the name holds now must be the file opened (or a link):
        // a name swapped since is refused, not judged in its place; and a
        // file gone since is no reason to make a new key.
        let changed = || KeyError::Read {
            path: self.path.clone(),
            source: io::Error::other("it changed while it was read"),
        };
        let link = rustix::fs::statat(&dir.0.fd, KEY_FILE, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|_| changed())?;
        let is_link = FileType::from_raw_mode(link.st_mode) == FileType::Symlink;
        if !is_link && (link.st_dev, link.st_ino) != (self.meta.dev(), self.meta.ino()) {
            return Err(changed());
        }
        match dir.0.planted_entry(link.st_uid, &self.meta) {
            Some(owner) => Err(KeyError::Owner {
                path: self.path.clone(),
                owner,
            }),
            None => Ok(()),
        }
    }
}

/// Reads a key file, refusing one that group or others may read.
pub fn read_key_file(path: &Path) -> Result<String, KeyError> {
    KeyFile::open(path)?.read()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key file another user put in a directory others may write could
    /// be that user's key: the server refuses it, naming the owner; the
    /// CLI still reads it (it only sends it). In a directory only its owner
    /// writes, it is used as before. (Needs root to make one.)
    #[test]
    fn a_key_file_another_user_planted_is_refused_by_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::write(&path, "k".repeat(40)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_generate(None, dir.path()).is_ok(), "our own");
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
            assert!(
                load_or_generate(None, dir.path()).is_ok(),
                "a directory only we write"
            );
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
            let Err(e) = load_or_generate(None, dir.path()) else {
                panic!("a planted key was taken")
            };
            assert!(e.to_string().contains("4242"), "{e}");
            assert!(read_key_file(&path).is_ok(), "the CLI reads it");
        }
    }

    /// A data directory another user made where anyone may make one
    /// (`/tmp/hawzu-gate-data` before the gate's first start, its mode
    /// 0755 and its files theirs) holds their key and token records: the
    /// key file and store inside it look like "a directory only its owner
    /// writes". Refused at start, naming the owner. (Needs root.)
    #[test]
    fn a_data_dir_another_user_made_where_anyone_may_is_refused() {
        let shared = tempfile::tempdir().unwrap();
        fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let data = shared.path().join("data");
        assert!(create_data_dir(&data).is_ok(), "made by us");
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&data, Some(4242), None).unwrap();
            let Err(e) = create_data_dir(&data) else {
                panic!("a data_dir uid 4242 made in a shared directory was taken")
            };
            assert!(e.to_string().contains("4242"), "{e}");
            assert!(load_or_generate(None, &data).is_err());
            // In a directory only its owner writes (an NFS export, a
            // volume of another uid): used as before.
            fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o755)).unwrap();
            assert!(create_data_dir(&data).is_ok());
        }
        fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o700)).unwrap();
    }

    /// The same data_dir holding a key file already (the attacker's, or
    /// made to look the operator's: owned by them, 0600, in their own 0700
    /// directory) is refused too: the file's own directory is only they
    /// may write, so the file alone passes; the data_dir must not. (Needs
    /// root to make one.)
    #[test]
    fn a_key_in_a_data_dir_another_user_made_is_refused() {
        let shared = tempfile::tempdir().unwrap();
        fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let data = shared.path().join("data");
        create_data_dir(&data).unwrap();
        let path = data.join(KEY_FILE);
        fs::write(
            &path,
            format!("{KEY_PREFIX}{}\n", "t".repeat(KEY_RANDOM_LEN)),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_generate(None, &data).is_ok(), "ours");
        if rustix::process::geteuid().is_root() {
            for p in [&data, &path] {
                std::os::unix::fs::chown(p, Some(4242), None).unwrap();
            }
            let Err(e) = load_or_generate(None, &data) else {
                panic!("the key in a data_dir uid 4242 made in a shared directory was taken")
            };
            assert!(e.to_string().contains("4242"), "{e}");
        }
        fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn generated_key_is_written_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (key, source) = load_or_generate(None, &data).unwrap();
        let path = data.join(KEY_FILE);
        assert_eq!(source, KeySource::Generated(path.clone()));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = read_key_file(&path).unwrap();
        assert!(key.verify(text.as_bytes()));
        assert!(!key.verify(b"wrong"));
        let (again, source) = load_or_generate(None, &data).unwrap();
        assert_eq!(source, KeySource::File(path));
        assert!(again.verify(text.as_bytes()));
        assert_eq!(format!("{key:?}"), "AdminKey(***)");
    }

    #[test]
    fn a_key_write_cut_short_by_a_crash_does_not_stop_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        // What a crash between creating and writing leaves: an empty file.
        let tmp = dir
            .path()
            .join(format!("admin.key.{}.tmp", std::process::id()));
        std::fs::write(&tmp, "").unwrap();
        let (key, source) = load_or_generate(None, dir.path()).unwrap();
        assert!(matches!(source, KeySource::Generated(_)));
        assert!(!tmp.exists());
        let text = read_key_file(&dir.path().join(KEY_FILE)).unwrap();
        assert!(key.verify(text.as_bytes()));
        let (again, source) = load_or_generate(None, dir.path()).unwrap();
        assert!(matches!(source, KeySource::File(_)));
        assert!(again.verify(text.as_bytes()));
    }

    /// Every check of a key file is of the file read. Checked by name and
    /// then read by name, the path could be swapped in between by whoever
    /// may write its directory: a key of theirs read, the operator's file's
    /// owner and mode judged. Here a thread swaps the path, as fast as it
    /// can, between the operator's key and one that must be refused —
    /// another user's in a directory anyone may write (as root, the
    /// server's reading), else one others may read (every reader's) — and
    /// no read may return the refused one's key.
    #[test]
    fn a_key_file_swapped_while_read_is_judged_as_the_file_read() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let ours = format!("{KEY_PREFIX}{}", "o".repeat(KEY_RANDOM_LEN));
        let theirs = format!("{KEY_PREFIX}{}", "t".repeat(KEY_RANDOM_LEN));
        let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
        fs::write(&good, format!("{ours}\n")).unwrap();
        fs::write(&bad, format!("{theirs}\n")).unwrap();
        fs::set_permissions(&good, fs::Permissions::from_mode(0o600)).unwrap();
        let as_server = rustix::process::geteuid().is_root();
        if as_server {
            std::os::unix::fs::chown(&bad, Some(4242), None).unwrap();
            fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        } else {
            fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::hard_link(&good, &path).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let swapper = {
            let (stop, swaps) = (stop.clone(), swaps.clone());
            let (path, tmp) = (path.clone(), dir.path().join("swap"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for from in [&bad, &good] {
                        fs::hard_link(from, &tmp).unwrap();
                        fs::rename(&tmp, &path).unwrap();
                    }
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        while swaps.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        let (mut accepted, mut refused, mut changed, mut wrong) = (0u32, 0u32, 0u32, 0u32);
        let started = std::time::Instant::now();
        // 5,000 reads at least, and both files met (on a loaded machine
        // the swapper may run seldom), within 20 s.
        while (accepted + refused < 5_000 || accepted == 0 || refused == 0)
            && started.elapsed() < std::time::Duration::from_secs(20)
        {
            let key = if as_server {
                load_or_generate(None, dir.path())
                    .map(|(key, _)| {
                        if key.verify(ours.as_bytes()) {
                            &ours
                        } else {
                            &theirs
                        }
                    })
                    .cloned()
            } else {
                read_key_file(&path)
            };
            match key {
                Ok(k) if k == ours => accepted += 1,
                Ok(_) => wrong += 1,
                // Theirs judged as theirs.
                Err(KeyError::Owner { owner: 4242, .. } | KeyError::Permissions { .. }) => {
                    refused += 1
                }
                // The name swapped under the read: refused as changed.
                Err(KeyError::Read { source, .. })
                    if source.to_string().contains("changed while it was read") =>
                {
                    changed += 1
                }
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert_eq!(
            wrong, 0,
            "the refused file's key was read {wrong} times ({accepted} accepted, {refused} refused, {changed} changed)"
        );
        // The race was run: both files were met.
        assert!(
            accepted > 0 && refused > 0,
            "{accepted} accepted, {refused} refused, {changed} changed"
        );
    }

    /// The data_dir is judged as the directory the key was read from. Its
    /// name was judged after the read, and the key file's directory by
    /// name too: where the data_dir's parent lets others rename entries
    /// (writable, no sticky bit), another user could swap their own
    /// directory (theirs, 0700, their 0600 key inside) for the operator's
    /// between those looks, and the server took their key. Here a thread
    /// exchanges the two as fast as it can; no start may take their key.
    /// (Needs root to make another user's directory.)
    #[test]
    fn a_data_dir_swapped_while_its_key_is_read_is_judged_as_the_one_read() {
        if !rustix::process::geteuid().is_root() {
            println!("skipped: needs root to make another user's directory");
            return;
        }
        let shared = tempfile::tempdir().unwrap();
        fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let (data, evil) = (shared.path().join("data"), shared.path().join("evil"));
        let ours = format!("{KEY_PREFIX}{}", "o".repeat(KEY_RANDOM_LEN));
        let theirs = format!("{KEY_PREFIX}{}", "t".repeat(KEY_RANDOM_LEN));
        for (dir, key, owner) in [(&data, &ours, None), (&evil, &theirs, Some(4242))] {
            fs::create_dir(dir).unwrap();
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
            let file = dir.join(KEY_FILE);
            fs::write(&file, format!("{key}\n")).unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&file, owner, None).unwrap();
            std::os::unix::fs::chown(dir, owner, None).unwrap();
        }
        let exchanger = crate::files::Exchanger::start(&data, &evil);
        let (mut accepted, mut refused, mut other, mut wrong) = (0u32, 0u32, 0u32, 0u32);
        let started = std::time::Instant::now();
        while (accepted + refused < 20_000 || accepted == 0 || refused == 0)
            && started.elapsed() < std::time::Duration::from_secs(20)
        {
            match load_or_generate(None, &data) {
                Ok((key, _)) if key.verify(ours.as_bytes()) => accepted += 1,
                Ok(_) => wrong += 1,
                Err(
                    KeyError::DataDirOwner { owner: 4242, .. }
                    | KeyError::Owner { owner: 4242, .. },
                ) => refused += 1,
                Err(e) => {
                    if other == 0 {
                        println!("another refusal: {e}");
                    }
                    other += 1
                }
            }
        }
        drop(exchanger);
        println!("{accepted} accepted, {refused} refused, {other} other refusals, {wrong} wrong");
        assert_eq!(
            wrong, 0,
            "their key was taken {wrong} times ({accepted} accepted, {refused} refused, {other} other refusals)"
        );
        assert!(
            accepted > 0 && refused > 0,
            "{accepted} accepted, {refused} refused, {other} other refusals"
        );
    }

    /// A key file that is not a regular file is refused at once: a FIFO
    /// (another user's, where the key goes) was opened for reading, which
    /// waits for a writer — the gate never started, and neither did the
    /// CLI's command.
    #[test]
    fn a_key_file_that_is_not_a_regular_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let fifo = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_key_file(&fifo).map(drop).map_err(|e| e.to_string()));
        });
        let answer = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading a FIFO as the key file did not end within 5 s");
        let err = answer.unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::write(&path, "hwzadm_0123456789012345678901234567890123\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key_file(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_key_file_shorter_than_a_configured_key_may_be_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        for short in [
            "s3cr3t\n",
            "0123456789012345678901234567890\n",
            "x y z 0123456789012345678901234567890\n",
        ] {
            fs::write(&path, short).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = read_key_file(&path).unwrap_err().to_string();
            assert!(err.contains("at least 32"), "{short}: {err}");
            assert!(!err.contains(short.trim()), "the key is not shown: {err}");
        }
        fs::write(&path, "an-operator-chosen-admin-key-of-40-chars\n").unwrap();
        assert_eq!(
            read_key_file(&path).unwrap(),
            "an-operator-chosen-admin-key-of-40-chars"
        );
    }
}
