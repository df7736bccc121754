//! Files holding secrets that every user of the machine can read: a
//! warning each (logged at start and reload, printed by `check-config`),
//! never a refusal — an operator may have reasons, and a volume's mode is
//! not always the gate's to choose.
//!
//! Read or written by others (the mode's last three bits): a private TLS
//! key, a webhook's `secret_file`, and the config file itself when the
//! admin key is set in it. Readable by the group is left alone: the file's
//! group may be the gate's alone (a Kubernetes `fsGroup` volume with
//! `defaultMode: 0440`).

use std::path::Path;

use super::Origin;
use super::settings::Settings;

/// A warning for each secret-holding file others can read or write.
pub fn exposed_secrets(s: &Settings, origin: &Origin) -> Vec<String> {
    let t = &s.tls;
    let mut files: Vec<(String, &Path)> = [
        ("tls.proxy", &t.proxy),
        ("tls.auth", &t.auth),
        ("tls.grpc", &t.grpc),
        ("tls.admin", &t.admin),
        ("tls.ops", &t.ops),
        ("tls.leaks", &t.leaks),
    ]
    .into_iter()
    .filter_map(|(key, tls)| {
        tls.as_ref()
            .map(|tls| (format!("{key}.key_file"), tls.key_file.as_path()))
    })
    .collect();
    for (i, w) in s.webhooks.iter().enumerate() {
        if let Some(f) = &w.secret_file {
            files.push((format!("webhooks[{i}].secret_file"), f.as_path()));
        }
    }
    if s.admin.key.is_some()
        && let Some(file) = &origin.file
        && origin.of("admin.key").as_deref() == Some(&*file.display().to_string())
    {
        files.push((
            "the config file (it holds admin.key)".into(),
            file.as_path(),
        ));
    }
    files
        .into_iter()
        .filter_map(|(what, path)| {
            let mode = others_mode(path)?;
            Some(format!(
                "{what} {} can be read by every user of this machine (mode {mode:04o}): chmod o-rwx it (600, or 640 for a group of the gate's own)",
                path.display()
            ))
        })
        .collect()
}

/// The file's mode when others may read or write it; `None` when they may
/// not, or when it cannot be read (the load that opens it says why).
#[cfg(unix)]
fn others_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o006 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn others_mode(_: &Path) -> Option<u32> {
    None
}
