//! Memory syscalls the kernel counted per process (`memtrace_common::events::totals`), taken
//! into the same totals per-call records build ([`AdviceTotals`], [`MappingTotals`]), so every
//! report reads them alike. Pure, like the rest of the model.
//!
//! The kernel's values are running totals of one process since its entry was made. A process
//! keeps the last copy taken in; a newer copy adds only what grew since. Copies come two ways:
//! read from the kernel's map on every sample (the process still runs, or its final copy is
//! still in the ring), and in the ring when the process exits or its pid passes on (the final
//! copy, in order with the records that close a process). `start_ns` (the process's start
//! time) tells which process, of those that had the pid, a copy is of.

use memtrace_common::events::totals::{
    AdviceCount, COUNTED_ADVICE, CallCount, MapSyscall, MmapKind, SyscallTotals,
};

use super::{
    attribution::{AdviceTotals, CallBytes, MappingTotals, ProcessStats},
    event::MapKind,
};

/// The kernel's last copy of a process's totals taken in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelCounted {
    /// Boxed: ~1 KiB, and most processes of a run with per-call records have none.
    taken: Box<SyscallTotals>,
    /// Whether it was the final copy (the process exited or its pid passed on).
    pub last: bool,
}

impl KernelCounted {
    /// When the process these totals are of started (ns since boot; 0 when unknown).
    pub fn start_ns(&self) -> u64 {
        self.taken.start_ns
    }
}

/// What to do with a copy read from the kernel's map, given the process the model holds for
/// its pid and what it holds of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Take it in: it is of the process the model holds for the pid.
    Take,
    /// Ignore it: its process's final copy was taken in already (the sample read the map
    /// before the final record arrived).
    Stale,
    /// The pid passed to another process without the model being told (its spawn record was
    /// lost): close the one it holds, then take the copy in for a new one.
    NewProcess,
}

/// Where a copy of the totals of a process started at `start_ns` goes: `current` is what the
/// model holds for its pid, `ended` the earlier holders of the pid.
pub fn fit<'a>(
    start_ns: u64,
    current: Option<&KernelCounted>,
    mut ended: impl Iterator<Item = &'a ProcessStats>,
) -> Fit {
    // Looked through only for a process the model holds no copy of yet (its first copy).
    let mut ended_already = || {
        start_ns != 0 && ended.any(|p| p.kernel.as_ref().is_some_and(|k| k.start_ns() == start_ns))
    };
    match current {
        Some(held) if start_ns == 0 || held.start_ns() == start_ns => match held.last {
            true => Fit::Stale,
            false => Fit::Take,
        },
        _ if ended_already() => Fit::Stale,
        Some(held) if held.start_ns() != 0 => Fit::NewProcess,
        _ => Fit::Take,
    }
}

/// Takes a copy of a process's kernel totals in: what grew since the last copy is added to
/// its totals by advice and by mapping kind. `last`: it is the final copy.
pub fn take(process: &mut ProcessStats, totals: &SyscallTotals, last: bool) {
    let before = process
        .kernel
        .as_ref()
        .map_or_else(SyscallTotals::default, |k| *k.taken);
    for advice in 0..COUNTED_ADVICE {
        let grown = advice_growth(&totals.madvise[advice], &before.madvise[advice]);
        if grown.calls > 0 {
            let into = process.madvise.entry(advice as u32).or_default();
            into.calls += grown.calls;
            into.failed += grown.failed;
            into.bytes += grown.bytes;
        }
    }
    mappings_growth(&mut process.mappings, totals, &before);
    if totals.cgroup_id != 0 {
        process.memory_cgroup = Some(totals.cgroup_id);
    }
    process.kernel = Some(KernelCounted {
        taken: Box::new(*totals),
        last: last || process.kernel.as_ref().is_some_and(|k| k.last),
    });
}

fn advice_growth(now: &AdviceCount, before: &AdviceCount) -> AdviceTotals {
    AdviceTotals {
        calls: now.calls.saturating_sub(before.calls),
        failed: now.failed.saturating_sub(before.failed),
        bytes: now.bytes.saturating_sub(before.bytes),
    }
}

