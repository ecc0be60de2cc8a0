//! kswapd: when each node's kswapd wakes and sleeps, and who asks it to wake.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::LruPerCpuHashMap,
    programs::TracePointContext,
};
use memtrace_common::{
    events::{
        EventKind,
        kswapd::{KswapdEvent, KswapdWakeups},
    },
    fields::Field,
    maps::MAX_WAKEUP_PROCESSES,
};

use crate::{config::field, ring::emit};

#[map]
static KSWAPD_WAKEUPS: LruPerCpuHashMap<u32, KswapdWakeups> =
    LruPerCpuHashMap::with_max_entries(MAX_WAKEUP_PROCESSES, 0);

/// Someone's allocation found a zone below its low watermark and asked kswapd to wake.
#[tracepoint]
pub fn wakeup_kswapd(_ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if KSWAPD_WAKEUPS.get_ptr_mut(tgid).is_none() {
        let _ = KSWAPD_WAKEUPS.insert(tgid, KswapdWakeups::default(), 0);
    }
    if let Some(wakeups) = KSWAPD_WAKEUPS.get_ptr_mut(tgid) {
        // SAFETY: per-CPU map value.
        unsafe {
            (*wakeups).count += 1;
            (*wakeups).comm = bpf_get_current_comm().unwrap_or_default();
        }
    }
    0
}

#[tracepoint]
pub fn kswapd_wake(ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    let nid = field(&ctx, Field::KswapdWakeNid, 0i32);
    let order = field(&ctx, Field::KswapdWakeOrder, -1i32);
    kswapd_event(nid, order, 1)
}

#[tracepoint]
pub fn kswapd_sleep(ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    let nid = field(&ctx, Field::KswapdSleepNid, 0i32);
    kswapd_event(nid, -1, 0)
}

/// kswapd changes state at most a few hundred times a second even under heavy pressure:
/// streamed, and paired into active periods in userspace.
#[inline(always)]
fn kswapd_event(nid: i32, order: i32, awake: u32) -> u32 {
    emit(
        KswapdEvent {
            kind: EventKind::Kswapd as u32,
            nid: nid as u32,
            awake,
            order,
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
        },
        false,
    );
    0
}
