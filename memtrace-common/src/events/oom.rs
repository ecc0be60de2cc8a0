//! The OOM killer's victims (`oom/mark_victim`) and the OOM reaper (`oom/wake_reaper`,
//! `start_task_reaping`, `finish_task_reaping`, `skip_task_reaping`).

use super::{EventKind, Record};
use crate::pod;

/// The OOM killer chose a victim. Sizes in kB, as the tracepoint gives them; fields this
/// kernel's tracepoint lacks read as `u64::MAX` (or `u32::MAX`/`i16::MIN`).
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct OomVictim {
    /// [`EventKind::OomKill`] as `u32`.
    pub kind: u32,
    /// The victim task the kernel named.
    pub pid: u32,
    /// The task that ran out of memory and invoked the OOM killer (often the victim itself).
    pub trigger_tgid: u32,
    pub trigger_tid: u32,
    pub uid: u32,
    pub oom_score_adj: i32,
    pub ts_ns: u64,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    /// Kernfs id (the directory's inode number) of the triggering task's memory cgroup, read
    /// through `task->cgroups->subsys[memory]->cgroup->kn->id` at offsets from the kernel's
    /// BTF; 0 when unknown.
    pub trigger_memcg_id: u64,
    pub comm: [u8; 16],
    pub trigger_comm: [u8; 16],
}

impl Record for OomVictim {
    const KINDS: &'static [EventKind] = &[EventKind::OomKill];
}

named_enum! {
    /// What the OOM reaper did with a victim.
    pub enum ReaperPhase {
        /// `oom/wake_reaper`: queued for the reaper.
        Woken = 0 => "woken",
        /// `oom/start_task_reaping`.
        Start = 1 => "start",
        /// `oom/finish_task_reaping`.
        Finish = 2 => "finish",
        /// `oom/skip_task_reaping`: nothing to reap.
        Skip = 3 => "skip",
    }
}

/// One OOM reaper step for a victim task.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct OomReaperEvent {
    /// [`EventKind::OomReaper`] as `u32`.
    pub kind: u32,
    /// The victim task (as `oom/mark_victim` named it).
    pub pid: u32,
    /// A [`ReaperPhase`] as `u32`.
    pub phase: u32,
    pub _pad: u32,
    pub ts_ns: u64,
}

impl Record for OomReaperEvent {
    const KINDS: &'static [EventKind] = &[EventKind::OomReaper];
}

pod!(OomVictim, OomReaperEvent);
