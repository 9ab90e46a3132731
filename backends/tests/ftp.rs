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
        timeout: Duration::from_secs(20),
        force_list: false,
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
    offsite_backends::conformance_tests!(|t| fixture(t, options("PYFTPD", FtpTls::Explicit)));
}

/// pyftpdlib with implicit TLS (TLS from the first byte; data protected too).
mod implicit_ftps {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, options("IMPLICIT", FtpTls::Implicit)));
}

/// pure-ftpd, plain FTP, MLSD.
mod pureftpd_plain {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, options("PUREFTPD", FtpTls::None)));
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
    ));
}

/// pure-ftpd over LIST, with a relative root whose name has a space: every
/// path must be built on the root's absolute path, whatever folder LIST
/// left the session in.
mod pureftpd_list_nested_root {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, nested_root()));
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
