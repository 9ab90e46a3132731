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

/// Writes `data` over `path` at `offset`, in place, and moves its time on
/// (a write within the same clock tick must still be seen).
fn write_in_place(path: &std::path::Path, offset: u64, data: &[u8], tick: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::options().write(true).open(path).expect("open");
    f.write_all_at(data, offset).expect("write");
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(tick))
        .expect("touch");
}

/// A 1 MiB table backed up full, then one page changed and an incremental:
/// the sandbox, the table's path and the incremental's id.
fn one_changed_page(test: &str) -> (Sandbox, std::path::PathBuf, String) {
    let sb = Sandbox::new(test);
    let table = sb.path("src/table");
    write(&table, &noise(1 << 20, 1));
    sb.config_dir_job("", &["nas"], NAS);
    backup(&sb, &["--full"]);
    write_in_place(&table, 8192 * 5, &noise(8192, 2), 5);
    let i1 = backup(&sb, &["--incremental"]);
    let id = i1["backup"].as_str().expect("id").to_string();
    (sb, table, id)
}

/// Rewrites backup `id`'s manifest on the folder destination with `edit`.
fn edit_manifest(sb: &Sandbox, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = sb.path("dest/db").join(id).join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("manifest")).expect("json");
    edit(&mut m);
    fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
}

/// Edits the manifest entry of the file `table` in backup `id`.
fn edit_table_entry(sb: &Sandbox, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    edit_manifest(sb, id, |m| {
        let files = m["files"].as_array_mut().expect("files");
        edit(
            files
                .iter_mut()
                .find(|f| f["path"] == "table")
                .expect("table"),
        );
    });
}

fn manifest_of(sb: &Sandbox, id: &str) -> serde_json::Value {
    serde_json::from_slice(
        &fs::read(sb.path("dest/db").join(id).join("manifest.json")).expect("manifest"),
    )
    .expect("json")
}

fn entry<'m>(m: &'m serde_json::Value, path: &str) -> &'m serde_json::Value {
    m["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == path)
        .expect("entry")
}

