//! Progress bars on stderr (indicatif), for a person at a terminal.
//!
//! Bars appear only when stderr is a terminal and `-q` is not given; notes
//! (changed files, skipped entries, restarted uploads) are printed as lines
//! on stderr either way, unless `-q`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use offsite::progress::Progress;

pub struct TermProgress {
    multi: MultiProgress,
    bars_enabled: bool,
    notes_enabled: bool,
    /// `-v`: every line hooks and commands print on stderr, as it comes.
    command_output: bool,
    stage: Mutex<Option<(ProgressBar, u64, u64)>>,
    uploads: Mutex<HashMap<String, ProgressBar>>,
}

impl TermProgress {
    pub fn new(quiet: bool, verbose: bool) -> TermProgress {
        let bars_enabled = !quiet && std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if bars_enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        TermProgress {
            multi,
            bars_enabled,
            notes_enabled: !quiet,
            command_output: verbose,
            stage: Mutex::new(None),
            uploads: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, total: u64, template: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

impl Progress for TermProgress {
    fn stage_started(&self, job: &str, files: u64, bytes: u64) {
        if !self.bars_enabled {
            return;
        }
        let bar = self.bar(
            bytes,
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
        );
        bar.set_prefix(format!("stage {job}"));
        bar.set_message(format!("0/{files} files"));
        if let Ok(mut s) = self.stage.lock() {
            *s = Some((bar, 0, files));
        }
    }

    fn stage_advanced(&self, files: u64, bytes: u64) {
        if let Ok(mut s) = self.stage.lock()
            && let Some((bar, done, total)) = s.as_mut()
        {
            *done += files;
            bar.inc(bytes);
            bar.set_message(format!("{done}/{total} files"));
        }
    }

    fn stage_finished(&self, _job: &str) {
        if let Ok(mut s) = self.stage.lock()
            && let Some((bar, _, _)) = s.take()
        {
            bar.finish();
        }
    }

    fn upload_started(&self, destination: &str, total: u64, already: u64) {
        if !self.bars_enabled {
            return;
        }
        let bar = self.bar(
            total,
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        );
        bar.set_prefix(destination.to_string());
        bar.set_position(already);
        bar.reset_eta();
        if let Ok(mut u) = self.uploads.lock()
            && let Some(old) = u.insert(destination.to_string(), bar)
        {
            old.finish_and_clear();
        }
    }

    fn upload_advanced(&self, destination: &str, bytes: u64) {
        if let Ok(u) = self.uploads.lock()
            && let Some(bar) = u.get(destination)
        {
            bar.inc(bytes);
        }
    }

    fn upload_finished(&self, destination: &str, ok: bool) {
        if let Ok(mut u) = self.uploads.lock()
            && let Some(bar) = u.remove(destination)
        {
            if ok {
                bar.finish();
            } else {
                bar.abandon();
            }
        }
    }

    fn note(&self, message: &str) {
        if self.notes_enabled {
            self.line(&format!("note: {message}"));
        }
    }

    fn command_output(&self, what: &str, line: &str) {
        if self.command_output {
            self.line(&format!("{what}: {line}"));
        }
    }
}

impl TermProgress {
    /// A line on stderr, above the bars when they are drawn.
    fn line(&self, text: &str) {
        if self.bars_enabled {
            let _ = self.multi.println(text);
        } else {
            warn!("{text}");
        }
    }
}
