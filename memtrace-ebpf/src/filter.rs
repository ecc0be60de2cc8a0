//! Which processes are traced. Checked first by every program, so untraced tasks cost one map
//! lookup at most.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::map, maps::HashMap};
use memtrace_common::maps::MAX_TARGETS;

use crate::config::{config, setting};

/// Traced tgids. Empty at load, so nothing is traced between attaching and userspace filling
/// it.
#[map]
pub static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Whether userspace asked for only some processes.
#[inline(always)]
pub fn filtering() -> bool {
    setting(&config().filter_by_tgid) != 0
}

/// Whether `tgid` is memtrace itself, which never traces itself.
#[inline(always)]
pub fn is_self(tgid: u32) -> bool {
    tgid == setting(&config().self_tgid)
}

/// The current task as `(tgid, tid)` if it is traced.
#[inline(always)]
pub fn current_traced() -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if is_self(tgid) {
        return None;
    }
    if filtering() && TARGETS.get_ptr(tgid).is_none() {
        return None;
    }
    Some((tgid, tid))
}
