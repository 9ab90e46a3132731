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
