//! Direct and memcg reclaim stalls (`vmscan/mm_vmscan_{direct,memcg}_reclaim_begin/end`) and
//! inactive-LRU scanning (`vmscan/mm_vmscan_lru_shrink_inactive`).

use super::{EventKind, Record};
use crate::pod;

named_enum! {
    /// Which reclaim a task stalled in. Indexes the system-wide histogram array.
    pub enum ReclaimKind {
        /// `mm_vmscan_direct_reclaim_begin/end`: a zone fell below its min watermark.
        Direct = 0 => "direct",
        /// `mm_vmscan_memcg_reclaim_begin/end`: the task's memory cgroup hit its limit.
        Memcg = 1 => "memcg",
    }
}

/// Number of log2 latency buckets. Bucket `b` (b >= 1) holds stalls of `2^(b-1) ..= 2^b - 1`
/// microseconds, except bucket 1 which also holds sub-microsecond stalls; bucket 0 is unused.
/// A power of two: the kernel programs mask indices with it.
pub const STALL_BUCKETS: usize = 32;
const _: () = assert!(STALL_BUCKETS.is_power_of_two());

/// A reclaim begin parked per thread id until the matching end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingReclaim {
    pub start_ns: u64,
    pub gfp_flags: u64,
    pub order: i32,
    /// A [`ReclaimKind`] as `u32`.
    pub reclaim_kind: u32,
    /// Pages scanned by `mm_vmscan_lru_shrink_inactive` inside this stall.
    pub nr_scanned: u64,
}

/// One completed reclaim stall of a thread.
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
pub struct ReclaimStall {
    /// [`EventKind::ReclaimStall`] as `u32`.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    /// A [`ReclaimKind`] as `u32`.
    pub reclaim_kind: u32,
    pub order: i32,
    pub _pad: u32,
    pub gfp_flags: u64,
    /// `bpf_ktime_get_ns()` at begin (CLOCK_MONOTONIC).
    pub start_ns: u64,
    pub latency_ns: u64,
    /// Pages the reclaim freed (the end tracepoint's `nr_reclaimed`).
    pub nr_reclaimed: u64,
    /// Inactive-LRU pages scanned during the stall.
    pub nr_scanned: u64,
    pub comm: [u8; 16],
}

impl Record for ReclaimStall {
    const KINDS: &'static [EventKind] = &[EventKind::ReclaimStall];
}

/// Key of the per-process stall histograms.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct StallKey {
    pub tgid: u32,
    /// A [`ReclaimKind`] as `u32`.
    pub reclaim_kind: u32,
}

/// Stalls of one process (or the whole system) in one kind of reclaim, per CPU.
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
pub struct StallHist {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub nr_reclaimed: u64,
    pub nr_scanned: u64,
    /// Log2 latency buckets in microseconds (see [`STALL_BUCKETS`]).
    pub buckets: [u64; STALL_BUCKETS],
}

named_enum! {
    /// The slots of the inactive-LRU scan counters.
    pub enum ScanSlot {
        /// Scans inside a traced thread's direct or memcg stall.
        InStall = 0 => "in_stall",
        /// Everything else: kswapd, proactive reclaim, untraced tasks.
        Background = 1 => "background",
    }
}

/// Pages the inactive LRU scan looked at and freed, per CPU, per [`ScanSlot`].
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
pub struct ScanCounts {
    pub nr_scanned: u64,
    pub nr_reclaimed: u64,
}

pod!(ReclaimStall, StallKey, StallHist, ScanCounts);
