//! Reclaim stalls and inactive-LRU scanning, from vmscan tracepoints.
//!
//! Direct and memcg reclaim are synchronous stalls of the allocating thread: their begin is
//! parked per thread id and the end emits one record with the latency and the pages reclaimed,
//! and adds the stall to log2 latency histograms per process and system-wide.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{HashMap, LruPerCpuHashMap, PerCpuArray},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use memtrace_common::{
    events::{
        EventKind,
        stall::{
            PendingReclaim, ReclaimKind, ReclaimStall, STALL_BUCKETS, ScanCounts, ScanSlot,
            StallHist, StallKey,
        },
    },
    fields::Field,
    lost::Lost,
    maps::{MAX_PENDING_RECLAIM, MAX_STALL_PROCESSES},
};

use crate::{
    config::field,
    filter::{current_traced, is_self},
    ring::{EVENTS, count_lost, submit_flags},
};

/// Begins parked per thread id until the matching end.
#[map]
static PENDING_RECLAIM: HashMap<u32, PendingReclaim> =
    HashMap::with_max_entries(MAX_PENDING_RECLAIM, 0);

#[map]
static STALLS: LruPerCpuHashMap<StallKey, StallHist> =
    LruPerCpuHashMap::with_max_entries(MAX_STALL_PROCESSES, 0);

#[map]
static STALLS_ALL: PerCpuArray<StallHist> =
    PerCpuArray::with_max_entries(ReclaimKind::COUNT as u32, 0);

#[map]
static LRU_SCAN: PerCpuArray<ScanCounts> = PerCpuArray::with_max_entries(ScanSlot::COUNT as u32, 0);

#[tracepoint]
pub fn direct_reclaim_begin(ctx: TracePointContext) -> u32 {
    begin(
        &ctx,
        ReclaimKind::Direct,
        Field::DirectBeginOrder,
        Field::DirectBeginGfp,
    )
}

#[tracepoint]
pub fn direct_reclaim_end(ctx: TracePointContext) -> u32 {
    end(&ctx, Field::DirectEndReclaimed)
}

#[tracepoint]
pub fn memcg_reclaim_begin(ctx: TracePointContext) -> u32 {
    begin(
        &ctx,
        ReclaimKind::Memcg,
        Field::MemcgBeginOrder,
        Field::MemcgBeginGfp,
    )
}

#[tracepoint]
pub fn memcg_reclaim_end(ctx: TracePointContext) -> u32 {
    end(&ctx, Field::MemcgEndReclaimed)
}

#[inline(always)]
fn begin(ctx: &TracePointContext, kind: ReclaimKind, order: Field, gfp: Field) -> u32 {
    // The benchmark's floor: every program that calls this returns here first.
    if crate::config::empty_programs() {
        return 0;
    }
    let Some((_, tid)) = current_traced() else {
        return 0;
    };
    let pending = PendingReclaim {
        // SAFETY: helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        // gfp_t is 32 bits; the tracepoint widened the field to `unsigned long` after 5.10,
        // so only its low (first, on little-endian) 4 bytes are read on every kernel.
        gfp_flags: u64::from(field(ctx, gfp, 0u32)),
        order: field(ctx, order, -1i32),
        reclaim_kind: kind as u32,
        nr_scanned: 0,
    };
    if PENDING_RECLAIM.insert(tid, pending, 0).is_err() {
        count_lost(Lost::ReclaimPendingFull);
        warn!(
            ctx,
            "reclaim pairing table full: stall of tid {} not timed", tid
        );
    }
    0
}

#[inline(always)]
fn end(ctx: &TracePointContext, reclaimed: Field) -> u32 {
    // The benchmark's floor: every program that calls this returns here first.
    if crate::config::empty_programs() {
        return 0;
    }
    let Some((tgid, tid)) = current_traced() else {
        return 0;
    };
    // SAFETY: a map value copied out before it is removed.
    let Some(pending) = (unsafe { PENDING_RECLAIM.get(tid) }).copied() else {
        // Began before memtrace attached.
        return 0;
    };
    let _ = PENDING_RECLAIM.remove(tid);
    // SAFETY: helper without preconditions.
    let latency_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(pending.start_ns);
    let nr_reclaimed = field(ctx, reclaimed, 0u64);
    let bucket = log2_bucket(latency_ns / 1000);
    let key = StallKey {
        tgid,
        reclaim_kind: pending.reclaim_kind,
    };
    add_stall(&key, bucket, latency_ns, nr_reclaimed, pending.nr_scanned);
    crate::stacks::stall(ctx, tgid, key.reclaim_kind, latency_ns, nr_reclaimed);

    // Written straight into the ring, not through `emit`: built on the stack beside what
    // this program already keeps there, the record made 5.10's and 6.1's verifiers refuse it.
    let Some(mut entry) = EVENTS.reserve::<ReclaimStall>(0) else {
        count_lost(Lost::RingFull);
        return 0;
    };
    entry.write(ReclaimStall {
        kind: EventKind::ReclaimStall as u32,
        tgid,
        tid,
        reclaim_kind: pending.reclaim_kind,
        order: pending.order,
        _pad: 0,
        gfp_flags: pending.gfp_flags,
        start_ns: pending.start_ns,
        latency_ns,
        nr_reclaimed,
        nr_scanned: pending.nr_scanned,
        comm: bpf_get_current_comm().unwrap_or_default(),
    });
    entry.submit(submit_flags(false));
    0
}

