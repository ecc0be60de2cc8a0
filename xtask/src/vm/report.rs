//! What a kernel's run of the integration tests came to: a verdict per test, kept logs, and
//! the summaries printed per kernel and for the whole matrix. Anything but a pass fails the
//! run: a skipped or ignored test proves nothing about the kernel.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use super::{format::seconds, session::StepResult};

/// What a test binary prints when a test body gave up for lack of something (see
/// memtrace/tests/support/mod.rs); with CI set the tests panic instead, but a skip must never
/// pass for a success.
const SKIP_MARK: &str = "*** SKIPPED";
/// What libtest prints when the one selected test passed.
const PASS_MARK: &str = "test result: ok. 1 passed";
/// Lines of a failure's output printed in the summary (the log has all).
const EXCERPT_LINES: usize = 12;
/// Console lines where the kernel complains: worth a look when investigating a kernel, even
/// when every test passed.
const KERNEL_COMPLAINTS: [&str; 5] = ["WARNING:", "BUG:", "Oops", "soft lockup", "segfault at"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed(i32),
    TimedOut,
    Skipped,
    NotRun,
}

impl Verdict {
    /// The verdict of a finished (or unfinished) test step given `limit` in the guest.
    pub fn of(step: &StepResult, limit: Duration) -> Self {
        match step.status {
            None => Self::NotRun,
            Some(0) if step.output.contains(SKIP_MARK) => Self::Skipped,
            Some(0) if step.output.contains(PASS_MARK) => Self::Passed,
            // Exit 0 without a pass: the name selected no test.
            Some(0) => Self::NotRun,
            Some(_) if step.duration >= limit => Self::TimedOut,
            Some(status) => Self::Failed(status),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Passed => f.write_str("ok"),
            Self::Failed(status) => write!(f, "FAILED (exit {status})"),
            Self::TimedOut => f.write_str("TIMED OUT"),
            Self::Skipped => f.write_str("SKIPPED"),
            Self::NotRun => f.write_str("NOT RUN"),
        }
    }
}

pub struct Outcome {
    /// `binary/test`, e.g. `madvise/free_is_counted`.
    pub name: String,
    pub verdict: Verdict,
    pub duration: Duration,
    /// Where its whole output was kept.
    pub log: Option<PathBuf>,
    /// The lines that say why it did not pass.
    pub excerpt: Vec<String>,
}

impl Outcome {
    /// The outcome of a test step; its output is kept in `logs`.
    pub fn of_step(
        name: String,
        step: &StepResult,
        limit: Duration,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let verdict = Verdict::of(step, limit);
        let log = logs.join(format!("{}.log", name.replace(['/', ':'], "_")));
        fs::write(&log, &step.output).with_context(|| format!("cannot write {}", log.display()))?;
        let excerpt = if verdict == Verdict::Passed {
            Vec::new()
        } else {
            excerpt(&step.output)
        };
        Ok(Self {
            name,
            verdict,
            duration: step.duration,
            log: Some(log),
            excerpt,
        })
    }
}

/// The panic message (without the backtrace that follows), or the output's last lines when
/// nothing panicked.
fn excerpt(output: &str) -> Vec<String> {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.contains(SKIP_MARK))
        .unwrap_or(lines.len().saturating_sub(EXCERPT_LINES));
    lines[start..]
        .iter()
        .take_while(|l| !l.starts_with("stack backtrace:") && !l.starts_with("note: run with"))
        .take(EXCERPT_LINES)
        .map(|l| (*l).to_owned())
        .collect()
}

/// One kernel's run.
pub struct KernelReport {
    /// `debian-6.1, cgroup v2`.
    pub label: String,
    /// The Debian package booted, with its version.
    pub package: String,
    pub boot: Option<Duration>,
    pub run: Duration,
    pub outcomes: Vec<Outcome>,
    /// Why the guest did not run every test (no boot, crash, hang).
    pub problem: Option<String>,
    pub console_log: PathBuf,
}

