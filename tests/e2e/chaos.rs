//! Crash safety: SIGKILL at pseudo-random moments across staging and upload,
//! to a folder, SFTP and S3 at once, then check after every kill that no
//! destination shows a backup as complete unless every volume is there and
//! whole, and at the end that everything resumes and restores byte-identical.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Kills in the campaign; each one interrupts all three destinations.
const KILLS: usize = 21;
/// The seed of the kill moments (printed, so a failure can be replayed).
const SEED: u64 = 0x5eed_0ff5_17e0;

/// Milliseconds to wait before the next kill: 0 to 1,500, spread so some
/// kills land while staging and others during the uploads.
fn delays() -> impl Iterator<Item = u64> {
    let mut x = SEED;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 1500
    })
}

#[test]
fn kills_at_random_moments_never_show_a_partial_backup_as_complete() {
    let sb = Sandbox::new("kills_at_random_moments_never_show_a_partial_backup_as_complete");
    // Incompressible data in several volumes, so staging takes a moment and
    // every upload is several parts long at the paced rate.
    write(
        &sb.path("src/chunks/chunk-000000.000000"),
        &noise(3 << 20, 71),
    );
    write(
        &sb.path("src/chunks/chunk-000001.000000"),
        &noise(2 << 20, 72),
    );
    write(&sb.path("src/index/a.idx"), &noise(200_000, 73));
    write(&sb.path("src/writer.chk"), b"0000000000000777");
    let pace = "bwlimit = \"6MiB\"\npart_size = \"1MiB\"\n";
    let tables = format!(
        "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n{pace}\n{}{pace}\n{}{pace}",
        crate::sftp::sftp_table(&sb, &crate::sftp::key_auth(), "SFTP_KNOWN_HOSTS"),
        crate::s3::s3_table(&sb, ""),
    );
    // part_size appears twice in the S3 table otherwise; its own 5 MiB minimum wins.
    let tables = tables.replace("part_size = \"5MiB\"\n", "");
    // Pruning after each backup keeps the work per round flat, and puts
    // deletions among what the kills interrupt.
    sb.config_dir_job(
        "volume_size = \"1MiB\"\nretention = { keep_last = 2 }",
        &["nas", "sftp", "s3"],
        &tables,
    );
    let m = crate::s3::moto();
    let aws = [
        ("AWS_ACCESS_KEY_ID", m["MOTO_ADMIN_ACCESS_KEY_ID"].clone()),
        (
            "AWS_SECRET_ACCESS_KEY",
            m["MOTO_ADMIN_SECRET_ACCESS_KEY"].clone(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let run = |args: &[&str]| {
        let mut c = sb.command(args);
        c.envs(aws.iter().map(|(k, v)| (*k, v.as_str())));
        Run::from(c.output().expect("run offsite"))
    };
    eprintln!("kill campaign: {KILLS} kills, seed {SEED:#x}");

    let mut killed_running = 0;
    for (round, delay) in delays().take(KILLS).enumerate() {
        let mut c = sb.command(&["--json", if round % 3 == 2 { "upload" } else { "backup" }]);
        c.envs(aws.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("start offsite");
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(delay) {
            if child.try_wait().expect("poll").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.try_wait().expect("poll").is_none() {
            killed_running += 1;
        }
        let _ = child.kill();
        let _ = child.wait();

        // After every kill: the newest backup each destination lists as
        // complete is whole (every volume there, every hash right); a
        // manifest shipped too early would make it this one.
        // (A destination with no complete backup yet is fine.)
        let r = run(&["--json", "verify", "--backup", "latest"]);
        let j = r.json();
        let whole = j["verified"]
            .as_array()
            .expect("verified")
            .iter()
            .all(|v| v["ok"] == true);
        let only_none_yet = j["errors"].as_array().expect("errors").iter().all(|e| {
            e.as_str()
                .is_some_and(|e| e.contains("has no complete backup"))
        });
        assert!(
            whole && only_none_yet,
            "round {round} (killed after {delay} ms): {r:?}"
        );
    }
    assert!(
        killed_running >= KILLS * 2 / 3,
        "most kills must land on a running process: {killed_running} of {KILLS}"
    );

    // Everything staged resumes and completes; every destination restores it.
    let r = run(&["--json", "upload"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    // Every backup still listed, not only the newest, is whole.
    let r = run(&["--json", "verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&["--json", "verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    crate::remote::restores_from_each(&sb, &run, &["nas", "sftp", "s3"]);
}
