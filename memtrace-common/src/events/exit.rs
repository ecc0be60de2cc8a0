//! Thread exits (`sched/sched_process_exit`), carrying the thread's final fault counters and
//! memory cgroup.

use super::{EventKind, Record};
use crate::pod;

/// A traced thread's final fault counters (`task_struct.min_flt`/`maj_flt`, the numbers
/// /proc/PID/task/TID/stat shows), read as it exits.
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
pub struct ThreadExit {
    /// [`EventKind::ThreadExit`] as `u32`.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    /// 1 when this is the last thread of its process, 0 when not, [`GROUP_DEAD_UNKNOWN`] on
    /// kernels whose tracepoint lacks `group_dead` (before 6.18): `do_exit` computes it in a
    /// local variable, and reading `signal->live` instead would race with sibling threads.
    pub group_dead: u32,
    /// 1 when every thread of the process has begun to exit (`signal->live` is 0: `do_exit`
    /// decrements it before the tracepoint), 0 when not, [`GROUP_DEAD_UNKNOWN`] when this
    /// kernel's BTF does not give the fields. Unlike `group_dead`, two threads exiting at once
    /// may both say 1; it is what tells, before 6.18, that the process is gone.
    pub process_exiting: u32,
    /// Keeps the `u64`s aligned without implicit padding.
    pub _reserved: u32,
    pub min_flt: u64,
    pub maj_flt: u64,
    /// When its process started (`group_leader->start_boottime`, ns); 0 when unknown.
    pub process_start_ns: u64,
    /// The thread's memory cgroup as it exits ([`crate::cgroup`]); 0 when unknown.
    pub cgroup_id: u64,
    /// The thread's name, NUL padded: the process's name when the thread is its leader (a
    /// process that exits before memtrace reads /proc is still named).
    pub comm: [u8; 16],
}

impl Record for ThreadExit {
    const KINDS: &'static [EventKind] = &[EventKind::ThreadExit];
}

/// [`ThreadExit::group_dead`] when the tracepoint does not say.
pub const GROUP_DEAD_UNKNOWN: u32 = u32::MAX;

pod!(ThreadExit);
