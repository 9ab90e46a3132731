//! The conformance suite on the `ftp` backend against two real servers on
//! loopback (started by `tests/servers/ftp.sh start`, as `make test` does):
//! pyftpdlib with TLS required (explicit FTPS) and pure-ftpd (plain FTP, and
//! its LIST fallback), plus certificates and logins.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use offsite_backends::conformance::Fixture;
use offsite_backends::ftp::{FtpBackend, FtpOptions, FtpPassword, FtpTls};
use offsite_backends::{Backend, ErrorKind, Secret};

fn ftp_env() -> HashMap<String, String> {
    common::server_env("ftp.env", "ftp.sh")
}

fn var(key: &str) -> String {
    ftp_env()
        .get(key)
        .unwrap_or_else(|| panic!("ftp.env has no {key}"))
        .clone()
}

/// `server` is PYFTPD or PUREFTPD.
fn options(server: &str, tls: FtpTls) -> FtpOptions {
    FtpOptions {
        host: var("FTP_HOST"),
        port: var(&format!("{server}_PORT")).parse().expect("port"),
        user: var(&format!("{server}_USER")),
        password: FtpPassword::Value(Secret::new(var(&format!("{server}_PASSWORD")))),
        root: "/".into(),
        tls,
        ca_file: Some(PathBuf::from(var("FTP_CA_FILE"))),
        fingerprint: None,
        timeout: Duration::from_secs(20),
        force_list: false,
        resume: true,
    }
}

fn fixture(test: &str, options: FtpOptions) -> Fixture {
    Fixture {
        connect: Box::new(move || {
            Arc::new(FtpBackend::new("ftp", options.clone())) as Arc<dyn Backend>
        }),
        prefix: common::unique(test),
    }
}

/// pyftpdlib, TLS required on control and data connections.
mod pyftpdlib_ftps {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, options("PYFTPD", FtpTls::Explicit)); parts);
}

/// pyftpdlib with implicit TLS (TLS from the first byte; data protected too).
mod implicit_ftps {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, options("IMPLICIT", FtpTls::Implicit)); parts);

    /// A user who may list and read, not write (pyftpdlib's perm "elr").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_without_permission_are_denied() {
        let f = fixture(
            "writes_without_permission_are_denied",
            options("IMPLICIT", FtpTls::Implicit),
        );
        let reader = FtpOptions {
            user: var("IMPLICIT_READER_USER"),
            ..options("IMPLICIT", FtpTls::Implicit)
        };
        let denied = Arc::new(FtpBackend::new("ftp", reader));
        offsite_backends::conformance::writes_without_permission_are_denied(&f, denied).await;
    }
}

/// pure-ftpd, plain FTP, MLSD.
mod pureftpd_plain {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, options("PUREFTPD", FtpTls::None)); parts);
}

/// pure-ftpd over explicit TLS, listing with LIST as on a server without MLSD (vsftpd).
mod pureftpd_ftps_list {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(
        t,
        FtpOptions {
            force_list: true,
            ..options("PUREFTPD", FtpTls::Explicit)
        }
    ); parts);
}

/// pure-ftpd over LIST, with a relative root whose name has a space: every
/// path must be built on the root's absolute path, whatever folder LIST
/// left the session in.
mod pureftpd_list_nested_root {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, nested_root()); parts);
}

