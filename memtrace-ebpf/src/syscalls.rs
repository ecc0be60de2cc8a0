//! Memory system calls. Where a run prints only totals, one program per call at its exit reads
//! the arguments from the caller's saved registers and counts the call in the kernel
//! (`totals.rs`). Where each call is a record (`--json`, `memtrace go`), an entry program parks
//! the arguments per thread and the exit pairs them with the result, so every record carries
//! its result and latency.
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
    regs::ArgsAt,
};

use crate::{
    config::{config, record_field, setting},
    filter::current_traced,
    regs,
    ring::{count_lost, emit},
    totals,
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
    enter(&ctx, EventKind::Madvise)
}

#[tracepoint]
pub fn madvise_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Madvise)
}

#[tracepoint]
pub fn process_madvise_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::ProcessMadvise)
}

#[tracepoint]
pub fn process_madvise_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::ProcessMadvise)
}

#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Mmap)
}

#[tracepoint]
pub fn mmap_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Mmap)
}

#[tracepoint]
pub fn munmap_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Munmap)
}

#[tracepoint]
pub fn munmap_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Munmap)
}

#[tracepoint]
pub fn mremap_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Mremap)
}

#[tracepoint]
pub fn mremap_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Mremap)
}

#[tracepoint]
pub fn brk_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, EventKind::Brk)
}

#[tracepoint]
pub fn brk_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, EventKind::Brk)
}

/// Parks the arguments of a traced thread's syscall, read from its `sys_enter_*` record.
/// Attached only where the exit cannot do without it (`hooks::When::SyscallEntry`).
#[inline(always)]
fn enter(ctx: &TracePointContext, kind: EventKind) -> u32 {
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
    park(ctx, tid, kind, &args);
    0
}

/// A traced thread's syscall completed, with the result from its `sys_exit_*` record: its
/// arguments come from the slot its entry parked them in or, with no entry program, from its
/// saved registers.
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
    let call = if setting(&config().args_at) == ArgsAt::Parked as u8 {
        take_parked(tid, kind)
    } else {
        read_args(ctx, tid, kind, regs::current_args(kind))
    };
    if let Some(call) = call {
        finish(ctx, tgid, tid, kind, &call, ret);
    }
    0
}

/// The call's arguments as read from the saved registers, as if parked at its entry, with no
/// entry time: a record made from it shows no latency, which only records with an entry program
/// measure (and the clock read would cost every counted call). Counts a failed read as lost.
#[inline(always)]
pub fn read_args<C: EbpfContext>(
    ctx: &C,
    tid: u32,
    kind: EventKind,
    args: Result<[u64; SYSCALL_ARGS], ()>,
) -> Option<PendingSyscall> {
    let Ok(args) = args else {
        count_lost(Lost::ArgsUnread);
        warn!(
            ctx,
            "{} by tid {}: arguments not found in the saved registers", kind as u32, tid
        );
        return None;
    };
    Some(pending(tid, kind, &args, 0))
}

/// A call of `kind` by thread `tid`, started at `enter_ns` (0: unknown), with the arguments
/// that kind has.
#[inline(always)]
fn pending(tid: u32, kind: EventKind, args: &[u64; SYSCALL_ARGS], enter_ns: u64) -> PendingSyscall {
    let nargs = kind.syscall_args();
    let mut call = PendingSyscall {
        kind: kind as u32,
        tid,
        enter_ns,
        args: [0; SYSCALL_ARGS],
    };
    for (i, arg) in args.iter().enumerate() {
        if i < nargs {
            call.args[i] = *arg;
        }
    }
    call
}

/// Parks a syscall's arguments in the thread's slot until its exit. Shared by the tracepoint
/// and the trampoline programs.
#[inline(always)]
pub fn park<C: EbpfContext>(ctx: &C, tid: u32, kind: EventKind, args: &[u64; SYSCALL_ARGS]) {
    let Some(slot) = slot(tid) else {
        return;
    };
    // SAFETY: helper without preconditions.
    let call = pending(tid, kind, args, unsafe { bpf_ktime_get_ns() });
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
        *slot = call;
    }
}

/// This thread's parked call of `kind`, released. Shared by the tracepoint and the trampoline
/// programs.
#[inline(always)]
pub fn take_parked(tid: u32, kind: EventKind) -> Option<PendingSyscall> {
    let slot = slot(tid)?;
    // SAFETY: a map value; copied out, then released.
    let call = unsafe { *slot };
    if call.tid != tid {
        // Entered before we attached (or the pid was added mid-call), or the slot was taken by
        // a colliding thread (counted then): nothing to pair with.
        return None;
    }
    // SAFETY: as above.
    unsafe { (*slot).tid = 0 };
    // An entry of another syscall whose exit was missed (the program attached in between):
    // not this call's arguments.
    (call.kind == kind as u32).then_some(call)
}

/// A completed call: its caller's stack counted with `--stacks`, then the call counted in the
/// kernel where this run only prints totals, else (and for what cannot be counted there) sent
/// as a record with its result. Shared by the tracepoint and the trampoline programs; `kind`
/// is the program's own syscall, a constant there.
#[inline(always)]
pub fn finish<C: EbpfContext>(
    ctx: &C,
    tgid: u32,
    tid: u32,
    kind: EventKind,
    call: &PendingSyscall,
    ret: i64,
) {
    crate::stacks::syscall(ctx, tgid, kind, &call.args, ret);
    if totals::counting() && totals::count(tgid, kind, &call.args, ret) {
        return;
    }
    // SAFETY: helper without preconditions.
    let exit_ns = unsafe { bpf_ktime_get_ns() };
    let record = SyscallEvent {
        kind: call.kind,
        tgid,
        tid,
        _pad: 0,
        enter_ns: if call.enter_ns == 0 {
            exit_ns
        } else {
            call.enter_ns
        },
        exit_ns,
        args: call.args,
        ret,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // process_madvise names its target by pidfd: userspace resolves it through
    // /proc/CALLER/fdinfo, which only works while the caller still holds the fd.
    emit(record, kind == EventKind::ProcessMadvise);
}
