//! Reclaim stalls, kswapd and the OOM killer, from vmscan and oom tracepoints.
//!
//! Direct and memcg reclaim are synchronous stalls of the allocating thread: their begin is
//! parked per thread id and the end emits one record with the latency and the pages reclaimed,
//! and adds the stall to log2 latency histograms per process and system-wide. Field offsets of
//! these tracepoints change across kernel versions; userspace reads them from tracefs.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruPerCpuHashMap, PerCpuArray},
    programs::TracePointContext,
};
use memtrace_common::{
    EventKind,
    maps::{Lost, MAX_PENDING_RECLAIM, MAX_STALL_PROCESSES, MAX_WAKEUP_PROCESSES},
    reclaim::{
        KswapdEvent, KswapdWakeups, OomReaperEvent, OomVictim, PendingReclaim, RECLAIM_KINDS,
        ReaperPhase, ReclaimKind, ReclaimStall, SCAN_BACKGROUND, SCAN_IN_STALL, SCAN_SLOTS,
        STALL_BUCKETS, ScanCounts, StallHist, StallKey,
    },
};

use crate::{
    filter::current_traced,
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
static STALLS_ALL: PerCpuArray<StallHist> = PerCpuArray::with_max_entries(RECLAIM_KINDS, 0);

#[map]
static KSWAPD_WAKEUPS: LruPerCpuHashMap<u32, KswapdWakeups> =
    LruPerCpuHashMap::with_max_entries(MAX_WAKEUP_PROCESSES, 0);

#[map]
static LRU_SCAN: PerCpuArray<ScanCounts> = PerCpuArray::with_max_entries(SCAN_SLOTS, 0);

// Field offsets, from tracefs at load time; 0 = field absent on this kernel.
#[unsafe(no_mangle)]
static DIRECT_BEGIN_ORDER_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static DIRECT_BEGIN_GFP_OFFSET: u32 = 16;
#[unsafe(no_mangle)]
static DIRECT_END_RECLAIMED_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static MEMCG_BEGIN_ORDER_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static MEMCG_BEGIN_GFP_OFFSET: u32 = 16;
#[unsafe(no_mangle)]
static MEMCG_END_RECLAIMED_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static KSWAPD_WAKE_NID_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static KSWAPD_WAKE_ORDER_OFFSET: u32 = 16;
#[unsafe(no_mangle)]
static KSWAPD_SLEEP_NID_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static SHRINK_SCANNED_OFFSET: u32 = 16;
#[unsafe(no_mangle)]
static SHRINK_RECLAIMED_OFFSET: u32 = 24;
#[unsafe(no_mangle)]
static OOM_PID_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static OOM_COMM_OFFSET: u32 = 12;
#[unsafe(no_mangle)]
static OOM_TOTAL_VM_OFFSET: u32 = 16;
#[unsafe(no_mangle)]
static OOM_ANON_RSS_OFFSET: u32 = 24;
#[unsafe(no_mangle)]
static OOM_FILE_RSS_OFFSET: u32 = 32;
#[unsafe(no_mangle)]
static OOM_SHMEM_RSS_OFFSET: u32 = 40;
#[unsafe(no_mangle)]
static OOM_UID_OFFSET: u32 = 48;
#[unsafe(no_mangle)]
static OOM_PGTABLES_OFFSET: u32 = 56;
#[unsafe(no_mangle)]
static OOM_SCORE_ADJ_OFFSET: u32 = 64;
#[unsafe(no_mangle)]
static REAPER_WAKE_PID_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static REAPER_START_PID_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static REAPER_FINISH_PID_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static REAPER_SKIP_PID_OFFSET: u32 = 8;

// The path to the current task's memory cgroup id, from BTF; index u32::MAX = unknown.
#[unsafe(no_mangle)]
static TASK_CGROUPS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CSS_SET_SUBSYS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CSS_CGROUP_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_KN_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static KERNFS_NODE_ID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static MEMCG_SUBSYS_INDEX: u32 = u32::MAX;

#[inline(always)]
fn offset(global: &u32) -> usize {
    // SAFETY: see filter::current_traced.
    unsafe { core::ptr::read_volatile(global) as usize }
}

/// Reads a field at an offset from this kernel's format file, or `absent` when the field does
/// not exist here (offset 0).
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, global: &u32, absent: T) -> T {
    let at = offset(global);
    if at == 0 {
        return absent;
    }
    // SAFETY: offset from this kernel's format file for this tracepoint.
    unsafe { ctx.read_at::<T>(at) }.unwrap_or(absent)
}

