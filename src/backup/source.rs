//! What a backup reads: the plan of a data directory (which files, in which
//! order) and the commands around it (a dump command, `pre`/`post` hooks).
//!
//! Order matters for databases that are copied while running: EventStoreDB's
//! `*.chk` checkpoint files must be copied before the chunks they point into,
//! so `order = ["index/**/*.chk", "index/**", "*.chk", "**"]` reads every file matching the first
//! pattern, then the second, and so on; files matching none come last. A
//! pattern without `/` matches a file name at any depth; a pattern with `/`
//! matches the path from the source folder (`**` crosses folders, `*` does
//! not). Excludes use the same rules; an excluded folder is not entered.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::config::OnUnreadable;
use crate::error::{Error, Result};
use crate::format::manifest::EntryKind;
use crate::stop::Stop;

/// One entry of a data directory to back up.
#[derive(Debug, Clone)]
pub struct PlannedEntry {
    /// Relative to the source folder, `/`-separated, in the encoding of
    /// [`crate::format::names`] (any byte a file name may hold).
    pub rel: String,
    /// Its path on this host (the source folder joined with `rel`).
    pub abs: PathBuf,
    /// File, folder or symlink (hard links are told apart when packing).
    pub kind: EntryKind,
    /// The size in bytes when it was listed; 0 for folders and symlinks.
    pub size: u64,
    /// What the entry takes on disk, for the free-space check: a sparse
    /// file its allocated blocks, a second name of a hard-linked file nothing.
    pub disk: u64,
}

/// A data directory's entries in backup order, and what was left out.
#[derive(Debug, Default)]
pub struct Plan {
    /// Folders first, then files and symlinks by `order` group, each group
    /// sorted by path.
    pub entries: Vec<PlannedEntry>,
    /// Special files (sockets, FIFOs, devices), with the reason; symlinks
    /// leaving the source are skipped later, when packing.
    pub skipped: Vec<String>,
    /// Entries that could not be read (`on_unreadable = "skip"`), with the error.
    pub unreadable: Vec<String>,
}

struct Pattern {
    matcher: GlobMatcher,
    whole_path: bool,
}

impl Pattern {
    fn new(text: &str) -> Result<Pattern> {
        let glob: Glob = GlobBuilder::new(text)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Config(format!("invalid glob {text:?}: {}", e.kind())))?;
        Ok(Pattern {
            matcher: glob.compile_matcher(),
            whole_path: text.contains('/') || text.contains("**"),
        })
    }

    /// Matches the raw path relative to the source (bytes: a name need not be UTF-8).
    fn matches(&self, rel: &[u8]) -> bool {
        let candidate = if self.whole_path {
            rel
        } else {
            rel.rsplit(|b| *b == b'/').next().unwrap_or(rel)
        };
        self.matcher
            .is_match(Path::new(OsStr::from_bytes(candidate)))
    }
}

fn patterns(list: &[String]) -> Result<Vec<Pattern>> {
    list.iter().map(|p| Pattern::new(p)).collect()
}

