//! What memtrace shows while it traces, once per `--interval`: a compact top-style screen when
//! stdout is a terminal, one plain line per interval when it is not (logs, pipes).
//!
//! Pure: rendered from a snapshot and the previous interval's totals (the only state kept
//! here), so both forms are unit-tested without a kernel or a terminal.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use memtrace_common::advice;

use crate::{
    analysis::snapshot::{ProcessView, Snapshot},
    units::human_bytes,
};

/// Moves the cursor home and clears the screen (ANSI), so each frame replaces the last.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// The per-process totals a rate is computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    minor: u64,
    major: u64,
    released: u64,
}

impl Totals {
    fn of(p: &ProcessView) -> Self {
        Self {
            minor: p.faults.minor.unwrap_or(0),
            major: p.faults.major.unwrap_or(0),
            released: p.released_bytes,
        }
    }
}

/// Remembers the previous interval's totals to turn counters into per-second rates.
#[derive(Debug, Default)]
pub struct Live {
    previous: BTreeMap<u32, Totals>,
    frames: u64,
}

/// One row of the screen.
struct Row<'a> {
    p: &'a ProcessView,
    free: u64,
    dontneed: u64,
    minor_per_s: f64,
    major_per_s: f64,
    released_per_s: f64,
}

impl Live {
    /// The next full screen (terminal).
    pub fn screen(
        &mut self,
        snapshot: &Snapshot,
        top: Option<usize>,
        interval: Duration,
    ) -> String {
        let rows = self.rows(snapshot, interval);
        let lost = snapshot.lost.total();
        let elapsed = Duration::from_nanos(snapshot.elapsed_ns);
        let mut out = String::from(CLEAR);
        let _ = writeln!(
            out,
            "memtrace — {:.1} s traced, {} process{}, lost events {lost}{}   (Ctrl-C: final report)",
            elapsed.as_secs_f64(),
            rows.len(),
            if rows.len() == 1 { "" } else { "es" },
            if lost > 0 { " (undercounts!)" } else { "" },
        );
        let _ = writeln!(
            out,
            "{:>7} {:<15} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8} {:>10} {:>10}",
            "PID",
            "COMM",
            "FREE",
            "DONTNEED",
            "REL/s",
            "MAPPED",
            "UNMAPPED",
            "MINFLT/s",
            "MAJFLT/s",
            "RSS",
            "LAZYFREE",
        );
        let shown = top.unwrap_or(usize::MAX);
        for row in rows.iter().take(shown) {
            let m = &row.p.mappings;
            let (rss, lazy) = row
                .p
                .smaps_rollup
                .last
                .map_or((String::from("-"), String::from("-")), |s| {
                    (human_bytes(s.rss), human_bytes(s.lazy_free))
                });
            let _ = writeln!(
                out,
                "{:>7} {:<15} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9.0} {:>8.0} {:>10} {:>10}",
                row.p.pid,
                truncate(&row.p.comm, 15),
                human_bytes(row.free),
                human_bytes(row.dontneed),
                human_bytes(row.released_per_s as u64),
                human_bytes(m.grown_bytes()),
                human_bytes(m.shrunk_bytes()),
                row.minor_per_s,
                row.major_per_s,
                rss,
                lazy,
            );
        }
        if rows.len() > shown {
            let _ = writeln!(out, "… {} more (--top, --sort)", rows.len() - shown);
        }
        out
    }

