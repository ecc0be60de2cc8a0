//! What memtrace shows while it traces, once per `--interval`: a compact top-style screen when
//! stdout is a terminal, one plain line per interval when it is not (logs, pipes).
//!
//! Pure: rendered from a snapshot and what the previous frame counted (the only state kept
//! here), so both forms are unit-tested without a kernel or a terminal.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use memtrace_common::{advice, events::rss::RssMember};

use crate::{
    analysis::{
        golang::{GoProcess, heap::Figures},
        process::ProcessView,
        snapshot::Snapshot,
    },
    units::human_bytes,
};

/// Moves the cursor home and clears the screen (ANSI), so each frame replaces the last.
const CLEAR: &str = "\x1b[H\x1b[2J";
/// The terminal's alternate screen (xterm, as `top` and `less` use it): frames drawn there
/// leave nothing in the scrollback, and leaving it brings back what was on the terminal, under
/// which the final report is printed.
pub const ENTER_ALTERNATE_SCREEN: &str = "\x1b[?1049h";
pub const LEAVE_ALTERNATE_SCREEN: &str = "\x1b[?1049l";
/// The screen's lines besides process rows: the title, the column heads and the `… more` line.
const SCREEN_OVERHEAD: usize = 3;

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub rows: usize,
    pub cols: usize,
}

/// What a frame counts from attach on, per process: rates are differences of these between
/// frames, the plain line's totals their sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    minor: u64,
    major: u64,
    released: u64,
    free: u64,
    dontneed: u64,
}

impl Totals {
    fn of(p: &ProcessView) -> Self {
        Self {
            minor: p.faults.minor.unwrap_or(0),
            major: p.faults.major.unwrap_or(0),
            released: p.released_bytes,
            free: p.released_with(advice::FREE),
            dontneed: p.released_with(advice::DONTNEED),
        }
    }
}

/// Per-second rates over the time between two frames.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Rates {
    minor: f64,
    major: f64,
    released: f64,
}

impl Rates {
    fn between(before: Totals, now: Totals, seconds: f64) -> Self {
        // Two frames never come from one snapshot; the floor only keeps a division by zero out.
        let per_second = |b: u64, n: u64| n.saturating_sub(b) as f64 / seconds.max(1e-3);
        Self {
            minor: per_second(before.minor, now.minor),
            major: per_second(before.major, now.major),
            released: per_second(before.released, now.released),
        }
    }
}

/// A process as frames tell it apart: its pid, and its start time where known (when a pid
/// passes to a new process, the snapshot lists both, the ended one and the new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    pid: u32,
    start_time: Option<u64>,
}

impl Identity {
    fn of(p: &ProcessView) -> Self {
        Self {
            pid: p.pid,
            start_time: p.start_time,
        }
    }

    /// Whether an entry of an earlier frame can be this process: the same pid, and start times
    /// that agree or that one side did not know yet (it can be learnt later).
    fn may_be(self, earlier: Self) -> bool {
        self.pid == earlier.pid
            && (self.start_time == earlier.start_time
                || self.start_time.is_none()
                || earlier.start_time.is_none())
    }
}

/// Remembers what the previous frame counted, to turn counters into rates.
#[derive(Debug, Default)]
pub struct Live {
    /// Each listed process's totals at the previous frame, by pid. Empty before the first
    /// frame: at attach every count was zero.
    previous: BTreeMap<u32, Vec<(Identity, Totals)>>,
    /// When the previous frame's snapshot was taken, in ns since attach (0 before the first
    /// frame, whose rates so cover everything since attach).
    previous_ns: u64,
    /// Every process's totals together at the previous plain line drawn from totals.
    previous_sum: Totals,
}

/// One row of the screen.
struct Row<'a> {
    p: &'a ProcessView,
    totals: Totals,
    rates: Rates,
}