#[test]
fn a_file_changed_in_place_ships_its_changed_blocks_and_every_point_restores() {
    let sb =
        Sandbox::new("a_file_changed_in_place_ships_its_changed_blocks_and_every_point_restores");
    let table = sb.path("src/base/16384/2619");
    write(&table, &noise(4 << 20, 1));
    write(&sb.path("src/small"), b"small file");
    sb.config_dir_job("", &["nas"], NAS);
    let full = backup(&sb, &["--full"]);
    let full_id = full["backup"].as_str().expect("id").to_string();
    assert_eq!(
        manifest_of(&sb, &full_id)["format"],
        2,
        "a full needs no format 3"
    );
    let mut snaps = vec![(full_id.clone(), snapshot(&sb.path("src")))];

    // Three scattered 8 KiB pages, one of them the first, and 5,000 new bytes at the end.
    write_in_place(&table, 0, &noise(8192, 2), 5);
    write_in_place(&table, 1 << 20, &noise(8192, 3), 5);
    write_in_place(&table, (3 << 20) + 8192 * 7, &noise(8192, 4), 5);
    write_in_place(&table, 4 << 20, &noise(5000, 5), 5);
    let i1 = backup(&sb, &["--incremental"]);
    let i1_id = i1["backup"].as_str().expect("id").to_string();
    assert_eq!(i1["staged"]["files"], 1, "{i1}");
    assert_eq!(
        i1["staged"]["bytes"],
        3 * 8192 + 5000,
        "only the changed blocks are packed: {i1}"
    );
    assert!(i1["notes"].to_string().contains("changed in place"), "{i1}");
    let m1 = manifest_of(&sb, &i1_id);
    assert_eq!(m1["format"], 3);
    let e1 = entry(&m1, "base/16384/2619");
    assert_eq!(e1["size"], (4 << 20) + 5000);
    assert_eq!(e1["delta"]["base"], full_id.as_str());
    assert_eq!(e1["delta"]["block_size"], 8192);
    assert_eq!(
        e1["delta"]["blocks"],
        serde_json::json!([[0, 1], [128, 1], [391, 1], [512, 1]])
    );
    snaps.push((i1_id.clone(), snapshot(&sb.path("src"))));

    // A page changed again, another changed, and the file cut short inside a block.
    write_in_place(&table, 1 << 20, &noise(8192, 6), 10);
    write_in_place(&table, 2 << 20, &noise(100, 7), 10);
    fs::File::options()
        .write(true)
        .open(&table)
        .expect("open")
        .set_len((4 << 20) - 3000)
        .expect("truncate");
    let i2 = backup(&sb, &["--incremental"]);
    let i2_id = i2["backup"].as_str().expect("id").to_string();
    assert_eq!(i2["staged"]["bytes"], 2 * 8192 + (8192 - 3000), "{i2}");
    assert_eq!(
        entry(&manifest_of(&sb, &i2_id), "base/16384/2619")["delta"]["base"],
        i1_id.as_str()
    );
    snaps.push((i2_id.clone(), snapshot(&sb.path("src"))));

    // Touched, not changed: nothing packed, the entry keeps pointing at i2's blocks.
    write_in_place(&table, 0, &fs::read(&table).expect("read")[..8192], 15);
    let i3 = backup(&sb, &["--incremental"]);
    let i3_id = i3["backup"].as_str().expect("id").to_string();
    assert_eq!(i3["staged"]["files"], 0, "{i3}");
    let e3 = entry(&manifest_of(&sb, &i3_id), "base/16384/2619").clone();
    assert_eq!(e3["backup"], i2_id.as_str());
    assert_eq!(e3["delta"]["base"], i1_id.as_str());
    snaps.push((i3_id.clone(), snapshot(&sb.path("src"))));

    for (n, (id, snap)) in snaps.iter().enumerate() {
        let r = restore_to(&sb, id, &format!("r{n}"));
        assert_eq!(
            &snapshot(&r),
            snap,
            "the restore of {id} differs from the source then"
        );
    }
    let v = sb.offsite(&["verify"]);
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn a_chain_whose_blocks_do_not_rebuild_the_file_is_refused_on_restore() {
    let (sb, _, i1_id) =
        one_changed_page("a_chain_whose_blocks_do_not_rebuild_the_file_is_refused_on_restore");
    // The manifest now says the stored block goes one block further on:
    // each backup on its own is intact, the rebuilt file is not.
    edit_table_entry(&sb, &i1_id, |table| {
        assert_eq!(table["delta"]["blocks"], serde_json::json!([[5, 1]]));
        table["delta"]["blocks"] = serde_json::json!([[6, 1]]);
    });
    let v = sb.offsite(&["verify"]);
    assert_eq!(v.code, 0, "verify checks each backup's own bytes: {v:?}");
    let r = restore_backup(&sb, &i1_id, "r");
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("does not match the manifest's hash"),
        "{r:?}"
    );
}

#[test]
fn without_its_fingerprints_or_with_block_size_off_a_changed_file_is_packed_whole() {
    let sb = Sandbox::new(
        "without_its_fingerprints_or_with_block_size_off_a_changed_file_is_packed_whole",
    );
    let table = sb.path("src/table");
    write(&table, &noise(1 << 20, 1));
    sb.config_dir_job("", &["nas"], NAS);
    backup(&sb, &["--full"]);
    // The staging folder lost its block maps: the change is packed whole.
    let mut removed = 0;
    for e in fs::read_dir(sb.path("staging/db/.manifests")).expect("manifests") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "blocks") {
            fs::remove_file(p).expect("rm");
            removed += 1;
        }
    }
    assert_eq!(removed, 1, "the full kept its block map");
    write_in_place(&table, 8192, &noise(8192, 2), 5);
    let i1 = backup(&sb, &["--incremental"]);
    assert_eq!(i1["staged"]["bytes"], 1 << 20, "{i1}");
    // ... and its fingerprints are kept again, so the next change is blocks.
    write_in_place(&table, 8192 * 3, &noise(8192, 3), 10);
    let i2 = backup(&sb, &["--incremental"]);
    assert_eq!(i2["staged"]["bytes"], 8192, "{i2}");
    let i2_id = i2["backup"].as_str().expect("id").to_string();
    assert_same_tree(&sb.path("src"), &restore_to(&sb, &i2_id, "r2"));

    sb.config_dir_job("block_size = \"off\"", &["nas"], NAS);
    write_in_place(&table, 8192 * 9, &noise(8192, 4), 15);
    let i3 = backup(&sb, &["--incremental"]);
    assert_eq!(i3["staged"]["bytes"], 1 << 20, "{i3}");
    let i3_id = i3["backup"].as_str().expect("id").to_string();
    assert_same_tree(&sb.path("src"), &restore_to(&sb, &i3_id, "r3"));
}

