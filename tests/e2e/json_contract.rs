//! The `--json` documents the README promises: every field it names for a
//! command is in that command's real output (fields it marks optional,
//! `"name"?`, may be absent from this run, but must be a field of one of
//! the report types in `src/`).

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";

/// The JSON page (docs/json.md): command → (required fields, optional fields).
fn documented() -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md"))
        .expect("read docs/json.md");
    let start = readme
        .find("With `--json`, stdout carries exactly one JSON document")
        .expect("the JSON page's contract");
    let end = readme.len();
    // Lines wrap anywhere, inside code spans too: one space for each run.
    let section = readme[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = BTreeMap::new();
    // "`cmd`: `{...}`" or "`cmd` (one job): `{...}`".
    let mut rest = section.as_str();
    let next = |text: &str| {
        let a = text.find("`: `{");
        let b = text.find("` (one job): `{");
        a.into_iter().chain(b).min()
    };
    while let Some(i) = next(rest) {
        let name_start = rest[..i].rfind('`').expect("a command in backticks") + 1;
        let command = rest[name_start..i].to_string();
        let body_start = i + rest[i..].find('{').expect("a document");
        let body_end = body_start + rest[body_start..].find('`').expect("its closing backtick");
        out.insert(command, fields(&rest[body_start..body_end]));
        rest = &rest[body_end..];
    }
    out
}

/// The field names of a documented shape: quoted names that are not values
/// (a value follows `: ` or `|`). A name is optional when followed by `?` or
/// `|`, and so is every name inside an optional field's value.
fn fields(shape: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut required, mut optional) = (BTreeSet::new(), BTreeSet::new());
    // Per open bracket: whether what is inside is optional.
    let mut inside_optional = vec![false];
    // The last name read was optional: so is the value that follows it.
    let mut value_optional = false;
    let mut last = ' ';
    let mut chars = shape.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let name: String = chars.by_ref().take_while(|&c| c != '"').collect();
                let is_value = last == ':' || last == '|';
                let marked = matches!(chars.peek(), Some('?' | '|'));
                let optional_here = *inside_optional.last().unwrap_or(&false);
                if !is_value {
                    value_optional = marked || optional_here;
                    if value_optional {
                        optional.insert(name);
                    } else {
                        required.insert(name);
                    }
                }
                last = '"';
            }
            '{' | '[' => {
                let parent = *inside_optional.last().unwrap_or(&false);
                inside_optional.push(parent || (last == ':' && value_optional));
                last = c;
            }
            '}' | ']' => {
                inside_optional.pop();
                last = c;
            }
            ',' => {
                value_optional = false;
                last = c;
            }
            c if c.is_whitespace() => {}
            c => last = c,
        }
    }
    // A name documented both ways (two alternatives) is required nowhere.
    let required = required.difference(&optional).cloned().collect();
    (required, optional)
}

fn keys(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Every Rust source under `src/`, for the optional fields.
fn sources() -> String {
    let mut text = String::new();
    for e in walkdir::WalkDir::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")) {
        let e = e.expect("walk src");
        if e.path().extension().is_some_and(|x| x == "rs") {
            text.push_str(&std::fs::read_to_string(e.path()).expect("read source"));
        }
    }
    text
}

