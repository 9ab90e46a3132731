//! The SFTP destination end to end, against OpenSSH's sshd on loopback
//! (`tests/servers/sshd.sh start`; `make test` starts it).

use crate::remote::*;
use crate::support::*;

fn sshd() -> std::collections::HashMap<String, String> {
    server_env("sshd.env", "sshd.sh")
}

/// A `[destination.sftp]` table; `auth` gives the login lines.
pub(crate) fn sftp_table(sb: &Sandbox, auth: &str, known_hosts: &str) -> String {
    let e = sshd();
    format!(
        "[destination.sftp]\nkind = \"sftp\"\nhost = \"{}\"\nport = {}\nuser = \"{}\"\n{auth}\nknown_hosts = \"{}\"\npath = \"{}\"\nprefix = \"{}\"\n",
        e["SFTP_HOST"],
        e["SFTP_PORT"],
        e["SFTP_USER"],
        e[known_hosts],
        e["SFTP_ROOT"],
        unique_prefix(sb)
    )
}

/// An SFTP `table` made for the shared sshd, pointed at `port` instead (a
/// proxy in front of it, or a server of the test's own with the same host
/// key), with that key pinned for `port` in a known_hosts in the sandbox.
pub(crate) fn via_port(sb: &Sandbox, table: &str, port: u16) -> String {
    let e = sshd();
    let pinned = std::fs::read_to_string(&e["SFTP_KNOWN_HOSTS"])
        .expect("known_hosts")
        .replace(&format!("]:{} ", e["SFTP_PORT"]), &format!("]:{port} "));
    let known = sb.path(&format!("known_hosts-{port}"));
    std::fs::write(&known, pinned).expect("write known_hosts");
    table
        .replace(
            &format!("port = {}\n", e["SFTP_PORT"]),
            &format!("port = {port}\n"),
        )
        .replace(
            &format!("known_hosts = \"{}\"", e["SFTP_KNOWN_HOSTS"]),
            &format!("known_hosts = \"{}\"", known.display()),
        )
}

pub(crate) fn key_auth() -> String {
    format!("key_file = \"{}\"", sshd()["SFTP_KEY_FILE"])
}

#[test]
fn an_sftp_backup_killed_mid_upload_resumes_and_restores() {
    let sb = Sandbox::new("an_sftp_backup_killed_mid_upload_resumes_and_restores");
    let table = sftp_table(&sb, &key_auth(), "SFTP_KNOWN_HOSTS");
    killed_backup_resumes_and_restores(&sb, "sftp", &table, &[]);
}

#[test]
fn a_wrong_sftp_password_fails_its_destination_only() {
    let sb = Sandbox::new("a_wrong_sftp_password_fails_its_destination_only");
    let table = sftp_table(&sb, "password_env = \"VAULT_PW\"", "SFTP_KNOWN_HOSTS");
    let secret = "wrong-sftp-password-0123456789";
    a_refused_destination_fails_alone(
        &sb,
        "sftp",
        &table,
        &["offsite-sftp@127.0.0.1", "password"],
        &[secret],
        &[("VAULT_PW", secret)],
    );
}

#[test]
fn an_unknown_sftp_host_key_fails_its_destination_only_and_shows_the_fingerprint() {
    let sb = Sandbox::new(
        "an_unknown_sftp_host_key_fails_its_destination_only_and_shows_the_fingerprint",
    );
    let table = sftp_table(&sb, &key_auth(), "SFTP_KNOWN_HOSTS_EMPTY");
    let fp = sshd()["SFTP_HOST_FINGERPRINT"].clone();
    a_refused_destination_fails_alone(
        &sb,
        "sftp",
        &table,
        &["is not in", &fp, "ssh-keyscan"],
        &[],
        &[],
    );
}

/// What lands on an SFTP server is readable by its owner only, as on a
/// folder destination: a backup holds the database's data.
#[test]
fn backup_files_on_an_sftp_server_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("backup_files_on_an_sftp_server_are_the_owners_only");
    write(&sb.path("src/a.dat"), &noise(100_000, 7));
    let table = sftp_table(&sb, &key_auth(), "SFTP_KNOWN_HOSTS");
    sb.config_dir_job("", &["sftp"], &table);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.json()["backup"].as_str().expect("id").to_string();
    // The server is this machine's sshd: its files are under SFTP_ROOT.
    let folder = std::path::PathBuf::from(&sshd()["SFTP_ROOT"])
        .join(prefix_of(&table))
        .join("db")
        .join(&id);
    let mut seen = 0;
    for e in std::fs::read_dir(&folder).expect("the backup's folder") {
        let e = e.expect("entry");
        let mode = e.metadata().expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", e.path().display());
        seen += 1;
    }
    assert!(seen >= 2, "a volume and the manifest");
}
