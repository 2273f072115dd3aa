//! Progress bars: downloads (the libraries report through `FetchReporter`; bars live here)
//! and the evaluation commands' count of finished requests ([`count_bar`]).

use std::io::IsTerminal;

use ecspec_weights::FetchReporter;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `total` finished items (requests, generations) with elapsed time, ETA and a
/// message; hidden when stderr is not a terminal.
pub fn count_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("  {bar:32} {pos}/{len} {elapsed_precise} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Shows each fetch stage as a byte progress bar on stderr, or as plain lines when stderr is
/// not a terminal.
pub struct BarReporter {
    bar: Option<ProgressBar>,
    tty: bool,
    last_pct: u64,
}

impl BarReporter {
    /// A reporter.
    pub fn new() -> Self {
        Self {
            bar: None,
            tty: std::io::stderr().is_terminal(),
            last_pct: 0,
        }
    }

    /// Clears the last bar.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl FetchReporter for BarReporter {
    fn message(&mut self, message: &str) {
        self.finish();
        self.last_pct = 0;
        eprintln!("ecspec: {message}");
    }

    fn progress(&mut self, done: u64, total: u64) {
        if !self.tty {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            if pct >= self.last_pct + 25 {
                self.last_pct = pct;
                eprintln!("ecspec:   {pct}%");
            }
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "  {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        bar.set_length(total);
        bar.set_position(done);
    }
}
