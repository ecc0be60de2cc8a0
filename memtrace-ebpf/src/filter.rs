//! Which processes are traced. Checked first by every program, so an untraced task costs one
//! array load: a hash lookup here cost more per hit of every program (bpf_stats on the refault
//! loop, BENCHMARKS.md), paid by every process on the machine.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::map, maps::Array};

use crate::config::{config, setting};

/// Traced tgids as a bitmap: bit `pid % 64` of word `pid / 64`. Resized by the loader to cover
/// `kernel.pid_max` (one word with no filter); all zero at load, so nothing is traced between
/// attaching and userspace filling it. A bit is set by userspace for a target and by
/// [`add`] for a followed child, and cleared by [`remove`] when its pid passes to a new
/// process; the bit of an exited process stays set until then, harmlessly, as no task has that
/// pid meanwhile.
#[map]
pub static TARGETS: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn word_and_bit(pid: u32) -> (u32, u64) {
    (pid / 64, 1u64 << (pid % 64))
}

/// Whether `tgid` is in the filter.
#[inline(always)]
fn contains(tgid: u32) -> bool {
    let (word, bit) = word_and_bit(tgid);
    TARGETS.get(word).is_some_and(|w| *w & bit != 0)
}

/// Changes one bit with an atomic add, the one atomic read-modify-write every supported kernel
/// has (and/or arrived in 5.12): adding the bit when clear sets it, subtracting it when set
/// clears it, and other CPUs' changes to the same word's other bits are kept. One pid's bit is
/// only changed by the fork that hands the pid to a new task, so the test then the add cannot
/// race with itself.
#[inline(always)]
fn flip(pid: u32, set: bool) -> Result<bool, ()> {
    let (word, bit) = word_and_bit(pid);
    let Some(ptr) = TARGETS.get_ptr_mut(word) else {
        return Err(());
    };
    // SAFETY: a map value, 8-byte aligned; changed only atomically, or by userspace at start.
    let was_set = unsafe { core::ptr::read_volatile(ptr) } & bit != 0;
    if was_set != set {
        let delta = if set { bit } else { bit.wrapping_neg() };
        // SAFETY: as above. The old value is not used, so this is the plain atomic add
        // (BPF_XADD) that kernels before 5.12 accept, not the fetching form.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(ptr, delta) };
    }
    Ok(was_set)
}

/// Adds `pid` to the filter; `Err` when it lies beyond the pids the filter covers.
#[inline(always)]
pub fn add(pid: u32) -> Result<(), ()> {
    flip(pid, true).map(|_| ())
}

/// Takes `pid` out of the filter; whether it was in.
#[inline(always)]
pub fn remove(pid: u32) -> bool {
    flip(pid, false).unwrap_or(false)
}

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
    if filtering() && !contains(tgid) {
        return None;
    }
    Some((tgid, tid))
}