fn mappings_growth(into: &mut MappingTotals, now: &SyscallTotals, before: &SyscallTotals) {
    let grow = |into: &mut CallBytes, now: &CallCount, before: &CallCount| {
        into.calls += now.calls.saturating_sub(before.calls);
        into.bytes += now.bytes.saturating_sub(before.bytes);
    };
    for &kind in MmapKind::ALL {
        let (now, before) = (&now.mmap[kind as usize], &before.mmap[kind as usize]);
        if now.calls > before.calls {
            grow(
                into.mmap.entry(MapKind::from(kind)).or_default(),
                now,
                before,
            );
        }
    }
    grow(&mut into.munmap, &now.munmap, &before.munmap);
    grow(&mut into.mremap_grow, &now.mremap_grow, &before.mremap_grow);
    grow(
        &mut into.mremap_shrink,
        &now.mremap_shrink,
        &before.mremap_shrink,
    );
    grow(&mut into.brk_grow, &now.brk_grow, &before.brk_grow);
    grow(&mut into.brk_shrink, &now.brk_shrink, &before.brk_shrink);
    into.brk_unknown += now.brk_unknown.saturating_sub(before.brk_unknown);
    for &syscall in MapSyscall::ALL {
        let failed = now.failed[syscall as usize].saturating_sub(before.failed[syscall as usize]);
        if failed > 0 {
            *into.failed.entry(syscall.name()).or_default() += failed;
        }
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::advice;

    use super::*;

    fn totals(start_ns: u64) -> SyscallTotals {
        SyscallTotals {
            start_ns,
            ..SyscallTotals::default()
        }
    }

    /// The same calls as records and as kernel totals give the same totals.
    #[test]
    fn growth_is_added_once() {
        let mut p = ProcessStats::default();
        let mut t = totals(7);
        t.madvise[advice::DONTNEED as usize] = AdviceCount {
            calls: 3,
            failed: 1,
            bytes: 8192,
        };
        t.mmap[MmapKind::AnonPrivate as usize] = CallCount {
            calls: 2,
            bytes: 12288,
        };
        t.failed[MapSyscall::Brk as usize] = 1;
        t.cgroup_id = 42;
        take(&mut p, &t, false);
        // The same copy again (a sample and then the final record) adds nothing.
        take(&mut p, &t, true);
        t.madvise[advice::DONTNEED as usize].calls = 4;
        t.madvise[advice::DONTNEED as usize].bytes = 12288;
        t.munmap = CallCount {
            calls: 1,
            bytes: 4096,
        };
        take(&mut p, &t, true);
        assert_eq!(
            p.madvise[&advice::DONTNEED],
            AdviceTotals {
                calls: 4,
                failed: 1,
                bytes: 12288
            }
        );
        assert_eq!(p.madvise.len(), 1, "no entry for advice never called");
        assert_eq!(
            p.mappings.mmap[&MapKind::AnonPrivate],
            CallBytes {
                calls: 2,
                bytes: 12288
            }
        );
        assert_eq!(p.mappings.mmap.len(), 1);
        assert_eq!(
            p.mappings.munmap,
            CallBytes {
                calls: 1,
                bytes: 4096
            }
        );
        assert_eq!(p.mappings.failed.get("brk"), Some(&1));
        assert_eq!(p.mappings.failed.len(), 1);
        assert_eq!(p.memory_cgroup, Some(42));
        assert!(p.kernel.as_ref().is_some_and(|k| k.last));
    }

    #[test]
    fn copies_go_to_the_process_they_are_of() {
        let held = |start_ns, last| {
            let mut p = ProcessStats::default();
            take(&mut p, &totals(start_ns), last);
            p
        };
        let running = held(100, false);
        let finished = held(100, true);
        let earlier = held(50, true);
        let none: [&ProcessStats; 0] = [];
        // Of the running process: taken.
        assert_eq!(
            fit(100, running.kernel.as_ref(), none.into_iter()),
            Fit::Take
        );
        // Its final copy came first: a copy read before it is stale.
        assert_eq!(
            fit(100, finished.kernel.as_ref(), none.into_iter()),
            Fit::Stale
        );
        // Of a process the pid passed on from, after its final copy: stale.
        assert_eq!(fit(50, None, [&earlier].into_iter()), Fit::Stale);
        // Of the next holder, the model having met it only through this copy: taken.
        assert_eq!(fit(200, None, [&earlier].into_iter()), Fit::Take);
        // Of another process than the one held, with no record saying the pid passed on.
        assert_eq!(
            fit(200, finished.kernel.as_ref(), none.into_iter()),
            Fit::NewProcess
        );
        // Start times unknown on this kernel: order alone decides.
        assert_eq!(fit(0, running.kernel.as_ref(), none.into_iter()), Fit::Take);
    }
}
