//! The Glacier vault destination end to end, against moto's Glacier vault
//! API (the second moto `tests/servers/moto.sh start` runs; `make test`
//! starts it): two backups listed from the catalog, one pruned, the catalog
//! lost and rebuilt from an inventory job, and a restore through retrieval
//! jobs that exits 4 until they finish, then is byte-identical.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

fn glacier_endpoint() -> String {
    crate::remote::server_env("moto.env", "moto.sh")["MOTO_GLACIER_ENDPOINT"].clone()
}

/// Creates vault `name` on moto (through boto3 in moto's own venv).
fn create_vault(name: &str) {
    let m = crate::remote::server_env("moto.env", "moto.sh");
    let script = format!(
        "import boto3; boto3.client('glacier', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test').create_vault(vaultName='{name}')",
        m["MOTO_GLACIER_ENDPOINT"]
    );
    let out = Command::new(&m["MOTO_PYTHON"])
        .args(["-c", &script])
        .output()
        .expect("run python");
    assert!(out.status.success(), "create vault: {out:?}");
}

fn run(sb: &Sandbox, args: &[&str]) -> Run {
    let mut c = sb.command(args);
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    Run::from(c.output().expect("run offsite"))
}

/// Runs `args` until it exits 0, each other run exiting 4 (pending);
/// returns how many runs were pending.
fn until_done(sb: &Sandbox, args: &[&str], limit: Duration) -> usize {
    let start = Instant::now();
    let mut pending = 0;
    loop {
        let r = run(sb, args);
        if r.code == 0 {
            return pending;
        }
        assert_eq!(r.code, 4, "{args:?}: {r:?}");
        pending += 1;
        assert!(
            start.elapsed() < limit,
            "{args:?} still pending after {limit:?}: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(700));
    }
}

fn list_ids(sb: &Sandbox) -> Vec<String> {
    backup_ids(&run(sb, &["--json", "list", "--destination", "vault"]))
}

#[test]
fn two_backups_prune_one_rebuild_the_catalog_and_restore_through_retrieval_jobs() {
    let sb = Sandbox::new("glacier_vault");
    let vault = format!(
        "offsite-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    create_vault(&vault);
    let table = format!(
        "[destination.vault]\nkind = \"glacier\"\nvault = \"{vault}\"\nendpoint = \"{}\"\nretrieval_tier = \"Expedited\"\n",
        glacier_endpoint()
    );
    write(&sb.path("src/chunk-000000.000000"), &noise(1_500_000, 41));
    write(&sb.path("src/writer.chk"), b"0000000000000001");

    // volume_size is capped at 4 GiB for a vault: refused before anything runs.
    sb.config_dir_job("volume_size = \"5GiB\"", &["vault"], &table);
    let r = run(&sb, &["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("volume_size") && r.stderr.contains("4GiB"),
        "{r:?}"
    );

    // Volumes under 1 MiB: a rebuilt catalog takes its tree hashes from the
    // inventory, where moto puts the plain SHA-256, equal to the tree hash
    // only up to one 1 MiB chunk.
    sb.config_dir_job("volume_size = \"512KiB\"", &["vault"], &table);
    let r = run(&sb, &["check"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&sb, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    // Different bytes for the second backup (moto names archives by their content).
    write(&sb.path("src/chunk-000000.000001"), &noise(700_000, 42));
    write(&sb.path("src/writer.chk"), b"0000000000000002");
    let r = run(&sb, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let ids = list_ids(&sb);
    assert_eq!(ids.len(), 2, "{ids:?}");

    // Prune from the catalog (keep_last = 1): the older backup goes, archives and all.
    sb.config_dir_job(
        "volume_size = \"512KiB\"",
        &["vault"],
        &format!("{table}retention = {{ keep_last = 1 }}\n"),
    );
    let r = run(&sb, &["--json", "prune"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(list_ids(&sb), ids[1..].to_vec());
    let catalog = sb.path(&format!("staging/.glacier/us-east-1/{vault}/catalog.json"));
    let text = std::fs::read_to_string(&catalog).expect("catalog");
    assert!(
        !text.contains(&ids[0]),
        "the pruned backup's archives left the catalog"
    );

    // The host is lost: the catalog with it. list says how to get it back.
    std::fs::remove_dir_all(sb.path("staging")).expect("lose the staging folder");
    let r = run(&sb, &["list", "--destination", "vault"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("offsite glacier inventory"),
        "{r:?}"
    );
    let args = ["glacier", "inventory", "--destination", "vault"];
    let first = run(&sb, &args);
    assert_eq!(first.code, 4, "{first:?}");
    assert!(
        first.stdout.contains("started an inventory job"),
        "{first:?}"
    );
    let pending = until_done(&sb, &args, Duration::from_secs(90));
    assert!(pending >= 1, "the manifests need retrieval jobs too");
    let r = run(
        &sb,
        &["--json", "glacier", "inventory", "--destination", "vault"],
    );
    // Done once: another run starts a new inventory.
    assert_eq!(r.code, 4, "{r:?}");
    crate::json_contract::valid("glacier-inventory", &r.json());
    assert_eq!(list_ids(&sb), ids[1..].to_vec());

    // Restore: retrieval jobs first (exit 4, nothing written), then the bytes.
    let to = sb.path("restored");
    let to_s = to.to_str().expect("utf8").to_string();
    let restore = ["restore", "--job", "db", "--to", to_s.as_str()];
    let r = run(&sb, &restore);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(!to.exists(), "a pending restore writes nothing");
    until_done(&sb, &restore, Duration::from_secs(90));
    assert_same_tree(&sb.path("src"), &to);
    let r = run(&sb, &["verify", "--destination", "vault"]);
    assert_eq!(r.code, 0, "{r:?}");
}
