//! The tracepoint fields the kernel programs read, and how their layout differs between
//! kernels. Userspace resolves each [`Layout::Resolved`] field from tracefs when it loads the
//! programs and passes the offsets in the `FIELD_OFFSETS` global; [`Layout::Fixed`] fields
//! are compiled into the programs as constants and checked against tracefs instead.

use crate::{
    Kernel,
    hooks::{Need, Tracepoint},
};

/// Where a field sits in its tracepoint's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The same offset on every kernel since the tracepoint appeared: the programs load it
    /// straight from the record (a direct load; a `bpf_probe_read` costs a helper call).
    Fixed(u16),
    /// Resolved on the running kernel. `offset` is where it sits on the tested kernels
    /// ([`Kernel::TESTED`]) except those in `except`, where it sits elsewhere or (`None`) does
    /// not exist.
    Resolved {
        offset: u16,
        except: &'static [(Kernel, Option<u16>)],
    },
}

impl Layout {
    /// The offset on a tested kernel, as recorded here.
    pub fn on(self, kernel: Kernel) -> Option<u16> {
        match self {
            Self::Fixed(offset) => Some(offset),
            Self::Resolved { offset, except } => except
                .iter()
                .find(|(k, _)| *k == kernel)
                .map_or(Some(offset), |&(_, at)| at),
        }
    }
}

/// One field of one tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    pub tracepoint: Tracepoint,
    pub name: &'static str,
    /// `Required`: the program cannot work without it, so its hook is not attached when the
    /// field is missing. `Optional`: the program reads it as unknown.
    pub need: Need,
    pub layout: Layout,
}

named_enum! {
    /// A tracepoint field a kernel program reads; indexes `FIELD_OFFSETS`.
    pub enum Field {
        FaultAddress = 0 => "page_fault_user.address",
        FaultIp = 1 => "page_fault_user.ip",
        FaultErrorCode = 2 => "page_fault_user.error_code",
        ForkChildPid = 3 => "sched_process_fork.child_pid",
        ExitGroupDead = 4 => "sched_process_exit.group_dead",
        RssMmId = 5 => "rss_stat.mm_id",
        RssCurr = 6 => "rss_stat.curr",
        RssMember = 7 => "rss_stat.member",
        RssSize = 8 => "rss_stat.size",
        DirectBeginOrder = 9 => "mm_vmscan_direct_reclaim_begin.order",
        DirectBeginGfp = 10 => "mm_vmscan_direct_reclaim_begin.gfp_flags",
        DirectEndReclaimed = 11 => "mm_vmscan_direct_reclaim_end.nr_reclaimed",
        MemcgBeginOrder = 12 => "mm_vmscan_memcg_reclaim_begin.order",
        MemcgBeginGfp = 13 => "mm_vmscan_memcg_reclaim_begin.gfp_flags",
        MemcgEndReclaimed = 14 => "mm_vmscan_memcg_reclaim_end.nr_reclaimed",
        KswapdWakeNid = 15 => "mm_vmscan_kswapd_wake.nid",
        KswapdWakeOrder = 16 => "mm_vmscan_kswapd_wake.order",
        KswapdSleepNid = 17 => "mm_vmscan_kswapd_sleep.nid",
        ShrinkScanned = 18 => "mm_vmscan_lru_shrink_inactive.nr_scanned",
        ShrinkReclaimed = 19 => "mm_vmscan_lru_shrink_inactive.nr_reclaimed",
        OomPid = 20 => "mark_victim.pid",
        OomComm = 21 => "mark_victim.comm",
        OomTotalVm = 22 => "mark_victim.total_vm",
        OomAnonRss = 23 => "mark_victim.anon_rss",
        OomFileRss = 24 => "mark_victim.file_rss",
        OomShmemRss = 25 => "mark_victim.shmem_rss",
        OomUid = 26 => "mark_victim.uid",
        OomPgtables = 27 => "mark_victim.pgtables",
        OomScoreAdj = 28 => "mark_victim.oom_score_adj",
        ReaperWakePid = 29 => "wake_reaper.pid",
        ReaperStartPid = 30 => "start_task_reaping.pid",
        ReaperFinishPid = 31 => "finish_task_reaping.pid",
        ReaperSkipPid = 32 => "skip_task_reaping.pid",
    }
}

