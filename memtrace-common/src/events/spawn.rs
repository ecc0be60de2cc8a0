//! A task was created (`sched/sched_process_fork`), with a pid that another process may have
//! had before.

use super::{EventKind, Record};
use crate::pod;

/// A new thread or process got pid `child`. The kernel reuses a pid only after everything of
/// its previous holder is gone, and the fork tracepoint fires before the child runs, so in the
/// ring every record of an earlier process with that pid comes before this one: userspace
/// closes that process here, and records after it belong to the new one.
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
pub struct Spawn {
    /// [`EventKind::Spawn`] as `u32`.
    pub kind: u32,
    /// The forking process.
    pub parent: u32,
    /// The new task's pid (its tid: threads are forks too).
    pub child: u32,
    /// 1 when the child was added to the traced processes (`--follow`).
    pub followed: u32,
}

impl Record for Spawn {
    const KINDS: &'static [EventKind] = &[EventKind::Spawn];
}

pod!(Spawn);
