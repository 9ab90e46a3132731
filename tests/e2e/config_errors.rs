//! Bad configurations and command lines: exit 2, one clear message, nothing written.

use std::fs;

use crate::support::*;

#[test]
fn staging_inside_the_source_is_refused_before_anything_is_written() {
    let sb = Sandbox::new("staging_inside_the_source_is_refused_before_anything_is_written");
    write(&sb.path("src/a.dat"), b"data");
    sb.write_config(
        "[staging]\ndir = \"src/offsite-staging\"\n[[job]]\nname = \"db\"\nsource = { kind = \"dir\", path = \"src\" }\ndestinations = [\"nas\"]\n[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 2, "{r:?}");
    let src = fs::canonicalize(sb.path("src")).expect("canonical");
    assert!(
        r.stderr
            .contains(&src.join("offsite-staging").display().to_string()),
        "names the staging folder: {r:?}"
    );
    assert!(
        r.stderr.contains(&format!("({})", src.display())),
        "names the source: {r:?}"
    );
    assert!(
        !sb.path("src/offsite-staging").exists(),
        "nothing is written"
    );
    assert_eq!(fs::read_dir(sb.path("dest")).expect("dest").count(), 0);

    // The other way round too: a source inside the staging folder.
    sb.write_config(
        "[staging]\ndir = \".\"\n[[job]]\nname = \"db\"\nsource = { kind = \"dir\", path = \"src\" }\ndestinations = [\"nas\"]\n[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .expect("error")
            .contains("contains the source"),
        "{r:?}"
    );
}

#[test]
fn a_config_error_names_the_file_the_line_and_the_key() {
    let sb = Sandbox::new("a_config_error_names_the_file_the_line_and_the_key");
    sb.write_config(
        "[staging]\ndir = \"staging\"\n\n[[job]]\nname = \"db\"\nsource = { kind = \"dir\", path = \"src\" }\ndestinations = [\"nas\"]\nvolume_size = \"12 parsecs\"\n\n[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
    );
    let r = sb.offsite(&["backup"]);
    assert_eq!(r.code, 2, "{r:?}");
    let file = sb.config_path().display().to_string();
    assert!(
        r.stderr.contains(&format!("{file}:8:")),
        "file and line: {r:?}"
    );
    assert!(
        r.stderr.contains("job[0].volume_size") && r.stderr.contains("12 parsecs"),
        "key and value: {r:?}"
    );
    assert_eq!(
        r.stderr.trim().lines().count(),
        1,
        "one clear message: {r:?}"
    );
}

#[test]
fn bad_inputs_exit_2_with_one_message() {
    let sb = Sandbox::new("bad_inputs_exit_2_with_one_message");
    let good = "[staging]\ndir = \"staging\"\n[[job]]\nname = \"db\"\nsource = { kind = \"dir\", path = \"src\" }\ndestinations = [\"nas\"]\n[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "unknown key",
            "[staging]\ndir = \"s\"\nsize = 3\n",
            &["list"],
            "unknown field `size`",
        ),
        (
            "unknown destination",
            &good.replace("[\"nas\"]", "[\"nas\", \"tape\"]"),
            &["list"],
            "unknown destination \"tape\"",
        ),
        (
            "missing staging",
            "[[job]]\nname = \"db\"\nsource = { kind = \"command\", run = \"x\" }\ndestinations = []\n",
            &["list"],
            "missing field `staging`",
        ),
        (
            "negative keep_local",
            &good.replace(
                "destinations = [\"nas\"]",
                "destinations = [\"nas\"]\nkeep_local = -1",
            ),
            &["list"],
            "keep_local",
        ),
        (
            "bad part size",
            &good.replace("path = \"dest\"", "path = \"dest\"\npart_size = \"lots\""),
            &["list"],
            "part_size",
        ),
        (
            "empty source path",
            &good.replace("path = \"src\"", "path = \"\""),
            &["list"],
            "source.path",
        ),
        (
            "unknown job",
            good,
            &["backup", "--job", "nope"],
            "no job named \"nope\"",
        ),
        (
            "unknown destination flag",
            good,
            &["list", "--destination", "nope"],
            "not one of job",
        ),
        ("unknown flag", good, &["backup", "--fast"], "--fast"),
        (
            "restore without --to",
            good,
            &["restore", "--job", "db"],
            "--to",
        ),
        ("toml syntax", "[staging\ndir = 1\n", &["list"], "offsite.toml:1"),
        ("an empty file", "", &["list"], "missing field `staging`"),
        (
            "wrong type: a boolean size",
            &good.replace("destinations = [\"nas\"]", "destinations = [\"nas\"]\nvolume_size = true"),
            &["list"],
            "volume_size",
        ),
        (
            "wrong type: destinations as a string",
            &good.replace("destinations = [\"nas\"]", "destinations = \"nas\""),
            &["list"],
            "destinations",
        ),
        (
            "unknown source kind",
            &good.replace("kind = \"dir\", path = \"src\"", "kind = \"tape\""),
            &["list"],
            "tape",
        ),
        (
            "invalid cron",
            &good.replace("destinations = [\"nas\"]", "destinations = [\"nas\"]\nschedule = { full = \"61 2 * * *\" }"),
            &["list"],
            "schedule.full",
        ),
        (
            "unknown time zone",
            &good.replace("destinations = [\"nas\"]", "destinations = [\"nas\"]\nschedule = { full = \"0 2 * * *\", timezone = \"Mars/Base\" }"),
            &["list"],
            "Mars/Base",
        ),
        (
            "unknown compression",
            &good.replace("destinations = [\"nas\"]", "destinations = [\"nas\"]\ncompression = \"gzip:3\""),
            &["list"],
            "compression",
        ),
        (
            "zstd level out of range",
            &good.replace("destinations = [\"nas\"]", "destinations = [\"nas\"]\ncompression = \"zstd:42\""),
            &["list"],
            "1 to 19",
        ),
        (
            "negative retention count",
            &good.replace("destinations = [\"nas\"]", "destinations = [\"nas\"]\nretention = { keep_daily = -1 }"),
            &["list"],
            "keep_daily",
        ),
        (
            "unknown retention rule",
            &good.replace("destinations = [\"nas\"]", "destinations = [\"nas\"]\nretention = { keep_forever = 1 }"),
            &["list"],
            "keep_forever",
        ),
        (
            "empty staging dir",
            &good.replace("dir = \"staging\"", "dir = \"\""),
            &["list"],
            "staging",
        ),
        (
            "staging inside the source",
            &good.replace("dir = \"staging\"", "dir = \"src/staging\""),
            &["backup"],
            "inside",
        ),
        (
            "unknown destination kind",
            &good.replace("kind = \"path\"", "kind = \"tape\""),
            &["list"],
            "unknown destination kind \"tape\"",
        ),
        (
            "destination name with a space",
            &good.replace("[\"nas\"]", "[\"my nas\"]").replace("[destination.nas]", "[destination.\"my nas\"]"),
            &["list"],
            "invalid destination name",
        ),
        (
            "two jobs with one name",
            &good.replace("[destination.nas]", "[[job]]\nname = \"db\"\nsource = { kind = \"dir\", path = \"src\" }\ndestinations = [\"nas\"]\n[destination.nas]"),
            &["list"],
            "\"db\"",
        ),
        (
            "job name with a slash",
            &good.replace("name = \"db\"", "name = \"a/b\""),
            &["list"],
            "a/b",
        ),
        (
            "zero bandwidth",
            &good.replace("path = \"dest\"", "path = \"dest\"\nbwlimit = \"0\""),
            &["list"],
            "bwlimit",
        ),
        (
            "zero concurrency",
            &good.replace("path = \"dest\"", "path = \"dest\"\nconcurrency = 0"),
            &["list"],
            "concurrency",
        ),
        (
            "too many retries",
            &good.replace("path = \"dest\"", "path = \"dest\"\nretries = 21"),
            &["list"],
            "retries must be 0 to 20",
        ),
        (
            "retries as text",
            &good.replace("path = \"dest\"", "path = \"dest\"\nretries = \"many\""),
            &["list"],
            "destination.nas.retries",
        ),
        (
            "unknown destination key, with the common keys named",
            &good.replace("path = \"dest\"", "path = \"dest\"\nretry = 3"),
            &["list"],
            "unknown field `retry`, expected `path`, or a key every destination has: `prefix`, `bwlimit`, `part_size`, `concurrency`, `retries`, `retention`",
        ),
        (
            "s3 without a bucket",
            &good.replace("kind = \"path\"\npath = \"dest\"", "kind = \"s3\"\nbucket = \" \""),
            &["list"],
            "bucket",
        ),
        (
            "sftp without a login",
            &good.replace("kind = \"path\"\npath = \"dest\"", "kind = \"sftp\"\nhost = \"h\"\nuser = \"u\"\npath = \"/b\""),
            &["list"],
            "password_env",
        ),
        (
            "azure with a key written inline",
            &good.replace("kind = \"path\"\npath = \"dest\"", "kind = \"azure\"\naccount = \"acct\"\ncontainer = \"backups\"\naccess_key = \"c2VjcmV0\""),
            &["list"],
            "access_key",
        ),
        (
            "an invalid age recipient",
            &good.replace("destinations = [\"nas\"]", "destinations = [\"nas\"]\nencryption = { recipients = [\"age1nope\"] }"),
            &["list"],
            "invalid age recipient",
        ),
        (
            "a missing encryption passphrase",
            &good.replace("destinations = [\"nas\"]", "destinations = [\"nas\"]\nencryption = { passphrase_env = \"OFFSITE_TEST_UNSET_PASSPHRASE\" }"),
            &["backup"],
            "OFFSITE_TEST_UNSET_PASSPHRASE",
        ),
        (
            "prune --now that is not a time",
            good,
            &["prune", "--now", "yesterday"],
            "--now",
        ),
        (
            "verify --backup with a path in it",
            good,
            &["verify", "--backup", "../etc"],
            "../etc",
        ),
        (
            "policy for a destination that is not s3",
            good,
            &["policy", "s3", "--destination", "nas"],
            "not an S3 destination",
        ),
        (
            "restore with an identity file that is not there",
            good,
            &["restore", "--job", "db", "--to", "out", "--identity", "no-such.key"],
            "no-such.key",
        ),
        ("unknown command", good, &["backupp"], "backupp"),
    ];
    for (what, config, args, needle) in cases {
        sb.write_config(config);
        let r = sb.offsite(args);
        assert_eq!(r.code, 2, "{what}: {r:?}");
        assert!(
            r.stderr.contains(needle),
            "{what}: stderr should contain {needle:?}: {r:?}"
        );
        assert!(!r.stderr.contains("panicked"), "{what}: {r:?}");
    }
}

