//! Memory syscalls counted per process in the kernel, for runs that print only totals
//! (`memtrace_common::events::totals`): a completed call adds to its process's entry with
//! atomic adds (threads of one process run on several CPUs at once), and the entry goes to
//! userspace in one record when the process exits or its pid passes to a new process.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_probe_read_kernel_buf,
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use memtrace_common::{
    events::{
        EventKind,
        syscall::SYSCALL_ARGS,
        totals::{
            COUNTED_ADVICE, CallCount, FlushReason, MapSyscall, MmapKind, SyscallTotals,
            TotalsFlush, page_round_up,
        },
    },
    lost::Lost,
};

use crate::{
    cgroup::current_cgroup_id,
    config::{config, setting},
    ring::{EVENTS, count_lost, submit_flags},
    task,
};

/// Per process (tgid), from its first counted call to its exit. Preallocated (a hash map
/// allocating at run time is unsafe in tracing programs, and 5.10 warns about it) and sized by
/// the loader (`maps::totals_capacity`).
#[map]
static TOTALS: HashMap<u32, SyscallTotals> = HashMap::with_max_entries(1, 0);

/// An all-zero entry that new ones are copied from: an entry (~1 KiB) does not fit on the
/// 512-byte BPF stack. Never written.
#[map]
static ZERO: PerCpuArray<SyscallTotals> = PerCpuArray::with_max_entries(1, 0);

/// Whether this run counts the syscalls in the kernel.
#[inline(always)]
pub fn counting() -> bool {
    setting(&config().count_syscalls) != 0
}

/// Counts a completed call of process `tgid`; false when it must be sent as a record instead:
/// `process_madvise` (userspace charges it to the target its pidfd names), an advice value
/// beyond the counted slots, or a full table (the record then carries the call, so nothing is
/// lost).
#[inline(always)]
pub fn count(tgid: u32, kind: EventKind, args: &[u64; SYSCALL_ARGS], ret: i64) -> bool {
    let page_size = u64::from(setting(&config().page_size));
    let failed = ret < 0;
    match kind {
        EventKind::Madvise => {
            let advice = args[2];
            if advice >= COUNTED_ADVICE as u64 {
                return false;
            }
            let Some(totals) = entry(tgid) else {
                return false;
            };
            let slot = bounded(advice as usize, COUNTED_ADVICE - 1);
            // SAFETY: a map value, changed only with atomic adds; `slot` is in range.
            unsafe {
                let count = &raw mut (*totals).madvise[slot];
                add(&raw mut (*count).calls, 1);
                if failed {
                    add(&raw mut (*count).failed, 1);
                } else {
                    add(&raw mut (*count).bytes, page_round_up(args[1], page_size));
                }
            }
        }
        EventKind::Mmap => {
            let Some(totals) = entry(tgid) else {
                return false;
            };
            let kind = bounded(MmapKind::from_flags(args[3]) as usize, MmapKind::COUNT - 1);
            // SAFETY: as above.
            let count = unsafe { &raw mut (*totals).mmap[kind] };
            call(
                totals,
                MapSyscall::Mmap,
                failed,
                count,
                page_round_up(args[1], page_size),
            );
        }
        EventKind::Munmap => {
            let Some(totals) = entry(tgid) else {
                return false;
            };
            // SAFETY: as above.
            let count = unsafe { &raw mut (*totals).munmap };
            call(
                totals,
                MapSyscall::Munmap,
                failed,
                count,
                page_round_up(args[1], page_size),
            );
        }
        EventKind::Mremap => {
            let Some(totals) = entry(tgid) else {
                return false;
            };
            let (old, new) = (
                page_round_up(args[1], page_size),
                page_round_up(args[2], page_size),
            );
            // SAFETY: as above.
            let (count, bytes) = unsafe {
                if new >= old {
                    (&raw mut (*totals).mremap_grow, new - old)
                } else {
                    (&raw mut (*totals).mremap_shrink, old - new)
                }
            };
            call(totals, MapSyscall::Mremap, failed, count, bytes);
        }
        EventKind::Brk => {
            let Some(totals) = entry(tgid) else {
                return false;
            };
            brk(totals, args[0], ret);
        }
        _ => return false,
    }
    true
}

/// One successful call covering `bytes`, or one failure of `syscall`.
#[inline(always)]
fn call(
    totals: *mut SyscallTotals,
    syscall: MapSyscall,
    failed: bool,
    count: *mut CallCount,
    bytes: u64,
) {
    // SAFETY: map values, changed only with atomic adds.
    unsafe {
        if failed {
            add(&raw mut (*totals).failed[syscall as usize], 1);
        } else {
            add(&raw mut (*count).calls, 1);
            add(&raw mut (*count).bytes, bytes);
        }
    }
}

