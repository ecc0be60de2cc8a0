//! A traced process replaced its program (`sched/sched_process_exec`).

use super::{EventKind, Record};
use crate::pod;

/// A process called exec: its new name. Its address space is new too.
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
pub struct ExecEvent {
    /// [`EventKind::Exec`] as `u32`.
    pub kind: u32,
    pub tgid: u32,
    pub ts_ns: u64,
    /// `comm` after the exec (the new program's name), NUL padded.
    pub comm: [u8; 16],
    /// Its memory cgroup as its new program starts ([`crate::cgroup`]); 0 when unknown.
    pub cgroup_id: u64,
}

impl Record for ExecEvent {
    const KINDS: &'static [EventKind] = &[EventKind::Exec];
}

pod!(ExecEvent);