/// The Go runtime's own figures of the named Go processes, under the screen's table: what
/// the runtime says it holds, next to RSS above.
pub fn go_runtime_screen(processes: &[GoProcess]) -> String {
    let mut out = String::new();
    if processes.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nGo runtime's own figures\n{:>7} {:<15} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "PID", "COMM", "HEAPINUSE", "HEAPIDLE", "RELEASED", "STACKS", "SYS−RELEASED", "NEXTGC"
    );
    for GoProcess {
        pid,
        comm,
        figures: f,
        ..
    } in processes
    {
        let _ = writeln!(
            out,
            "{pid:>7} {:<15} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}",
            truncate(comm, 15),
            human_bytes(f.heap_inuse.bytes),
            human_bytes(f.heap_idle.bytes),
            human_bytes(f.heap_released.bytes),
            human_bytes(f.stack_inuse.bytes),
            human_bytes(f.ready.bytes),
            next_gc(f),
        );
    }
    out
}

/// The same in a few words per process, for the plain line.
pub fn go_runtime_line(processes: &[GoProcess]) -> String {
    processes
        .iter()
        .map(
            |GoProcess {
                 pid, figures: f, ..
             }| {
                format!(
                    "; go {pid}: heap inuse {} idle {} released {}",
                    human_bytes(f.heap_inuse.bytes),
                    human_bytes(f.heap_idle.bytes),
                    human_bytes(f.heap_released.bytes)
                )
            },
        )
        .collect()
}

/// NextGC, or `none` with GOGC off and no limit (the goal is out of reach).
fn next_gc(f: &Figures) -> String {
    if f.gogc.is_none() && f.gomemlimit.is_none() {
        "none".to_owned()
    } else {
        human_bytes(f.next_gc.bytes)
    }
}

impl Live {
    /// The next full screen (terminal).
    /// Given the terminal's `size`, only the process rows that fit are drawn (lines are cut
    /// to its width by [`fit`]).
    pub fn screen(
        &mut self,
        snapshot: &Snapshot,
        top: Option<usize>,
        size: Option<Size>,
    ) -> String {
        let rows = self.rows(snapshot);
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
        // The last line stays empty: a newline there would scroll the title away.
        let fits = size.map_or(usize::MAX, |s| {
            s.rows.saturating_sub(SCREEN_OVERHEAD + 1).max(1)
        });
        let shown = top.unwrap_or(usize::MAX).min(fits);
        for row in rows.iter().take(shown) {
            let m = &row.p.mappings;
            let _ = writeln!(
                out,
                "{:>7} {:<15} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8} {:>10} {:>10}",
                row.p.pid,
                truncate(&row.p.comm, 15),
                human_bytes(row.totals.free),
                human_bytes(row.totals.dontneed),
                human_bytes(whole(row.rates.released)),
                human_bytes(m.grown_bytes()),
                human_bytes(m.shrunk_bytes()),
                whole(row.rates.minor),
                whole(row.rates.major),
                resident(row.p).text(),
                lazy_free(row.p).text(),
            );
            // With --stacks: where most of its bytes came from.
            if let Some(top) = row.p.stacks.as_ref().and_then(|s| s.top.first()) {
                let _ = writeln!(out, "{:>7} ↳ {}", "", truncate(&top.brief(4), 120));
            }
        }
        if rows.len() > shown {
            let hint = if shown == fits {
                "a taller terminal, --sort"
            } else {
                "--top, --sort"
            };
            let _ = writeln!(out, "… {} more ({hint})", rows.len() - shown);
        }
        out
    }

