//! `memtrace go --pid N`: trace one process until it releases memory (or `--wait` ends), then
//! print the verdict on how its runtime gives memory back.

use std::time::{Duration, Instant};

use anyhow::bail;
use memtrace_common::hooks::Run;

use super::{Mode, Session};
use crate::{
    output::{json::Line, verdict},
    stop::StopReason,
};

/// Stop this long after the last release seen, so a burst (debug.FreeOSMemory issues dozens of
/// calls) is counted whole rather than cut after its first call.
const RELEASE_SETTLE: Duration = Duration::from_millis(500);

pub struct Go {
    pub json: bool,
    pub wait: Duration,
    /// Bytes released at the last check, and when that last changed.
    last_release: (u64, Option<Instant>),
}

impl Go {
    pub fn new(json: bool, wait: Duration) -> Self {
        Self {
            json,
            wait,
            last_release: (0, None),
        }
    }
}

impl Mode for Go {
    fn run(&self) -> Run {
        Run {
            reclaim: false,
            follow: false,
            fault_events: false,
            // Each release as it happens: the verdict waits for a burst of them to settle.
            records: true,
            args_at_exit: false,
        }
    }

    fn attached(&self, what: &str) -> String {
        format!(
            "attached; watching {what} for memory releases (up to {:.1} s); Ctrl-C to stop",
            self.wait.as_secs_f64()
        )
    }

    /// Once releases were seen and nothing more for [`RELEASE_SETTLE`].
    fn stop(&mut self, session: &Session) -> Option<StopReason> {
        let released = session.targets_released();
        if released != self.last_release.0 {
            self.last_release = (released, Some(Instant::now()));
        }
        self.last_release
            .1
            .is_some_and(|at| at.elapsed() >= RELEASE_SETTLE)
            .then_some(StopReason::ReleaseSeen)
    }

    fn finish(&mut self, session: &mut Session, reason: StopReason) -> anyhow::Result<()> {
        let verdicts = session.verdicts(false);
        let [verdict] = verdicts.as_slice() else {
            bail!(
                "internal error: expected one target, found {}",
                verdicts.len()
            );
        };
        if reason == StopReason::TargetExited && verdict.released_bytes == 0 {
            let expected = if verdict.go {
                format!("expected: {}", verdict.expected.reason)
            } else {
                "not a Go binary".to_owned()
            };
            bail!(
                "pid {} exited after {:.1} s before releasing any memory ({expected})",
                verdict.pid,
                verdict.watched_ns as f64 / 1e9,
            );
        }
        let out = if self.json {
            Line::GoVerdict(verdict).to_json()
        } else {
            verdict::text(verdict)
        };
        session.out.report(&out);
        Ok(())
    }
}
