//! Several destinations: one failing never hides the others, and never reads as success.

use std::fs;

use crate::support::*;

const TWO: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n\n[destination.broken]\nkind = \"path\"\npath = \"dest2\"\n";

#[test]
fn one_unwritable_destination_of_two_is_partial_exit_3() {
    let sb = Sandbox::new("one_unwritable_destination_of_two_is_partial_exit_3");
    write(&sb.path("src/a.dat"), &noise(100_000, 3));
    // `dest2/db` is a file, so the job's folder cannot be created there.
    write(&sb.path("dest2/db"), b"in the way");
    sb.config_dir_job("", &["nas", "broken"], TWO);

    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "partial");
    let d = j["destinations"].as_array().expect("destinations");
    let nas = d.iter().find(|x| x["name"] == "nas").expect("nas");
    let broken = d.iter().find(|x| x["name"] == "broken").expect("broken");
    assert_eq!(nas["status"], "ok");
    assert_eq!(broken["status"], "failed");
    let err = broken["error"].as_str().expect("error");
    assert!(
        err.contains("destination \"broken\"") && err.contains("dest2"),
        "{err}"
    );
    assert_eq!(complete_backups(&sb, "nas").len(), 1);

    // The human output's last line says partial, never a bare success.
    fs::remove_dir_all(sb.path("staging")).expect("reset staging");
    // Without staging's record of the last id, a backup in the same second
    // would get the first one's id, and its keys are taken (create-only).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let h = sb.offsite(&["backup"]);
    assert_eq!(h.code, 3, "{h:?}");
    let last = h.stdout.trim_end().lines().last().expect("a last line");
    assert!(
        last.contains("PARTIAL") && last.contains("offsite upload"),
        "{last}"
    );

    // Once the obstacle is gone, upload completes the staged backup and tidies staging.
    fs::remove_file(sb.path("dest2/db")).expect("remove obstacle");
    let u = sb.offsite(&["--json", "upload"]);
    assert_eq!(u.code, 0, "{u:?}");
    assert_eq!(u.json()["status"], "ok");
    assert_eq!(complete_backups(&sb, "broken").len(), 1);
    assert!(
        staging_dirs(&sb).is_empty(),
        "staged copies are removed once everywhere: {:?}",
        staging_dirs(&sb)
    );
}

#[test]
fn an_absent_mount_point_fails_and_is_never_created() {
    let sb = Sandbox::new("an_absent_mount_point_fails_and_is_never_created");
    write(&sb.path("src/a.dat"), b"data");
    sb.config_dir_job(
        "",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"mnt/share\"\n",
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "failed");
    let err = j["destinations"][0]["error"].as_str().expect("error");
    assert!(
        err.contains("does not exist") && err.contains("mount"),
        "{err}"
    );
    assert!(
        !sb.path("mnt").exists(),
        "the mount point must not be created"
    );
    let c = sb.offsite(&["check"]);
    assert_eq!(c.code, 1, "{c:?}");
    assert!(
        c.stdout.contains("destination \"nas\"") && c.stdout.contains("does not exist"),
        "{c:?}"
    );
}

#[test]
fn check_with_write_test_round_trips_and_leaves_nothing() {
    let sb = Sandbox::new("check_with_write_test_round_trips_and_leaves_nothing");
    sb.config_dir_job(
        "",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\nprefix = \"p\"\n",
    );
    let c = sb.offsite(&["check", "--write-test"]);
    assert_eq!(c.code, 0, "{c:?}");
    assert!(c.stdout.trim_end().ends_with("check ok"), "{c:?}");
    assert_eq!(
        fs::read_dir(sb.path("dest")).expect("dest").count(),
        0,
        "the test object is deleted"
    );
}

#[test]
fn a_discard_killed_halfway_is_never_uploaded_and_is_tidied() {
    let sb = Sandbox::new("a_discard_killed_halfway_is_never_uploaded_and_is_tidied");
    write(&sb.path("src/a.dat"), b"data");
    sb.config_dir_job(
        "",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    // What a kill during the removal of a shipped staged copy leaves: a manifest, volumes gone.
    let leftover = sb.path("staging/db/.work-discarded-20200101T000000Z-full");
    write(&leftover.join("manifest.json"), b"{}");
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.json()["earlier"].is_null(),
        "the leftover is not a staged backup: {r:?}"
    );
    assert!(!leftover.exists(), "the next run removes it");
    assert!(staging_dirs(&sb).is_empty(), "{:?}", staging_dirs(&sb));
}

/// `check` retries an unreachable destination once, not the half minute a
/// backup gives a restarting server (whose first retries alone wait 31 s):
/// a wrong port is named at once.
#[test]
fn check_fails_fast_on_a_destination_nobody_answers() {
    let sb = Sandbox::new("check_fails_fast_on_a_destination_nobody_answers");
    write(&sb.path("src/a.dat"), b"a");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let table = format!(
        "[destination.s3]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:{closed}\"\n"
    );
    sb.config_dir_job("", &["s3"], &table);
    let started = std::time::Instant::now();
    let r = Run::from(
        sb.command(&["check"])
            .env("AWS_ACCESS_KEY_ID", "k")
            .env("AWS_SECRET_ACCESS_KEY", "s")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("run offsite"),
    );
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("destination \"s3\"") && r.stdout.contains("Connection refused"),
        "{r:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(20),
        "check gave up after one retry, not a backup's seven: {took:?}"
    );
}
