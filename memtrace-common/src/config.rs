//! The globals userspace sets when it loads the kernel programs. They live in the object's
//! read-only data: the verifier sees their values as constants and prunes what they turn off.

use crate::{cgroup::CgroupIds, fields::Field, members::Member, pod, regs::ArgsAt};

/// Name of the [`Config`] global.
pub const CONFIG: &str = "CONFIG";
/// Name of the `[u32; Field::COUNT]` global: byte offset of each [`Field`] in its tracepoint's
/// record on the running kernel, 0 when the field does not exist there (offset 0 is always
/// `common_type`, never a field memtrace reads).
pub const FIELD_OFFSETS: &str = "FIELD_OFFSETS";
/// Name of the `[u32; Member::COUNT]` global: byte offset of each [`Member`] in its struct on
/// the running kernel (from BTF), 0 when unknown.
pub const MEMBER_OFFSETS: &str = "MEMBER_OFFSETS";

/// Every global the loader sets.
pub const GLOBALS: [&str; 3] = [CONFIG, FIELD_OFFSETS, MEMBER_OFFSETS];

/// The offset tables as the loader passes them.
pub type FieldOffsets = [u32; Field::COUNT];
pub type MemberOffsets = [u32; Member::COUNT];

/// How the kernel programs behave in this run.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct Config {
    /// memtrace's own tgid, never traced (its own mmaps and /proc reads would pollute a
    /// system-wide view).
    pub self_tgid: u32,
    /// The memory controller's index in `css_set.subsys` (its row in /proc/cgroups);
    /// `u32::MAX` when unknown.
    pub memcg_subsys_index: u32,
    /// Wake userspace once this many bytes wait in the ring buffer; below that, records are
    /// committed without a wakeup and userspace drains them on a timer.
    pub wakeup_bytes: u64,
    /// The system's page size: lengths are counted rounded up to whole pages.
    pub page_size: u32,
    /// Where `pt_regs` sits from `task_struct.stack` ([`ArgsAt::KernelStack`], and `--stacks`'
    /// user stack pointer); 0 when unknown.
    pub pt_regs_offset: u32,
    /// 1 = trace only the tgids in the `TARGETS` map; 0 = every process.
    pub filter_by_tgid: u8,
    /// 1 = add children forked by traced processes to `TARGETS` (`--follow`).
    pub follow_forks: u8,
    /// 1 = stream each user-mode fault as a record (`--fault-events`).
    pub stream_faults: u8,
    /// 1 = every program returns at once: the cost floor of the hooks themselves, which
    /// `cargo xtask bench` measures memtrace against (`--bench-empty-programs`).
    pub empty_programs: u8,
    /// 1 = count the memory syscalls per process in the kernel
    /// ([`crate::events::totals::SyscallTotals`]) instead of sending a record per call: for runs
    /// that print only totals.
    pub count_syscalls: u8,
    /// An [`ArgsAt`]: where the syscall exit programs find the call's arguments.
    pub args_at: u8,
    /// A [`CgroupIds`]: which memory-cgroup id the programs read.
    pub cgroup_ids: u8,
    /// 1 = count the caller stacks of memory syscalls and reclaim stalls (`--stacks`).
    pub stacks: u8,
}

impl Config {
    /// What the object carries before the loader sets it: trace nobody (an empty filter).
    pub const DEFAULT: Self = Self {
        self_tgid: 0,
        memcg_subsys_index: u32::MAX,
        wakeup_bytes: 64 << 10,
        page_size: 4096,
        pt_regs_offset: 0,
        filter_by_tgid: 1,
        follow_forks: 0,
        stream_faults: 0,
        empty_programs: 0,
        count_syscalls: 0,
        args_at: ArgsAt::Parked as u8,
        cgroup_ids: CgroupIds::Unknown as u8,
        stacks: 0,
    };
}

pod!(Config);
