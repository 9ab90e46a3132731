//! The FTP destination end to end, against pyftpdlib (TLS required) and
//! pure-ftpd on loopback (`tests/servers/ftp.sh start`; `make test` starts them).

use crate::remote::*;
use crate::support::*;

pub(crate) fn ftp() -> std::collections::HashMap<String, String> {
    server_env("ftp.env", "ftp.sh")
}

/// A `[destination.ftp]` table on `server` (PYFTPD or PUREFTPD); the
/// password comes from FTP_PW, which the tests set.
pub(crate) fn ftp_table(sb: &Sandbox, server: &str, tls: &str, ca: &str) -> String {
    let e = ftp();
    let ca = if ca.is_empty() {
        String::new()
    } else {
        format!("ca_file = \"{}\"\n", e[ca])
    };
    format!(
        "[destination.ftp]\nkind = \"ftp\"\nhost = \"{}\"\nport = {}\nuser = \"{}\"\npassword_env = \"FTP_PW\"\npath = \"/\"\ntls = \"{tls}\"\n{ca}prefix = \"{}\"\n",
        e["FTP_HOST"],
        e[&format!("{server}_PORT")],
        e[&format!("{server}_USER")],
        unique_prefix(sb)
    )
}

#[test]
fn an_ftps_backup_killed_mid_upload_resumes_and_restores_on_pyftpdlib() {
    let sb = Sandbox::new("an_ftps_backup_killed_mid_upload_resumes_and_restores_on_pyftpdlib");
    let table = ftp_table(&sb, "PYFTPD", "explicit", "FTP_CA_FILE");
    let password = ftp()["PYFTPD_PASSWORD"].clone();
    killed_backup_resumes_and_restores(&sb, "ftp", &table, &[("FTP_PW", &password)]);
}

#[test]
fn an_ftp_backup_killed_mid_upload_resumes_and_restores_on_pure_ftpd() {
    let sb = Sandbox::new("an_ftp_backup_killed_mid_upload_resumes_and_restores_on_pure_ftpd");
    let table = ftp_table(&sb, "PUREFTPD", "none", "");
    let password = ftp()["PUREFTPD_PASSWORD"].clone();
    killed_backup_resumes_and_restores(&sb, "ftp", &table, &[("FTP_PW", &password)]);
}

#[test]
fn a_wrong_ftp_password_fails_its_destination_only() {
    let sb = Sandbox::new("a_wrong_ftp_password_fails_its_destination_only");
    let table = ftp_table(&sb, "PYFTPD", "explicit", "FTP_CA_FILE");
    let secret = "wrong-ftp-password-0123456789";
    a_refused_destination_fails_alone(
        &sb,
        "ftp",
        &table,
        &["login as offsite@127.0.0.1", "password"],
        &[secret],
        &[("FTP_PW", secret)],
    );
}

#[test]
fn an_untrusted_ftps_certificate_fails_its_destination_only() {
    let sb = Sandbox::new("an_untrusted_ftps_certificate_fails_its_destination_only");
    let table = ftp_table(&sb, "PYFTPD", "explicit", "FTP_OTHER_CA_FILE");
    let password = ftp()["PYFTPD_PASSWORD"].clone();
    a_refused_destination_fails_alone(
        &sb,
        "ftp",
        &table,
        &["certificate", "ca_file"],
        &[&password],
        &[("FTP_PW", &password)],
    );
}

fn proftpd() -> std::collections::HashMap<String, String> {
    server_env("proftpd.env", "proftpd.sh")
}

/// A `[destination.ftp]` table on ProFTPD as shipped: explicit TLS, the
/// certificate trusted by `trust` (a `ca_file = ...` or `fingerprint = ...`
/// line), the password from FTP_PW; `selfsigned` picks the second instance.
fn proftpd_table(sb: &Sandbox, selfsigned: bool, trust: &str) -> String {
    let e = proftpd();
    let (port, user) = if selfsigned {
        ("PROFTPD_SELFSIGNED_PORT", "PROFTPD_SELFSIGNED_USER")
    } else {
        ("PROFTPD_PORT", "PROFTPD_USER")
    };
    format!(
        "[destination.ftp]\nkind = \"ftp\"\nhost = \"{}\"\nport = {}\nuser = \"{}\"\npassword_env = \"FTP_PW\"\npath = \"/\"\ntls = \"explicit\"\n{trust}\nprefix = \"{}\"\npart_size = \"256KiB\"\n",
        e["PROFTPD_HOST"],
        e[port],
        e[user],
        unique_prefix(sb)
    )
}