#[test]
fn a_missing_config_file_says_how_to_make_one() {
    let sb = Sandbox::new("a_missing_config_file_says_how_to_make_one");
    let r = sb.offsite(&["list"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("offsite init"), "{r:?}");
}

#[test]
fn init_writes_an_example_that_parses_and_never_overwrites() {
    let sb = Sandbox::new("init_writes_an_example_that_parses_and_never_overwrites");
    let dir = sb.path("etc");
    let r = std::process::Command::new(bin())
        .arg("init")
        .arg(&dir)
        .output()
        .expect("init");
    assert_eq!(r.status.code(), Some(0), "{r:?}");
    let text = fs::read_to_string(dir.join("offsite.toml")).expect("written");
    assert!(text.contains("[staging]") && text.contains("kind = \"path\""));
    offsite::config::parse(&dir.join("offsite.toml"), &text).expect("the example parses");
    // The commented destinations parse too, once uncommented: every kind the
    // example shows is written the way this version reads it.
    let mut open = false;
    let uncommented: String = text
        .lines()
        .map(|l| {
            open |= l.starts_with("# [destination.");
            match l.strip_prefix("# ") {
                Some(rest) if open => rest.to_string(),
                _ if open && l == "#" => String::new(),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = offsite::config::parse(&dir.join("offsite.toml"), &uncommented)
        .expect("the commented destinations parse");
    for kind in ["s3", "sftp", "ftp", "blob"] {
        assert!(cfg.destinations.contains_key(kind), "{kind} in the example");
    }
    // The SFTP example names its port, as the FTP one does.
    let sftp_table = uncommented
        .split("[destination.sftp]")
        .nth(1)
        .and_then(|t| t.split("[destination.").next())
        .expect("an sftp table");
    assert!(sftp_table.contains("port = 22"), "{sftp_table}");
    let again = std::process::Command::new(bin())
        .arg("init")
        .arg(&dir)
        .output()
        .expect("init");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