/// Lists `root` in backup order: folders first (so empty ones are kept), then
/// files and symlinks grouped by the first `order` pattern they match, each
/// group sorted by path. Special files (sockets, FIFOs, devices) are skipped
/// and returned separately so the caller can report them; so are entries
/// that cannot be read when `unreadable` says skip.
pub fn plan_dir(
    root: &Path,
    order: &[String],
    exclude: &[String],
    unreadable: OnUnreadable,
) -> Result<Plan> {
    let meta = std::fs::metadata(root).map_err(|e| {
        Error::Failed(format!(
            "source {}: cannot read it: {e}; check the job's source path",
            root.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(Error::Failed(format!(
            "source {} is not a folder",
            root.display()
        )));
    }
    let order = patterns(order)?;
    let exclude = patterns(exclude)?;
    let excluded = |rel: &[u8]| exclude.iter().any(|p| p.matches(rel));

    let mut plan = Plan::default();
    let mut dirs = Vec::new();
    let mut files: Vec<(usize, PlannedEntry)> = Vec::new();
    // Every name of a hard-linked file but the first takes no space.
    let mut inodes = std::collections::HashSet::new();
    let mut walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter();
    while let Some(entry) = walker.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let at = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let denied = e
                    .io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
                if denied && unreadable == OnUnreadable::Skip {
                    let rel = e
                        .path()
                        .and_then(|p| p.strip_prefix(root).ok())
                        .map(crate::format::names::of_path)
                        .unwrap_or(at);
                    plan.unreadable.push(format!("{rel} ({e})"));
                    continue;
                }
                let hint = if denied {
                    "; give offsite's user read access, exclude it, or set on_unreadable = \"skip\""
                } else {
                    ""
                };
                return Err(Error::Failed(format!(
                    "source {}: cannot read {at}: {e}{hint}",
                    root.display()
                )));
            }
        };
        let rel_path = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let raw = rel_path.as_os_str().as_bytes();
        let ft = entry.file_type();
        if excluded(raw) {
            if ft.is_dir() {
                walker.skip_current_dir();
            }
            continue;
        }
        let rel = crate::format::names::encode(raw);
        let md = entry.metadata().map_err(|e| {
            Error::Failed(format!("source {}: cannot stat {rel}: {e}", root.display()))
        })?;
        let (kind, size) = if ft.is_dir() {
            (EntryKind::Dir, 0)
        } else if ft.is_file() {
            (EntryKind::File, md.size())
        } else if ft.is_symlink() {
            (EntryKind::Symlink, 0)
        } else {
            plan.skipped
                .push(format!("{rel} (not a file, folder or symlink)"));
            continue;
        };
        let disk = if kind != EntryKind::File
            || (md.nlink() > 1 && !inodes.insert((md.dev(), md.ino())))
        {
            0
        } else {
            size.min(md.blocks().saturating_mul(512))
        };
        let group = order
            .iter()
            .position(|p| p.matches(raw))
            .unwrap_or(order.len());
        let planned = PlannedEntry {
            rel,
            abs: entry.path().to_path_buf(),
            kind,
            size,
            disk,
        };
        if kind == EntryKind::Dir {
            dirs.push(planned);
        } else {
            files.push((group, planned));
        }
    }
    files.sort_by(|(ga, a), (gb, b)| ga.cmp(gb).then_with(|| a.rel.cmp(&b.rel)));
    dirs.extend(files.into_iter().map(|(_, f)| f));
    plan.entries = dirs;
    Ok(plan)
}

/// The environment a hook or source command runs with, besides the process's own.
#[derive(Debug, Clone, Default)]
pub struct CommandEnv {
    /// Variables set for the command (`OFFSITE_JOB`, `OFFSITE_BACKUP_ID`, ...).
    pub vars: Vec<(String, String)>,
    /// Variables a command run as another user (`run_as`) does not get:
    /// the ones offsite reads secrets from
    /// ([`crate::config::Config::secret_variables`]).
    pub secrets: Vec<String>,
}

const STDERR_TAIL: usize = 2000;

