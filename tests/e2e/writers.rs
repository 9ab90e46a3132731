//! Many writers: two hosts deployed from one template (same job name, same
//! destination, their own staging folders and sources) back up at the same
//! moment. With their own host ids both backups survive and verify; with the
//! same host id (a template that set one) their keys collide, and the
//! create-only writes make one of them fail loudly with the other intact:
//! never a silent loss. A prune from one host leaves the other's alone.

use std::fs;
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// One destination kind: its table (named `[destination.d]`) and the
/// environment its credentials come from.
pub(crate) struct Dest {
    pub(crate) table: String,
    pub(crate) env: Vec<(String, String)>,
}

pub(crate) fn path_dest(_sb: &Sandbox) -> Dest {
    Dest {
        table: "[destination.d]\nkind = \"path\"\npath = \"dest\"\n".into(),
        env: Vec::new(),
    }
}

pub(crate) fn s3_dest(sb: &Sandbox) -> Dest {
    let m = crate::s3::moto();
    Dest {
        table: crate::s3::s3_table(sb, "").replace("[destination.s3]", "[destination.d]"),
        env: vec![
            (
                "AWS_ACCESS_KEY_ID".into(),
                m["MOTO_ADMIN_ACCESS_KEY_ID"].clone(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                m["MOTO_ADMIN_SECRET_ACCESS_KEY"].clone(),
            ),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ],
    }
}

pub(crate) fn azure_dest(sb: &Sandbox) -> Dest {
    Dest {
        table: crate::azure::blob_table(sb, "").replace("[destination.blob]", "[destination.d]"),
        env: vec![("AZ_KEY".into(), crate::azure::key())],
    }
}

fn sftp_dest(sb: &Sandbox) -> Dest {
    let table = crate::sftp::sftp_table(sb, &crate::sftp::key_auth(), "SFTP_KNOWN_HOSTS");
    Dest {
        table: table.replace("[destination.sftp]", "[destination.d]"),
        env: Vec::new(),
    }
}

/// Host `name`'s configuration in the sandbox: its own source (`src-NAME`,
/// filled with bytes of its own) and staging folder, the shared job name
/// and destination, and `host_id` unless it is `None`.
pub(crate) fn host(
    sb: &Sandbox,
    name: &str,
    host_id: Option<&str>,
    dest: &Dest,
    extra: &str,
) -> String {
    let src = sb.path(&format!("src-{name}"));
    let seed = name.bytes().map(u64::from).sum::<u64>();
    write(&src.join("data.bin"), &noise(300 << 10, seed));
    write(&src.join(format!("only-on-{name}")), name.as_bytes());
    let config = sb.path(&format!("{name}.toml"));
    let id = host_id
        .map(|h| format!("host_id = \"{h}\"\n"))
        .unwrap_or_default();
    fs::write(
        &config,
        format!(
            "{id}[staging]\ndir = \"staging-{name}\"\nmin_free = \"1MiB\"\n\n[[job]]\nname = \"db\"\nsource = {{ kind = \"dir\", path = \"src-{name}\" }}\ndestinations = [\"d\"]\n{extra}\n\n{}",
            dest.table
        ),
    )
    .expect("write config");
    config.display().to_string()
}

pub(crate) fn offsite(config: &str, dest: &Dest, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--config").arg(config).args(args);
    c.env_remove("OFFSITE_CONFIG");
    for (k, v) in &dest.env {
        c.env(k, v);
    }
    c
}

pub(crate) fn run(config: &str, dest: &Dest, args: &[&str]) -> Run {
    Run::from(offsite(config, dest, args).output().expect("run offsite"))
}

/// Starts `--json backup` for each configuration at the start of the same
/// second (so their ids would share their time), and waits for both.
fn back_up_together(configs: &[&str], dest: &Dest) -> Vec<Run> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    std::thread::sleep(std::time::Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 20_000_000,
    ));
    let children: Vec<Child> = configs
        .iter()
        .map(|c| {
            offsite(c, dest, &["--json", "backup"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start backup")
        })
        .collect();
    children
        .into_iter()
        .map(|c| Run::from(c.wait_with_output().expect("wait")))
        .collect()
}

/// Restores `backup` with `config` and checks it holds `src-NAME`.
fn restores_host(sb: &Sandbox, config: &str, dest: &Dest, backup: &str, name: &str) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let to = sb.path(&format!("restored-{name}-{n}"));
    let r = run(
        config,
        dest,
        &restore_args(backup, to.to_str().expect("utf8")),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path(&format!("src-{name}")), &to);
}

