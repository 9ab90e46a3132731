//! What monitoring reads: `status --check` (exit 1 and one line per
//! problem, the JSON's worst status), the last good backups staying in
//! view after a failure, and output that survives a closed pipe.

use std::fs;
use std::process::Stdio;

use crate::support::*;

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";

#[test]
fn status_check_fails_on_a_failed_run_and_keeps_the_last_good_backup_in_view() {
    let sb =
        Sandbox::new("status_check_fails_on_a_failed_run_and_keeps_the_last_good_backup_in_view");
    write(&sb.path("src/a.dat"), &noise(10_000, 1));
    sb.config_dir_job("", &["nas"], NAS);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let good = r.json()["backup"].as_str().expect("id").to_string();
    let s = sb.offsite(&["status", "--check"]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("check ok"), "{s:?}");

    // The source goes missing: the run fails before anything is staged.
    fs::rename(sb.path("src"), sb.path("src-away")).expect("move");
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    let s = sb.offsite(&["status", "--check"]);
    assert_eq!(s.code, 1, "{s:?}");
    let problems: Vec<&str> = s
        .stdout
        .lines()
        .filter(|l| l.starts_with("PROBLEM"))
        .collect();
    assert_eq!(problems.len(), 1, "{s:?}");
    assert!(
        problems[0].contains("job db") && problems[0].contains("failed"),
        "{s:?}"
    );
    let j = sb.offsite(&["--json", "status"]);
    assert_eq!(j.code, 0, "plain status is information, not a check: {j:?}");
    let doc = j.json();
    assert_eq!(doc["status"], "failed", "the worst job's: {j:?}");
    assert_eq!(
        doc["jobs"][0]["status"]["last_full"]["backup"],
        good.as_str(),
        "the last good full stays in view: {j:?}"
    );
}

#[test]
fn status_check_flags_a_destination_whose_newest_backup_is_too_old() {
    let sb = Sandbox::new("status_check_flags_a_destination_whose_newest_backup_is_too_old");
    write(&sb.path("src/a.dat"), &noise(10_000, 2));
    sb.config_dir_job("max_age = \"1s\"", &["nas"], NAS);
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let s = sb.offsite(&["status", "--check"]);
    assert_eq!(s.code, 1, "{s:?}");
    assert!(
        s.stdout.contains("PROBLEM: job db on nas: stale") && s.stdout.contains("max_age"),
        "{s:?}"
    );
    let j = sb.offsite(&["--json", "status", "--check"]);
    assert_eq!(j.code, 1, "{j:?}");
    assert_eq!(j.json()["status"], "stale", "{j:?}");
    assert_eq!(j.json()["problems"][0]["destination"], "nas", "{j:?}");
}

/// `offsite status | head -1`, `list`, `check`, and a backup whose log
/// reader went away: a closed stdout is no panic, and a backup still
/// finishes with its own exit code.
#[test]
fn a_closed_stdout_is_no_panic_and_the_work_goes_on() {
    let sb = Sandbox::new("a_closed_stdout_is_no_panic_and_the_work_goes_on");
    write(&sb.path("src/a.dat"), &noise(10_000, 3));
    sb.config_dir_job("", &["nas"], NAS);
    for args in [
        &["backup"][..],
        &["status"],
        &["list"],
        &["check"],
        &["--json", "status"],
    ] {
        let mut child = sb
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start");
        // The reader goes away before offsite writes a line.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(complete_backups(&sb, "nas").len(), 1, "the backup finished");
}
