//! Progress of long commands (`waymark store copy`) and of the benches.

use std::time::Duration;

/// Progress of a long command on stderr: a bar at a terminal, otherwise a
/// plain line at most once a second (and at the end), for logs.
pub struct Progress {
    what: &'static str,
    bar: Option<indicatif::ProgressBar>,
    last: Option<std::time::Instant>,
}

impl Progress {
    /// A progress report of `what` (shown before the counts).
    pub fn new(what: &'static str) -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(what);
            bar
        });
        Self {
            what,
            bar,
            last: None,
        }
    }

    /// `done` of `total` are through.
    pub fn at(&mut self, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            return;
        }
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if done == total || due {
            eprintln!("{}: {done}/{total}", self.what);
            self.last = Some(std::time::Instant::now());
        }
    }

    /// Clears the bar (the summary follows on stdout).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