    /// The next plain line (not a terminal): totals over every process selected, those the
    /// session let go to bound its memory included (so they never go down); rates and memory
    /// over the listed ones.
    pub fn line(&mut self, snapshot: &Snapshot) -> String {
        if snapshot.processes.len() < snapshot.listed {
            return self.line_from_totals(snapshot);
        }
        let rows = self.rows(snapshot);
        let lost = snapshot.lost.total();
        let elapsed = Duration::from_nanos(snapshot.elapsed_ns);
        let released_with = |advice: u32| {
            let madvise = &snapshot.totals.madvise;
            madvise
                .iter()
                .find(|a| a.advice == advice)
                .map_or(0, |a| a.bytes)
        };
        let totals = Totals {
            free: released_with(advice::FREE),
            dontneed: released_with(advice::DONTNEED),
            ..Totals::default()
        };
        let mut rates = Rates::default();
        for row in &rows {
            rates.minor += row.rates.minor;
            rates.major += row.rates.major;
            rates.released += row.rates.released;
        }
        let mut line = format!("{:.1}s", elapsed.as_secs_f64());
        if let [row] = rows.as_slice() {
            let _ = write!(line, " pid {} ({})", row.p.pid, row.p.comm);
        } else {
            let _ = write!(line, " {} processes", rows.len());
        }
        if snapshot.forgotten > 0 {
            let _ = write!(
                line,
                " (+{} no longer listed, still counted)",
                snapshot.forgotten
            );
        }
        let _ = write!(
            line,
            ": released FREE {} DONTNEED {} ({}/s); faults {}/s minor {}/s major; rss {} lazyfree {}; lost {lost}",
            human_bytes(totals.free),
            human_bytes(totals.dontneed),
            human_bytes(whole(rates.released)),
            whole(rates.minor),
            whole(rates.major),
            Amount::sum(rows.iter().map(|r| resident(r.p))).text(),
            Amount::sum(rows.iter().map(|r| lazy_free(r.p))).text(),
        );
        line
    }

    /// The plain line from every process's totals together, when the snapshot lists only the
    /// top processes (system-wide): rates are the totals' change since the previous line, so
    /// they include processes that exited in between; RSS is the kernel's counters of the live
    /// processes (`≥` while some counter has not changed since attach), LazyFree unknown (not
    /// read system-wide).
    fn line_from_totals(&mut self, snapshot: &Snapshot) -> String {
        let t = &snapshot.totals;
        let released_with = |advice: u32| {
            t.madvise
                .iter()
                .find(|a| a.advice == advice)
                .map_or(0, |a| a.bytes)
        };
        let now = Totals {
            minor: t.faults.minor,
            major: t.faults.major,
            released: t.released_bytes,
            free: released_with(advice::FREE),
            dontneed: released_with(advice::DONTNEED),
        };
        let seconds = Duration::from_nanos(snapshot.elapsed_ns.saturating_sub(self.previous_ns))
            .as_secs_f64();
        let rates = Rates::between(self.previous_sum, now, seconds);
        self.previous_sum = now;
        self.previous_ns = snapshot.elapsed_ns;
        // Rows are not kept: a later frame that lists every process counts from zero again.
        self.previous = BTreeMap::new();
        let resident: u64 = RESIDENT
            .iter()
            .filter_map(|&m| t.rss.iter().find(|(member, _)| *member == m))
            .map(|(_, bytes)| *bytes)
            .sum();
        let rss = if t.rss_partial {
            Amount::AtLeast(resident)
        } else {
            Amount::Exactly(resident)
        };
        let mut line = format!(
            "{:.1}s {} processes",
            Duration::from_nanos(snapshot.elapsed_ns).as_secs_f64(),
            snapshot.listed
        );
        if snapshot.forgotten > 0 {
            let _ = write!(
                line,
                " (+{} no longer listed, still counted)",
                snapshot.forgotten
            );
        }
        let _ = write!(
            line,
            ": released FREE {} DONTNEED {} ({}/s); faults {}/s minor {}/s major; rss {} lazyfree ?; lost {}",
            human_bytes(now.free),
            human_bytes(now.dontneed),
            human_bytes(whole(rates.released)),
            whole(rates.minor),
            whole(rates.major),
            rss.text(),
            snapshot.lost.total(),
        );
        line
    }

