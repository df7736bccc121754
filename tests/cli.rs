//! End to end, as a user: `hawzu-gate serve` runs as a process, the CLI
//! binary manages tokens through it, and curl calls `/auth/nginx`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::process::Command;

use common::{BIN, GateProcess, curl, curl_header, free_port};

/// `curl` against `/auth/nginx`: (status, X-Hawzu-Error).
fn curl_auth(gate: &GateProcess, token: &str) -> (u16, String) {
    curl_auth_path(gate, token, "/api/v1/workspaces/ws_1/projects")
}

/// `curl` against `/auth/nginx` for `GET path`.
fn curl_auth_path(gate: &GateProcess, token: &str, path: &str) -> (u16, String) {
    let (status, headers, _) = curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "X-Original-Method: GET",
        "-H",
        &format!("X-Original-URI: {path}"),
        &format!("http://{}/auth/nginx", gate.auth),
    ]);
    let error = curl_header(&headers, "x-hawzu-error")
        .first()
        .map_or_else(String::new, |v| (*v).to_owned());
    (status, error)
}

/// The one line of stdout that is a token value.
fn secret_of(stdout: &str) -> String {
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.starts_with("hwz_")
                && l.len() == 40
                && l[4..].bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .collect();
    assert_eq!(lines.len(), 1, "exactly one secret line in:\n{stdout}");
    lines[0].to_owned()
}

fn id_of(stdout: &str) -> String {
    let start = stdout.find("tok_").expect("an id");
    stdout[start..start + 20].to_owned()
}

