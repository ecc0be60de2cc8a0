//! Page faults: counted per process in the kernel, streamed one by one only on request.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::PerCpuHashMap,
    programs::TracePointContext,
};
use memtrace_common::{
    EventKind, FaultCounts, FaultEvent,
    maps::{Lost, MAX_FAULT_PROCESSES},
};

use crate::{
    filter::current_traced,
    ring::{EVENTS, count_lost, submit_flags},
    syscalls::record_field,
};

#[map]
static FAULTS: PerCpuHashMap<u32, FaultCounts> =
    PerCpuHashMap::with_max_entries(MAX_FAULT_PROCESSES, 0);

#[unsafe(no_mangle)]
static STREAM_FAULTS: u8 = 0;

/// x86 page-fault error code bit: the access was a write.
const X86_PF_WRITE: u64 = 1 << 1;

/// `exceptions/page_fault_user`: address at 8, ip at 16, error_code at 24 (stable since the
/// tracepoint was added in 3.16). Runs on every user-mode fault, so the common path is one
/// per-CPU map update; a record per fault only with `--fault-events`.
#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid)) = current_traced() else {
        return 0;
    };
    // SAFETY: offsets from the tracepoint's format (address 8, ip 16, error_code 24).
    let error_code = unsafe { record_field::<u64, 24>(&ctx) };
    let write = u64::from(error_code & X86_PF_WRITE != 0);
    count(tgid, write);
    // SAFETY: see filter::current_traced.
    if unsafe { core::ptr::read_volatile(&STREAM_FAULTS) } == 0 {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<FaultEvent>(0) else {
        count_lost(Lost::RingFull);
        return 0;
    };
    entry.write(FaultEvent {
        kind: EventKind::Fault as u32,
        tgid,
        tid,
        _pad: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        // SAFETY: as above.
        address: unsafe { record_field::<u64, 8>(&ctx) },
        ip: unsafe { record_field::<u64, 16>(&ctx) },
        error_code,
    });
    entry.submit(submit_flags(false));
    0
}

#[inline(always)]
fn count(tgid: u32, write: u64) {
    if let Some(counts) = FAULTS.get_ptr_mut(tgid) {
        // SAFETY: this CPU's slot; preemption is off while the program runs.
        unsafe {
            (*counts).user += 1;
            (*counts).write += write;
        }
        return;
    }
    if FAULTS
        .insert(tgid, FaultCounts { user: 1, write }, 0)
        .is_err()
    {
        count_lost(Lost::FaultTableFull);
    }
}
