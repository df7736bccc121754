//! As a user, with the real binary: expiry words that mean one thing
//! (`3mo`, `30d`; `1m` refused naming both readings; what a date alone
//! means), `token rotate --expires --overlap` (the old value keeps working,
//! and `list`/`show` say until when) and `token update`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{GateProcess, curl, curl_header};

/// `/auth/nginx` for `token`: (status, X-Hawzu-Error).
fn curl_auth(gate: &GateProcess, token: &str) -> (u16, String) {
    let (status, headers, _) = curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "X-Original-Method: GET",
        "-H",
        "X-Original-URI: /api/v1/workspaces/ws_1/projects",
        &format!("http://{}/auth/nginx", gate.auth),
    ]);
    let error = curl_header(&headers, "x-hawzu-error")
        .first()
        .map_or_else(String::new, |v| (*v).to_owned());
    (status, error)
}

fn secret_of(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with("hwz_") && l.len() == 40)
        .unwrap_or_else(|| panic!("a secret line in:\n{stdout}"))
        .to_owned()
}

fn id_of(stdout: &str) -> String {
    let start = stdout.find("tok_").expect("an id");
    stdout[start..start + 20].to_owned()
}

fn create(gate: &GateProcess, expires: &str) -> common::CliRun {
    gate.cli(&[
        "token",
        "create",
        "--name",
        "CI Runner",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_member",
        "--expires",
        expires,
    ])
}

#[test]
fn expiry_words_mean_one_thing() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "");

    let run = create(&gate, "1m");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("1m: a minute or a month? write 1mo for a month"),
        "{}",
        run.stderr
    );

    for good in ["3mo", "3months", "30d", "2w", "1y", "1year"] {
        let run = create(&gate, good);
        assert_eq!(run.code, 0, "{good}: {run:?}");
        assert!(!run.stdout.contains("00:00 UTC, the start"), "{good}");
    }

    // A date alone: the output says which instant it is.
    let run = create(&gate, "2099-03-01");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("2099-03-01T00:00:00Z"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("00:00 UTC, the start of that day"),
        "{}",
        run.stdout
    );
    let help = gate.cli(&["token", "create", "--help"]);
    assert!(
        help.stdout.contains("00:00 UTC") && help.stdout.contains("3mo"),
        "{}",
        help.stdout
    );
}

#[test]
fn rotate_with_an_overlap_and_update_as_a_user() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "[admin]\nmax_rotation_overlap = \"2d\"\n");
    let run = create(&gate, "1w");
    assert_eq!(run.code, 0, "{run:?}");
    let (id, old) = (id_of(&run.stdout), secret_of(&run.stdout));

    // Over the cap: refused, naming the flag and the cap.
    let run = gate.cli(&["token", "rotate", &id, "--overlap", "3d"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("--overlap") && run.stderr.contains("admin.max_rotation_overlap"),
        "{}",
        run.stderr
    );

    let run = gate.cli(&[
        "token",
        "rotate",
        &id,
        "--expires",
        "3mo",
        "--overlap",
        "24h",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let new = secret_of(&run.stdout);
    let new_id = id_of(&run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "The old token {id} keeps working for API calls until"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(curl_auth(&gate, &old).0, 200);
    assert_eq!(curl_auth(&gate, &new).0, 200);

    let show = gate.cli(&["token", "show", &id]);
    assert!(
        show.stdout.contains("rotated, works until") && show.stdout.contains(&new_id),
        "{}",
        show.stdout
    );
    let list = gate.cli(&["token", "list"]);
    let row = list.stdout.lines().find(|l| l.contains(&id)).unwrap();
    assert!(row.contains("rotated, works until"), "{row}");

    // Update: a new name, a shorter expiry; never a later one.
    let run = gate.cli(&[
        "token",
        "update",
        &new_id,
        "--name",
        "CI Runner 2",
        "--description",
        "builds main",
        "--expires",
        "1mo",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("CI Runner 2") && run.stdout.contains("builds main"),
        "{}",
        run.stdout
    );
    let run = gate.cli(&["token", "update", &new_id, "--expires", "1y"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("--expires: can only be shortened"),
        "{}",
        run.stderr
    );
    let run = gate.cli(&["token", "update", &new_id]);
    assert_eq!(run.code, 2, "{run:?}");

    // Revoking the old one ends its overlap now.
    assert_eq!(gate.cli(&["token", "revoke", &id]).code, 0);
    assert_eq!(curl_auth(&gate, &old), (401, "token_revoked".into()));
    assert_eq!(curl_auth(&gate, &new).0, 200);
}
