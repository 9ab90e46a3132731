//! The operator's toolbox: shell completions and man pages generated from
//! the command line's definitions.

use crate::support::*;

/// The commands `offsite --help` lists, parsed from its output.
fn listed_commands() -> Vec<String> {
    let out = std::process::Command::new(bin())
        .arg("--help")
        .output()
        .expect("run offsite --help");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let section = help
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands section")
        .split("\n\n")
        .next()
        .expect("its lines");
    section
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Completions for bash, zsh and fish and the man pages are generated from
/// the command line's definitions: each names every command; the bash
/// script parses; `man --out` writes a page per command.
#[test]
fn completions_and_man_pages_name_every_command() {
    let commands = listed_commands();
    assert!(commands.len() >= 14, "{commands:?}");
    let sb = Sandbox::new("completions_and_man_pages");
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(bin())
            .args(["completions", shell])
            .output()
            .expect("run");
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for c in &commands {
            assert!(script.contains(c.as_str()), "{shell} completion lacks {c}");
        }
        if shell == "bash" {
            let file = sb.path("offsite.bash");
            std::fs::write(&file, script.as_bytes()).expect("write");
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&file)
                .status()
                .expect("bash -n");
            assert!(check.success(), "the bash completion does not parse");
        }
    }
    let dir = sb.path("man");
    let r = Run::from(
        std::process::Command::new(bin())
            .args(["man", "--out", dir.to_str().expect("utf8")])
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let main = std::fs::read_to_string(dir.join("offsite.1")).expect("offsite.1");
    assert!(
        main.starts_with(".ie") || main.contains(".TH offsite 1"),
        "roff: {main:.200}"
    );
    for c in &commands {
        assert!(main.contains(c.as_str()), "offsite.1 does not name {c}");
        let page = std::fs::read_to_string(dir.join(format!("offsite-{c}.1")))
            .unwrap_or_else(|e| panic!("offsite-{c}.1: {e}"));
        assert!(
            page.contains(&format!(".TH offsite-{c} 1")),
            "offsite-{c}.1: {page:.200}"
        );
    }
}

