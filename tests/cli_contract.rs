//! The CLI's contract with scripts and people, on the real binary: exit
//! codes (0 ok, 1 refused, 2 bad usage, 3 unreachable), help that says
//! what each command takes and prints, one time format, what a token and a
//! role may do, and ids the configured pattern refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::process::Command;

use common::{BIN, GateProcess, free_port};

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn create(gate: &GateProcess, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["token", "create", "--json"];
    all.extend_from_slice(args);
    let run = gate.cli(&all);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()
}

#[test]
fn exit_codes_tell_refused_from_bad_usage_from_unreachable() {
    let root = help(&["--help"]);
    for line in [
        "0  done",
        "1  the server refused",
        "2  bad usage",
        "3  no answer from the admin API",
    ] {
        assert!(root.contains(line), "root --help lists `{line}`:\n{root}");
    }

    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "");
    // 1: the server refused (not found).
    let run = gate.cli(&["token", "show", "tok_0000000000000000"]);
    assert_eq!(run.code, 1, "{run:?}");
    // 2: bad usage, found before any call.
    let run = gate.cli(&["token", "show", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    // 3: nothing answers there; a script may retry this one.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    for args in [
        &["token", "list", "--admin-url", &nobody][..],
        &["--admin-url", &nobody, "roles"][..],
        &[
            "explain",
            "--admin-url",
            &nobody,
            "--token-id",
            "tok_0000000000000000",
        ][..],
    ] {
        let mut args = args.to_vec();
        if args[0] == "explain" {
            args.extend(["--method", "GET", "--path", "/api/v1/workspaces/ws_1"]);
        }
        let run = gate.cli(&args);
        if args[0] == "--admin-url" {
            // Not a flag of the root: the connection flags belong to the
            // commands that connect.
            assert_eq!(run.code, 2, "{run:?}");
            assert!(run.stderr.contains("--admin-url"), "{}", run.stderr);
            continue;
        }
        assert_eq!(run.code, 3, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("cannot reach the admin API"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn explain_exits_1_on_a_deny_unless_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "");
    let v = create(
        &gate,
        &[
            "--name",
            "Reader",
            "--workspace",
            "ws_1",
            "--role",
            "workspace_viewer",
            "--expires",
            "1w",
        ],
    );
    let id = v["token"]["id"].as_str().unwrap();
    let explain = |method: &str, extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--token-id",
            id,
            "--method",
            method,
            "--path",
            "/api/v1/workspaces/ws_1/projects",
        ];
        args.extend_from_slice(extra);
        gate.cli(&args)
    };
    let run = explain("GET", &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("allow"), "{}", run.stdout);

    let run = explain("POST", &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("deny"), "{}", run.stdout);
    let run = explain("POST", &["--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["decision"], "deny");
    let run = explain("POST", &["--exit-zero"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("deny"), "{}", run.stdout);
    assert!(help(&["explain", "--help"]).contains("--exit-zero"));
}

#[test]
fn help_groups_the_connection_flags_and_serve_shows_only_its_own() {
    let create = help(&["token", "create", "--help"]);
    let (own, connection) = create
        .split_once("Admin API connection:")
        .expect("a heading of its own");
    assert!(own.contains("--name") && own.contains("--expires"), "{own}");
    for flag in ["--admin-url", "--admin-key", "--admin-ca", "--admin-cert"] {
        assert!(connection.contains(flag), "{flag} under the heading");
        assert!(!own.contains(flag), "{flag} not among create's own");
    }
    // --project names the project roles, --role the workspace roles.
    let project = own
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("--project"))
        .take_while(|l| !l.trim_start().starts_with("--expires"))
        .collect::<String>();
    for role in [
        "project_viewer",
        "project_member",
        "project_coordinator",
        "project_manager",
    ] {
        assert!(
            project.contains(role),
            "--project help names {role}: {project}"
        );
    }
    assert!(own.contains("workspace_coordinator"), "{own}");

    // serve: every listener, and no flag it would ignore.
    let serve = help(&["serve", "--help"]);
    for listener in [
        "proxy  127.0.0.1:8080",
        "auth   127.0.0.1:8081",
        "grpc   127.0.0.1:9001",
        "ops    127.0.0.1:9090",
        "admin  127.0.0.1:9091",
    ] {
        assert!(serve.contains(listener), "{listener}:\n{serve}");
    }
    for flag in ["--admin-url", "--admin-key", "--admin-ca", "--json"] {
        assert!(!serve.contains(flag), "serve --help shows {flag}:\n{serve}");
    }
    assert!(serve.contains("--config"));
    // A key given to serve is refused, not silently ignored.
    let out = Command::new(BIN)
        .args(["serve", "--admin-key", "hwzadm_x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn list_all_json_prints_what_its_help_says_and_times_have_one_format() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "");
    for name in ["One", "Two", "Three"] {
        create(
            &gate,
            &[
                "--name",
                name,
                "--workspace",
                "ws_1",
                "--role",
                "workspace_viewer",
                "--expires",
                "2030-01-02T03:04:05.678Z",
            ],
        );
    }
    assert!(
        help(&["token", "list", "--help"]).contains(r#"{"tokens":[…],"next_cursor":null}"#),
        "the help names the shape"
    );
    let run = gate.cli(&["token", "list", "--all", "--json", "--limit", "1"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["next_cursor"], serde_json::Value::Null);

    // One time format: RFC 3339, UTC, whole seconds, in JSON and in text.
    let t = &v["tokens"][0];
    assert_eq!(t["expires_at"], "2030-01-02T03:04:05Z");
    let created = t["created_at"].as_str().unwrap();
    assert!(
        created.len() == 20 && created.ends_with('Z') && !created.contains('.'),
        "{created}"
    );
    let id = t["id"].as_str().unwrap();
    let show = gate.cli(&["token", "show", id]);
    assert!(
        show.stdout.contains("2030-01-02T03:04:05Z") && show.stdout.contains(created),
        "{}",
        show.stdout
    );
    let table = gate.cli(&["token", "list"]);
    assert!(
        table.stdout.contains("2030-01-02T03:04:05Z"),
        "{}",
        table.stdout
    );
}

#[test]
fn roles_and_show_say_what_a_token_can_do() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(
        dir.path(),
        "[roles]\nexecution_runner = [\"executions:read\", \"executions:write\"]\n",
    );
    let run = gate.cli(&["roles"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = &run.stdout;
    let (workspace, rest) = out.split_once("Project roles").expect("two sections");
    let (project, custom) = rest.split_once("Roles from [roles]").expect("custom");
    assert!(workspace.starts_with("Workspace roles"), "{out}");
    assert!(workspace.contains("workspace_manager") && !workspace.contains("project_"));
    assert!(project.contains("project_manager") && !project.contains("workspace_"));
    let runner = custom
        .lines()
        .find(|l| l.contains("execution_runner"))
        .unwrap();
    assert!(
        runner.contains("executions:read executions:write"),
        "{runner}"
    );
    let json = gate.cli(&["roles", "--json"]).json();
    assert_eq!(json["roles"].as_array().unwrap().len(), 9);

    let v = create(
        &gate,
        &[
            "--name",
            "Nightly",
            "--workspace",
            "ws_1",
            "--project",
            "proj_a=project_member",
            "--project",
            "proj_b=execution_runner",
            "--expires",
            "1w",
        ],
    );
    let id = v["token"]["id"].as_str().unwrap();
    let run = gate.cli(&["token", "show", id]);
    assert_eq!(run.code, 0, "{run:?}");
    let perms = run
        .stdout
        .split_once("\npermissions\n")
        .expect("a permissions section")
        .1;
    let (a, b) = perms.split_once("project proj_b").unwrap();
    assert!(a.contains("project proj_a (project_member)"), "{perms}");
    assert!(a.contains("testcases:write") && !a.contains("testcases:delete"));
    assert!(b.starts_with(" (execution_runner)"), "{perms}");
    assert_eq!(
        b.trim_start_matches(" (execution_runner)").trim(),
        "executions:read executions:write"
    );
}

#[test]
fn ids_off_the_pattern_are_refused_with_the_pattern_and_a_bad_pattern_stops_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(
        dir.path(),
        "[policy]\nid_pattern = \"ws_[0-9]+|proj_[a-z]+\"\n",
    );
    let run = gate.cli(&[
        "token",
        "create",
        "--name",
        "Acme",
        "--workspace",
        "acme",
        "--project",
        "proj_a=project_viewer",
        "--expires",
        "1w",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("--workspace: must match the id pattern `ws_[0-9]+|proj_[a-z]+`"),
        "{}",
        run.stderr
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[policy]\nid_pattern = \"[a-z\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.id_pattern") && err.contains("is not a regular expression"),
        "{err}"
    );
}
