//! What every network destination must survive end to end, written once and
//! run against each real server (SFTP, FTP): a backup killed mid-upload and
//! resumed, and a destination that refuses us failing alone.

use std::collections::HashMap;
use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

/// `KEY=value` lines of a test server's env file under target/servers/.
pub fn server_env(file: &str, start: &str) -> HashMap<String, String> {
    let path = format!("{}/target/servers/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{path}: {e}; start the test server first: tests/servers/{start} start (make test does)"
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A prefix no other test (or earlier run) uses.
pub fn unique_prefix(sb: &Sandbox) -> String {
    let test = sb.root.file_name().and_then(|n| n.to_str()).unwrap_or("t");
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("e2e/{test}-{nonce}")
}

/// Restores job db's latest backup into `restored/` with `run` (offsite
/// with the arguments given, and whatever credentials it sets) and checks
/// it equals `src/`.
pub fn restores_the_source(sb: &Sandbox, run: impl Fn(&[&str]) -> Run) {
    let to = sb.path("restored");
    let r = run(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
}

/// Restores job db's latest backup from each of `dests` (into
/// `restored-<dest>/`) with `run`, each equal to `src/`.
pub fn restores_from_each(sb: &Sandbox, run: &dyn Fn(&[&str]) -> Run, dests: &[&str]) {
    for dest in dests {
        let to = sb.path(&format!("restored-{dest}"));
        let to_s = to.to_str().expect("utf8");
        let r = run(&[
            "restore",
            "--job",
            "db",
            "--destination",
            dest,
            "--to",
            to_s,
        ]);
        assert_eq!(r.code, 0, "{dest}: {r:?}");
        assert_same_tree(&sb.path("src"), &to);
    }
}

/// The `prefix = "..."` a destination table sets.
pub fn prefix_of(table: &str) -> String {
    table
        .lines()
        .find_map(|l| l.strip_prefix("prefix = "))
        .map(|p| p.trim_matches('"').to_string())
        .expect("the table sets a prefix")
}

/// Backs up 6 MiB in three volumes to destination `dest` (its TOML table is
/// `table`; the bandwidth limit set here keeps the upload slow), SIGKILLs
/// the run once a part is journaled, resumes with `upload`, and restores:
/// the resumed upload sends only what the journal lacks, and the restore is
/// byte-identical.
/// `env` is set for every run (secrets the table names).
pub fn killed_backup_resumes_and_restores(
    sb: &Sandbox,
    dest: &str,
    table: &str,
    env: &[(&str, &str)],
) {
    let run = |args: &[&str]| {
        let mut c = sb.command(args);
        c.envs(env.iter().copied());
        let out = c.output().expect("run offsite");
        Run::from(out)
    };
    write(&sb.path("src/chunk-000000.000000"), &noise(6 << 20, 17));
    write(&sb.path("src/index/a.idx"), &noise(100_000, 18));
    write(&sb.path("src/writer.chk"), b"0000000000000042");
    let paced = format!("{table}bwlimit = \"3MiB\"\npart_size = \"1MiB\"\n");
    sb.config_dir_job("volume_size = \"2MiB\"", &[dest], &paced);
    let mut child = sb
        .command(&["--json", "backup"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start backup");
    wait_for("a part to be journaled", Duration::from_secs(60), || {
        journaled(sb, dest).0 >= 1
    });
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (_, journaled_bytes) = journaled(sb, dest);

    sb.config_dir_job("volume_size = \"2MiB\"", &[dest], table);
    let r = run(&["--json", "upload"]);
    assert_eq!(r.code, 0, "{r:?}");
    let d = &r.json()["runs"][0]["destinations"][0];
    assert_eq!(d["status"], "ok", "{r:?}");
    assert_eq!(d["bytes_resumed"].as_u64(), Some(journaled_bytes), "{r:?}");

    let r = run(&["--json", "verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.json()["verified"][0]["volumes"]
            .as_u64()
            .is_some_and(|v| v >= 3),
        "a multi-volume backup: {r:?}"
    );
    restores_the_source(sb, run);
}

/// A backup to a path destination and to `dest` (`table`, which the server
/// refuses): exit 3, the path destination complete, `dest` failed with one
/// error that names it and says each of `says`, and no `secrets` anywhere.
pub fn a_refused_destination_fails_alone(
    sb: &Sandbox,
    dest: &str,
    table: &str,
    says: &[&str],
    secrets: &[&str],
    env: &[(&str, &str)],
) {
    write(&sb.path("src/a.bin"), &noise(100_000, 5));
    let tables = format!("{table}\n[destination.nas]\nkind = \"path\"\npath = \"dest\"\n");
    sb.config_dir_job("", &["nas", dest], &tables);
    let mut c = sb.command(&["--json", "backup"]);
    c.envs(env.iter().copied());
    let out = c.output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let dests = j["destinations"].as_array().expect("destinations");
    let bad = dests.iter().find(|d| d["name"] == dest).expect("dest");
    let nas = dests.iter().find(|d| d["name"] == "nas").expect("nas");
    assert_eq!(nas["status"], "ok", "{stdout}");
    assert_eq!(bad["status"], "failed", "{stdout}");
    let err = bad["error"].as_str().expect("error");
    assert!(err.contains(&format!("destination \"{dest}\"")), "{err}");
    for s in says {
        assert!(err.contains(s), "{s:?} in {err}");
    }
    let status = fs::read_to_string(sb.path("staging/db/status.json")).unwrap_or_default();
    for secret in secrets {
        for (what, text) in [
            ("stdout", &*stdout),
            ("stderr", &*stderr),
            ("status", &*status),
        ] {
            assert!(!text.contains(secret), "the secret is in {what}: {text}");
        }
    }
}
