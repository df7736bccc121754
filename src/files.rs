//! Files the gate trusts with its authority — the admin key, the embedded
//! token store —, and who may have written them. A leaf: imports nothing
//! of the crate.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// The owner of the file `meta` describes when it is neither this
/// process's effective user nor root: that user may have written it (a
/// key of theirs, token records of their choosing), so it is not trusted.
/// Root's files are (a Kubernetes Secret volume's are root's).
pub fn foreign_owner(meta: &Metadata) -> Option<u32> {
    foreign(meta.uid(), rustix::process::geteuid().as_raw())
}

fn foreign(owner: u32, me: u32) -> Option<u32> {
    (owner != me && owner != 0).then_some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

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
