//! A sandbox per test: its own source, staging and destination folders and
//! configuration, and the real `offsite` binary run against them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Sandbox {
    pub root: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_offsite")
}

impl Sandbox {
    pub fn new(test: &str) -> Sandbox {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e")
            .join(test);
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("src")).expect("mkdir src");
        fs::create_dir_all(root.join("dest")).expect("mkdir dest");
        Sandbox { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("offsite.toml")
    }

    pub fn write_config(&self, text: &str) {
        fs::write(self.config_path(), text).expect("write config");
    }

    /// A config with one `dir` job "db" over `src/` and the given destinations
    /// (`[destination.*]` tables) and extra job keys.
    pub fn config_dir_job(&self, job_extra: &str, destinations: &[&str], tables: &str) {
        let dests = destinations
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.write_config(&format!(
            "[staging]\ndir = \"staging\"\nmin_free = \"1MiB\"\n\n[[job]]\nname = \"db\"\nsource = {{ kind = \"dir\", path = \"src\" }}\ndestinations = [{dests}]\n{job_extra}\n\n{tables}"
        ));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config").arg(self.config_path()).args(args);
        c.env_remove("OFFSITE_CONFIG");
        c
    }

    pub fn offsite(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run offsite"))
    }
}

/// Deterministic, incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    offsite_backends::conformance::pattern(len, seed)
}

pub fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, data).expect("write");
}

/// Every entry under `root`: relative path → (kind, content or link target, mode).
pub fn snapshot(root: &Path) -> BTreeMap<String, (String, Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.expect("walk");
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("prefix")
            .to_string_lossy()
            .into_owned();
        let md = fs::symlink_metadata(e.path()).expect("stat");
        let mode = md.permissions().mode() & 0o7777;
        let entry = if md.file_type().is_symlink() {
            (
                "link".into(),
                fs::read_link(e.path())
                    .expect("readlink")
                    .to_string_lossy()
                    .as_bytes()
                    .to_vec(),
                0,
            )
        } else if md.is_dir() {
            ("dir".into(), Vec::new(), mode)
        } else {
            ("file".into(), fs::read(e.path()).expect("read"), mode)
        };
        let _ = md.mtime();
        out.insert(rel, entry);
    }
    out
}

pub fn assert_same_tree(a: &Path, b: &Path) {
    let sa = snapshot(a);
    let sb = snapshot(b);
    let ka: Vec<&String> = sa.keys().collect();
    let kb: Vec<&String> = sb.keys().collect();
    assert_eq!(ka, kb, "the trees hold different names");
    for (k, va) in &sa {
        let vb = &sb[k];
        assert_eq!(va.0, vb.0, "{k}: kind differs");
        assert!(
            va.1 == vb.1,
            "{k}: content differs ({} vs {} bytes)",
            va.1.len(),
            vb.1.len()
        );
        assert_eq!(va.2, vb.2, "{k}: mode differs");
    }
}

/// Waits until `cond` holds, failing the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ids of the complete backups of job "db" on the sandbox destination named `dest`.
pub fn complete_backups(sb: &Sandbox, dest: &str) -> Vec<String> {
    backup_ids(&sb.offsite(&["--json", "list", "--destination", dest]))
}

/// The ids of the complete backups a successful `--json list` of one destination printed.
pub fn backup_ids(r: &Run) -> Vec<String> {
    assert_eq!(r.code, 0, "{r:?}");
    r.json()["listings"][0]["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect()
}

/// The folders in the job's staging folder: staged backups and any `.work-*`
/// leftovers (the kept parent manifests, `.manifests`, are not counted).
pub fn staging_dirs(sb: &Sandbox) -> Vec<String> {
    let Ok(entries) = fs::read_dir(sb.path("staging/db")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".manifests")
        .collect()
}

/// Sends SIGTERM to a child process, as systemd or `kill` would.
pub fn terminate(pid: u32) {
    // SAFETY: kill(2) on the pid of a child this test started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill -TERM {pid}");
}

/// The parts journaled for `destination` in job "db"'s staging: (count, bytes).
pub fn journaled(sb: &Sandbox, destination: &str) -> (usize, u64) {
    let Ok(ids) = fs::read_dir(sb.path("staging/db")) else {
        return (0, 0);
    };
    let mut count = 0;
    let mut bytes = 0;
    for text in ids.flatten().filter_map(|e| {
        fs::read_to_string(e.path().join(format!(".journal/{destination}.jsonl"))).ok()
    }) {
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["event"] == "part" {
                count += 1;
                bytes += v["receipt"]["size"].as_u64().expect("size");
            }
        }
    }
    (count, bytes)
}

