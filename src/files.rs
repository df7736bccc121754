//! Files the gate trusts with its authority — the admin key, the embedded
//! token store —, and who may have written them. A leaf: imports nothing
//! of the crate.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A directory opened once (a descriptor): judged, and its files opened,
/// through it, never by its name again — which whoever may rename entries
/// of its parent could point at a directory of theirs between the looks.
#[derive(Debug)]
pub struct OpenedDir {
    pub path: PathBuf,
    pub fd: rustix::fd::OwnedFd,
    pub meta: Metadata,
}

impl OpenedDir {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
        Ok(Self {
            path: path.to_owned(),
            fd,
            meta,
        })
    }

    /// [`planted`] for the directory opened, judged in the directory that
    /// holds it (its `..`) as well as in the one its name is in: a
    /// data_dir named through a link into a directory others may write
    /// (`/tmp`) is judged there, not beside the link.
    pub fn planted(&self) -> Option<u32> {
        let holder = rustix::fs::statat(&self.fd, "..", rustix::fs::AtFlags::empty());
        holder
            .ok()
            .and_then(|h| planted_in(self.meta.uid(), h.st_mode))
            .or_else(|| planted(&self.path, &self.meta))
    }

    /// [`planted`] for the entry `name` of the directory opened, described
    /// by `link` (its `lstat`) and `target` (what was opened): another
    /// user's link is theirs, whatever it points at.
    pub fn planted_entry(&self, link_owner: u32, target: &Metadata) -> Option<u32> {
        let mode = self.meta.mode();
        planted_in(link_owner, mode).or_else(|| planted_in(target.uid(), mode))
    }
}

/// The owner of the file at `path` (described by `meta`) when another user
/// may have planted it there: it is neither this process's effective
/// user's nor root's, and the directory holding it lets its group or
/// others create files. Such a file may be a key of theirs, or token
/// records of their choosing. A file of another owner in a directory only
/// its owner writes (an NFS `all_squash` export, a volume whose files
/// belong to another uid) was put there by whoever may write there, as
/// before. Root's files are trusted (a Kubernetes Secret volume's are
/// root's).
pub fn planted(path: &Path, meta: &Metadata) -> Option<u32> {
    foreign(meta.uid(), rustix::process::geteuid().as_raw())?;
    // `.` (or `..`, `/`) names no entry of a parent: judge the directory
    // that holds it, not itself.
    let whole;
    let path = if path.file_name().is_none() {
        whole = std::fs::canonicalize(path).ok()?;
        whole.as_path()
    } else {
        path
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = std::fs::metadata(dir.unwrap_or(Path::new("."))).ok()?;
    planted_in(meta.uid(), dir.mode())
}

/// [`planted`] for a file of `owner` in a directory of mode `dir_mode`,
/// both known already (from descriptors opened, not names).
pub fn planted_in(owner: u32, dir_mode: u32) -> Option<u32> {
    let owner = foreign(owner, rustix::process::geteuid().as_raw())?;
    (dir_mode & 0o022 != 0).then_some(owner)
}

/// Why a file nobody named — found by looking in the working directory —
/// may be another user's: it is owned by another user (not root), others
/// (or a group not the user's own) may write it, or its directory lets
/// them replace it (writable by others, or by a group not the user's own,
/// without the sticky bit). `None`: the user's own, used as named. A
/// symbolic link is judged as itself and as what it points to.
pub fn unclaimed(path: &Path) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    let my_group = rustix::process::getegid().as_raw();
    let link = std::fs::symlink_metadata(path).ok()?;
    let target = std::fs::metadata(path).ok()?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = std::fs::metadata(dir.unwrap_or(Path::new("."))).ok()?;
    let others_write =
        |m: &Metadata| m.mode() & 0o002 != 0 || (m.mode() & 0o020 != 0 && m.gid() != my_group);
    if let Some(owner) = foreign(link.uid(), me).or_else(|| foreign(target.uid(), me)) {
        return Some(format!("it belongs to another user (uid {owner})"));
    }
    if others_write(&target) {
        return Some(format!(
            "another user may write it (mode {:o})",
            target.mode() & 0o7777
        ));
    }
    if others_write(&dir) && dir.mode() & 0o1000 == 0 {
        return Some(format!(
            "its directory lets another user replace it (mode {:o}, no sticky bit)",
            dir.mode() & 0o7777
        ));
    }
    None
}

fn foreign(owner: u32, me: u32) -> Option<u32> {
    (owner != me && owner != 0).then_some(owner)
}

/// Test support: a thread that exchanges two directories
/// (`renameat2(RENAME_EXCHANGE)`) as fast as it can, from when it is
/// started (once it has exchanged them once) until it is dropped — what
/// another user who may rename entries of their parent could do.
#[cfg(test)]
pub(crate) struct Exchanger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(test)]
impl Exchanger {
    #[allow(clippy::unwrap_used)] // tests may panic
    pub(crate) fn start(a: &Path, b: &Path) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, swaps) = (stop.clone(), swaps.clone());
            let (a, b) = (a.to_owned(), b.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        &a,
                        rustix::fs::CWD,
                        &b,
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .unwrap();
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        while swaps.load(Ordering::Relaxed) == 0 {
            // A filesystem without RENAME_EXCHANGE fails the thread.
            assert!(!thread.is_finished(), "the exchanging thread stopped");
            std::thread::yield_now();
        }
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

#[cfg(test)]
impl Drop for Exchanger {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic

    use super::*;

    /// A directory another user made where others may write (`/tmp`),
    /// named through a link of the operator's in a directory only they
    /// write, is judged where it is: theirs. Judged beside the link, it
    /// passed. (Needs root to make another user's directory.)
    #[test]
    fn a_directory_named_through_a_link_is_judged_where_it_is() {
        use std::os::unix::fs::PermissionsExt;
        if !rustix::process::geteuid().is_root() {
            println!("skipped: needs root to make another user's directory");
            return;
        }
        let (shared, own) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::set_permissions(own.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let theirs = shared.path().join("data");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(4242), None).unwrap();
        let named = own.path().join("data");
        std::os::unix::fs::symlink(&theirs, &named).unwrap();
        assert_eq!(OpenedDir::open(&named).unwrap().planted(), Some(4242));
        assert_eq!(OpenedDir::open(&theirs).unwrap().planted(), Some(4242));
        // Ours, so named: trusted.
        let ours = shared.path().join("ours");
        std::fs::create_dir(&ours).unwrap();
        assert_eq!(OpenedDir::open(&ours).unwrap().planted(), None);
    }

    #[test]
    fn only_this_user_and_root_own_a_trusted_file() {
        assert_eq!(foreign(1000, 1000), None, "ours");
        assert_eq!(foreign(0, 1000), None, "root's");
        assert_eq!(foreign(0, 0), None);
        assert_eq!(foreign(4242, 1000), Some(4242));
        assert_eq!(foreign(4242, 0), Some(4242), "root trusts only root");
        assert_eq!(foreign(65532, 0), Some(65532));
    }
}