/// How many lines of a console log show the kernel complaining.
fn kernel_complaints(console_log: &Path) -> usize {
    let console = fs::read(console_log).unwrap_or_default();
    String::from_utf8_lossy(&console)
        .lines()
        .filter(|line| KERNEL_COMPLAINTS.iter().any(|c| line.contains(c)))
        .count()
}

impl KernelReport {
    pub fn passed(&self) -> bool {
        self.problem.is_none() && self.outcomes.iter().all(|o| o.verdict == Verdict::Passed)
    }

    /// `40 passed` or `36 passed, 3 failed, 1 skipped`.
    pub fn counts(&self) -> String {
        let count = |wanted: fn(&Verdict) -> bool| {
            self.outcomes.iter().filter(|o| wanted(&o.verdict)).count()
        };
        let mut parts = vec![format!("{} passed", count(|v| *v == Verdict::Passed))];
        for (label, n) in [
            ("failed", count(|v| matches!(v, Verdict::Failed(_)))),
            ("timed out", count(|v| *v == Verdict::TimedOut)),
            ("skipped", count(|v| *v == Verdict::Skipped)),
            ("not run", count(|v| *v == Verdict::NotRun)),
        ] {
            if n > 0 {
                parts.push(format!("{n} {label}"));
            }
        }
        parts.join(", ")
    }

    pub fn print(&self) {
        println!();
        println!("== {} ({})", self.label, self.package);
        let boot = self
            .boot
            .map_or_else(|| "no boot".to_owned(), |b| format!("boot {}", seconds(b)));
        println!("   {}; {boot}, tests {}", self.counts(), seconds(self.run));
        if let Some(problem) = &self.problem {
            println!(
                "   GUEST PROBLEM: {problem} (console: {})",
                self.console_log.display()
            );
        }
        let complaints = kernel_complaints(&self.console_log);
        if complaints > 0 {
            println!(
                "   the kernel complained on {complaints} console lines (warnings, BUGs, segfaults): {}",
                self.console_log.display()
            );
        }
        for outcome in self
            .outcomes
            .iter()
            .filter(|o| o.verdict != Verdict::Passed)
        {
            println!(
                "   {:<9} {} ({})",
                outcome.verdict.to_string(),
                outcome.name,
                seconds(outcome.duration)
            );
            for line in &outcome.excerpt {
                println!("      | {line}");
            }
            if let Some(log) = &outcome.log {
                println!("      log: {}", log.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(status: Option<i32>, output: &str, secs: u64) -> StepResult {
        StepResult {
            status,
            duration: Duration::from_secs(secs),
            output: output.to_owned(),
        }
    }

    #[test]
    fn only_a_real_pass_passes() {
        let limit = Duration::from_secs(600);
        let pass = "running 1 test\ntest a ... ok\n\ntest result: ok. 1 passed; 0 failed";
        assert!(Verdict::of(&step(Some(0), pass, 1), limit) == Verdict::Passed);
        let skip = format!("*** SKIPPED: no cgroup v1 memory controller ***\n{pass}");
        assert!(Verdict::of(&step(Some(0), &skip, 1), limit) == Verdict::Skipped);
        let none = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed";
        assert!(Verdict::of(&step(Some(0), none, 1), limit) == Verdict::NotRun);
        assert!(Verdict::of(&step(Some(101), "", 1), limit) == Verdict::Failed(101));
        assert!(Verdict::of(&step(Some(137), "", 600), limit) == Verdict::TimedOut);
        assert!(Verdict::of(&step(None, "", 0), limit) == Verdict::NotRun);
    }

    #[test]
    fn excerpt_starts_at_the_panic() {
        let output = "running 1 test\nnoise\nthread 'x' panicked at a.rs:1:1:\nboom\n\
                      stack backtrace:\n   0: frame\n";
        assert_eq!(
            excerpt(output),
            ["thread 'x' panicked at a.rs:1:1:", "boom"]
        );
    }
}
