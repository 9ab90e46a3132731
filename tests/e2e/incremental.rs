//! Incremental backups: only changes are packed, and any backup of a chain restores exactly.

use std::fs;

use crate::support::*;

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";

fn backup(sb: &Sandbox, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "backup"];
    all.extend_from_slice(args);
    let r = sb.offsite(&all);
    assert_eq!(r.code, 0, "{r:?}");
    r.json()
}

fn restore_to(sb: &Sandbox, id: &str, to: &str) -> std::path::PathBuf {
    let r = restore_backup(sb, id, to);
    assert_eq!(r.code, 0, "{r:?}");
    sb.path(to)
}

#[test]
fn a_chain_of_incrementals_restores_every_point_byte_for_byte() {
    let sb = Sandbox::new("a_chain_of_incrementals_restores_every_point_byte_for_byte");
    write(&sb.path("src/chunk-0"), &noise(200_000, 1));
    write(&sb.path("src/chunk-1"), &noise(200_000, 2));
    write(&sb.path("src/writer.chk"), b"00000001");
    write(&sb.path("src/index/old"), b"to be deleted");
    sb.config_dir_job("volume_size = \"128KiB\"", &["nas"], NAS);

    let full = backup(&sb, &["--full"]);
    assert_eq!(full["kind"], "full");
    let full_id = full["backup"].as_str().expect("id").to_string();
    let snap_full = snapshot(&sb.path("src"));

    // Change one chunk, append a new one, delete a file, touch one without changing it.
    write(&sb.path("src/chunk-1"), &noise(200_000, 3));
    write(&sb.path("src/chunk-2 new"), &noise(50_000, 4));
    write(&sb.path("src/writer.chk"), b"00000002");
    fs::remove_file(sb.path("src/index/old")).expect("rm");
    let c0 = sb.path("src/chunk-0");
    let f = fs::File::options().write(true).open(&c0).expect("open");
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .expect("touch");
    drop(f);

    let i1 = backup(&sb, &["--incremental"]);
    assert_eq!(i1["kind"], "incr", "{i1}");
    let i1_id = i1["backup"].as_str().expect("id").to_string();
    assert!(i1_id.contains("Z-incr-"), "{i1_id}");
    assert_eq!(
        i1["staged"]["files"], 3,
        "only the changed and new files are packed: {i1}"
    );
    assert!(
        i1["staged"]["stored_bytes"].as_u64().expect("stored") < 300_000,
        "the unchanged (touched) chunk-0 is not packed again: {i1}"
    );
    let m: serde_json::Value = serde_json::from_slice(
        &fs::read(sb.path("dest/db").join(&i1_id).join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(m["parent"], full_id.as_str());
    assert_eq!(m["deleted"], serde_json::json!(["index/old"]));
    // `list` shows each incremental's parent.
    let l = sb.offsite(&["--json", "list"]);
    let listed = &l.json()["listings"][0]["backups"];
    assert_eq!(listed[1]["parent"], full_id.as_str(), "{l:?}");
    let h = sb.offsite(&["list"]);
    assert!(h.stdout.contains(&format!("incr on {full_id}")), "{h:?}");
    let chunk0 = m["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == "chunk-0")
        .expect("chunk-0");
    assert_eq!(
        chunk0["backup"],
        full_id.as_str(),
        "unchanged bytes point at the full"
    );
    let snap_i1 = snapshot(&sb.path("src"));

    write(&sb.path("src/chunk-2 new"), &noise(60_000, 5));
    let i2 = backup(&sb, &["--incremental"]);
    let i2_id = i2["backup"].as_str().expect("id").to_string();
    assert_eq!(i2["staged"]["files"], 1, "{i2}");

    assert_same_tree(&sb.path("src"), &restore_to(&sb, &i2_id, "r-i2"));
    let r1 = restore_to(&sb, &i1_id, "r-i1");
    assert_eq!(
        snapshot(&r1).keys().collect::<Vec<_>>(),
        snap_i1.keys().collect::<Vec<_>>()
    );
    for (k, v) in &snap_i1 {
        assert!(
            snapshot(&r1)[k].1 == v.1,
            "{k} differs in the restore of {i1_id}"
        );
    }
    let rf = restore_to(&sb, &full_id, "r-full");
    for (k, v) in &snap_full {
        assert!(
            snapshot(&rf)[k].1 == v.1,
            "{k} differs in the restore of the full"
        );
    }
    let v = sb.offsite(&["verify"]);
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn an_incremental_without_a_full_becomes_full_and_says_so() {
    let sb = Sandbox::new("an_incremental_without_a_full_becomes_full_and_says_so");
    write(&sb.path("src/a"), b"a");
    sb.config_dir_job("", &["nas"], NAS);
    let j = backup(&sb, &["--incremental"]);
    assert_eq!(j["kind"], "full");
    assert!(j["notes"].to_string().contains("this one is full"), "{j}");
    // Notes go to stderr, once, as they come.
    let h = sb.offsite(&["backup", "--incremental"]);
    assert_eq!(h.code, 0, "{h:?}");
    assert_eq!(h.stderr.matches("incremental on").count(), 1, "{h:?}");
    assert!(!h.stdout.contains("incremental on"), "{h:?}");
}

#[test]
fn command_sources_are_always_full() {
    let sb = Sandbox::new("command_sources_are_always_full");
    sb.write_config(&format!(
        "[staging]\ndir = \"staging\"\nmin_free = \"1MiB\"\n[[job]]\nname = \"db\"\nsource = {{ kind = \"command\", run = \"echo dump\", output = \"d.sql\" }}\ndestinations = [\"nas\"]\n{NAS}"
    ));
    backup(&sb, &[]);
    let j = backup(&sb, &["--incremental"]);
    assert_eq!(j["kind"], "full");
    assert!(
        j["notes"].to_string().contains("always backed up in full"),
        "{j}"
    );
}

#[test]
fn retention_keeps_the_full_an_incremental_needs() {
    let sb = Sandbox::new("retention_keeps_the_full_an_incremental_needs");
    write(&sb.path("src/a"), &noise(10_000, 1));
    sb.config_dir_job("retention = { keep_last = 1 }", &["nas"], NAS);
    let full = backup(&sb, &["--full"]);
    write(&sb.path("src/b"), b"new");
    let incr = backup(&sb, &["--incremental"]);
    let ids = complete_backups(&sb, "nas");
    assert_eq!(
        ids,
        vec![
            full["backup"].as_str().expect("id").to_string(),
            incr["backup"].as_str().expect("id").to_string()
        ],
        "keep_last = 1 keeps the incremental, and so its full"
    );
    let reasons = incr["prune"][0]["decisions"].to_string();
    assert!(reasons.contains("needed by"), "{reasons}");
    assert_same_tree(&sb.path("src"), &restore_to(&sb, "latest", "r"));
}
