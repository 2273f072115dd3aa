//! Progress reporting. The library only calls [`FetchReporter`]; the binary draws bars.

use std::io::{self, Write};

/// Receives what a fetch is doing. Each stage (downloading, assembling, verifying) starts with a
/// [`message`](FetchReporter::message) and then reports [`progress`](FetchReporter::progress) in
/// bytes of that stage, from 0 up to its total; a new message means a new stage, so a bar should
/// be reset.
pub trait FetchReporter {
    /// A one-line description of the next stage or of something that happened.
    fn message(&mut self, message: &str);
    /// `done_bytes` of `total_bytes` of the current stage are done.
    fn progress(&mut self, done_bytes: u64, total_bytes: u64);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReporter;

impl FetchReporter for NoReporter {
    fn message(&mut self, _message: &str) {}
    fn progress(&mut self, _done_bytes: u64, _total_bytes: u64) {}
}

/// Writes each message as a line, and a progress line each time a stage passes another tenth
/// (`  40% (39.3 MB of 98.4 MB)`). Write errors are ignored: progress is not worth failing for.
#[derive(Debug)]
pub struct LineReporter<W: Write> {
    out: W,
    /// The last tenth printed in the current stage; `None` right after a message.
    last_tenth: Option<u64>,
}

/// A [`LineReporter`] on standard error.
pub type StderrReporter = LineReporter<io::Stderr>;

impl<W: Write> LineReporter<W> {
    /// Reports to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            last_tenth: None,
        }
    }

    /// The writer, back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl LineReporter<io::Stderr> {
    /// Reports to standard error.
    pub fn stderr() -> Self {
        Self::new(io::stderr())
    }
}

impl<W: Write> FetchReporter for LineReporter<W> {
    fn message(&mut self, message: &str) {
        let _ = writeln!(self.out, "{message}");
        self.last_tenth = None;
    }

    fn progress(&mut self, done_bytes: u64, total_bytes: u64) {
        if total_bytes == 0 {
            return;
        }
        let tenth = (u128::from(done_bytes.min(total_bytes)) * 10 / u128::from(total_bytes)) as u64;
        if self.last_tenth.is_some_and(|last| tenth <= last) || (tenth == 0 && done_bytes > 0) {
            return;
        }
        self.last_tenth = Some(tenth);
        let _ = writeln!(
            self.out,
            "  {:>3}% ({} of {})",
            tenth * 10,
            format_bytes(done_bytes),
            format_bytes(total_bytes)
        );
    }
}

/// `98.4 MB`, `1.12 GB`: decimal units, three significant digits.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = u;
    }
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else if value >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_formatted_in_decimal_units() {
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(98_362_432), "98.4 MB");
        assert_eq!(format_bytes(491_400_064), "491 MB");
        assert_eq!(format_bytes(1_117_320_768), "1.12 GB");
    }

    #[test]
    fn line_reporter_prints_messages_and_each_tenth_once() {
        let mut r = LineReporter::new(Vec::new());
        r.message("stage one");
        for done in (0..=100).step_by(5) {
            r.progress(done, 100);
        }
        r.message("stage two");
        r.progress(0, 2000);
        r.progress(2000, 2000);
        let text = String::from_utf8(r.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 11 + 1 + 2, "{text}");
        assert_eq!(lines[0], "stage one");
        assert_eq!(lines[1], "    0% (0 B of 100 B)");
        assert_eq!(lines[11], "  100% (100 B of 100 B)");
        assert_eq!(lines[12], "stage two");
        assert_eq!(lines[14], "  100% (2.00 kB of 2.00 kB)");
    }
}