#[test]
fn every_documented_json_field_is_in_the_output() {
    let sb = Sandbox::new("json_contract");
    write(&sb.path("src/a.bin"), &noise(20_000, 1));
    write(&sb.path("src/sub/b.txt"), b"hello");
    // A second job that never runs gives `status` a problem to show.
    sb.config_dir_job(
        "retention = { keep_last = 1 }\nschedule = { full = \"0 2 * * *\", timezone = \"UTC\" }\n\n[[job]]\nname = \"idle\"\nsource = { kind = \"dir\", path = \"src\" }\ndestinations = [\"nas\"]",
        &["nas"],
        NAS,
    );
    let init_dir = sb.path("init");
    let identity = sb.path("identity.txt");
    let restored = sb.path("restored");
    let runs: Vec<(&str, Vec<String>)> = vec![
        ("init", vec!["init".into(), init_dir.display().to_string()]),
        (
            "keygen",
            vec!["keygen".into(), identity.display().to_string()],
        ),
        ("check", vec!["check".into()]),
        ("backup", vec!["backup".into(), "--job".into(), "db".into()]),
        (
            "backup",
            vec![
                "backup".into(),
                "--job".into(),
                "db".into(),
                "--no-upload".into(),
            ],
        ),
        ("upload", vec!["upload".into()]),
        ("list", vec!["list".into()]),
        ("verify", vec!["verify".into()]),
        (
            "restore",
            vec![
                "restore".into(),
                "--job".into(),
                "db".into(),
                "--to".into(),
                restored.display().to_string(),
            ],
        ),
        ("prune", vec!["prune".into(), "--dry-run".into()]),
        ("status", vec!["status".into()]),
    ];
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (command, args) in &runs {
        let mut all = vec!["--json"];
        all.extend(args.iter().map(String::as_str));
        let run = sb.offsite(&all);
        assert_eq!(run.code, 0, "{command}: {run:?}");
        keys(&run.json(), seen.entry(command.to_string()).or_default());
        if !matches!(*command, "init" | "keygen") {
            valid(command, &run.json());
        }
    }
    let documented = documented();
    let src = sources();
    for (command, (required, optional)) in &documented {
        if command == "glacier inventory" {
            // Needs a vault: tests/e2e/glacier.rs checks that document.
            continue;
        }
        let got = seen.get(command).unwrap_or_else(|| {
            panic!("the README documents `{command}`, which this test does not run")
        });
        let missing: Vec<&String> = required.difference(got).collect();
        assert!(
            missing.is_empty(),
            "`{command}`: the README names {missing:?}, which its JSON lacks: {got:?}"
        );
        for o in optional {
            assert!(
                got.contains(o) || src.contains(&format!("pub {o}:")),
                "`{command}`: the README names the optional field {o:?}, which no report type in src/ has"
            );
        }
    }
    for command in [
        "backup", "upload", "list", "verify", "restore", "prune", "status", "check", "init",
        "keygen",
    ] {
        assert!(
            documented.contains_key(command),
            "the README documents no JSON for `{command}`"
        );
    }
}

/// Checks `doc` against docs/schemas/`schema`.schema.json with Python's
/// jsonschema (Debian's python3-jsonschema), the shared definitions of
/// common.schema.json resolved from the same folder.
pub(crate) fn valid(schema: &str, doc: &serde_json::Value) {
    let script = "import json, sys, glob, os\nfrom jsonschema import Draft202012Validator, RefResolver\nd = sys.argv[1]\nstore = {}\nfor p in glob.glob(os.path.join(d, '*.schema.json')):\n    s = json.load(open(p))\n    store[s['$id']] = s\nschema = json.load(open(os.path.join(d, sys.argv[2] + '.schema.json')))\nDraft202012Validator.check_schema(schema)\nv = Draft202012Validator(schema, resolver=RefResolver.from_schema(schema, store=store))\nerrors = sorted(v.iter_errors(json.load(sys.stdin)), key=lambda e: list(e.path))\nfor e in errors:\n    print(list(e.path), e.message[:300])\nsys.exit(1 if errors else 0)";
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schemas");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, dir, schema])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with jsonschema (Debian: python3-jsonschema)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(doc.to_string().as_bytes())
            .expect("write the document");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{schema}.schema.json refuses {doc:#}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The partial and failed shapes of each document follow their schemas too.
#[test]
fn partial_and_failed_outputs_follow_the_schemas() {
    let sb = Sandbox::new("json_schemas");
    write(&sb.path("src/a.bin"), &noise(5_000, 2));
    let two = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n\n[destination.gone]\nkind = \"path\"\npath = \"dest-gone\"\n";
    sb.config_dir_job("", &["nas", "gone"], two);
    let cases: Vec<(&str, Vec<&str>, i32)> = vec![
        ("backup", vec!["backup"], 3),
        ("upload", vec!["upload"], 3),
        ("list", vec!["list"], 1),
        ("verify", vec!["verify"], 1),
        ("prune", vec!["prune", "--dry-run"], 0),
        ("status", vec!["status", "--check"], 1),
        ("check", vec!["check"], 1),
        (
            "restore",
            vec!["restore", "--job", "db", "--backup", "bogus", "--to", "x"],
            2,
        ),
        ("verify", vec!["verify", "--backup", "bogus"], 2),
    ];
    for (schema, args, code) in cases {
        let mut all = vec!["--json"];
        all.extend(args);
        let r = sb.offsite(&all);
        assert_eq!(r.code, code, "{all:?}: {r:?}");
        valid(schema, &r.json());
    }
    // A run that fails before anything is staged.
    std::fs::remove_dir_all(sb.path("src")).expect("rm src");
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 1, "{r:?}");
    valid("backup", &r.json());
}
