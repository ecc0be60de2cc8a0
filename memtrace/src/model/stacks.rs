//! Caller stacks counted with `--stacks`: the kernel's counts per process, call and stack, and
//! each stack's frames as named while its process lived. Pure: the session reads the kernel's
//! maps and symbolizes; this keeps what they gave.
//!
//! A process is its tgid and start time (`StackKey::start_ns`), so a reused pid's stacks never
//! add to an earlier holder's. Once a process has exited its counts are final: they move here
//! and their kernel entries are deleted ([`Stacks::retire`]), so a long run's kernel table holds
//! only live processes (where exits are seen: not in `memtrace reclaim`, not without BTF).

use std::collections::{BTreeMap, BTreeSet};

use memtrace_common::stacks::{StackCounts, StackKey, StackRef};

use crate::{
    kernel::{procfs, symbols::Stack},
    model::event::Event,
};

/// A process as the kernel's stack keys name it: tgid and start time (ns).
type Process = (u32, u64);

/// Samples an ended process is kept after its last key was retired: a count the kernel makes
/// after the last read (a stall while the process exits) makes its key again, to retire too.
const QUIET_SAMPLES: u8 = 2;

/// A process whose counts are final.
#[derive(Clone, Copy, Debug)]
struct Ended {
    /// Whether its counts are kept (false once it was let go of: [`Stacks::forget`]).
    keep: bool,
    /// Samples since one last held a key of it.
    quiet: u8,
}

/// A process let go of before any of its keys was seen: `(pid, start in clock ticks)`, and
/// samples since.
type Pending = (u32, u64, u8);

/// Everything `--stacks` gathered.
#[derive(Debug, Default)]
pub struct Stacks {
    /// Whether stacks are counted in this run.
    pub enabled: bool,
    /// Clock ticks per second of /proc's start times (`_SC_CLK_TCK`); 0 when unknown.
    pub clock_hz: u64,
    /// The kernel's counts of entries it still holds, as of the latest sample (they only grow).
    live: BTreeMap<StackKey, StackCounts>,
    /// Counts of entries deleted from the kernel (their process exited).
    retired: BTreeMap<StackKey, StackCounts>,
    /// Processes whose exit was recorded since the last sample: the next sample's counts,
    /// read after it, are their last.
    exiting: BTreeSet<Process>,
    /// Processes whose counts the latest sample holds complete.
    ended: BTreeMap<Process, Ended>,
    /// Processes let go of whose keys were not seen yet.
    pending: Vec<Pending>,
    /// Frames of each stack, named when the kernel announced it.
    named: BTreeMap<StackRef, Stack>,
}

impl Stacks {
    /// Notes a process's exit from its last thread's exit record.
    pub fn record(&mut self, event: &Event) {
        if let Event::ThreadExit(t) = event
            && (t.group_dead == 1 || t.process_exiting == 1)
            && t.process_start_ns != 0
        {
            self.exiting.insert((t.tgid, t.process_start_ns));
        }
    }

    /// Takes the kernel's latest counts (read before the records since the last sample were
    /// drained).
    pub fn set_counts(&mut self, counts: impl IntoIterator<Item = (StackKey, StackCounts)>) {
        self.live.extend(counts);
    }

    /// The counts of processes known ended before the latest sample was read are complete:
    /// they move out of `live` (into `retired`, unless let go of), and their keys are returned
    /// for the caller to delete from the kernel. Processes whose exit came with the latest
    /// records wait for the next sample.
    pub fn retire(&mut self) -> Vec<StackKey> {
        self.claim_pending();
        let keys: Vec<StackKey> = self
            .live
            .keys()
            .filter(|k| self.ended.contains_key(&(k.tgid, k.start_ns)))
            .copied()
            .collect();
        for ended in self.ended.values_mut() {
            ended.quiet = ended.quiet.saturating_add(1);
        }
        for key in &keys {
            let process = (key.tgid, key.start_ns);
            let (Some(counts), Some(ended)) = (self.live.remove(key), self.ended.get_mut(&process))
            else {
                continue;
            };
            ended.quiet = 0;
            if ended.keep {
                add(self.retired.entry(*key).or_default(), &counts);
            }
        }
        self.ended.retain(|_, e| e.quiet <= QUIET_SAMPLES);
        for process in std::mem::take(&mut self.exiting) {
            let keep = !self.is_pending(process);
            self.ended
                .entry(process)
                .or_insert(Ended { keep, quiet: 0 });
        }
        keys
    }

