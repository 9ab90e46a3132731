//! Retention on a real destination: prune after backup, dry runs, `--now`, overrides, incomplete leftovers.

use std::fs;

use crate::support::*;

fn backups_on(sb: &Sandbox, dest: &str) -> usize {
    complete_backups(sb, dest).len()
}

#[test]
fn backup_prunes_to_the_policy_and_reports_each_decision() {
    let sb = Sandbox::new("backup_prunes_to_the_policy_and_reports_each_decision");
    write(&sb.path("src/a.dat"), b"data");
    sb.config_dir_job(
        "retention = { keep_last = 2 }",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = sb.offsite(&["--json", "backup"]);
        assert_eq!(r.code, 0, "{r:?}");
        ids.push(r.json()["backup"].as_str().expect("id").to_string());
        let last = r.json();
        if ids.len() == 3 {
            let p = &last["prune"][0];
            assert_eq!(p["destination"], "nas");
            assert_eq!(p["status"], "ok");
            assert_eq!(p["deleted"], serde_json::json!([ids[0]]), "{r:?}");
            let d = p["decisions"].as_array().expect("decisions");
            let first = d
                .iter()
                .find(|x| x["id"] == ids[0].as_str())
                .expect("decision");
            assert_eq!(first["action"], "delete");
            assert!(
                first["reasons"][0]
                    .as_str()
                    .expect("reason")
                    .contains("no keep rule")
            );
        }
    }
    assert_eq!(complete_backups(&sb, "nas"), ids[1..].to_vec());
    assert!(
        !sb.path("dest/db").join(&ids[0]).exists(),
        "the pruned backup's folder is gone"
    );
}