/// The systemd units in contrib/systemd pass `systemd-analyze verify` (with
/// offsite's man pages installed, which their Documentation= names, and
/// ExecStart= pointing at the built binary) without a single warning, and
/// carry the hardening and the daemon's KillMode the README explains.
#[test]
fn the_systemd_units_verify_and_are_hardened() {
    let sb = Sandbox::new("the_systemd_units_verify");
    let man = sb.path("man/man1");
    let r = Run::from(
        std::process::Command::new(bin())
            .args(["man", "--out", man.to_str().expect("utf8")])
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let units = [
        "offsite.service",
        "offsite-backup.service",
        "offsite-backup.timer",
    ];
    let mut paths = Vec::new();
    for u in units {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("contrib/systemd")
                .join(u),
        )
        .expect("a unit");
        if u.ends_with(".service") {
            for needed in [
                "User=offsite",
                "ProtectSystem=strict",
                "ReadWritePaths=/var/lib/offsite",
                "NoNewPrivileges=true",
                "KillMode=mixed",
                "ExecStart=/usr/local/bin/offsite --config /etc/offsite/offsite.toml",
            ] {
                assert!(text.contains(needed), "{u} lacks {needed}");
            }
        }
        let path = sb.path(u);
        std::fs::write(&path, text.replace("/usr/local/bin/offsite", bin())).expect("write");
        paths.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .env("MANPATH", sb.path("man"))
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// The metrics file, parsed by Prometheus' own parser (python3
/// prometheus_client): every sample as (name, labels, value).
fn metrics(path: &std::path::Path) -> Vec<(String, serde_json::Value, f64)> {
    let script = "import json, sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\nprint(json.dumps([[s.name, s.labels, s.value] for f in parse(open(sys.argv[1]).read()) for s in f.samples]))";
    // Debian's python3, which its python3-prometheus-client is for (a
    // python3 earlier on PATH, say pyenv's, does not see it).
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 with prometheus_client (Debian: python3-prometheus-client)");
    assert!(
        out.status.success(),
        "the parser refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, serde_json::Value, f64)> =
        serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    rows
}

/// The value of `name` with these labels.
fn value(
    rows: &[(String, serde_json::Value, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    rows.iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| *v)
}

/// metrics_file: written after each run (successful, partial, failed) and
/// each `status --check`, in node_exporter's textfile format, which
/// Prometheus' parser reads; the values follow the runs.
#[test]
fn the_metrics_file_follows_each_run_and_parses() {
    let sb = Sandbox::new("the_metrics_file_follows_each_run");
    write(&sb.path("src/data.bin"), &noise(50_000, 9));
    std::fs::create_dir_all(sb.path("metrics")).expect("mkdir");
    let tables = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n\n[destination.gone]\nkind = \"path\"\npath = \"dest-gone\"\n";
    let config = |dests: &[&str]| {
        sb.config_dir_job("", dests, tables);
        let text = std::fs::read_to_string(sb.config_path()).expect("config");
        sb.write_config(&format!("metrics_file = \"metrics/offsite.prom\"\n{text}"));
    };
    let file = sb.path("metrics/offsite.prom");
    let job = [("job", "db")];
    let nas = [("job", "db"), ("destination", "nas")];

    config(&["nas"]);
    assert_eq!(sb.offsite(&["backup"]).code, 0);
    let m = metrics(&file);
    assert_eq!(
        value(&m, "offsite_last_run_success", &job),
        Some(1.0),
        "{m:?}"
    );
    assert_eq!(
        value(&m, "offsite_destination_last_upload_success", &nas),
        Some(1.0)
    );
    assert!(value(&m, "offsite_destination_last_upload_sent_bytes", &nas).is_some_and(|b| b > 0.0));
    assert!(
        value(
            &m,
            "offsite_last_backup_staged_bytes",
            &[("job", "db"), ("kind", "full")]
        ) == Some(50_000.0),
        "{m:?}"
    );
    assert!(
        value(&m, "offsite_destination_newest_backup_age_seconds", &nas)
            .is_some_and(|a| (0.0..600.0).contains(&a))
    );
    assert_eq!(value(&m, "offsite_job_problems", &job), Some(0.0));

    // Partial: a destination whose folder does not exist fails.
    config(&["nas", "gone"]);
    assert_eq!(sb.offsite(&["backup"]).code, 3);
    let m = metrics(&file);
    assert_eq!(
        value(&m, "offsite_last_run_success", &job),
        Some(0.0),
        "{m:?}"
    );
    assert_eq!(
        value(
            &m,
            "offsite_destination_last_upload_success",
            &[("job", "db"), ("destination", "gone")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "offsite_destination_last_upload_success", &nas),
        Some(1.0)
    );
    assert!(
        value(&m, "offsite_job_problems", &job).is_some_and(|p| p >= 1.0),
        "{m:?}"
    );

    // Failed: the source is gone.
    config(&["nas"]);
    std::fs::remove_dir_all(sb.path("src")).expect("rm src");
    assert_eq!(sb.offsite(&["backup"]).code, 1);
    let m = metrics(&file);
    assert_eq!(
        value(&m, "offsite_last_run_success", &job),
        Some(0.0),
        "{m:?}"
    );
    // The last good backup stays in view.
    assert!(
        value(
            &m,
            "offsite_last_success_timestamp_seconds",
            &[("job", "db"), ("kind", "full")]
        )
        .is_some()
    );

    // status --check writes it too.
    std::fs::remove_file(&file).expect("rm");
    assert_eq!(sb.offsite(&["status", "--check"]).code, 1);
    assert!(!metrics(&file).is_empty());
}

/// How the test's HTTP server answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Hang,
    Error500,
}

/// A local HTTP server that records each request's line and body.
struct Pings {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Pings {
    fn start(answer: Answer) -> Pings {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    let _ = reader.read_exact(&mut body);
                    log.lock().expect("log").push((
                        line.trim().to_string(),
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                    match answer {
                        Answer::Hang => std::thread::sleep(std::time::Duration::from_secs(30)),
                        Answer::Ok => {
                            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK");
                        }
                        Answer::Error500 => {
                            let _ = conn.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                        }
                    }
                });
            }
        });
        Pings { port, seen }
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().expect("log").clone()
    }
}

/// Notifications: a healthchecks.io-style URL gets /start, then the
/// success or /fail with the summary as body, and a command gets the JSON
/// report on stdin, on the outcomes chosen. A server that hangs or answers
/// 500 is retried, reported in the notes, and changes neither the result
/// nor the exit code; the URL's secret path is never printed.
#[test]
fn notifications_reach_a_url_and_a_command_and_never_change_the_result() {
    let sb = Sandbox::new("notifications");
    write(&sb.path("src/data.bin"), &noise(10_000, 4));
    let setup = |port: u16, extra: &str| {
        sb.config_dir_job(
            &format!("notify = {{ on = [\"success\", \"failure\", \"partial\"], url = \"http://127.0.0.1:{port}/secret-uuid-42\", command = \"cat > notified-$OFFSITE_EVENT.json\", timeout = \"1s\", retries = 1{extra} }}"),
            &["nas"],
            "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
        );
    };
    let good = Pings::start(Answer::Ok);
    setup(good.port, "");
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let seen = good.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, "POST /secret-uuid-42/start HTTP/1.1");
    assert_eq!(seen[1].0, "POST /secret-uuid-42 HTTP/1.1");
    assert!(
        seen[1].1.contains("offsite job db") && seen[1].1.contains(": ok"),
        "{seen:?}"
    );
    let report =
        std::fs::read_to_string(sb.path("notified-success.json")).expect("the command ran");
    let report: serde_json::Value =
        serde_json::from_str(&report).expect("the JSON report on stdin");
    assert_eq!(report["status"], "ok");

    // A failed run: /fail, with why.
    std::fs::rename(sb.path("src"), sb.path("src-away")).expect("hide the source");
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    let seen = good.seen();
    assert_eq!(
        seen.last().map(|s| s.0.as_str()),
        Some("POST /secret-uuid-42/fail HTTP/1.1")
    );
    assert!(
        seen.last().is_some_and(|s| s.1.contains("failed")),
        "{seen:?}"
    );
    assert!(sb.path("notified-failure.json").exists());
    std::fs::rename(sb.path("src-away"), sb.path("src")).expect("bring it back");

    // A server that hangs, then one that answers 500: retried, reported, and
    // the backup is still ok; the secret path is printed nowhere.
    for answer in [Answer::Hang, Answer::Error500] {
        let bad = Pings::start(answer);
        setup(bad.port, "");
        let r = sb.offsite(&["--json", "backup"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.json()["status"], "ok", "{r:?}");
        let notes = r.json()["notes"].to_string();
        assert!(
            notes.contains("ping to http://127.0.0.1") && notes.contains("tried 2 times"),
            "{r:?}"
        );
        assert!(
            !r.stdout.contains("secret-uuid") && !r.stderr.contains("secret-uuid"),
            "{r:?}"
        );
        // Each of the start and success pings: one try and one retry.
        assert_eq!(bad.seen().len(), 4, "{:?}", bad.seen());
    }
}

/// `status --check` sends a `stale` notification for a job whose
/// destinations no backup reached (or whose newest is too old).
#[test]
fn status_check_notifies_a_stale_job() {
    let sb = Sandbox::new("notify_stale");
    write(&sb.path("src/data.bin"), &noise(1_000, 5));
    sb.config_dir_job(
        "notify = { on = [\"stale\"], command = \"cat > stale-$OFFSITE_JOB.json\" }",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    let r = sb.offsite(&["status", "--check"]);
    assert_eq!(r.code, 1, "{r:?}");
    let sent = std::fs::read_to_string(sb.path("stale-db.json")).expect("notified");
    let job: serde_json::Value = serde_json::from_str(&sent).expect("the job's report");
    assert_eq!(job["job"], "db");
    assert_eq!(job["problems"][0]["status"], "never", "{job:#}");
}

/// The field names of every `struct NAME {` in `text` whose name `pick`
/// accepts (a serde `rename` replaces a field's name).
fn struct_fields(text: &str, pick: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut rename: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t
            .strip_prefix("struct ")
            .or_else(|| t.strip_prefix("pub struct "))
        {
            let name = rest.split([' ', '{', '<']).next().unwrap_or("");
            inside = pick(name) && t.ends_with('{');
            continue;
        }
        if !inside {
            continue;
        }
        if t == "}" {
            inside = false;
            continue;
        }
        if let Some(r) = t.split("rename = \"").nth(1) {
            rename = r.split('"').next().map(str::to_string);
            continue;
        }
        if t.starts_with("//") || t.starts_with("#[") {
            continue;
        }
        if let Some((field, _)) = t.trim_start_matches("pub ").split_once(':') {
            out.push(rename.take().unwrap_or_else(|| field.trim().to_string()));
        }
    }
    out
}

/// The docs a newcomer navigates: every configuration key the code accepts
/// is in the configuration reference, every command in the commands page,
/// and every relative link (file and anchor) of the README and docs/ resolves.
#[test]
fn the_docs_name_every_key_and_command_and_their_links_resolve() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let reference = read(&root.join("docs/configuration.md"));
    let mut keys = struct_fields(&read(&root.join("src/config.rs")), |n| n.starts_with("Raw"));
    for e in std::fs::read_dir(root.join("backends/src")).expect("backends") {
        let settings = e.expect("entry").path().join("settings.rs");
        if settings.exists() {
            keys.extend(struct_fields(&read(&settings), |n| n.ends_with("Settings")));
        }
    }
    keys.extend(offsite::config::COMMON_KEYS.map(String::from));
    assert!(keys.len() > 60, "{keys:?}");
    // A key is named when it stands as a word of its own.
    let word = |k: &str| {
        reference.match_indices(k).any(|(at, _)| {
            let before = reference[..at].chars().next_back();
            let after = reference[at + k.len()..].chars().next();
            let edge = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            edge(before) && edge(after)
        })
    };
    let missing: Vec<&String> = keys.iter().filter(|k| !word(k)).collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not name {missing:?}"
    );

    let commands_page = read(&root.join("docs/commands.md"));
    for c in listed_commands() {
        assert!(
            commands_page.contains(&format!("  {c} "))
                || commands_page.contains(&format!("  {c}\n")),
            "docs/commands.md does not list {c}"
        );
    }

    let mut pages = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).expect("docs") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    let anchors = |text: &str| -> Vec<String> {
        let mut fenced = false;
        let mut out = Vec::new();
        for l in text.lines() {
            if l.starts_with("```") {
                fenced = !fenced;
            }
            if !fenced && l.starts_with('#') {
                let h = l.trim_start_matches('#').trim().to_lowercase();
                let slug: String = h
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect();
                out.push(slug);
            }
        }
        out
    };
    for page in &pages {
        let text = read(page);
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or("");
            if target.starts_with("http") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let dest = if file.is_empty() {
                page.clone()
            } else {
                page.parent().expect("dir").join(file)
            };
            assert!(
                dest.exists(),
                "{}: link {target} leads nowhere",
                page.display()
            );
            if !anchor.is_empty() && dest.extension().is_some_and(|x| x == "md") {
                assert!(
                    anchors(&read(&dest)).iter().any(|a| a == anchor),
                    "{}: no #{anchor} in {}",
                    page.display(),
                    dest.display()
                );
            }
        }
    }
}