/// Two hosts with their own host ids: both backups survive, verify and
/// restore to their own host's files; `latest` picks this host's own; a
/// prune from one host leaves the other's backups alone and says so.
fn two_hosts_both_survive(test: &str, make: fn(&Sandbox) -> Dest) {
    let sb = Sandbox::new(test);
    let dest = make(&sb);
    let retention = "retention = { keep_last = 1 }";
    let a = host(&sb, "a", Some("host-a"), &dest, retention);
    let b = host(&sb, "b", Some("host-b"), &dest, retention);
    let runs = back_up_together(&[&a, &b], &dest);
    let mut ids = Vec::new();
    for (r, h) in runs.iter().zip(["host-a", "host-b"]) {
        assert_eq!(r.code, 0, "{r:?}");
        let j = r.json();
        assert_eq!(j["host"], h, "the report names its host");
        ids.push(j["backup"].as_str().expect("id").to_string());
    }
    assert_ne!(ids[0], ids[1], "hosts never share an id");
    assert!(
        ids[0].ends_with("-host-a") && ids[1].ends_with("-host-b"),
        "{ids:?}"
    );
    let l = run(&a, &dest, &["--json", "list"]);
    assert_eq!(l.code, 0, "{l:?}");
    let listed = l.json()["listings"][0]["backups"].clone();
    let hosts: Vec<&str> = listed
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| b["host"].as_str().expect("host"))
        .collect();
    assert_eq!(hosts.len(), 2, "{l:?}");
    assert!(
        hosts.contains(&"host-a") && hosts.contains(&"host-b"),
        "{hosts:?}"
    );
    let v = run(&a, &dest, &["verify"]);
    assert_eq!(v.code, 0, "{v:?}");
    restores_host(&sb, &a, &dest, &ids[0], "a");
    restores_host(&sb, &b, &dest, &ids[1], "b");
    // `latest` is this host's own newest, not the other host's.
    restores_host(&sb, &b, &dest, "latest", "b");
    restores_host(&sb, &a, &dest, "latest", "a");

    // Host a backs up again: keep_last = 1 prunes a's first backup only.
    let r = run(&a, &dest, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let prune = &r.json()["prune"][0];
    assert_eq!(prune["deleted"], serde_json::json!([ids[0]]), "{r:?}");
    assert_eq!(prune["others"][0]["id"], ids[1].as_str(), "{r:?}");
    assert_eq!(prune["others"][0]["host"], "host-b", "{r:?}");
    restores_host(&sb, &b, &dest, &ids[1], "b");
}

/// Two hosts with the same host id, at the same second: their ids and keys
/// are the same, and every write is create-only. Each run that says ok has
/// its own backup complete there (restoring its own files); any other run
/// failed loudly, naming the key that exists; never both ok with one backup.
fn same_host_id_never_loses_silently(test: &str, make: fn(&Sandbox) -> Dest) {
    let sb = Sandbox::new(test);
    let dest = make(&sb);
    let a = host(&sb, "a", Some("twin"), &dest, "");
    let b = host(&sb, "b", Some("twin"), &dest, "");
    let runs = back_up_together(&[&a, &b], &dest);
    let mut good = Vec::new();
    for (r, (name, config)) in runs.iter().zip([("a", &a), ("b", &b)]) {
        let j = r.json();
        let id = j["backup"].as_str().unwrap_or("").to_string();
        if r.code == 0 {
            good.push((name, config, id));
        } else {
            let text = format!("{r:?}");
            assert!(
                text.contains("already exists") && text.contains("nothing was overwritten"),
                "a loser fails loudly: {r:?}"
            );
        }
    }
    assert!(!good.is_empty(), "one of them succeeds: {runs:?}");
    eprintln!(
        "twins: {} of 2 ok: {:?}",
        good.len(),
        good.iter().map(|g| &g.2).collect::<Vec<_>>()
    );
    if good.len() == 2 {
        assert_ne!(
            good[0].2, good[1].2,
            "both ok only with different ids: {runs:?}"
        );
    }
    for (name, config, id) in &good {
        restores_host(&sb, config, &dest, id, name);
    }
    let v = run(&a, &dest, &["verify"]);
    assert_eq!(v.code, 0, "every complete backup verifies: {v:?}");
}

#[test]
fn two_hosts_one_job_on_a_folder_both_survive() {
    two_hosts_both_survive("two_hosts_one_job_on_a_folder_both_survive", path_dest);
}

#[test]
fn two_hosts_one_job_on_s3_both_survive() {
    two_hosts_both_survive("two_hosts_one_job_on_s3_both_survive", s3_dest);
}

#[test]
fn two_hosts_one_job_on_azure_both_survive() {
    two_hosts_both_survive("two_hosts_one_job_on_azure_both_survive", azure_dest);
}

#[test]
fn two_hosts_one_job_on_sftp_both_survive() {
    two_hosts_both_survive("two_hosts_one_job_on_sftp_both_survive", sftp_dest);
}

#[test]
fn twins_on_a_folder_never_lose_a_backup_silently() {
    same_host_id_never_loses_silently("twins_on_a_folder_never_lose_a_backup_silently", path_dest);
}

#[test]
fn twins_on_azure_never_lose_a_backup_silently() {
    same_host_id_never_loses_silently("twins_on_azure_never_lose_a_backup_silently", azure_dest);
}

#[test]
fn twins_on_sftp_never_lose_a_backup_silently() {
    same_host_id_never_loses_silently("twins_on_sftp_never_lose_a_backup_silently", sftp_dest);
}
