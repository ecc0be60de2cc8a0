//! Memory syscalls the kernel counted per process (`memtrace_common::events::totals`), taken
//! into the same totals per-call records build (`AdviceTotals`, `MappingTotals` in
//! `attribution.rs`, which add what [`growth`] returns), so every report reads them alike.
//! Pure, like the rest of the model.
//!
//! The kernel's values are running totals of one process since its entry was made. A process
//! keeps the last copy taken in; a newer copy adds only what grew since. Copies come two ways:
//! read from the kernel's map on every sample (the process still runs, or its final copy is
//! still in the ring), and in the ring when the process exits or its pid passes on (the final
//! copy, in order with the records that close a process). `start_ns` (the process's start
//! time) tells which process, of those that had the pid, a copy is of.

use memtrace_common::events::totals::{AdviceCount, CallCount, SyscallTotals};

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
/// model holds of the kernel's totals for the pid's current holder, `ended` the same for the
/// pid's earlier holders.
pub fn fit<'a>(
    start_ns: u64,
    current: Option<&KernelCounted>,
    mut ended: impl Iterator<Item = Option<&'a KernelCounted>>,
) -> Fit {
    // Looked through only for a process the model holds no copy of yet (its first copy).
    let mut ended_already =
        || start_ns != 0 && ended.any(|k| k.is_some_and(|k| k.start_ns() == start_ns));
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

/// Takes a copy in after `held` (what the process held before, replaced): returns what grew
/// since, to add to the process's totals, field by field (counters never go down within one
/// process; `start_ns`, `cgroup_id` and `last_brk` are the copy's own). `last`: it is the
/// final copy.
pub fn growth(held: &mut Option<KernelCounted>, now: &SyscallTotals, last: bool) -> SyscallTotals {
    let before = held
        .as_ref()
        .map_or_else(SyscallTotals::default, |k| *k.taken);
    let advice = |now: &AdviceCount, before: &AdviceCount| AdviceCount {
        calls: now.calls.saturating_sub(before.calls),
        failed: now.failed.saturating_sub(before.failed),
        bytes: now.bytes.saturating_sub(before.bytes),
    };
    let call = |now: &CallCount, before: &CallCount| CallCount {
        calls: now.calls.saturating_sub(before.calls),
        bytes: now.bytes.saturating_sub(before.bytes),
    };
    let grown = SyscallTotals {
        madvise: std::array::from_fn(|i| advice(&now.madvise[i], &before.madvise[i])),
        mmap: std::array::from_fn(|i| call(&now.mmap[i], &before.mmap[i])),
        munmap: call(&now.munmap, &before.munmap),
        mremap_grow: call(&now.mremap_grow, &before.mremap_grow),
        mremap_shrink: call(&now.mremap_shrink, &before.mremap_shrink),
        brk_grow: call(&now.brk_grow, &before.brk_grow),
        brk_shrink: call(&now.brk_shrink, &before.brk_shrink),
        brk_unknown: now.brk_unknown.saturating_sub(before.brk_unknown),
        failed: std::array::from_fn(|i| now.failed[i].saturating_sub(before.failed[i])),
        ..*now
    };
    let was_last = held.as_ref().is_some_and(|k| k.last);
    *held = Some(KernelCounted {
        taken: Box::new(*now),
        last: last || was_last,
    });
    grown
}

#[cfg(test)]
mod tests {
    use memtrace_common::{
        advice,
        events::totals::{MapSyscall, MmapKind},
    };

    use super::*;

    fn totals(start_ns: u64) -> SyscallTotals {
        SyscallTotals {
            start_ns,
            ..SyscallTotals::default()
        }
    }

    /// A copy taken in twice adds nothing the second time; a newer one adds what grew.
    #[test]
    fn growth_is_counted_once() {
        let mut held = None;
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
        assert_eq!(growth(&mut held, &t, false), t);
        assert_eq!(growth(&mut held, &t, true), totals(7));
        t.madvise[advice::DONTNEED as usize].calls = 4;
        t.munmap = CallCount {
            calls: 1,
            bytes: 4096,
        };
        let grown = growth(&mut held, &t, false);
        assert_eq!(grown.madvise[advice::DONTNEED as usize].calls, 1);
        assert_eq!(grown.madvise[advice::DONTNEED as usize].bytes, 0);
        assert_eq!(grown.munmap.calls, 1);
        assert_eq!(grown.mmap[MmapKind::AnonPrivate as usize].calls, 0);
        assert!(held.as_ref().is_some_and(|k| k.last), "once final, final");
    }

    #[test]
    fn copies_go_to_the_process_they_are_of() {
        let held = |start_ns, last| {
            let mut held = None;
            growth(&mut held, &totals(start_ns), last);
            held
        };
        let (running, finished, earlier) = (held(100, false), held(100, true), held(50, true));
        let none = std::iter::empty();
        // Of the running process: taken.
        assert_eq!(fit(100, running.as_ref(), none.clone()), Fit::Take);
        // Its final copy came first: a copy read before it is stale.
        assert_eq!(fit(100, finished.as_ref(), none.clone()), Fit::Stale);
        // Of a process the pid passed on from, after its final copy: stale.
        assert_eq!(fit(50, None, [earlier.as_ref()].into_iter()), Fit::Stale);
        // Of the next holder, the model having met it only through this copy: taken.
        assert_eq!(fit(200, None, [earlier.as_ref()].into_iter()), Fit::Take);
        // Of another process than the one held, with no record saying the pid passed on.
        assert_eq!(fit(200, finished.as_ref(), none.clone()), Fit::NewProcess);
        // Start times unknown on this kernel: order alone decides.
        assert_eq!(fit(0, running.as_ref(), none), Fit::Take);
    }
}
