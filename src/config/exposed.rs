//! Files holding secrets that every user of the machine can read: a
//! warning each (logged at start and reload, printed by `check-config`),
//! never a refusal — an operator may have reasons, and a volume's mode is
//! not always the gate's to choose.
//!
//! Read or written by others (the mode's last three bits): a private TLS
//! key, a webhook's `secret_file`, and the config file itself when it sets
//! a secret (the admin key, a webhook's secret, a Redis password). Readable by the group is left alone: the file's
//! group may be the gate's alone (a Kubernetes `fsGroup` volume with
//! `defaultMode: 0440`).

use std::path::Path;

use super::origin::Origin;
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
    if let Some(file) = &origin.file {
        let held = held_in(file);
        if !held.is_empty() {
            files.push((
                format!("the config file (it holds {})", held.join(", ")),
                file.as_path(),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    files
        .into_iter()
        .filter(|(_, path)| seen.insert(*path))
        .filter_map(|(what, path)| exposed_file(&what, path))
        .collect()
}

/// The warning for `what` at `path` when every user of the machine may
/// read or write it (the admin key file the gate reads at start too).
pub fn exposed_file(what: &str, path: &Path) -> Option<String> {
    let mode = others_mode(path)?;
    Some(format!(
        "{what} {} can be read or written by every user of this machine (mode {mode:04o}): chmod o-rwx it (600, or 640 for a group of the gate's own)",
        path.display()
    ))
}

/// The secrets the config file itself sets (whatever the environment sets
/// over them): the admin key, a webhook's inline secret, the Sentinel
/// master's password, a Redis URL with credentials.
fn held_in(file: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let Ok(c) = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
    else {
        return Vec::new();
    };
    let mut held: Vec<String> = ["admin.key", "store.redis.sentinel.password"]
        .into_iter()
        .filter(|key| c.get_string(key).is_ok())
        .map(str::to_owned)
        .collect();
    let with_password = |u: &str| crate::redact::redact_url(u) != u;
    if c.get_string("store.redis.url")
        .is_ok_and(|u| with_password(&u))
    {
        held.push("store.redis.url".to_owned());
    }
    if let Ok(nodes) = c.get_array("store.redis.nodes")
        && nodes
            .into_iter()
            .any(|n| n.into_string().is_ok_and(|u| with_password(&u)))
    {
        held.push("store.redis.nodes".to_owned());
    }
    if let Ok(hooks) = c.get_array("webhooks") {
        for (i, hook) in hooks.into_iter().enumerate() {
            if hook.into_table().is_ok_and(|t| t.contains_key("secret")) {
                held.push(format!("webhooks[{i}].secret"));
            }
        }
    }
    held
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
