//! What the programs read about the current task through its `task_struct`, at member offsets
//! userspace took from the kernel's BTF (0 = unknown here).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use memtrace_common::members::Member;

use crate::config::member;

/// The current task, as an address in kernel memory.
#[inline(always)]
pub fn current() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task() }
}

/// When `task`'s process started (its leader's `start_boottime`), or 0 when unknown here.
#[inline(always)]
pub fn process_start_ns(task: u64) -> u64 {
    let (leader_at, start_at) = (
        member(Member::TaskGroupLeader),
        member(Member::TaskStartBoottime),
    );
    if leader_at == 0 || start_at == 0 {
        return 0;
    }
    // SAFETY: task pointers and member offsets from this kernel's BTF; reads are checked.
    unsafe {
        bpf_probe_read_kernel((task + leader_at) as *const u64)
            .and_then(|leader| bpf_probe_read_kernel((leader + start_at) as *const u64))
            .unwrap_or(0)
    }
}

/// Whether every thread of `task`'s process has begun to exit (`signal->live` is 0: `do_exit`
/// decrements it before `sched_process_exit`), so none of them makes another syscall; `None`
/// when unknown here. Two threads exiting together may both see 0: callers must tolerate
/// being told twice.
#[inline(always)]
pub fn process_exiting(task: u64) -> Option<bool> {
    let (signal_at, live_at) = (member(Member::TaskSignal), member(Member::SignalLive));
    if signal_at == 0 || live_at == 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe {
        let signal = bpf_probe_read_kernel((task + signal_at) as *const u64).ok()?;
        let live = bpf_probe_read_kernel((signal + live_at) as *const i32).ok()?;
        Some(live == 0)
    }
}