/// Another user a source command runs as (`run_as`), looked up before the
/// run: its ids, its supplementary groups and its home folder.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// The user name, as configured.
    pub user: String,
    /// The user's id.
    pub uid: u32,
    /// The user's primary group.
    pub gid: u32,
    /// Its supplementary groups (only the primary group when they cannot be
    /// read).
    pub groups: Vec<u32>,
    /// Its home folder, given to the command as `HOME`.
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `user` up in the system's user database. Offsite must run as
    /// root to become another user (or already be that user).
    pub fn lookup(user: &str) -> Result<RunAs> {
        let name = std::ffi::CString::new(user)
            .map_err(|_| Error::Config(format!("run_as {user:?}: a user name has no NUL byte")))?;
        // SAFETY: getpwnam_r writes into `pw` and `buf`, which outlive the
        // call; the strings it points `pw` at live in `buf`.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 << 10];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        // Not found is 0 with no entry (or, as POSIX allows, one of these);
        // anything else is the user database failing (NSS, LDAP): a failed
        // run, not a configuration error.
        let not_found = [0, libc::ENOENT, libc::ESRCH, libc::EBADF, libc::EPERM];
        if found.is_null() && not_found.contains(&rc) {
            return Err(Error::Config(format!(
                "run_as {user:?}: no such user on this host; create it or name another"
            )));
        }
        if rc != 0 || found.is_null() {
            return Err(Error::Failed(format!(
                "run_as {user:?}: cannot look the user up: {}; check the user database (NSS, LDAP) is reachable",
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        // SAFETY: pw_dir points into `buf` (set by getpwnam_r), NUL-terminated.
        let home = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) };
        let home = PathBuf::from(OsStr::from_bytes(home.to_bytes()));
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut count = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `count` entries; getgrouplist says how
        // many it wrote (or needed) in `count`.
        let rc = unsafe {
            libc::getgrouplist(name.as_ptr(), pw.pw_gid, groups.as_mut_ptr(), &mut count)
        };
        groups.truncate(if rc < 0 { 1 } else { count.max(0) as usize });
        if rc < 0 {
            groups[0] = pw.pw_gid;
        }
        let who = RunAs {
            user: user.to_string(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            groups,
            home,
        };
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        // Root only, even for offsite's own user: the work folder is handed
        // over with chown, and the groups are set, which only root may do.
        if euid != 0 {
            return Err(Error::Config(format!(
                "run_as {user:?}: offsite runs as uid {euid}, and only root can run a command as another user; run offsite as root or drop run_as"
            )));
        }
        Ok(who)
    }

    /// Whether the user may pass through (search) folder `md`.
    fn may_search(&self, md: &std::fs::Metadata) -> bool {
        let mode = md.mode();
        if self.uid == 0 {
            return true;
        }
        if md.uid() == self.uid {
            return mode & 0o100 != 0;
        }
        if self.groups.contains(&md.gid()) || md.gid() == self.gid {
            return mode & 0o010 != 0;
        }
        mode & 0o001 != 0
    }

    /// The first folder above `dir` the user cannot pass through, if any.
    pub fn blocked_at(&self, dir: &Path) -> Option<PathBuf> {
        let mut at = PathBuf::new();
        for c in dir.components() {
            at.push(c);
            if at == dir {
                break;
            }
            match std::fs::metadata(&at) {
                Ok(md) if self.may_search(&md) => {}
                _ => return Some(at),
            }
        }
        None
    }
}

/// What a command printed on its standard error, for the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommandStderr {
    /// Which command: `source command`, `pre hook 1`, ...
    pub command: String,
    /// The last 2,000 bytes or so (all of it streams through the progress
    /// reporter's `command_output` as it comes).
    pub tail: String,
}

/// A command to run: `command` through the shell in `workdir`.
pub struct Shell<'a> {
    /// What the command is, for messages: `job "db": source command`.
    pub what: &'a str,
    /// The shell command line.
    pub command: &'a str,
    /// The folder it runs in.
    pub workdir: &'a Path,
    /// Variables to set, and the secret ones to withhold from another user.
    pub env: &'a CommandEnv,
    /// Where its stdout goes (a dump streamed into staging); else discarded.
    pub stdout: Option<std::fs::File>,
    /// Kills the command's process group when a stop is requested.
    pub stop: Option<&'a Stop>,
    /// The user to run it as; None: offsite's own user.
    pub run_as: Option<&'a RunAs>,
    /// Each line of its stderr as it comes (`-v` shows them all).
    pub progress: Option<&'a dyn crate::progress::Progress>,
}

/// The shell commands run with: bash with `pipefail` where it is installed,
/// so `pg_dump db | zstd` fails when pg_dump fails; else `sh`, asked for
/// `pipefail` too (a shell without it fails the command, and says so).
fn shell() -> (&'static str, Vec<&'static str>) {
    for bash in ["/bin/bash", "/usr/bin/bash"] {
        if Path::new(bash).exists() {
            return (bash, vec!["-o", "pipefail", "-c"]);
        }
    }
    ("sh", vec!["-c"])
}

