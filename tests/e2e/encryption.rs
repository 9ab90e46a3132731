//! Client-side encryption end to end: what reaches the destination holds no
//! plaintext row and no file name; restore needs the identity (or the
//! passphrase); list, verify (as stored) and prune work without it.

use std::fs;
use std::path::Path;

use crate::support::*;

/// A row that would be visible in a compressed volume written in clear.
const ROW: &str = "customer=alice.secret@example.com card=4111-1111-1111-1111";
/// A file name that would be visible in a clear manifest or tar header.
const NAME: &str = "payroll-confidential.db";

/// Database-like source files: rows of text (compressible, so zstd keeps
/// literals), a secret file name, a folder.
fn write_source(sb: &Sandbox) {
    let rows: String = (0..2000).map(|i| format!("{i:06} {ROW}\n")).collect();
    write(&sb.path(&format!("src/{NAME}")), rows.as_bytes());
    write(
        &sb.path("src/chunks/chunk-000000.000000"),
        &noise(300_000, 3),
    );
    write(&sb.path("src/writer.chk"), b"0000000000000042");
}

/// Every byte stored under `dest/`, with the file names, as one string.
fn everything_stored(dest: &Path) -> String {
    let mut all = String::new();
    for e in walkdir::WalkDir::new(dest).into_iter().flatten() {
        all.push_str(&e.path().display().to_string());
        all.push('\n');
        if e.file_type().is_file() {
            all.push_str(&String::from_utf8_lossy(&fs::read(e.path()).expect("read")));
        }
    }
    all
}

