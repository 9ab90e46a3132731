//! PostgreSQL as a real database (tests/servers/postgres.sh; `make test`
//! starts it): a pgbench database plus a table of unicode text and bytea,
//! backed up the ways the README's recipes say, restored, and compared
//! table by table (pg_fixture.sh checksums). A restored data directory must
//! start with no chown or chmod by hand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::remote::server_env;
use crate::support::*;

fn pg() -> HashMap<String, String> {
    server_env("postgres.env", "postgres.sh")
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// pg_fixture.sh with `args`, against the server on `port`.
fn fixture(port: &str, args: &[&str]) -> String {
    let e = pg();
    let out = Command::new(&e["PG_FIXTURE"])
        .args(args)
        .env("PGPORT", port)
        .output()
        .expect("pg_fixture.sh");
    assert!(
        out.status.success(),
        "pg_fixture.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Drops `db` if it exists (an earlier run's).
fn drop_db(port: &str, db: &str) {
    psql(
        port,
        "postgres",
        &format!("drop database if exists {db} with (force)"),
    );
}

/// SQL through psql as the superuser on `port`.
fn psql(port: &str, db: &str, sql: &str) {
    let e = pg();
    let out = Command::new(format!("{}/psql", e["PG_BIN"]))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", port, "-d", db, "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command run as the database's own user (as an operator would with su).
fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
        program,
    ]);
    c
}

/// A PostgreSQL server of the test's own on data folder `data`, run as the
/// postgres user with nothing changed on the folder: it starts only if the
/// folder's owner and mode are what PostgreSQL demands. Stopped on drop.
struct Cluster {
    port: String,
    child: Child,
    socket: PathBuf,
}

impl Cluster {
    fn start(data: &Path) -> Cluster {
        let e = pg();
        let port = free_port().to_string();
        // A socket path has at most 107 bytes: a short folder of its own.
        let socket = PathBuf::from(format!("/tmp/offsite-pg-{port}"));
        std::fs::create_dir_all(&socket).expect("socket folder");
        std::os::unix::fs::chown(&socket, Some(postgres_uid()), None).expect("chown socket");
        let log = std::fs::File::create(data.with_extension("log")).expect("log");
        let child = as_postgres(&format!("{}/postgres", e["PG_BIN"]))
            .arg("-D")
            .arg(data)
            .args(["-p", &port, "-k"])
            .arg(&socket)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut c = Cluster {
            port,
            child,
            socket,
        };
        let started = std::time::Instant::now();
        loop {
            let ready = Command::new(format!("{}/pg_isready", e["PG_BIN"]))
                .args(["-q", "-h", "127.0.0.1", "-p", &c.port])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
                panic!("postgres on {} exited ({status}):\n{log}", data.display());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "postgres on {} is not ready after 60 s",
                data.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = &c.socket;
        c
    }

    fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        // SAFETY: kill(2) on the postmaster this test started (SIGINT: fast shutdown).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop_now();
        }
    }
}

fn postgres_uid() -> u32 {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid")
}

/// A fresh database `db` on the shared server: pgbench at scale 2 plus the
/// unicode and bytea table. Returns its checksums.
fn populated(db: &str) -> String {
    let port = pg()["PGPORT"].clone();
    drop_db(&port, db);
    fixture(&port, &["populate", db, "2"]);
    fixture(&port, &["checksums", db])
}

/// The environment offsite needs to reach the shared server (as from cron
/// with PGHOST/PGPORT set, or a .pgpass).
fn with_pg(sb: &Sandbox, args: &[&str]) -> Run {
    let e = pg();
    Run::from(
        sb.command(args)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", &e["PGPORT"])
            .env("PGUSER", "postgres")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    e["PG_BIN"],
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .expect("run offsite"),
    )
}

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";