#[test]
fn a_new_user_creates_uses_disables_rotates_and_revokes_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut gate = GateProcess::start(dir.path(), "");

    // Create: the secret on its own line, once, with the warning.
    let run = gate.cli(&[
        "token",
        "create",
        "--name",
        "CI Runner",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_member",
        "--expires",
        "1mo",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let secret = secret_of(&run.stdout);
    let id = id_of(&run.stdout);
    assert!(
        run.stdout.contains("will not be shown again"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.matches(&secret).count(), 1);

    assert_eq!(curl_auth(&gate, &secret), (200, String::new()));

    // The list, for people and for scripts; neither shows the secret.
    let list = gate.cli(&["token", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let header = list.stdout.lines().next().unwrap();
    for col in [
        "ID",
        "NAME",
        "TYPE",
        "ROLES",
        "STATE",
        "EXPIRES",
        "CREATED BY",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        list.stdout.contains(&id)
            && list.stdout.contains("CI Runner")
            && list.stdout.contains("enabled")
    );
    assert!(!list.stdout.contains(&secret[4..]));
    let json = gate
        .cli(&["token", "list", "--json", "--workspace", "ws_1"])
        .json();
    assert_eq!(json["tokens"][0]["id"], id.as_str());
    assert!(!json.to_string().contains(&secret[4..]));

    let show = gate.cli(&["token", "show", &id]);
    assert_eq!(show.code, 0);
    assert!(show.stdout.contains("workspace_member") && show.stdout.contains("enabled"));

    // Disable → refused; enable → accepted.
    let run = gate.cli(&["token", "disable", &id]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("disabled"));
    assert_eq!(curl_auth(&gate, &secret), (401, "token_disabled".into()));
    assert_eq!(gate.cli(&["token", "enable", &id]).code, 0);
    assert_eq!(curl_auth(&gate, &secret).0, 200);

    // Rotate → the old value is refused, the new one works.
    let run = gate.cli(&["token", "rotate", &id]);
    assert_eq!(run.code, 0, "{run:?}");
    let new_secret = secret_of(&run.stdout);
    assert!(run.stdout.contains("will not be shown again"));
    assert_eq!(curl_auth(&gate, &secret), (401, "token_revoked".into()));
    assert_eq!(curl_auth(&gate, &new_secret).0, 200);
    let rotated = gate
        .cli(&["token", "show", &id_of(&run.stdout), "--json"])
        .json();
    assert_eq!(rotated["token"]["rotated_from"], id.as_str());

    // Revoke the new one.
    let new_id = rotated["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(gate.cli(&["token", "revoke", &new_id]).code, 0);
    assert_eq!(curl_auth(&gate, &new_secret), (401, "token_revoked".into()));
    let revoked = gate
        .cli(&["token", "list", "--state", "revoked", "--json"])
        .json();
    assert_eq!(revoked["tokens"].as_array().unwrap().len(), 2);

    // A project token with two projects, in JSON for a script.
    let run = gate.cli(&[
        "token",
        "create",
        "--name",
        "Nightly",
        "--workspace",
        "ws_1",
        "--project",
        "proj_a=project_manager",
        "--project",
        "proj_b=project_viewer",
        "--expires",
        "never",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    assert_eq!(v["token"]["scope"]["projects"][1]["role"], "project_viewer");
    assert_eq!(v["token"]["expires_at"], serde_json::Value::Null);
    let secret3 = v["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        curl_auth_path(
            &gate,
            &secret3,
            "/api/v1/workspaces/ws_1/projects/proj_b/testcases"
        )
        .0,
        200
    );
    assert_eq!(
        curl_auth(&gate, &secret3),
        (403, "insufficient_role".into())
    );

    // No secret ever reached the gate's log.
    let log = gate.log_text();
    for s in [&secret, &new_secret, &secret3] {
        assert!(!log.contains(&s[4..]), "secret in log:\n{log}");
    }
    assert!(log.contains("token created"), "{log}");

    // SIGTERM: a clean exit.
    assert!(gate.terminate().success());
}

#[test]
fn bad_usage_exits_2_and_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "token",
                "create",
                "--name",
                "x",
                "--workspace",
                "w",
                "--role",
                "workspace_viewer",
                "--expires",
                "soon",
            ],
            "--expires",
        ),
        (
            &[
                "token",
                "create",
                "--name",
                "x",
                "--workspace",
                "w",
                "--project",
                "proj_a",
                "--expires",
                "1w",
            ],
            "--project",
        ),
        (
            &[
                "token",
                "create",
                "--name",
                "x",
                "--workspace",
                "w",
                "--expires",
                "1w",
            ],
            "--role",
        ),
        (
            &[
                "token",
                "create",
                "--name",
                "x",
                "--workspace",
                "w",
                "--role",
                "r",
                "--project",
                "p=r",
                "--expires",
                "1w",
            ],
            "--project",
        ),
        (&["token", "show", "tok_nope"], "<ID>"),
        (&["token", "list", "--state", "asleep"], "--state"),
        (&["token", "list", "--limit", "0"], "--limit"),
        (&["token", "lisst"], "lisst"),
        (&["token", "list", "--colour"], "--colour"),
    ];
    for (args, flag) in cases {
        let run = gate.cli(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(flag),
            "{args:?} should name {flag}: {}",
            run.stderr
        );
    }
    // The expiry error says what would be accepted.
    let run = gate.cli(cases[0].0);
    assert!(
        run.stderr.contains("7d, 2w, 3mo (or 3months), 1y, never"),
        "{}",
        run.stderr
    );
}

#[test]
fn refusals_exit_1_and_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "");
    let run = gate.cli(&[
        "token",
        "create",
        "--name",
        "x",
        "--workspace",
        "ws_1",
        "--role",
        "project_manager",
        "--expires",
        "1w",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("--role: `project_manager` is not a workspace role"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("workspace_viewer"),
        "accepted roles listed: {}",
        run.stderr
    );

    let run = gate.cli(&[
        "token",
        "create",
        "--name",
        "x",
        "--workspace",
        "ws_1",
        "--project",
        "p1=project_viewer",
        "--project",
        "p1=project_member",
        "--expires",
        "2020-01-01",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--project #2 (ID)"), "{}", run.stderr);
    assert!(run.stderr.contains("--expires"), "{}", run.stderr);

    let run = gate.cli(&["token", "show", "tok_0000000000000000"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("No token with id"), "{}", run.stderr);

    // A wrong key (1), and a gate that is not there (3).
    let run = gate.cli(&[
        "token",
        "list",
        "--admin-key",
        "hwzadm_wrongwrongwrongwrongwrongwrongwrong",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("admin key is not valid"),
        "{}",
        run.stderr
    );
    let run = gate.cli(&[
        "token",
        "list",
        "--admin-url",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("cannot reach the admin API"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_config_reports_the_key_and_file_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    // The documented example loads as it is.
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hawzu-gate.toml");
    let out = Command::new(BIN)
        .args(["check-config", "--config", good])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("execution_runner"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[store]\nbackend = \"postgres\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("store.backend")
            && err.contains("embedded or redis"),
        "{err}"
    );

    let out = Command::new(BIN)
        .arg("check-config")
        .env("HAWZU_GATE__CACHE__TLL", "5s")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HAWZU_GATE__CACHE__TLL"));

    // serve refuses the same bad file before binding anything.
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // An admin key file serve would refuse is refused here too, the key
    // never shown; settings whose default follows from others show the
    // value in effect.
    let data = dir.path().join("hawzu-gate-data");
    std::fs::create_dir_all(&data).unwrap();
    let key = data.join("admin.key");
    std::fs::write(&key, "hunter2\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = || {
        Command::new(BIN)
            .arg("check-config")
            .env("HAWZU_GATE__LEAKS__MAX_BODY_BYTES", "33554432")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.key") && err.contains("at least 32"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    std::fs::write(&key, "an-operator-chosen-admin-key-of-40-chars\n").unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("\"max_unverified_bytes\": 33554432"),
        "{shown}"
    );
    assert!(shown.contains("\"reserved_requests\": 1000"), "{shown}");
}

/// A custom rule that captures `{project}` but no `{workspace}` checks no
/// workspace: a project token of any workspace naming that project id is
/// allowed by it. Loading such a config warns, naming the rule (the
/// built-in rules and rules with both captures do not).
#[test]
fn a_rule_that_checks_no_workspace_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gate.toml");
    std::fs::write(
        &file,
        r#"
[[policy.rules]]
path = "/api/v1/workspaces/{workspace}/projects/{project}/runs/**"
methods = ["GET"]
permission = "executions:read"
[[policy.rules]]
path = "/api/v2/projects/{project}/runs/**"
methods = ["GET"]
permission = "executions:read"
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("policy.rules[1]")
            && warnings[0].contains("/api/v2/projects/{project}/runs/**")
            && warnings[0].contains("{workspace}"),
        "{err}"
    );
}

/// `check-config` shows the effective settings — never a credential:
/// not the admin key, a webhook secret, or a Redis password wherever it
/// is set (the standalone URL, each sentinel or cluster node URL, the
/// Sentinel master's password), in either output.
#[test]
fn check_config_never_prints_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gate.toml");
    std::fs::write(
        &file,
        r#"
[admin]
key = "admin-key-that-must-not-show-0123456789"
[store]
backend = "redis"
[store.redis]
mode = "sentinel"
url = "redis://:url-password-must-not-show@127.0.0.1:6379"
nodes = ["redis://sentinel-user:node-password-must-not-show@127.0.0.1:26379", "redis://:second-node-password-hidden@127.0.0.2:26379"]
[store.redis.sentinel]
master_name = "hawzu"
password = "master-password-must-not-show"
[[webhooks]]
url = "https://hooks.example.com/hawzu"
secret = "webhook-secret-must-not-show-0123"
events = ["*"]
"#,
    )
    .unwrap();
    for json in [false, true] {
        let mut cmd = Command::new(BIN);
        cmd.args(["check-config", "--config"]).arg(&file);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in [
            "admin-key-that-must-not-show",
            "url-password-must-not-show",
            "node-password-must-not-show",
            "second-node-password-hidden",
            "master-password-must-not-show",
            "webhook-secret-must-not-show",
        ] {
            assert!(
                !text.contains(secret),
                "--json {json}: {secret} shown in\n{text}"
            );
        }
        // What is not secret is still shown.
        assert!(
            text.contains("127.0.0.1:26379") && text.contains("hawzu"),
            "{text}"
        );
    }
}

/// A token's secret pasted where its id goes is refused without being
/// echoed (CI logs keep stderr), with a hint to the id; an id with the line
/// break of a paste is read as the id.
#[test]
fn a_secret_pasted_for_an_id_is_never_echoed() {
    let secret = "hwz_F21akBLlcCZs82PExeeW8ota9sdKrL1IQciG";
    let bearer = format!("Bearer {secret}");
    for args in [
        vec!["token", "show", "SECRET"],
        vec!["token", "revoke", "SECRET"],
        vec!["token", "usage", "SECRET"],
        vec!["audit", "--token", "SECRET"],
        vec![
            "explain",
            "--token-id",
            "SECRET",
            "--method",
            "GET",
            "--path",
            "/x",
        ],
    ] {
        // A prefix of the deployment's own (`tokens.prefix`) as well.
        for value in [
            secret,
            bearer.as_str(),
            "acme_F21akBLlcCZs82PExeeW8ota9sdKrL1IQciG",
        ] {
            let args: Vec<&str> = args
                .iter()
                .map(|a| if *a == "SECRET" { value } else { a })
                .collect();
            let out = Command::new(BIN).args(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                !err.contains("F21akBLlcCZs82PExeeW8ota9sdKrL1IQciG"),
                "{args:?}: {err}"
            );
            assert!(
                err.contains("not shown") && err.contains("tok_"),
                "{args:?}: {err}"
            );
        }
    }
    // Not a secret: the typo is shown back.
    let out = Command::new(BIN)
        .args(["token", "show", "tok_short"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tok_short"), "{err}");
}

/// A URL carrying a password where the gate takes none (the OTLP collector,
/// the GitHub keys URL) is refused, naming the key, and the refusal never
/// quotes the password.
#[test]
fn a_url_with_a_password_is_refused_without_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        (
            "[telemetry]\notlp_endpoint = \"http://otel:otlp-password-hidden@127.0.0.1:4318\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[leaks]\ngithub_keys_url = \"https://u:keys-password-hidden@keys.example.com/keys\"\n",
            "leaks.github_keys_url",
        ),
        (
            "[leaks]\ngithub_keys_url = \"http://u:keys-password-hidden@keys.example.com/keys\"\n",
            "leaks.github_keys_url",
        ),
    ] {
        let file = dir.path().join("gate.toml");
        std::fs::write(&file, toml).unwrap();
        for json in [false, true] {
            let mut cmd = Command::new(BIN);
            cmd.args(["check-config", "--config"]).arg(&file);
            if json {
                cmd.arg("--json");
            }
            let out = cmd.output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(2), "{toml}: {text}");
            assert!(text.contains(key), "{toml}: {text}");
            assert!(!text.contains("password-hidden"), "{toml}: {text}");
        }
    }
}

/// What serve would refuse, check-config refuses first, naming the key; and
/// serve refuses it before it writes anything (no data dir, no key file).
#[test]
fn check_config_catches_what_serve_refuses_and_serve_writes_nothing_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (toml, key, hint) in [
        (
            "[upstream]\nurl = \"localhost:3000\"\n",
            "upstream.url",
            "http://localhost:3000",
        ),
        ("[log]\nlevel = \"verbose\"\n", "log.level", "debug"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, format!("data_dir = \"{}\"\n{toml}", data.display())).unwrap();
        for command in ["check-config", "serve"] {
            let out = Command::new(BIN)
                .args([command, "--config"])
                .arg(&bad)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command}: {err}");
            assert!(err.contains(key) && err.contains(hint), "{command}: {err}");
            assert!(!data.exists(), "{command} wrote {} first", data.display());
        }
    }

    // A variable with one underscore sets nothing, and says so.
    let out = Command::new(BIN)
        .arg("check-config")
        .env("HAWZU_GATE_STORE__BACKEND", "redis")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: HAWZU_GATE_STORE__BACKEND sets nothing")
            && err.contains("HAWZU_GATE__STORE__BACKEND"),
        "{err}"
    );
}

/// What the example's first line says: every value is the default but the
/// custom role and the custom rule it shows.
#[test]
fn the_example_config_is_the_defaults_plus_one_role_and_one_rule() {
    use hawzu_gate::config::load_from;
    let example = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/hawzu-gate.toml"
    ));
    let mut example = serde_json::to_value(
        load_from(Some(example), Default::default())
            .unwrap()
            .settings,
    )
    .unwrap();
    let defaults =
        serde_json::to_value(load_from(None, Default::default()).unwrap().settings).unwrap();
    assert_eq!(
        example["roles"],
        serde_json::json!({ "execution_runner": ["executions:read", "executions:write"] })
    );
    assert_eq!(example["policy"]["rules"].as_array().unwrap().len(), 1);
    assert_eq!(defaults["roles"], serde_json::json!({}));
    assert_eq!(defaults["policy"]["rules"], serde_json::json!([]));
    example["roles"] = defaults["roles"].clone();
    example["policy"]["rules"] = defaults["policy"]["rules"].clone();
    assert_eq!(example, defaults);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `| head` closes the pipe early: no panic, no backtrace.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{BIN}' check-config --config '{}' | head -c 1 >/dev/null",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hawzu-gate.toml")
        ))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// A `hawzu-gate.toml` in the working directory (a cloned repository, a