fn keygen(sb: &Sandbox, name: &str) -> String {
    let file = sb.path(name);
    let r = Run::from(
        std::process::Command::new(bin())
            .arg("keygen")
            .arg(&file)
            .output()
            .expect("keygen"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let public = r.stdout.trim().to_string();
    assert!(public.starts_with("age1"), "{r:?}");
    let mode = fs::metadata(&file).expect("identity").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    public
}

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";

/// The check that makes the encrypted test meaningful: without encryption,
/// the row and the file name are visible on the destination.
#[test]
fn without_encryption_the_rows_and_names_are_visible_on_the_destination() {
    let sb = Sandbox::new("without_encryption_the_rows_and_names_are_visible_on_the_destination");
    write_source(&sb);
    sb.config_dir_job("", &["nas"], NAS);
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let stored = everything_stored(&sb.path("dest"));
    assert!(stored.contains(NAME), "the name is in the clear manifest");
    assert!(
        stored.contains("alice.secret@example.com"),
        "zstd keeps the row's literals"
    );
}

#[test]
fn an_encrypted_backup_stores_no_plaintext_and_restores_only_with_the_identity() {
    let sb =
        Sandbox::new("an_encrypted_backup_stores_no_plaintext_and_restores_only_with_the_identity");
    write_source(&sb);
    let public = keygen(&sb, "restore.key");
    let other = keygen(&sb, "other.key");
    assert_ne!(public, other);
    // The database host's config: recipients only, no identity.
    let job =
        format!("encryption = {{ recipients = [\"{public}\"] }}\nretention = {{ keep_last = 1 }}");
    sb.config_dir_job(&job, &["nas"], NAS);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let first = r.json()["backup"].as_str().expect("id").to_string();

    let stored = everything_stored(&sb.path("dest"));
    for secret in [
        NAME,
        "alice.secret@example.com",
        "4111-1111",
        "chunk-000000",
        "writer.chk",
        "chunks",
    ] {
        assert!(!stored.contains(secret), "{secret:?} is stored in clear");
    }
    assert!(
        stored.contains("vol-000000.tar.zst.age"),
        "volumes say they are age files"
    );

    // Without the identity: list and verify (as stored) work, restore refuses.
    let r = sb.offsite(&["--json", "list"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = sb.offsite(&["verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("ok as stored"), "{r:?}");
    let to = sb.path("restored");
    let to_s = to.to_str().expect("utf8");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to_s]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("encrypted") && r.stderr.contains("--identity"),
        "{r:?}"
    );
    assert!(!to.exists(), "a refused restore writes nothing");

    // A wrong identity is refused the same way.
    let wrong = sb.path("other.key");
    let r = sb.offsite(&[
        "restore",
        "--job",
        "db",
        "--to",
        to_s,
        "--identity",
        wrong.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("does not open this backup"), "{r:?}");
    assert!(!to.exists(), "a refused restore writes nothing");

    // The right identity: every file checked, and the restore is identical.
    let key = sb.path("restore.key");
    let key_s = key.to_str().expect("utf8");
    let r = sb.offsite(&["--json", "verify", "--identity", key_s]);
    assert_eq!(r.code, 0, "{r:?}");
    let v = &r.json()["verified"][0];
    assert_eq!(v["contents_checked"], true, "{r:?}");
    assert_eq!(v["files"].as_u64(), Some(3), "{r:?}");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to_s, "--identity", key_s]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);

    // A damaged volume is found without the identity (its stored hash).
    let vol = sb.path(&format!("dest/db/{first}/vol-000000.tar.zst.age"));
    let mut bytes = fs::read(&vol).expect("volume");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&vol, &bytes).expect("damage");
    let r = sb.offsite(&["verify"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("vol-000000.tar.zst.age"), "{r:?}");
    bytes[mid] ^= 0x40;
    fs::write(&vol, &bytes).expect("repair");

    // Prune needs no identity either: keep_last = 1 drops the first backup.
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !sb.path(&format!("dest/db/{first}")).exists(),
        "pruned: {r:?}"
    );
}

#[test]
fn encrypted_incrementals_restore_with_the_identity_from_the_config() {
    let sb = Sandbox::new("encrypted_incrementals_restore_with_the_identity_from_the_config");
    write_source(&sb);
    let public = keygen(&sb, "restore.key");
    let job =
        format!("encryption = {{ recipients = [\"{public}\"], identity_file = \"restore.key\" }}");
    sb.config_dir_job(&job, &["nas"], NAS);
    assert_eq!(sb.offsite(&["backup"]).code, 0);
    write(
        &sb.path("src/chunks/chunk-000001.000000"),
        &noise(200_000, 9),
    );
    fs::remove_file(sb.path("src/writer.chk")).expect("rm");
    // A page of the other chunk changed in place: stored as its block, in
    // the sealed file list.
    change_a_page(&sb.path("src/chunks/chunk-000000.000000"));
    let r = sb.offsite(&["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["kind"], "incr", "{r:?}");
    assert!(
        r.json()["notes"]
            .to_string()
            .contains("1 file(s) changed in place: packed 8.0 KiB"),
        "{r:?}"
    );
    let stored = everything_stored(&sb.path("dest"));
    assert!(
        !stored.contains("chunk-000001") && !stored.contains("writer.chk"),
        "names in clear"
    );

    let to = sb.path("restored");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
}

#[test]
fn a_passphrase_encrypted_backup_restores_with_the_passphrase_only() {
    let sb = Sandbox::new("a_passphrase_encrypted_backup_restores_with_the_passphrase_only");
    write_source(&sb);
    sb.config_dir_job(
        "encryption = { passphrase_env = \"DB_PASS\" }",
        &["nas"],
        NAS,
    );
    let secret = "correct horse battery staple";
    let r = Run::from(
        sb.command(&["backup"])
            .env("DB_PASS", secret)
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let stored = everything_stored(&sb.path("dest"));
    assert!(!stored.contains(NAME) && !stored.contains("alice.secret"));
    assert!(!stored.contains(secret));

    let to = sb.path("restored");
    let to_s = to.to_str().expect("utf8");
    let r = Run::from(
        sb.command(&["restore", "--job", "db", "--to", to_s])
            .env("DB_PASS", "wrong horse")
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!to.exists(), "{r:?}");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to_s]);
    assert_eq!(r.code, 2, "no passphrase: {r:?}");
    assert!(r.stderr.contains("DB_PASS"), "{r:?}");
    let r = Run::from(
        sb.command(&["restore", "--job", "db", "--to", to_s])
            .env("DB_PASS", secret)
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
}

/// The volumes are standard age files: the reference `age` tool (installed
/// by make test) opens them with the identity, and zstd and tar unpack the
/// result without offsite. A multi-volume backup, decrypted volume by volume.
#[test]
fn encrypted_volumes_open_with_the_age_tool_and_unpack_without_offsite() {
    let sb = Sandbox::new("encrypted_volumes_open_with_the_age_tool_and_unpack_without_offsite");
    write_source(&sb);
    write(
        &sb.path("src/chunks/chunk-000001.000000"),
        &noise(1_500_000, 4),
    );
    let public = keygen(&sb, "restore.key");
    let job = format!("volume_size = \"512KiB\"\nencryption = {{ recipients = [\"{public}\"] }}");
    sb.config_dir_job(&job, &["nas"], NAS);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.json()["backup"].as_str().expect("id").to_string();
    let dir = sb.path(&format!("dest/db/{id}"));
    let volumes = fs::read_dir(&dir)
        .expect("backup dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.zst.age"))
        .count();
    assert!(volumes >= 3, "a multi-volume backup: {volumes}");
    let out = sb.path("by-hand");
    fs::create_dir_all(&out).expect("mkdir");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("set -e; for v in \"$1\"/vol-*.tar.zst.age; do age -d -i \"$3\" \"$v\"; done | zstd -dc | tar -x -C \"$2\"")
        .arg("sh")
        .arg(&dir)
        .arg(&out)
        .arg(sb.path("restore.key"))
        .status()
        .expect("sh (age, zstd and tar are installed by make test)");
    assert!(status.success());
    assert_same_tree(&sb.path("src"), &out);
}

/// Encryption is the same for every destination kind: one encrypted backup
/// to a folder, SFTP, FTPS and Azure at once, restored from each one.
#[test]
fn an_encrypted_backup_restores_from_every_destination_kind() {
    let sb = Sandbox::new("an_encrypted_backup_restores_from_every_destination_kind");
    write_source(&sb);
    let public = keygen(&sb, "restore.key");
    let tables = format!(
        "{NAS}\n{}\n{}\n{}",
        crate::sftp::sftp_table(&sb, &crate::sftp::key_auth(), "SFTP_KNOWN_HOSTS"),
        crate::ftp::ftp_table(&sb, "PYFTPD", "explicit", "FTP_CA_FILE"),
        crate::azure::blob_table(&sb, ""),
    );
    let job =
        format!("encryption = {{ recipients = [\"{public}\"], identity_file = \"restore.key\" }}");
    sb.config_dir_job(&job, &["nas", "sftp", "ftp", "blob"], &tables);
    let env = [
        ("FTP_PW", crate::ftp::ftp()["PYFTPD_PASSWORD"].clone()),
        ("AZ_KEY", crate::azure::key()),
    ];
    let run = |args: &[&str]| {
        let mut c = sb.command(args);
        c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Run::from(c.output().expect("run offsite"))
    };
    let r = run(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    // A page changed in place: the incremental holds only its block, and
    // each destination rebuilds the file from the full and that block.
    change_a_page(&sb.path("src/chunks/chunk-000000.000000"));
    let r = run(&["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.json()["notes"].to_string().contains("changed in place"),
        "{r:?}"
    );
    crate::remote::restores_from_each(&sb, &run, &["nas", "sftp", "ftp", "blob"]);
}

/// Writes a new 8 KiB page into `path` at its fourth page, and moves its time on.
fn change_a_page(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::options().write(true).open(path).expect("open");
    f.write_all_at(&noise(8192, 10), 8192 * 3).expect("write");
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .expect("touch");
}