/// `brk(requested)` returned `ret`, the break after the call: it failed if the break did not
/// move where asked (`brk(0)` only asks where it is). Growth and shrinkage are measured from
/// the break after the previous call, when known.
#[inline(always)]
fn brk(totals: *mut SyscallTotals, requested: u64, ret: i64) {
    let result = ret as u64;
    // SAFETY: a map value; counters change only with atomic adds. The break is a plain store:
    // brk calls of one process are serialised by its mmap lock, and each program runs right
    // after its call.
    unsafe {
        if ret < 0 || (requested != 0 && result != requested) {
            add(&raw mut (*totals).failed[MapSyscall::Brk as usize], 1);
            return;
        }
        let previous = (*totals).last_brk;
        (*totals).last_brk = result;
        if requested == 0 {
            return;
        }
        if previous == 0 {
            add(&raw mut (*totals).brk_unknown, 1);
        } else if result >= previous {
            add(&raw mut (*totals).brk_grow.calls, 1);
            add(&raw mut (*totals).brk_grow.bytes, result - previous);
        } else {
            add(&raw mut (*totals).brk_shrink.calls, 1);
            add(&raw mut (*totals).brk_shrink.bytes, previous - result);
        }
    }
}

/// The process exec'd: its new program has a break of its own, not yet seen; userspace gets
/// its counts so far, ahead of the exec's record.
#[inline(always)]
pub fn exec(tgid: u32) {
    if let Some(totals) = TOTALS.get_ptr_mut(tgid) {
        // SAFETY: a map value.
        unsafe { (*totals).last_brk = 0 };
    }
    flush(tgid, FlushReason::Exec);
}

/// The entry of the current process `tgid`, made on its first call; `None` when the table is
/// full. An entry learns its process's start time and memory cgroup the first time the process
/// uses it (userspace makes some entries, and knows neither exactly).
#[inline(always)]
fn entry(tgid: u32) -> Option<*mut SyscallTotals> {
    let totals = match TOTALS.get_ptr_mut(tgid) {
        Some(totals) => totals,
        None => {
            let zero = ZERO.get_ptr(0)?;
            // A sibling thread may have made it meanwhile (then this fails): either way, it is
            // there after. Passed by reference: by value, the entry would be copied onto the
            // stack, which cannot hold it.
            // SAFETY: a map value, never written.
            #[allow(clippy::needless_borrows_for_generic_args)]
            let _ = TOTALS.insert(tgid, unsafe { &*zero }, u64::from(BPF_NOEXIST));
            TOTALS.get_ptr_mut(tgid)?
        }
    };
    // SAFETY: a map value; racing threads of one process store the same values.
    unsafe {
        if (*totals).start_ns == 0 {
            (*totals).start_ns = task::process_start_ns(task::current());
            (*totals).cgroup_id = current_cgroup_id();
        }
    }
    Some(totals)
}

/// Sends `tgid`'s totals to userspace and deletes its entry, if it has one. At exit, the
/// current task is its last thread: the memory cgroup is read again. A record that cannot be
/// sent at exit leaves the entry in place (userspace reads the map on every sample, and it is
/// sent when the pid is reused); at pid reuse it must go, and is counted as lost.
#[inline(always)]
pub fn flush(tgid: u32, reason: FlushReason) {
    let Some(totals) = TOTALS.get_ptr(tgid) else {
        return;
    };
    let Some(mut record) = EVENTS.reserve::<TotalsFlush>(0) else {
        if reason == FlushReason::PidReused {
            let _ = TOTALS.remove(tgid);
            count_lost(Lost::RingFull);
        }
        return;
    };
    let out = record.as_mut_ptr();
    // SAFETY: `out` is the reserved record; `totals` a map value, copied with a checked read.
    let copied = unsafe {
        (*out).kind = EventKind::Totals as u32;
        (*out).tgid = tgid;
        (*out).reason = reason as u32;
        (*out)._pad = 0;
        let bytes = core::slice::from_raw_parts_mut(
            (&raw mut (*out).totals).cast::<u8>(),
            size_of::<SyscallTotals>(),
        );
        bpf_probe_read_kernel_buf(totals.cast::<u8>(), bytes).is_ok()
    };
    if !copied {
        record.discard(0);
        return;
    }
    if reason == FlushReason::Exit {
        let cgroup_id = current_cgroup_id();
        if cgroup_id != 0 {
            // SAFETY: the reserved record.
            unsafe { (*out).totals.cgroup_id = cgroup_id };
        }
    }
    // Two threads exiting together may both flush: only the one that deletes the entry sends
    // it, so it arrives once, from a copy no later call can have changed. At exec the entry
    // stays (exec has ended every other thread).
    if reason == FlushReason::Exec || TOTALS.remove(tgid).is_ok() {
        record.submit(submit_flags(false));
    } else {
        record.discard(0);
    }
}

/// Adds with the atomic add every supported kernel has (`BPF_XADD`; the old value is not
/// used, so this is not the fetching form that needs 5.12).
#[inline(always)]
fn add(counter: *mut u64, value: u64) {
    // SAFETY: callers pass map-value fields, 8-byte aligned.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// `index` masked with `mask` in a way the compiler cannot drop: the verifier needs the bound
/// where the index is used, and the optimiser would otherwise see it is already in range.
#[inline(always)]
fn bounded(index: usize, mask: usize) -> usize {
    // SAFETY: reading a local.
    unsafe { core::ptr::read_volatile(&index) & mask }
}
