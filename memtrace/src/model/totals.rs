//! Counts of many processes summed: a cgroup's, or the machine's. A long system-wide run keeps
//! a bounded number of processes; the exited ones it lets go are folded here first, into the
//! cgroup they were counted in, so no total ever loses what a process counted. Pure.

use std::collections::BTreeMap;

use memtrace_common::events::{fault::FaultCounts, rss::RSS_MEMBERS, stall::ReclaimKind};

use super::{
    counts::{AdviceTotals, CallBytes, MappingTotals},
    reclaim::StallStats,
};

/// The cgroup a process is counted in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CgroupKey {
    /// Its path in the hierarchy that holds the memory controller (see `kernel::cgroup`).
    Path(String),
    /// memtrace could not learn it: the process was gone before /proc could be read, and
    /// neither the kernel nor its parent said.
    Unknown,
}

impl CgroupKey {
    /// The path, when known.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Path(path) => Some(path),
            Self::Unknown => None,
        }
    }
}

/// What processes counted over the window, summed. Every count only grows as processes are
/// added; RSS, a current quantity, is not here (it is summed over live processes only, where
/// it is shown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Processes summed.
    pub processes: u64,
    pub madvise: BTreeMap<u32, AdviceTotals>,
    pub mappings: MappingTotals,
    /// Minor and major faults from the task counters, of the processes whose counters were
    /// read.
    pub minor_faults: u64,
    pub major_faults: u64,
    /// User-mode faults counted in the kernel (`--fault-events`).
    pub user_faults: FaultCounts,
    pub fault_events: u64,
    /// Bytes reclaim and the OOM reaper took, per RSS member.
    pub taken: [u64; RSS_MEMBERS],
    /// Reclaim stalls, per kind.
    pub stalls: BTreeMap<ReclaimKind, StallStats>,
}

impl Totals {
    /// Adds another sum (a cgroup's folded processes to its live ones).
    pub fn add(&mut self, other: &Self) {
        self.processes += other.processes;
        for (&advice, totals) in &other.madvise {
            let sum = self.madvise.entry(advice).or_default();
            sum.calls += totals.calls;
            sum.failed += totals.failed;
            sum.bytes += totals.bytes;
        }
        add_mappings(&mut self.mappings, &other.mappings);
        self.minor_faults += other.minor_faults;
        self.major_faults += other.major_faults;
        self.user_faults.user += other.user_faults.user;
        self.user_faults.write += other.user_faults.write;
        self.fault_events += other.fault_events;
        for (sum, taken) in self.taken.iter_mut().zip(other.taken) {
            *sum += taken;
        }
        for (&kind, stats) in &other.stalls {
            self.stalls.entry(kind).or_default().merge(stats);
        }
    }

    /// Takes out what `earlier` counted, which `self` includes (a process's counts from
    /// before it moved to another cgroup), leaving the process count as it is.
    pub fn remove(&mut self, earlier: &Self) {
        for (advice, totals) in &earlier.madvise {
            if let Some(sum) = self.madvise.get_mut(advice) {
                sum.calls = sum.calls.saturating_sub(totals.calls);
                sum.failed = sum.failed.saturating_sub(totals.failed);
                sum.bytes = sum.bytes.saturating_sub(totals.bytes);
            }
        }
        remove_mappings(&mut self.mappings, &earlier.mappings);
        self.minor_faults = self.minor_faults.saturating_sub(earlier.minor_faults);
        self.major_faults = self.major_faults.saturating_sub(earlier.major_faults);
        let user = &mut self.user_faults;
        user.user = user.user.saturating_sub(earlier.user_faults.user);
        user.write = user.write.saturating_sub(earlier.user_faults.write);
        self.fault_events = self.fault_events.saturating_sub(earlier.fault_events);
        for (sum, taken) in self.taken.iter_mut().zip(earlier.taken) {
            *sum = sum.saturating_sub(taken);
        }
        for (kind, stats) in &earlier.stalls {
            if let Some(sum) = self.stalls.get_mut(kind) {
                sum.remove(stats);
            }
        }
    }

    /// Bytes given back by releasing advice.
    pub fn released_bytes(&self) -> u64 {
        self.madvise
            .iter()
            .filter(|(advice, _)| memtrace_common::advice::is_release(**advice))
            .map(|(_, totals)| totals.bytes)
            .sum()
    }
}

