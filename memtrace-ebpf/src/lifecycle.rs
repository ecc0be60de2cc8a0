//! Process lifecycle: following forked children (`--follow`) and reading a thread's fault
//! counters as it exits.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use memtrace_common::{EventKind, ThreadExit, maps::Lost};

use crate::{
    filter::{TARGETS, current_traced, filtering},
    ring::{EVENTS, count_lost, submit_flags},
};

#[unsafe(no_mangle)]
static FOLLOW_FORKS: u8 = 0;
#[unsafe(no_mangle)]
static FORK_CHILD_PID_OFFSET: u32 = 20;
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: u32 = 32;
#[unsafe(no_mangle)]
static TASK_MIN_FLT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_MAJ_FLT_OFFSET: u32 = 0;

#[inline(always)]
fn global<T: Copy>(value: &T) -> T {
    // SAFETY: see filter::current_traced.
    unsafe { core::ptr::read_volatile(value) }
}

/// `sched/sched_process_fork` runs in the parent. Threads are forks too: their tids land in
/// TARGETS harmlessly (a live tid is never another process's tgid) and userspace prunes them.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    if global(&FOLLOW_FORKS) == 0 || !filtering() || current_traced().is_none() {
        return 0;
    }
    // SAFETY: offset from this kernel's format file for this tracepoint.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(global(&FORK_CHILD_PID_OFFSET) as usize) }) else {
        return 0;
    };
    let Ok(child) = u32::try_from(child) else {
        return 0;
    };
    if TARGETS.insert(child, 1, 0).is_err() {
        count_lost(Lost::TargetsFull);
    }
    0
}

/// `sched/sched_process_exit` runs in the exiting thread. Its `min_flt`/`maj_flt` are final
/// here: the kernel counts faults per task (`mm_account_fault`), and /proc/PID/stat sums them.
/// No tracepoint carries them, so they are read at offsets userspace took from the kernel's
/// BTF.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid)) = current_traced() else {
        return 0;
    };
    let (min_offset, maj_offset) = (global(&TASK_MIN_FLT_OFFSET), global(&TASK_MAJ_FLT_OFFSET));
    if min_offset == 0 || maj_offset == 0 {
        return 0;
    }
    // SAFETY: offset from this kernel's format file for this tracepoint.
    let group_dead =
        unsafe { ctx.read_at::<u8>(global(&EXIT_GROUP_DEAD_OFFSET) as usize) }.unwrap_or(0);
    // SAFETY: current task pointer plus member offsets from this kernel's BTF; the reads are
    // checked by bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() } as usize;
    let read =
        |offset: u32| unsafe { bpf_probe_read_kernel((task + offset as usize) as *const u64) };
    let (Ok(min_flt), Ok(maj_flt)) = (read(min_offset), read(maj_offset)) else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<ThreadExit>(0) else {
        count_lost(Lost::RingFull);
        return 0;
    };
    entry.write(ThreadExit {
        kind: EventKind::ThreadExit as u32,
        tgid,
        tid,
        group_dead: u32::from(group_dead),
        min_flt,
        maj_flt,
    });
    entry.submit(submit_flags(false));
    0
}