/// shared folder) is read by every command. It must not send the
/// operator's admin key — `$HAWZU_GATE_ADMIN_KEY` kept exported — to an
/// admin address it chose: the CLI names the file and refuses, unless the
/// file is named (`--config`) or the address given (`--admin-url`).
#[test]
fn a_config_file_found_in_the_working_directory_does_not_choose_where_the_key_goes() {
    let dir = tempfile::tempdir().unwrap();
    // A port of this machine nothing listens on: a client that tries it is
    // refused at once.
    let closed = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.path().join("hawzu-gate.toml"),
        "[listen]\nadmin = \"192.0.2.1:9091\"\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir.path())
            .env_remove("HAWZU_GATE_CONFIG")
            .env_remove("HAWZU_GATE_ADMIN_URL")
            .env(
                "HAWZU_GATE_ADMIN_KEY",
                "hwzadm_the_operators_own_key_0123456789abcdef",
            )
            .arg("roles")
            .args(extra);
        cmd.output().unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(err.contains("hawzu-gate.toml"), "names the file: {err}");
    assert!(err.contains("192.0.2.1"), "names the address: {err}");
    assert!(err.contains("--config"), "says how to use it: {err}");
    assert!(!err.contains("hwzadm_the_operators_own_key"), "{err}");

    // Named, the file is the operator's choice (the address is not
    // reachable here: refused for another reason, not this one).
    let out = run(&[
        "--config",
        "hawzu-gate.toml",
        "--admin-url",
        &format!("http://{closed}"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("found in the working directory"), "{err}");
    // A file whose admin address is this machine's is used as before.
    std::fs::write(
        dir.path().join("hawzu-gate.toml"),
        format!("[listen]\nadmin = \"{closed}\"\n"),
    )
    .unwrap();
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("found in the working directory"), "{err}");
}

/// A `hawzu-gate.toml` nobody named is another user's when they may have
/// put it there: owned by another user (not root), writable by others, or
/// in a directory others may write without the sticky bit (they could
/// swap it). Such a file chose the admin address (a loopback port anyone
/// may bind), the data directory (whose key file is read and sent) and,
/// for `serve`, the admin key and rules: every command refuses it, naming
/// the file and `--config`. The user's own file in a `/tmp`-like
/// directory (sticky) is used as before.
#[test]
fn a_config_file_found_in_the_working_directory_that_another_user_may_have_put_there_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = rustix::process::geteuid().is_root();
    let case = |file_mode: u32, dir_mode: u32, owner: Option<u32>| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hawzu-gate.toml");
        let squatted = format!("127.0.0.1:{}", free_port());
        std::fs::write(&file, format!("[listen]\nadmin = \"{squatted}\"\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(file_mode)).unwrap();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&file, Some(uid), None).unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(dir_mode)).unwrap();
        let mut outs = Vec::new();
        for args in [
            &["roles"][..],
            &["token", "list"][..],
            &["check-config"][..],
        ] {
            let out = Command::new(BIN)
                .current_dir(dir.path())
                .env_remove("HAWZU_GATE_CONFIG")
                .env_remove("HAWZU_GATE_ADMIN_URL")
                .env(
                    "HAWZU_GATE_ADMIN_KEY",
                    "hwzadm_the_operators_own_key_0123456789abcdef",
                )
                .args(args)
                .output()
                .unwrap();
            outs.push((args.join(" "), out));
        }
        // Back to the test's own, so the directory can be removed.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        outs
    };
    let refused = |outs: Vec<(String, std::process::Output)>, why: &str| {
        for (args, out) in outs {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{why}: {args}: {err}");
            assert!(err.contains("hawzu-gate.toml"), "{why}: {args}: {err}");
            assert!(err.contains("another user"), "{why}: {args}: {err}");
            assert!(err.contains("--config"), "{why}: {args}: {err}");
            assert!(!err.contains("hwzadm_the_operators_own_key"), "{err}");
        }
    };
    refused(case(0o646, 0o755, None), "writable by others");
    refused(case(0o644, 0o777, None), "in a directory others may write");
    if root {
        refused(case(0o644, 0o755, Some(4242)), "another user's");
    }
    // The user's own file in a shared directory with the sticky bit: used
    // (check-config reads it and says so).
    for (args, out) in case(0o644, 0o1777, None) {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("another user"), "{args}: {err}");
        if args == "check-config" {
            assert_eq!(out.status.code(), Some(0), "{err}");
        }
    }
}