fn with_password(sb: &Sandbox, password: &str) -> impl Fn(&[&str]) -> Run {
    let password = password.to_string();
    let sb_root = sb.root.clone();
    move |args: &[&str]| {
        let mut c = std::process::Command::new(bin());
        c.arg("--config")
            .arg(sb_root.join("offsite.toml"))
            .args(args)
            .env("FTP_PW", &password)
            .env_remove("OFFSITE_CONFIG");
        Run::from(c.output().expect("run offsite"))
    }
}

/// ProFTPD as shipped refuses to resume a transfer: `check --write-test`
/// says so, and a backup of several volumes in several parts sends each
/// volume whole instead of failing, says it once, and restores
/// byte-identical, over TLS with the session reuse ProFTPD requires.
#[test]
fn proftpd_as_shipped_takes_whole_volumes_and_says_so_once() {
    let sb = Sandbox::new("proftpd_as_shipped_takes_whole_volumes_and_says_so_once");
    write(&sb.path("src/chunk-0"), &noise(900 << 10, 1));
    write(&sb.path("src/chunk-1"), &noise(900 << 10, 2));
    write(&sb.path("src/writer.chk"), b"0001");
    let e = proftpd();
    let table = proftpd_table(
        &sb,
        false,
        &format!("ca_file = \"{}\"", e["PROFTPD_CA_FILE"]),
    );
    sb.config_dir_job("volume_size = \"1MiB\"", &["ftp"], &table);
    let run = with_password(&sb, &e["PROFTPD_PASSWORD"]);
    let c = run(&["--json", "check", "--write-test"]);
    assert_eq!(c.code, 0, "{c:?}");
    let notes = c.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|x| x["destination"] == "ftp")
        .expect("ftp")["notes"]
        .clone();
    assert!(
        notes.to_string().contains("refuses to resume")
            && notes.to_string().contains("AllowStoreRestart"),
        "check says what it found: {c:?}"
    );
    let r = run(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let d = &r.json()["destinations"][0];
    let notes = d["notes"].as_array().expect("notes once");
    assert_eq!(notes.len(), 1, "{r:?}");
    assert!(
        notes[0].as_str().unwrap_or("").contains("sent whole"),
        "{r:?}"
    );
    crate::remote::restores_the_source(&sb, run);
}

/// A small server's self-signed certificate: refused with its fingerprint
/// in the error, then trusted once pinned (`fingerprint = "sha256:..."`).
#[test]
fn a_self_signed_ftps_certificate_is_trusted_once_pinned() {
    let sb = Sandbox::new("a_self_signed_ftps_certificate_is_trusted_once_pinned");
    write(&sb.path("src/a.dat"), &noise(100_000, 4));
    let e = proftpd();
    let run = with_password(&sb, &e["PROFTPD_SELFSIGNED_PASSWORD"]);
    sb.config_dir_job("", &["ftp"], &proftpd_table(&sb, true, ""));
    let c = run(&["check"]);
    assert_eq!(c.code, 1, "{c:?}");
    let fp = &e["PROFTPD_SELFSIGNED_SHA256"];
    assert!(
        c.stdout.contains(fp.as_str()) && c.stdout.contains("fingerprint = \"sha256:"),
        "the refusal shows the fingerprint to pin: {c:?}"
    );
    sb.config_dir_job(
        "",
        &["ftp"],
        &proftpd_table(&sb, true, &format!("fingerprint = \"sha256:{fp}\"")),
    );
    let r = run(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    crate::remote::restores_the_source(&sb, run);
}
