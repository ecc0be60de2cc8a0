//! Memory system calls, paired entry to exit per thread so every record carries its result.
//!
//! `syscalls/sys_enter_*` tracepoints have a stable layout: 8 bytes of common fields, the
//! syscall number, then each argument as 8 bytes from offset 16. `sys_exit_*` holds `ret` at 16.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use memtrace_common::{
    events::{
        EventKind,
        syscall::{PendingSyscall, SYSCALL_ARGS, SyscallEvent},
    },
    lost::Lost,
    maps::MAX_PENDING,
};

use crate::{
    config::record_field,
    filter::current_traced,
    ring::{EVENTS, count_lost, submit_flags},
};

const ARGS_OFFSET: usize = 16;
const RET_OFFSET: usize = 16;

/// Entries parked per thread until the matching exit, in a slot chosen by thread id. A slot is
/// plain stores; a hash map took a bucket lock for the insert and again for the delete on every
/// call, ~80 ns per program on the benchmark machine (BENCHMARKS.md, item 8). A slot holds the
/// tid it belongs to: two traced threads inside a syscall at once whose tids share a slot are a
/// collision, counted as lost.
#[map]
static PENDING: Array<PendingSyscall> = Array::with_max_entries(MAX_PENDING, 0);

#[inline(always)]
fn slot(tid: u32) -> Option<*mut PendingSyscall> {
    PENDING.get_ptr_mut(tid % MAX_PENDING)
}

#[tracepoint]
pub fn madvise_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Madvise, 3)
}

#[tracepoint]
pub fn madvise_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Madvise)
}

#[tracepoint]
pub fn process_madvise_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::ProcessMadvise, 5)
}

#[tracepoint]
pub fn process_madvise_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::ProcessMadvise)
}

#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Mmap, 6)
}

#[tracepoint]
pub fn mmap_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Mmap)
}

#[tracepoint]
pub fn munmap_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Munmap, 2)
}

#[tracepoint]
pub fn munmap_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Munmap)
}

#[tracepoint]
pub fn mremap_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Mremap, 5)
}

#[tracepoint]
pub fn mremap_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Mremap)
}

#[tracepoint]
pub fn brk_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Brk, 1)
}

#[tracepoint]
pub fn brk_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Brk)
}

/// Parks the first `nargs` arguments of a traced thread's syscall, read from its
/// `sys_enter_*` record.
#[inline(always)]
fn enter(ctx: &TracePointContext, kind: EventKind, nargs: usize) -> u32 {
    // The benchmark's floor: every program that calls this returns here first.
    if crate::config::empty_programs() {
        return 0;
    }
    let Some((_, tid)) = current_traced() else {
        return 0;
    };
    // SAFETY (all six): the record holds SYSCALL_ARGS 8-byte arguments from offset 16. Written
    // out, not looped: each load needs its offset as a constant.
    let args = unsafe {
        [
            record_field::<u64, { ARGS_OFFSET }>(ctx),
            record_field::<u64, { ARGS_OFFSET + 8 }>(ctx),
            record_field::<u64, { ARGS_OFFSET + 16 }>(ctx),
            record_field::<u64, { ARGS_OFFSET + 24 }>(ctx),
            record_field::<u64, { ARGS_OFFSET + 32 }>(ctx),
            record_field::<u64, { ARGS_OFFSET + 40 }>(ctx),
        ]
    };
    park(ctx, tid, kind, &args, nargs);
    0
}

/// Emits the parked entry of this thread with the result from its `sys_exit_*` record.
#[inline(always)]
fn exit(ctx: &TracePointContext, kind: EventKind) -> u32 {
    // The benchmark's floor: every program that calls this returns here first.
    if crate::config::empty_programs() {
        return 0;
    }
    let Some((tgid, tid)) = current_traced() else {
        return 0;
    };
    // SAFETY: `ret` is the 8 bytes at 16 of every sys_exit_* record.
    let ret = unsafe { record_field::<i64, RET_OFFSET>(ctx) };
    complete(ctx, kind, tgid, tid, ret);
    0
}

/// Parks a syscall's first `nargs` arguments in the thread's slot until its exit. Shared by
/// the tracepoint and the trampoline programs.
#[inline(always)]
pub fn park<C: EbpfContext>(
    ctx: &C,
    tid: u32,
    kind: EventKind,
    args: &[u64; SYSCALL_ARGS],
    nargs: usize,
) {
    let Some(slot) = slot(tid) else {
        return;
    };
    let mut pending = PendingSyscall {
        kind: kind as u32,
        tid,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        args: [0; SYSCALL_ARGS],
    };
    for (i, arg) in args.iter().enumerate() {
        if i < nargs {
            pending.args[i] = *arg;
        }
    }
    // SAFETY: a map value; only the thread whose tid is stored there reads it back.
    unsafe {
        let holder = (*slot).tid;
        if holder != 0 && holder != tid {
            // Another thread is parked here (or died inside a syscall): one call is lost.
            count_lost(Lost::PendingFull);
            warn!(
                ctx,
                "syscall pairing slot of tid {} taken by tid {}", tid, holder
            );
        }
        *slot = pending;
    }
}

/// Emits this thread's parked syscall with its result. Shared by the tracepoint and the
/// trampoline programs; `kind` is the program's own syscall, a constant there.
#[inline(always)]
pub fn complete<C: EbpfContext>(ctx: &C, kind: EventKind, tgid: u32, tid: u32, ret: i64) {
    let Some(slot) = slot(tid) else {
        return;
    };
    // SAFETY: a map value; copied out, then released.
    let pending = unsafe { *slot };
    if pending.tid != tid {
        // Entered before we attached (or the pid was added mid-call), or the slot was taken by
        // a colliding thread (counted then): nothing to pair with.
        return;
    }
    // SAFETY: as above.
    unsafe { (*slot).tid = 0 };
    crate::stacks::syscall(ctx, tgid, kind, &pending.args, ret);
    let Some(mut entry) = EVENTS.reserve::<SyscallEvent>(0) else {
        count_lost(Lost::RingFull);
        return;
    };
    entry.write(SyscallEvent {
        kind: pending.kind,
        tgid,
        tid,
        _pad: 0,
        enter_ns: pending.enter_ns,
        exit_ns: unsafe { bpf_ktime_get_ns() },
        args: pending.args,
        ret,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    // process_madvise names its target by pidfd: userspace resolves it through
    // /proc/CALLER/fdinfo, which only works while the caller still holds the fd.
    entry.submit(submit_flags(
        pending.kind == EventKind::ProcessMadvise as u32,
    ));
}