    /// Drops what is kept of a process let go of (folded into its cgroup): `pid` started at
    /// `start_ticks`. Its kernel entries go too, now or once seen. Unknown start: nothing is
    /// dropped (it could be another process's with the same pid).
    pub fn forget(&mut self, pid: u32, start_ticks: Option<u64>) {
        let Some(ticks) = start_ticks else {
            return;
        };
        let hz = self.clock_hz;
        let of = |process: Process| started_as(process, (pid, ticks), hz);
        self.retired.retain(|k, _| !of((k.tgid, k.start_ns)));
        self.named.retain(|r, _| !of((r.tgid, r.start_ns)));
        for (&process, ended) in self.ended.iter_mut() {
            if of(process) {
                ended.keep = false;
            }
        }
        self.pending.push((pid, ticks, 0));
    }

    /// Live keys of processes let go of become ended, not kept; a marker lives a few samples.
    fn claim_pending(&mut self) {
        let hz = self.clock_hz;
        for &(pid, ticks, _) in &self.pending {
            for (key, _) in of_pid(&self.live, pid) {
                if started_as((key.tgid, key.start_ns), (pid, ticks), hz) {
                    self.ended.insert(
                        (key.tgid, key.start_ns),
                        Ended {
                            keep: false,
                            quiet: 0,
                        },
                    );
                }
            }
        }
        for pending in &mut self.pending {
            pending.2 += 1;
        }
        self.pending.retain(|p| p.2 <= QUIET_SAMPLES + 1);
    }

    /// Whether `process` was let go of.
    fn is_pending(&self, process: Process) -> bool {
        self.pending
            .iter()
            .any(|&(pid, ticks, _)| started_as(process, (pid, ticks), self.clock_hz))
    }

    /// Whether a stack's process was let go of: its names are not wanted any more.
    fn dropped(&self, stack: &StackRef) -> bool {
        let process = (stack.tgid, stack.start_ns);
        self.ended.get(&process).is_some_and(|e| !e.keep) || self.is_pending(process)
    }

    /// Keeps a stack's named frames; the first naming stands (the process may be gone when
    /// asked again).
    pub fn name(&mut self, stack: StackRef, frames: Stack) {
        if !self.dropped(&stack) {
            self.named.entry(stack).or_insert(frames);
        }
    }

    pub fn is_named(&self, stack: &StackRef) -> bool {
        self.named.contains_key(stack)
    }

    /// Stacks the kernel's counts refer to that have no names yet (their announcement was
    /// lost, or arrived before the counts).
    pub fn unnamed(&self) -> Vec<StackRef> {
        let mut missing: Vec<StackRef> = self
            .live
            .keys()
            .flat_map(stack_refs)
            .filter(|r| !self.named.contains_key(r))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// The counts of process `pid` started at `start_ticks` (clock ticks after boot, as
    /// /proc/PID/stat says), per key. A key without a start (no BTF), or a process whose start
    /// was not read, matches by pid alone.
    pub fn of(&self, pid: u32, start_ticks: Option<u64>) -> BTreeMap<StackKey, StackCounts> {
        let mut of = BTreeMap::new();
        for held in [&self.retired, &self.live] {
            for (key, counts) in of_pid(held, pid) {
                if same_start(key.start_ns, start_ticks, self.clock_hz) {
                    add(of.entry(*key).or_default(), counts);
                }
            }
        }
        of
    }

    /// A stack's frames, if named.
    pub fn frames(&self, stack: &StackRef) -> Option<&Stack> {
        self.named.get(stack)
    }
}

/// The entries of one pid's keys (keys sort by pid first).
fn of_pid(
    held: &BTreeMap<StackKey, StackCounts>,
    pid: u32,
) -> impl Iterator<Item = (&StackKey, &StackCounts)> {
    let first = StackKey {
        tgid: pid,
        ..StackKey::default()
    };
    held.range(first..).take_while(move |(k, _)| k.tgid == pid)
}

/// The stacks a key refers to: its user stack and its kernel stack, where it has them.
fn stack_refs(key: &StackKey) -> impl Iterator<Item = StackRef> + '_ {
    [(key.user, 0), (key.kernel, 1)]
        .into_iter()
        .filter(|&(id, _)| id != 0)
        .map(|(id, kernel)| StackRef {
            tgid: key.tgid,
            kernel,
            start_ns: key.start_ns,
            id,
        })
}

