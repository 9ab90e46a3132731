//! Cluster backup sets: several offsite processes, each a member with its
//! own staging folder and source, back up one set to one destination; the
//! set's verdict comes from its markers; a set restores as a unit.

use std::process::{Child, Stdio};

use serde_json::Value;

use crate::support::*;
use crate::writers::{Dest, azure_dest, host, offsite, path_dest, run, s3_dest};

const MEMBERS: [&str; 3] = ["sn1", "sn2", "sn3"];
/// A set whose grace window has long passed: its verdict is final.
const OLD_SET: &str = "20260101T020000Z";

fn cluster(extra: &str) -> String {
    format!("cluster = {{ members = [\"sn1\", \"sn2\", \"sn3\"], grace = \"1h\" }}\n{extra}")
}

/// Every member's `--json backup --set OLD_SET` at once; their runs, in order.
fn back_up_together(configs: &[String], dest: &Dest) -> Vec<Run> {
    let children: Vec<Child> = configs
        .iter()
        .map(|c| {
            offsite(c, dest, &["--json", "backup", "--set", OLD_SET])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a member")
        })
        .collect();
    children
        .into_iter()
        .map(|c| Run::from(c.wait_with_output().expect("wait")))
        .collect()
}

/// Restores set `set` with `config` into `to`, which must succeed.
fn restores_set(config: &str, dest: &Dest, set: &str, to: &std::path::Path) {
    let to = to.to_str().expect("utf8");
    let r = run(
        config,
        dest,
        &["restore", "--job", "db", "--set", set, "--to", to],
    );
    assert_eq!(r.code, 0, "{r:?}");
}

/// Each member's configuration (host_id = its member name).
fn members(sb: &Sandbox, dest: &Dest, extra: &str) -> Vec<String> {
    MEMBERS
        .iter()
        .map(|m| host(sb, m, Some(m), dest, &cluster(extra)))
        .collect()
}

/// The set `set` as `list --json` judges it from `config`.
fn listed_set(config: &str, dest: &Dest, set: &str) -> Value {
    let l = run(config, dest, &["--json", "list"]);
    assert_eq!(l.code, 0, "{l:?}");
    crate::json_contract::valid("list", &l.json());
    let sets = l.json()["listings"][0]["sets"].clone();
    sets.as_array()
        .expect("a cluster job lists its sets")
        .iter()
        .find(|s| s["set"] == set)
        .cloned()
        .unwrap_or_else(|| panic!("set {set} is not listed: {l:?}"))
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("a list of members")
        .iter()
        .map(|m| m.as_str().expect("a member"))
        .collect()
}

