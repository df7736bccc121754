// Over 500 lines on purpose: one test per key check; a reader finds a key's
// test by searching its name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    // Among the other variables set, the one at fault is named alone.
    let err = load_from(
        None,
        env(&[
            ("HAWZU_GATE__LISTEN__ADMIN", "127.0.0.1:19091"),
            ("HAWZU_GATE__LISTEN__PROXY", "127.0.0.1:18080"),
            ("HAWZU_GATE__UPSTREAM__ULR", "http://127.0.0.1:3000"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("environment (HAWZU_GATE__UPSTREAM__ULR):"),
        "{err}"
    );
    assert!(!err.contains("LISTEN"), "{err}");
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
    // No scheme (a typo): everything before the `@` may be a password.
    assert_eq!(redact_url("default:S3cret@redis:6379"), "***@redis:6379");
    assert_eq!(redact_url("redis:/:pw@h"), "***@h");
    assert_eq!(redact_url("svc:pw@api:3000"), "***@api:3000");
    // No `@`, but a `:` that is no port: a password cut short.
    assert_eq!(redact_url("redis://:s3c"), "redis://***");
    assert_eq!(redact_url("redis://u:s3c/0"), "redis://***/0");
    assert_eq!(redact_url("redis://[::1]:6379/0"), "redis://[::1]:6379/0");
    assert_eq!(redact_url("http://h:80/p:q"), "http://h:80/p:q");
    let err = load_from(
        None,
        BTreeMap::from([
            ("HAWZU_GATE__STORE__BACKEND".to_owned(), "redis".to_owned()),
            (
                "HAWZU_GATE__STORE__REDIS__URL".to_owned(),
                "default:S3cret@redis:6379".to_owned(),
            ),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("store.redis.url"), "{err}");
    assert!(!err.contains("S3cret"), "{err}");
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

// === store.redis modes and cache.stale_if_error ===

fn redis_err(toml: &str) -> String {
    let (_d, path) = file(&format!("[store]\nbackend = \"redis\"\n{toml}"));
    load_from(Some(&path), BTreeMap::new())
        .unwrap_err()
        .to_string()
}

#[test]
fn redis_mode_defaults_to_standalone_and_stale_if_error_to_off() {
    let s = load_from(None, BTreeMap::new()).unwrap().settings;
    assert_eq!(s.store.redis.mode, RedisMode::Standalone);
    assert!(s.store.redis.nodes.is_empty());
    assert_eq!(s.cache.stale_if_error.0, Duration::ZERO);
}

#[test]
fn sentinel_mode_needs_a_master_name() {
    let err =
        redis_err("[store.redis]\nmode = \"sentinel\"\nnodes = [\"redis://127.0.0.1:26379\"]\n");
    assert!(
        err.starts_with("store.redis.sentinel.master_name:"),
        "{err}"
    );
    assert!(
        err.contains("required when store.redis.mode is sentinel"),
        "{err}"
    );
}

#[test]
fn sentinel_and_cluster_modes_need_nodes() {
    let err = redis_err(
        "[store.redis]\nmode = \"sentinel\"\n[store.redis.sentinel]\nmaster_name = \"m\"\n",
    );
    assert!(err.starts_with("store.redis.nodes:"), "{err}");
    assert!(err.contains("sentinels"), "{err}");
    let err = redis_err("[store.redis]\nmode = \"cluster\"\n");
    assert!(err.starts_with("store.redis.nodes:"), "{err}");
    assert!(err.contains("cluster nodes"), "{err}");
}

#[test]
fn a_bad_node_url_is_named_by_its_index() {
    let err = redis_err(
        "[store.redis]\nmode = \"cluster\"\nnodes = [\"redis://a:7000\", \"http://:pw@b:7000\"]\n",
    );
    assert!(err.starts_with("store.redis.nodes[1]:"), "{err}");
    // `:pw@`, not `pw`: the temp file's random name may hold those letters.
    assert!(!err.contains(":pw@"), "passwords are redacted: {err}");
    assert!(err.contains(":***@"), "{err}");
}

#[test]
fn nodes_or_sentinel_settings_outside_their_mode_are_refused() {
    let err = redis_err("[store.redis]\nnodes = [\"redis://a:7000\"]\n");
    assert!(err.starts_with("store.redis.nodes:"), "{err}");
    let err = redis_err(
        "[store.redis]\nmode = \"cluster\"\nnodes = [\"redis://a:7000\"]\n[store.redis.sentinel]\nmaster_name = \"m\"\n",
    );
    assert!(err.starts_with("store.redis.sentinel:"), "{err}");
    let err = redis_err(
        "[store.redis]\nmode = \"sentinel\"\nnodes = [\"redis://a:26379\"]\n[store.redis.sentinel]\nmaster_name = \"m\"\n[store.redis.cluster]\nreplica_acks = 1\n",
    );
    assert!(err.starts_with("store.redis.cluster:"), "{err}");
}

#[test]
fn a_bad_redis_mode_lists_the_accepted_ones() {
    let err = redis_err("[store.redis]\nmode = \"replicated\"\n");
    assert!(err.contains("standalone, sentinel or cluster"), "{err}");
}

#[test]
fn cluster_nodes_and_stale_if_error_come_from_the_environment() {
    let s = load_from(
        None,
        env(&[
            ("HAWZU_GATE__STORE__BACKEND", "redis"),
            ("HAWZU_GATE__STORE__REDIS__MODE", "cluster"),
            (
                "HAWZU_GATE__STORE__REDIS__NODES",
                "redis://a:7000,redis://b:7000,redis://c:7000",
            ),
            ("HAWZU_GATE__CACHE__STALE_IF_ERROR", "30s"),
        ]),
    )
    .unwrap()
    .settings;
    assert_eq!(s.store.redis.mode, RedisMode::Cluster);
    assert_eq!(s.store.redis.nodes.len(), 3);
    assert_eq!(s.cache.stale_if_error.0, Duration::from_secs(30));
}

/// A password may hold a comma: the list is split only where a URL
/// starts, and an address that cannot be read is never echoed with a
/// piece of a password in it. Before, `redis://:s3c,r3t@r0:6379` became
/// two "nodes" and the error showed `redis://:s3c`.
#[test]
fn a_comma_in_a_node_password_neither_splits_the_node_nor_reaches_the_error() {
    let nodes = |value: &str| {
        load_from(
            None,
            env(&[
                ("HAWZU_GATE__STORE__BACKEND", "redis"),
                ("HAWZU_GATE__STORE__REDIS__MODE", "cluster"),
                ("HAWZU_GATE__STORE__REDIS__NODES", value),
            ]),
        )
        .map(|l| l.settings.store.redis.nodes)
        .map_err(|e| e.to_string())
    };
    assert_eq!(
        nodes("redis://:s3c,r3t@r0:6379, redis://:p,w@r1:6379").unwrap(),
        ["redis://:s3c,r3t@r0:6379", "redis://:p,w@r1:6379"]
    );
    // A node cut in its password (the value is its own user's typo).
    let e = nodes("redis://:s3c").unwrap_err();
    assert!(e.starts_with("store.redis.nodes[0]:"), "{e}");
    assert!(!e.contains("s3c"), "no piece of the password: {e}");
    let e = nodes("redis://u:s3c/0").unwrap_err();
    assert!(!e.contains("s3c"), "no piece of the password: {e}");
}

#[test]
fn sentinel_password_is_redacted() {
    let s = RedisSettings {
        mode: RedisMode::Sentinel,
        nodes: vec!["redis://:sentinelpw@h:26379".into()],
        sentinel: SentinelSettings {
            master_name: "m".into(),
            username: None,
            password: Some("masterpw".into()),
            replica_acks: None,
        },
        ..RedisSettings::default()
    };
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("sentinelpw") && !shown.contains("masterpw"),
        "{shown}"
    );
}

#[test]
fn trusted_proxies_from_env_and_file() {
    let env = |v: &str| BTreeMap::from([(env_name("trusted_proxies"), v.to_owned())]);
    let loaded = load_from(None, env("10.0.0.0/8, 127.0.0.1,fd00::/8")).unwrap();
    let nets: Vec<String> = loaded
        .settings
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]);
    assert!(
        load_from(None, env(""))
            .unwrap()
            .settings
            .trusted_proxies
            .is_empty()
    );
    let err = load_from(None, env("10.0.0.0/33")).unwrap_err().to_string();
    assert!(err.contains("HAWZU_GATE__TRUSTED_PROXIES"), "{err}");
    assert!(
        err.contains("`10.0.0.0/33` is not an IP address or network"),
        "{err}"
    );
    // The default trusts loopback only.
    let d = Settings::default();
    assert!(
        d.trusted_proxies
            .iter()
            .any(|n| n.contains("127.0.0.1".parse().unwrap()))
    );
    assert!(
        !d.trusted_proxies
            .iter()
            .any(|n| n.contains("10.0.0.1".parse().unwrap()))
    );
}

#[test]
fn limits_are_checked() {
    let one = |k: &str, v: &str| BTreeMap::from([(env_name(k), v.to_owned())]);
    for (key, value, message) in [
        ("limits.max_requests", "0", "must be more than 0"),
        ("limits.max_connections", "0", "must be more than 0"),
        ("limits.max_header_bytes", "100", "between 8192"),
        ("limits.max_grpc_message_bytes", "1024", "between 16384"),
        ("limits.max_grpc_message_bytes", "33554432", "between 16384"),
        ("limits.header_read_timeout", "1ms", "between 100ms and 1h"),
        ("failed_auth.window", "10ms", "between 1s and 30d"),
        ("admin.change_window", "10ms", "from 1s to 24h"),
        ("admin.change_window", "2d", "from 1s to 24h"),
    ] {
        let err = load_from(None, one(key, value)).unwrap_err().to_string();
        assert!(err.starts_with(key), "{err}");
        assert!(err.contains(message), "{err}");
    }
    let err = load_from(None, one("limits.max_requests", "lots"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_requests"), "{err}");
}

/// A rotated value's record is dropped `store.retention` after its own
/// overlap ends: with a longer overlap allowed, revoking the newest value
/// of a chain could not find an older one still working.
#[test]
fn the_rotation_overlap_must_fit_within_the_store_retention() {
    let both = |overlap: &str, retention: &str| {
        BTreeMap::from([
            (env_name("admin.max_rotation_overlap"), overlap.to_owned()),
            (env_name("store.retention"), retention.to_owned()),
        ])
    };
    let err = load_from(None, both("7d", "1d")).unwrap_err().to_string();
    assert!(err.starts_with("admin.max_rotation_overlap"), "{err}");
    assert!(err.contains("at most store.retention (1day)"), "{err}");
    assert!(load_from(None, both("1d", "1d")).is_ok());
    assert!(load_from(None, both("7d", "30d")).is_ok());
}

#[test]
fn tls_to_redis_is_standalone_only_and_its_ca_file_is_checked() {
    let load = |pairs: &[(&str, &str)]| {
        let mut all = vec![("HAWZU_GATE__STORE__BACKEND", "redis")];
        all.extend_from_slice(pairs);
        load_from(None, env(&all))
    };
    // Standalone over TLS, with the system's CAs.
    load(&[("HAWZU_GATE__STORE__REDIS__URL", "rediss://:pw@redis:6380")]).unwrap();
    // Sentinel and cluster nodes: refused with the reason.
    let e = load(&[
        ("HAWZU_GATE__STORE__REDIS__MODE", "cluster"),
        ("HAWZU_GATE__STORE__REDIS__NODES", "rediss://:pw@a:7000"),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("store.redis.nodes[0]:"), "{e}");
    assert!(e.contains("standalone server only"), "{e}");
    assert!(!e.contains("pw@"), "the password is redacted: {e}");
    // A CA file needs a rediss:// URL, and must hold certificates.
    let e = load(&[("HAWZU_GATE__STORE__REDIS__CA_FILE", "/etc/hostname")])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("store.redis.ca_file:"), "{e}");
    assert!(e.contains("only used with a rediss://"), "{e}");
    let e = load(&[
        ("HAWZU_GATE__STORE__REDIS__URL", "rediss://redis:6380"),
        ("HAWZU_GATE__STORE__REDIS__CA_FILE", "/nonexistent/ca.pem"),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("store.redis.ca_file:"), "{e}");
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

#[test]
fn the_strip_list_defaults_to_the_overrides_and_reads_a_comma_separated_env() {
    let s = load_from(None, BTreeMap::new()).unwrap().settings;
    assert_eq!(s.headers.strip, crate::headers::DEFAULT_STRIP);
    let s = load_from(
        None,
        env(&[(
            "HAWZU_GATE__HEADERS__STRIP",
            "X-HTTP-Method-Override, X_Legacy",
        )]),
    )
    .unwrap()
    .settings;
    assert_eq!(s.headers.strip, ["X-HTTP-Method-Override", "X_Legacy"]);
    // Empty: strip nothing.
    let s = load_from(None, env(&[("HAWZU_GATE__HEADERS__STRIP", "")]))
        .unwrap()
        .settings;
    assert!(s.headers.strip.is_empty());
    let (_d, path) = file("[headers]\nstrip = [\"X-Original-URL\"]\n");
    let s = load_from(Some(&path), BTreeMap::new()).unwrap().settings;
    assert_eq!(s.headers.strip, ["X-Original-URL"]);
}

#[test]
fn a_strip_entry_that_is_not_a_header_name_names_the_key_and_its_source() {
    let err = load_from(
        None,
        env(&[("HAWZU_GATE__HEADERS__STRIP", "X-Ok,X Bad:name")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("headers.strip"), "{err}");
    assert!(err.contains("HAWZU_GATE__HEADERS__STRIP"), "{err}");
    assert!(err.contains("X Bad:name"), "{err}");
    let (_d, path) = file("[headers]\nstrip = [\"X-Ok\", \"é\"]\n");
    let err = load_from(Some(&path), BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("headers.strip"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn body_limits_and_the_admin_reserve_are_checked() {
    let load = |pairs: &[(&str, &str)]| {
        let pairs: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (env_name(k), (*v).to_owned()))
            .collect();
        load_from(None, pairs)
    };
    for (key, value, message) in [
        ("limits.body_read_timeout", "10ms", "between 100ms and 1h"),
        ("limits.body_read_timeout", "2h", "between 100ms and 1h"),
        ("limits.body_rate_grace", "0s", "between 100ms and 1h"),
        ("limits.send_timeout", "0s", "between 100ms and 1h"),
        ("limits.send_timeout", "2h", "between 100ms and 1h"),
    ] {
        let err = load(&[(key, value)]).unwrap_err().to_string();
        assert!(err.starts_with(key), "{err}");
        assert!(err.contains(message), "{err}");
    }
    let err = load(&[("limits.min_body_rate", "fast")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("min_body_rate"), "{err}");
    let err = load(&[
        ("limits.max_requests", "8"),
        ("admin.reserved_requests", "8"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("admin.reserved_requests"), "{err}");
    assert!(err.contains("less than limits.max_requests (8)"), "{err}");

    // The defaults, and the reserve derived from max_requests when unset.
    let s = load(&[]).unwrap().settings;
    assert_eq!(s.limits.body_read_timeout.0, Duration::from_secs(10));
    assert_eq!(s.limits.min_body_rate, 1024);
    assert_eq!(s.limits.body_rate_grace.0, Duration::from_secs(5));
    assert_eq!(s.limits.send_timeout.0, Duration::from_secs(60));
    assert_eq!(s.admin.reserved_requests(&s.limits), 1000);
    for (max, reserved) in [("1", 0), ("2", 1), ("3", 1), ("11", 2), ("10000", 1000)] {
        let s = load(&[("limits.max_requests", max)]).unwrap().settings;
        assert_eq!(s.admin.reserved_requests(&s.limits), reserved, "{max}");
    }
    let s = load(&[
        ("admin.reserved_requests", "0"),
        ("limits.min_body_rate", "0"),
    ])
    .unwrap()
    .settings;
    assert_eq!(s.admin.reserved_requests(&s.limits), 0);
    assert_eq!(s.limits.min_body_rate, 0);
}

#[test]
fn the_unverified_leak_budget_holds_at_least_one_body() {
    let defaults = load_from(None, BTreeMap::new()).unwrap().settings;
    assert_eq!(defaults.leaks.unverified_budget(), 16 * 1024 * 1024);
    // A config that raised the body limit starts as it did.
    let (_d, path) = file("[leaks]\nmax_body_bytes = 33554432\n");
    let raised = load_from(Some(&path), BTreeMap::new()).unwrap().settings;
    assert_eq!(raised.leaks.unverified_budget(), 33554432);
    let m = refused("[leaks]\nmax_body_bytes = 2048\nmax_unverified_bytes = 2047\n");
    assert!(m.contains("leaks.max_unverified_bytes"), "{m}");
    assert!(m.contains("leaks.max_body_bytes (2048)"), "{m}");
    let (_d, path) = file("[leaks]\nmax_body_bytes = 2048\nmax_unverified_bytes = 2048\n");
    let s = load_from(Some(&path), BTreeMap::new()).unwrap().settings;
    assert_eq!(s.leaks.unverified_budget(), 2048);
}

/// The message of a config that must be refused.
fn refused(toml: &str) -> String {
    let (_d, path) = file(toml);
    load_from(Some(&path), BTreeMap::new())
        .expect_err("refused")
        .to_string()
}

#[test]
fn an_upstream_url_serve_could_not_use_is_refused_at_load() {
    for (url, why) in [
        ("localhost:3000", "http://localhost:3000"),
        ("ftp://api:21", "scheme `ftp`"),
        ("http://api:3000/v1", "path"),
        ("http://api:3000?x=1", "path or query"),
        ("http://user:pw@api:3000", "user or password"),
        ("http://", "not a URL"),
    ] {
        let m = refused(&format!("[upstream]\nurl = \"{url}\"\n"));
        assert!(m.contains("upstream.url"), "{url}: {m}");
        assert!(m.contains(why), "{url}: {m}");
        assert!(!m.contains("pw@"), "the password is not repeated: {m}");
    }
    for url in [
        "http://127.0.0.1:3000",
        "https://api.hawzu.example",
        "http://[::1]:8080/",
    ] {
        let (_d, path) = file(&format!("[upstream]\nurl = \"{url}\"\n"));
        load_from(Some(&path), BTreeMap::new()).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn a_log_level_that_is_no_level_is_refused_at_load() {
    for level in ["verbose", "hawzu_gate=loud", ""] {
        let m = refused(&format!("[log]\nlevel = \"{level}\"\n"));
        assert!(m.contains("log.level"), "{level}: {m}");
        assert!(m.contains("info") && m.contains("debug"), "{level}: {m}");
    }
    for level in ["info", "WARN", "hawzu_gate=debug,info", "off"] {
        let (_d, path) = file(&format!("[log]\nlevel = \"{level}\"\n"));
        load_from(Some(&path), BTreeMap::new()).unwrap_or_else(|e| panic!("{level}: {e}"));
    }
}

#[test]
fn a_gate_variable_with_one_underscore_is_named_as_setting_nothing() {
    let w = unread_env([
        "HAWZU_GATE_STORE__BACKEND",
        "HAWZU_GATE_CONFIG",
        "HAWZU_GATE_ADMIN_KEY",
        "HAWZU_GATE__STORE__BACKEND",
        "PATH",
    ]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("HAWZU_GATE_STORE__BACKEND sets nothing"),
        "{w:?}"
    );
    assert!(w[0].contains("HAWZU_GATE__STORE__BACKEND"), "{w:?}");
    // Single underscores throughout: the setting it most likely meant, when
    // one spells so, else an example that works.
    for (sent, meant) in [
        ("HAWZU_GATE_UPSTREAM_URL", "e.g. HAWZU_GATE__UPSTREAM__URL)"),
        (
            "HAWZU_GATE_STORE_REDIS_KEY_PREFIX",
            "e.g. HAWZU_GATE__STORE__REDIS__KEY_PREFIX)",
        ),
        (
            "HAWZU_GATE_NO_SUCH_THING",
            "e.g. HAWZU_GATE__UPSTREAM__URL)",
        ),
    ] {
        let w = unread_env([sent]);
        assert!(w[0].contains(meant), "{sent}: {w:?}");
    }
}

#[test]
fn usage_settings_have_defaults_and_their_bounds_name_the_key() {
    let loaded = load_from(None, BTreeMap::new()).unwrap();
    assert_eq!(
        loaded.settings.usage.retention.0,
        Duration::from_secs(90 * 24 * 3600)
    );
    assert_eq!(
        loaded.settings.usage.disable_unused(),
        None,
        "off by default"
    );
    let on = load_from(
        None,
        env(&[("HAWZU_GATE__USAGE__DISABLE_UNUSED_AFTER", "90d")]),
    )
    .unwrap();
    assert_eq!(
        on.settings.usage.disable_unused(),
        Some(Duration::from_secs(90 * 24 * 3600))
    );
    for (var, value, key) in [
        ("HAWZU_GATE__USAGE__RETENTION", "30m", "usage.retention"),
        (
            "HAWZU_GATE__USAGE__DISABLE_UNUSED_AFTER",
            "2h",
            "usage.disable_unused_after",
        ),
    ] {
        let err = load_from(None, env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains(var), "{err}");
    }
}

/// A secret in a file every user can read is named at load (a warning,
/// shown by `check-config` and logged at start): the config file holding
/// `admin.key`, a webhook's `secret_file`; a private file is not.
#[cfg(unix)]
#[test]
fn secrets_in_files_others_can_read_are_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "0123456789abcdef0123").unwrap();
    let (_d, path) = file(&format!(
        "[admin]\nkey = \"{}\"\n[[webhooks]]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"{}\"\nevents = [\"*\"]\n",
        "k".repeat(40),
        secret.display()
    ));
    chmod(&path, 0o644);
    chmod(&secret, 0o604);
    let warnings = load_from(Some(&path), BTreeMap::new()).unwrap().warnings;
    let about = |what: &str| warnings.iter().filter(|w| w.contains(what)).count();
    assert_eq!(
        about("the config file (it holds admin.key)"),
        1,
        "{warnings:?}"
    );
    assert_eq!(about("webhooks[0].secret_file"), 1, "{warnings:?}");
    assert!(
        warnings.iter().all(|w| !w.contains(&"k".repeat(40))),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|w| w.contains("0644")), "{warnings:?}");

    chmod(&path, 0o600);
    chmod(&secret, 0o640);
    let warnings = load_from(Some(&path), BTreeMap::new()).unwrap().warnings;
    assert!(warnings.is_empty(), "{warnings:?}");
    // The key set by the environment: the file holds no secret.
    chmod(&path, 0o644);
    let (_d2, plain) = file(&format!(
        "[[webhooks]]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"{}\"\nevents = [\"*\"]\n",
        secret.display()
    ));
    chmod(&plain, 0o644);
    let key = "k".repeat(40);
    let warnings = load_from(Some(&plain), env(&[("HAWZU_GATE__ADMIN__KEY", &key)]))
        .unwrap()
        .warnings;
    assert!(warnings.is_empty(), "{warnings:?}");
    // A Redis password in the file is a secret too; never shown.
    let (_d3, redis) = file(
        "[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"redis://gate:hunter22@10.0.0.1:6379\"\n",
    );
    chmod(&redis, 0o644);
    let warnings = load_from(Some(&redis), BTreeMap::new()).unwrap().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("store.redis.url"), "{warnings:?}");
    assert!(!warnings[0].contains("hunter22"), "{warnings:?}");
    // Any secret file others may read is named with its mode (the gate
    // refuses `<data_dir>/admin.key` with any group or other bit, more
    // tightly: `admin::KeyError::Permissions`).
    chmod(&secret, 0o604);
    let w = super::exposed_file("the admin key file", &secret).unwrap();
    assert!(
        w.contains("the admin key file") && w.contains("0604"),
        "{w}"
    );
    chmod(&secret, 0o600);
    assert!(super::exposed_file("the admin key file", &secret).is_none());
}

/// A webhook to another host over plain `http://` sends names,
/// descriptions and client addresses in the clear, and a captured signed
/// request can be sent again within the receiver's tolerance: warned at
/// load. Loopback (a local relay) is not.
#[cfg(unix)]
#[test]
fn a_webhook_in_the_clear_to_another_host_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "0123456789abcdef0123").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let warnings = |url: &str| {
        let (_d, path) = file(&format!(
            "[[webhooks]]\nname = \"relay\"\nurl = \"{url}\"\nsecret_file = \"{}\"\nevents = [\"*\"]\n",
            secret.display()
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        load_from(Some(&path), BTreeMap::new()).unwrap().warnings
    };
    let w = warnings("http://hooks.example.com/hawzu");
    assert!(
        w.iter()
            .any(|w| w.contains("webhooks[0].url") && w.contains("https://")),
        "{w:?}"
    );
    for quiet in [
        "https://hooks.example.com/hawzu",
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://[::1]:9/",
    ] {
        assert!(warnings(quiet).is_empty(), "{quiet}");
    }
}

/// A config the parser cannot read prints where and why, never the value:
/// a TOML syntax error shows its line, and a type error the string it
/// could not take — a Redis password with a `\`, a URL where a list goes.
#[test]
fn a_config_error_never_shows_the_value_it_names() {
    // The file, the environment, and what the message must still name.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 4] = [
        (
            "[store.redis.sentinel]\npassword = \"master-pw-SHOWN\\q\"\n",
            &[],
            "line 2",
        ),
        (
            "[store.redis]\nnodes = \"redis://:node-pw-SHOWN@h:1\"\n",
            &[],
            "store.redis.nodes",
        ),
        (
            "",
            &[("HAWZU_GATE__STORE__REDIS", "rediss://:env-pw-SHOWN@h")],
            "store.redis",
        ),
        (
            "[admin]\nkey = [\"admin-key-SHOWN-0123456789012345678901\"]\n",
            &[],
            "admin.key",
        ),
    ];
    for (text, vars, names) in cases {
        let (_dir, path) = file(text);
        let Err(err) = load_from(Some(&path), env(vars)) else {
            panic!("refused: {text}")
        };
        let shown = err.to_string();
        assert!(!shown.contains("SHOWN"), "{shown}");
        assert!(shown.contains(names), "still says where: {shown}");
    }
}

/// An environment value is the text it was given: `007` is not the number
/// 7, a password of digits keeps its leading zeros (the parser used to read
/// every value that looked like a number or a bool as one).
#[test]
fn environment_values_come_through_byte_for_byte() {
    let digits = "0123456789012345678901234567890123456789";
    let loaded = load_from(
        None,
        env(&[
            ("HAWZU_GATE__STORE__REDIS__KEY_PREFIX", "007"),
            ("HAWZU_GATE__ADMIN__KEY", digits),
            ("HAWZU_GATE__STORE__BACKEND", "redis"),
            ("HAWZU_GATE__STORE__REDIS__MODE", "sentinel"),
            ("HAWZU_GATE__STORE__REDIS__NODES", "redis://127.0.0.1:26379"),
            (
                "HAWZU_GATE__STORE__REDIS__SENTINEL__MASTER_NAME",
                "mymaster",
            ),
            ("HAWZU_GATE__STORE__REDIS__SENTINEL__PASSWORD", "0042"),
            // Numbers and lists still read as before.
            ("HAWZU_GATE__CACHE__MAX_ENTRIES", "5000"),
            ("HAWZU_GATE__TRUSTED_PROXIES", "10.1.0.0/16,127.0.0.1"),
            ("HAWZU_GATE__TELEMETRY__SAMPLE_RATIO", "0.25"),
        ]),
    )
    .unwrap();
    let s = &loaded.settings;
    assert_eq!(s.store.redis.key_prefix, "007");
    assert_eq!(s.admin.key.as_deref(), Some(digits));
    assert_eq!(s.store.redis.sentinel.password.as_deref(), Some("0042"));
    assert_eq!(s.cache.max_entries, 5000);
    assert_eq!(s.trusted_proxies.len(), 2);
    assert!((s.telemetry.sample_ratio - 0.25).abs() < f64::EPSILON);
}

/// Environment names are read in lower case: a workspace's limits set for
/// `Acme` from the environment would apply to `acme`, and never to `Acme`.
/// Refused, naming the variable, rather than silently another workspace.
#[test]
fn a_workspace_id_with_capitals_from_the_environment_is_refused() {
    let Err(err) = load_from(
        None,
        env(&[(
            "HAWZU_GATE__TOKENS__WORKSPACES__Acme__MAX_ROLE",
            "workspace_viewer",
        )]),
    ) else {
        panic!("refused")
    };
    let shown = err.to_string();
    assert!(
        shown.contains("HAWZU_GATE__TOKENS__WORKSPACES__Acme__MAX_ROLE"),
        "{shown}"
    );
    assert!(shown.contains("config file"), "says what to do: {shown}");
    // Whatever the spelling of the rest of the name.
    assert!(
        load_from(
            None,
            env(&[(
                "HAWZU_GATE__tokens__workspaces__Acme__max_role",
                "workspace_viewer",
            )]),
        )
        .is_err()
    );
    // Lower case is what it says.
    let loaded = load_from(
        None,
        env(&[(
            "HAWZU_GATE__TOKENS__WORKSPACES__acme__MAX_ROLE",
            "workspace_viewer",
        )]),
    )
    .unwrap();
    assert!(loaded.settings.tokens.workspaces.contains_key("acme"));
}

/// `headers.strip` replaces the defaults: one header meant as an addition
/// lets the overrides through. Said, naming them; the defaults (and a
/// list that keeps them) say nothing.
#[test]
fn a_strip_list_that_drops_the_default_overrides_is_warned_of() {
    let loaded = load_from(None, env(&[("HAWZU_GATE__HEADERS__STRIP", "X-Debug")])).unwrap();
    let said = loaded.warnings.join("\n");
    assert!(said.contains("X-HTTP-Method-Override"), "{said}");
    assert!(said.contains("headers.strip"), "{said}");
    let defaults = load_from(None, env(&[])).unwrap();
    assert!(
        !defaults
            .warnings
            .iter()
            .any(|w| w.contains("headers.strip")),
        "{:?}",
        defaults.warnings
    );
    let all = crate::headers::DEFAULT_STRIP.join(",") + ",X-Debug";
    let kept = load_from(None, env(&[("HAWZU_GATE__HEADERS__STRIP", &all)])).unwrap();
    assert!(!kept.warnings.iter().any(|w| w.contains("headers.strip")));
}

/// `cache.ttl` bounds how long a revocation whose event was lost goes
/// unenforced: a day at most, never "5M" (five months: humantime's `M`).
#[test]
fn cache_lifetimes_are_bounded() {
    let Err(e) = load_from(None, env(&[("HAWZU_GATE__CACHE__TTL", "5M")])) else {
        panic!("5M refused")
    };
    assert!(e.to_string().contains("24h"), "{e}");
    let Err(e) = load_from(None, env(&[("HAWZU_GATE__CACHE__TTL", "2d")])) else {
        panic!("2d refused")
    };
    let said = e.to_string();
    assert!(said.contains("cache.ttl") && said.contains("24h"), "{said}");
    let Err(e) = load_from(None, env(&[("HAWZU_GATE__CACHE__STALE_IF_ERROR", "30d")])) else {
        panic!("30d refused")
    };
    assert!(e.to_string().contains("cache.stale_if_error"), "{e}");
    assert!(load_from(None, env(&[("HAWZU_GATE__CACHE__TTL", "5m")])).is_ok());
}

/// The audit log's keys share the stream's cluster slot by a hash tag: a
/// prefix with a brace outside a whole tag could not give them one, and is
/// refused naming the setting; one tag, or none, is taken.
#[test]
fn a_key_prefix_with_a_stray_brace_is_refused() {
    let prefix = |p: &str| load_from(None, env(&[("HAWZU_GATE__STORE__REDIS__KEY_PREFIX", p)]));
    for bad in ["a}b:", "x{:", "{}:"] {
        let err = prefix(bad).unwrap_err().to_string();
        assert!(err.contains("store.redis.key_prefix"), "{bad}: {err}");
        assert!(err.contains("brace outside a hash tag"), "{bad}: {err}");
    }
    for good in ["{hawzu}:", "hawzu:v2:"] {
        assert_eq!(prefix(good).unwrap().settings.store.redis.key_prefix, good);
    }
}

/// A duration no setting can mean is refused naming its key — never
/// turned into a panic that `check-config` does not foresee and that kills
/// a running gate on SIGHUP (a webhook's `timeout` doubled for its
/// `claim_after` check; moka's 1000-year bound on `failed_auth.window`).
/// Timeouts a connection or a request waits on are bounded (humantime's
/// `M` is a month) and more than 0 (an upstream timeout of `0s` fails
/// every request).
#[test]
fn durations_no_setting_can_mean_are_refused_naming_the_key() {
    let (_d, path) = file(
        "[[webhooks]]\nurl = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef0123\"\nevents = [\"*\"]\ntimeout = \"10000000000000000000s\"\n",
    );
    let Err(e) = load_from(Some(&path), BTreeMap::new()) else {
        panic!("a timeout of 3 × 10^11 years refused")
    };
    assert!(e.to_string().contains("webhooks[0].timeout"), "{e}");
    for (var, value, key) in [
        (
            "HAWZU_GATE__FAILED_AUTH__WINDOW",
            "1001y",
            "failed_auth.window",
        ),
        (
            "HAWZU_GATE__LIMITS__HEADER_READ_TIMEOUT",
            "1M",
            "limits.header_read_timeout",
        ),
        (
            "HAWZU_GATE__LIMITS__IDLE_TIMEOUT",
            "1M",
            "limits.idle_timeout",
        ),
        ("HAWZU_GATE__STORE__TIMEOUT", "1M", "store.timeout"),
        ("HAWZU_GATE__UPSTREAM__TIMEOUT", "0s", "upstream.timeout"),
        ("HAWZU_GATE__UPSTREAM__TIMEOUT", "1M", "upstream.timeout"),
        (
            "HAWZU_GATE__UPSTREAM__CONNECT_TIMEOUT",
            "0s",
            "upstream.connect_timeout",
        ),
        (
            "HAWZU_GATE__UPSTREAM__CONNECT_TIMEOUT",
            "1M",
            "upstream.connect_timeout",
        ),
        ("HAWZU_GATE__SHUTDOWN__GRACE", "1M", "shutdown.grace"),
        (
            "HAWZU_GATE__CACHE__NEGATIVE_TTL",
            "1001y",
            "cache.negative_ttl",
        ),
        ("HAWZU_GATE__STORE__RETENTION", "1001y", "store.retention"),
    ] {
        let Err(e) = load_from(None, env(&[(var, value)])) else {
            panic!("{key} = {value} refused")
        };
        assert!(e.to_string().contains(key), "{key} = {value}: {e}");
    }
    // What these settings are for still loads.
    for (var, value) in [
        ("HAWZU_GATE__FAILED_AUTH__WINDOW", "7d"),
        ("HAWZU_GATE__LIMITS__IDLE_TIMEOUT", "4000s"),
        ("HAWZU_GATE__UPSTREAM__TIMEOUT", "10m"),
        ("HAWZU_GATE__STORE__RETENTION", "3650d"),
    ] {
        assert!(
            load_from(None, env(&[(var, value)])).is_ok(),
            "{var} = {value}"
        );
    }
}

/// A Redis setting with the embedded store (`store.backend` forgotten) is
/// refused, naming it: each replica would keep its own tokens, and a
/// revocation on one gate would never reach another. Before, it was
/// silently ignored.
#[test]
fn a_redis_setting_without_the_redis_backend_is_refused() {
    for (var, value, key) in [
        (
            "HAWZU_GATE__STORE__REDIS__URL",
            "redis://redis.prod:6379",
            "store.redis.url",
        ),
        (
            "HAWZU_GATE__STORE__REDIS__MODE",
            "cluster",
            "store.redis.mode",
        ),
    ] {
        let Err(e) = load_from(None, env(&[(var, value)])) else {
            panic!("{key} without store.backend = redis refused")
        };
        let said = e.to_string();
        assert!(
            said.contains(key) && said.contains("store.backend"),
            "{said}"
        );
    }
    assert!(
        load_from(
            None,
            env(&[
                ("HAWZU_GATE__STORE__BACKEND", "redis"),
                ("HAWZU_GATE__STORE__REDIS__URL", "redis://redis.prod:6379"),
            ])
        )
        .is_ok()
    );
}

/// `trusted_proxies` is a list of the proxies in front: a network with
/// address bits beyond its prefix is ambiguous (as in a token's
/// `allow_from`) and refused; one that trusts every address is loaded
/// with a warning (every client then names any address it likes).
#[test]
fn trusted_proxies_that_are_ambiguous_are_refused_and_everyone_is_warned_of() {
    let Err(e) = load_from(None, env(&[("HAWZU_GATE__TRUSTED_PROXIES", "10.1.2.3/8")])) else {
        panic!("10.1.2.3/8 refused")
    };
    let said = e.to_string();
    assert!(
        said.contains("trusted_proxies") && said.contains("10.0.0.0/8"),
        "{said}"
    );
    let loaded = load_from(
        None,
        env(&[("HAWZU_GATE__TRUSTED_PROXIES", "0.0.0.0/0,::/0")]),
    )
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("trusted_proxies") && w.contains("0.0.0.0/0")),
        "{:?}",
        loaded.warnings
    );
    let loaded = load_from(
        None,
        env(&[("HAWZU_GATE__TRUSTED_PROXIES", "10.0.200.0/26")]),
    )
    .unwrap();
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.contains("trusted_proxies"))
    );
}

/// The admin listener off loopback without TLS sends the admin key (and a
/// console sign-in) in the clear: warned of, as the CLI does.
#[test]
fn an_admin_listener_off_loopback_in_the_clear_is_warned_of() {
    let loaded = load_from(None, env(&[("HAWZU_GATE__LISTEN__ADMIN", "0.0.0.0:9091")])).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("listen.admin") && w.contains("tls.admin")),
        "{:?}",
        loaded.warnings
    );
    let loaded = load_from(None, BTreeMap::new()).unwrap();
    assert!(!loaded.warnings.iter().any(|w| w.contains("listen.admin")));
}