#[test]
fn versions_read_out_of_their_order_are_refused_on_restore() {
    let (sb, table, i1_id) =
        one_changed_page("versions_read_out_of_their_order_are_refused_on_restore");
    write_in_place(&table, 8192 * 9, &noise(8192, 3), 10);
    let i2 = backup(&sb, &["--incremental"]);
    let i2_id = i2["backup"].as_str().expect("id").to_string();
    // i1 now claims to be older than the full it patches: read first, its
    // blocks would land on nothing and the full's version would win.
    edit_manifest(&sb, &i1_id, |m| {
        m["created_at"] = "2001-01-01T00:00:00Z".into()
    });
    let r = restore_backup(&sb, &i2_id, "r");
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("came before the one it builds on"),
        "{r:?}"
    );
}

#[test]
fn a_patched_file_claiming_growth_without_its_blocks_is_refused_on_restore() {
    let (sb, _, i1_id) =
        one_changed_page("a_patched_file_claiming_growth_without_its_blocks_is_refused_on_restore");
    // 1 GiB claimed for a 1 MiB file whose one stored block is its sixth.
    edit_table_entry(&sb, &i1_id, |table| {
        table["size"] = (1u64 << 30).into();
    });
    let r = restore_backup(&sb, &i1_id, "r");
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("make it 1073741824 bytes"), "{r:?}");
}

#[test]
fn an_incremental_is_not_sent_where_its_parent_did_not_land() {
    let sb = Sandbox::new("an_incremental_is_not_sent_where_its_parent_did_not_land");
    write(&sb.path("src/a.dat"), &noise(50_000, 1));
    sb.config_dir_job(
        "",
        &["nas", "far"],
        &format!("{NAS}\n[destination.far]\nkind = \"path\"\npath = \"far\"\n"),
    );
    // "far" is not mounted: the full lands on nas only (exit 3, partial).
    let r = sb.offsite(&["--json", "backup", "--full"]);
    assert_eq!(r.code, 3, "{r:?}");
    let full = r.json()["backup"].as_str().expect("id").to_string();
    // Now it is, but another writer holds the full's volume there: the
    // full can never land on far.
    write(
        &sb.path("far/db").join(&full).join("vol-000000.tar.zst"),
        b"someone else's",
    );
    write(&sb.path("src/b.dat"), &noise(50_000, 2));
    let r = sb.offsite(&["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    let incr = j["backup"].as_str().expect("id").to_string();
    assert_eq!(j["kind"], "incr", "{j}");
    let dest = |name: &str| {
        j["destinations"]
            .as_array()
            .expect("destinations")
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .expect("reported")
    };
    assert_eq!(dest("nas")["status"], "ok", "{j}");
    let far = dest("far");
    assert_eq!(far["status"], "failed", "{j}");
    let err = far["error"].as_str().expect("error");
    assert!(
        err.contains(&full) && err.contains("offsite upload") && err.contains("far"),
        "{err}"
    );
    assert!(
        sb.path("dest/db")
            .join(&incr)
            .join("manifest.json")
            .exists()
    );
    assert!(
        !sb.path("far/db").join(&incr).exists(),
        "the incremental was not sent without its parent"
    );
    // Both stay staged, for `offsite upload` to send in order.
    let u = sb.offsite(&["--json", "upload"]);
    assert_eq!(u.code, 3, "{u:?}");
    assert!(!sb.path("far/db").join(&incr).exists(), "{u:?}");
}
