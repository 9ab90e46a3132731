//! Backup then restore gives back the same bytes; verify finds damage.

use std::fs;
use std::process::Command;

use crate::support::*;

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\nprefix = \"backups\"\n";

/// A source with the awkward cases: empty files, spaces, non-ASCII names,
/// an empty folder, a symlink, and a file larger than a volume.
fn awkward_source(sb: &Sandbox) {
    let src = sb.path("src");
    write(&src.join("chaser.chk"), b"\x00\x10\x00\x00\x00\x00\x00\x00");
    write(&src.join("empty.dat"), b"");
    write(
        &src.join("with space/ünïcødé 名前.log"),
        "héllo wörld\n".as_bytes(),
    );
    write(&src.join("index/empty inside"), b"");
    write(&src.join("chunk-000000.000000"), &noise(300 * 1024, 1));
    write(&src.join("chunk-000001.000000"), &vec![b'a'; 200 * 1024]);
    fs::create_dir_all(src.join("empty dir")).expect("mkdir");
    std::os::unix::fs::symlink("chunk-000000.000000", src.join("current")).expect("symlink");
    fs::set_permissions(
        src.join("chaser.chk"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
}

/// Backs up the awkward source in small volumes; returns the backup id.
fn backed_up_awkward(sb: &Sandbox) -> String {
    awkward_source(sb);
    sb.config_dir_job("volume_size = \"64KiB\"", &["nas"], NAS);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    r.json()["backup"].as_str().expect("id").to_string()
}

#[test]
fn backup_then_restore_is_byte_identical() {
    let sb = Sandbox::new("backup_then_restore_is_byte_identical");
    awkward_source(&sb);
    sb.config_dir_job("volume_size = \"64KiB\"", &["nas"], NAS);

    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "ok");
    assert_eq!(j["job"], "db");
    assert_eq!(j["kind"], "full");
    assert_eq!(j["staged"]["files"], 6);
    assert!(
        j["staged"]["stored_bytes"].as_u64().expect("stored") > 64 * 1024,
        "several volumes expected"
    );
    assert_eq!(j["destinations"][0]["name"], "nas");
    assert_eq!(j["destinations"][0]["status"], "ok");
    assert_eq!(j["destinations"][0]["bytes_resumed"], 0);
    let id = j["backup"].as_str().expect("id").to_string();
    assert!(id.contains("Z-full-"), "{id}");

    // The layout is <prefix>/<job>/<id>/, and the staged copy is gone after success.
    let remote = sb.path("dest/backups/db").join(&id);
    assert!(remote.join("manifest.json").is_file());
    assert!(
        remote.join("vol-000001.tar.zst").is_file(),
        "volume_size should split the backup"
    );
    assert!(
        !sb.path("staging/db").join(&id).exists(),
        "keep_local = 0 removes the staged copy"
    );

    assert_eq!(complete_backups(&sb, "nas"), vec![id.clone()]);
    let v = sb.offsite(&["verify", "--backup", "latest"]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.trim_end().ends_with("verify ok"), "{v:?}");

    let to = sb.path("restored");
    let r = sb.offsite(&[
        "--json",
        "restore",
        "--job",
        "db",
        "--to",
        to.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
}

#[test]
fn volumes_are_one_tar_zstd_stream_readable_without_offsite() {
    let sb = Sandbox::new("volumes_are_one_tar_zstd_stream_readable_without_offsite");
    let id = backed_up_awkward(&sb);
    let dir = sb.path("dest/backups/db").join(&id);
    let out = sb.path("by-hand");
    fs::create_dir_all(&out).expect("mkdir");
    let status = Command::new("sh")
        .arg("-c")
        .arg("cat \"$1\"/vol-*.tar.zst | zstd -dc | tar -x -C \"$2\"")
        .arg("sh")
        .arg(&dir)
        .arg(&out)
        .status()
        .expect("sh (zstd and tar are installed by make test)");
    assert!(status.success());
    assert_same_tree(&sb.path("src"), &out);

    // The recorded hashes are plain BLAKE3, as the reference tool b3sum
    // computes them: of every volume, and of every file's content.
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let b3sum = |path: &std::path::Path| {
        let out = Command::new("b3sum")
            .arg("--no-names")
            .arg(path)
            .output()
            .expect("b3sum (installed by make test)");
        assert!(out.status.success(), "b3sum {}", path.display());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let volumes = manifest["volumes"].as_array().expect("volumes");
    assert!(volumes.len() > 1, "{manifest}");
    for v in volumes {
        let name = v["name"].as_str().expect("name");
        assert_eq!(
            v["blake3"].as_str(),
            Some(b3sum(&dir.join(name)).as_str()),
            "{name}"
        );
    }
    let mut files = 0;
    for f in manifest["files"].as_array().expect("files") {
        if f["kind"] == "file" {
            let path = f["path"].as_str().expect("path");
            assert_eq!(
                f["blake3"].as_str(),
                Some(b3sum(&out.join(path)).as_str()),
                "{path}"
            );
            files += 1;
        }
    }
    assert_eq!(files, 6, "{manifest}");
}

/// Rewrites the manifest in `dir` as earlier versions wrote it: SHA-256 of
/// every volume and of every file (read from `src`) instead of BLAKE3.
fn rehash_with_sha256(dir: &std::path::Path, src: &std::path::Path) {
    let script = r#"
import hashlib, json, sys
d, src = sys.argv[1], sys.argv[2]
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
man = json.load(open(d + "/manifest.json"))
for v in man["volumes"]:
    del v["blake3"]
    v["sha256"] = sha(d + "/" + v["name"])
for f in man["files"]:
    if f.pop("blake3", None) is not None:
        f["sha256"] = sha(src + "/" + f["path"])
json.dump(man, open(d + "/manifest.json", "w"), separators=(",", ":"))
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(src)
        .status()
        .expect("python3");
    assert!(status.success(), "rehashing {}", dir.display());
}

/// Backups written before BLAKE3 carry SHA-256: they still verify and
/// restore, and a wrong SHA-256 is still found.
#[test]
fn a_backup_hashed_with_sha256_by_an_earlier_version_verifies_and_restores() {
    let sb =
        Sandbox::new("a_backup_hashed_with_sha256_by_an_earlier_version_verifies_and_restores");
    let id = backed_up_awkward(&sb);
    let dir = sb.path(&format!("dest/backups/db/{id}"));
    let before = fs::read_to_string(dir.join("manifest.json")).expect("manifest");
    assert!(before.contains("\"blake3\""), "this version writes BLAKE3");
    rehash_with_sha256(&dir, &sb.path("src"));
    let after = fs::read_to_string(dir.join("manifest.json")).expect("manifest");
    assert!(
        !after.contains("blake3") && after.contains("\"sha256\""),
        "{after}"
    );

    let r = sb.offsite(&["verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    let to = sb.path("restored");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);

    // One file's recorded SHA-256 made wrong (files come after volumes):
    // verify names it.
    let field = "\"sha256\":\"";
    let at = after.find("\"files\"").expect("files");
    let at = at + after[at..].find(field).expect("a file hash") + field.len();
    let wrong = format!("{}{}{}", &after[..at], "0".repeat(64), &after[at + 64..]);
    fs::write(dir.join("manifest.json"), &wrong).expect("write");
    let r = sb.offsite(&["verify"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("SHA-256 does not match the manifest"),
        "{r:?}"
    );
}

#[test]
fn verify_and_restore_refuse_a_damaged_volume() {
    let sb = Sandbox::new("verify_and_restore_refuse_a_damaged_volume");
    let id = backed_up_awkward(&sb);
    let vol = sb
        .path("dest/backups/db")
        .join(&id)
        .join("vol-000001.tar.zst");
    let mut bytes = fs::read(&vol).expect("read volume");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&vol, &bytes).expect("flip a byte");

    let v = sb.offsite(&["--json", "verify"]);
    assert_eq!(v.code, 1, "{v:?}");
    let problems = v.json()["verified"][0]["problems"].to_string();
    assert!(
        problems.contains("vol-000001.tar.zst"),
        "the damaged volume is named: {problems}"
    );

    let to = sb.path("restored");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("refused"), "{r:?}");
}

#[test]
fn verify_names_a_missing_volume() {
    let sb = Sandbox::new("verify_names_a_missing_volume");
    let id = backed_up_awkward(&sb);
    fs::remove_file(
        sb.path("dest/backups/db")
            .join(&id)
            .join("vol-000002.tar.zst"),
    )
    .expect("remove");
    let v = sb.offsite(&["verify"]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("vol-000002.tar.zst is missing"), "{v:?}");
}

/// `offsite restore --job db --to <to> --force`.
fn restore_forced(sb: &Sandbox, to: &std::path::Path) -> Run {
    sb.offsite(&[
        "restore",
        "--job",
        "db",
        "--to",
        to.to_str().expect("utf8"),
        "--force",
    ])
}

#[test]
fn restore_wants_an_empty_folder_unless_forced() {
    let sb = Sandbox::new("restore_wants_an_empty_folder_unless_forced");
    write(&sb.path("src/a.txt"), b"new contents");
    sb.config_dir_job("", &["nas"], NAS);
    assert_eq!(sb.offsite(&["backup"]).code, 0);
    let to = sb.path("restored");
    write(&to.join("a.txt"), b"old");
    write(&to.join("keep.txt"), b"untouched");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("not empty") && r.stderr.contains("--force"),
        "{r:?}"
    );
    assert_eq!(
        fs::read(to.join("a.txt")).expect("read"),
        b"old",
        "nothing written without --force"
    );
    let r = restore_forced(&sb, &to);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(fs::read(to.join("a.txt")).expect("read"), b"new contents");
    assert_eq!(fs::read(to.join("keep.txt")).expect("read"), b"untouched");
}

#[test]
fn a_forced_restore_onto_a_folder_of_the_same_name_is_refused_and_named() {
    let sb = Sandbox::new("a_forced_restore_onto_a_folder_of_the_same_name_is_refused_and_named");
    // Many small files, so the failure comes from a file writer thread
    // while the reading thread goes on handing it files.
    for i in 0..200 {
        write(&sb.path(&format!("src/d/f{i:03}")), b"small");
    }
    write(&sb.path("src/d/taken"), b"a file in the backup");
    sb.config_dir_job("", &["nas"], NAS);
    assert_eq!(sb.offsite(&["backup"]).code, 0);
    let to = sb.path("restored");
    write(&to.join("d/taken/inside"), b"a folder holds the name");
    let r = restore_forced(&sb, &to);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("taken exists and is a folder") && r.stderr.contains("refused"),
        "{r:?}"
    );
    assert_eq!(
        fs::read(to.join("d/taken/inside")).expect("read"),
        b"a folder holds the name"
    );
    let temps: Vec<_> = fs::read_dir(to.join("d"))
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

#[test]
fn keep_local_keeps_the_newest_staged_backups() {
    let sb = Sandbox::new("keep_local_keeps_the_newest_staged_backups");
    write(&sb.path("src/a.txt"), b"one");
    sb.config_dir_job("keep_local = 1", &["nas"], NAS);
    let first = sb.offsite(&["--json", "backup"]);
    assert_eq!(first.code, 0, "{first:?}");
    let second = sb.offsite(&["--json", "backup"]);
    assert_eq!(second.code, 0, "{second:?}");
    let (a, b) = (
        first.json()["backup"].clone(),
        second.json()["backup"].clone(),
    );
    assert_ne!(a, b, "two backups get two ids");
    assert!(!sb.path("staging/db").join(a.as_str().expect("id")).exists());
    assert!(
        sb.path("staging/db")
            .join(b.as_str().expect("id"))
            .join("manifest.json")
            .is_file()
    );
    // A staged backup that is everywhere is not sent again.
    let up = sb.offsite(&["--json", "upload"]);
    assert_eq!(up.code, 0, "{up:?}");
    let run = &up.json()["runs"][0];
    assert_eq!(run["destinations"][0]["bytes_sent"], 0, "{up:?}");
}

#[test]
fn status_shows_the_last_run_per_destination() {
    let sb = Sandbox::new("status_shows_the_last_run_per_destination");
    write(&sb.path("src/a.txt"), b"x");
    sb.config_dir_job("", &["nas"], NAS);
    let before = sb.offsite(&["status"]);
    assert_eq!(before.code, 0, "{before:?}");
    assert!(before.stdout.contains("never run"), "{before:?}");
    let b = sb.offsite(&["--json", "backup"]);
    let id = b.json()["backup"].as_str().expect("id").to_string();
    let s = sb.offsite(&["--json", "status"]);
    assert_eq!(s.code, 0, "{s:?}");
    let j = s.json();
    let job = &j["jobs"][0]["status"];
    assert_eq!(job["last_run"]["status"], "ok");
    assert_eq!(job["last_full"]["backup"], id.as_str());
    assert_eq!(job["last_full"]["status"], "ok");
    assert_eq!(job["last_full"]["files"], 1);
    assert!(job["last_full"]["seconds"].as_f64().is_some());
    assert!(job["last_incremental"].is_null());
    assert_eq!(job["destinations"]["nas"]["status"], "ok");
    assert_eq!(
        job["destinations"]["nas"]["last_success_backup"],
        id.as_str()
    );
}

#[test]
fn a_hostile_manifest_is_refused_and_nothing_is_written() {
    let sb = Sandbox::new("a_hostile_manifest_is_refused_and_nothing_is_written");
    let id = backed_up_awkward(&sb);
    let path = sb.path("dest/backups/db").join(&id).join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    m["files"][0]["path"] = serde_json::Value::from("../../escaped");
    fs::write(&path, serde_json::to_vec(&m).expect("ser")).expect("write");

    let l = sb.offsite(&["--json", "list"]);
    assert_eq!(l.code, 0, "{l:?}");
    let listing = &l.json()["listings"][0];
    assert_eq!(listing["backups"].as_array().expect("backups").len(), 0);
    assert!(
        listing["damaged"][0]["error"]
            .as_str()
            .expect("error")
            .contains("unsafe path"),
        "{l:?}"
    );

    let to = sb.path("restored");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("damaged"), "{r:?}");
    assert!(
        !sb.path("escaped").exists() && !sb.root.parent().expect("parent").join("escaped").exists()
    );
    let v = sb.offsite(&["verify"]);
    assert_eq!(v.code, 1, "a damaged manifest fails verify: {v:?}");

    // Prune stops rather than guess, and `status --check` says so: a prune
    // failing every night would otherwise fill the destination unseen.
    assert_eq!(sb.offsite(&["status", "--check"]).code, 0);
    sb.config_dir_job(
        "volume_size = \"64KiB\"\nretention = { keep_last = 1 }",
        &["nas"],
        NAS,
    );
    let p = sb.offsite(&["prune"]);
    assert_eq!(p.code, 1, "{p:?}");
    let c = sb.offsite(&["--json", "status", "--check"]);
    assert_eq!(c.code, 1, "{c:?}");
    let problems = &c.json()["jobs"][0]["problems"];
    assert_eq!(problems[0]["status"], "prune_failed", "{c:?}");
    assert!(
        problems[0]["why"]
            .as_str()
            .unwrap_or("")
            .contains("damaged"),
        "{c:?}"
    );
}

#[test]
fn too_little_free_space_is_refused_before_staging() {
    let sb = Sandbox::new("too_little_free_space_is_refused_before_staging");
    write(&sb.path("src/a.dat"), &noise(1000, 1));
    sb.config_dir_job("", &["nas"], NAS);
    let text = fs::read_to_string(sb.config_path()).expect("config");
    sb.write_config(&text.replace("min_free = \"1MiB\"", "min_free = \"900TB\""));
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    let err = r.json()["error"].as_str().expect("error").to_string();
    assert!(err.contains("free") && err.contains("min_free"), "{err}");
    assert!(
        staging_dirs(&sb).is_empty(),
        "nothing staged: {:?}",
        staging_dirs(&sb)
    );
    assert_eq!(fs::read_dir(sb.path("dest")).expect("dest").count(), 0);
}

/// Rewrites the only volume of backup `dir` (a path destination's folder)
/// with python's tarfile and the zstd tool, as an attacker who can write to
/// the destination would, and fixes the manifest's size and SHA-256 so the
/// volume looks intact: `mode` is `extra` (an entry the manifest does not
/// list), `dotdot` (an entry named ../escape.txt) or `link-out` (the symlink
/// pointing outside the tree).
fn forge_volume(dir: &std::path::Path, mode: &str) {
    let script = r#"
import hashlib, io, json, subprocess, sys, tarfile
d, mode = sys.argv[1], sys.argv[2]
vol = d + "/vol-000000.tar.zst"
raw = subprocess.run(["zstd", "-dc", vol], check=True, capture_output=True).stdout
src = tarfile.open(fileobj=io.BytesIO(raw))
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
    for m in src.getmembers():
        if mode == "link-out" and m.issym():
            m.linkname = "../../../../escape-target"
        t.addfile(m, src.extractfile(m) if m.isfile() else None)
    if mode in ("extra", "dotdot"):
        name = "evil.txt" if mode == "extra" else "../escape.txt"
        ti = tarfile.TarInfo(name); ti.size = 4
        t.addfile(ti, io.BytesIO(b"evil"))
packed = subprocess.run(["zstd", "-c", "-q"], input=out.getvalue(), check=True, capture_output=True).stdout
open(vol, "wb").write(packed)
man = json.load(open(d + "/manifest.json"))
man["volumes"][0]["size"] = len(packed)
# The correct hash, in SHA-256 as earlier versions wrote it (still checked).
man["volumes"][0].pop("blake3", None)
man["volumes"][0]["sha256"] = hashlib.sha256(packed).hexdigest()
json.dump(man, open(d + "/manifest.json", "w"))
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(mode)
        .status()
        .expect("python3");
    assert!(status.success(), "forging {mode}");
}

/// Damaged and hostile remote data, one case per sandbox: `verify` names
/// what is wrong (exit 1), `restore` refuses (exit 1) and writes nothing
/// outside `--to`.
#[test]
fn damaged_and_hostile_backups_are_named_and_refused() {
    type Damage = fn(&std::path::Path);
    let cases: &[(&str, Damage, &str)] = &[
        (
            "a truncated volume",
            |d| {
                let v = d.join("vol-000000.tar.zst");
                let len = fs::metadata(&v).expect("volume").len();
                let f = fs::OpenOptions::new().write(true).open(&v).expect("open");
                f.set_len(len / 2).expect("truncate");
            },
            "truncated",
        ),
        (
            "a manifest that is not JSON",
            |d| fs::write(d.join("manifest.json"), b"{\"format\": 1, \"files\": [").expect("write"),
            "manifest",
        ),
        (
            "an absolute path in the manifest",
            |d| {
                let p = d.join("manifest.json");
                let mut m: serde_json::Value =
                    serde_json::from_slice(&fs::read(&p).expect("read")).expect("json");
                m["files"][0]["path"] = "/etc/offsite-escape".into();
                fs::write(&p, serde_json::to_vec(&m).expect("ser")).expect("write");
            },
            "unsafe path",
        ),
        (
            "an archive entry the manifest does not list",
            |d| forge_volume(d, "extra"),
            "\\\"evil.txt\\\" is not in the manifest",
        ),
        (
            "an archive entry named ../",
            |d| forge_volume(d, "dotdot"),
            "unsafe path",
        ),
        (
            "a symlink pointing outside",
            |d| forge_volume(d, "link-out"),
            "points elsewhere",
        ),
    ];
    for (i, (what, damage, says)) in cases.iter().enumerate() {
        let sb = Sandbox::new(&format!("damaged_and_hostile_backups_{i}"));
        write(&sb.path("src/a.txt"), b"the real data\n");
        write(&sb.path("src/chunk-000000.000000"), &noise(50_000, 7));
        std::os::unix::fs::symlink("a.txt", sb.path("src/current")).expect("symlink");
        sb.config_dir_job("", &["nas"], NAS);
        let r = sb.offsite(&["--json", "backup"]);
        assert_eq!(r.code, 0, "{what}: {r:?}");
        let id = r.json()["backup"].as_str().expect("id").to_string();
        damage(&sb.path("dest/backups/db").join(&id));

        let v = sb.offsite(&["--json", "verify"]);
        assert_eq!(v.code, 1, "{what}: {v:?}");
        assert!(
            v.stdout.contains(says),
            "{what}: verify should say {says:?}: {v:?}"
        );
        let to = sb.path("restored");
        let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
        assert_eq!(r.code, 1, "{what}: {r:?}");
        for escaped in ["escape.txt", "escape-target", "evil.txt"] {
            assert!(
                !sb.path(escaped).exists(),
                "{what}: {escaped} written outside --to"
            );
            assert!(!to.join(escaped).exists(), "{what}: {escaped} restored");
        }
        assert!(
            !std::path::Path::new("/etc/offsite-escape").exists(),
            "{what}"
        );
        let link = to.join("current");
        assert!(
            fs::read_link(&link).map_or(true, |t| t == std::path::Path::new("a.txt")),
            "{what}: a symlink leaving the tree was created"
        );
    }
}

/// A small tmpfs mounted for the time of a test (make test runs as root,
/// as its sshd and FTP servers need); unmounted on drop, even on a panic.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: std::path::PathBuf, size: &str) -> SmallDisk {
        fs::create_dir_all(&at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .expect("mount (make test runs as root)");
        assert!(status.success(), "mount a {size} tmpfs at {}", at.display());
        SmallDisk(at)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The disk fills while staging (a dump bigger than the space left, which
/// no estimate could know): a clear error, nothing shipped, and the
/// half-written backup removed from staging.
#[test]
fn a_full_disk_while_staging_fails_cleanly_and_ships_nothing() {
    let sb = Sandbox::new("a_full_disk_while_staging_fails_cleanly_and_ships_nothing");
    let _disk = SmallDisk::mount(sb.path("staging"), "2m");
    sb.write_config(&format!(
        "[staging]\ndir = \"staging\"\nmin_free = \"0\"\n\n[[job]]\nname = \"db\"\nsource = {{ kind = \"command\", run = \"head -c 6000000 /dev/urandom\", output = \"dump.bin\" }}\ndestinations = [\"nas\"]\n\n{NAS}"
    ));
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    let err = r.json()["error"].as_str().expect("error").to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        fs::read_dir(sb.path("dest")).expect("dest").count(),
        0,
        "nothing shipped"
    );
    let left: Vec<_> = walkdir::WalkDir::new(sb.path("staging/db"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().to_string_lossy().contains("dump"))
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(
        left.is_empty(),
        "the half-written dump is removed: {left:?}"
    );
}

/// A backup as an earlier offsite wrote it (manifest format 1: no host, no
/// root folder, names in plain UTF-8 with `%` as itself; an id without the
/// host) is still listed, verified, restored, and taken as this host's own
/// for `latest`.
#[test]
fn a_backup_from_before_origins_is_listed_verified_and_restored() {
    let sb = Sandbox::new("a_backup_from_before_origins_is_listed_verified_and_restored");
    // A name with `%`: format 1 wrote it plainly, format 2 as `%25`.
    write(&sb.path("src/50% off/100%.txt"), b"percent");
    let id = backed_up_awkward(&sb);
    let legacy = id
        .rsplitn(2, "-full-")
        .last()
        .map(|s| format!("{s}-full"))
        .expect("legacy id");
    let job = sb.path("dest/backups/db");
    fs::rename(job.join(&id), job.join(&legacy)).expect("rename");
    let script = r#"
import json, sys
path, old, new = sys.argv[1], sys.argv[2], sys.argv[3]
m = json.load(open(path))
m["format"] = 1
m["id"] = new
for k in ("host", "root"):
    m.pop(k, None)
for f in m["files"]:
    f["backup"] = new
    # Format 1 wrote names as plain UTF-8 (every name here is valid UTF-8).
    f["path"] = f["path"].replace("%25", "%")
    assert "%" not in f["path"] or "% off" in f["path"], f["path"]
json.dump(m, open(path, "w"))
"#;
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(job.join(&legacy).join("manifest.json"))
        .args([&id, &legacy])
        .status()
        .expect("python3");
    assert!(status.success());
    let l = sb.offsite(&["--json", "list"]);
    assert_eq!(l.code, 0, "{l:?}");
    let b = &l.json()["listings"][0]["backups"][0];
    assert_eq!(b["id"], legacy.as_str(), "{l:?}");
    assert!(b["host"].is_null(), "no host recorded: {l:?}");
    let v = sb.offsite(&["verify", "--backup", &legacy]);
    assert_eq!(v.code, 0, "{v:?}");
    let to = sb.path("restored");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
}

/// `verify --backup ID` judges that backup alone: another backup's damage
/// fails a verify of everything, not of the one asked for.
#[test]
fn verify_of_one_backup_is_not_failed_by_another_ones_damage() {
    let sb = Sandbox::new("verify_of_one_backup_is_not_failed_by_another_ones_damage");
    let first = backed_up_awkward(&sb);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let second = r.json()["backup"].as_str().expect("id").to_string();
    fs::write(
        sb.path(&format!("dest/backups/db/{first}/manifest.json")),
        b"not json",
    )
    .expect("damage");
    let all = sb.offsite(&["verify"]);
    assert_eq!(all.code, 1, "{all:?}");
    let one = sb.offsite(&["verify", "--backup", &second]);
    assert_eq!(one.code, 0, "{one:?}");
}

/// What lands on a folder destination is readable by its owner only,
/// whatever the umask: a backup holds the database's data.
#[test]
fn backup_files_on_a_folder_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("backup_files_on_a_folder_are_the_owners_only");
    let id = backed_up_awkward(&sb);
    for e in fs::read_dir(sb.path(&format!("dest/backups/db/{id}"))).expect("ls") {
        let e = e.expect("entry");
        let mode = e.metadata().expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", e.path().display());
    }
}

/// An absolute symlink is left out even when it points inside the source
/// (after a restore elsewhere it would point at the original), and the
/// note says that, not that it leaves the source.
#[test]
fn an_absolute_symlink_is_skipped_with_the_right_reason() {
    let sb = Sandbox::new("an_absolute_symlink_is_skipped_with_the_right_reason");
    write(&sb.path("src/a.dat"), b"data");
    std::os::unix::fs::symlink(sb.path("src/a.dat"), sb.path("src/abs-link")).expect("symlink");
    sb.config_dir_job("", &["nas"], NAS);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let notes = r.json()["notes"].to_string();
    assert!(
        notes.contains("abs-link")
            && notes.contains("absolute path")
            && !notes.contains("leaves the source"),
        "{notes}"
    );
}