/// The README's first backup, as a newcomer types it: its configuration,
/// then check, backup, list, verify and restore, each exit 0, and the
/// restored folder the same as the source.
#[test]
fn the_readme_first_backup_works_as_written() {
    let sb = Sandbox::new("readme_first_backup");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let guide = &readme[readme.find("## A first backup").expect("the guide")..];
    let config = guide
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its configuration");
    std::fs::create_dir_all(sb.path("backups")).expect("mkdir");
    write(&sb.path("data/notes.txt"), b"hello\n");
    sb.write_config(config);
    let to = sb.path("restored");
    for args in [
        vec!["check"],
        vec!["backup"],
        vec!["list"],
        vec!["verify"],
        vec![
            "restore",
            "--job",
            "notes",
            "--to",
            to.to_str().expect("utf8"),
        ],
    ] {
        let r = Run::from(
            sb.command(&args)
                .current_dir(&sb.root)
                .output()
                .expect("run"),
        );
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
    }
    assert_same_tree(&sb.path("data"), &to);
}

/// A backup that cannot start (here: its passphrase is not set) still ends
/// in a failure notification, so a start ping is never left alone.
#[test]
fn a_backup_that_cannot_start_notifies_its_failure() {
    let sb = Sandbox::new("notify_cannot_start");
    write(&sb.path("src/data.bin"), &noise(1_000, 6));
    sb.config_dir_job(
        "encryption = { passphrase_env = \"OFFSITE_TEST_UNSET_PASSPHRASE\" }\nnotify = { command = \"cat > failed-$OFFSITE_EVENT.json\" }",
        &["nas"],
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 2, "{r:?}");
    let sent = std::fs::read_to_string(sb.path("failed-failure.json")).expect("notified");
    let report: serde_json::Value = serde_json::from_str(&sent).expect("JSON");
    assert_eq!(report["status"], "failed", "{report:#}");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("OFFSITE_TEST_UNSET_PASSPHRASE")),
        "{report:#}"
    );
}
