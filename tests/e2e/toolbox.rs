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