    /// The snapshot's processes with their rates since the previous frame (since attach for
    /// the first); processes no longer listed move to [`Departed`].
    fn rows<'a>(&mut self, snapshot: &'a Snapshot) -> Vec<Row<'a>> {
        let seconds = Duration::from_nanos(snapshot.elapsed_ns.saturating_sub(self.previous_ns))
            .as_secs_f64();
        let before = self.take_previous(&snapshot.processes);
        let rows: Vec<Row<'a>> = snapshot
            .processes
            .iter()
            .zip(before)
            .map(|(p, before)| {
                let totals = Totals::of(p);
                Row {
                    p,
                    totals,
                    rates: Rates::between(before, totals, seconds),
                }
            })
            .collect();
        self.previous = BTreeMap::new();
        for row in &rows {
            let entry = (Identity::of(row.p), row.totals);
            self.previous.entry(row.p.pid).or_default().push(entry);
        }
        self.previous_ns = snapshot.elapsed_ns;
        rows
    }

    /// Each process's totals at the previous frame (zero if it was not listed), in the order
    /// of `processes`.
    fn take_previous(&mut self, processes: &[ProcessView]) -> Vec<Totals> {
        let mut previous = std::mem::take(&mut self.previous);
        let mut before: Vec<Option<Totals>> = vec![None; processes.len()];
        // Exact identities first, so a process whose start time is not known yet cannot take
        // the place of the one that has it.
        for exact in [true, false] {
            for (slot, p) in before.iter_mut().zip(processes) {
                let me = Identity::of(p);
                let Some(earlier) = previous.get_mut(&p.pid).filter(|_| slot.is_none()) else {
                    continue;
                };
                let same = |(was, _): &(Identity, Totals)| {
                    if exact { *was == me } else { me.may_be(*was) }
                };
                if let Some(at) = earlier.iter().position(same) {
                    *slot = Some(earlier.swap_remove(at).1);
                }
            }
        }
        before.into_iter().map(Option::unwrap_or_default).collect()
    }
}

/// A rate as a whole number, never negative: an f64 sum of no rows is -0.0, which `{:.0}`
/// prints as "-0" (the cast takes -0.0, like anything below zero, to 0).
fn whole(rate: f64) -> u64 {
    rate.round() as u64
}

/// A size as far as memtrace knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Amount {
    Exactly(u64),
    /// What is known of it; more is not.
    AtLeast(u64),
    Unknown,
}

impl Amount {
    /// The sum of the parts (zero, exactly, of no parts).
    fn sum(parts: impl Iterator<Item = Self>) -> Self {
        parts.reduce(Self::plus).unwrap_or(Self::Exactly(0))
    }

    /// Exact when both are, unknown when neither is known, else at least the known part.
    fn plus(self, other: Self) -> Self {
        match (self, other) {
            (Self::Exactly(a), Self::Exactly(b)) => Self::Exactly(a + b),
            (Self::Unknown, Self::Unknown) => Self::Unknown,
            (a, b) => Self::AtLeast(a.known() + b.known()),
        }
    }

    fn known(self) -> u64 {
        match self {
            Self::Exactly(bytes) | Self::AtLeast(bytes) => bytes,
            Self::Unknown => 0,
        }
    }

    fn text(self) -> String {
        match self {
            Self::Exactly(bytes) => human_bytes(bytes),
            Self::AtLeast(bytes) => format!("≥{}", human_bytes(bytes)),
            Self::Unknown => "?".to_owned(),
        }
    }
}

/// The kernel's RSS counters that count resident pages (`swap` counts swapped-out ones).
const RESIDENT: [RssMember; 3] = [RssMember::File, RssMember::Anon, RssMember::Shmem];