/// Backs the job up and restores its latest backup into `restored/`.
fn backed_up_and_restored(sb: &Sandbox) -> PathBuf {
    let r = with_pg(sb, &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let to = sb.path("restored");
    let r = with_pg(
        sb,
        &["restore", "--job", "db", "--to", to.to_str().expect("utf8")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    to
}

fn command_job(sb: &Sandbox, source: &str) {
    sb.write_config(&format!(
        "[staging]\ndir = \"staging\"\nmin_free = \"1MiB\"\n\n[[job]]\nname = \"db\"\nsource = {source}\ndestinations = [\"nas\"]\n\n{NAS}"
    ));
}

/// The recipe's pg_dump: a custom-format dump streamed into staging,
/// restored with pg_restore into a new database, identical table by table;
/// the same dump piped through a compressor and failing (no such database)
/// fails the backup and ships nothing.
#[test]
fn a_pg_dump_backup_restores_into_a_new_database_row_for_row() {
    let sb = Sandbox::new("a_pg_dump_backup_restores_into_a_new_database_row_for_row");
    let sums = populated("pgdump_src");
    command_job(
        &sb,
        "{ kind = \"command\", run = \"pg_dump -Fc pgdump_src\", output = \"pgdump_src.dump\" }",
    );
    let to = backed_up_and_restored(&sb);
    let port = pg()["PGPORT"].clone();
    drop_db(&port, "pgdump_dst");
    psql(&port, "postgres", "create database pgdump_dst");
    let e = pg();
    let out = Command::new(format!("{}/pg_restore", e["PG_BIN"]))
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &port,
            "-d",
            "pgdump_dst",
        ])
        .arg(to.join("pgdump_src.dump"))
        .output()
        .expect("pg_restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fixture(&port, &["checksums", "pgdump_dst"]), sums);

    std::thread::sleep(Duration::from_millis(1100));
    command_job(
        &sb,
        "{ kind = \"command\", run = \"pg_dump -Fc nosuchdb | zstd -q\", output = \"x.dump.zst\" }",
    );
    let r = with_pg(&sb, &["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.json()["error"].to_string().contains("nosuchdb"), "{r:?}");
    assert_eq!(
        complete_backups(&sb, "nas").len(),
        1,
        "nothing more shipped"
    );
}

/// The recipe's pg_basebackup, run as the cluster's own user (run_as): the
/// restored data folder starts as it is, and holds the same data.
#[test]
fn a_pg_basebackup_run_as_postgres_restores_a_folder_that_starts() {
    let sb = Sandbox::new("a_pg_basebackup_run_as_postgres_restores_a_folder_that_starts");
    let sums = populated("basebackup_src");
    let e = pg();
    command_job(
        &sb,
        &format!(
            "{{ kind = \"command\", run = \"pg_basebackup -c fast -D $OFFSITE_STAGE_DIR/base -h 127.0.0.1 -p {} -U postgres\", run_as = \"postgres\" }}",
            e["PGPORT"]
        ),
    );
    let to = backed_up_and_restored(&sb);
    let cluster = Cluster::start(&to.join("base"));
    assert_eq!(
        fixture(&cluster.port, &["checksums", "basebackup_src"]),
        sums
    );
    cluster.stop();
}

/// A cluster of the test's own, made from the shared one with pg_basebackup
/// (as postgres) into `data`, and started.
fn own_cluster(sb: &Sandbox, data: &Path) -> Cluster {
    let e = pg();
    std::fs::create_dir_all(sb.path("pg")).expect("mkdir");
    std::os::unix::fs::chown(sb.path("pg"), Some(postgres_uid()), None).expect("chown");
    let out = as_postgres(&format!("{}/pg_basebackup", e["PG_BIN"]))
        .args([
            "-c",
            "fast",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &e["PGPORT"],
            "-D",
        ])
        .arg(data)
        .output()
        .expect("pg_basebackup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Cluster::start(data)
}

/// A job backing up the stopped data folder `data` (`pre` stops the cluster
/// on `port`, `post` starts it again, as the recipe says).
fn stopped_cluster_job(sb: &Sandbox, data: &Path, port: &str) {
    let e = pg();
    let bin = &e["PG_BIN"];
    let socket = format!("/tmp/offsite-pg-{port}");
    let stop = format!(
        "setpriv --reuid=postgres --regid=postgres --init-groups -- {bin}/pg_ctl stop -w -m fast -D {}",
        data.display()
    );
    let start = format!(
        "setpriv --reuid=postgres --regid=postgres --init-groups -- {bin}/pg_ctl start -w -D {} -l {} -o '-p {port} -k {} -c listen_addresses=127.0.0.1'",
        data.display(),
        data.with_extension("log2").display(),
        socket
    );
    sb.write_config(&format!(
        "[staging]\ndir = \"staging\"\nmin_free = \"1MiB\"\n\n[[job]]\nname = \"db\"\nsource = {{ kind = \"dir\", path = \"{}\" }}\npre = [\"{stop}\"]\npost = [\"{start}\"]\ndestinations = [\"nas\"]\n\n{NAS}",
        data.display()
    ));
}

/// A `dir` source on a cluster its hooks stop and start, in a chain of a
/// full and two incrementals with changes (and a dropped table) between
/// them: the latest and the middle backup each restore into a folder that
/// starts and holds the data of its own moment.
#[test]
fn a_stopped_cluster_chain_restores_any_point_that_starts() {
    let sb = Sandbox::new("a_stopped_cluster_chain_restores_any_point_that_starts");
    let first = populated("chain_src");
    let data = sb.path("pg/data");
    let cluster = own_cluster(&sb, &data);
    let port = cluster.port.clone();
    // The job's hooks stop and start it from now on (pg_ctl, same port).
    let _ = cluster.child.id();
    std::mem::forget(cluster);
    stopped_cluster_job(&sb, &data, &port);
    let r = sb.offsite(&["--json", "backup", "--full"]);
    assert_eq!(r.code, 0, "{r:?}");
    let full = r.json()["backup"].as_str().expect("id").to_string();
    assert_eq!(
        fixture(&port, &["checksums", "chain_src"]),
        first,
        "running again after post"
    );

    psql(
        &port,
        "chain_src",
        "update pgbench_accounts set abalance = abalance + 7 where aid % 97 = 0",
    );
    psql(
        &port,
        "chain_src",
        "insert into extra(id, t, b) values (100001, 'ünïcødé ✓', '\\xdeadbeef')",
    );
    let middle_sums = fixture(&port, &["checksums", "chain_src"]);
    let r = sb.offsite(&["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["kind"], "incr", "{r:?}");
    // The updated table's files ship as their changed pages, and the
    // restore below starts a server on them.
    assert!(
        r.json()["notes"].to_string().contains("changed in place"),
        "{r:?}"
    );
    let middle = r.json()["backup"].as_str().expect("id").to_string();

    psql(&port, "chain_src", "drop table pgbench_history");
    psql(
        &port,
        "chain_src",
        "update pgbench_branches set bbalance = bbalance - 1",
    );
    let last_sums = fixture(&port, &["checksums", "chain_src"]);
    let r = sb.offsite(&["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 0, "{r:?}");
    let last = r.json()["backup"].as_str().expect("id").to_string();
    assert_ne!(middle_sums, last_sums);

    for (id, sums) in [
        (&full, &first),
        (&middle, &middle_sums),
        (&last, &last_sums),
    ] {
        let to = sb.path(&format!("restored-{id}"));
        let r = sb.offsite(&[
            "restore",
            "--job",
            "db",
            "--backup",
            id,
            "--to",
            to.to_str().expect("utf8"),
        ]);
        assert_eq!(r.code, 0, "{r:?}");
        let restored = Cluster::start(&to);
        assert_eq!(
            &fixture(&restored.port, &["checksums", "chain_src"]),
            sums,
            "{id}"
        );
        restored.stop();
    }
    // Stop the job's cluster (its postmaster is pg_ctl's child now).
    let e = pg();
    let _ = as_postgres(&format!("{}/pg_ctl", e["PG_BIN"]))
        .args(["stop", "-w", "-m", "fast", "-D"])
        .arg(&data)
        .output();
}