#[tracepoint]
pub fn direct_reclaim_begin(ctx: TracePointContext) -> u32 {
    begin(
        &ctx,
        ReclaimKind::Direct,
        &DIRECT_BEGIN_ORDER_OFFSET,
        &DIRECT_BEGIN_GFP_OFFSET,
    )
}

#[tracepoint]
pub fn direct_reclaim_end(ctx: TracePointContext) -> u32 {
    end(&ctx, &DIRECT_END_RECLAIMED_OFFSET)
}

#[tracepoint]
pub fn memcg_reclaim_begin(ctx: TracePointContext) -> u32 {
    begin(
        &ctx,
        ReclaimKind::Memcg,
        &MEMCG_BEGIN_ORDER_OFFSET,
        &MEMCG_BEGIN_GFP_OFFSET,
    )
}

#[tracepoint]
pub fn memcg_reclaim_end(ctx: TracePointContext) -> u32 {
    end(&ctx, &MEMCG_END_RECLAIMED_OFFSET)
}

#[inline(always)]
fn begin(ctx: &TracePointContext, kind: ReclaimKind, order: &u32, gfp: &u32) -> u32 {
    let Some((_, tid)) = current_traced() else {
        return 0;
    };
    let pending = PendingReclaim {
        // SAFETY: helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        gfp_flags: field(ctx, gfp, 0u64),
        order: field(ctx, order, -1i32),
        reclaim_kind: kind as u32,
        nr_scanned: 0,
    };
    if PENDING_RECLAIM.insert(tid, pending, 0).is_err() {
        count_lost(Lost::ReclaimPendingFull);
    }
    0
}

