use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hawzu-gate.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn defaults_need_no_file() {
    let l = load_from(None, BTreeMap::new()).unwrap();
    let s = l.settings;
    assert_eq!(s.data_dir, PathBuf::from("./hawzu-gate-data"));
    assert_eq!(s.listen.auth.to_string(), "127.0.0.1:8081");
    assert_eq!(s.listen.admin.to_string(), "127.0.0.1:9091");
    assert_eq!(s.store.backend, Backend::Embedded);
    assert_eq!(s.store.timeout.0, Duration::from_millis(250));
    assert_eq!(s.store.redis.key_prefix, "hawzu-gate:v1:");
    assert!(s.admin.key.is_none());
}

#[test]
fn file_then_env_override() {
    let (_d, path) = file(
        r#"
data_dir = "/tmp/x"
[store]
backend = "redis"
timeout = "1s"
[store.redis]
url = "redis://127.0.0.1:6380"
[roles]
execution_runner = ["executions:read", "executions:write"]
"#,
    );
    let l = load_from(
        Some(&path),
        env(&[
            ("HAWZU_GATE__STORE__REDIS__KEY_PREFIX", "t1:"),
            ("HAWZU_GATE__LISTEN__AUTH", "127.0.0.1:18081"),
            ("HAWZU_GATE__STORE__TIMEOUT", "500ms"),
            ("OTHER", "ignored"),
        ]),
    )
    .unwrap();
    let s = &l.settings;
    assert_eq!(s.store.backend, Backend::Redis);
    assert_eq!(s.store.redis.url, "redis://127.0.0.1:6380");
    assert_eq!(s.store.redis.key_prefix, "t1:");
    assert_eq!(s.store.timeout.0, Duration::from_millis(500));
    assert_eq!(s.listen.auth.port(), 18081);
    assert!(l.policy.roles.get("execution_runner").is_some());
}

#[test]
fn unknown_key_in_file_names_key_and_file() {
    let (_d, path) = file("[store]\nbakend = \"redis\"\n");
    let err = load_from(Some(&path), BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("bakend"), "{err}");
}

#[test]
fn unknown_top_level_key_is_refused() {
    let (_d, path) = file("colour = \"blue\"\n");
    let err = load_from(Some(&path), BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn malformed_duration_names_key_and_accepted_form() {
    let (_d, path) = file("[store]\ntimeout = \"fast\"\n");
    let err = load_from(Some(&path), BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("store.timeout"), "{err}");
    assert!(err.contains("250ms"), "{err}");
}

#[test]
fn malformed_address_in_env_names_the_variable() {
    let err = load_from(None, env(&[("HAWZU_GATE__LISTEN__ADMIN", "localhost")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("HAWZU_GATE__LISTEN__ADMIN"), "{err}");
    assert!(err.contains("listen.admin"), "{err}");
}

#[test]
fn unknown_env_key_is_refused() {
    let err = load_from(None, env(&[("HAWZU_GATE__STORE__BACKNED", "redis")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("HAWZU_GATE__STORE__BACKNED"), "{err}");
    assert!(err.contains("backned"), "{err}");
}

#[test]
fn bad_backend_value_lists_the_accepted_ones() {
    let err = load_from(None, env(&[("HAWZU_GATE__STORE__BACKEND", "postgres")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("embedded") && err.contains("redis"), "{err}");
}

#[test]
fn custom_role_with_unknown_permission_is_a_startup_error() {
    let (_d, path) = file("[roles]\nrunner = [\"executions:run\"]\n");
    let err = load_from(Some(&path), BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("roles:"), "{err}");
    assert!(err.contains("unknown action `run`"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn short_admin_key_is_refused_without_echoing_it() {
    let err = load_from(None, env(&[("HAWZU_GATE__ADMIN__KEY", "hunter2")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("admin.key"), "{err}");
    assert!(err.contains("HAWZU_GATE__ADMIN__KEY"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn redis_url_password_is_redacted() {
    assert_eq!(
        redact_url("redis://:s3cret@host:6379/0"),
        "redis://:***@host:6379/0"
    );
    assert_eq!(
        redact_url("rediss://user:s3cret@host"),
        "rediss://user:***@host"
    );
    assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    let s = RedisSettings {
        url: "redis://:s3cret@host".into(),
        key_prefix: "p:".into(),
        ..RedisSettings::default()
    };
    assert!(!format!("{s:?}").contains("s3cret"));
}

#[test]
fn missing_file_is_named() {
    let err = load_from(Some(Path::new("/nonexistent/hawzu.toml")), BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/hawzu.toml"), "{err}");
}

#[test]
fn custom_rules_come_first_and_are_checked() {
    let (_d, path) = file(
        r#"
[[policy.rules]]
path = "/api/v1/workspaces/{workspace}/projects/{project}/executions/*/start"
methods = ["POST"]
permission = "executions:write"
"#,
    );
    let l = load_from(Some(&path), BTreeMap::new()).unwrap();
    let rules = l.policy.rules.rules();
    assert_eq!(rules[0].origin, "policy.rules[0]");
    assert!(rules.len() > 1, "defaults appended");

    let (_d, path) = file(
        "[[policy.rules]]\npath = \"/x\"\nmethods = [\"GET\"]\npermission = \"executions:run\"\n",
    );
    let err = load_from(Some(&path), BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("policy.rules[0]:"), "{err}");
    assert!(err.contains("unknown action `run`"), "{err}");

    let (_d, path) = file(
        "[policy]\ndefault_rules = false\n[[policy.rules]]\npath = \"/x/**/y\"\nmethods = [\"GET\"]\npermission = \"reports:read\"\n",
    );
    let err = load_from(Some(&path), BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`**` may only be the last segment"), "{err}");
}
