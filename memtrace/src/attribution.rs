//! Per-process totals built from decoded events. Pure: fed events, never touches the kernel or
//! /proc, so every rule here is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use memtrace_common::advice;

use crate::events::{Event, Madvise};

/// Calls with one advice value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdviceTotals {
    /// Every call, failed ones included.
    pub calls: u64,
    /// Calls that returned an error (and so advised nothing).
    pub failed: u64,
    /// Bytes covered by the calls that succeeded.
    pub bytes: u64,
}

/// What memtrace knows about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    pub pid: u32,
    /// Process name; from /proc when it could be read, else the first calling thread's name.
    pub comm: String,
    /// madvise and process_madvise calls by advice value.
    pub madvise: BTreeMap<u32, AdviceTotals>,
    /// Other processes that advised this one's memory through process_madvise.
    pub advised_by: BTreeSet<u32>,
}

impl ProcessStats {
    /// Bytes given back by successful releasing advice (DONTNEED, FREE, REMOVE, PAGEOUT).
    pub fn released_bytes(&self) -> u64 {
        self.madvise
            .iter()
            .filter(|(advice, _)| advice::is_release(**advice))
            .map(|(_, totals)| totals.bytes)
            .sum()
    }
}

/// Totals for every process seen.
#[derive(Debug, Default)]
pub struct Attribution {
    processes: BTreeMap<u32, ProcessStats>,
    /// process_madvise calls whose target could not be resolved (the caller closed its pidfd or
    /// exited before memtrace looked), by advice. Charged to nobody rather than to the wrong
    /// process.
    pub unattributed: BTreeMap<u32, AdviceTotals>,
}

impl Attribution {
    pub fn record(&mut self, event: &Event) {
        match event {
            Event::Madvise(m) => self.record_madvise(m),
        }
    }

    fn record_madvise(&mut self, m: &Madvise) {
        if !m.target_known {
            add_call(self.unattributed.entry(m.advice).or_default(), m);
            return;
        }
        let process = self.process(m.tgid, &m.thread_comm);
        add_call(process.madvise.entry(m.advice).or_default(), m);
        if m.caller != m.tgid {
            process.advised_by.insert(m.caller);
        }
    }

    /// The stats of `pid`, created on first sight with `fallback_comm` as its name.
    fn process(&mut self, pid: u32, fallback_comm: &str) -> &mut ProcessStats {
        self.processes.entry(pid).or_insert_with(|| ProcessStats {
            pid,
            comm: fallback_comm.to_owned(),
            ..ProcessStats::default()
        })
    }

    /// Whether `pid` has been seen.
    pub fn knows(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Registers a process before any event (so it is reported even if it does nothing) or
    /// replaces its name with a better one (from /proc).
    pub fn name(&mut self, pid: u32, comm: &str) {
        self.process(pid, comm).comm = comm.to_owned();
    }

    pub fn processes(&self) -> impl Iterator<Item = &ProcessStats> {
        self.processes.values()
    }
}

fn add_call(totals: &mut AdviceTotals, m: &Madvise) {
    totals.calls += 1;
    match m.errno {
        Some(_) => totals.failed += 1,
        None => totals.bytes += m.len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn madvise(tgid: u32, tid: u32, advice: u32, len: u64, errno: Option<i32>) -> Event {
        Event::Madvise(Madvise {
            tgid,
            tid,
            caller: tgid,
            thread_comm: format!("t{tid}"),
            enter_ns: 1,
            exit_ns: 2,
            start: 0x7000_0000,
            len,
            advice,
            errno,
            pidfd: None,
            target_known: true,
        })
    }

    #[test]
    fn totals_by_advice_with_failures_apart() {
        let mut a = Attribution::default();
        for _ in 0..51 {
            a.record(&madvise(5, 5, advice::FREE, 4096, None));
            a.record(&madvise(5, 5, advice::DONTNEED, 4096, None));
        }
        a.record(&madvise(5, 5, advice::FREE, 4096, Some(libc::EINVAL)));
        let p = a.processes().next().unwrap();
        assert_eq!(
            p.madvise[&advice::FREE],
            AdviceTotals {
                calls: 52,
                failed: 1,
                bytes: 208_896
            }
        );
        assert_eq!(
            p.madvise[&advice::DONTNEED],
            AdviceTotals {
                calls: 51,
                failed: 0,
                bytes: 208_896
            }
        );
        assert_eq!(p.released_bytes(), 2 * 208_896);
    }

    #[test]
    fn hints_are_not_released_bytes() {
        let mut a = Attribution::default();
        a.record(&madvise(5, 5, advice::NOHUGEPAGE, 2 << 20, None));
        a.record(&madvise(5, 5, advice::HUGEPAGE, 2 << 20, None));
        let p = a.processes().next().unwrap();
        assert_eq!(p.released_bytes(), 0);
        assert_eq!(p.madvise[&advice::NOHUGEPAGE].bytes, 2 << 20);
    }

    #[test]
    fn threads_count_toward_their_process() {
        let mut a = Attribution::default();
        for tid in 5..9 {
            a.record(&madvise(5, tid, advice::DONTNEED, 8192, None));
        }
        a.record(&madvise(6, 6, advice::DONTNEED, 8192, None));
        let pids: Vec<_> = a
            .processes()
            .map(|p| (p.pid, p.madvise[&advice::DONTNEED].calls))
            .collect();
        assert_eq!(pids, vec![(5, 4), (6, 1)]);
        // The first thread seen names the process until /proc gives a better name.
        assert_eq!(a.processes().next().unwrap().comm, "t5");
        a.name(5, "server");
        assert_eq!(a.processes().next().unwrap().comm, "server");
    }

    #[test]
    fn process_madvise_is_charged_to_the_target() {
        let mut a = Attribution::default();
        let Event::Madvise(mut m) = madvise(9, 3, advice::PAGEOUT, 65536, None);
        m.caller = 3;
        a.record(&Event::Madvise(m));
        let p = a.processes().next().unwrap();
        assert_eq!((p.pid, p.released_bytes()), (9, 65536));
        assert_eq!(p.advised_by.iter().copied().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn unresolved_process_madvise_is_charged_to_nobody() {
        let mut a = Attribution::default();
        let Event::Madvise(mut m) = madvise(3, 3, advice::PAGEOUT, 65536, None);
        m.pidfd = Some(5);
        m.target_known = false;
        a.record(&Event::Madvise(m));
        assert_eq!(a.processes().count(), 0);
        assert_eq!(
            a.unattributed[&advice::PAGEOUT],
            AdviceTotals {
                calls: 1,
                failed: 0,
                bytes: 65536
            }
        );
    }
}
