//! Restores that a database starts on: the root folder, owners, modes,
//! times to the nanosecond (before 1970 too, symlinks too), hard links,
//! sparse files, names of any length and any bytes.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::*;

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";

/// A data directory as PostgreSQL keeps one: a 0700 root owned by the
/// database's user, and the awkward cases around it.
fn database_like_source(sb: &Sandbox) {
    let src = sb.path("src");
    write(&src.join("PG_VERSION"), b"15\n");
    write(&src.join("base/1/1259"), &noise(40 << 10, 3));
    // Hard links: three names, one file.
    write(
        &src.join("pg_wal/000000010000000000000001"),
        &noise(64 << 10, 4),
    );
    fs::hard_link(
        src.join("pg_wal/000000010000000000000001"),
        src.join("pg_wal/archive-copy"),
    )
    .expect("link");
    fs::hard_link(
        src.join("pg_wal/000000010000000000000001"),
        src.join("linked-from-root"),
    )
    .expect("link");
    // A sparse file: 1 GiB with 12 KiB of data.
    let sparse = fs::File::create(src.join("sparse.dat")).expect("create");
    sparse.set_len(1 << 30).expect("set_len");
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&noise(4096, 5), 0).expect("write");
    sparse
        .write_all_at(&noise(8192, 6), 512 << 20)
        .expect("write");
    drop(sparse);
    // Names: 255 bytes (the most ext4 takes), and bytes that are not UTF-8.
    let long = "n".repeat(251) + ".dat";
    write(&src.join(&long), b"long name");
    write(
        &src.join(OsStr::from_bytes(b"latin1-caf\xe9.txt")),
        b"not utf-8 name",
    );
    fs::create_dir(src.join(OsStr::from_bytes(b"dir-\xff"))).expect("mkdir");
    write(
        &src.join(OsStr::from_bytes(b"dir-\xff/100% real")),
        b"inside",
    );
    std::os::unix::fs::symlink("PG_VERSION", src.join("version-link")).expect("symlink");
    // Owners and modes as the database's user leaves them.
    for e in walkdir::WalkDir::new(&src) {
        let e = e.expect("walk");
        std::os::unix::fs::lchown(e.path(), Some(4321), Some(4322)).expect("chown");
    }
    fs::set_permissions(&src, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::set_permissions(src.join("base"), fs::Permissions::from_mode(0o750)).expect("chmod");
    // Times: nanoseconds, before 1970, a symlink's own.
    set_mtime(&src.join("PG_VERSION"), 1_700_000_000, 123_456_789);
    set_mtime(&src.join("base/1/1259"), -86_400 * 365, 5);
    set_mtime(&src.join("version-link"), 1_600_000_000, 42);
    set_mtime(&src.join("base/1"), 1_650_000_000, 999_999_999);
    set_mtime(&src.join("base"), 1_650_000_001, 1);
    set_mtime(&src, 1_234_567_890, 987_654_321);
}