/// A process's resident memory: none once it is known to have exited; smaps_rollup's Rss where
/// it is sampled (the named targets, read just before the frame), or /proc/PID/status's VmRSS
/// where smaps_rollup is refused; else the kernel's counters as
/// rss_stat last reported them, which know a member only once it changed while traced
/// (system-wide, nothing else is read).
fn resident(p: &ProcessView) -> Amount {
    // Its last counters and sample keep the size it had before it exited.
    if p.exited {
        return Amount::Exactly(0);
    }
    if let Some(smaps) = p.smaps_rollup.last {
        return Amount::Exactly(smaps.rss);
    }
    // Where smaps_rollup is refused, /proc/PID/status reads the same counters.
    if let Some(status) = p.smaps_rollup.status {
        return Amount::Exactly(status.rss);
    }
    let members = p
        .rss
        .size
        .iter()
        .filter(|(member, _)| RESIDENT.contains(member))
        .map(|(_, size)| size.map_or(Amount::Unknown, Amount::Exactly));
    Amount::sum(members)
}

/// LazyFree, from smaps_rollup: known only where it is sampled.
fn lazy_free(p: &ProcessView) -> Amount {
    if p.exited {
        return Amount::Exactly(0);
    }
    p.smaps_rollup
        .last
        .map_or(Amount::Unknown, |s| Amount::Exactly(s.lazy_free))
}

fn truncate(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}

