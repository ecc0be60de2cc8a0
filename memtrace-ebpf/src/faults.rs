//! Page faults: counted per process in the kernel, streamed one by one only on request.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::PerCpuHashMap,
    programs::TracePointContext,
};
use memtrace_common::{
    events::{
        EventKind,
        fault::{FaultCounts, FaultEvent, X86_PF_WRITE},
    },
    fields::Field,
    lost::Lost,
    maps::MAX_FAULT_PROCESSES,
};

use crate::{
    config::{config, record_field, setting},
    filter::current_traced,
    ring::{count_lost, emit},
};

#[map]
static FAULTS: PerCpuHashMap<u32, FaultCounts> =
    PerCpuHashMap::with_max_entries(MAX_FAULT_PROCESSES, 0);

/// `exceptions/page_fault_user` runs on every user-mode fault, so the common path is one
/// per-CPU map update; a record per fault only with `--fault-events`. Its fields sit at fixed
/// offsets on every kernel (`Layout::Fixed`), loaded straight from the record.
#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    if crate::config::empty_programs() {
        return 0;
    }
    let Some((tgid, tid)) = current_traced() else {
        return 0;
    };
    // SAFETY: fixed offsets within this tracepoint's record, checked by the loader.
    let error_code = unsafe { record_field::<u64, { Field::FaultErrorCode.fixed() }>(&ctx) };
    let write = u64::from(error_code & X86_PF_WRITE != 0);
    count(tgid, write);
    if setting(&config().stream_faults) == 0 {
        return 0;
    }
    emit(
        FaultEvent {
            kind: EventKind::Fault as u32,
            tgid,
            tid,
            _pad: 0,
            ts_ns: unsafe { bpf_ktime_get_ns() },
            // SAFETY: as above.
            address: unsafe { record_field::<u64, { Field::FaultAddress.fixed() }>(&ctx) },
            ip: unsafe { record_field::<u64, { Field::FaultIp.fixed() }>(&ctx) },
            error_code,
        },
        false,
    );
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

/// Drops a pid's counts when the pid passes to a new process, which must start from zero.
/// What its previous holder counted since userspace last read the map is lost with it.
#[inline(always)]
pub fn forget(pid: u32) {
    let _ = FAULTS.remove(pid);
}
