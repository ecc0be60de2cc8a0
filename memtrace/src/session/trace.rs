//! The default mode: everything a process (or every process) does with memory, a live view
//! while it runs, and the final report (text or JSON).

use std::{io::IsTerminal as _, time::Duration};

use memtrace_common::hooks::Run;

use super::{Mode, Session};
use crate::{
    model::event::Event,
    output::{
        groups,
        json::{self, Summary},
        live::{self, Live},
        stdout, text,
    },
    stop::StopReason,
};

/// Groups the live screen lists under its processes (`--by`).
const GROUP_ROWS: usize = 8;

pub struct Trace {
    pub follow: bool,
    pub json: bool,
    /// With --json, a line per event (not with --no-events).
    pub events: bool,
    /// How many processes the text report shows (system-wide only: with --pid, every target
    /// and followed child).
    pub top: Option<usize>,
    /// With --follow, whose children may be thousands: how many the screen shows on a
    /// terminal that does not say its size (one that does gets as many as fit).
    follow_top: Option<usize>,
    pub interval: Duration,
    /// The live view, unless --json: `true` draws a screen (stdout is a terminal), `false`
    /// prints one line per interval.
    live: Option<(Live, bool)>,
    /// Whether the screen is drawn on the terminal's alternate screen, to leave at the end.
    alternate: bool,
}

impl Trace {
    pub fn new(pids: &[u32], follow: bool, json: bool, top: usize, interval: Duration) -> Self {
        Self {
            top: pids.is_empty().then_some(top),
            follow_top: follow.then_some(top),
            live: (!json).then(|| (Live::default(), std::io::stdout().is_terminal())),
            follow,
            json,
            events: json,
            interval,
            alternate: false,
        }
    }

    /// With --json, only the start and summary lines (`--no-events`): nothing needs a record
    /// per call, so the memory syscalls are counted in the kernel.
    pub fn without_events(mut self) -> Self {
        self.events = false;
        self
    }
}

impl Mode for Trace {
    fn run(&self) -> Run {
        Run {
            reclaim: false,
            follow: self.follow,
            // Set by the session from --fault-events.
            fault_events: false,
            // The text report, the live view and the JSON summary show totals only.
            records: self.events,
            // Set by the loader.
            args_at_exit: false,
        }
    }

    fn attached(&self, what: &str) -> String {
        format!("attached; tracing {what}; Ctrl-C to stop")
    }

    fn every(&self) -> Option<Duration> {
        self.live.as_ref().map(|_| self.interval)
    }

    fn json(&self) -> bool {
        self.json
    }

    fn event(&mut self, session: &mut Session, event: &Event) {
        if !self.events || session.out.closed() {
            return;
        }
        // An OOM kill is shown whoever it hit; other events pass the --comm filter.
        let process = session.model.attribution.process_by_pid(event.tgid());
        let shown = matches!(event, Event::OomKill(_)) || session.selection.shows(process);
        if shown && let Some(line) = json::event_line(event, session.gfp()) {
            session.out.line(&line);
        }
    }

    fn interval(&mut self, session: &mut Session) {
        let Some((live, terminal)) = &mut self.live else {
            return;
        };
        if *terminal && !self.alternate {
            session.out.raw(live::ENTER_ALTERNATE_SCREEN);
            self.alternate = true;
        }
        // The plain line of a system-wide run shows totals (and one process only when it is
        // the only one): no view of each of thousands of processes is built for it.
        let rows = (!*terminal && session.system_wide).then_some(1);
        let snapshot = session.frame_snapshot(rows);
        let go = session.go_runtime();
        let frame = if *terminal {
            // Read each frame: the terminal may have been resized.
            let size = stdout::terminal_size().map(|(rows, cols)| live::Size { rows, cols });
            // With --by, the groups' table under the processes': room kept for it.
            let groups = groups::screen(&snapshot.groups, GROUP_ROWS);
            let room = size.map(|s| live::Size {
                rows: s.rows.saturating_sub(groups.lines().count()),
                ..s
            });
            let top = self.top.or(self.follow_top.filter(|_| size.is_none()));
            let screen =
                live.screen(&snapshot, top, room) + &groups + &live::go_runtime_screen(&go);
            live::fit(&screen, size)
        } else {
            live.line(&snapshot) + &live::go_runtime_line(&go)
        };
        session.out.line(frame.trim_end());
        session.out.flush();
    }

    fn finish(&mut self, session: &mut Session, reason: StopReason) -> anyhow::Result<()> {
        if self.alternate {
            // The terminal as it was before memtrace, the report under it.
            session.out.raw(live::LEAVE_ALTERNATE_SCREEN);
        }
        let snapshot = session.snapshot(session.verdicts(true));
        let report = if self.json {
            Summary::line(&snapshot, reason).to_json()
        } else {
            text::report(&snapshot, reason, self.top)
        };
        session.out.report(&report);
        Ok(())
    }
}
