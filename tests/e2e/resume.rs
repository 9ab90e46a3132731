//! A backup killed mid-upload resumes where it stopped.

use std::time::Duration;

use crate::support::*;

fn journal_parts(sb: &Sandbox) -> usize {
    journaled(sb, "nas").0
}

fn journaled_nas(sb: &Sandbox) -> (usize, u64) {
    journaled(sb, "nas")
}

#[test]
fn kill_during_throttled_upload_then_upload_resumes() {
    let sb = Sandbox::new("kill_during_throttled_upload_then_upload_resumes");
    write(&sb.path("src/chunk-000000.000000"), &noise(3 << 20, 7));
    write(&sb.path("src/writer.chk"), b"12345678");
    write(&sb.path("src/index/empty"), b"");
    sb.config_dir_job(
        "volume_size = \"1MiB\"",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\nbwlimit = \"1MiB\"\npart_size = \"128KiB\"\n",
    );

    let mut child = sb
        .command(&["--json", "backup"])
        .spawn()
        .expect("start backup");
    // At 1 MiB/s, 3 MiB take about three seconds: kill once a few parts are journaled.
    wait_for("parts to be journaled", Duration::from_secs(60), || {
        journal_parts(&sb) >= 6
    });
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "the backup was killed before it finished"
    );
    let (parts_before, bytes_before) = journaled_nas(&sb);
    assert!(parts_before >= 6);

    // Nothing looks complete on the destination: the manifest goes last.
    assert!(
        complete_backups(&sb, "nas").is_empty(),
        "a killed upload must not look complete"
    );

    let r = sb.offsite(&["--json", "upload"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "ok");
    let run = &j["runs"][0];
    let dest = &run["destinations"][0];
    assert_eq!(dest["status"], "ok", "{r:?}");
    let resumed = dest["bytes_resumed"].as_u64().expect("bytes_resumed");
    assert_eq!(
        resumed, bytes_before,
        "exactly the journaled parts are not sent again"
    );
    let sent = dest["bytes_sent"].as_u64().expect("bytes_sent");
    let stored = run["staged"]["stored_bytes"].as_u64().expect("stored");
    assert!(
        sent < stored,
        "only the missing parts are sent ({sent} of {stored})"
    );

    assert_eq!(complete_backups(&sb, "nas").len(), 1);
    let to = sb.path("restored");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
}

#[test]
fn next_backup_finishes_an_interrupted_one_first() {
    let sb = Sandbox::new("next_backup_finishes_an_interrupted_one_first");
    write(&sb.path("src/data.bin"), &noise(2 << 20, 9));
    sb.config_dir_job(
        "",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\nbwlimit = \"1MiB\"\npart_size = \"128KiB\"\n",
    );
    let mut child = sb.command(&["backup"]).spawn().expect("start backup");
    wait_for("parts to be journaled", Duration::from_secs(60), || {
        journal_parts(&sb) >= 2
    });
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["earlier"][0]["status"], "ok", "{r:?}");
    assert!(
        j["earlier"][0]["destinations"][0]["bytes_resumed"]
            .as_u64()
            .expect("resumed")
            > 0
    );
    assert_eq!(complete_backups(&sb, "nas").len(), 2);
}

#[test]
fn sigterm_during_upload_stops_cleanly_and_upload_resumes() {
    let sb = Sandbox::new("sigterm_during_upload_stops_cleanly_and_upload_resumes");
    write(&sb.path("src/data.bin"), &noise(3 << 20, 11));
    sb.config_dir_job(
        "",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\nbwlimit = \"1MiB\"\npart_size = \"128KiB\"\n",
    );
    let (r, j) = backup_then_sigterm(
        &sb,
        "parts to be journaled",
        Duration::from_secs(60),
        || journal_parts(&sb) >= 3,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("SIGTERM: stopping"), "{r:?}");
    assert_eq!(j["status"], "interrupted", "{j}");
    assert_eq!(j["destinations"][0]["status"], "interrupted", "{j}");

    // Every part that was sent is in the journal, and nothing looks complete.
    let (parts, bytes) = journaled_nas(&sb);
    assert!(parts >= 3);
    assert!(complete_backups(&sb, "nas").is_empty());
    assert_eq!(staging_dirs(&sb).len(), 1, "the backup stays staged");

    let r = sb.offsite(&["--json", "upload"]);
    assert_eq!(r.code, 0, "{r:?}");
    let dest = &r.json()["runs"][0]["destinations"][0];
    assert_eq!(dest["bytes_resumed"].as_u64(), Some(bytes), "{r:?}");
    let to = sb.path("restored");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
}
