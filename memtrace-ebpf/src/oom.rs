//! The OOM killer and the OOM reaper. Never filtered: an OOM kill matters whoever it hits.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use memtrace_common::{
    events::{
        EventKind,
        oom::{OomReaperEvent, OomVictim, ReaperPhase},
    },
    fields::Field,
};

use crate::{
    cgroup::memory_controller_cgroup_id,
    config::{field, offset},
    ring::emit,
};

/// The victim's name from `mark_victim`'s `comm`, a `__data_loc char[]`: the low 16 bits of
/// the field are the string's offset in the record, the high 16 its length.
#[inline(always)]
fn victim_comm(ctx: &TracePointContext) -> [u8; 16] {
    let mut comm = [0u8; 16];
    let at = offset(Field::OomComm);
    if at == 0 {
        return comm;
    }
    // SAFETY: offset from this kernel's format file; probe reads are checked.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(at) }) else {
        return comm;
    };
    let start = (loc & 0xffff) as usize;
    if start < at {
        // The string follows the fixed fields; anything else is not what the format says.
        warn!(
            ctx,
            "mark_victim: comm at {} inside the fixed fields", start
        );
        return comm;
    }
    // SAFETY: as above.
    if let Ok(read) = unsafe { ctx.read_at::<[u8; 16]>(start) } {
        comm = read;
    }
    comm
}

/// The OOM killer marked a victim. Wakes userspace at once so it can read the victim's cgroup
/// from /proc before it is reaped.
#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    emit(
        OomVictim {
            kind: EventKind::OomKill as u32,
            pid: field(&ctx, Field::OomPid, 0i32) as u32,
            trigger_tgid: (pid_tgid >> 32) as u32,
            trigger_tid: pid_tgid as u32,
            uid: field(&ctx, Field::OomUid, u32::MAX),
            oom_score_adj: i32::from(field(&ctx, Field::OomScoreAdj, i16::MIN)),
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            total_vm_kb: field(&ctx, Field::OomTotalVm, u64::MAX),
            anon_rss_kb: field(&ctx, Field::OomAnonRss, u64::MAX),
            file_rss_kb: field(&ctx, Field::OomFileRss, u64::MAX),
            shmem_rss_kb: field(&ctx, Field::OomShmemRss, u64::MAX),
            pgtables_kb: field(&ctx, Field::OomPgtables, u64::MAX),
            trigger_memcg_id: memory_controller_cgroup_id(),
            comm: victim_comm(&ctx),
            trigger_comm: bpf_get_current_comm().unwrap_or_default(),
        },
        true,
    );
    0
}

#[tracepoint]
pub fn oom_wake_reaper(ctx: TracePointContext) -> u32 {
    reaper_event(&ctx, Field::ReaperWakePid, ReaperPhase::Woken)
}

#[tracepoint]
pub fn oom_start_reaping(ctx: TracePointContext) -> u32 {
    reaper_event(&ctx, Field::ReaperStartPid, ReaperPhase::Start)
}

#[tracepoint]
pub fn oom_finish_reaping(ctx: TracePointContext) -> u32 {
    reaper_event(&ctx, Field::ReaperFinishPid, ReaperPhase::Finish)
}

#[tracepoint]
pub fn oom_skip_reaping(ctx: TracePointContext) -> u32 {
    reaper_event(&ctx, Field::ReaperSkipPid, ReaperPhase::Skip)
}

/// The OOM reaper frees a victim's memory when the victim cannot exit promptly. Rare, never
/// filtered (it follows an OOM kill).
#[inline(always)]
fn reaper_event(ctx: &TracePointContext, pid: Field, phase: ReaperPhase) -> u32 {
    // The benchmark's floor: every program that calls this returns here first.
    if crate::config::empty_programs() {
        return 0;
    }
    emit(
        OomReaperEvent {
            kind: EventKind::OomReaper as u32,
            pid: field(ctx, pid, 0i32) as u32,
            phase: phase as u32,
            _pad: 0,
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
        },
        false,
    );
    0
}
