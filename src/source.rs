//! What a backup reads: the plan of a data directory (which files, in which
//! order) and the commands around it (a dump command, `pre`/`post` hooks).
//!
//! Order matters for databases that are copied while running: EventStoreDB's
//! `*.chk` checkpoint files must be copied before the chunks they point into,
//! so `order = ["*.chk", "index/**", "**"]` reads every file matching the first
//! pattern, then the second, and so on; files matching none come last. A
//! pattern without `/` matches a file name at any depth; a pattern with `/`
//! matches the path from the source folder (`**` crosses folders, `*` does
//! not). Excludes use the same rules; an excluded folder is not entered.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};
use crate::manifest::EntryKind;
use crate::stop::Stop;

/// One entry of a data directory to back up.
#[derive(Debug, Clone)]
pub struct PlannedEntry {
    /// Relative to the source folder, `/`-separated.
    pub rel: String,
    pub abs: PathBuf,
    pub kind: EntryKind,
    pub size: u64,
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

    fn matches(&self, rel: &str) -> bool {
        if self.whole_path {
            self.matcher.is_match(rel)
        } else {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            self.matcher.is_match(name)
        }
    }
}

fn patterns(list: &[String]) -> Result<Vec<Pattern>> {
    list.iter().map(|p| Pattern::new(p)).collect()
}

/// Lists `root` in backup order: folders first (so empty ones are kept), then
/// files and symlinks grouped by the first `order` pattern they match, each
/// group sorted by path. Special files (sockets, FIFOs, devices) are skipped
/// and returned separately so the caller can report them.
pub fn plan_dir(
    root: &Path,
    order: &[String],
    exclude: &[String],
) -> Result<(Vec<PlannedEntry>, Vec<String>)> {
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
    let excluded = |rel: &str| exclude.iter().any(|p| p.matches(rel));

    let mut dirs = Vec::new();
    let mut files: Vec<(usize, PlannedEntry)> = Vec::new();
    let mut skipped = Vec::new();
    let mut walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter();
    while let Some(entry) = walker.next() {
        let entry = entry.map_err(|e| {
            let at = e
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            Error::Failed(format!("source {}: cannot read {at}: {e}", root.display()))
        })?;
        let rel_path = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let Some(rel) = rel_path.to_str().map(str::to_string) else {
            return Err(Error::Failed(format!(
                "source {}: the name {:?} is not UTF-8, which the manifest cannot record; rename it or exclude it",
                root.display(),
                rel_path
            )));
        };
        let ft = entry.file_type();
        if excluded(&rel) {
            if ft.is_dir() {
                walker.skip_current_dir();
            }
            continue;
        }
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
            skipped.push(rel);
            continue;
        };
        let planned = PlannedEntry {
            rel: rel.clone(),
            abs: entry.path().to_path_buf(),
            kind,
            size,
        };
        if kind == EntryKind::Dir {
            dirs.push(planned);
        } else {
            let group = order
                .iter()
                .position(|p| p.matches(&rel))
                .unwrap_or(order.len());
            files.push((group, planned));
        }
    }
    files.sort_by(|(ga, a), (gb, b)| ga.cmp(gb).then_with(|| a.rel.cmp(&b.rel)));
    dirs.extend(files.into_iter().map(|(_, f)| f));
    Ok((dirs, skipped))
}

/// The environment a hook or source command runs with, besides the process's own.
#[derive(Debug, Clone, Default)]
pub struct CommandEnv {
    pub vars: Vec<(String, String)>,
}

const STDERR_TAIL: usize = 2000;

/// Runs `command` with `sh -c` in `workdir`. Its stdout goes to `stdout`
/// when given (a dump streamed into staging), else is discarded; the tail of
/// its stderr is kept for the error message. A non-zero exit is an error
/// naming `what` and the exit status.
pub fn run_shell(
    what: &str,
    command: &str,
    workdir: &Path,
    env: &CommandEnv,
    stdout: Option<std::fs::File>,
    stop: Option<&Stop>,
) -> Result<()> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(workdir)
        .stdin(Stdio::null())
        // Its own process group: a terminal's Ctrl-C reaches offsite alone, which
        // decides what stops (a source command) and what must still run (post hooks).
        .process_group(0);
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    match stdout {
        Some(f) => cmd.stdout(Stdio::from(f)),
        None => cmd.stdout(Stdio::null()),
    };
    cmd.stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Failed(format!("{what}: cannot start `sh -c {command:?}`: {e}")))?;
    let _killer = stop.map(|s| GroupKiller::watch(s.clone(), child.id()));
    // Read stderr to the end (so the child never blocks on a full pipe), keeping the tail.
    let mut tail: Vec<u8> = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let mut buf = [0u8; 8192];
        loop {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > STDERR_TAIL * 2 {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::Failed(format!("{what}: waiting for `{command}` failed: {e}")))?;
    if status.success() {
        return Ok(());
    }
    if stop.is_some_and(Stop::requested) {
        return Err(Error::Interrupted(format!(
            "{what}: stopped on request (`{command}` was sent SIGTERM)"
        )));
    }
    let start = tail.len().saturating_sub(STDERR_TAIL);
    let stderr = String::from_utf8_lossy(&tail[start..]).trim().to_string();
    let how = match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "was killed by a signal".to_string(),
    };
    let mut msg = format!("{what}: `{command}` {how}");
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let (plan, skipped) = plan_dir(d.path(), &order, &[]).expect("plan");
        assert!(skipped.is_empty());
        assert_eq!(
            rels(&plan),
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
        let (plan, _) = plan_dir(d.path(), &[], &["*.tmp".into(), "cache".into()]).expect("plan");
        assert_eq!(rels(&plan), vec!["sub", "keep.dat"]);
    }

    #[test]
    fn unmatched_files_come_after_every_group() {
        let d = tree(&["b.dat", "a.chk", "c.log"]);
        let (plan, _) = plan_dir(d.path(), &["*.chk".into()], &[]).expect("plan");
        assert_eq!(rels(&plan), vec!["a.chk", "b.dat", "c.log"]);
    }

    #[test]
    fn a_failing_command_names_itself_and_its_stderr() {
        let d = tempfile::tempdir().expect("tempdir");
        let err = run_shell(
            "pre hook",
            "echo boom >&2; exit 3",
            d.path(),
            &CommandEnv::default(),
            None,
            None,
        )
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
        let err = run_shell(
            "source command",
            "sleep 30 | cat",
            d.path(),
            &CommandEnv::default(),
            None,
            Some(&stop),
        )
        .expect_err("must be stopped");
        assert!(matches!(err, Error::Interrupted(_)), "{err}");
        // Both sides of the pipe are gone, or stderr would still be open.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
