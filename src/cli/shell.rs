//! `offsite completions SHELL` and `offsite man`: generated from the clap
//! definitions ([`super::args`]), so they name every command and flag there is.

use std::io::Write as _;

use clap::CommandFactory;
use offsite::error::Error;
use offsite::outcome::{Exit, Status};

use std::path::Path;

use super::Out;
use super::args::{Cli, Shell};

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell) -> Result<Exit, Error> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "offsite", &mut out);
    let _ = out.flush();
    Ok(Status::Ok.into())
}

/// `command`'s page (offsite's own when `None`), as roff.
fn page(command: Option<&str>) -> Result<Vec<u8>, Error> {
    let cli = Cli::command();
    let page = match command {
        None => cli,
        Some(name) => {
            let Some(sub) = cli.find_subcommand(name) else {
                let names: Vec<&str> = visible_commands(&cli);
                return Err(Error::Usage(format!(
                    "no command {name:?}; the commands are {}",
                    names.join(", ")
                )));
            };
            sub.clone()
                .name(format!("offsite-{name}"))
                .bin_name(format!("offsite {name}"))
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|e| Error::io("cannot render the man page", e))?;
    Ok(roff)
}

/// Prints offsite's man page, or `command`'s (`offsite-backup(1)`).
pub fn man(command: Option<&str>) -> Result<Exit, Error> {
    let roff = page(command)?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&roff);
    let _ = out.flush();
    Ok(Status::Ok.into())
}

/// Writes offsite.1 and offsite-COMMAND.1 for every command into `dir`.
pub fn man_pages(out: &Out, dir: &Path) -> Result<Exit, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let cli = Cli::command();
    let names = std::iter::once(None).chain(visible_commands(&cli).into_iter().map(Some));
    for name in names {
        let file = dir.join(match name {
            None => "offsite.1".to_string(),
            Some(n) => format!("offsite-{n}.1"),
        });
        std::fs::write(&file, page(name)?)
            .map_err(|e| Error::io(format!("cannot write {}", file.display()), e))?;
        if !out.json {
            say!("wrote {}", file.display());
        }
    }
    Ok(Status::Ok.into())
}

/// The names of the commands `--help` shows.
pub fn visible_commands(cli: &clap::Command) -> Vec<&str> {
    cli.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name())
        .collect()
}
