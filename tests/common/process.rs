//! Stopping what the tests start: a signal, a grace period, then SIGKILL
//! for the process and every descendant. Owns nothing else; never starts
//! a process itself.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// === stopping what the tests start ===
//
// Every server a test starts is stopped on drop, and nothing it forked may
// outlive it: nginx's workers, redis-server's save and sync children. A
// program is stopped the way it is meant to be (nginx: SIGTERM, its master
// then stops its workers and waits for them); whatever is still running
// after a deadline is SIGKILLed together with every descendant, collected
// before the kill (once the parent dies, its children belong to init).

/// The processes descended from `pid`, from `/proc` (children first).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((child, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, ppid) in &parent_of {
            if ppid == p && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Sends `signal` (`-TERM`, `-KILL`, …) to each pid; gone ones are ignored.
pub fn send_signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Stops `child`: `signal` first (`None`: straight to SIGKILL), up to
/// `grace` for it to exit, then SIGKILL for it and all its descendants.
/// Returns once it is reaped, and every descendant it had is signalled.
pub fn stop_child(mut child: Child, signal: Option<&str>, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Some(signal) = signal {
        send_signal(signal, &[child.id()]);
        let start = Instant::now();
        while start.elapsed() < grace {
            if matches!(child.try_wait(), Ok(Some(_))) {
                // A well-behaved program has stopped its own children by now;
                // any it left behind were re-parented: nothing to find.
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Collected before the kill: afterwards they are init's, not ours.
    let mut doomed = descendants(child.id());
    doomed.push(child.id());
    send_signal("-KILL", &doomed);
    let _ = child.kill();
    let _ = child.wait();
}
