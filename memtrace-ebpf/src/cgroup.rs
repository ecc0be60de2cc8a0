//! The memory-cgroup id of the current task, as `memtrace_common::cgroup` defines it for this
//! machine's hierarchy.

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_probe_read_kernel};
use memtrace_common::{cgroup::CgroupIds, members::Member};

use crate::config::{config, member, setting};

/// The current task's memory-cgroup id on this machine (`Config::cgroup_ids`), or 0.
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    let ids = u32::from(setting(&config().cgroup_ids));
    if ids == CgroupIds::Unified as u32 {
        // SAFETY: helper without preconditions.
        return unsafe { bpf_get_current_cgroup_id() };
    }
    if ids == CgroupIds::MemoryV1 as u32 {
        return memory_controller_cgroup_id();
    }
    0
}

/// The kernfs id of the current task's cgroup in the hierarchy of the memory controller (v1
/// or v2), or 0: `task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id`, five dependent reads
/// at offsets userspace took from BTF, each checked by bpf_probe_read_kernel.
#[inline(always)]
pub fn memory_controller_cgroup_id() -> u64 {
    let index = setting(&config().memcg_subsys_index);
    if index >= 64 {
        return 0;
    }
    // SAFETY: the current task pointer, then pointers read from kernel memory; every read goes
    // through bpf_probe_read_kernel, which fails cleanly on a bad address.
    unsafe {
        let read = |address: u64| bpf_probe_read_kernel(address as *const u64).unwrap_or(0);
        let task = bpf_get_current_task();
        let cset = read(task + member(Member::TaskCgroups));
        if cset == 0 {
            return 0;
        }
        let css = read(cset + member(Member::CssSetSubsys) + 8 * u64::from(index));
        if css == 0 {
            return 0;
        }
        let cgroup = read(css + member(Member::CssCgroup));
        if cgroup == 0 {
            return 0;
        }
        let kn = read(cgroup + member(Member::CgroupKn));
        if kn == 0 {
            return 0;
        }
        read(kn + member(Member::KernfsNodeId))
    }
}