#[test]
fn prune_dry_run_with_now_previews_and_deletes_nothing() {
    let sb = Sandbox::new("prune_dry_run_with_now_previews_and_deletes_nothing");
    write(&sb.path("src/a.dat"), b"data");
    sb.config_dir_job(
        "retention = { keep_last = 1, min_age = \"10d\" }",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    for _ in 0..2 {
        assert_eq!(sb.offsite(&["backup"]).code, 0);
    }
    assert_eq!(backups_on(&sb, "nas"), 2, "min_age keeps both for now");

    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(30 * 24)).to_string();
    let dry = sb.offsite(&["--json", "prune", "--dry-run", "--now", &later]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let p = &dry.json()["prunes"][0];
    assert_eq!(p["dry_run"], true);
    let deletes = p["decisions"]
        .as_array()
        .expect("d")
        .iter()
        .filter(|d| d["action"] == "delete")
        .count();
    assert_eq!(deletes, 1, "{dry:?}");
    assert_eq!(backups_on(&sb, "nas"), 2, "a dry run deletes nothing");

    let human = sb.offsite(&["prune", "--now", &later]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(
        human.stdout.contains("delete") && human.stdout.contains("newest complete backup"),
        "{human:?}"
    );
    assert_eq!(backups_on(&sb, "nas"), 1);

    let bad = sb.offsite(&["prune", "--now", "tomorrow"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn a_destination_policy_overrides_the_job_policy() {
    let sb = Sandbox::new("a_destination_policy_overrides_the_job_policy");
    write(&sb.path("src/a.dat"), b"data");
    sb.config_dir_job(
        "retention = { keep_last = 3 }",
        &["nas", "cold"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\nretention = { keep_last = 1 }\n\n[destination.cold]\nkind = \"path\"\npath = \"dest2\"\n",
    );
    fs::create_dir_all(sb.path("dest2")).expect("mkdir");
    for _ in 0..3 {
        assert_eq!(sb.offsite(&["backup"]).code, 0);
    }
    assert_eq!(backups_on(&sb, "nas"), 1);
    assert_eq!(backups_on(&sb, "cold"), 3);
}

#[test]
fn incomplete_leftovers_are_removed_after_the_grace_period() {
    let sb = Sandbox::new("incomplete_leftovers_are_removed_after_the_grace_period");
    write(&sb.path("src/a.dat"), b"data");
    sb.config_dir_job(
        "retention = { keep_last = 5, incomplete_grace = \"1d\" }",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    write(
        &sb.path("dest/db/20200101T000000Z-full/vol-000000.tar.zst"),
        b"old leftover",
    );
    let fresh = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ-full")
        .to_string();
    write(
        &sb.path("dest/db").join(&fresh).join("vol-000000.tar.zst"),
        b"an upload in progress",
    );
    let r = sb.offsite(&["--json", "prune"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !sb.path("dest/db/20200101T000000Z-full").exists(),
        "old incomplete backup removed"
    );
    assert!(
        sb.path("dest/db").join(&fresh).exists(),
        "a recent incomplete backup is left alone"
    );
}

#[test]
fn without_a_policy_nothing_is_pruned() {
    let sb = Sandbox::new("without_a_policy_nothing_is_pruned");
    write(&sb.path("src/a.dat"), b"data");
    sb.config_dir_job(
        "",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    for _ in 0..2 {
        assert_eq!(sb.offsite(&["backup"]).code, 0);
    }
    let r = sb.offsite(&["prune"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("no retention policy"), "{r:?}");
    assert_eq!(backups_on(&sb, "nas"), 2);
}

/// The hidden files interrupted uploads leave on a folder destination are
/// deleted by prune once older than `incomplete_grace`, with the folder
/// they empty; fresh ones, and another host's, stay.
#[test]
fn prune_removes_what_interrupted_uploads_left_once_past_the_grace() {
    let sb = Sandbox::new("prune_removes_what_interrupted_uploads_left_once_past_the_grace");
    write(&sb.path("src/a.dat"), b"data");
    sb.config_dir_job(
        "retention = { keep_last = 1 }",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.json()["backup"].as_str().expect("id").to_string();
    let host = r.json()["host"].as_str().expect("host").to_string();
    let job = sb.path("dest/db");
    let old = 1_600_000_000;
    let leftover = |dir: &str, name: &str, stale: bool| {
        let p = job.join(dir).join(name);
        write(&p, b"");
        if stale {
            set_mtime(&p, old, 0);
        }
        p
    };
    // In the kept backup's folder: a stale partial (goes) and a fresh temp file (stays).
    let stale = leftover(&id, ".vol-000001.tar.zst.0123abcd.partial", true);
    let fresh = leftover(&id, ".manifest.json.4567ef.tmp", false);
    // A folder holding nothing but a stale partial: goes, folder too.
    let orphan_id = format!("20200101T000000Z-full-{host}");
    let orphan = leftover(&orphan_id, ".vol-000000.tar.zst.89ab.partial", true);
    // Another host's: left alone.
    let theirs = leftover(
        "20200101T000000Z-full-another-host",
        ".vol-000000.tar.zst.cdef.partial",
        true,
    );
    let p = sb.offsite(&["--json", "prune"]);
    assert_eq!(p.code, 0, "{p:?}");
    let listed = p.json()["prunes"][0]["leftovers"].to_string();
    assert!(
        listed.contains(".vol-000001.tar.zst.0123abcd.partial"),
        "{p:?}"
    );
    assert!(
        !stale.exists() && !orphan.exists(),
        "stale leftovers are gone"
    );
    assert!(
        !job.join(&orphan_id).exists(),
        "the folder they emptied is gone"
    );
    assert!(fresh.exists(), "a leftover younger than the grace stays");
    assert!(theirs.exists(), "another host's stays");
    assert_eq!(complete_backups(&sb, "nas"), vec![id]);
}

/// An `upload` that completes a backup everywhere applies retention, as
/// `backup` does after a success.
#[test]
fn an_upload_that_completes_a_backup_prunes_like_backup() {
    let sb = Sandbox::new("an_upload_that_completes_a_backup_prunes_like_backup");
    write(&sb.path("src/a.dat"), b"data");
    fs::create_dir_all(sb.path("dest2")).expect("mkdir");
    sb.config_dir_job(
        "retention = { keep_last = 1 }",
        &["nas", "nas2"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n\n[destination.nas2]\nkind = \"path\"\npath = \"dest2\"\n",
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let first = r.json()["backup"].as_str().expect("id").to_string();
    // The second destination's share goes away: the next backup is partial.
    fs::rename(sb.path("dest2"), sb.path("dest2-away")).expect("unmount");
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 3, "{r:?}");
    let second = r.json()["backup"].as_str().expect("id").to_string();
    assert!(
        r.json()["prune"].as_array().is_none_or(|p| p.is_empty()),
        "no prune after a partial: {r:?}"
    );
    fs::rename(sb.path("dest2-away"), sb.path("dest2")).expect("mount again");
    let u = sb.offsite(&["--json", "upload"]);
    assert_eq!(u.code, 0, "{u:?}");
    let runs = u.json()["runs"].clone();
    assert_eq!(runs[0]["prune"].as_array().map(Vec::len), Some(2), "{u:?}");
    assert_eq!(complete_backups(&sb, "nas"), vec![second.clone()]);
    assert_eq!(complete_backups(&sb, "nas2"), vec![second]);
    assert!(!sb.path("dest/db").join(&first).exists());
}
