//! The memory-cgroup id the kernel programs read for a process, so that userspace can attribute
//! even a process that is gone before it could read /proc/PID/cgroup.
//!
//! Which hierarchy the id is from depends on where the memory controller is, and the loader
//! says which in `Config::cgroup_ids`:
//!
//! - **cgroup v2** (the memory controller on the unified hierarchy): the id of the task's own
//!   cgroup, `bpf_get_current_cgroup_id()`: the inode number of that cgroup's directory under
//!   the cgroup2 mount, the cgroup /proc/PID/cgroup's `0::` line names.
//! - **cgroup v1** (the memory controller on a v1 hierarchy, as on hybrid systems): the memory
//!   controller's cgroup of the task, `task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id`
//!   (offsets and `memory_cgrp_id` from the kernel's BTF): the inode number of that cgroup's
//!   directory in the memory hierarchy, the cgroup /proc/PID/cgroup's `N:memory:` line names.
//!
//! On 64-bit kernels a kernfs node's id is its inode number (`kernfs_ino`), so either id is what
//! `stat -c %i` prints for the cgroup's directory. 0 means unknown.

named_enum! {
    /// Where the programs read a task's memory-cgroup id on this machine.
    pub enum CgroupIds {
        /// Not read: no memory controller, or the path to it is not known here.
        Unknown = 0 => "unknown",
        /// cgroup v2: the task's cgroup in the unified hierarchy.
        Unified = 1 => "v2",
        /// cgroup v1: the task's cgroup in the hierarchy that holds the memory controller.
        MemoryV1 = 2 => "v1",
    }
}
