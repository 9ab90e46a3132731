//! The Azure Blob destination end to end, against Azurite on loopback
//! (`tests/servers/azurite.sh start`; `make test` starts it).

use std::collections::HashMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::remote::*;
use crate::support::*;

pub(crate) const CONTAINER: &str = "offsite-e2e";

fn azurite() -> HashMap<String, String> {
    server_env("azurite.env", "azurite.sh")
}

/// A `[destination.blob]` table on Azurite's e2e container, under a prefix
/// of this test's own, with the account key from `$AZ_KEY` unless `extra`
/// names another credential.
pub(crate) fn blob_table(sb: &Sandbox, extra: &str) -> String {
    let e = azurite();
    let credential = if extra.contains("_env = ") {
        String::new()
    } else {
        "access_key_env = \"AZ_KEY\"\n".to_string()
    };
    format!(
        "[destination.blob]\nkind = \"azure\"\naccount = \"{}\"\ncontainer = \"{CONTAINER}\"\nendpoint = \"{}\"\nprefix = \"{}\"\n{credential}{extra}\n",
        e["AZURE_ACCOUNT"],
        e["AZURE_ENDPOINT"],
        unique_prefix(sb),
    )
}

pub(crate) fn key() -> String {
    azurite()["AZURE_KEY"].clone()
}

/// Runs offsite with the account key in `$AZ_KEY`.
fn run(sb: &Sandbox, args: &[&str]) -> Run {
    Run::from(
        sb.command(args)
            .env("AZ_KEY", key())
            .output()
            .expect("run offsite"),
    )
}

