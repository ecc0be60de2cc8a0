//! The events ring buffer and the per-CPU counters of what could not be delivered.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use memtrace_common::lost::Lost;

use crate::config::{config, setting};

/// Resized by userspace at load time (`--ring-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(Lost::COUNT as u32, 0);

/// Counts one dropped record on this CPU. The add is atomic: a per-CPU slot is not enough on
/// its own, as programs on BPF trampolines run with only migration disabled, so a program
/// preempted between the load and the store of a plain `+= 1` can lose another's count on the
/// same CPU. Drops are rare: the atomic costs nothing that matters.
#[inline(always)]
pub fn count_lost(why: Lost) {
    if let Some(counter) = LOST.get_ptr_mut(why as u32) {
        // SAFETY: a map value, 8-byte aligned, changed only atomically by the programs. The old
        // value is not used: the plain atomic add (BPF_XADD) every supported kernel has.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1) };
    }
}

/// Sends `record` to userspace, or counts it lost when the ring is full. `urgent`: see
/// [`submit_flags`].
#[inline(always)]
pub fn emit<T: 'static>(record: T, urgent: bool) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(submit_flags(urgent));
        }
        None => count_lost(Lost::RingFull),
    }
}

/// Flags for committing a record: wake userspace only once a batch has accumulated. A wakeup
/// per record costs a cross-CPU interrupt each; userspace also drains on a timer, so records
/// below the threshold are delayed, never stranded. `urgent` records (rare ones userspace must
/// enrich from /proc while the caller still holds the state) wake it at once.
#[inline(always)]
pub fn submit_flags(urgent: bool) -> u64 {
    let threshold = setting(&config().wakeup_bytes);
    if urgent || EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= threshold {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}