#[inline(always)]
fn end(ctx: &TracePointContext, reclaimed: &u32) -> u32 {
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
    if let Some(hist) = STALLS_ALL.get_ptr_mut(key.reclaim_kind & (RECLAIM_KINDS - 1)) {
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
    let scanned = field(&ctx, &SHRINK_SCANNED_OFFSET, 0u64);
    let reclaimed = field(&ctx, &SHRINK_RECLAIMED_OFFSET, 0u64);
    let tid = bpf_get_current_pid_tgid() as u32;
    let slot = match PENDING_RECLAIM.get_ptr_mut(tid) {
        Some(pending) => {
            // SAFETY: a map value only its own thread updates.
            unsafe { (*pending).nr_scanned += scanned };
            SCAN_IN_STALL
        }
        None => SCAN_BACKGROUND,
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

/// Someone's allocation found a zone below its low watermark and asked kswapd to wake.
#[tracepoint]
pub fn wakeup_kswapd(_ctx: TracePointContext) -> u32 {
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
    let nid = field(&ctx, &KSWAPD_WAKE_NID_OFFSET, 0i32);
    let order = field(&ctx, &KSWAPD_WAKE_ORDER_OFFSET, -1i32);
    kswapd_event(nid, order, 1)
}

#[tracepoint]
pub fn kswapd_sleep(ctx: TracePointContext) -> u32 {
    let nid = field(&ctx, &KSWAPD_SLEEP_NID_OFFSET, 0i32);
    kswapd_event(nid, -1, 0)
}

/// kswapd changes state at most a few hundred times a second even under heavy pressure:
/// streamed, and paired into active periods in userspace.
#[inline(always)]
fn kswapd_event(nid: i32, order: i32, awake: u32) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<KswapdEvent>(0) else {
        count_lost(Lost::RingFull);
        return 0;
    };
    entry.write(KswapdEvent {
        kind: EventKind::Kswapd as u32,
        nid: nid as u32,
        awake,
        order,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    });
    entry.submit(submit_flags(false));
    0
}

/// The kernfs id of the current task's memory cgroup, or 0. Five dependent reads at offsets
/// userspace took from BTF; each is checked by bpf_probe_read_kernel. Userspace maps the id to
/// a path. Used only for OOM kills (rare), where /proc may no longer show the victim's cgroup.
#[inline(always)]
fn current_memcg_id() -> u64 {
    // SAFETY: see filter::current_traced.
    let index = unsafe { core::ptr::read_volatile(&MEMCG_SUBSYS_INDEX) };
    if index >= 64 {
        return 0;
    }
    // SAFETY: the current task pointer, then pointers read from kernel memory; every read goes
    // through bpf_probe_read_kernel, which fails cleanly on a bad address.
    unsafe {
        let read = |address: u64| bpf_probe_read_kernel(address as *const u64).unwrap_or(0);
        let task = bpf_get_current_task();
        let cset = read(task + offset(&TASK_CGROUPS_OFFSET) as u64);
        if cset == 0 {
            return 0;
        }
        let css = read(cset + offset(&CSS_SET_SUBSYS_OFFSET) as u64 + 8 * u64::from(index));
        if css == 0 {
            return 0;
        }
        let cgroup = read(css + offset(&CSS_CGROUP_OFFSET) as u64);
        if cgroup == 0 {
            return 0;
        }
        let kn = read(cgroup + offset(&CGROUP_KN_OFFSET) as u64);
        if kn == 0 {
            return 0;
        }
        read(kn + offset(&KERNFS_NODE_ID_OFFSET) as u64)
    }
}

/// The OOM killer marked a victim. Never filtered: an OOM kill matters whoever it hits. Wakes
/// userspace at once so it can read the victim's cgroup from /proc before it is reaped.
#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(mut entry) = EVENTS.reserve::<OomVictim>(0) else {
        count_lost(Lost::RingFull);
        return 0;
    };
    let mut comm = [0u8; 16];
    let loc_offset = offset(&OOM_COMM_OFFSET);
    if loc_offset != 0 {
        // A __data_loc field: the low 16 bits are the string's offset in the record.
        // SAFETY: offset from this kernel's format file; probe reads are checked.
        if let Ok(loc) = unsafe { ctx.read_at::<u32>(loc_offset) } {
            comm = unsafe { ctx.read_at::<[u8; 16]>((loc & 0xffff) as usize) }.unwrap_or(comm);
        }
    }
    entry.write(OomVictim {
        kind: EventKind::OomKill as u32,
        pid: field(&ctx, &OOM_PID_OFFSET, 0i32) as u32,
        trigger_tgid: (pid_tgid >> 32) as u32,
        trigger_tid: pid_tgid as u32,
        uid: field(&ctx, &OOM_UID_OFFSET, u32::MAX),
        oom_score_adj: i32::from(field(&ctx, &OOM_SCORE_ADJ_OFFSET, i16::MIN)),
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        total_vm_kb: field(&ctx, &OOM_TOTAL_VM_OFFSET, u64::MAX),
        anon_rss_kb: field(&ctx, &OOM_ANON_RSS_OFFSET, u64::MAX),
        file_rss_kb: field(&ctx, &OOM_FILE_RSS_OFFSET, u64::MAX),
        shmem_rss_kb: field(&ctx, &OOM_SHMEM_RSS_OFFSET, u64::MAX),
        pgtables_kb: field(&ctx, &OOM_PGTABLES_OFFSET, u64::MAX),
        trigger_memcg_id: current_memcg_id(),
        comm,
        trigger_comm: bpf_get_current_comm().unwrap_or_default(),
    });
    entry.submit(submit_flags(true));
    0
}

#[tracepoint]
pub fn oom_wake_reaper(ctx: TracePointContext) -> u32 {
    reaper_event(&ctx, &REAPER_WAKE_PID_OFFSET, ReaperPhase::Woken)
}

#[tracepoint]
pub fn oom_start_reaping(ctx: TracePointContext) -> u32 {
    reaper_event(&ctx, &REAPER_START_PID_OFFSET, ReaperPhase::Start)
}

#[tracepoint]
pub fn oom_finish_reaping(ctx: TracePointContext) -> u32 {
    reaper_event(&ctx, &REAPER_FINISH_PID_OFFSET, ReaperPhase::Finish)
}

#[tracepoint]
pub fn oom_skip_reaping(ctx: TracePointContext) -> u32 {
    reaper_event(&ctx, &REAPER_SKIP_PID_OFFSET, ReaperPhase::Skip)
}

/// The OOM reaper frees a victim's memory when the victim cannot exit promptly. Rare, never
/// filtered (it follows an OOM kill).
#[inline(always)]
fn reaper_event(ctx: &TracePointContext, pid: &u32, phase: ReaperPhase) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<OomReaperEvent>(0) else {
        count_lost(Lost::RingFull);
        return 0;
    };
    entry.write(OomReaperEvent {
        kind: EventKind::OomReaper as u32,
        pid: field(ctx, pid, 0i32) as u32,
        phase: phase as u32,
        _pad: 0,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    });
    entry.submit(submit_flags(false));
    0
}
