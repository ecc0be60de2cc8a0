//! Memory system calls, paired entry to exit per thread so every record carries its result.
//!
//! `syscalls/sys_enter_*` tracepoints have a stable layout: 8 bytes of common fields, the
//! syscall number, then each argument as 8 bytes from offset 16. `sys_exit_*` holds `ret` at 16.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use memtrace_common::{
    EventKind, SyscallEvent,
    event::{PendingSyscall, SYSCALL_ARGS},
    maps::{Lost, MAX_PENDING},
};

use crate::{
    filter::current_traced,
    ring::{EVENTS, count_lost, submit_flags},
};

const ARGS_OFFSET: usize = 16;
const RET_OFFSET: usize = 16;

/// Entries parked per thread id until the matching exit.
#[map]
static PENDING: HashMap<u32, PendingSyscall> = HashMap::with_max_entries(MAX_PENDING, 0);

#[tracepoint]
pub fn madvise_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Madvise, 3)
}

#[tracepoint]
pub fn madvise_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

#[tracepoint]
pub fn process_madvise_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::ProcessMadvise, 5)
}

#[tracepoint]
pub fn process_madvise_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Mmap, 6)
}

#[tracepoint]
pub fn mmap_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

#[tracepoint]
pub fn munmap_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Munmap, 2)
}

#[tracepoint]
pub fn munmap_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

#[tracepoint]
pub fn mremap_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Mremap, 5)
}

#[tracepoint]
pub fn mremap_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

#[tracepoint]
pub fn brk_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Brk, 1)
}

#[tracepoint]
pub fn brk_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

/// Parks the first `nargs` arguments of a traced thread's syscall.
#[inline(always)]
fn enter(ctx: &TracePointContext, kind: EventKind, nargs: usize) -> u32 {
    let Some((_, tid)) = current_traced() else {
        return 0;
    };
    let mut pending = PendingSyscall {
        kind: kind as u32,
        _pad: 0,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        args: [0; SYSCALL_ARGS],
    };
    // Constant bound: unrolled by the compiler, trivially verified.
    for i in 0..SYSCALL_ARGS {
        if i < nargs {
            // SAFETY: the tracepoint record holds SYSCALL_ARGS 8-byte arguments from offset 16.
            pending.args[i] = unsafe { ctx.read_at::<u64>(ARGS_OFFSET + 8 * i) }.unwrap_or(0);
        }
    }
    if PENDING.insert(tid, pending, 0).is_err() {
        count_lost(Lost::PendingFull);
    }
    0
}

/// Emits the parked entry of this thread together with the syscall's result.
#[inline(always)]
fn exit(ctx: &TracePointContext) -> u32 {
    let Some((tgid, tid)) = current_traced() else {
        return 0;
    };
    let Some(pending) = PENDING.get_ptr(tid) else {
        // Entered before we attached (or the pid was added mid-call): nothing to pair with.
        return 0;
    };
    // SAFETY: the pointer is valid until the element is removed below; copy it out first.
    let pending = unsafe { *pending };
    let _ = PENDING.remove(tid);

    let ret = unsafe { ctx.read_at::<i64>(RET_OFFSET) }.unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<SyscallEvent>(0) else {
        count_lost(Lost::RingFull);
        return 0;
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
    0
}
