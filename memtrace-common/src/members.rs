//! Kernel struct members the programs read through a task pointer. No tracepoint carries
//! them; userspace finds their offsets in the running kernel's BTF and passes them in the
//! `MEMBER_OFFSETS` global (0 = unknown, and the program then reports nothing it would need
//! them for).

named_enum! {
    /// A struct member; indexes `MEMBER_OFFSETS`.
    pub enum Member {
        /// A thread's minor fault counter (what /proc/PID/task/TID/stat shows).
        TaskMinFlt = 0 => "task_struct.min_flt",
        TaskMajFlt = 1 => "task_struct.maj_flt",
        /// The path from a task to its memory cgroup's kernfs id:
        /// `task->cgroups->subsys[memory]->cgroup->kn->id`.
        TaskCgroups = 2 => "task_struct.cgroups",
        CssSetSubsys = 3 => "css_set.subsys",
        CssCgroup = 4 => "cgroup_subsys_state.cgroup",
        CgroupKn = 5 => "cgroup.kn",
        KernfsNodeId = 6 => "kernfs_node.id",
        /// `PF_*` flags: `PF_MEMALLOC` marks a task that is reclaiming memory.
        TaskFlags = 7 => "task_struct.flags",
        /// A thread's process leader, whose start time is the process's.
        TaskGroupLeader = 8 => "task_struct.group_leader",
        /// When a task started, in ns of CLOCK_BOOTTIME (/proc/PID/stat's starttime in clock
        /// ticks), since 5.5.
        TaskStartBoottime = 9 => "task_struct.start_boottime",
        /// The task's kernel stack, at whose top its saved user registers sit (`pt_regs`).
        TaskStack = 10 => "task_struct.stack",
        /// The process's shared state, and in it the count of its threads that have not yet
        /// begun to exit: 0 once the last one has (`do_exit` decrements it before the exit
        /// tracepoint).
        TaskSignal = 11 => "task_struct.signal",
        SignalLive = 12 => "signal_struct.live",
    }
}

/// `task_struct.flags` bit of a task in direct or memcg reclaim, or of kswapd
/// (`include/linux/sched.h`, the same since 2.6).
pub const PF_MEMALLOC: u32 = 0x0000_0800;
/// `task_struct.flags` bit of a kernel thread: no user process can set it.
pub const PF_KTHREAD: u32 = 0x0020_0000;

impl Member {
    /// `(struct, member)` as BTF names them: the name split at its dot.
    pub fn path(self) -> (&'static str, &'static str) {
        self.name().split_once('.').unwrap_or((self.name(), ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_struct_dot_member() {
        for member in Member::ALL {
            let (ty, field) = member.path();
            assert!(!ty.is_empty() && !field.is_empty(), "{member:?}");
        }
        assert_eq!(Member::CssCgroup.path(), ("cgroup_subsys_state", "cgroup"));
    }
}
