//! Sources and hooks: dump commands, `$OFFSITE_STAGE_DIR`, pre/post, files changing while read, the job lock.

use std::fs;
use std::time::Duration;

use crate::support::*;

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";

fn command_job(sb: &Sandbox, source: &str, extra: &str) {
    sb.write_config(&format!(
        "[staging]\ndir = \"staging\"\nmin_free = \"1MiB\"\n[[job]]\nname = \"db\"\nsource = {source}\ndestinations = [\"nas\"]\n{extra}\n{NAS}"
    ));
}

fn restore(sb: &Sandbox) -> std::path::PathBuf {
    let to = sb.path("restored");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    to
}

#[test]
fn a_dump_command_streams_stdout_into_the_named_file() {
    let sb = Sandbox::new("a_dump_command_streams_stdout_into_the_named_file");
    command_job(
        &sb,
        "{ kind = \"command\", run = \"printf 'dump of %s' \\\"$OFFSITE_JOB\\\"\", output = \"db.dump\" }",
        "",
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["staged"]["files"], 1);
    assert_eq!(
        fs::read(restore(&sb).join("db.dump")).expect("read"),
        b"dump of db"
    );
}

#[test]
fn a_command_can_write_into_the_stage_dir() {
    let sb = Sandbox::new("a_command_can_write_into_the_stage_dir");
    command_job(
        &sb,
        "{ kind = \"command\", run = \"mkdir -p \\\"$OFFSITE_STAGE_DIR/sub\\\" && printf one > \\\"$OFFSITE_STAGE_DIR/a.db\\\" && printf two > \\\"$OFFSITE_STAGE_DIR/sub/b.db\\\"\" }",
        "",
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let to = restore(&sb);
    assert_eq!(fs::read(to.join("a.db")).expect("a"), b"one");
    assert_eq!(fs::read(to.join("sub/b.db")).expect("b"), b"two");
}

#[test]
fn a_failing_command_ships_nothing_and_post_still_runs() {
    let sb = Sandbox::new("a_failing_command_ships_nothing_and_post_still_runs");
    command_job(
        &sb,
        "{ kind = \"command\", run = \"echo half a dump; echo 'pg_dump: connection refused' >&2; exit 7\", output = \"db.dump\" }",
        "pre = [\"touch pre-ran\"]\npost = [\"touch post-ran\"]",
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "failed");
    let err = j["error"].as_str().expect("error");
    assert!(
        err.contains("status 7") && err.contains("connection refused"),
        "{err}"
    );
    assert!(
        sb.path("pre-ran").exists() && sb.path("post-ran").exists(),
        "post runs after a failed copy"
    );
    assert_eq!(
        fs::read_dir(sb.path("dest")).expect("dest").count(),
        0,
        "nothing shipped"
    );
    assert!(
        staging_dirs(&sb).is_empty(),
        "nothing half-staged is left: {:?}",
        staging_dirs(&sb)
    );
}

#[test]
fn a_failing_pre_hook_stops_the_backup_and_post_runs() {
    let sb = Sandbox::new("a_failing_pre_hook_stops_the_backup_and_post_runs");
    write(&sb.path("src/a.dat"), b"x");
    sb.config_dir_job(
        "pre = [\"exit 4\"]\npost = [\"touch post-ran\"]",
        &["nas"],
        NAS,
    );
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("pre hook 1") && r.stdout.contains("status 4"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .trim_end()
            .lines()
            .last()
            .expect("line")
            .contains("FAILED"),
        "{r:?}"
    );
    assert!(sb.path("post-ran").exists());
    assert_eq!(fs::read_dir(sb.path("dest")).expect("dest").count(), 0);
}

#[test]
fn checkpoint_files_are_copied_first() {
    let sb = Sandbox::new("checkpoint_files_are_copied_first");
    for f in [
        "chunk-000000.000000",
        "index/indexmap",
        "writer.chk",
        "chaser.chk",
        "a.tmp",
    ] {
        write(&sb.path("src").join(f), f.as_bytes());
    }
    sb.config_dir_job("", &["nas"], NAS);
    sb.write_config(&fs::read_to_string(sb.config_path()).expect("config").replace(
        "source = { kind = \"dir\", path = \"src\" }",
        "source = { kind = \"dir\", path = \"src\", order = [\"*.chk\", \"index/**\", \"**\"], exclude = [\"*.tmp\"] }",
    ));
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.json()["backup"].as_str().expect("id").to_string();
    let m: serde_json::Value = serde_json::from_slice(
        &fs::read(sb.path("dest/db").join(id).join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let order: Vec<&str> = m["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        order,
        vec![
            "index",
            "chaser.chk",
            "writer.chk",
            "index/indexmap",
            "chunk-000000.000000"
        ]
    );
}

/// A pre hook starts a writer that appends to a file for the whole copy.
fn growing_file_job(sb: &Sandbox, on_change: &str) {
    write(&sb.path("src/big.dat"), &noise(4 << 20, 5));
    // Large enough that reading it takes tens of milliseconds, longer than
    // a scheduler period: the two writers below (two, so that one runs even
    // while staging keeps both of CI's cores busy) append during it, and the
    // change cannot slip between the size taken before and the one after.
    // At 2 MiB a fast run read the whole file between two appends (CI,
    // stop 27).
    write(&sb.path("src/growing.log"), &noise(16 << 20, 6));
    let src = sb.path("src").display().to_string();
    // `timeout`: a writer outlives no run whose post hook did not kill it.
    let writer = format!(
        "timeout 60 sh -c 'while :; do echo more >> \\\"{src}/growing.log\\\"; done' >/dev/null 2>&1 & echo $! >> writer.pid"
    );
    sb.config_dir_job(
        &format!(
            "on_change = \"{on_change}\"\npre = [\"{writer}; {writer}; sleep 0.3\"]\npost = [\"kill $(cat writer.pid)\"]"
        ),
        &["nas"],
        NAS,
    );
}

#[test]
fn a_file_changing_while_read_is_reported() {
    let sb = Sandbox::new("a_file_changing_while_read_is_reported");
    growing_file_job(&sb, "warn");
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "ok");
    assert!(j["changed"].to_string().contains("growing.log"), "{r:?}");
    assert!(!j["changed"].to_string().contains("big.dat"), "{r:?}");
}

#[test]
fn on_change_fail_ships_nothing() {
    let sb = Sandbox::new("on_change_fail_ships_nothing");
    growing_file_job(&sb, "fail");
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    let err = r.json()["error"].as_str().expect("error").to_string();
    assert!(
        err.contains("growing.log") && err.contains("on_change"),
        "{err}"
    );
    assert_eq!(fs::read_dir(sb.path("dest")).expect("dest").count(), 0);
}

#[test]
fn a_second_run_of_the_same_job_is_refused() {
    let sb = Sandbox::new("a_second_run_of_the_same_job_is_refused");
    write(&sb.path("src/a.dat"), b"x");
    // The first run's hook holds the job lock until the test writes to the FIFO.
    let fifo = sb.path("hold");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    sb.config_dir_job(
        "pre = [\"touch started; cat hold > /dev/null\"]",
        &["nas"],
        NAS,
    );
    let mut first = sb.command(&["backup"]).spawn().expect("first run");
    wait_for(
        "the first run to hold the lock",
        Duration::from_secs(30),
        || sb.path("started").exists(),
    );
    let second = sb.offsite(&["backup"]);
    std::fs::write(&fifo, b"go\n").expect("release the first run");
    assert_eq!(second.code, 1, "{second:?}");
    assert!(second.stderr.contains("already running"), "{second:?}");
    assert!(first.wait().expect("wait").success());
    assert_eq!(complete_backups(&sb, "nas").len(), 1);
}

#[test]
fn sigterm_while_a_dump_runs_kills_it_and_still_runs_post() {
    let sb = Sandbox::new("sigterm_while_a_dump_runs_kills_it_and_still_runs_post");
    command_job(
        &sb,
        "{ kind = \"command\", run = \"echo started > dump-started; sleep 60; echo never\", output = \"db.dump\" }",
        "pre = [\"touch locked\"]\npost = [\"rm locked && touch unlocked\"]",
    );
    let started = std::time::Instant::now();
    let (r, j) = backup_then_sigterm(&sb, "the dump to start", Duration::from_secs(30), || {
        sb.path("dump-started").exists()
    });
    // The dump sleeps 60 s: the run ending well before means it was stopped, not waited for.
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the dump is stopped, not waited for"
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(j["status"], "interrupted", "{j}");
    assert!(
        sb.path("unlocked").exists() && !sb.path("locked").exists(),
        "the post hook ran: the database is not left locked"
    );
    assert!(staging_dirs(&sb).is_empty(), "{:?}", staging_dirs(&sb));
    assert_eq!(fs::read_dir(sb.path("dest")).expect("dest").count(), 0);
}

/// A source that is suddenly empty (an unmounted mount point) or 90%
/// smaller than the last backup fails the source check with a message that
/// says what it saw; nothing ships, and the earlier backup survives a
/// keep_last = 1 policy. With allow_degenerate the backup ships, marked,
/// and retention keeps the last good one anyway.
#[test]
fn an_empty_or_shrunken_source_fails_and_the_good_backup_survives() {
    let sb = Sandbox::new("an_empty_or_shrunken_source_fails_and_the_good_backup_survives");
    write(&sb.path("src/big.dat"), &noise(1 << 20, 5));
    write(&sb.path("src/small.dat"), &noise(10_000, 6));
    let nas = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";
    sb.config_dir_job("retention = { keep_last = 1 }", &["nas"], nas);
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let good = r.json()["backup"].as_str().expect("id").to_string();

    fs::remove_file(sb.path("src/big.dat")).expect("shrink");
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("shrank by 99%") && r.stdout.contains("shrink_limit"),
        "{r:?}"
    );
    fs::remove_file(sb.path("src/small.dat")).expect("empty");
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("holds no file"), "{r:?}");
    assert_eq!(complete_backups(&sb, "nas"), vec![good.clone()]);

    // Allowed: it ships, marked, and keep_last = 1 still keeps the good one.
    sb.config_dir_job(
        "retention = { keep_last = 1 }\nallow_degenerate = true",
        &["nas"],
        nas,
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let bad = r.json()["backup"].as_str().expect("id").to_string();
    assert_eq!(complete_backups(&sb, "nas"), vec![good, bad]);
    let l = sb.offsite(&["--json", "list"]);
    assert!(
        l.json()["listings"][0]["backups"][1]["degenerate"]
            .as_str()
            .unwrap_or("")
            .contains("holds no file"),
        "{l:?}"
    );
}

/// `post` hooks run after every attempt, with or without `pre` hooks,
/// whatever failed; the source runs only when every `pre` hook succeeded;
/// the run succeeds only when everything did. Every combination of none /
/// succeeding / failing `pre` and `post` hooks and a succeeding or failing
/// source command.
#[test]
fn post_hooks_run_after_every_attempt_whatever_failed() {
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Hook {
        None,
        Ok,
        Fails,
    }
    let hooks = [Hook::None, Hook::Ok, Hook::Fails];
    let mut case = 0;
    for pre in hooks {
        for post in hooks {
            for source_ok in [true, false] {
                case += 1;
                let sb = Sandbox::new(&format!("post_hooks_case_{case}"));
                let line = |which: &str, h: Hook| match h {
                    Hook::None => String::new(),
                    Hook::Ok => format!("{which} = [\"echo {which} >> hooks.log\"]\n"),
                    Hook::Fails => {
                        format!("{which} = [\"echo {which} >> hooks.log; exit 1\"]\n")
                    }
                };
                let run = if source_ok {
                    "echo source >> hooks.log; printf dump-bytes"
                } else {
                    "echo source >> hooks.log; echo no such db >&2; exit 3"
                };
                sb.write_config(&format!(
                    "[staging]\ndir = \"staging\"\nmin_free = \"1MiB\"\n\n[[job]]\nname = \"db\"\nsource = {{ kind = \"command\", run = \"{run}\", output = \"db.dump\" }}\ndestinations = [\"nas\"]\n{}{}\n[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
                    line("pre", pre),
                    line("post", post)
                ));
                let r = sb.offsite(&["--json", "backup"]);
                let log = fs::read_to_string(sb.path("hooks.log")).unwrap_or_default();
                let what =
                    format!("pre {pre:?}, post {post:?}, source ok {source_ok}: {r:?}\nlog: {log}");
                let ran = |w: &str| log.lines().any(|l| l == w);
                assert_eq!(ran("pre"), pre != Hook::None, "{what}");
                assert_eq!(ran("source"), pre != Hook::Fails, "{what}");
                assert_eq!(
                    ran("post"),
                    post != Hook::None,
                    "post runs whenever there is one: {what}"
                );
                let ok = pre != Hook::Fails && post != Hook::Fails && source_ok;
                assert_eq!(r.code == 0, ok, "{what}");
                assert_eq!(
                    complete_backups(&sb, "nas").len(),
                    usize::from(ok),
                    "shipped only when everything succeeded: {what}"
                );
            }
        }
    }
}

/// A dump piped through a compressor fails when the dump fails (pipefail),
/// and ships nothing; a successful command's stderr (a dump tool's
/// warnings) is kept in the report, its end in the human output, and every
/// line of it with -v.
#[test]
fn a_failing_dump_in_a_pipe_fails_and_a_commands_warnings_are_kept() {
    let sb = Sandbox::new("a_failing_dump_in_a_pipe_fails_and_a_commands_warnings_are_kept");
    let config = |run: &str| {
        format!(
            "[staging]\ndir = \"staging\"\nmin_free = \"1MiB\"\n\n[[job]]\nname = \"db\"\nsource = {{ kind = \"command\", run = \"{run}\", output = \"db.dump.zst\" }}\ndestinations = [\"nas\"]\n\n[destination.nas]\nkind = \"path\"\npath = \"dest\"\n"
        )
    };
    // Each of these fails with `why` in its error and ships nothing.
    let fails = |run: &str, why: &str| {
        sb.write_config(&config(run));
        let r = sb.offsite(&["--json", "backup"]);
        assert_eq!(r.code, 1, "{r:?}");
        let error = r.json()["error"].as_str().unwrap_or("").to_string();
        assert!(error.contains(why), "{why}: {r:?}");
        assert!(complete_backups(&sb, "nas").is_empty());
    };
    fails(
        "(echo 'pg_dump: error: database nosuchdb does not exist' >&2; exit 1) | zstd -q",
        "nosuchdb",
    );
    // A dump that succeeds but writes nothing is no backup either.
    fails("true", "not one byte");

    sb.write_config(&config(
        "(echo 'warning: line one' >&2; echo 'warning: server is older' >&2; printf data) | zstd -q",
    ));
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let stderr = &r.json()["stderr"][0];
    assert_eq!(stderr["command"], "source command", "{r:?}");
    assert!(
        stderr["tail"]
            .as_str()
            .unwrap_or("")
            .contains("server is older"),
        "{r:?}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let h = sb.offsite(&["backup"]);
    assert_eq!(h.code, 0, "{h:?}");
    assert!(h.stdout.contains("server is older"), "{h:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let v = sb.offsite(&["-v", "backup"]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(
        v.stderr.contains("warning: line one") && v.stderr.contains("warning: server is older"),
        "-v shows every line: {v:?}"
    );
}

/// offsite as a user that is not root (nobody): one file it may not read
/// fails the backup, naming the file and what to do; with
/// on_unreadable = "skip" the file is left out and reported, and the rest
/// restores; a command's run_as is refused, since only root can.
#[test]
fn as_a_non_root_user_an_unreadable_file_fails_or_is_skipped_and_run_as_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new(
        "as_a_non_root_user_an_unreadable_file_fails_or_is_skipped_and_run_as_is_refused",
    );
    write(&sb.path("src/readable.dat"), &noise(10_000, 1));
    write(&sb.path("src/secret.key"), b"root only");
    let nas = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";
    sb.config_dir_job("", &["nas"], nas);
    // Everything belongs to nobody but the one file root keeps to itself.
    let nobody = 65534;
    for e in walkdir::WalkDir::new(&sb.root) {
        let e = e.expect("walk");
        std::os::unix::fs::chown(e.path(), Some(nobody), Some(nobody)).expect("chown");
    }
    std::os::unix::fs::chown(sb.path("src/secret.key"), Some(0), Some(0)).expect("chown");
    fs::set_permissions(sb.path("src/secret.key"), fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let as_nobody = |args: &[&str]| {
        Run::from(
            std::process::Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .arg(bin())
                .arg("--config")
                .arg(sb.config_path())
                .args(args)
                .env_remove("OFFSITE_CONFIG")
                .output()
                .expect("setpriv"),
        )
    };
    let r = as_nobody(&["backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("secret.key") && r.stdout.contains("on_unreadable = \"skip\""),
        "{r:?}"
    );
    assert!(complete_backups(&sb, "nas").is_empty());

    let text = fs::read_to_string(sb.config_path()).expect("config");
    fs::write(
        sb.config_path(),
        text.replace(
            "destinations = [\"nas\"]",
            "destinations = [\"nas\"]\non_unreadable = \"skip\"",
        ),
    )
    .expect("config");
    let r = as_nobody(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.json()["unreadable"].to_string().contains("secret.key"),
        "{r:?}"
    );
    let to = sb.path("restored");
    let r = as_nobody(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(to.join("readable.dat").is_file() && !to.join("secret.key").exists());

    fs::write(
        sb.config_path(),
        "[staging]\ndir = \"staging\"\nmin_free = \"1MiB\"\n\n[[job]]\nname = \"db\"\nsource = { kind = \"command\", run = \"echo x\", output = \"x\", run_as = \"postgres\" }\ndestinations = [\"nas\"]\n\n[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    )
    .expect("config");
    let r = as_nobody(&["backup"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("only root can run a command as another user"),
        "{r:?}"
    );
}

/// A command run as another user (`run_as`) gets that user's identity,
/// home and its own writable stage folder, and none of the variables
/// offsite reads its destinations' secrets from.
#[test]
fn a_command_run_as_another_user_gets_no_destination_secret() {
    let sb = Sandbox::new("a_command_run_as_another_user_gets_no_destination_secret");
    sb.write_config(
        "[staging]\ndir = \"staging\"\nmin_free = \"1MiB\"\n\n[[job]]\nname = \"db\"\nsource = { kind = \"command\", run = \"id -un > $OFFSITE_STAGE_DIR/who; env > $OFFSITE_STAGE_DIR/env\", run_as = \"nobody\" }\ndestinations = [\"nas\", \"ftp\"]\n\n[destination.nas]\nkind = \"path\"\npath = \"dest\"\n\n[destination.ftp]\nkind = \"ftp\"\nhost = \"127.0.0.1\"\nport = 1\nuser = \"u\"\npassword_env = \"FTP_SECRET_VAR\"\npath = \"/\"\n",
    );
    let r = Run::from(
        sb.command(&["--json", "backup", "--no-upload"])
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-do-not-pass")
            .env("FTP_SECRET_VAR", "ftp-password-do-not-pass")
            .env("HARMLESS_SETTING", "passed")
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let staged = fs::read_dir(sb.path("staging/db"))
        .expect("staging")
        .flatten()
        .find(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .expect("a staged backup");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("cat \"$1\"/vol-*.tar.zst | zstd -dc | tar -xO")
        .arg("sh")
        .arg(staged.path())
        .output()
        .expect("read the volume");
    let text = String::from_utf8_lossy(&out.stdout);
    // The archive holds `env`, then `who`.
    assert!(text.ends_with("nobody\n"), "{text}");
    assert!(
        text.contains("USER=nobody") && text.contains("HARMLESS_SETTING=passed"),
        "{text}"
    );
    assert!(
        !text.contains("aws-secret-do-not-pass") && !text.contains("ftp-password-do-not-pass"),
        "no secret reaches the other user: {text}"
    );
}