impl Field {
    pub const fn spec(self) -> FieldSpec {
        use Need::{Optional, Required};
        const FAULT: Tracepoint = Tracepoint {
            group: "exceptions",
            name: "page_fault_user",
        };
        const RSS: Tracepoint = tp("kmem", "rss_stat");
        const DIRECT_BEGIN: Tracepoint = tp(VMSCAN, "mm_vmscan_direct_reclaim_begin");
        const DIRECT_END: Tracepoint = tp(VMSCAN, "mm_vmscan_direct_reclaim_end");
        const MEMCG_BEGIN: Tracepoint = tp(VMSCAN, "mm_vmscan_memcg_reclaim_begin");
        const MEMCG_END: Tracepoint = tp(VMSCAN, "mm_vmscan_memcg_reclaim_end");
        const KSWAPD_WAKE: Tracepoint = tp(VMSCAN, "mm_vmscan_kswapd_wake");
        const SHRINK: Tracepoint = tp(VMSCAN, "mm_vmscan_lru_shrink_inactive");
        const VICTIM: Tracepoint = tp(OOM, "mark_victim");
        match self {
            // exceptions/page_fault_user: address, ip, error_code since it appeared (3.16).
            Self::FaultAddress => fixed(FAULT, "address", 8),
            Self::FaultIp => fixed(FAULT, "ip", 16),
            Self::FaultErrorCode => fixed(FAULT, "error_code", 24),
            // `char parent_comm[16]` before 6.18, `__data_loc char[]` since: child_pid moved.
            Self::ForkChildPid => resolved(
                tp("sched", "sched_process_fork"),
                "child_pid",
                Required,
                20,
                &[
                    (Kernel(5, 10), Some(44)),
                    (Kernel(6, 1), Some(44)),
                    (Kernel(6, 12), Some(44)),
                ],
            ),
            // Added in 6.18 (the exiting thread was the last of its process); before, whether a
            // thread was its process's last is unknown (the counters are exact either way).
            Self::ExitGroupDead => resolved(
                tp("sched", "sched_process_exit"),
                "group_dead",
                Optional,
                32,
                &[
                    (Kernel(5, 10), None),
                    (Kernel(6, 1), None),
                    (Kernel(6, 12), None),
                ],
            ),
            // kmem/rss_stat: the same layout since it appeared (5.5); it fires on every RSS
            // counter change, so its fields are loaded straight from the record.
            Self::RssMmId => fixed(RSS, "mm_id", 8),
            Self::RssCurr => fixed(RSS, "curr", 12),
            Self::RssMember => fixed(RSS, "member", 16),
            Self::RssSize => fixed(RSS, "size", 24),
            Self::DirectBeginOrder => same(DIRECT_BEGIN, "order", Optional, 8),
            Self::DirectBeginGfp => resolved(DIRECT_BEGIN, "gfp_flags", Optional, 16, GFP_5_10),
            Self::DirectEndReclaimed => same(DIRECT_END, "nr_reclaimed", Optional, 8),
            Self::MemcgBeginOrder => same(MEMCG_BEGIN, "order", Optional, 8),
            Self::MemcgBeginGfp => resolved(MEMCG_BEGIN, "gfp_flags", Optional, 16, GFP_5_10),
            Self::MemcgEndReclaimed => same(MEMCG_END, "nr_reclaimed", Optional, 8),
            Self::KswapdWakeNid => same(KSWAPD_WAKE, "nid", Optional, 8),
            Self::KswapdWakeOrder => same(KSWAPD_WAKE, "order", Optional, 16),
            Self::KswapdSleepNid => same(tp(VMSCAN, "mm_vmscan_kswapd_sleep"), "nid", Optional, 8),
            Self::ShrinkScanned => same(SHRINK, "nr_scanned", Required, 16),
            Self::ShrinkReclaimed => same(SHRINK, "nr_reclaimed", Required, 24),
            Self::OomPid => same(VICTIM, "pid", Required, 8),
            // A `__data_loc char[]`: the low 16 bits of the field locate the string.
            Self::OomComm => same(VICTIM, "comm", Optional, 12),
            Self::OomTotalVm => same(VICTIM, "total_vm", Optional, 16),
            Self::OomAnonRss => same(VICTIM, "anon_rss", Optional, 24),
            Self::OomFileRss => same(VICTIM, "file_rss", Optional, 32),
            Self::OomShmemRss => same(VICTIM, "shmem_rss", Optional, 40),
            Self::OomUid => same(VICTIM, "uid", Optional, 48),
            Self::OomPgtables => same(VICTIM, "pgtables", Optional, 56),
            Self::OomScoreAdj => same(VICTIM, "oom_score_adj", Optional, 64),
            Self::ReaperWakePid => same(tp(OOM, "wake_reaper"), "pid", Required, 8),
            Self::ReaperStartPid => same(tp(OOM, "start_task_reaping"), "pid", Required, 8),
            Self::ReaperFinishPid => same(tp(OOM, "finish_task_reaping"), "pid", Required, 8),
            Self::ReaperSkipPid => same(tp(OOM, "skip_task_reaping"), "pid", Required, 8),
        }
    }