fn nested_root() -> FtpOptions {
    use std::os::unix::fs::MetadataExt;
    let top = PathBuf::from(var("PUREFTPD_ROOT"));
    let owner = std::fs::metadata(&top).expect("pure-ftpd root");
    let mut dir = top;
    for part in ["nested root", "deeper"] {
        dir = dir.join(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => std::os::unix::fs::chown(&dir, Some(owner.uid()), Some(owner.gid()))
                .expect("chown to the FTP user"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("{}: {e}", dir.display()),
        }
    }
    FtpOptions {
        root: "nested root/deeper".into(),
        force_list: true,
        ..options("PUREFTPD", FtpTls::None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let b = FtpBackend::new(
        "vault",
        FtpOptions {
            ca_file: Some(PathBuf::from(var("FTP_OTHER_CA_FILE"))),
            ..options("PYFTPD", FtpTls::Explicit)
        },
    );
    let err = b.probe().await.expect_err("untrusted");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{text}");
    assert!(!err.is_temporary(), "{text}");
    assert!(text.contains("destination \"vault\""), "{text}");
    assert!(text.contains("ca_file"), "{text}");
    // Without ca_file only the public roots are trusted: the private CA is not.
    let b = FtpBackend::new(
        "vault",
        FtpOptions {
            ca_file: None,
            ..options("PYFTPD", FtpTls::Explicit)
        },
    );
    assert_eq!(
        b.probe().await.expect_err("untrusted").kind(),
        ErrorKind::ConfigInvalid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_requiring_tls_refuses_plain_ftp_clearly() {
    let b = FtpBackend::new("vault", options("PYFTPD", FtpTls::None));
    let err = b.probe().await.expect_err("TLS required");
    let text = err.to_string();
    assert!(text.contains("destination \"vault\""), "{text}");
    assert!(!err.is_temporary(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_unauthenticated_and_never_printed() {
    let secret = "wrong-ftp-password-do-not-print";
    for server in ["PYFTPD", "PUREFTPD"] {
        let b = FtpBackend::new(
            "vault",
            FtpOptions {
                password: FtpPassword::Value(Secret::new(secret)),
                ..options(server, FtpTls::Explicit)
            },
        );
        let err = b.probe().await.expect_err("refused");
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{server}: {text}");
        assert!(text.contains("destination \"vault\""), "{text}");
        assert!(!text.contains(secret) && !format!("{b:?}").contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_root_folder_is_a_configuration_error() {
    let b = FtpBackend::new(
        "vault",
        FtpOptions {
            root: "/no-such-folder-here".into(),
            ..options("PUREFTPD", FtpTls::None)
        },
    );
    let err = b.probe().await.expect_err("missing root");
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("/no-such-folder-here"), "{err}");
}

// ---------------------------------------------------------------------------
// ProFTPD as Debian ships it (tests/servers/proftpd.sh): AllowStoreRestart
// off (no REST + STOR, no APPE on an existing file), TLS session reuse
// required on data connections, a self-signed certificate on its second
// instance.

fn proftpd_env() -> HashMap<String, String> {
    common::server_env("proftpd.env", "proftpd.sh")
}

fn proftpd(tls: FtpTls, resume: bool) -> FtpOptions {
    let e = proftpd_env();
    FtpOptions {
        host: e["PROFTPD_HOST"].clone(),
        port: e["PROFTPD_PORT"].parse().expect("port"),
        user: e["PROFTPD_USER"].clone(),
        password: FtpPassword::Value(Secret::new(e["PROFTPD_PASSWORD"].clone())),
        root: "/".into(),
        tls,
        ca_file: Some(PathBuf::from(&e["PROFTPD_CA_FILE"])),
        fingerprint: None,
        timeout: Duration::from_secs(20),
        force_list: false,
        resume,
    }
}

fn proftpd_selfsigned(fingerprint: Option<[u8; 32]>) -> FtpOptions {
    let e = proftpd_env();
    FtpOptions {
        port: e["PROFTPD_SELFSIGNED_PORT"].parse().expect("port"),
        user: e["PROFTPD_SELFSIGNED_USER"].clone(),
        password: FtpPassword::Value(Secret::new(e["PROFTPD_SELFSIGNED_PASSWORD"].clone())),
        ca_file: None,
        fingerprint,
        ..proftpd(FtpTls::Explicit, false)
    }
}

/// ProFTPD over plain FTP, configured not to resume: files go whole.
mod proftpd_stock_whole {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, proftpd(FtpTls::None, false)); whole);
}

/// ProFTPD over explicit TLS as shipped: every data connection must resume
/// the control connection's TLS session (the suite opens dozens on pooled
/// control connections).
mod proftpd_stock_ftps {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, proftpd(FtpTls::Explicit, false)); whole);
}

/// A server that refuses to resume is found at the first part past offset
/// 0: the part fails as Unsupported, saying what to change on the server,
/// the backend stops offering parts, and the file goes whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_to_resume_is_found_and_files_go_whole() {
    let b = FtpBackend::new("pro", proftpd(FtpTls::Explicit, true));
    assert!(b.capabilities().multipart);
    let key = format!("{}/vol", common::unique("refusing_to_resume"));
    let id = b.create_upload(&key, 1 << 20).await.expect("create");
    let data = offsite_backends::conformance::pattern(1 << 20, 7);
    let part = |index: u32| offsite_backends::Part {
        index,
        offset: u64::from(index) << 19,
        body: bytes::Bytes::copy_from_slice(
            &data[(index as usize) << 19..((index as usize) + 1) << 19],
        ),
    };
    b.put_part(&key, &id, part(0))
        .await
        .expect("the first part, at offset 0");
    let err = b
        .put_part(&key, &id, part(1))
        .await
        .expect_err("REST refused");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("AllowStoreRestart"), "{err}");
    assert!(!b.capabilities().multipart, "from now on, whole files");
    b.abort_upload(&key, &id).await.expect("abort");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vol");
    std::fs::write(&path, &data).expect("write");
    b.put_file(
        &key,
        offsite_backends::FileBody::new(&path, data.len() as u64),
    )
    .await
    .expect("put_file");
    assert_eq!(
        offsite_backends::get_bytes(&b, &key).await.expect("get"),
        data
    );
}

/// A small server's self-signed certificate (CA:TRUE, which rustls refuses
/// as a server's own) is trusted when pinned by its SHA-256; without the
/// pin, the refusal prints the fingerprint to pin; a wrong pin is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_self_signed_certificate_is_trusted_and_any_other_refused() {
    let e = proftpd_env();
    let shown = e["PROFTPD_SELFSIGNED_SHA256"].clone();
    let pin = offsite_backends::ftp::parse_fingerprint(&shown).expect("fingerprint");
    let b = FtpBackend::new("small", proftpd_selfsigned(Some(pin)));
    b.probe().await.expect("the pinned certificate is trusted");
    let key = format!("{}/pinned", common::unique("pinned"));
    b.put(&key, bytes::Bytes::from_static(b"over pinned TLS"))
        .await
        .expect("put");
    assert_eq!(
        offsite_backends::get_bytes(&b, &key).await.expect("get"),
        b"over pinned TLS"
    );

    let unpinned = FtpBackend::new("small", proftpd_selfsigned(None));
    let err = unpinned.probe().await.expect_err("not trusted");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{text}");
    assert!(
        text.contains(&shown) && text.contains("fingerprint = \"sha256:"),
        "the error shows the fingerprint to pin: {text}"
    );
    let mut wrong = pin;
    wrong[0] ^= 1;
    let err = FtpBackend::new("small", proftpd_selfsigned(Some(wrong)))
        .probe()
        .await
        .expect_err("another certificate");
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
}

/// The hidden files an interrupted upload leaves are listed as leftovers
/// (with their time), never as objects, and `delete` removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_leaves_a_leftover_that_delete_removes() {
    let b = FtpBackend::new("pro", proftpd(FtpTls::None, true));
    let prefix = common::unique("leftovers");
    let key = format!("{prefix}/id/vol");
    let _id = b.create_upload(&key, 1 << 20).await.expect("create");
    assert!(
        offsite_backends::list_all(&b, &format!("{prefix}/"))
            .await
            .expect("list")
            .is_empty()
    );
    let left = b
        .list_leftovers(&format!("{prefix}/"))
        .await
        .expect("leftovers");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].key.starts_with(&format!("{prefix}/id/.vol.")),
        "{left:?}"
    );
    assert!(left[0].modified.is_some());
    b.delete(&left[0].key).await.expect("delete");
    assert!(
        b.list_leftovers(&format!("{prefix}/"))
            .await
            .expect("leftovers")
            .is_empty()
    );
}

