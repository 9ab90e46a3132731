//! The README's database recipes (`fixtures/recipes/*.toml`), run through
//! the real binary as the README shows them, with only their paths moved
//! into the sandbox. SQLite runs the real `sqlite3`. EventStoreDB, Memgraph,
//! RavenDB, SnappyData and Oracle NoSQL cannot be installed here: their
//! recipes' shell logic runs against fakes in `fixtures/fakes/` (first on
//! PATH) that behave as the databases' tools are documented to, including
//! the ways they fail. PostgreSQL's recipes are tested in `postgres.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The recipe `file` as the sandbox's configuration: staging, the `nas`
/// destination and the recipe scripts' folder moved into the sandbox and
/// the repository, then each of `replace`. Every string replaced must be in
/// the recipe, so a recipe edited out of step with its test fails here.
fn recipe(sb: &Sandbox, file: &str, replace: &[(&str, String)]) {
    let path = repo().join("fixtures/recipes").join(file);
    let mut text = fs::read_to_string(&path).expect("read the recipe");
    let mut all = vec![
        (
            "/var/lib/offsite/staging",
            sb.path("staging").display().to_string(),
        ),
        ("/mnt/backups", sb.path("dest").display().to_string()),
    ];
    if text.contains("/etc/offsite/recipes/") {
        let scripts = repo().join("fixtures/recipes");
        all.push(("/etc/offsite/recipes/", format!("{}/", scripts.display())));
    }
    all.extend(replace.iter().cloned());
    for (from, to) in all {
        assert!(text.contains(from), "{}: no {from:?} in it", path.display());
        text = text.replace(from, &to);
    }
    sb.write_config(&text);
}