/// Whether `process` (its start known) is `pid` started at clock tick `ticks`.
fn started_as((tgid, start_ns): Process, (pid, ticks): (u32, u64), clock_hz: u64) -> bool {
    tgid == pid && start_ns != 0 && same_start(start_ns, Some(ticks), clock_hz)
}

/// Whether a key's start (`start_boottime` ns, 0 when unknown) is that of a process started
/// at `start_ticks`: the kernel's `nsec_to_clock_t` rounds down to clock ticks.
fn same_start(start_ns: u64, start_ticks: Option<u64>, clock_hz: u64) -> bool {
    match (start_ns, start_ticks) {
        (0, _) | (_, None) => true,
        _ if clock_hz == 0 => true,
        (ns, Some(start)) => procfs::ns_to_ticks(ns, clock_hz) == start,
    }
}

fn add(to: &mut StackCounts, counts: &StackCounts) {
    to.calls += counts.calls;
    to.failed += counts.failed;
    to.bytes += counts.bytes;
    to.stall_ns += counts.stall_ns;
    to.reclaimed_pages += counts.reclaimed_pages;
}

#[cfg(test)]
mod tests {
    use memtrace_common::{events::exit::ThreadExit, stacks::StackSite};

    use super::*;
    use crate::model::event;

    /// A hundred ticks a second: a process started at tick 7 started at 70 ms.
    const TICK_NS: u64 = 10_000_000;

    fn stacks() -> Stacks {
        Stacks {
            clock_hz: 100,
            ..Stacks::default()
        }
    }

    fn key(tgid: u32, start_tick: u64, user: u64) -> StackKey {
        StackKey {
            tgid,
            site: StackSite::Madvise as u32,
            detail: 4,
            start_ns: start_tick * TICK_NS + 1,
            user,
            ..StackKey::default()
        }
    }

    fn counts(calls: u64) -> StackCounts {
        StackCounts {
            calls,
            ..StackCounts::default()
        }
    }

    fn calls_of(stacks: &Stacks, pid: u32, start: Option<u64>) -> Vec<u64> {
        stacks.of(pid, start).values().map(|c| c.calls).collect()
    }

    fn exit(tgid: u32, start_tick: u64) -> Event {
        Event::ThreadExit(ThreadExit {
            group_dead: 1,
            process_exiting: 1,
            process_start_ns: start_tick * TICK_NS + 1,
            ..event::thread_exit(tgid, tgid)
        })
    }

