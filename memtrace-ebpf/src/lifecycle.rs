//! Process lifecycle: following forked children (`--follow`), exec, reading a thread's fault
//! counters as it exits, and sending a process's syscall totals when it exits or its pid passes
//! to a new process.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use memtrace_common::{
    events::{
        EventKind,
        exec::ExecEvent,
        exit::{GROUP_DEAD_UNKNOWN, ThreadExit},
        spawn::Spawn,
        totals::FlushReason,
    },
    fields::Field,
    lost::Lost,
    members::Member,
};

use crate::{
    cgroup::current_cgroup_id,
    config::{config, field, member, setting},
    faults,
    filter::{self, current_traced, filtering, is_self},
    ring::{count_lost, emit},
    task, totals,
};

/// `sched/sched_process_fork` runs in the parent, before the child can run. A pid is reused
/// only once everything of its previous holder is gone, so this is where an earlier process
/// with the child's pid ends for memtrace: it stops being traced (a target that exited must not
/// be followed into an unrelated process), and userspace, told in ring order, starts a new
/// entry. With `--follow`, a traced parent's child is traced too. Threads are forks as well:
/// their tids land in TARGETS harmlessly (a live tid is never another process's tgid) and
/// userspace prunes them.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_self(parent) {
        return 0;
    }
    let Ok(child) = u32::try_from(field(&ctx, Field::ForkChildPid, -1i32)) else {
        return 0;
    };
    let followed = follow(&ctx, child);
    if filtering() && !followed {
        // Only a pid in the filter can have been a traced process; most forks end here.
        if !filter::remove(child) {
            return 0;
        }
    }
    faults::forget(child);
    crate::stacks::forget(child);
    if totals::counting() {
        // The pid's previous holder is gone: its totals go first, so that in the ring they
        // come before the record that hands the pid to the new process.
        totals::flush(child, FlushReason::PidReused);
    }
    emit(
        Spawn {
            kind: EventKind::Spawn as u32,
            parent,
            child,
            followed: u32::from(followed),
        },
        false,
    );
    0
}

/// With `--follow`, adds a traced parent's child to the filter; whether it did.
#[inline(always)]
fn follow(ctx: &TracePointContext, child: u32) -> bool {
    if setting(&config().follow_forks) == 0 || !filtering() || current_traced().is_none() {
        return false;
    }
    if filter::add(child).is_err() {
        // Only when kernel.pid_max was raised after memtrace started.
        count_lost(Lost::TargetsFull);
        warn!(
            ctx,
            "child {} beyond the filter's pids: not followed", child
        );
        return false;
    }
    true
}

/// `sched/sched_process_exit` runs in the exiting thread. Its `min_flt`/`maj_flt` are final
/// here: the kernel counts faults per task (`mm_account_fault`), and /proc/PID/stat sums them.
/// No tracepoint carries them, so they are read at offsets userspace took from the kernel's
/// BTF. When it is the process's last thread, the process's syscall totals go to userspace.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    let Some((tgid, tid)) = current_traced() else {
        return 0;
    };
    let task = task::current();
    let group_dead = match field(&ctx, Field::ExitGroupDead, u8::MAX) {
        u8::MAX => GROUP_DEAD_UNKNOWN,
        dead => u32::from(dead),
    };
    let exiting = task::process_exiting(task);
    thread_exit(tgid, tid, task, group_dead, exiting);
    if totals::counting() {
        let last = match group_dead {
            GROUP_DEAD_UNKNOWN => exiting,
            dead => Some(dead != 0),
        };
        if last == Some(true) {
            totals::flush(tgid, FlushReason::Exit);
        }
    }
    0
}

/// Sends a thread's final fault counters, its process's start time and memory cgroup.
#[inline(always)]
fn thread_exit(tgid: u32, tid: u32, task: u64, group_dead: u32, exiting: Option<bool>) {
    let (min_offset, maj_offset) = (member(Member::TaskMinFlt), member(Member::TaskMajFlt));
    if min_offset == 0 || maj_offset == 0 {
        return;
    }
    // SAFETY: current task pointer plus member offsets from this kernel's BTF; the reads are
    // checked by bpf_probe_read_kernel.
    let read = |offset: u64| unsafe { bpf_probe_read_kernel((task + offset) as *const u64) };
    let (Ok(min_flt), Ok(maj_flt)) = (read(min_offset), read(maj_offset)) else {
        return;
    };
    let process_start_ns = task::process_start_ns(task);
    let cgroup_id = current_cgroup_id();
    emit(
        ThreadExit {
            kind: EventKind::ThreadExit as u32,
            tgid,
            tid,
            group_dead,
            process_exiting: exiting.map_or(GROUP_DEAD_UNKNOWN, u32::from),
            _reserved: 0,
            min_flt,
            maj_flt,
            process_start_ns,
            cgroup_id,
            comm: bpf_get_current_comm().unwrap_or_default(),
        },
        false,
    );
}

/// `sched/sched_process_exec` runs in the process once its new program is in place: `comm` is
/// already the new name, and the tgid is unchanged (a non-leader thread that calls exec takes
/// over the leader's pid first).
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    let Some((tgid, _)) = current_traced() else {
        return 0;
    };
    if totals::counting() {
        totals::exec(tgid);
    }
    emit(
        ExecEvent {
            kind: EventKind::Exec as u32,
            tgid,
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            comm: bpf_get_current_comm().unwrap_or_default(),
            cgroup_id: current_cgroup_id(),
        },
        false,
    );
    0
}
