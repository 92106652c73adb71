//! The progress bar of a long catch-up run (`--trigger available-now`) on a
//! terminal: batches done, offsets left, rows/s and the time to go, redrawn
//! in place on stderr after each batch. Quiet when stderr is not a
//! terminal (a file, a pipe, a container log).
//!
//! Log lines share stderr with the bar: the binary logs through
//! [`Stderr`], which clears the bar before a line and draws it again after.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use crate::ops::progress::BatchProgress;

/// The bar as last drawn, if one is showing.
static SHOWN: Mutex<Option<String>> = Mutex::new(None);

/// Clears the line the cursor is on.
const CLEAR: &str = "\r\x1b[2K";

/// A run's bar; does nothing unless `--trigger available-now` on a terminal.
pub(crate) struct ProgressBar {
    active: bool,
    started: Instant,
    batches: u64,
    rows: u64,
    /// Offsets left after the first batch: the bar's 0%.
    first_left: Option<u64>,
}

impl ProgressBar {
    /// A bar for a catch-up run, drawn only if stderr is a terminal.
    pub(crate) fn new(catch_up: bool) -> Self {
        let active = catch_up && std::io::stderr().is_terminal();
        ProgressBar { active, started: Instant::now(), batches: 0, rows: 0, first_left: None }
    }

    /// Counts a committed batch and redraws.
    pub(crate) fn update(&mut self, p: &BatchProgress) {
        if !self.active {
            return;
        }
        self.batches += 1;
        self.rows += p.num_input_rows;
        let known = p.sources.iter().any(|s| !s.offsets_behind_latest.is_empty());
        let left: u64 = p.sources.iter().flat_map(|s| s.offsets_behind_latest.values()).map(|&n| n.max(0) as u64).sum();
        // A replayed batch (first in a run after a crash) has no watermarks:
        // the bar starts from the first batch that has.
        let total = match (self.first_left, known) {
            (Some(total), _) => total,
            (None, true) => *self.first_left.insert(left + p.num_input_rows),
            (None, false) => return,
        };
        let line = render(self.batches, left, total, self.rows, self.started.elapsed().as_secs_f64());
        draw(Some(line));
    }

    /// Removes the bar (the run's summary is logged after it).
    pub(crate) fn finish(&mut self) {
        if self.active {
            draw(None);
        }
    }
}

/// `[#####.....] 52%  batch 12  48,000 offsets left  35,000 rows/s  eta 1s`.
fn render(batches: u64, left: u64, total: u64, rows: u64, secs: f64) -> String {
    const WIDTH: u64 = 24;
    let done = total.saturating_sub(left);
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let bar = format!("{}{}", "#".repeat(filled as usize), ".".repeat((WIDTH - filled) as usize));
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let rate = if secs > 0.0 { rows as f64 / secs } else { 0.0 };
    let eta = if rate > 0.0 { format!("{:.0}s", left as f64 / rate) } else { "?".to_string() };
    format!(
        "[{bar}] {percent:>3}%  batch {batches}  {} offsets left  {} rows/s  eta {eta}",
        thousands(left),
        thousands(rate as u64)
    )
}

/// 48000 as `48,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn draw(line: Option<String>) {
    let mut shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner());
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{CLEAR}{}", line.as_deref().unwrap_or(""));
    let _ = err.flush();
    *shown = line;
}

/// stderr for log lines: a showing bar is cleared before each line and
/// drawn again after it (for `tracing_subscriber`'s `with_writer`).
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner());
        let mut err = std::io::stderr().lock();
        match shown.as_deref() {
            Some(bar) => {
                write!(err, "{CLEAR}")?;
                err.write_all(buf)?;
                write!(err, "{bar}")?;
            }
            None => err.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_says_how_far_how_fast_and_how_long_to_go() {
        let line = render(12, 48_000, 100_000, 52_000, 2.0);
        assert_eq!(line, "[############............]  52%  batch 12  48,000 offsets left  26,000 rows/s  eta 2s");
        assert!(render(1, 0, 0, 0, 0.0).contains("100%"));
    }
}