pub(super) fn add_mappings(sum: &mut MappingTotals, m: &MappingTotals) {
    let add = |sum: &mut CallBytes, c: CallBytes| {
        sum.calls += c.calls;
        sum.bytes += c.bytes;
    };
    for (&kind, &c) in &m.mmap {
        add(sum.mmap.entry(kind).or_default(), c);
    }
    add(&mut sum.munmap, m.munmap);
    add(&mut sum.mremap_grow, m.mremap_grow);
    add(&mut sum.mremap_shrink, m.mremap_shrink);
    add(&mut sum.brk_grow, m.brk_grow);
    add(&mut sum.brk_shrink, m.brk_shrink);
    sum.brk_unknown += m.brk_unknown;
    for (&syscall, &failed) in &m.failed {
        *sum.failed.entry(syscall).or_default() += failed;
    }
}

fn remove_mappings(sum: &mut MappingTotals, m: &MappingTotals) {
    let remove = |sum: &mut CallBytes, c: CallBytes| {
        sum.calls = sum.calls.saturating_sub(c.calls);
        sum.bytes = sum.bytes.saturating_sub(c.bytes);
    };
    for (kind, &c) in &m.mmap {
        if let Some(sum) = sum.mmap.get_mut(kind) {
            remove(sum, c);
        }
    }
    remove(&mut sum.munmap, m.munmap);
    remove(&mut sum.mremap_grow, m.mremap_grow);
    remove(&mut sum.mremap_shrink, m.mremap_shrink);
    remove(&mut sum.brk_grow, m.brk_grow);
    remove(&mut sum.brk_shrink, m.brk_shrink);
    sum.brk_unknown = sum.brk_unknown.saturating_sub(m.brk_unknown);
    for (syscall, &failed) in &m.failed {
        if let Some(sum) = sum.failed.get_mut(syscall) {
            *sum = sum.saturating_sub(failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        attribution::Attribution,
        event::{MapKind, MapOp, Mapping, test_madvise},
    };
    use memtrace_common::advice;

    #[test]
    fn processes_add_up() {
        let mut a = Attribution::default();
        a.record(&test_madvise(5, advice::FREE, 8192, None));
        a.record(&test_madvise(6, advice::FREE, 4096, Some(libc::EINVAL)));
        a.record(&test_madvise(6, advice::NOHUGEPAGE, 4096, None));
        a.record(&crate::model::event::Event::Mapping(Mapping {
            tgid: 6,
            tid: 6,
            thread_comm: "m".into(),
            enter_ns: 0,
            exit_ns: 0,
            op: MapOp::Mmap {
                addr: 0,
                len: 4096,
                kind: MapKind::FilePrivate,
                prot: 1,
                fd: 3,
            },
            errno: None,
        }));
        a.sample_task_faults(5, &[(5, 10, 1)]);
        a.sample_task_faults(5, &[(5, 25, 2)]);
        let mut stall = StallStats::default();
        stall.add(5_000, 3, 4);
        let mut totals = Totals::default();
        for p in a.processes() {
            let stalls = (p.pid == 6).then_some((ReclaimKind::Memcg, &stall));
            p.sum_into(&mut totals, stalls);
        }
        assert_eq!(totals.processes, 2);
        assert_eq!(
            totals.madvise[&advice::FREE],
            AdviceTotals {
                calls: 2,
                failed: 1,
                bytes: 8192
            }
        );
        assert_eq!(totals.released_bytes(), 8192);
        assert_eq!(totals.mappings.mapped_bytes(), 4096);
        assert_eq!((totals.minor_faults, totals.major_faults), (15, 1));
        assert_eq!(totals.stalls[&ReclaimKind::Memcg].count, 1);
        let mut twice = totals.clone();
        twice.add(&totals);
        assert_eq!(twice.processes, 4);
        assert_eq!(twice.released_bytes(), 2 * 8192);
        assert_eq!(twice.stalls[&ReclaimKind::Memcg].nr_reclaimed, 6);
        assert_eq!(CgroupKey::Unknown.path(), None);
        assert_eq!(CgroupKey::Path("/a".into()).path(), Some("/a"));
    }
}