/// Runs the command. A non-zero exit is an error naming `what`, the exit
/// status and the end of its stderr; on success the end of its stderr
/// (empty when it printed nothing) is returned for the report.
pub fn run_shell(spec: Shell<'_>) -> Result<String> {
    let Shell {
        what,
        command,
        workdir,
        env,
        stdout,
        stop,
        run_as,
        progress,
    } = spec;
    let (program, args) = shell();
    let mut cmd = Command::new(program);
    cmd.args(&args);
    if program == "sh" {
        cmd.arg(format!("set -o pipefail\n{command}"));
    } else {
        cmd.arg(command);
    }
    cmd.stdin(Stdio::null())
        // Its own process group: a terminal's Ctrl-C reaches offsite alone, which
        // decides what stops (a source command) and what must still run (post hooks).
        .process_group(0);
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    match run_as {
        None => {
            cmd.current_dir(workdir);
        }
        Some(who) => {
            for v in &env.secrets {
                cmd.env_remove(v);
            }
            cmd.env("HOME", &who.home)
                .env("USER", &who.user)
                .env("LOGNAME", &who.user);
            let dir = std::ffi::CString::new(workdir.as_os_str().as_bytes()).map_err(|_| {
                Error::Failed(format!("{what}: {} has a NUL byte", workdir.display()))
            })?;
            let (uid, gid, groups) = (who.uid, who.gid, who.groups.clone());
            // SAFETY: between fork and exec only async-signal-safe calls are
            // made (chdir, setgroups, setgid, setuid), on data prepared
            // before the fork. The folder is entered while still root, so
            // the user need not be able to reach the configuration's folder.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::chdir(dir.as_ptr()) != 0
                        || libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    match stdout {
        Some(f) => cmd.stdout(Stdio::from(f)),
        None => cmd.stdout(Stdio::null()),
    };
    cmd.stderr(Stdio::piped());
    let as_whom = run_as
        .map(|w| format!(" as {}", w.user))
        .unwrap_or_default();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Failed(format!("{what}: cannot start `{command}`{as_whom}: {e}")))?;
    let _killer = stop.map(|s| GroupKiller::watch(s.clone(), child.id()));
    // Read stderr to the end (so the child never blocks on a full pipe),
    // passing each line on and keeping the tail.
    let mut tail: Vec<u8> = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let mut lines = Lines::default();
        let mut chunk = [0u8; 8192];
        let pass_on = |line: &[u8], tail: &mut Vec<u8>| {
            if let Some(p) = progress {
                p.command_output(what, String::from_utf8_lossy(line).trim_end());
            }
            tail.extend_from_slice(line);
            tail.push(b'\n');
            if tail.len() > STDERR_TAIL * 2 {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        };
        loop {
            match std::io::Read::read(&mut err, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => lines.push(&chunk[..n], |l| pass_on(l, &mut tail)),
            }
        }
        lines.finish(|l| pass_on(l, &mut tail));
    }
    let status = child
        .wait()
        .map_err(|e| Error::Failed(format!("{what}: waiting for `{command}` failed: {e}")))?;
    let start = tail.len().saturating_sub(STDERR_TAIL);
    let stderr = String::from_utf8_lossy(&tail[start..]).trim().to_string();
    if status.success() {
        return Ok(stderr);
    }
    if stop.is_some_and(Stop::requested) {
        return Err(Error::Stopped(format!(
            "{what}: stopped on request (`{command}` was sent SIGTERM)"
        )));
    }
    let how = match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "was killed by a signal".to_string(),
    };
    let mut msg = format!("{what}: `{command}`{as_whom} {how}");
    if !stderr.is_empty() {
        msg.push_str(&format!("; its error output ends with: {stderr}"));
    }
    Err(Error::Failed(msg))
}

/// Sends SIGTERM to a child's process group once a stop is requested;
/// watches until dropped.
struct GroupKiller {
    done: Arc<AtomicBool>,
}

