//! `offsite daemon`: seconds-level schedules, SIGTERM, catch-up of a missed
//! run, one daemon per staging folder, and `status` showing the next runs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";

/// A running daemon whose JSON Lines are collected as they come.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(sb: &Sandbox) -> Daemon {
        Daemon::start_with(sb, &[])
    }

    /// [`Daemon::start`] with environment variables set.
    fn start_with(sb: &Sandbox, env: &[(&str, &str)]) -> Daemon {
        let mut child = sb
            .command(&["--json", "daemon"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start daemon");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                sink.lock().expect("lines").push(v);
            }
        });
        Daemon {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|v| v["event"] == kind)
            .cloned()
            .collect()
    }

    /// SIGTERM, then the exit code; fails if it takes over 30 s.
    fn stop(mut self) -> (i32, Vec<Value>) {
        terminate(self.child.id());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().expect("lines").clone();
        (status.code().unwrap_or(-1), lines)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_seconds_schedule_runs_twice_within_ten_seconds_and_sigterm_stops_it() {
    let sb = Sandbox::new("a_seconds_schedule_runs_twice_within_ten_seconds_and_sigterm_stops_it");
    write(&sb.path("src/data.bin"), &noise(200_000, 1));
    sb.config_dir_job(
        "schedule = { full = \"*/3 * * * * *\", incremental = \"*/1 * * * * *\", timezone = \"UTC\" }",
        &["nas"],
        NAS,
    );
    let d = Daemon::start(&sb);
    // The limit is the assertion: wait_for fails the test past ten seconds.
    wait_for("two runs", Duration::from_secs(10), || {
        d.events("ran").len() >= 2
    });
    let (code, lines) = d.stop();
    assert_eq!(code, 0, "{lines:#?}");
    for l in &lines {
        crate::json_contract::valid("daemon-line", l);
    }
    assert_eq!(lines.first().map(|v| &v["event"]), Some(&"started".into()));
    assert_eq!(lines.last().map(|v| &v["event"]), Some(&"stopped".into()));
    let runs: Vec<&Value> = lines.iter().filter(|v| v["event"] == "ran").collect();
    for r in &runs {
        // A run caught by the stop may end "interrupted"; every other one is ok.
        assert!(r["status"] == "ok" || r["status"] == "interrupted", "{r:#}");
    }
    let ok = runs.iter().filter(|r| r["status"] == "ok").count();
    assert!(ok >= 2, "{lines:#?}");
    assert!(complete_backups(&sb, "nas").len() >= 2);

    // The chain restores, and status shows the runs and the next slots.
    let to = sb.path("restored");
    let r = sb.offsite(&["restore", "--job", "db", "--to", to.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
    let r = sb.offsite(&["--json", "status"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["daemon"]["running"], false);
    let job = &j["jobs"][0];
    assert!(job["schedule"]["full"]["next"].is_string(), "{job:#}");
    assert_eq!(job["schedule"]["incremental"]["cron"], "*/1 * * * * *");
    assert!(job["status"]["last_full"]["backup"].is_string(), "{job:#}");
}

fn rfc3339(text: &str) -> jiff::Timestamp {
    text.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

fn missed_run_config(sb: &Sandbox, catch_up: bool) {
    write(&sb.path("src/data.bin"), &noise(10_000, 2));
    sb.config_dir_job(
        &format!(
            "schedule = {{ full = \"0 3 * * *\", catch_up = {catch_up}, timezone = \"UTC\" }}"
        ),
        &["nas"],
        NAS,
    );
    // The daemon last handled the schedule two days ago: at least one 03:00 was missed.
    let then = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48);
    write(
        &sb.path("staging/db/schedule.json"),
        format!("{{\"handled\": {{\"full\": \"{then}\"}}}}").as_bytes(),
    );
}

#[test]
fn a_run_missed_while_down_runs_once_at_start() {
    let sb = Sandbox::new("a_run_missed_while_down_runs_once_at_start");
    missed_run_config(&sb, true);
    let d = Daemon::start(&sb);
    wait_for(
        "the caught-up run and the wait after it",
        Duration::from_secs(30),
        || !d.events("waiting").is_empty(),
    );
    // After the run the daemon sleeps until the next 03:00: the missed days
    // are handled, nothing else is due now.
    let ran = d.events("ran");
    let waiting = d.events("waiting");
    let until = waiting[0]["until"].as_str().expect("a next slot");
    let ran_at = ran[0]["started_at"].as_str().expect("started_at");
    assert!(until.ends_with("T03:00:00Z"), "{waiting:#?}");
    assert!(rfc3339(until) > rfc3339(ran_at), "{ran:#?} {waiting:#?}");
    let (code, lines) = d.stop();
    assert_eq!(code, 0, "{lines:#?}");
    let runs: Vec<&Value> = lines.iter().filter(|v| v["event"] == "ran").collect();
    assert_eq!(runs.len(), 1, "two missed days run once: {lines:#?}");
    assert_eq!(runs[0]["task"], "full");
    assert_eq!(runs[0]["late"], true);
    assert_eq!(runs[0]["status"], "ok");
    assert_eq!(complete_backups(&sb, "nas").len(), 1);
}

#[test]
fn without_catch_up_a_missed_run_is_skipped_and_said() {
    let sb = Sandbox::new("without_catch_up_a_missed_run_is_skipped_and_said");
    missed_run_config(&sb, false);
    let d = Daemon::start(&sb);
    wait_for("the skip", Duration::from_secs(30), || {
        !d.events("skipped").is_empty()
    });
    let (code, lines) = d.stop();
    assert_eq!(code, 0, "{lines:#?}");
    assert!(lines.iter().all(|v| v["event"] != "ran"), "{lines:#?}");
    let skipped = lines
        .iter()
        .find(|v| v["event"] == "skipped")
        .expect("skip");
    assert!(
        skipped["reason"]
            .as_str()
            .is_some_and(|r| r.contains("catch_up = false")),
        "{skipped:#}"
    );
    assert!(complete_backups(&sb, "nas").is_empty());
}

#[test]
fn one_daemon_per_staging_folder() {
    let sb = Sandbox::new("one_daemon_per_staging_folder");
    write(&sb.path("src/a"), b"a");
    sb.config_dir_job("schedule = { full = \"0 3 * * *\" }", &["nas"], NAS);
    let first = Daemon::start(&sb);
    wait_for("the first daemon to watch", Duration::from_secs(30), || {
        !first.events("watching").is_empty()
    });
    let r = sb.offsite(&["daemon"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("another offsite daemon")
            && r.stderr.contains(&first.child.id().to_string()),
        "{r:?}"
    );
    let r = sb.offsite(&["status"]);
    assert!(
        r.stdout
            .contains(&format!("daemon: running (pid {})", first.child.id())),
        "{r:?}"
    );
    let (code, _) = first.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_daemon_without_any_schedule_is_a_configuration_error() {
    let sb = Sandbox::new("a_daemon_without_any_schedule_is_a_configuration_error");
    sb.config_dir_job("", &["nas"], NAS);
    let r = sb.offsite(&["daemon"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no job has a schedule"), "{r:?}");
}

#[test]
fn a_damaged_schedule_state_stops_the_daemon_at_once() {
    let sb = Sandbox::new("a_damaged_schedule_state_stops_the_daemon_at_once");
    write(&sb.path("src/a"), b"a");
    // Two jobs: the healthy one must not keep the daemon running while the other never runs.
    sb.config_dir_job(
        "schedule = { full = \"0 3 * * *\" }\n\n[[job]]\nname = \"other\"\nsource = { kind = \"dir\", path = \"src\" }\ndestinations = [\"nas\"]\nschedule = { full = \"0 4 * * *\" }",
        &["nas"],
        NAS,
    );
    write(&sb.path("staging/db/schedule.json"), b"{ half a file");
    let mut child = sb
        .command(&["daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the daemon kept running with a job it cannot schedule");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("schedule.json") && stderr.contains("delete it"),
        "{stderr}"
    );
}

/// A cluster job's scheduled run belongs to the set of its slot: every
/// member's run of one slot joins the same set, however late it starts.
#[test]
fn a_cluster_member_backs_up_into_the_set_of_its_slot() {
    let sb = Sandbox::new("a_cluster_member_backs_up_into_the_set_of_its_slot");
    write(&sb.path("src/data.bin"), &noise(20_000, 3));
    sb.config_dir_job(
        "schedule = { full = \"*/2 * * * * *\", timezone = \"UTC\" }\ncluster = { members = [\"sn1\", \"sn2\"], member_env = \"MEMBER_NAME\" }",
        &["nas"],
        NAS,
    );
    let d = Daemon::start_with(&sb, &[("MEMBER_NAME", "sn2")]);
    wait_for("a run", Duration::from_secs(10), || {
        !d.events("ran").is_empty()
    });
    let (_, lines) = d.stop();
    let ran = lines.iter().find(|v| v["event"] == "ran").cloned();
    let ran = ran.expect("a run");
    let slot = ran["slot"].as_str().expect("slot").replace(['-', ':'], "");
    assert_eq!(
        ran["backup"]["backup"],
        format!("{slot}-full-sn2"),
        "{ran:#}"
    );
    assert!(
        sb.path(&format!("dest/db/index/{slot}/sn2.done")).exists(),
        "{ran:#}"
    );
}