/// Starts `--json backup`, waits until `ready` holds (failing after
/// `limit`), sends SIGTERM, and returns how the run ended and its JSON.
pub fn backup_then_sigterm(
    sb: &Sandbox,
    what: &str,
    limit: Duration,
    ready: impl FnMut() -> bool,
) -> (Run, serde_json::Value) {
    let child = sb
        .command(&["--json", "backup"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start backup");
    wait_for(what, limit, ready);
    terminate(child.id());
    let out = child.wait_with_output().expect("wait");
    let run = Run::from(out);
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {run:?}"));
    (run, json)
}

/// What a restore must give back of one entry besides its bytes: kind,
/// mode, owner, modification time (to the nanosecond), and for a file
/// whose inode has several names, the first of its names under the root.
#[derive(Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub kind: String,
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub linked_to: Option<std::ffi::OsString>,
}

/// Every entry under `root` and `root` itself (as ""), by raw relative
/// name (bytes: names need not be UTF-8).
pub fn meta_snapshot(root: &Path) -> BTreeMap<Vec<u8>, EntryMeta> {
    use std::os::unix::ffi::OsStrExt;
    let mut first_name: BTreeMap<(u64, u64), std::ffi::OsString> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.expect("walk");
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("prefix")
            .as_os_str()
            .to_owned();
        let md = fs::symlink_metadata(e.path()).expect("stat");
        let (kind, content) = if md.file_type().is_symlink() {
            let t = fs::read_link(e.path()).expect("readlink");
            ("link".to_string(), t.as_os_str().as_bytes().to_vec())
        } else if md.is_dir() {
            ("dir".to_string(), Vec::new())
        } else {
            ("file".to_string(), fs::read(e.path()).expect("read"))
        };
        let linked_to = if md.is_file() && md.nlink() > 1 {
            let first = first_name
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone());
            Some(first.clone())
        } else {
            None
        };
        out.insert(
            rel.as_bytes().to_vec(),
            EntryMeta {
                kind,
                content,
                mode: if md.file_type().is_symlink() {
                    0
                } else {
                    md.mode() & 0o7777
                },
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                linked_to,
            },
        );
    }
    out
}

/// Restored `b` holds what `a` holds, with the metadata a database needs
/// to start on it (see [`EntryMeta`]), the root folder included.
pub fn assert_faithful(a: &Path, b: &Path) {
    let sa = meta_snapshot(a);
    let sb = meta_snapshot(b);
    let names = |s: &BTreeMap<Vec<u8>, EntryMeta>| -> Vec<String> {
        s.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert_eq!(names(&sa), names(&sb), "the trees hold different names");
    for (k, va) in &sa {
        let vb = &sb[k];
        let name = String::from_utf8_lossy(k);
        assert_eq!(va.kind, vb.kind, "{name:?}: kind");
        assert!(va.content == vb.content, "{name:?}: content differs");
        assert_eq!(
            (va.mode, va.uid, va.gid),
            (vb.mode, vb.uid, vb.gid),
            "{name:?}: mode and owner"
        );
        assert_eq!(va.mtime, vb.mtime, "{name:?}: modification time");
        assert_eq!(va.linked_to, vb.linked_to, "{name:?}: hard links");
    }
}

/// Sets the modification time of `path` (not following a symlink) to `sec`.`nsec`.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: `c` and `times` outlive the call; utimensat only reads them.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// The arguments of a restore of job "db"'s `backup` into `to`.
pub fn restore_args<'a>(backup: &'a str, to: &'a str) -> [&'a str; 7] {
    ["restore", "--job", "db", "--backup", backup, "--to", to]
}

/// Restores job "db"'s `backup` into `to` (relative to the sandbox).
pub fn restore_backup(sb: &Sandbox, backup: &str, to: &str) -> Run {
    let to = sb.path(to);
    let mut args = vec!["--json"];
    args.extend(restore_args(backup, to.to_str().expect("utf8")));
    sb.offsite(&args)
}
