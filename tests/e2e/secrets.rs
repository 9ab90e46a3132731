//! Secrets never leak: every command runs against every kind of destination
//! with credentials the servers refuse (or a passphrase that works), and no
//! password, key, SAS signature or passphrase may appear in stdout, stderr,
//! the JSON, the status file, the journals or any other file offsite writes.

use std::fs;

use crate::support::*;

#[test]
fn no_command_prints_or_writes_a_secret() {
    let sb = Sandbox::new("no_command_prints_or_writes_a_secret");
    write(&sb.path("src/a.db"), &noise(200_000, 61));
    let sftp_pw = "sftp-wrong-PW-0123456789";
    let ftp_pw = "ftp-wrong-PW-0123456789";
    let s3_secret = "s3-wrong-secret-0123456789abcdefABCDEF";
    let passphrase = "enc-PASS-phrase-0123456789";
    let az_key = crate::remote::server_env("azurite.env", "azurite.sh")["AZURE_WRONG_KEY"].clone();
    // A real signature, for a token that expired an hour ago.
    let sas = crate::azure::admin(&["sas", "offsite-e2e", "racwdl", "-1"]);
    let sig = sas
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .expect("sig")
        .to_string();

    let tables = [
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n".to_string(),
        crate::sftp::sftp_table(&sb, "password_env = \"SFTP_PW\"", "SFTP_KNOWN_HOSTS"),
        crate::ftp::ftp_table(&sb, "PYFTPD", "explicit", "FTP_CA_FILE"),
        crate::azure::blob_table(&sb, "access_key_env = \"AZ_KEY\""),
        crate::azure::blob_table(&sb, "sas_token_env = \"AZ_SAS\"")
            .replace("[destination.blob]", "[destination.blobsas]"),
        crate::s3::s3_table(&sb, ""),
    ]
    .join("\n");
    sb.config_dir_job(
        "encryption = { passphrase_env = \"ENC_PASS\" }\nretention = { keep_last = 1 }",
        &["nas", "sftp", "ftp", "blob", "blobsas", "s3"],
        &tables,
    );
    let m = crate::s3::moto();
    let env = [
        ("SFTP_PW", sftp_pw.to_string()),
        ("FTP_PW", ftp_pw.to_string()),
        ("AZ_KEY", az_key.clone()),
        ("AZ_SAS", sas.clone()),
        ("ENC_PASS", passphrase.to_string()),
        ("AWS_ACCESS_KEY_ID", m["MOTO_ADMIN_ACCESS_KEY_ID"].clone()),
        ("AWS_SECRET_ACCESS_KEY", s3_secret.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let secrets = [sftp_pw, ftp_pw, s3_secret, passphrase, &az_key, &sig, &sas];

    let to = sb.path("restored");
    let to = to.to_str().expect("utf8");
    let commands: &[&[&str]] = &[
        &["check"],
        &["check", "--write-test"],
        &["backup"],
        &["upload"],
        &["list"],
        &["verify"],
        &["restore", "--job", "db", "--to", to],
        &["prune", "--dry-run"],
        &["prune"],
        &["status"],
    ];
    let mut outputs = String::new();
    let mut runs = 0;
    for args in commands {
        for json in [false, true] {
            let mut full: Vec<&str> = Vec::new();
            if json {
                full.push("--json");
            }
            full.extend_from_slice(args);
            let mut c = sb.command(&full);
            c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            let r = Run::from(c.output().expect("run offsite"));
            assert_ne!(r.code, 101, "{full:?} panicked: {r:?}");
            outputs.push_str(&format!("{full:?}\n{}\n{}\n", r.stdout, r.stderr));
            runs += 1;
        }
    }
    // Everything offsite wrote: staging (status, journals, manifests), the
    // path destination, the restore target.
    let mut written = String::new();
    for dir in ["staging", "dest", "restored"] {
        for e in walkdir::WalkDir::new(sb.path(dir)).into_iter().flatten() {
            if e.file_type().is_file() {
                written.push_str(&String::from_utf8_lossy(&fs::read(e.path()).expect("read")));
            }
        }
    }
    for s in secrets {
        assert!(
            !outputs.contains(s),
            "a secret ({} chars) is in the output:\n{outputs}",
            s.len()
        );
        assert!(
            !written.contains(s),
            "a secret ({} chars) is in a file offsite wrote",
            s.len()
        );
    }
    // The runs did reach the servers and were refused (not skipped).
    for refused in ["sftp", "ftp", "blob", "blobsas", "s3"] {
        assert!(
            outputs.contains(&format!("destination \"{refused}\"")),
            "{refused}: {outputs}"
        );
    }
    assert_eq!(runs, 20);
}