    /// The offset of a [`Layout::Fixed`] field, for the programs' constant loads (0 for a
    /// resolved field, which a program never loads this way).
    pub const fn fixed(self) -> usize {
        match self.spec().layout {
            Layout::Fixed(offset) => offset as usize,
            Layout::Resolved { .. } => 0,
        }
    }
}

const VMSCAN: &str = "vmscan";
const OOM: &str = "oom";

/// The reclaim-begin tracepoints' `gfp_flags`: a 4-byte `gfp_t` right after `order` on 5.10,
/// an 8-byte `unsigned long` at 16 since; the programs read its 4 low bytes everywhere.
const GFP_5_10: &[(Kernel, Option<u16>)] = &[(Kernel(5, 10), Some(12))];

const fn tp(group: &'static str, name: &'static str) -> Tracepoint {
    Tracepoint { group, name }
}

const fn fixed(tracepoint: Tracepoint, name: &'static str, offset: u16) -> FieldSpec {
    FieldSpec {
        tracepoint,
        name,
        need: Need::Required,
        layout: Layout::Fixed(offset),
    }
}

const fn resolved(
    tracepoint: Tracepoint,
    name: &'static str,
    need: Need,
    offset: u16,
    except: &'static [(Kernel, Option<u16>)],
) -> FieldSpec {
    FieldSpec {
        tracepoint,
        name,
        need,
        layout: Layout::Resolved { offset, except },
    }
}

/// A field resolved at load time that sits at the same offset on every tested kernel.
const fn same(tracepoint: Tracepoint, name: &'static str, need: Need, offset: u16) -> FieldSpec {
    resolved(tracepoint, name, need, offset, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_per_kernel() {
        let fork = Field::ForkChildPid.spec().layout;
        assert_eq!(fork.on(Kernel(6, 1)), Some(44));
        assert_eq!(fork.on(Kernel(6, 18)), Some(20));
        assert_eq!(Field::ExitGroupDead.spec().layout.on(Kernel(5, 10)), None);
        assert_eq!(Field::FaultErrorCode.fixed(), 24);
        assert_eq!(Field::RssSize.fixed(), 24);
        assert_eq!(
            Field::OomComm.fixed(),
            0,
            "a resolved field has no fixed offset"
        );
    }

    /// The stable name repeats the spec: they must agree.
    #[test]
    fn names_are_tracepoint_dot_field() {
        for field in Field::ALL {
            let spec = field.spec();
            let (tracepoint, name) = field.name().split_once('.').unwrap_or_default();
            assert_eq!((tracepoint, name), (spec.tracepoint.name, spec.name));
        }
    }
}