/// `token usage --since` takes what humantime reads, spaces included
/// (`"1d 12h"`): the CLI percent-encodes it in the query, and the server
/// answers the window. (It exited 2 blaming `--admin-url`.)
#[test]
fn token_usage_since_with_a_space_is_sent_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "");
    let created = gate.cli(&[
        "token",
        "create",
        "--name",
        "Usage",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_viewer",
        "--expires",
        "1w",
    ]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let id = id_of(&created.stdout);
    let run = gate.cli(&["token", "usage", &id, "--since", "1d 12h", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("--admin-url"), "{}", run.stderr);
    let answer = run.json();
    let since: jiff::Timestamp = answer["since"].as_str().unwrap().parse().unwrap();
    let until: jiff::Timestamp = answer["until"].as_str().unwrap().parse().unwrap();
    // From the start of the hour 36 hours back.
    let hours = until.duration_since(since).as_hours();
    assert!((36..=37).contains(&hours), "{answer}");
}

/// The client certificate's private key the CLI is given, readable by
/// every user of the machine, is warned of (naming the file and mode), as
/// the gate warns of its own TLS key files. Before, it was read silently.
#[cfg(unix)]
#[test]
fn a_client_key_every_user_may_read_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client.key");
    std::fs::write(&key, "not a key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["token", "list", "--admin-url", "https://127.0.0.1:1"])
        .args(["--admin-cert", "/dev/null", "--admin-cert-key"])
        .arg(&key)
        .env("HAWZU_GATE_ADMIN_KEY", "k".repeat(40))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("client.key") && err.contains("0644"),
        "{err}"
    );
}