    /// The next plain line (not a terminal): totals over the shown processes.
    pub fn line(&mut self, snapshot: &Snapshot, interval: Duration) -> String {
        let rows = self.rows(snapshot, interval);
        let lost = snapshot.lost.total();
        let elapsed = Duration::from_nanos(snapshot.elapsed_ns);
        let sum = |f: fn(&Row<'_>) -> f64| rows.iter().map(f).sum::<f64>();
        let free: u64 = rows.iter().map(|r| r.free).sum();
        let dontneed: u64 = rows.iter().map(|r| r.dontneed).sum();
        let rss: u64 = rows
            .iter()
            .filter_map(|r| r.p.smaps_rollup.last)
            .map(|s| s.rss)
            .sum();
        let lazy: u64 = rows
            .iter()
            .filter_map(|r| r.p.smaps_rollup.last)
            .map(|s| s.lazy_free)
            .sum();
        let mut line = format!("{:.1}s", elapsed.as_secs_f64());
        if let [row] = rows.as_slice() {
            let _ = write!(line, " pid {} ({})", row.p.pid, row.p.comm);
        } else {
            let _ = write!(line, " {} processes", rows.len());
        }
        let _ = write!(
            line,
            ": released FREE {} DONTNEED {} ({}/s); faults {:.0}/s minor {:.0}/s major; rss {} lazyfree {}; lost {lost}",
            human_bytes(free),
            human_bytes(dontneed),
            human_bytes(sum(|r| r.released_per_s) as u64),
            sum(|r| r.minor_per_s),
            sum(|r| r.major_per_s),
            human_bytes(rss),
            human_bytes(lazy),
        );
        line
    }

    fn rows<'a>(&mut self, snapshot: &'a Snapshot, interval: Duration) -> Vec<Row<'a>> {
        // The first frame has no previous interval: show no rate rather than a huge one.
        let first = self.frames == 0;
        self.frames += 1;
        let secs = interval.as_secs_f64().max(1e-3);
        let rate = |now: u64, before: u64| {
            if first {
                0.0
            } else {
                now.saturating_sub(before) as f64 / secs
            }
        };
        let rows: Vec<Row<'a>> = snapshot
            .processes
            .iter()
            .map(|p| {
                let now = Totals::of(p);
                let before = self.previous.get(&p.pid).copied().unwrap_or_default();
                Row {
                    p,
                    free: p.released_with(advice::FREE),
                    dontneed: p.released_with(advice::DONTNEED),
                    minor_per_s: rate(now.minor, before.minor),
                    major_per_s: rate(now.major, before.major),
                    released_per_s: rate(now.released, before.released),
                }
            })
            .collect();
        self.previous = rows.iter().map(|r| (r.p.pid, Totals::of(r.p))).collect();
        rows
    }
}

fn truncate(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::snapshot::{Selection, Window},
        kernel::LostCounts,
        model::{Model, event::test_madvise},
    };
    use memtrace_common::lost::Lost;

    fn release(model: &mut Model, pid: u32, advice: u32, len: u64) {
        model.record(&test_madvise(pid, advice, len, None));
    }

    fn at(model: &Model, secs: u64) -> Snapshot {
        Snapshot::new(
            model,
            &Selection::default(),
            Window {
                elapsed_ns: secs * 1_000_000_000,
                ..Window::default()
            },
        )
    }

    #[test]
    fn screen_shows_each_process_and_rates_from_the_second_frame() {
        let mut model = Model::default();
        model.attribution.name(7, "server");
        release(&mut model, 7, advice::FREE, 4 << 20);
        let mut live = Live::default();
        let second = Duration::from_secs(1);
        let first = live.screen(&at(&model, 1), None, second);
        assert!(first.starts_with(CLEAR));
        let row = first.lines().nth(2).unwrap();
        assert_eq!(
            row,
            "      7 server             4.0 MiB        0 B        0 B        0 B        0 B         0        0          -          -"
        );
        release(&mut model, 7, advice::DONTNEED, 2 << 20);
        model.lost = LostCounts::default().with(Lost::RingFull, vec![3]);
        let next = live.screen(&at(&model, 2), None, second);
        assert!(next.contains("lost events 3 (undercounts!)"), "{next}");
        let row = next.lines().nth(2).unwrap();
        assert!(
            row.starts_with("      7 server             4.0 MiB    2.0 MiB    2.0 MiB"),
            "{row}"
        );
    }

    #[test]
    fn plain_line_for_one_process_and_for_many() {
        let mut model = Model::default();
        model.attribution.name(7, "server");
        release(&mut model, 7, advice::DONTNEED, 8192);
        let mut live = Live::default();
        let second = Duration::from_secs(1);
        assert_eq!(
            live.line(&at(&model, 1), second),
            "1.0s pid 7 (server): released FREE 0 B DONTNEED 8.0 KiB (0 B/s); faults 0/s minor 0/s major; rss 0 B lazyfree 0 B; lost 0"
        );
        release(&mut model, 8, advice::FREE, 4096);
        let line = live.line(&at(&model, 2), second);
        assert!(
            line.starts_with(
                "2.0s 2 processes: released FREE 4.0 KiB DONTNEED 8.0 KiB (4.0 KiB/s)"
            ),
            "{line}"
        );
    }
}
