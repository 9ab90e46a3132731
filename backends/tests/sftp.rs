//! The conformance suite on the `sftp` backend against OpenSSH's sshd on
//! loopback (started by `tests/servers/sshd.sh start`, as `make test` does),
//! plus what only SFTP has: host keys, login methods, permissions.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use offsite_backends::conformance::{Fixture, pattern};
use offsite_backends::sftp::{SftpAuth, SftpBackend, SftpOptions};
use offsite_backends::{Backend, ErrorKind, Part, Secret, UploadId};

/// The server's address, user and files, from `target/servers/sshd.env`.
fn sshd_env() -> HashMap<String, String> {
    common::server_env("sshd.env", "sshd.sh")
}

fn var(key: &str) -> String {
    sshd_env()
        .get(key)
        .unwrap_or_else(|| panic!("sshd.env has no {key}"))
        .clone()
}

fn options(auth: SftpAuth, known_hosts: &str) -> SftpOptions {
    SftpOptions {
        host: var("SFTP_HOST"),
        port: var("SFTP_PORT").parse().expect("port"),
        user: var("SFTP_USER"),
        auth,
        known_hosts: PathBuf::from(var(known_hosts)),
        root: var("SFTP_ROOT"),
        timeout: Duration::from_secs(20),
    }
}

fn key_auth() -> SftpAuth {
    SftpAuth::KeyFile {
        path: PathBuf::from(var("SFTP_KEY_FILE")),
        passphrase_env: None,
    }
}

fn backend() -> SftpBackend {
    SftpBackend::new("sftp", options(key_auth(), "SFTP_KNOWN_HOSTS"))
}

fn fixture(test: &str) -> Fixture {
    Fixture {
        connect: Box::new(|| Arc::new(backend()) as Arc<dyn Backend>),
        prefix: common::unique(test),
    }
}

offsite_backends::conformance_tests!(|test_name| fixture(test_name); parts);