/// PATH with the fakes first.
fn fake_path() -> String {
    format!(
        "{}:{}",
        repo().join("fixtures/fakes").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// offsite with the fakes first on PATH and `env` set.
fn run(sb: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut c = sb.command(args);
    c.env("PATH", fake_path());
    for (k, v) in env {
        c.env(k, v);
    }
    Run::from(c.output().expect("run offsite"))
}

/// The ids of job `job`'s complete backups on the sandbox destination.
fn ids(sb: &Sandbox, job: &str) -> Vec<String> {
    backup_ids(&sb.offsite(&["--json", "list", "--job", job]))
}

/// Restores job `job`'s newest backup into `to` in the sandbox.
fn restore(sb: &Sandbox, job: &str, to: &str) -> PathBuf {
    let dir = sb.path(to);
    let r = sb.offsite(&["restore", "--job", job, "--to", dir.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    dir
}

/// The error a failed `--json backup` reports.
fn error(r: &Run) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

/// The paths of the files (not folders) in backup `id` of `job`, in the
/// order they were read.
fn files_in_order(sb: &Sandbox, job: &str, id: &str) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(
        &fs::read(sb.path("dest").join(job).join(id).join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    m["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["kind"] == "file")
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect()
}

fn script(program: &Path, args: &[&str]) -> Run {
    Run::from(
        Command::new(program)
            .args(args)
            .output()
            .expect("run a script"),
    )
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SQLite with the real sqlite3: the backup API's copy, taken while a
/// writer holds a transaction open, restores into a database that passes
/// its integrity check and dumps the same as the committed source. A wrong
/// path fails with -readonly and ships nothing; without it (the plain
/// recipe) sqlite3 creates an empty database and the backup ships it.
#[test]
fn sqlite_recipe_backs_up_a_consistent_copy_and_a_wrong_path_fails() {
    let sb = Sandbox::new("sqlite_recipe_backs_up_a_consistent_copy_and_a_wrong_path_fails");
    let db = sb.path("app/app.db");
    fs::create_dir_all(db.parent().expect("parent")).expect("mkdir");
    sqlite(
        &db,
        "pragma journal_mode=wal; create table orders(id integer primary key, who text, body blob); \
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 2000) \
         insert into orders select i, 'kunde ' || i || ' ✓', randomblob(64) from n;",
    );
    let committed = sqlite(&db, ".dump");
    // A writer in the middle of a transaction: its row must not be in the backup.
    let mut writer = Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("writer");
    {
        use std::io::Write;
        let stdin = writer.stdin.as_mut().expect("stdin");
        // The busy timeout: the probe below takes the write lock for a moment,
        // and an insert that met it without waiting would fail and leave an
        // empty transaction that holds nothing.
        writeln!(
            stdin,
            ".timeout 30000\nbegin; insert into orders values (9999, 'uncommitted', x'00');"
        )
        .expect("write");
        stdin.flush().expect("flush");
    }
    wait_for(
        "the writer to hold its transaction open",
        std::time::Duration::from_secs(30),
        || {
            !Command::new("sqlite3")
                .arg(&db)
                .arg("begin immediate; rollback;")
                .output()
                .expect("sqlite3")
                .status
                .success()
        },
    );

    recipe(
        &sb,
        "sqlite.toml",
        &[("/srv/app/app.db", db.display().to_string())],
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    drop(writer.stdin.take());
    let _ = writer.wait();

    let to = restore(&sb, "app-db", "restored");
    let copy = to.join("app.db");
    assert_eq!(sqlite(&copy, "pragma integrity_check").trim(), "ok");
    assert_eq!(
        sqlite(&copy, ".dump"),
        committed,
        "the committed rows, no more"
    );

    // A wrong path: -readonly makes it an error, nothing ships, nothing is created.
    let missing = sb.path("app/typo.db");
    recipe(
        &sb,
        "sqlite.toml",
        &[("/srv/app/app.db", missing.display().to_string())],
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(error(&r).contains("unable to open database"), "{r:?}");
    assert!(!missing.exists(), "sqlite3 -readonly creates nothing");
    assert_eq!(ids(&sb, "app-db").len(), 1, "nothing more shipped");

    // Without -readonly (the plain form), the same typo ships an empty database
    // on a job's first backup: what the recipe's -readonly is for.
    let plain = Sandbox::new("sqlite_recipe_plain_form_with_a_wrong_path");
    recipe(
        &plain,
        "sqlite.toml",
        &[
            ("sqlite3 -readonly", "sqlite3".to_string()),
            (
                "/srv/app/app.db",
                plain.path("typo.db").display().to_string(),
            ),
        ],
    );
    let r = plain.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let to = restore(&plain, "app-db", "restored");
    assert_eq!(
        sqlite(&to.join("app.db"), "select count(*) from sqlite_master").trim(),
        "0",
        "an empty database was shipped"
    );
}

/// An EventStoreDB-like data folder (checkpoints holding positions, an index
/// with its own checkpoint, chunks): read in EventStoreDB's documented
/// order, a full and an incremental, the incremental restored identical;
/// then eventstore-restore.sh makes truncate.chk a copy of chaser.chk and
/// changes nothing else, and refuses a folder without chaser.chk.
#[test]
fn eventstore_recipe_reads_in_order_and_restore_copies_chaser_to_truncate() {
    let sb = Sandbox::new("eventstore_recipe_reads_in_order_and_restore_copies_chaser_to_truncate");
    let db = sb.path("src");
    let pos = |p: i64| p.to_le_bytes().to_vec();
    write(&db.join("chaser.chk"), &pos(300_000));
    write(&db.join("writer.chk"), &pos(300_000));
    write(&db.join("epoch.chk"), &pos(120));
    write(&db.join("proposal.chk"), &pos(-1));
    write(&db.join("truncate.chk"), &pos(-1));
    write(&db.join("chunk-000000.000000"), &noise(256 << 10, 1));
    write(&db.join("chunk-000001.000000"), &noise(64 << 10, 2));
    write(&db.join("index/indexmap"), b"indexmap v2\n");
    write(
        &db.join("index/5a1a8395-94ee-40c1-bf93-aa757b5887f8"),
        &noise(32 << 10, 3),
    );
    write(
        &db.join("index/stream-existence/streamExistenceFilter.chk"),
        &pos(299_000),
    );
    write(
        &db.join("index/stream-existence/streamExistenceFilter.dat"),
        &noise(8 << 10, 4),
    );
    recipe(
        &sb,
        "eventstore.toml",
        &[("/var/lib/eventstore/db", db.display().to_string())],
    );

    let r = sb.offsite(&["--json", "backup", "--full"]);
    assert_eq!(r.code, 0, "{r:?}");
    let full = r.json()["backup"].as_str().expect("id").to_string();
    assert_eq!(
        files_in_order(&sb, "eventstore", &full),
        vec![
            "index/stream-existence/streamExistenceFilter.chk",
            "index/5a1a8395-94ee-40c1-bf93-aa757b5887f8",
            "index/indexmap",
            "index/stream-existence/streamExistenceFilter.dat",
            "chaser.chk",
            "epoch.chk",
            "proposal.chk",
            "truncate.chk",
            "writer.chk",
            "chunk-000000.000000",
            "chunk-000001.000000",
        ],
        "index checkpoints, index, database checkpoints, chunks"
    );

    // More events: the last chunk grows, a new one starts, the checkpoints move.
    let mut grown = fs::read(db.join("chunk-000001.000000")).expect("chunk");
    grown.extend_from_slice(&noise(64 << 10, 5));
    write(&db.join("chunk-000001.000000"), &grown);
    write(&db.join("chunk-000002.000000"), &noise(16 << 10, 6));
    write(&db.join("writer.chk"), &pos(620_000));
    write(&db.join("chaser.chk"), &pos(610_000));
    let r = sb.offsite(&["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["kind"], "incr", "{r:?}");

    let to = restore(&sb, "eventstore", "restored");
    assert_same_tree(&db, &to);
    let restore_sh = repo().join("fixtures/recipes/eventstore-restore.sh");
    let r = script(&restore_sh, &[to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        fs::read(to.join("truncate.chk")).expect("truncate"),
        fs::read(to.join("chaser.chk")).expect("chaser"),
        "truncate.chk is a copy of chaser.chk"
    );
    assert_eq!(
        fs::read(to.join("truncate.chk")).expect("read"),
        pos(610_000)
    );
    write(&db.join("truncate.chk"), &pos(610_000));
    assert_same_tree(&db, &to);

    let r = script(&restore_sh, &[sb.path("dest").to_str().expect("utf8")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("chaser.chk not found"), "{r:?}");
}

/// Memgraph: the pre hook locks the data directory and the post hook
/// unlocks it. The fake mgconsole logs each statement and writes the lock's
/// state into the data folder, so the backup itself shows it was read while
/// locked. The unlock also runs when the copy fails (staging full), and a
/// Memgraph that is down fails the backup at the pre hook.
#[test]
fn memgraph_recipe_copies_while_locked_and_unlocks_whatever_happens() {
    let sb = Sandbox::new("memgraph_recipe_copies_while_locked_and_unlocks_whatever_happens");
    let data = sb.path("src");
    write(
        &data.join("snapshots/20261201080000000000_timestamp_4021"),
        &noise(200 << 10, 1),
    );
    write(
        &data.join("wal/20261201080000000000_current"),
        &noise(40 << 10, 2),
    );
    write(&data.join("auth/000001.log"), b"users\n");
    write(&data.join(".fake-lock-status"), b"unlocked\n");
    let log = sb.path("mgconsole.log");
    let env = [
        ("FAKE_MGCONSOLE_LOG", log.to_str().expect("utf8")),
        ("FAKE_MEMGRAPH_DIR", data.to_str().expect("utf8")),
    ];
    recipe(
        &sb,
        "memgraph.toml",
        &[("/var/lib/memgraph", data.display().to_string())],
    );
    let statements = || -> Vec<String> {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };

    let r = run(&sb, &env, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        statements(),
        vec!["LOCK DATA DIRECTORY;", "UNLOCK DATA DIRECTORY;"]
    );
    let to = restore(&sb, "memgraph", "restored");
    assert_eq!(
        fs::read_to_string(to.join(".fake-lock-status")).expect("status"),
        "locked\n",
        "the folder was read while locked"
    );
    assert_eq!(
        fs::read_to_string(data.join(".fake-lock-status")).expect("status"),
        "unlocked\n",
        "and unlocked after"
    );
    write(&to.join(".fake-lock-status"), b"unlocked\n");
    assert_same_tree(&data, &to);

    // The copy fails (no room in staging): unlocked all the same, nothing shipped.
    let text = fs::read_to_string(sb.config_path()).expect("config");
    let full_disk = text.replacen("[staging]\n", "[staging]\nmin_free = \"1000TiB\"\n", 1);
    sb.write_config(&full_disk);
    let r = run(&sb, &env, &["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(error(&r).contains("min_free"), "{r:?}");
    assert_eq!(
        statements()[2..],
        ["LOCK DATA DIRECTORY;", "UNLOCK DATA DIRECTORY;"],
        "unlocked after the failed copy"
    );
    assert_eq!(ids(&sb, "memgraph").len(), 1);

    // Memgraph down: the lock fails, nothing is read, the unlock is tried and fails too.
    sb.write_config(&text);
    let mut down = env.to_vec();
    down.push(("FAKE_MEMGRAPH_DOWN", "1"));
    let r = run(&sb, &down, &["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    let err = error(&r);
    assert!(
        err.contains("pre hook 1")
            && err.contains("post hook 1")
            && err.contains("Couldn't connect"),
        "{err}"
    );
    assert_eq!(statements().len(), 4, "mgconsole reached no server");
    assert_eq!(ids(&sb, "memgraph").len(), 1);
}

/// RavenDB: the folder its periodic backup task writes, shipped as it is.
/// On a node that does not own the task the folder is empty and the
/// backup fails, saying so. On the owner: a full, an incremental with the
/// task's new incremental file, and, after RavenDB's own retention deleted
/// last week's backup folder (a drop of more than half, which the recipe's
/// shrink_limit allows), an incremental that restores identical to the folder.
#[test]
fn ravendb_recipe_ships_the_backup_folder_as_it_is() {
    let sb = Sandbox::new("ravendb_recipe_ships_the_backup_folder_as_it_is");
    let folder = sb.path("src");
    recipe(
        &sb,
        "ravendb.toml",
        &[("/var/lib/ravendb/backups", folder.display().to_string())],
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(error(&r).contains("holds no file"), "{r:?}");

    let week1 = folder.join("2026-11-22-03-00-00.ravendb-Orders-A-backup");
    write(
        &week1.join("2026-11-22-03-00-00.ravendb-full-backup"),
        &noise(300 << 10, 1),
    );
    write(
        &week1.join("2026-11-23-03-00-00.ravendb-incremental-backup"),
        &noise(20 << 10, 2),
    );
    let r = sb.offsite(&["--json", "backup", "--full"]);
    assert_eq!(r.code, 0, "{r:?}");

    write(
        &week1.join("2026-11-24-03-00-00.ravendb-incremental-backup"),
        &noise(20 << 10, 3),
    );
    let r = sb.offsite(&["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["kind"], "incr", "{r:?}");
    assert_eq!(r.json()["staged"]["files"], 1, "only the new file: {r:?}");

    // Next week's full: a new folder.
    let week2 = folder.join("2026-11-29-03-00-00.ravendb-Orders-A-backup");
    write(
        &week2.join("2026-11-29-03-00-00.ravendb-full-backup"),
        &noise(200 << 10, 4),
    );
    let r = sb.offsite(&["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 0, "{r:?}");
    // RavenDB's retention deletes last week's folder: 240 KiB left of 560.
    fs::remove_dir_all(&week1).expect("RavenDB's retention");
    write(
        &week2.join("2026-11-30-03-00-00.ravendb-incremental-backup"),
        &noise(40 << 10, 5),
    );
    let r = sb.offsite(&["--json", "backup", "--incremental"]);
    assert_eq!(
        r.code, 0,
        "a drop of 57% is within shrink_limit = 0.75: {r:?}"
    );
    let to = restore(&sb, "ravendb", "restored");
    assert_same_tree(&folder, &to);
    assert_eq!(ids(&sb, "ravendb").len(), 4);
}

/// SnappyData: snappy-backup.sh runs `snappy backup` into the staging
/// folder as the members' user (run_as; here nobody). A full becomes the
/// baseline kept on disk; an incremental holds only the changed disk-store
/// file and its restore.sh takes the others from the baseline. After a
/// disaster (member files and baseline gone), the full restored into the
/// baseline folder and the incremental's restore.sh give back the member's
/// files as they were. A member offline (snappy exits 0 but says the
/// backup may be incomplete) and a failing snappy ship nothing.
#[test]
fn snappydata_recipe_restores_full_and_incremental_with_restore_sh() {
    let sb = Sandbox::new("snappydata_recipe_restores_full_and_incremental_with_restore_sh");
    let work = sb.path("member");
    write(
        &work.join("datadictionary/BACKUPGFXD-DD-DISKSTORE.if"),
        b"if",
    );
    write(
        &work.join("datadictionary/BACKUPGFXD-DD-DISKSTORE_1.crf"),
        &noise(64 << 10, 1),
    );
    write(&work.join("BACKUPDS_1.crf"), &noise(128 << 10, 2));
    let baseline = sb.path("baseline");
    fs::create_dir_all(&baseline).expect("mkdir");
    let nobody = 65534;
    std::os::unix::fs::chown(&baseline, Some(nobody), Some(nobody)).expect("chown");
    recipe(
        &sb,
        "snappydata.toml",
        &[
            (
                "/var/lib/offsite/snappy-baseline",
                baseline.display().to_string(),
            ),
            ("run_as = \"snappydata\"", "run_as = \"nobody\"".to_string()),
        ],
    );
    let env = [("FAKE_SNAPPY_WORKDIR", work.to_str().expect("utf8"))];

    let r = run(&sb, &env, &["--json", "backup", "--job", "snappydata-full"]);
    assert_eq!(r.code, 0, "{r:?}");
    let kept: Vec<_> = fs::read_dir(&baseline)
        .expect("baseline")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(kept.len(), 1, "one baseline kept: {kept:?}");

    write(&work.join("BACKUPDS_2.crf"), &noise(32 << 10, 3));
    let at_incremental = snapshot(&work);
    let r = run(&sb, &env, &["--json", "backup", "--job", "snappydata-incr"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.json()["stderr"]
            .to_string()
            .contains("incremental on the baseline"),
        "{r:?}"
    );

    let full = restore(&sb, "snappydata-full", "restored-full");
    let incr = restore(&sb, "snappydata-incr", "restored-incr");
    let files = |root: &Path| -> Vec<String> {
        snapshot(root)
            .into_iter()
            .filter(|(_, (kind, _, _))| kind == "file")
            .map(|(k, _)| k)
            .collect()
    };
    let in_incr = files(&incr);
    assert!(
        in_incr.iter().any(|f| f.ends_with("/restore.sh")),
        "{in_incr:?}"
    );
    assert!(
        files(&full).iter().any(|f| f.ends_with("/restore.sh")),
        "the full has its restore.sh"
    );
    let data: Vec<&String> = in_incr
        .iter()
        .filter(|f| f.contains("/diskstores/"))
        .collect();
    assert!(
        data.len() == 1 && data[0].ends_with("/diskstores/BACKUPDS_2.crf"),
        "the incremental holds only the changed file: {data:?}"
    );

    // Disaster: the member's files and the local baseline are gone.
    fs::remove_dir_all(&work).expect("rm member");
    fs::remove_dir_all(&baseline).expect("rm baseline");
    restore(&sb, "snappydata-full", "baseline");
    let script = files(&incr)
        .into_iter()
        .find(|f| f.ends_with("/restore.sh"))
        .expect("restore.sh");
    let r = Run::from(
        Command::new("bash")
            .arg(incr.join(script))
            .output()
            .expect("restore.sh"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        snapshot(&work),
        at_incremental,
        "the member's files are back"
    );

    // A member offline: snappy exits 0 and says so; nothing ships, the baseline stays.
    let before = fs::read_dir(&baseline).expect("baseline").count();
    let mut offline = env.to_vec();
    offline.push(("FAKE_SNAPPY_MODE", "offline"));
    let r = run(
        &sb,
        &offline,
        &["--json", "backup", "--job", "snappydata-full"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(error(&r).contains("may be incomplete"), "{r:?}");
    let mut failing = env.to_vec();
    failing.push(("FAKE_SNAPPY_MODE", "fail"));
    let r = run(
        &sb,
        &failing,
        &["--json", "backup", "--job", "snappydata-incr"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        error(&r).contains("snappy backup exited with status 1"),
        "{r:?}"
    );
    assert_eq!(ids(&sb, "snappydata-full").len(), 1);
    assert_eq!(ids(&sb, "snappydata-incr").len(), 1);
    assert_eq!(fs::read_dir(&baseline).expect("baseline").count(), before);
}

/// Oracle NoSQL: nosql-snapshot.sh takes a snapshot through the admin CLI
/// (the fake kv_admin: a store root with three nodes on this host, two on
/// others), ships this host's snapshot folders under their KVROOT paths
/// with the data files' bytes, and removes the snapshot. When the JSON
/// lists failureSnapshots (a whole replication group) the backup fails,
/// naming the nodes, although the CLI exited 0 with returnCode 5000:
/// nothing ships and the partial snapshot is removed. An admin that cannot
/// be reached fails it too.
#[test]
fn oracle_nosql_recipe_ships_snapshots_and_refuses_a_partial_one() {
    let sb = Sandbox::new("oracle_nosql_recipe_ships_snapshots_and_refuses_a_partial_one");
    let kvroot = sb.path("kvroot");
    for (i, node) in ["admin1", "rg1-rn1", "rg2-rn1"].iter().enumerate() {
        let env = kvroot.join("kvstore/sn1").join(node).join("env");
        write(&env.join("00000000.jdb"), &noise(64 << 10, i as u64 * 2));
        write(
            &env.join("00000001.jdb"),
            &noise(16 << 10, i as u64 * 2 + 1),
        );
    }
    let log = sb.path("kv_admin.log");
    let env = [
        ("FAKE_KVROOT", kvroot.to_str().expect("utf8")),
        ("FAKE_KV_LOG", log.to_str().expect("utf8")),
        ("FAKE_KV_REMOTE", "rg1-rn2,rg2-rn2"),
    ];
    recipe(
        &sb,
        "oracle-nosql.toml",
        &[
            (
                "'java -Xmx64m -Xms64m -jar /opt/kv/lib/kvstore.jar runadmin -host localhost -port 5000 -security /var/lib/kvroot/security/client.security'",
                "'kv_admin runadmin -host localhost -port 5000'".to_string(),
            ),
            ("/var/lib/kvroot", kvroot.display().to_string()),
        ],
    );
    let snapshot_folders = || -> Vec<PathBuf> {
        walkdir::WalkDir::new(&kvroot)
            .into_iter()
            .map(|e| e.expect("walk").into_path())
            .filter(|p| {
                p.parent()
                    .and_then(Path::file_name)
                    .is_some_and(|n| n == "snapshots")
            })
            .collect()
    };

    let r = run(&sb, &env, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.json()["stderr"]
            .to_string()
            .contains("on other hosts: rg1-rn2 rg2-rn2"),
        "{r:?}"
    );
    assert!(snapshot_folders().is_empty(), "the snapshot was removed");
    let to = restore(&sb, "kvstore", "restored");
    let names: Vec<String> = fs::read_dir(to.join("kvstore/sn1/rg1-rn1/snapshots"))
        .expect("rg1-rn1's snapshot")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let snap = &names[0];
    assert!(snap.ends_with("-offsite"), "{snap}");
    for node in ["admin1", "rg1-rn1", "rg2-rn1"] {
        assert_same_tree(
            &kvroot.join("kvstore/sn1").join(node).join("env"),
            &to.join("kvstore/sn1")
                .join(node)
                .join("snapshots")
                .join(snap),
        );
    }
    assert!(to.join("snapshots").join(snap).join("config.xml").is_file());
    let calls = fs::read_to_string(&log).expect("log");
    assert!(
        calls.contains("snapshot create -name offsite -json")
            && calls.contains(&format!("snapshot remove -name {snap} -json")),
        "{calls}"
    );

    // A whole replication group fails; the CLI still exits 0 with returnCode 5000.
    let mut partial = env.to_vec();
    partial.push(("FAKE_KV_MODE", "partial"));
    let r = run(&sb, &partial, &["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    let err = error(&r);
    assert!(
        err.contains("no snapshot on rg2-rn1, rg2-rn2") && err.contains("returnCode 5000"),
        "{err}"
    );
    assert!(
        snapshot_folders().is_empty(),
        "the partial snapshot was removed"
    );
    assert_eq!(ids(&sb, "kvstore").len(), 1, "nothing more shipped");

    let mut down = env.to_vec();
    down.push(("FAKE_KV_MODE", "down"));
    let r = run(&sb, &down, &["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(error(&r).contains("returnCode 5500"), "{r:?}");
    assert_eq!(ids(&sb, "kvstore").len(), 1);
}

/// The databases page shows each recipe exactly as the tests run it.
#[test]
fn every_recipe_in_the_readme_is_the_tested_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme =
        std::fs::read_to_string(format!("{root}/docs/databases.md")).expect("docs/databases.md");
    for e in std::fs::read_dir(format!("{root}/fixtures/recipes")).expect("recipes") {
        let path = e.expect("entry").path();
        if path.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("recipe");
        assert!(
            readme.contains(text.trim_end()),
            "{} is not in docs/databases.md as it is",
            path.display()
        );
    }
}
