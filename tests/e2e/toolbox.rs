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