/// `tests/servers/azure_admin.py` with the account key: what the tests see
/// of the container outside offsite.
pub(crate) fn admin(args: &[&str]) -> String {
    let e = azurite();
    let out = Command::new(&e["AZURE_ADMIN"])
        .args(args)
        .env("AZURE_ENDPOINT", &e["AZURE_ENDPOINT"])
        .env("AZURE_ACCOUNT", &e["AZURE_ACCOUNT"])
        .env("AZURE_KEY", &e["AZURE_KEY"])
        .output()
        .expect("run azure_admin.py");
    assert!(
        out.status.success(),
        "azure_admin.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn an_azure_backup_killed_mid_upload_resumes_and_restores() {
    let sb = Sandbox::new("an_azure_backup_killed_mid_upload_resumes_and_restores");
    let table = blob_table(&sb, "access_tier = \"Cool\"");
    let k = key();
    killed_backup_resumes_and_restores(&sb, "blob", &table, &[("AZ_KEY", &k)]);
}

#[test]
fn a_wrong_azure_key_fails_its_destination_only_and_is_never_printed() {
    let sb = Sandbox::new("a_wrong_azure_key_fails_its_destination_only_and_is_never_printed");
    let table = blob_table(&sb, "");
    let wrong = azurite()["AZURE_WRONG_KEY"].clone();
    a_refused_destination_fails_alone(
        &sb,
        "blob",
        &table,
        &["account key was refused", CONTAINER],
        &[&wrong, &key()],
        &[("AZ_KEY", &wrong)],
    );
}

#[test]
fn a_put_only_sas_backs_up_and_a_reader_with_the_key_restores() {
    let sb = Sandbox::new("a_put_only_sas_backs_up_and_a_reader_with_the_key_restores");
    write(&sb.path("src/chunk-000000.000000"), &noise(3 << 20, 41));
    write(&sb.path("src/writer.chk"), b"0000000000000003");
    let token = admin(&["sas", CONTAINER, "cw", "1"]);
    let table = blob_table(&sb, "sas_token_env = \"AZ_SAS\"\nput_only = true");
    sb.config_dir_job("volume_size = \"1MiB\"", &["blob"], &table);
    let as_uploader = |args: &[&str]| {
        Run::from(
            sb.command(args)
                .env("AZ_SAS", &token)
                .output()
                .expect("run offsite"),
        )
    };
    let r = as_uploader(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_uploader(&["list"]);
    assert_eq!(r.code, 1, "{r:?}");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("put_only"), "{r:?}");
    let sig = token
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .expect("sig");
    assert!(!all.contains(sig), "{r:?}");

    // The restore host: the same container and prefix, with the account key.
    let reader = table
        .replace("sas_token_env = \"AZ_SAS\"\nput_only = true", "")
        .replace(
            "[destination.blob]\n",
            "[destination.blob]\naccess_key_env = \"AZ_KEY\"\n",
        );
    sb.config_dir_job("volume_size = \"1MiB\"", &["blob"], &reader);
    let r = run(&sb, &["--json", "verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    restores_the_source(&sb, |args| run(&sb, args));
}

/// Uncommitted blocks expire after seven days: a resume that finds them gone
/// sends that volume again from its first block, and the backup is whole.
#[test]
fn blocks_gone_from_the_server_restart_that_volume() {
    let sb = Sandbox::new("blocks_gone_from_the_server_restart_that_volume");
    write(&sb.path("src/chunk-000000.000000"), &noise(6 << 20, 43));
    write(&sb.path("src/writer.chk"), b"0000000000000009");
    let table = blob_table(&sb, "");
    let paced = format!("{table}bwlimit = \"3MiB\"\npart_size = \"1MiB\"\n");
    sb.config_dir_job("volume_size = \"3MiB\"", &["blob"], &paced);
    let mut child = sb
        .command(&["--json", "backup"])
        .env("AZ_KEY", key())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start backup");
    wait_for("a part to be journaled", Duration::from_secs(60), || {
        journaled(&sb, "blob").0 >= 1
    });
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    // Every journaled upload that is not finished loses its blocks, as after a week.
    let journal: Vec<serde_json::Value> = fs::read_dir(sb.path("staging/db"))
        .expect("staging")
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join(".journal/blob.jsonl")).ok())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    let done: Vec<&str> = journal
        .iter()
        .filter(|v| v["event"] == "volume_done")
        .filter_map(|v| v["key"].as_str())
        .collect();
    let open: Vec<&str> = journal
        .iter()
        .filter(|v| v["event"] == "started")
        .filter_map(|v| v["key"].as_str())
        .filter(|k| !done.contains(k))
        .collect();
    assert!(!open.is_empty(), "an unfinished upload: {journal:?}");
    for k in &open {
        assert_ne!(
            admin(&["blocks", CONTAINER, k]),
            "0 0",
            "{k} has staged blocks"
        );
        admin(&["discard", CONTAINER, k]);
        assert_eq!(admin(&["blocks", CONTAINER, k]), "0 0");
    }

    sb.config_dir_job("volume_size = \"3MiB\"", &["blob"], &table);
    let r = run(&sb, &["--json", "upload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("again"),
        "the volume is sent again: {r:?}"
    );
    restores_the_source(&sb, |args| run(&sb, args));
}

/// Volumes in the Archive tier: verify and restore ask for every volume's
/// rehydration in one pass and exit 4, writing nothing; a later run restores.
/// (Azurite rehydrates at once, so the second run already succeeds.)
#[test]
fn a_restore_from_archive_requests_rehydration_exits_4_and_completes_later() {
    let sb =
        Sandbox::new("a_restore_from_archive_requests_rehydration_exits_4_and_completes_later");
    write(&sb.path("src/chunk-000000.000000"), &noise(2_500_000, 47));
    write(&sb.path("src/writer.chk"), b"0000000000000005");
    let table = blob_table(
        &sb,
        "access_tier = \"Archive\"\nrehydrate_priority = \"High\"",
    );
    sb.config_dir_job("volume_size = \"1MiB\"", &["blob"], &table);
    let r = run(&sb, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");

    // The volumes are archived; the manifest stays in Hot, so list needs no rehydration.
    let r = run(&sb, &["--json", "list"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.json()["listings"][0]["backups"][0]["id"]
        .as_str()
        .expect("a backup")
        .to_string();
    let prefix = prefix_of(&table);
    let dir = format!("{prefix}/db/{id}");
    let volumes: Vec<String> = (0..3)
        .map(|i| format!("{dir}/vol-{i:06}.tar.zst"))
        .collect();
    for v in &volumes {
        assert!(admin(&["tier", CONTAINER, v]).starts_with("Archive"), "{v}");
    }
    assert!(admin(&["tier", CONTAINER, &format!("{dir}/manifest.json")]).starts_with("Hot"));

    let to = sb.path("restored");
    let args = [
        "--json",
        "restore",
        "--job",
        "db",
        "--to",
        to.to_str().expect("utf8"),
    ];
    let r = run(&sb, &args);
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(r.json()["status"], "pending", "{r:?}");
    let err = r.json()["error"].as_str().unwrap_or("").to_string();
    assert!(
        err.contains("Archive tier, High rehydration to Hot")
            && err.contains("retrieval requested for 3 of 3 volume(s)")
            && err.contains("ready in about 60 minutes"),
        "{err}"
    );
    assert!(!to.exists(), "a pending restore writes nothing");
    for v in &volumes {
        assert!(
            admin(&["tier", CONTAINER, v]).starts_with("Hot"),
            "{v} rehydrated"
        );
    }

    let r = run(&sb, &args);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
}
