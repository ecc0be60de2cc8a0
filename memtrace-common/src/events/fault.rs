//! Page faults taken in user mode (`exceptions/page_fault_user`).

use super::{EventKind, Record};
use crate::pod;

/// One user-mode page fault, streamed only on request (`--fault-events`).
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
pub struct FaultEvent {
    /// [`EventKind::Fault`] as `u32`.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub _pad: u32,
    pub ts_ns: u64,
    /// Faulting address.
    pub address: u64,
    /// User instruction pointer.
    pub ip: u64,
    /// x86 page-fault error code: bit 0 protection (page present), bit 1 write, bit 4 fetch.
    pub error_code: u64,
}

impl Record for FaultEvent {
    const KINDS: &'static [EventKind] = &[EventKind::Fault];
}

/// x86 page-fault error code bits.
pub const X86_PF_PROTECTION: u64 = 1 << 0;
pub const X86_PF_WRITE: u64 = 1 << 1;
pub const X86_PF_FETCH: u64 = 1 << 4;

/// Page faults one process took in user mode, per CPU, keyed by tgid. Minor/major are not
/// known at that point (the tracepoint fires before the fault is handled); they come from the
/// task counters (see [`super::exit::ThreadExit`]).
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct FaultCounts {
    /// All user-mode faults.
    pub user: u64,
    /// Those caused by a write access.
    pub write: u64,
}

pod!(FaultEvent, FaultCounts);