/// What lands on the server is the owner's only (SITE CHMOD 600 before the
/// move into place), on each server the suite runs: a put, a multipart
/// upload, and a whole file where the server does not resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_the_server_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let servers = [
        (options("PYFTPD", FtpTls::Explicit), var("PYFTPD_ROOT")),
        (options("PUREFTPD", FtpTls::None), var("PUREFTPD_ROOT")),
        (
            proftpd(FtpTls::None, false),
            proftpd_env()["PROFTPD_ROOT"].clone(),
        ),
    ];
    for (opts, root) in servers {
        let b = FtpBackend::new("ftp", opts);
        let prefix = common::unique("modes");
        let small = format!("{prefix}/manifest.json");
        b.put(&small, bytes::Bytes::from_static(b"{}"))
            .await
            .expect("put");
        let big = format!("{prefix}/vol-000000");
        let data = offsite_backends::conformance::pattern(70_000, 9);
        if b.capabilities().multipart {
            let id = b.create_upload(&big, 65_536).await.expect("create");
            let mut receipts = Vec::new();
            for (i, chunk) in data.chunks(65_536).enumerate() {
                let part = offsite_backends::Part {
                    index: i as u32,
                    offset: (i * 65_536) as u64,
                    body: bytes::Bytes::copy_from_slice(chunk),
                };
                receipts.push(b.put_part(&big, &id, part).await.expect("part"));
            }
            b.complete_upload(&big, &id, &receipts)
                .await
                .expect("complete");
        } else {
            let dir = tempfile::tempdir().expect("tempdir");
            let staged = dir.path().join("staged");
            std::fs::write(&staged, &data).expect("write");
            b.put_file(
                &big,
                offsite_backends::FileBody::new(&staged, data.len() as u64),
            )
            .await
            .expect("put_file");
        }
        for key in [&small, &big] {
            let path = PathBuf::from(&root).join(key);
            let mode = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
    }
}