/// Three members back up set `OLD_SET` at once; list and verify say it is
/// complete; the set restores, each member into its own folder, byte for
/// byte, and one member alone into the folder given.
fn three_members_make_one_complete_set(test: &str, make: fn(&Sandbox) -> Dest) {
    let sb = Sandbox::new(test);
    let dest = make(&sb);
    let configs = members(&sb, &dest, "");
    let runs = back_up_together(&configs, &dest);
    for (r, m) in runs.iter().zip(MEMBERS) {
        assert_eq!(r.code, 0, "{m}: {r:?}");
        assert_eq!(r.json()["backup"], format!("{OLD_SET}-full-{m}"), "{r:?}");
        assert_eq!(r.json()["host"], m, "{r:?}");
    }
    let set = listed_set(&configs[0], &dest, OLD_SET);
    assert_eq!(set["status"], "complete", "{set:#}");
    assert_eq!(names(&set["members_ok"]), MEMBERS, "{set:#}");

    let v = run(&configs[1], &dest, &["--json", "verify", "--set", OLD_SET]);
    assert_eq!(v.code, 0, "{v:?}");
    let j = v.json();
    assert_eq!(j["sets"][0]["status"], "complete", "{v:?}");
    assert_eq!(j["verified"].as_array().map(Vec::len), Some(3), "{v:?}");

    let to = sb.path("restored");
    restores_set(&configs[2], &dest, OLD_SET, &to);
    for m in MEMBERS {
        assert_same_tree(&sb.path(&format!("src-{m}")), &to.join(m));
    }
    let one = sb.path("one");
    let r = run(
        &configs[0],
        &dest,
        &[
            "restore",
            "--job",
            "db",
            "--set",
            OLD_SET,
            "--member",
            "sn2",
            "--to",
            one.to_str().expect("utf8"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src-sn2"), &one);
}

#[test]
fn three_members_make_one_complete_set_in_a_folder() {
    three_members_make_one_complete_set("cluster_path", path_dest);
}

#[test]
fn three_members_make_one_complete_set_on_s3() {
    three_members_make_one_complete_set("cluster_s3", s3_dest);
}

#[test]
fn three_members_make_one_complete_set_on_azure() {
    three_members_make_one_complete_set("cluster_azure", azure_dest);
}

/// A set some members did not finish is partial and names them: verify
/// exits 3; restore refuses it unless --allow-partial, then restores the
/// members there are (exit 3). A member that staged but did not upload
/// finishes the set with `upload`; the last one completes it.
#[test]
fn a_partial_set_names_its_missing_members_until_they_finish() {
    let sb = Sandbox::new("cluster_partial");
    let dest = path_dest(&sb);
    let configs = members(&sb, &dest, "");
    let r = run(&configs[0], &dest, &["backup", "--set", OLD_SET]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(
        &configs[1],
        &dest,
        &["backup", "--no-upload", "--set", OLD_SET],
    );
    assert_eq!(r.code, 0, "{r:?}");

    let set = listed_set(&configs[2], &dest, OLD_SET);
    assert_eq!(set["status"], "partial", "{set:#}");
    assert_eq!(names(&set["members_ok"]), ["sn1"], "{set:#}");
    assert_eq!(names(&set["members_missing"]), ["sn2", "sn3"], "{set:#}");
    let s = run(&configs[0], &dest, &["--json", "status", "--check"]);
    assert_eq!(s.code, 1, "a partial set is a problem: {s:?}");
    crate::json_contract::valid("status", &s.json());
    assert_eq!(s.json()["problems"][0]["status"], "partial_set", "{s:?}");
    let shown = &s.json()["jobs"][0]["sets"][0];
    assert_eq!(shown["sets"][0]["set"], OLD_SET, "{s:?}");
    assert_eq!(names(&shown["sets"][0]["members_missing"]), ["sn2", "sn3"]);
    let v = run(&configs[0], &dest, &["--json", "verify", "--set", OLD_SET]);
    assert_eq!(v.code, 3, "a partial set exits 3: {v:?}");
    assert_eq!(v.json()["status"], "partial", "{v:?}");
    crate::json_contract::valid("verify", &v.json());
    assert_eq!(
        names(&v.json()["sets"][0]["members_missing"]),
        ["sn2", "sn3"]
    );

    let to = sb.path("restored");
    let to_text = to.to_str().expect("utf8");
    let restore = ["restore", "--job", "db", "--set", OLD_SET, "--to", to_text];
    let refused = run(&configs[0], &dest, &restore);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("--allow-partial"), "{refused:?}");
    assert!(refused.stderr.contains("missing sn2, sn3"), "{refused:?}");
    assert!(!to.join("sn1").exists(), "nothing restored when refused");
    let mut allowed = restore.to_vec();
    allowed.push("--allow-partial");
    let r = run(&configs[0], &dest, &allowed);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stdout.contains("PARTIAL") && r.stdout.contains("missing sn2, sn3"),
        "{r:?}"
    );
    assert_same_tree(&sb.path("src-sn1"), &to.join("sn1"));
    assert!(!to.join("sn2").exists());
    let again = sb.path("restored-json");
    let again = again.to_str().expect("utf8");
    let r = run(
        &configs[0],
        &dest,
        &[
            "--json",
            "restore",
            "--job",
            "db",
            "--set",
            OLD_SET,
            "--to",
            again,
            "--allow-partial",
        ],
    );
    assert_eq!(r.code, 3, "{r:?}");
    crate::json_contract::valid("restore", &r.json());

    // sn2 ships what it staged; sn3 makes its part late.
    assert_eq!(run(&configs[1], &dest, &["upload"]).code, 0);
    let set = listed_set(&configs[2], &dest, OLD_SET);
    assert_eq!(names(&set["members_missing"]), ["sn3"], "{set:#}");
    let r = run(&configs[2], &dest, &["backup", "--set", OLD_SET]);
    assert_eq!(r.code, 0, "{r:?}");
    let set = listed_set(&configs[2], &dest, OLD_SET);
    assert_eq!(set["status"], "complete", "{set:#}");
    let v = run(&configs[0], &dest, &["verify", "--set", OLD_SET]);
    assert_eq!(v.code, 0, "{v:?}");

    // A second backup of the same member in the same set is refused.
    let again = run(&configs[2], &dest, &["backup", "--set", OLD_SET]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("one backup per member"), "{again:?}");
}

/// A member whose run fails marks itself failed in the set; a set whose
/// grace window is still open is in progress, not partial.
#[test]
fn a_failed_member_is_named_and_a_fresh_set_is_in_progress() {
    let sb = Sandbox::new("cluster_failed");
    let dest = path_dest(&sb);
    let configs = members(&sb, &dest, "");
    let failing = host(
        &sb,
        "sn3",
        Some("sn3"),
        &dest,
        &cluster("pre = [\"exit 7\"]"),
    );
    for c in &configs[..2] {
        assert_eq!(run(c, &dest, &["backup", "--set", OLD_SET]).code, 0);
    }
    let r = run(&failing, &dest, &["--json", "backup", "--set", OLD_SET]);
    assert_eq!(r.code, 1, "{r:?}");
    let set = listed_set(&configs[0], &dest, OLD_SET);
    assert_eq!(set["status"], "partial", "{set:#}");
    assert_eq!(names(&set["members_failed"]), ["sn3"], "{set:#}");
    // Its hook mended, the failed member makes its part of the same set.
    let mended = host(&sb, "sn3", Some("sn3"), &dest, &cluster(""));
    let r = run(&mended, &dest, &["backup", "--set", OLD_SET]);
    assert_eq!(r.code, 0, "a failed attempt may be made again: {r:?}");
    let set = listed_set(&configs[0], &dest, OLD_SET);
    assert_eq!(set["status"], "complete", "{set:#}");

    // No --set: the member's set is the current window's, still open.
    let r = run(&configs[0], &dest, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.json()["backup"].as_str().expect("id").to_string();
    let fresh = &id[..16];
    assert!(
        fresh.ends_with("0000Z"),
        "a window starts on the hour: {id}"
    );
    let set = listed_set(&configs[0], &dest, fresh);
    assert_eq!(set["status"], "in_progress", "{set:#}");
    assert_eq!(names(&set["members_missing"]), ["sn2", "sn3"], "{set:#}");
}

/// A host whose member name is not one of the cluster's is a configuration
/// error; so is `--set` on a job without a cluster.
#[test]
fn a_stranger_and_a_set_without_a_cluster_are_refused() {
    let sb = Sandbox::new("cluster_config");
    let dest = path_dest(&sb);
    let stranger = host(&sb, "sn9", Some("sn9"), &dest, &cluster(""));
    let r = run(&stranger, &dest, &["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("\"sn9\"") && r.stderr.contains("not one of the members"),
        "{r:?}"
    );
    // run = "one" needs a destination whose creates are exclusive.
    let ftp = Dest {
        table: "[destination.d]\nkind = \"ftp\"\nhost = \"127.0.0.1\"\nuser = \"u\"\npassword_env = \"FTP_PASSWORD\"\npath = \"/\"\n".into(),
        env: vec![("FTP_PASSWORD".into(), "x".into())],
    };
    let on_ftp = host(
        &sb,
        "sn1",
        Some("sn1"),
        &ftp,
        "cluster = { members = [\"sn1\"], run = \"one\" }",
    );
    let r = run(&on_ftp, &ftp, &["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("run = \"one\""), "{r:?}");
    let single = host(&sb, "solo", Some("solo"), &dest, "");
    let r = run(&single, &dest, &["backup", "--set", OLD_SET]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("has no cluster"), "{r:?}");
}

/// Retention counts complete sets: with keep_last = 1 the newest complete
/// set stays, and so does the older set a kept member's incremental builds
/// on; a newer partial set stays (no newer set is complete), a set in
/// progress stays, and an old partial set goes, markers and all.
#[test]
fn retention_keeps_the_newest_complete_set_and_what_it_needs() {
    let sb = Sandbox::new("cluster_retention");
    let dest = path_dest(&sb);
    let configs = members(&sb, &dest, "retention = { keep_last = 1 }");
    let backup = |m: usize, set: &str, extra: &[&str]| {
        let mut args = vec!["backup", "--set", set];
        args.extend(extra);
        let r = run(&configs[m], &dest, &args);
        assert_eq!(r.code, 0, "{r:?}");
    };
    let (s0, s1, s2, s3) = (
        "20260101T020000Z",
        "20260102T020000Z",
        "20260103T020000Z",
        "20260104T020000Z",
    );
    backup(0, s0, &[]);
    for m in 0..3 {
        backup(m, s1, &[]);
    }
    // sn1's part of s2 is an incremental on its part of s1.
    backup(0, s2, &["--incremental"]);
    backup(1, s2, &[]);
    backup(2, s2, &[]);
    backup(0, s3, &[]);
    backup(1, s3, &[]);
    let r = run(&configs[0], &dest, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let fresh = r.json()["backup"].as_str().expect("id")[..16].to_string();

    let p = run(&configs[1], &dest, &["--json", "prune", "--dry-run"]);
    assert_eq!(p.code, 0, "{p:?}");
    let sets = p.json()["prunes"][0]["sets"].clone();
    let fate = |set: &str| {
        sets.as_array()
            .expect("sets")
            .iter()
            .find(|d| d["set"] == set)
            .unwrap_or_else(|| panic!("no decision on {set}: {p:?}"))
            .clone()
    };
    assert_eq!(fate(s2)["action"], "keep", "{p:?}");
    assert_eq!(fate(s1)["action"], "keep", "{p:?}");
    assert!(
        fate(s1)["reasons"].to_string().contains("builds on it"),
        "{p:?}"
    );
    assert_eq!(fate(s3)["action"], "keep", "{p:?}");
    assert!(
        fate(s3)["reasons"]
            .to_string()
            .contains("no newer set is complete"),
        "{p:?}"
    );
    assert_eq!(fate(&fresh)["action"], "keep", "{p:?}");
    assert!(
        fate(&fresh)["reasons"].to_string().contains("in progress"),
        "{p:?}"
    );
    // s0 went when s1 became complete (the prune after sn3's backup).
    assert!(
        !sets.to_string().contains(s0),
        "s0 was pruned already: {p:?}"
    );
    assert!(!sb.path(&format!("dest/db/{s0}-full-sn1")).exists());
    assert!(
        !sb.path(&format!("dest/db/index/{s0}")).exists(),
        "its markers went too"
    );
    let to = sb.path("restored");
    restores_set(&configs[2], &dest, s2, &to);
    for m in MEMBERS {
        assert_same_tree(&sb.path(&format!("src-{m}")), &to.join(m));
    }
}

/// Chains per member: an incremental builds on the member's own last
/// backup, unless the member missed a full set since, when it makes a full.
#[test]
fn a_member_that_missed_the_full_set_makes_a_full() {
    let sb = Sandbox::new("cluster_chain");
    let dest = path_dest(&sb);
    let configs = members(
        &sb,
        &dest,
        "schedule = { full = \"0 2 * * *\", incremental = \"0 3 * * *\", timezone = \"UTC\" }",
    );
    let backup = |set: &str| {
        let r = run(
            &configs[0],
            &dest,
            &["--json", "backup", "--incremental", "--set", set],
        );
        assert_eq!(r.code, 0, "{r:?}");
        r.json()
    };
    assert_eq!(
        backup("20260101T020000Z")["kind"],
        "full",
        "nothing to build on yet"
    );
    let incr = backup("20260101T030000Z");
    assert_eq!(incr["kind"], "incr", "{incr:#}");
    // The full set of 2026-01-02 02:00 came and went without this member.
    let after_gap = backup("20260103T030000Z");
    assert_eq!(after_gap["kind"], "full", "{after_gap:#}");
    assert!(
        after_gap["notes"]
            .to_string()
            .contains("missed the full set of 20260102T020000Z"),
        "{after_gap:#}"
    );
}

const OWNERS: [&str; 5] = ["m1", "m2", "m3", "m4", "m5"];

/// Members of a cluster whose run is the cluster's: one member per slot.
fn one_owner_members(sb: &Sandbox, dest: &Dest) -> Vec<String> {
    let cluster = "cluster = { members = [\"m1\", \"m2\", \"m3\", \"m4\", \"m5\"], run = \"one\", takeover = \"1h\" }";
    OWNERS
        .iter()
        .map(|m| host(sb, m, Some(m), dest, cluster))
        .collect()
}

/// Five members race for one slot: exactly one backs it up, the others
/// skip (exit 0, status skipped) naming the owner; the set is complete
/// with the owner alone.
fn five_members_race_for_one_slot(test: &str, make: fn(&Sandbox) -> Dest) {
    let sb = Sandbox::new(test);
    let dest = make(&sb);
    let configs = one_owner_members(&sb, &dest);
    let runs = back_up_together(&configs, &dest);
    let mut owners = Vec::new();
    for (r, m) in runs.iter().zip(OWNERS) {
        assert_eq!(r.code, 0, "{m}: {r:?}");
        match r.json()["status"].as_str() {
            Some("ok") => owners.push(m),
            Some("skipped") => {
                assert!(r.json()["notes"].to_string().contains("by member"), "{r:?}")
            }
            _ => panic!("{m}: {r:?}"),
        }
    }
    assert_eq!(
        owners.len(),
        1,
        "exactly one member owns the slot: {owners:?}"
    );
    let set = listed_set(&configs[0], &dest, OLD_SET);
    assert_eq!(set["status"], "complete", "{set:#}");
    assert_eq!(names(&set["members_ok"]), owners, "{set:#}");
}

#[test]
fn five_members_race_for_one_slot_in_a_folder() {
    five_members_race_for_one_slot("cluster_one_path", path_dest);
}

#[test]
fn five_members_race_for_one_slot_on_azure() {
    five_members_race_for_one_slot("cluster_one_azure", azure_dest);
}

/// On moto (whose conditional writes are not atomic) the claims come one
/// after the other: the first member owns the slot, the others are told.
#[test]
fn sequential_claims_on_s3_have_one_owner() {
    let sb = Sandbox::new("cluster_one_s3");
    let dest = s3_dest(&sb);
    let configs = one_owner_members(&sb, &dest);
    for (i, c) in configs.iter().enumerate().take(3) {
        let r = run(c, &dest, &["--json", "backup", "--set", OLD_SET]);
        assert_eq!(r.code, 0, "{r:?}");
        let want = if i == 0 { "ok" } else { "skipped" };
        assert_eq!(r.json()["status"], want, "{r:?}");
    }
    let r = run(&configs[2], &dest, &["backup", "--set", OLD_SET]);
    assert!(r.stdout.contains("backed up by member \"m1\""), "{r:?}");
}

/// An owner that has not finished its set `takeover` after the set's time
/// is replaced: the next member claims a new set and backs up into it,
/// never into the owner's; the owner, back, finishes its own set, and
/// both sets are complete.
#[test]
fn a_late_owner_is_taken_over_by_a_new_set() {
    let sb = Sandbox::new("cluster_takeover");
    let dest = path_dest(&sb);
    let configs = one_owner_members(&sb, &dest);
    // m1 claims the set and stops before shipping (as if it hung).
    let r = run(
        &configs[0],
        &dest,
        &["--json", "backup", "--no-upload", "--set", OLD_SET],
    );
    assert_eq!(r.code, 0, "{r:?}");
    // Within takeover of the claim, the slot is m1's.
    let r = run(&configs[1], &dest, &["--json", "backup", "--set", OLD_SET]);
    assert_eq!(r.json()["status"], "skipped", "{r:?}");
    assert!(r.json()["notes"].to_string().contains("has until"), "{r:?}");
    // An hour after the claim (its record says so), m2 takes over with a
    // new set whose time is the claim's deadline.
    let claim = sb.path(&format!("dest/db/index/{OLD_SET}/claim"));
    std::fs::write(&claim, br#"{"member": "m1", "at": "2026-01-01T02:00:05Z"}"#)
        .expect("age the claim");
    let r = run(&configs[1], &dest, &["--json", "backup", "--set", OLD_SET]);
    assert_eq!(r.code, 0, "{r:?}");
    let taken = "20260101T030005Z";
    assert_eq!(r.json()["backup"], format!("{taken}-full-m2"), "{r:?}");
    assert!(r.json()["notes"].to_string().contains("took over"), "{r:?}");
    // m3 finds the takeover set finished and skips.
    let r = run(&configs[2], &dest, &["--json", "backup", "--set", OLD_SET]);
    assert_eq!(r.json()["status"], "skipped", "{r:?}");
    // m1 comes back and finishes its own set, untouched by m2.
    assert_eq!(run(&configs[0], &dest, &["upload"]).code, 0);
    for set in [OLD_SET, taken] {
        let v = listed_set(&configs[3], &dest, set);
        assert_eq!(v["status"], "complete", "{v:#}");
    }
    let to = sb.path("restored");
    restores_set(&configs[4], &dest, taken, &to);
    assert_same_tree(&sb.path("src-m2"), &to.join("m2"));
}

/// A put-only S3 member claims and backs up; the verdict is read with the
/// restorer's credentials.
#[test]
fn a_put_only_member_claims_and_backs_up() {
    let sb = Sandbox::new("cluster_put_only");
    let m = crate::s3::moto();
    let table =
        crate::s3::s3_table(&sb, "put_only = true").replace("[destination.s3]", "[destination.d]");
    let keys = |user: &str| {
        vec![
            (
                "AWS_ACCESS_KEY_ID".to_string(),
                m[&format!("MOTO_{user}_ACCESS_KEY_ID")].clone(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                m[&format!("MOTO_{user}_SECRET_ACCESS_KEY")].clone(),
            ),
            ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
        ]
    };
    let uploader = Dest {
        table: table.clone(),
        env: keys("UPLOADER"),
    };
    let reader = Dest {
        table: table.replace("put_only = true\n", ""),
        env: keys("ADMIN"),
    };
    let configs = one_owner_members(&sb, &uploader);
    let r = run(
        &configs[0],
        &uploader,
        &["--json", "backup", "--set", OLD_SET],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["status"], "ok", "{r:?}");
    let r = run(
        &configs[1],
        &uploader,
        &["--json", "backup", "--set", OLD_SET],
    );
    assert_eq!(r.json()["status"], "skipped", "{r:?}");
    assert!(
        r.json()["notes"].to_string().contains("cannot read which"),
        "{r:?}"
    );
    let restorer = host(
        &sb,
        "m1",
        Some("m1"),
        &reader,
        "cluster = { members = [\"m1\", \"m2\", \"m3\", \"m4\", \"m5\"], run = \"one\" }",
    );
    let set = listed_set(&restorer, &reader, OLD_SET);
    assert_eq!(set["status"], "complete", "{set:#}");
    assert_eq!(names(&set["members_ok"]), ["m1"], "{set:#}");
}

/// A member killed mid-upload leaves its part incomplete: the set is
/// partial and names it (verify exits 3); its `upload` finishes the part
/// and the set is complete.
#[test]
fn a_member_killed_mid_upload_is_incomplete_until_its_upload_finishes() {
    let sb = Sandbox::new("cluster_killed");
    let dest = path_dest(&sb);
    let slow = Dest {
        table: "[destination.d]\nkind = \"path\"\npath = \"dest\"\nbwlimit = \"64KiB\"\npart_size = \"32KiB\"\n".into(),
        env: Vec::new(),
    };
    let configs = members(&sb, &dest, "");
    for c in &configs[1..] {
        assert_eq!(run(c, &dest, &["backup", "--set", OLD_SET]).code, 0);
    }
    let sn1 = host(&sb, "sn1", Some("sn1"), &slow, &cluster(""));
    let mut child = offsite(&sn1, &slow, &["backup", "--set", OLD_SET])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sn1");
    let started = sb.path(&format!("dest/db/index/{OLD_SET}/sn1.started"));
    wait_for(
        "sn1 to start shipping",
        std::time::Duration::from_secs(30),
        || started.exists(),
    );
    child.kill().expect("kill sn1");
    let _ = child.wait();
    let set = listed_set(&configs[0], &dest, OLD_SET);
    assert_eq!(set["status"], "partial", "{set:#}");
    assert_eq!(names(&set["members_incomplete"]), ["sn1"], "{set:#}");
    let v = run(&configs[0], &dest, &["--json", "verify", "--set", OLD_SET]);
    assert_eq!(v.code, 3, "{v:?}");
    assert_eq!(names(&v.json()["sets"][0]["members_incomplete"]), ["sn1"]);

    let r = run(&sn1, &dest, &["upload"]);
    assert_eq!(r.code, 0, "{r:?}");
    let set = listed_set(&configs[0], &dest, OLD_SET);
    assert_eq!(set["status"], "complete", "{set:#}");
}

/// claim_if lets only the member where it succeeds claim the slot (here:
/// the one named m3); the others skip without claiming. Commands the job
/// runs see the set and the member.
#[test]
fn only_a_member_where_claim_if_succeeds_claims_the_slot() {
    let sb = Sandbox::new("cluster_claim_if");
    let dest = path_dest(&sb);
    let cluster = "cluster = { members = [\"m1\", \"m2\", \"m3\"], run = \"one\", claim_if = \"test \\\"$OFFSITE_MEMBER\\\" = m3\" }\npre = [\"echo \\\"$OFFSITE_SET $OFFSITE_MEMBER\\\" > seen-$OFFSITE_MEMBER\"]";
    let configs: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| host(&sb, m, Some(m), &dest, cluster))
        .collect();
    for (c, m) in configs.iter().zip(["m1", "m2"]) {
        let r = run(c, &dest, &["--json", "backup", "--set", OLD_SET]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.json()["status"], "skipped", "{r:?}");
        assert!(
            r.json()["notes"].to_string().contains("claim_if"),
            "{m}: {r:?}"
        );
    }
    assert!(
        !sb.path(&format!("dest/db/index/{OLD_SET}/claim")).exists(),
        "nobody claimed yet"
    );
    let r = run(&configs[2], &dest, &["--json", "backup", "--set", OLD_SET]);
    assert_eq!(r.json()["status"], "ok", "{r:?}");
    let seen = std::fs::read_to_string(sb.path("seen-m3")).expect("the hook ran");
    assert_eq!(seen.trim(), format!("{OLD_SET} m3"));
    let set = listed_set(&configs[0], &dest, OLD_SET);
    assert_eq!(set["status"], "complete", "{set:#}");
}

/// Sends `signal` to process `pid`.
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a child's pid and a signal number has no memory effects.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill {pid} {signal}");
}

/// The owner of a slot is stopped (SIGSTOP) mid-upload past its takeover
/// time: another member takes over with a new set; the owner, resumed,
/// finishes its own set without touching the new one, and both restore.
#[test]
fn an_owner_stopped_past_takeover_is_replaced_and_damages_nothing_when_resumed() {
    let sb = Sandbox::new("cluster_sigstop");
    let dest = path_dest(&sb);
    let slow = Dest {
        table: "[destination.d]\nkind = \"path\"\npath = \"dest\"\nbwlimit = \"64KiB\"\npart_size = \"32KiB\"\n".into(),
        env: Vec::new(),
    };
    let configs = one_owner_members(&sb, &dest);
    let cluster = "cluster = { members = [\"m1\", \"m2\", \"m3\", \"m4\", \"m5\"], run = \"one\", takeover = \"1h\" }";
    let owner = host(&sb, "m1", Some("m1"), &slow, cluster);
    let child = offsite(&owner, &slow, &["--json", "backup", "--set", OLD_SET])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start m1");
    let started = sb.path(&format!("dest/db/index/{OLD_SET}/m1.started"));
    wait_for(
        "m1 to start shipping",
        std::time::Duration::from_secs(30),
        || started.exists(),
    );
    signal(child.id(), libc::SIGSTOP);
    // An hour passes (the claim says so): m2 takes over with a new set.
    let claim = sb.path(&format!("dest/db/index/{OLD_SET}/claim"));
    std::fs::write(&claim, br#"{"member": "m1", "at": "2026-01-01T02:00:05Z"}"#)
        .expect("age the claim");
    let r = run(&configs[1], &dest, &["--json", "backup", "--set", OLD_SET]);
    assert_eq!(r.code, 0, "{r:?}");
    let taken = "20260101T030005Z";
    assert_eq!(r.json()["backup"], format!("{taken}-full-m2"), "{r:?}");
    signal(child.id(), libc::SIGCONT);
    let out = child.wait_with_output().expect("m1 finishes");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::new(),
    };
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["backup"], format!("{OLD_SET}-full-m1"), "{r:?}");
    for (set, m) in [(OLD_SET, "m1"), (taken, "m2")] {
        let v = listed_set(&configs[3], &dest, set);
        assert_eq!(v["status"], "complete", "{v:#}");
        assert_eq!(names(&v["members_ok"]), [m], "{v:#}");
        let to = sb.path(&format!("restored-{m}"));
        restores_set(&configs[4], &dest, set, &to);
        assert_same_tree(&sb.path(&format!("src-{m}")), &to.join(m));
    }
}

/// The cluster recipes (docs/clusters.md) are valid configurations: each `toml`
/// block of its "Clusters" section, given a staging folder, its `s3`
/// destination (a folder here) and this host's member name, loads.
#[test]
fn the_readme_cluster_recipes_load() {
    let sb = Sandbox::new("cluster_recipes");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/clusters.md"))
        .expect("docs/clusters.md");
    let start = readme.find("# Clusters").expect("the Clusters page");
    let end = readme.len();
    let blocks: Vec<&str> = readme[start..end]
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().expect("a closed block"))
        .collect();
    assert!(
        blocks.len() >= 4,
        "the example and three recipes: {}",
        blocks.len()
    );
    for (i, block) in blocks.iter().enumerate() {
        let members = block
            .split("members = [\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a member");
        let config = sb.path(&format!("recipe-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "host_id = \"{members}\"\n[staging]\ndir = \"staging\"\n\n{block}\n[destination.s3]\nkind = \"path\"\npath = \"dest\"\n"
            ),
        )
        .expect("write");
        let r = Run::from(
            std::process::Command::new(bin())
                .args([
                    "--config",
                    config.to_str().expect("utf8"),
                    "--json",
                    "status",
                ])
                .env("OFFSITE_MEMBER", members)
                .output()
                .expect("run"),
        );
        assert_eq!(r.code, 0, "recipe {i}:\n{block}\n{r:?}");
    }
}

/// A member started by hand late (no --set) joins the set its peers
/// started, while that set is in progress and lacks its part.
#[test]
fn a_late_member_joins_the_open_set_of_its_peers() {
    let sb = Sandbox::new("cluster_join");
    let dest = path_dest(&sb);
    let configs = members(&sb, &dest, "");
    // A set a few minutes old: not this window's start, still in its grace.
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(3);
    let open = started.strftime("%Y%m%dT%H%M%SZ").to_string();
    let r = run(&configs[0], &dest, &["backup", "--set", &open]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&configs[1], &dest, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["backup"], format!("{open}-full-sn2"), "{r:?}");
    assert!(
        r.json()["notes"].to_string().contains("joined set"),
        "{r:?}"
    );
    let set = listed_set(&configs[2], &dest, &open);
    assert_eq!(set["status"], "in_progress", "{set:#}");
    assert_eq!(names(&set["members_missing"]), ["sn3"], "{set:#}");
}
