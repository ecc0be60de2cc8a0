//! kswapd (`vmscan/mm_vmscan_kswapd_wake`, `mm_vmscan_kswapd_sleep`) and who asks it to wake
//! (`vmscan/mm_vmscan_wakeup_kswapd`).

use super::{EventKind, Record};
use crate::pod;

/// kswapd of a node woke to balance it, or went back to sleep.
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
pub struct KswapdEvent {
    /// [`EventKind::Kswapd`] as `u32`.
    pub kind: u32,
    pub nid: u32,
    /// 1 = `mm_vmscan_kswapd_wake`, 0 = `mm_vmscan_kswapd_sleep`.
    pub awake: u32,
    /// Allocation order kswapd balances for (wake only).
    pub order: i32,
    pub ts_ns: u64,
}

impl Record for KswapdEvent {
    const KINDS: &'static [EventKind] = &[EventKind::Kswapd];
}

/// Wakeups of kswapd one process requested, per CPU, keyed by tgid.
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
pub struct KswapdWakeups {
    pub count: u64,
    /// `comm` of the latest requesting thread.
    pub comm: [u8; 16],
}

pod!(KswapdEvent, KswapdWakeups);
