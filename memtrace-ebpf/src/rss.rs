//! RSS per address space from `kmem/rss_stat`, including pages taken from a process by other
//! tasks (kswapd, another process's reclaim, the OOM reaper).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_task, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use memtrace_common::{
    events::{
        EventKind,
        rss::{AddressSpaceGone, RSS_MEMBERS, RssState},
    },
    fields::Field,
    lost::Lost,
    maps::MAX_RSS_MMS,
    members::{Member, PF_KTHREAD, PF_MEMALLOC},
};

use crate::{
    config::{member, record_field},
    filter::current_traced,
    ring::{count_lost, emit},
};

/// Per mm, dropped when the mm is torn down (see [`forget`]): a plain hash, as an LRU map
/// would write its recency on every update of this hot path and evict silently when full.
#[map]
static RSS: HashMap<u32, RssState> = HashMap::with_max_entries(MAX_RSS_MMS, 0);

/// `mm_id` is a hash of the mm pointer and `curr` says whether the mm is the current task's.
/// The owner's own updates (`curr` = 1) teach us which process an mm belongs to; updates made
/// by anyone else to a known mm are then attributed to that owner, as external. It fires on
/// every change of an RSS counter, so it loads its fields straight from the record
/// (`Layout::Fixed`).
#[tracepoint]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    // SAFETY: fixed offsets within this tracepoint's record, checked by the loader.
    let (mm_id, curr, member, size) = unsafe {
        (
            record_field::<u32, { Field::RssMmId.fixed() }>(&ctx),
            record_field::<u32, { Field::RssCurr.fixed() }>(&ctx),
            record_field::<i32, { Field::RssMember.fixed() }>(&ctx),
            record_field::<i64, { Field::RssSize.fixed() }>(&ctx),
        )
    };
    let Ok(member) = usize::try_from(member) else {
        return 0;
    };
    if member >= RSS_MEMBERS {
        return 0;
    }
    // Already in range, but the verifier loses that bound through the compiler's register
    // copies. A volatile reload hides the value from the optimiser, so the mask stays in the
    // code and re-bounds the index where it is used.
    // SAFETY: reading a local.
    let member = unsafe { core::ptr::read_volatile(&member) } & (RSS_MEMBERS - 1);
    if curr != 0 {
        own_update(mm_id, member, size);
    } else {
        other_update(mm_id, member, size);
    }
    0
}
/// The traced process changed its own RSS.
#[inline(always)]
fn own_update(mm_id: u32, member: usize, size: i64) {
    let Some((tgid, _)) = current_traced() else {
        return;
    };
    if let Some(state) = RSS.get_ptr_mut(mm_id) {
        // SAFETY: a map value; a racing writer can only store another absolute size.
        unsafe {
            (*state).tgid = tgid;
            (*state).size[member] = size;
        }
        return;
    }
    let mut state = RssState {
        tgid,
        _pad: 0,
        size: [-1; RSS_MEMBERS],
        external_drop: [0; RSS_MEMBERS],
    };
    state.size[member] = size;
    if RSS.insert(mm_id, state, 0).is_err() {
        count_lost(Lost::RssTableFull);
    }
}

/// Someone else changed a known mm's RSS. Only a task that reclaims memory can take pages
/// from another process: one in direct or memcg reclaim or kswapd (`PF_MEMALLOC`), or the OOM
/// reaper. Anyone else is not taking them: the owner tearing down its own mm at exit (its mm
/// pointer already cleared) or exec's old mm, a reader of /proc/PID/* that drops the mm's last
/// reference after the owner exited (the teardown then runs in the reader), or a remote access.
#[inline(always)]
fn other_update(mm_id: u32, member: usize, size: i64) {
    let Some(state) = RSS.get_ptr_mut(mm_id) else {
        return;
    };
    let taking = reclaiming();
    // SAFETY: a map value. Two reclaimers updating one mm at the same instant could lose one
    // increment (no atomic add on this target from Rust); the size itself stays exact.
    unsafe {
        let previous = (*state).size[member];
        if taking && previous > size && previous >= 0 {
            (*state).external_drop[member] += (previous - size) as u64;
        }
        (*state).size[member] = size;
    }
    if !taking && torn_down(state) {
        forget(mm_id, state);
    }
}

/// Whether every counter is back to zero: a live process always maps something, so only a
/// teardown gets here (a counter never seen changing is -1 and was zero all along).
#[inline(always)]
fn torn_down(state: *const RssState) -> bool {
    // SAFETY: a map value; a racing update can only make this return false.
    (0..RSS_MEMBERS).all(|m| unsafe { (*state).size[m] } <= 0)
}

/// Drops an mm's state, so a new mm at the same address starts afresh instead of inheriting its
/// owner and what was taken from it; what was taken goes to userspace with the owner.
#[inline(always)]
fn forget(mm_id: u32, state: *const RssState) {
    // SAFETY: a map value, read before it is deleted.
    let (tgid, taken) = unsafe { ((*state).tgid, (*state).external_drop) };
    let _ = RSS.remove(mm_id);
    if taken.iter().all(|&bytes| bytes == 0) {
        return;
    }
    emit(
        AddressSpaceGone {
            kind: EventKind::AddressSpaceGone as u32,
            tgid,
            taken,
        },
        false,
    );
}

/// Whether the current task is reclaiming memory: `PF_MEMALLOC` (direct or memcg reclaim,
/// kswapd), or the OOM reaper kernel thread. False when `task_struct.flags` is not known here.
#[inline(always)]
fn reclaiming() -> bool {
    let at = member(Member::TaskFlags);
    if at == 0 {
        return false;
    }
    // SAFETY: the current task plus an offset from this kernel's BTF; the read is checked.
    let flags = unsafe { bpf_probe_read_kernel((bpf_get_current_task() + at) as *const u32) };
    let Ok(flags) = flags else {
        return false;
    };
    if flags & PF_MEMALLOC != 0 {
        return true;
    }
    flags & PF_KTHREAD != 0
        && bpf_get_current_comm().is_ok_and(|comm| comm.starts_with(b"oom_reaper\0"))
}