#[test]
fn a_restore_gives_back_the_root_owners_times_links_holes_and_every_name() {
    let sb = Sandbox::new("a_restore_gives_back_the_root_owners_times_links_holes_and_every_name");
    database_like_source(&sb);
    // min_free far below the sparse file's size: the free-space check counts its data.
    sb.config_dir_job("volume_size = \"64KiB\"", &["nas"], NAS);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.json()["backup"].as_str().expect("id").to_string();

    // The hard-linked file is stored once.
    let staged = r.json()["staged"]["bytes"].as_u64().expect("bytes");
    assert!(
        staged < (1 << 30) + 2 * (64 << 10),
        "hard links are stored once: {staged} bytes"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(sb.path("dest/db").join(&id).join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["format"], 2);
    assert_eq!(manifest["root"]["mode"], 0o700);
    assert_eq!(manifest["root"]["uid"], 4321);
    let names: Vec<&str> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert!(names.contains(&"latin1-caf%E9.txt"), "{names:?}");
    assert!(names.contains(&"dir-%FF/100%25 real"), "{names:?}");

    let v = sb.offsite(&["verify", "--backup", &id]);
    assert_eq!(v.code, 0, "{v:?}");
    let r = restore_backup(&sb, &id, "restored");
    assert_eq!(r.code, 0, "{r:?}");
    assert_faithful(&sb.path("src"), &sb.path("restored"));
    let blocks = fs::metadata(sb.path("restored/sparse.dat"))
        .expect("stat")
        .blocks();
    assert!(
        blocks * 512 < 1 << 20,
        "the sparse file stays sparse: {} KiB on disk",
        blocks / 2
    );

    // Restoring again on top (--force) replaces every name, links included.
    let force_into = |to: &std::path::Path| {
        let r = sb.offsite(&[
            "restore",
            "--job",
            "db",
            "--force",
            "--to",
            to.to_str().expect("utf8"),
        ]);
        assert_eq!(r.code, 0, "{r:?}");
    };
    force_into(&sb.path("restored"));
    assert_faithful(&sb.path("src"), &sb.path("restored"));

    // A folder that held something, written into with --force, keeps its own
    // mode and owner (the backup's root is 0700 and uid 4321).
    let other = sb.path("other");
    write(&other.join("keep.txt"), b"mine");
    fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).expect("chmod");
    let before = fs::metadata(&other).expect("stat");
    force_into(&other);
    let after = fs::metadata(&other).expect("stat");
    assert_eq!(after.mode() & 0o7777, 0o755);
    assert_eq!(after.uid(), before.uid());
}

#[test]
fn the_volumes_hold_hard_links_and_raw_names_for_tar() {
    let sb = Sandbox::new("the_volumes_hold_hard_links_and_raw_names_for_tar");
    let src = sb.path("src");
    write(&src.join("a"), &noise(10_000, 1));
    fs::hard_link(src.join("a"), src.join("b")).expect("link");
    write(&src.join(OsStr::from_bytes(b"caf\xe9")), b"x");
    sb.config_dir_job("", &["nas"], NAS);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.json()["backup"].as_str().expect("id").to_string();
    let out = sb.path("by-hand");
    fs::create_dir_all(&out).expect("mkdir");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("cat \"$1\"/vol-*.tar.zst | zstd -dc | tar -x -C \"$2\"")
        .arg("sh")
        .arg(sb.path("dest/db").join(&id))
        .arg(&out)
        .status()
        .expect("sh");
    assert!(status.success());
    let a = fs::metadata(out.join("a")).expect("a");
    let b = fs::metadata(out.join("b")).expect("b");
    assert_eq!(a.ino(), b.ino(), "tar restores the hard link");
    assert_eq!(
        fs::read(out.join(OsStr::from_bytes(b"caf\xe9"))).expect("raw name"),
        b"x"
    );
}

#[test]
fn an_exclude_glob_matches_a_name_that_is_not_utf8() {
    let sb = Sandbox::new("an_exclude_glob_matches_a_name_that_is_not_utf8");
    write(&sb.path("src/keep.dat"), b"keep");
    write(
        &sb.path("src").join(OsStr::from_bytes(b"bad\xff.tmp")),
        b"x",
    );
    sb.config_dir_job("", &["nas"], NAS);
    // Without an exclude it is backed up; with one it is left out.
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    sb.config_dir_job(
        "source = { kind = \"dir\", path = \"src\", exclude = [\"bad*\"] }",
        &["nas"],
        NAS,
    );
    let text = fs::read_to_string(sb.config_path()).expect("config");
    // The job line above replaces the default source.
    let text = text.replacen("source = { kind = \"dir\", path = \"src\" }\n", "", 1);
    sb.write_config(&text);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.json()["backup"].as_str().expect("id").to_string();
    let r = restore_backup(&sb, &id, "restored");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(sb.path("restored/keep.dat").is_file());
    assert_eq!(
        fs::read_dir(sb.path("restored")).expect("ls").count(),
        1,
        "only keep.dat"
    );
}
