//! Progress for the long commands: on a terminal, one line on stderr rewritten as the work goes;
//! otherwise nothing until the end, so a log or a script sees just the one summary line.

use std::io::{IsTerminal, Write};

/// A progress line on stderr, shown only when stderr is a terminal.
pub(super) struct Progress {
    shown: bool,
    last: String,
}

impl Progress {
    pub(super) fn new() -> Self {
        Self { shown: std::io::stderr().is_terminal(), last: String::new() }
    }

    /// Say how far the work is (nothing when stderr is not a terminal).
    pub(super) fn update(&mut self, line: impl Into<String>) {
        let line = line.into();
        if !self.shown || line == self.last {
            return;
        }
        // `\r` and "erase to end of line": the line is rewritten in place.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
        self.last = line;
    }

    /// Clear the progress line, then print the summary on stdout.
    pub(super) fn finish(self, summary: &str) {
        if self.shown && !self.last.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
        println!("{summary}");
    }
}

/// `n` of `of` as a bar and a percentage, e.g. `[#####     ] 50% (5/10)`.
pub(super) fn bar(n: u64, of: u64) -> String {
    let share = if of == 0 { 1.0 } else { n as f64 / of as f64 };
    let filled = (share * 20.0).round() as usize;
    format!("[{}{}] {:>3}% ({n}/{of})", "#".repeat(filled), " ".repeat(20 - filled.min(20)), (share * 100.0).round())
}