/// A folder the SFTP user may enter and read, not write: made here, as
/// root, inside the test's prefix (sshd's user is not root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_permission_are_denied() {
    let f = fixture("writes_without_permission_are_denied");
    let locked = format!("{}/{}/locked", var("SFTP_ROOT"), f.prefix);
    std::fs::create_dir_all(&locked).expect("make the locked folder");
    for dir in [&locked, &format!("{}/{}", var("SFTP_ROOT"), f.prefix)] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let denied = SftpBackend::new(
        "sftp",
        SftpOptions {
            root: locked,
            ..options(key_auth(), "SFTP_KNOWN_HOSTS")
        },
    );
    offsite_backends::conformance::writes_without_permission_are_denied(&f, Arc::new(denied)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_and_an_rsa_key_log_in_too() {
    let password = SftpAuth::Password(Secret::new(var("SFTP_PASSWORD")));
    SftpBackend::new("sftp", options(password, "SFTP_KNOWN_HOSTS"))
        .probe()
        .await
        .expect("password login");
    let rsa = SftpAuth::KeyFile {
        path: PathBuf::from(var("SFTP_RSA_KEY_FILE")),
        passphrase_env: None,
    };
    SftpBackend::new("sftp", options(rsa, "SFTP_KNOWN_HOSTS"))
        .probe()
        .await
        .expect("RSA key login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_unauthenticated_and_never_printed() {
    let secret = "wrong-password-do-not-print-42";
    let b = SftpBackend::new(
        "vault",
        options(SftpAuth::Password(Secret::new(secret)), "SFTP_KNOWN_HOSTS"),
    );
    let err = b.probe().await.expect_err("refused");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{text}");
    assert!(text.contains("destination \"vault\""), "{text}");
    assert!(text.contains(&var("SFTP_USER")), "{text}");
    assert!(
        !text.contains(secret) && !format!("{b:?}").contains(secret),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_changed_host_key_is_refused_showing_the_offered_fingerprint() {
    let fp = var("SFTP_HOST_FINGERPRINT");
    for (file, says) in [
        ("SFTP_KNOWN_HOSTS_EMPTY", "is not in"),
        ("SFTP_KNOWN_HOSTS_WRONG", "does NOT match"),
    ] {
        let b = SftpBackend::new("vault", options(key_auth(), file));
        let err = b.probe().await.expect_err("refused");
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{text}");
        assert!(!err.is_temporary(), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(text.contains(&fp), "the offered fingerprint {fp}: {text}");
        assert!(text.contains("destination \"vault\""), "{text}");
    }
}

/// The error a connection with `known_hosts` as the known_hosts file gets.
async fn refused_with(known_hosts: &str) -> offsite_backends::Error {
    let dir = tempfile::tempdir().expect("tempdir");
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, known_hosts).expect("write");
    let mut o = options(key_auth(), "SFTP_KNOWN_HOSTS");
    o.known_hosts = kh;
    SftpBackend::new("vault", o)
        .probe()
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_names_its_line_counting_the_comments() {
    let wrong = std::fs::read_to_string(var("SFTP_KNOWN_HOSTS_WRONG")).expect("known_hosts");
    let text = refused_with(&format!("# pinned by ops\n# on 2026-12-01\n{wrong}"))
        .await
        .to_string();
    assert!(text.contains("does NOT match"), "{text}");
    assert!(text.contains("(line 3;"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_marked_revoked_is_refused_even_where_a_line_records_it() {
    let fp = var("SFTP_HOST_FINGERPRINT");
    let good = std::fs::read_to_string(var("SFTP_KNOWN_HOSTS")).expect("known_hosts");
    let line = good.lines().next().expect("a line");
    let mut fields = line.split_whitespace().skip(1);
    let (kind, b64) = (fields.next().expect("type"), fields.next().expect("key"));
    let good = good.trim_end();
    let err = refused_with(&format!("{good}\n@revoked * {kind} {b64} leaked\n")).await;
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{text}");
    assert!(!err.is_temporary(), "{text}");
    assert!(
        text.contains("@revoked") && text.contains("line 2"),
        "{text}"
    );
    assert!(text.contains(&fp), "the offered fingerprint {fp}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_the_user_may_not_write_is_permission_denied() {
    // Made by root (the tests' user) inside the SFTP user's tree: read-only for it.
    let name = common::unique("readonly").replace('/', "-");
    let local = PathBuf::from(var("SFTP_ROOT")).join(&name);
    std::fs::create_dir(&local).expect("mkdir as root");
    let b = backend();
    let err = b
        .put(&format!("{name}/x"), Bytes::from_static(b"x"))
        .await
        .expect_err("denied");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    std::fs::remove_dir(&local).expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_file_shorter_than_the_journal_restarts_the_upload() {
    let b = backend();
    let key = format!("{}/vol.tar.zst", common::unique("short"));
    let id = b.create_upload(&key, 1000).await.expect("create");
    let part = |index: u32| Part {
        index,
        offset: u64::from(index) * 1000,
        body: Bytes::from(pattern(1000, u64::from(index))),
    };
    b.put_part(&key, &id, part(0)).await.expect("part 0");
    // Someone truncates the partial file on the server.
    let partial = find_partial(&key, &id);
    std::fs::File::options()
        .write(true)
        .open(&partial)
        .and_then(|f| f.set_len(10))
        .expect("truncate");
    let err = b.put_part(&key, &id, part(1)).await.expect_err("damaged");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// A part written but cut from the server's file before its sync is never
/// reported synced (its receipt would be journaled as sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_cut_before_its_sync_fails_the_sync() {
    let b = backend();
    let key = format!("{}/vol.tar.zst", common::unique("cut"));
    let id = b.create_upload(&key, 1000).await.expect("create");
    let part = Part {
        index: 0,
        offset: 0,
        body: Bytes::from(pattern(1000, 7)),
    };
    let receipt = b.write_part(&key, &id, part).await.expect("write");
    let partial = find_partial(&key, &id);
    assert_eq!(std::fs::metadata(&partial).expect("stat").len(), 1000);
    std::fs::File::options()
        .write(true)
        .open(&partial)
        .and_then(|f| f.set_len(999))
        .expect("truncate");
    let err = b.sync_part(&key, &id, &receipt).await.expect_err("damaged");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
    std::fs::remove_file(&partial).expect("cleanup");
    let err = b.sync_part(&key, &id, &receipt).await.expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

fn find_partial(key: &str, id: &UploadId) -> PathBuf {
    let path = PathBuf::from(var("SFTP_ROOT")).join(key);
    let dir = path.parent().expect("parent");
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(&id.0))
        .expect("the partial file")
}
