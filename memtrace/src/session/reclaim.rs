//! `memtrace reclaim`: who stalls in direct or memcg reclaim and for how long, kswapd, OOM
//! kills; a line per interval, then histograms.

use std::time::Duration;

use memtrace_common::hooks::Run;

use super::{Mode, Session};
use crate::{
    model::event::Event,
    output::{
        json::{self, IntervalLine, Line, ReclaimSummary},
        reclaim,
    },
    stop::StopReason,
};

pub struct Reclaim {
    pub json: bool,
    pub interval: Duration,
}

impl Mode for Reclaim {
    fn run(&self) -> Run {
        Run {
            reclaim: true,
            follow: false,
            fault_events: false,
            records: false,
            args_at_exit: false,
        }
    }

    fn attached(&self, what: &str) -> String {
        format!("attached; tracing reclaim of {what}; Ctrl-C to stop")
    }

    fn every(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn json(&self) -> bool {
        self.json
    }

    fn event(&mut self, session: &mut Session, event: &Event) {
        if let Event::OomKill(oom) = event {
            // On stderr too, at once: an OOM kill must not wait for the report.
            eprintln!(
                "memtrace: OOM KILL: pid {} ({}) anon-rss {} kB, memory cgroup {}",
                oom.pid,
                oom.comm,
                oom.anon_rss_kb
                    .map_or_else(|| "?".into(), |kb| kb.to_string()),
                oom.cgroup.as_deref().unwrap_or("?")
            );
        }
        if self.json
            && let Some(line) = json::event_line(event, session.gfp())
        {
            session.out.line(&line);
        }
    }

    fn interval(&mut self, session: &mut Session) {
        let interval = session.model.reclaim.take_interval();
        let attribution = &session.model.attribution;
        let comm = |pid| {
            attribution
                .process_by_pid(pid)
                .map(|p| p.comm.clone())
                .filter(|c| !c.is_empty())
        };
        let line = if self.json {
            Line::ReclaimInterval(IntervalLine::new(&interval, session.elapsed_ns(), comm))
                .to_json()
        } else {
            reclaim::interval_text(&clock(), &interval, comm)
        };
        session.out.line(line.trim_end());
        session.out.flush();
    }

    fn finish(&mut self, session: &mut Session, reason: StopReason) -> anyhow::Result<()> {
        // The last, partial interval: its stalls get their line like every other interval's.
        if session.model.reclaim.has_interval_stalls() {
            self.interval(session);
        }
        let snapshot = session.snapshot(Vec::new());
        let report = if self.json {
            ReclaimSummary::line(&snapshot, reason).to_json()
        } else {
            reclaim::report(&snapshot, reason)
        };
        session.out.report(&report);
        Ok(())
    }
}

/// Wall-clock `HH:MM:SS` (UTC) for interval lines.
fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}
