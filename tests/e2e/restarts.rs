//! Servers restarted in the middle of an upload: OpenSSH's sshd and moto's
//! S3 server, each a server of the test's own on a port of its own (the
//! shared ones serve other tests at the same time), stopped and started
//! again on the same port while `offsite` is uploading to it.
//!
//! Two cases per server:
//! - back within the retries: the run reconnects and finishes the volume it
//!   was sending from where it was (no volume is restarted);
//! - away for longer: the destination fails, and once the server is
//!   back `offsite upload` sends only what the journal lacks.
//!
//! moto keeps its state in memory; `tests/servers/moto_run.py --state`
//! saves it on SIGTERM and loads it at start, so it restarts the way a real
//! S3 keeps its data, multipart uploads in progress included.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::remote::*;
use crate::support::*;

/// A server the test starts, stops and starts again on one port.
trait OwnServer {
    fn start(&mut self);
    fn stop(&mut self);
    /// Its log, and what a client served there leaves in it.
    fn log(&self) -> (PathBuf, &'static str);
}

/// How long the log of `server` is now.
fn log_mark(server: &dyn OwnServer) -> usize {
    fs::read(server.log().0).map_or(0, |l| l.len())
}

/// Whether `server` served a client since its log was `mark` long.
fn served_since(server: &dyn OwnServer, mark: usize) -> bool {
    let (path, served) = server.log();
    let log = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(log.get(mark..).unwrap_or_default()).contains(served)
}

/// `pid` and all its descendants, parents first.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        all.extend(
            fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
        i += 1;
    }
    all
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn wait_listening(what: &str, port: u16, child: &mut Child) {
    wait_for(what, Duration::from_secs(30), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what}: the server exited during startup ({status})");
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Starts `cmd` (a server called `what`) with its output appended to
/// `log`, and waits until it listens on `port`.
fn spawn_logged(mut cmd: Command, log: &Path, what: &str, port: u16) -> Child {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open a server log");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    wait_listening(what, port, &mut child);
    child
}

/// sshd with the shared server's configuration (user, keys, host key) on a
/// port of its own.
struct OwnSshd {
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl OwnSshd {
    fn new(sb: &Sandbox) -> OwnSshd {
        let e = server_env("sshd.env", "sshd.sh");
        let shared = PathBuf::from(&e["SFTP_KNOWN_HOSTS"]).with_file_name("sshd_config");
        let port = free_port();
        let config: String = fs::read_to_string(&shared)
            .unwrap_or_else(|err| panic!("{}: {err}", shared.display()))
            .lines()
            .map(|l| {
                if l.starts_with("Port ") {
                    format!("Port {port}\n")
                } else if l.starts_with("PidFile ") {
                    format!("PidFile {}\n", sb.path("sshd.pid").display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let path = sb.path("sshd_config");
        fs::write(&path, config).expect("write sshd_config");
        let mut s = OwnSshd {
            config: path,
            log: sb.path("sshd.log"),
            port,
            child: None,
        };
        s.start();
        s
    }
}

impl OwnServer for OwnSshd {
    fn start(&mut self) {
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.arg("-D").arg("-e").arg("-f").arg(&self.config);
        self.child = Some(spawn_logged(cmd, &self.log, "sshd", self.port));
    }

    /// Stops the listener and every session it started, as a crash or a
    /// reboot of the server would: open connections are cut.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The listener, each connection's monitor and its unprivileged
        // child that serves SFTP: killing fewer leaves sessions running.
        let tree = process_tree(child.id());
        for p in &tree {
            // SAFETY: kill(2) on sshd, started by this test, and its descendants.
            unsafe { libc::kill(*p as libc::pid_t, libc::SIGKILL) };
        }
        let _ = child.wait();
        wait_for("sshd's sessions to end", Duration::from_secs(10), || {
            tree[1..]
                .iter()
                .all(|p| fs::read(format!("/proc/{p}/cmdline")).map_or(true, |c| c.is_empty()))
        });
    }

    fn log(&self) -> (PathBuf, &'static str) {
        (self.log.clone(), "Accepted publickey")
    }
}

impl Drop for OwnSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// moto's S3 server (`moto_run.py --state`), auth off, with a bucket.
struct OwnMoto {
    python: String,
    run: String,
    state: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

const BUCKET: &str = "restarts";

impl OwnMoto {
    fn new(sb: &Sandbox) -> OwnMoto {
        let m = crate::s3::moto();
        let mut s = OwnMoto {
            python: m["MOTO_PYTHON"].clone(),
            run: m["MOTO_RUN"].clone(),
            state: sb.path("moto.state"),
            log: sb.path("moto.log"),
            port: free_port(),
            child: None,
        };
        s.start();
        let made = Command::new(&s.python)
            .arg("-c")
            .arg(format!(
                "import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
                 aws_access_key_id='k', aws_secret_access_key='s').create_bucket(Bucket='{BUCKET}')",
                s.endpoint()
            ))
            .status()
            .expect("run python");
        assert!(made.success(), "create the bucket");
        s
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl OwnServer for OwnMoto {
    fn start(&mut self) {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.run).arg("--state").arg(&self.state).args([
            "-H",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
        ]);
        self.child = Some(spawn_logged(cmd, &self.log, "moto", self.port));
    }

    /// SIGTERM: moto saves its state and exits; connections are cut.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        terminate(child.id());
        let status = child.wait().expect("wait for moto");
        assert!(
            status.success(),
            "moto saved its state and exited: {status}"
        );
    }

    fn log(&self) -> (PathBuf, &'static str) {
        (self.log.clone(), "\"PUT /")
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The events of destination `dest`'s journals in job db's staging.
fn journal_events(sb: &Sandbox, dest: &str, event: &str) -> usize {
    let Ok(ids) = fs::read_dir(sb.path("staging/db")) else {
        return 0;
    };
    ids.flatten()
        .filter_map(|e| fs::read_to_string(e.path().join(format!(".journal/{dest}.jsonl"))).ok())
        .map(|text| {
            text.lines()
                .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
                .count()
        })
        .sum()
}

/// The two cases of the module doc against `server`, which `table`
/// (destination `dest`) points at; `env` is set for every run.
fn an_upload_survives_its_server_restarting(
    sb: &Sandbox,
    dest: &str,
    table: &str,
    env: &[(&str, &str)],
    server: &mut dyn OwnServer,
) {
    let run = |args: &[&str]| {
        let mut c = sb.command(args);
        c.envs(env.iter().copied());
        Run::from(c.output().expect("run offsite"))
    };
    let start_backup = || {
        sb.command(&["--json", "backup"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start backup")
    };
    let complete = || {
        let r = run(&["--json", "list", "--destination", dest]);
        assert_eq!(r.code, 0, "{r:?}");
        r.json()["listings"][0]["backups"]
            .as_array()
            .map_or(0, Vec::len)
    };
    // 16 MiB that does not compress, in a 12 MiB volume of 5 MiB parts and
    // a 4 MiB one, sent at 5 MiB/s: about 3 s of upload.
    write(&sb.path("src/chunk-000000.000000"), &noise(16 << 20, 31));
    write(&sb.path("src/writer.chk"), b"0000000000000042");
    let paced = |retries: u32| {
        format!("{table}part_size = \"5MiB\"\nbwlimit = \"5MiB\"\nretries = {retries}\n")
    };
    sb.config_dir_job("volume_size = \"12MiB\"", &[dest], &paced(7));

    // 1. Restarted while the run waits in its retries.
    let child = start_backup();
    wait_for("a part to be journaled", Duration::from_secs(60), || {
        journaled(sb, dest).0 >= 1
    });
    server.stop();
    let (parts_before, _) = journaled(sb, dest);
    let mark = log_mark(server);
    server.start();
    let r = Run::from(child.wait_with_output().expect("wait for backup"));
    assert_eq!(r.code, 0, "the backup completes after the restart: {r:?}");
    assert!(
        served_since(server, mark),
        "the run went on with the restarted server"
    );
    assert!(
        parts_before < 4,
        "the restart came in the middle of the upload ({parts_before} of 4 parts were sent before it)"
    );
    assert_eq!(
        journal_events(sb, dest, "restarted"),
        0,
        "no volume was sent again from its start"
    );
    let r = run(&["--json", "verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    restores_the_source(sb, run);

    // 2. Away for longer than the retries: the destination fails, and the
    // upload resumes from the journal once the server is back.
    write(&sb.path("src/chunk-000000.000000"), &noise(16 << 20, 32));
    sb.config_dir_job("volume_size = \"12MiB\"", &[dest], &paced(1));
    let (before, bytes_before) = journaled(sb, dest);
    let child = start_backup();
    wait_for("a part to be journaled", Duration::from_secs(60), || {
        journaled(sb, dest).0 > before
    });
    server.stop();
    let r = Run::from(child.wait_with_output().expect("wait for backup"));
    // Exit 1: its only destination failed (3 would be some of several).
    assert_eq!(
        r.code, 1,
        "the destination fails while its server is down: {r:?}"
    );
    let d = &r.json()["destinations"][0];
    assert_eq!(d["status"], "failed", "{r:?}");
    let sent = journaled(sb, dest).1 - bytes_before;
    server.start();
    assert_eq!(
        complete(),
        1,
        "the interrupted backup is not listed as complete"
    );
    let r = run(&["--json", "upload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(complete(), 2, "both backups are complete");
    let d = &r.json()["runs"][0]["destinations"][0];
    assert_eq!(d["status"], "ok", "{r:?}");
    assert!(
        d["bytes_resumed"]
            .as_u64()
            .is_some_and(|b| b > 0 && b <= sent),
        "the upload resumed from the journal ({sent} bytes journaled): {r:?}"
    );
    let to = sb.path("restored-2");
    let r = run(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
}

#[test]
fn an_sftp_upload_survives_sshd_restarting() {
    let sb = Sandbox::new("an_sftp_upload_survives_sshd_restarting");
    let mut sshd = OwnSshd::new(&sb);
    let table = crate::sftp::via_port(
        &sb,
        &crate::sftp::sftp_table(&sb, &crate::sftp::key_auth(), "SFTP_KNOWN_HOSTS"),
        sshd.port,
    );
    an_upload_survives_its_server_restarting(&sb, "sftp", &table, &[], &mut sshd);
}

#[test]
fn an_s3_upload_survives_moto_restarting() {
    let sb = Sandbox::new("an_s3_upload_survives_moto_restarting");
    let mut moto = OwnMoto::new(&sb);
    let table = format!(
        "[destination.s3]\nkind = \"s3\"\nbucket = \"{BUCKET}\"\nendpoint = \"{}\"\nprefix = \"restarts\"\n",
        moto.endpoint()
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "restart-test"),
        ("AWS_SECRET_ACCESS_KEY", "restart-test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    an_upload_survives_its_server_restarting(&sb, "s3", &table, &env, &mut moto);
}