impl GroupKiller {
    fn watch(stop: Stop, pid: u32) -> GroupKiller {
        let done = Arc::new(AtomicBool::new(false));
        let seen = done.clone();
        std::thread::spawn(move || {
            while !seen.load(Ordering::SeqCst) {
                if stop.requested() {
                    // SAFETY: kill(2) with the child's own process group id; no memory is shared.
                    unsafe {
                        libc::kill(-(pid as libc::pid_t), libc::SIGTERM);
                    }
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        GroupKiller { done }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Splits a command's stderr into lines at `\n` or `\r` (progress meters
/// redraw with `\r`), none longer than [`MAX_LINE`]: memory stays bounded
/// and `-v` shows a meter as it goes, whatever the command writes.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
}

/// The longest line passed on; a longer one is cut into pieces.
const MAX_LINE: usize = 8192;

impl Lines {
    fn push(&mut self, bytes: &[u8], mut line: impl FnMut(&[u8])) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.pending.is_empty() {
                    line(&self.pending);
                    self.pending.clear();
                }
            } else {
                self.pending.push(b);
                if self.pending.len() == MAX_LINE {
                    line(&self.pending);
                    self.pending.clear();
                }
            }
        }
    }

    fn finish(self, mut line: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            line(&self.pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_end_at_newlines_and_carriage_returns_and_stay_short() {
        let mut got: Vec<String> = Vec::new();
        let mut lines = Lines::default();
        let mut take = |l: &[u8]| got.push(String::from_utf8_lossy(l).into_owned());
        lines.push(b"10%\r20%\r", &mut take);
        lines.push(b"done\r\nwarn", &mut take);
        lines.push(b"ing: x\n\n", &mut take);
        lines.push(&vec![b'a'; MAX_LINE + 5], &mut take);
        lines.finish(&mut take);
        assert_eq!(&got[..4], ["10%", "20%", "done", "warning: x"]);
        assert_eq!(got[4].len(), MAX_LINE);
        assert_eq!(got[5], "aaaaa");
        assert_eq!(got.len(), 6);
    }

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, f.as_bytes()).expect("write");
        }
        d
    }

    fn rels(entries: &[PlannedEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.rel.as_str()).collect()
    }

    #[test]
    fn checkpoints_come_first_then_index_then_the_rest() {
        let d = tree(&[
            "chunk-000000.000000",
            "chunk-000001.000000",
            "chaser.chk",
            "writer.chk",
            "index/indexmap",
            "index/stream-existence/streamExistenceFilter.chk",
            "zzz/late.bin",
        ]);
        let order = vec!["*.chk".into(), "index/**".into(), "**".into()];
        let plan = plan_dir(d.path(), &order, &[], OnUnreadable::Fail).expect("plan");
        assert!(plan.skipped.is_empty());
        assert_eq!(
            rels(&plan.entries),
            vec![
                "index",
                "index/stream-existence",
                "zzz",
                "chaser.chk",
                "index/stream-existence/streamExistenceFilter.chk",
                "writer.chk",
                "index/indexmap",
                "chunk-000000.000000",
                "chunk-000001.000000",
                "zzz/late.bin",
            ]
        );
    }

    #[test]
    fn excludes_skip_files_and_whole_folders() {
        let d = tree(&["a.tmp", "keep.dat", "cache/x.dat", "sub/b.tmp"]);
        let plan = plan_dir(
            d.path(),
            &[],
            &["*.tmp".into(), "cache".into()],
            OnUnreadable::Fail,
        )
        .expect("plan");
        assert_eq!(rels(&plan.entries), vec!["sub", "keep.dat"]);
    }

    #[test]
    fn unmatched_files_come_after_every_group() {
        let d = tree(&["b.dat", "a.chk", "c.log"]);
        let plan = plan_dir(d.path(), &["*.chk".into()], &[], OnUnreadable::Fail).expect("plan");
        assert_eq!(rels(&plan.entries), vec!["a.chk", "b.dat", "c.log"]);
    }

    #[test]
    fn names_that_are_not_utf8_are_planned_encoded_and_excluded_by_globs() {
        use std::os::unix::ffi::OsStrExt;
        let d = tree(&["keep.dat"]);
        let bad = d.path().join(OsStr::from_bytes(b"bad\xff.dat"));
        std::fs::write(&bad, b"x").expect("write");
        std::fs::create_dir(d.path().join(OsStr::from_bytes(b"dir\xe9"))).expect("mkdir");
        std::fs::write(d.path().join(OsStr::from_bytes(b"dir\xe9/in")), b"y").expect("write");
        let plan = plan_dir(d.path(), &[], &[], OnUnreadable::Fail).expect("plan");
        assert_eq!(
            rels(&plan.entries),
            vec!["dir%E9", "bad%FF.dat", "dir%E9/in", "keep.dat"]
        );
        for glob in ["bad*", "*.dat", "**"] {
            let plan = plan_dir(d.path(), &[], &[glob.into()], OnUnreadable::Fail).expect("plan");
            assert!(
                !rels(&plan.entries).contains(&"bad%FF.dat"),
                "{glob} excludes it: {:?}",
                rels(&plan.entries)
            );
        }
    }

    #[test]
    fn hard_links_and_holes_take_no_space_in_the_estimate() {
        let d = tree(&["a"]);
        std::fs::write(d.path().join("a"), vec![1u8; 64 << 10]).expect("write");
        std::fs::hard_link(d.path().join("a"), d.path().join("b")).expect("link");
        let f = std::fs::File::create(d.path().join("sparse")).expect("create");
        f.set_len(1 << 30).expect("set_len");
        let plan = plan_dir(d.path(), &[], &[], OnUnreadable::Fail).expect("plan");
        let disk: Vec<(&str, u64)> = plan
            .entries
            .iter()
            .map(|e| (e.rel.as_str(), e.disk))
            .collect();
        assert_eq!(disk, vec![("a", 64 << 10), ("b", 0), ("sparse", 0)]);
    }

    fn shell_spec<'a>(
        what: &'a str,
        command: &'a str,
        workdir: &'a Path,
        stop: Option<&'a Stop>,
    ) -> Shell<'a> {
        static NO_ENV: CommandEnv = CommandEnv {
            vars: Vec::new(),
            secrets: Vec::new(),
        };
        Shell {
            what,
            command,
            workdir,
            env: &NO_ENV,
            stdout: None,
            stop,
            run_as: None,
            progress: None,
        }
    }

    #[test]
    fn a_failure_anywhere_in_a_pipe_fails_the_command() {
        let d = tempfile::tempdir().expect("tempdir");
        let err = run_shell(shell_spec(
            "source command",
            "echo no db >&2; false | cat",
            d.path(),
            None,
        ))
        .expect_err("the pipe's first command failed");
        assert!(err.to_string().contains("status 1"), "{err}");
        let ok = run_shell(shell_spec(
            "source command",
            "echo warning: old server >&2; true | cat",
            d.path(),
            None,
        ))
        .expect("a pipe that succeeds");
        assert_eq!(
            ok, "warning: old server",
            "a successful command's stderr is kept"
        );
    }

    #[test]
    fn a_failing_command_names_itself_and_its_stderr() {
        let d = tempfile::tempdir().expect("tempdir");
        let err = run_shell(shell_spec(
            "pre hook",
            "echo boom >&2; exit 3",
            d.path(),
            None,
        ))
        .expect_err("must fail");
        let text = err.to_string();
        assert!(
            text.contains("pre hook") && text.contains("status 3") && text.contains("boom"),
            "{text}"
        );
    }

    #[test]
    fn a_stop_kills_the_whole_command_pipeline() {
        let d = tempfile::tempdir().expect("tempdir");
        let stop = Stop::new();
        let trigger = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            trigger.request();
        });
        let started = std::time::Instant::now();
        let err = run_shell(shell_spec(
            "source command",
            "sleep 30 | cat",
            d.path(),
            Some(&stop),
        ))
        .expect_err("must be stopped");
        assert!(matches!(err, Error::Stopped(_)), "{err}");
        // Both sides of the pipe are gone, or stderr would still be open.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