/// A screen fitted to the terminal: each line cut to its width (a wrapped line would push the
/// title off the top), and no more lines than leave its last row empty.
pub fn fit(screen: &str, size: Option<Size>) -> String {
    let Some(size) = size else {
        return screen.to_owned();
    };
    let (clear, body) = match screen.strip_prefix(CLEAR) {
        Some(body) => (CLEAR, body),
        None => ("", screen),
    };
    let mut out = String::from(clear);
    for line in body.lines().take(size.rows.saturating_sub(1).max(1)) {
        out.push_str(&truncate(line, size.cols));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{selection::Selection, snapshot::Window},
        kernel::{
            LostCounts,
            procfs::SmapsRollup,
            status::{Resident, StatusMemory},
        },
        model::{
            Model,
            attribution::{Bound, Reading, Rss},
            event::{Event, Spawn, test_madvise},
        },
    };
    use memtrace_common::lost::Lost;

    const MIB: u64 = 1 << 20;

    fn release(model: &mut Model, pid: u32, advice: u32, len: u64) {
        model.record(&test_madvise(pid, advice, len, None));
    }

    /// A process created while traced, whose threads' fault counters read `(minor, major)`.
    fn faulted(model: &mut Model, pid: u32, minor: u64, major: u64) {
        model.attribution.born_while_traced(pid);
        model
            .attribution
            .sample_task_faults(pid, &[(pid, minor, major)]);
    }

    fn at_ms(model: &Model, ms: u64) -> Snapshot {
        Snapshot::new(
            model,
            &Selection::default(),
            Window {
                elapsed_ns: ms * 1_000_000,
                ..Window::default()
            },
        )
    }

    fn at(model: &Model, secs: u64) -> Snapshot {
        at_ms(model, secs * 1000)
    }

    fn row(screen: &str) -> &str {
        screen.lines().nth(2).unwrap_or_default()
    }

    #[test]
    fn the_first_frame_has_rates_since_attach() {
        let mut model = Model::default();
        model.attribution.name(7, "server");
        release(&mut model, 7, advice::FREE, 4 * MIB);
        faulted(&mut model, 7, 300, 2);
        let mut live = Live::default();
        // Two seconds after attach, when every count was zero.
        let first = live.screen(&at(&model, 2), None, None);
        assert!(first.starts_with(CLEAR));
        assert_eq!(
            row(&first),
            "      7 server             4.0 MiB        0 B    2.0 MiB        0 B        0 B       150        1          ?          ?"
        );
        assert_eq!(
            Live::default().line(&at(&model, 2)),
            "2.0s pid 7 (server): released FREE 4.0 MiB DONTNEED 0 B (2.0 MiB/s); faults 150/s minor 1/s major; rss ? lazyfree ?; lost 0"
        );
    }

    /// In a 60×15 terminal, 30 processes: the rows that fit, none wrapped, the last line empty.
    #[test]
    fn a_small_terminal_gets_the_rows_that_fit_cut_to_its_width() {
        let mut model = Model::default();
        for pid in 1..=30 {
            model.attribution.name(pid, "server");
            release(&mut model, pid, advice::FREE, u64::from(pid) * MIB);
        }
        let size = Size { rows: 15, cols: 60 };
        let mut live = Live::default();
        let screen = fit(&live.screen(&at(&model, 2), None, Some(size)), Some(size));
        let body = screen.strip_prefix(CLEAR).expect("starts with a clear");
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 14, "{screen}");
        assert!(lines.iter().all(|l| l.chars().count() <= 60), "{screen}");
        // Title, heads, 11 rows, and how many more.
        assert_eq!(
            lines.iter().filter(|l| l.contains(" server ")).count(),
            11,
            "{screen}"
        );
        assert_eq!(lines[13], "… 19 more (a taller terminal, --sort)");
        // --top below what fits keeps its own hint; no size, nothing cut.
        let top = live.screen(&at(&model, 3), Some(5), Some(size));
        assert!(top.contains("… 25 more (--top, --sort)"), "{top}");
        let whole = live.screen(&at(&model, 4), None, None);
        assert_eq!(fit(&whole, None), whole);
        assert_eq!(whole.lines().filter(|l| l.contains(" server ")).count(), 30);
    }

    #[test]
    fn later_rates_cover_the_time_since_the_previous_frame() {
        let mut model = Model::default();
        model.attribution.name(7, "server");
        faulted(&mut model, 7, 100, 0);
        let mut live = Live::default();
        live.screen(&at(&model, 1), None, None);
        release(&mut model, 7, advice::DONTNEED, 3 * MIB);
        model.attribution.sample_task_faults(7, &[(7, 400, 0)]);
        model.lost = LostCounts::default().with(Lost::RingFull, vec![3]);
        // The frame came 2.5 s after the previous one, whatever the interval asked for.
        let next = live.screen(&at_ms(&model, 3500), None, None);
        assert!(next.contains("lost events 3 (undercounts!)"), "{next}");
        assert_eq!(
            row(&next),
            "      7 server                 0 B    3.0 MiB    1.2 MiB        0 B        0 B       120        0          ?          ?"
        );
    }

    #[test]
    fn plain_line_for_one_process_and_for_many() {
        let mut model = Model::default();
        model.attribution.name(7, "server");
        release(&mut model, 7, advice::DONTNEED, 8192);
        let mut live = Live::default();
        assert_eq!(
            live.line(&at(&model, 1)),
            "1.0s pid 7 (server): released FREE 0 B DONTNEED 8.0 KiB (8.0 KiB/s); faults 0/s minor 0/s major; rss ? lazyfree ?; lost 0"
        );
        release(&mut model, 8, advice::FREE, 4096);
        assert_eq!(
            live.line(&at(&model, 2)),
            "2.0s 2 processes: released FREE 4.0 KiB DONTNEED 8.0 KiB (4.0 KiB/s); faults 0/s minor 0/s major; rss ? lazyfree ?; lost 0"
        );
    }

    #[test]
    fn no_rate_reads_minus_zero() {
        // The cause: Rust sums f64s from -0.0, so a sum of no rows formats as "-0".
        assert_eq!(
            format!("{:.0}", std::iter::empty::<f64>().sum::<f64>()),
            "-0"
        );
        assert_eq!(whole(-0.0), 0);
        let mut live = Live::default();
        let model = Model::default();
        for secs in 1..=2 {
            assert_eq!(
                live.line(&at(&model, secs)),
                format!(
                    "{secs}.0s 0 processes: released FREE 0 B DONTNEED 0 B (0 B/s); faults 0/s minor 0/s major; rss 0 B lazyfree 0 B; lost 0"
                )
            );
        }
    }

    #[test]
    fn resident_memory_is_what_is_known_of_it() {
        let mut model = Model::default();
        model.attribution.name(7, "seen");
        model.attribution.name(8, "unseen");
        release(&mut model, 8, advice::FREE, 4096);
        // rss_stat reported file and anon (and swap, which is not resident), not shmem yet.
        let mut rss = Rss {
            size: [Some(MIB), Some(2 * MIB), Some(5 * MIB), None],
            ..Rss::default()
        };
        model.attribution.set_rss(BTreeMap::from([(7, rss)]));
        let mut live = Live::default();
        assert!(
            live.line(&at(&model, 1))
                .contains("; rss ≥3.0 MiB lazyfree ?;")
        );
        let screen = live.screen(&at(&model, 2), None, None);
        assert_eq!(
            screen.lines().skip(2).collect::<Vec<_>>(),
            [
                "      8 unseen             4.0 KiB        0 B        0 B        0 B        0 B         0        0          ?          ?",
                "      7 seen                   0 B        0 B        0 B        0 B        0 B         0        0   ≥3.0 MiB          ?",
            ]
        );
        // Every resident member seen: exact.
        rss.size[RssMember::Shmem as usize] = Some(MIB);
        model
            .attribution
            .set_rss(BTreeMap::from([(7, rss), (8, rss)]));
        assert!(
            live.line(&at(&model, 3))
                .contains("; rss 8.0 MiB lazyfree ?;")
        );
        // smaps_rollup, where sampled, is read just before the frame: it wins.
        let smaps = SmapsRollup {
            rss: 6 * MIB,
            lazy_free: MIB,
            ..SmapsRollup::default()
        };
        model.attribution.sample_smaps(7, smaps);
        model.attribution.sample_smaps(8, smaps);
        assert!(
            live.line(&at(&model, 4))
                .contains("; rss 12.0 MiB lazyfree 2.0 MiB;")
        );
        // Where smaps_rollup is refused, /proc/PID/status's RSS: LazyFree stays unknown.
        let mut refused = Model::default();
        refused.attribution.name(9, "daemon");
        let status = StatusMemory {
            rss: 5 * MIB,
            anon: 4 * MIB,
            file: MIB,
            ..StatusMemory::default()
        };
        refused
            .attribution
            .sample_resident(9, Resident::Status(status, "refused"));
        assert!(
            live.line(&at(&refused, 5))
                .contains("; rss 5.0 MiB lazyfree ?;")
        );
    }

    #[test]
    fn totals_keep_what_processes_no_longer_listed_had_counted() {
        let mut model = Model::default();
        model.attribution.name(7, "gone");
        model.attribution.name(8, "stays");
        release(&mut model, 7, advice::DONTNEED, MIB);
        release(&mut model, 8, advice::DONTNEED, 2 * MIB);
        let mut live = Live::default();
        assert!(
            live.line(&at(&model, 1))
                .starts_with("1.0s 2 processes: released FREE 0 B DONTNEED 3.0 MiB (3.0 MiB/s)")
        );
        // The session lets go of exited processes past its limit: 7 has exited.
        for pid in [7, 8] {
            let serial = model.attribution.serial_of(pid).unwrap();
            model
                .attribution
                .settle_cgroup(pid, serial, Some("/jobs".to_owned()));
        }
        let serial = model.attribution.serial_of(7).unwrap();
        model.attribution.read(7, serial, Reading::default());
        let bound = Bound {
            max_processes: 1,
            keep_top: 0,
            sort: crate::cli::SortKey::Released,
        };
        assert_eq!(model.bound(&bound, |_| true), vec![7]);
        assert_eq!(
            live.line(&at(&model, 2)),
            "2.0s pid 8 (stays) (+1 no longer listed, still counted): released FREE 0 B DONTNEED 3.0 MiB (0 B/s); faults 0/s minor 0/s major; rss ? lazyfree ?; lost 0"
        );
        release(&mut model, 8, advice::DONTNEED, MIB);
        assert!(live.line(&at(&model, 3)).contains(
            "(+1 no longer listed, still counted): released FREE 0 B DONTNEED 4.0 MiB (1.0 MiB/s)"
        ));
    }

    /// System-wide, the line is drawn from the totals of every process, not from a view of
    /// each: the same numbers, and rates that include processes exited in between.
    #[test]
    fn a_line_from_totals_says_what_a_line_from_rows_says() {
        let mut model = Model::default();
        for pid in [7, 8] {
            model.attribution.name(pid, "p");
            release(&mut model, pid, advice::DONTNEED, MIB);
            faulted(&mut model, pid, 100, 1);
            let serial = model.attribution.serial_of(pid).unwrap();
            model
                .attribution
                .settle_cgroup(pid, serial, Some("/jobs".to_owned()));
        }
        model.attribution.set_rss(BTreeMap::from([(
            7,
            Rss {
                size: [Some(MIB), Some(2 * MIB), None, None],
                ..Rss::default()
            },
        )]));
        let frame = |model: &Model, secs: u64| {
            Snapshot::new(
                model,
                &Selection::default(),
                Window {
                    elapsed_ns: secs * 1_000_000_000,
                    detail: crate::analysis::snapshot::Detail::Frame { rows: Some(1) },
                    ..Window::default()
                },
            )
        };
        let (mut by_rows, mut by_totals) = (Live::default(), Live::default());
        assert_eq!(
            by_totals.line(&frame(&model, 2)),
            by_rows.line(&at(&model, 2)),
        );
        assert!(
            by_totals
                .line(&frame(&model, 2))
                .starts_with("2.0s 2 processes: released FREE 0 B DONTNEED 2.0 MiB"),
        );
        release(&mut model, 8, advice::DONTNEED, 2 * MIB);
        let line = by_totals.line(&frame(&model, 4));
        assert!(line.contains("DONTNEED 4.0 MiB (1.0 MiB/s)"), "{line}");
        // Shmem of pid 7 and every counter of pid 8 never changed: at least.
        assert!(line.contains("; rss ≥3.0 MiB lazyfree ?;"), "{line}");
    }

    #[test]
    fn a_pid_passed_to_a_new_process_is_another_row() {
        let mut model = Model::default();
        model.attribution.name(5, "old");
        model.attribution.set_start_time(5, 100);
        release(&mut model, 5, advice::DONTNEED, MIB);
        let mut live = Live::default();
        live.line(&at(&model, 1));
        // The old process ended and a new one got its pid.
        model.record(&Event::Spawn(Spawn {
            kind: 0,
            parent: 1,
            child: 5,
            followed: 0,
        }));
        model.attribution.name(5, "new");
        model.attribution.set_start_time(5, 200);
        release(&mut model, 5, advice::DONTNEED, 2 * MIB);
        let screen = live.screen(&at(&model, 2), None, None);
        // The old one keeps its count, with no rate and no memory; the new one counts from 0.
        assert_eq!(
            screen.lines().skip(2).collect::<Vec<_>>(),
            [
                "      5 new                    0 B    2.0 MiB    2.0 MiB        0 B        0 B         0        0          ?          ?",
                "      5 old                    0 B    1.0 MiB        0 B        0 B        0 B         0        0        0 B        0 B",
            ]
        );
        assert!(
            live.line(&at(&model, 3))
                .starts_with("3.0s 2 processes: released FREE 0 B DONTNEED 3.0 MiB (0 B/s)")
        );
    }

    #[test]
    fn go_runtime_figures_under_the_table_and_on_the_line() {
        let figures = crate::analysis::golang::heap::example();
        let go = [GoProcess {
            pid: 42,
            start_time: Some(7),
            comm: "svc".to_owned(),
            cgroup: None,
            figures: &figures,
        }];
        let screen = go_runtime_screen(&go);
        assert!(screen.contains("Go runtime's own figures"), "{screen}");
        assert!(
            screen.contains("     42 svc               10.0 MiB"),
            "{screen}"
        );
        assert_eq!(
            go_runtime_line(&go),
            "; go 42: heap inuse 10.0 MiB idle 6.0 MiB released 4.0 MiB"
        );
        assert_eq!(go_runtime_screen(&[]), "");
    }
}
