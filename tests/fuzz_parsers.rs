//! Fuzzing of the two parsers that read what a person or a remote store
//! wrote: the configuration (TOML) and the manifest (JSON). Each property
//! feeds thousands of inputs, random text and mutations of a rich valid
//! file, and demands an answer (a value or one error that names the file),
//! never a panic.
//!
//! `make test` runs 2,000 cases per property; `make fuzz` runs more
//! (`OFFSITE_FUZZ_CASES`, see the Makefile) and prints how long it took.

use std::path::Path;

use offsite::config;
use offsite::format::manifest::Manifest;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("OFFSITE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn settings() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The annotated example with every commented destination enabled: most
/// keys this version reads, in one valid file.
fn config_corpus() -> String {
    let text = include_str!("../fixtures/offsite.example.toml");
    let mut open = false;
    text.lines()
        .map(|l| {
            open |= l.starts_with("# [destination.");
            match l.strip_prefix("# ") {
                Some(rest) if open => rest.to_string(),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n[[job]]\nname = \"second\"\nsource = { kind = \"command\", run = \"pg_dump -Fc db\", output = \"db.dump\" }\ndestinations = [\"nas\"]\nretention = { keep_last = 3, keep_daily = 7, min_age = \"1d\" }\nschedule = { full = \"0 2 * * 0\", incremental = \"0 */6 * * *\", prune = \"30 3 * * *\", timezone = \"UTC\" }\nencryption = { recipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"] }\n"
}

const MANIFEST: &str = r#"{
  "format": 1,
  "tool": "offsite 0.1.0",
  "job": "db",
  "id": "20261122T084519Z-incr",
  "kind": "incr",
  "parent": "20261122T084518Z-full",
  "created_at": "2026-11-22T08:45:19Z",
  "source": { "kind": "dir", "description": "/var/lib/db" },
  "compression": { "algorithm": "zstd", "level": 3 },
  "encryption": null,
  "volumes": [
    { "name": "vol-000000.tar.zst", "size": 304336, "sha256": "b9144af4d6c9e56b50e1f602d011b7e0911b85345dbfe57046aa2bcd8705aacb" }
  ],
  "files": [
    { "path": "chunks", "kind": "dir", "size": 0, "mtime": 1795335118, "mtime_nsec": 5, "mode": 493, "uid": 0, "gid": 0, "volume": 0, "backup": "20261122T084519Z-incr" },
    { "path": "chunks/chunk-000000.000000", "kind": "file", "size": 300000, "mtime": 1795335118, "mode": 420, "uid": 0, "gid": 0, "sha256": "aa9144af4d6c9e56b50e1f602d011b7e0911b85345dbfe57046aa2bcd8705aac", "volume": 0, "backup": "20261122T084518Z-full" },
    { "path": "link", "kind": "symlink", "size": 0, "mtime": 1795335118, "mode": 511, "uid": 0, "gid": 0, "target": "chunks/chunk-000000.000000", "volume": 0, "backup": "20261122T084519Z-incr" }
  ],
  "deleted": ["writer.chk"],
  "changed": [],
  "stats": { "files": 3, "bytes": 300000, "stored_bytes": 304336, "seconds": 0.01 }
}"#;

/// Tokens that make mutations land on syntax rather than only in strings.
const TOKENS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    "\n",
    "#",
    ".",
    "-1",
    "0",
    "1e309",
    "true",
    "null",
    "\"../\"",
    "\"/\"",
    "\\u0000",
    "ü",
    "[[job]]",
    "kind",
    "\"s3\"",
    "18446744073709551616",
];

/// An edit of a text: at a position (a fraction of its length), delete some
/// bytes, insert a token, or duplicate a slice.
#[derive(Debug, Clone)]
enum Edit {
    Delete(f64, usize),
    Insert(f64, usize),
    Duplicate(f64, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            (0.0..1.0f64, 1..40usize).prop_map(|(a, n)| Edit::Delete(a, n)),
            (0.0..1.0f64, 0..TOKENS.len()).prop_map(|(a, t)| Edit::Insert(a, t)),
            (0.0..1.0f64, 1..200usize).prop_map(|(a, n)| Edit::Duplicate(a, n)),
        ],
        1..6,
    )
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        let at = |f: f64, len: usize| ((f * len as f64) as usize).min(len);
        match *e {
            Edit::Delete(f, n) => {
                let a = at(f, bytes.len());
                let b = (a + n).min(bytes.len());
                bytes.drain(a..b);
            }
            Edit::Insert(f, t) => {
                let a = at(f, bytes.len());
                bytes.splice(a..a, TOKENS[t].bytes());
            }
            Edit::Duplicate(f, n) => {
                let a = at(f, bytes.len());
                let b = (a + n).min(bytes.len());
                let slice = bytes[a..b].to_vec();
                bytes.splice(b..b, slice);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

const FILE: &str = "/etc/offsite/offsite.toml";

fn check_config(text: &str) {
    if let Err(e) = config::parse(Path::new(FILE), text) {
        let msg = e.to_string();
        assert!(msg.starts_with(FILE), "the error names the file: {msg}");
        assert_eq!(e.exit_code(), 2, "a configuration error exits 2: {msg}");
    }
}

fn check_manifest(bytes: &[u8]) {
    let origin = "dest/db/20261122T084519Z-incr/manifest.json";
    match Manifest::from_json(bytes, origin) {
        Ok(m) => {
            if let Err(e) = m.validate(origin) {
                assert!(e.to_string().contains(origin), "names the manifest: {e}");
            }
        }
        Err(e) => assert!(e.to_string().contains(origin), "names the manifest: {e}"),
    }
}

#[test]
fn the_corpora_are_valid() {
    config::parse(Path::new(FILE), &config_corpus()).expect("the config corpus parses");
    let m = Manifest::from_json(MANIFEST.as_bytes(), "corpus").expect("the manifest corpus parses");
    m.validate("corpus").expect("and is valid");
}

proptest! {
    #![proptest_config(settings())]

    #[test]
    fn any_text_is_a_config_or_one_error(text in ".{0,400}") {
        check_config(&text);
    }

    #[test]
    fn a_mutated_config_is_a_config_or_one_error(e in edits()) {
        check_config(&apply(&config_corpus(), &e));
    }

    #[test]
    fn any_bytes_are_a_manifest_or_one_error(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_manifest(&bytes);
    }

    #[test]
    fn a_mutated_manifest_is_a_manifest_or_one_error(e in edits()) {
        check_manifest(apply(MANIFEST, &e).as_bytes());
    }
}