/// Adds one stall to the process's histogram and the system-wide one.
#[inline(always)]
fn add_stall(key: &StallKey, bucket: usize, latency_ns: u64, reclaimed: u64, scanned: u64) {
    if STALLS.get_ptr_mut(key).is_none() {
        let _ = STALLS.insert(key, StallHist::default(), 0);
    }
    if let Some(hist) = STALLS.get_ptr_mut(key) {
        // SAFETY: per-CPU map value, written only by this CPU.
        unsafe { add_to(&mut *hist, bucket, latency_ns, reclaimed, scanned) };
    }
    if let Some(hist) = STALLS_ALL.get_ptr_mut(key.reclaim_kind & (ReclaimKind::COUNT as u32 - 1)) {
        // SAFETY: as above.
        unsafe { add_to(&mut *hist, bucket, latency_ns, reclaimed, scanned) };
    }
}

#[inline(always)]
fn add_to(hist: &mut StallHist, bucket: usize, latency_ns: u64, reclaimed: u64, scanned: u64) {
    hist.count += 1;
    hist.total_ns += latency_ns;
    if latency_ns > hist.max_ns {
        hist.max_ns = latency_ns;
    }
    hist.nr_reclaimed += reclaimed;
    hist.nr_scanned += scanned;
    hist.buckets[bucket & (STALL_BUCKETS - 1)] += 1;
}

/// The log2 bucket of a latency in microseconds: the bit length of `usecs | 1`, so 0 and 1 µs
/// share bucket 1 and bucket `b` holds `2^(b-1) ..= 2^b - 1` µs.
///
/// Branch-free on purpose: smearing the top bit down and counting the ones is straight-line
/// ALU code. A chain of six `if v >= 1 << n` tests gave the verifier 64 paths, each with a
/// different constant bucket index, and it re-verified everything after them once per path
/// (~34 ms per program at load, most of memtrace's attach time).
#[inline(always)]
fn log2_bucket(usecs: u64) -> usize {
    // Latencies past 2^31 µs (36 min) all land in the last bucket.
    const LOW_BITS: u64 = (1 << (STALL_BUCKETS - 1)) - 1;
    let high = usecs >> (STALL_BUCKETS - 1);
    // 1 when `high` is non-zero, without a comparison (BPF has no setcc: it would branch).
    let overflow = (high | high.wrapping_neg()) >> 63;
    let mut v = ((usecs | 1) & LOW_BITS) | (overflow * LOW_BITS);
    v |= v >> 1;
    v |= v >> 2;
    v |= v >> 4;
    v |= v >> 8;
    v |= v >> 16;
    let bits = v.count_ones() as usize;
    // At most 31 already, but the verifier cannot follow the popcount's multiply, and the
    // compiler drops a mask it knows is redundant. A volatile reload hides the value from the
    // optimiser, so the mask stays and bounds the index for the verifier.
    // SAFETY: reading a local.
    unsafe { core::ptr::read_volatile(&bits) & (STALL_BUCKETS - 1) }
}

/// Pages scanned and freed from an inactive LRU. Inside a traced thread's stall they are added
/// to that stall; everything else (kswapd, proactive reclaim) is background.
#[tracepoint]
pub fn lru_shrink_inactive(ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // memtrace's own reclaim (it is never traced) would read as background reclaim.
    if is_self((pid_tgid >> 32) as u32) {
        return 0;
    }
    let scanned = field(&ctx, Field::ShrinkScanned, 0u64);
    let reclaimed = field(&ctx, Field::ShrinkReclaimed, 0u64);
    let tid = pid_tgid as u32;
    let slot = match PENDING_RECLAIM.get_ptr_mut(tid) {
        Some(pending) => {
            // SAFETY: a map value only its own thread updates.
            unsafe { (*pending).nr_scanned += scanned };
            ScanSlot::InStall as u32
        }
        None => ScanSlot::Background as u32,
    };
    if let Some(counts) = LRU_SCAN.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*counts).nr_scanned += scanned;
            (*counts).nr_reclaimed += reclaimed;
        }
    }
    0
}
