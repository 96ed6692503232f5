//! Progress of the CLI's long operations (rebuild, scrub, clean, drain, bench): a bar with
//! the amount done, rate and ETA (indicatif) when stderr is a terminal; otherwise one
//! plain line every few seconds and one at the end, so that a log or a pipe gets readable
//! lines instead of runs of carriage returns.
//!
//! Owns: how progress is shown. Must not: decide anything about the work it shows.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the plain form prints a line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// What the amounts count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    /// Items of this name (`stripes`, `fragments`, `logs`).
    Items(&'static str),
}

/// One operation's progress display.
pub struct Progress {
    label: String,
    unit: Unit,
    bar: Option<ProgressBar>,
    plain: Mutex<Plain>,
}

struct Plain {
    started: Instant,
    last: Option<Instant>,
    done: u64,
    total: u64,
    message: String,
}

impl Progress {
    /// A display for `label`, `total` units to do; a bar on a terminal, lines elsewhere.
    pub fn new(label: &str, total: u64, unit: Unit) -> Progress {
        Progress::with_terminal(label, total, unit, std::io::stderr().is_terminal())
    }

    fn with_terminal(label: &str, total: u64, unit: Unit, terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let amounts = match unit {
                Unit::Bytes => "{bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})".to_string(),
                Unit::Items(what) => format!("{{pos}}/{{len}} {what} ({{per_sec}}, ETA {{eta}})"),
            };
            let style =
                ProgressStyle::with_template(&format!("{{prefix}} [{{bar:30}}] {amounts} {{msg}}"))
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            label: label.to_string(),
            unit,
            bar,
            plain: Mutex::new(Plain {
                started: Instant::now(),
                last: None,
                done: 0,
                total,
                message: String::new(),
            }),
        }
    }

    /// `done` of the total are done; `message` says more (counts of failures, ...).
    pub fn set(&self, done: u64, message: impl Into<String>) {
        let message = message.into();
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(message);
            return;
        }
        let mut p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        p.done = done;
        p.message = message;
        let due = p.last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if due {
            p.last = Some(Instant::now());
            eprintln!("{}", self.line(&p));
        }
    }

    /// The total changed (the work grew or was found smaller).
    pub fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
        self.plain.lock().unwrap_or_else(|e| e.into_inner()).total = total;
    }

    /// Prints `line` above the bar (or as a line of its own).
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Ends the display (the bar stays on screen as last drawn; the plain form prints its
    /// last line).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
            return;
        }
        let p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("{}", self.line(&p));
    }

    fn line(&self, p: &Plain) -> String {
        let secs = p.started.elapsed().as_secs_f64().max(0.001);
        let rate = p.done as f64 / secs;
        let eta = if rate > 0.0 && p.total > p.done {
            format!(", ETA {:.0} s", (p.total - p.done) as f64 / rate)
        } else {
            String::new()
        };
        let amounts = match self.unit {
            Unit::Bytes => format!(
                "{} of {} ({:.1} MB/s{eta})",
                crate::human(p.done),
                crate::human(p.total),
                rate / 1e6
            ),
            Unit::Items(what) => format!("{}/{} {what} ({rate:.1}/s{eta})", p.done, p.total),
        };
        if p.message.is_empty() {
            format!("{}: {amounts}", self.label)
        } else {
            format!("{}: {amounts}, {}", self.label, p.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_the_amounts() {
        let p = Progress::with_terminal("rebuild", 4 << 20, Unit::Bytes, false);
        {
            let mut s = p.plain.lock().expect("lock");
            s.done = 1 << 20;
            s.message = "1 stripe failed".into();
            let line = p.line(&s);
            assert!(line.starts_with("rebuild: 1.0 MiB of 4.0 MiB ("), "{line}");
            assert!(line.ends_with(", 1 stripe failed"), "{line}");
            assert!(line.contains("ETA"), "{line}");
        }
        let q = Progress::with_terminal("scrub", 10, Unit::Items("fragments"), false);
        let s = q.plain.lock().expect("lock");
        assert!(
            q.line(&s).starts_with("scrub: 0/10 fragments"),
            "{}",
            q.line(&s)
        );
    }
}