    #[test]
    fn counts_per_process_and_unnamed_stacks() {
        let mut stacks = stacks();
        stacks.set_counts([(key(7, 7, 11), counts(1)), (key(8, 8, 12), counts(2))]);
        // A later sample replaces a key's counts and keeps keys no longer listed.
        stacks.set_counts([(key(7, 7, 11), counts(3))]);
        assert_eq!(calls_of(&stacks, 7, Some(7)), [3]);
        assert_eq!(calls_of(&stacks, 8, None), [2]);
        assert_eq!(stacks.unnamed().len(), 2);
        let named = stack_refs(&key(7, 7, 11)).next().expect("a user stack");
        stacks.name(named, Stack::default());
        assert_eq!(
            stacks.unnamed(),
            stack_refs(&key(8, 8, 12)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_reused_pid_counts_apart_from_the_process_before() {
        let mut stacks = stacks();
        stacks.set_counts([(key(7, 7, 11), counts(4)), (key(7, 9, 11), counts(1))]);
        assert_eq!(calls_of(&stacks, 7, Some(7)), [4]);
        assert_eq!(calls_of(&stacks, 7, Some(9)), [1]);
    }

    #[test]
    fn an_exited_process_is_retired_after_the_sample_read_past_its_exit() {
        let mut stacks = stacks();
        stacks.set_counts([(key(7, 7, 11), counts(4)), (key(8, 8, 12), counts(1))]);
        stacks.record(&exit(7, 7));
        // The sample read before the exit record was drained may miss its last calls.
        assert!(stacks.retire().is_empty());
        stacks.set_counts([(key(7, 7, 11), counts(5)), (key(8, 8, 12), counts(1))]);
        assert_eq!(stacks.retire(), [key(7, 7, 11)]);
        assert_eq!(calls_of(&stacks, 7, Some(7)), [5]);
        // A count made after its entry was deleted (a stall during the exit) adds to it, and
        // its new entry is deleted in turn.
        stacks.set_counts([(key(7, 7, 11), counts(1))]);
        assert_eq!(calls_of(&stacks, 7, Some(7)), [6]);
        assert_eq!(stacks.retire(), [key(7, 7, 11)]);
        assert_eq!(calls_of(&stacks, 7, Some(7)), [6]);
        assert_eq!(calls_of(&stacks, 8, Some(8)), [1]);
        // Quiet for a few samples: nothing more is kept of it but its counts.
        for _ in 0..=QUIET_SAMPLES {
            assert!(stacks.retire().is_empty());
        }
        assert!(stacks.ended.is_empty());
        assert_eq!(calls_of(&stacks, 7, Some(7)), [6]);
    }

    #[test]
    fn a_forgotten_process_leaves_nothing_behind() {
        let mut stacks = stacks();
        stacks.set_counts([(key(7, 7, 11), counts(4))]);
        stacks.record(&exit(7, 7));
        stacks.retire();
        // Let go of before its entries were retired: they still go from the kernel.
        stacks.forget(7, Some(7));
        stacks.set_counts([(key(7, 7, 11), counts(4))]);
        assert_eq!(stacks.retire(), [key(7, 7, 11)]);
        assert!(stacks.of(7, Some(7)).is_empty());
        leaves_nothing(&mut stacks);
    }

    /// A short-lived process let go of in the sample its keys first arrive: they are deleted
    /// from the kernel and not kept, nor are names that come back for it later.
    #[test]
    fn a_process_forgotten_before_its_keys_arrive_leaves_nothing_behind() {
        let mut stacks = stacks();
        stacks.forget(7, Some(7));
        stacks.set_counts([(key(7, 7, 11), counts(2)), (key(8, 8, 12), counts(1))]);
        stacks.record(&exit(7, 7));
        assert_eq!(stacks.retire(), [key(7, 7, 11)]);
        let late = stack_refs(&key(7, 7, 11)).next().expect("a user stack");
        stacks.name(late, Stack::default());
        assert!(!stacks.is_named(&late));
        assert!(stacks.of(7, Some(7)).is_empty());
        // Another process with the same pid, started later, is not touched.
        stacks.set_counts([(key(7, 9, 13), counts(3))]);
        leaves_nothing(&mut stacks);
        assert_eq!(calls_of(&stacks, 7, Some(9)), [3]);
        assert_eq!(calls_of(&stacks, 8, Some(8)), [1]);
    }

    /// After a few quiet samples no marker is left of a forgotten process.
    fn leaves_nothing(stacks: &mut Stacks) {
        for _ in 0..=QUIET_SAMPLES + 1 {
            stacks.retire();
        }
        assert!(
            stacks.ended.is_empty() && stacks.pending.is_empty(),
            "{stacks:?}"
        );
        assert!(
            stacks
                .retired
                .keys()
                .all(|k| k.tgid != 7 || k.start_ns != key(7, 7, 0).start_ns)
        );
    }
}
