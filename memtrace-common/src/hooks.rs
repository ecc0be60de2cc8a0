//! Every kernel program memtrace has, where it attaches, whether memtrace can do without it,
//! and which runs attach it. The loader attaches from this table; the benchmark's bpftrace
//! oracle and the documentation are derived from it; a unit test in `memtrace` checks that the
//! object file holds exactly these programs.

use crate::Kernel;

/// A tracepoint, as tracefs names it: `events/<group>/<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracepoint {
    pub group: &'static str,
    pub name: &'static str,
}

const fn tp(group: &'static str, name: &'static str) -> Tracepoint {
    Tracepoint { group, name }
}

/// Whether memtrace can run without something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// memtrace refuses to run without it.
    Required,
    /// Without it only the feature it serves is lost, with a warning saying so.
    Optional,
}

/// Which runs attach a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Every mode: the default report, `memtrace go` and `memtrace reclaim`.
    Always,
    /// The default report and `memtrace go`.
    Memory,
    /// Only `memtrace reclaim`.
    Reclaim,
    /// The default report and `memtrace go`, only with `--fault-events`: a program on every
    /// user-mode fault costs more than the fault counts the kernel keeps anyway (BENCHMARKS.md).
    FaultEvents,
    /// A memory syscall's entry: the default report and `memtrace go`, only where the exit
    /// program cannot do the whole job alone: when each call is sent as a record with its
    /// latency (`--json` with events, `memtrace go`), or when this kernel's saved registers
    /// cannot be read at exit (no BTF). Otherwise the exit program reads the arguments from
    /// the registers and counts the call: one program per call instead of two.
    SyscallEntry,
}

/// What a run is, as far as choosing hooks goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// `memtrace reclaim` (else the default report or `memtrace go`).
    pub reclaim: bool,
    pub follow: bool,
    /// `--fault-events`: every user-mode fault, counted by access and streamed.
    pub fault_events: bool,
    /// A record per memory syscall (`--json` with events, `memtrace go`); otherwise they are
    /// counted per process in the kernel.
    pub records: bool,
    /// Whether the syscall exit programs can read the call's arguments from the caller's saved
    /// registers on this kernel (set by the loader).
    pub args_at_exit: bool,
}

impl When {
    pub const fn applies(self, run: Run) -> bool {
        match self {
            Self::Always => true,
            Self::Memory => !run.reclaim,
            Self::Reclaim => run.reclaim,
            Self::FaultEvents => !run.reclaim && run.fault_events,
            Self::SyscallEntry => !run.reclaim && (run.records || !run.args_at_exit),
        }
    }
}

/// How a program hooks into the kernel and what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    pub tracepoint: Tracepoint,
    pub need: Need,
    pub when: When,
    /// What the user loses when it cannot attach (warnings say "… not traced").
    pub feature: &'static str,
    /// The first kernel with this tracepoint, when newer than memtrace's minimum (5.8).
    pub since: Option<Kernel>,
}

const fn hook(tracepoint: Tracepoint, when: When, feature: &'static str) -> Hook {
    Hook {
        tracepoint,
        need: Need::Optional,
        when,
        feature,
        since: None,
    }
}

const fn required(hook: Hook) -> Hook {
    Hook {
        need: Need::Required,
        ..hook
    }
}

const fn since(kernel: Kernel, hook: Hook) -> Hook {
    Hook {
        since: Some(kernel),
        ..hook
    }
}

named_enum! {
    /// The kernel programs. Each name is the program's `fn` in memtrace-ebpf.
    pub enum Program {
        MadviseEnter = 0 => "madvise_enter",
        MadviseExit = 1 => "madvise_exit",
        ProcessMadviseEnter = 2 => "process_madvise_enter",
        ProcessMadviseExit = 3 => "process_madvise_exit",
        MmapEnter = 4 => "mmap_enter",
        MmapExit = 5 => "mmap_exit",
        MunmapEnter = 6 => "munmap_enter",
        MunmapExit = 7 => "munmap_exit",
        MremapEnter = 8 => "mremap_enter",
        MremapExit = 9 => "mremap_exit",
        BrkEnter = 10 => "brk_enter",
        BrkExit = 11 => "brk_exit",
        PageFaultUser = 12 => "page_fault_user",
        SchedProcessExit = 13 => "sched_process_exit",
        RssStat = 14 => "rss_stat",
        SchedProcessFork = 15 => "sched_process_fork",
        SchedProcessExec = 16 => "sched_process_exec",
        DirectReclaimBegin = 17 => "direct_reclaim_begin",
        DirectReclaimEnd = 18 => "direct_reclaim_end",
        MemcgReclaimBegin = 19 => "memcg_reclaim_begin",
        MemcgReclaimEnd = 20 => "memcg_reclaim_end",
        LruShrinkInactive = 21 => "lru_shrink_inactive",
        OomMarkVictim = 22 => "oom_mark_victim",
        OomWakeReaper = 23 => "oom_wake_reaper",
        OomStartReaping = 24 => "oom_start_reaping",
        OomFinishReaping = 25 => "oom_finish_reaping",
        OomSkipReaping = 26 => "oom_skip_reaping",
        KswapdWake = 27 => "kswapd_wake",
        KswapdSleep = 28 => "kswapd_sleep",
        WakeupKswapd = 29 => "wakeup_kswapd",
    }
}

impl Program {
    /// Where the program attaches and what it is for.
    pub const fn hook(self) -> Hook {
        use When::{Always, Memory, Reclaim, SyscallEntry};
        const SYSCALLS: &str = "syscalls";
        const VMSCAN: &str = "vmscan";
        const OOM: &str = "oom";
        match self {
            Self::MadviseEnter => required(hook(
                tp(SYSCALLS, "sys_enter_madvise"),
                SyscallEntry,
                "madvise calls",
            )),
            Self::MadviseExit => required(hook(
                tp(SYSCALLS, "sys_exit_madvise"),
                Memory,
                "madvise calls",
            )),
            Self::ProcessMadviseEnter => since(
                Kernel(5, 10),
                hook(
                    tp(SYSCALLS, "sys_enter_process_madvise"),
                    SyscallEntry,
                    "process_madvise",
                ),
            ),
            Self::ProcessMadviseExit => since(
                Kernel(5, 10),
                hook(
                    tp(SYSCALLS, "sys_exit_process_madvise"),
                    Memory,
                    "process_madvise",
                ),
            ),
            Self::MmapEnter => hook(tp(SYSCALLS, "sys_enter_mmap"), SyscallEntry, "mmap calls"),
            Self::MmapExit => hook(tp(SYSCALLS, "sys_exit_mmap"), Memory, "mmap calls"),
            Self::MunmapEnter => hook(
                tp(SYSCALLS, "sys_enter_munmap"),
                SyscallEntry,
                "munmap calls",
            ),
            Self::MunmapExit => hook(tp(SYSCALLS, "sys_exit_munmap"), Memory, "munmap calls"),
            Self::MremapEnter => hook(
                tp(SYSCALLS, "sys_enter_mremap"),
                SyscallEntry,
                "mremap calls",
            ),
            Self::MremapExit => hook(tp(SYSCALLS, "sys_exit_mremap"), Memory, "mremap calls"),
            Self::BrkEnter => hook(tp(SYSCALLS, "sys_enter_brk"), SyscallEntry, "brk calls"),
            Self::BrkExit => hook(tp(SYSCALLS, "sys_exit_brk"), Memory, "brk calls"),
            Self::PageFaultUser => hook(
                tp("exceptions", "page_fault_user"),
                When::FaultEvents,
                "user-mode faults by access, one by one",
            ),
            Self::SchedProcessExit => hook(
                tp("sched", "sched_process_exit"),
                Memory,
                "faults of exiting threads",
            ),
            Self::RssStat => hook(tp("kmem", "rss_stat"), Memory, "RSS from kernel counters"),
            Self::SchedProcessFork => hook(
                tp("sched", "sched_process_fork"),
                Memory,
                "telling a new process from an exited one with its pid; --follow",
            ),
            Self::SchedProcessExec => hook(
                tp("sched", "sched_process_exec"),
                Memory,
                "the new name of a process that calls exec",
            ),
            Self::DirectReclaimBegin => hook(
                tp(VMSCAN, "mm_vmscan_direct_reclaim_begin"),
                Always,
                "direct reclaim stalls",
            ),
            Self::DirectReclaimEnd => hook(
                tp(VMSCAN, "mm_vmscan_direct_reclaim_end"),
                Always,
                "direct reclaim stalls",
            ),
            Self::MemcgReclaimBegin => hook(
                tp(VMSCAN, "mm_vmscan_memcg_reclaim_begin"),
                Always,
                "memory cgroup reclaim stalls",
            ),
            Self::MemcgReclaimEnd => hook(
                tp(VMSCAN, "mm_vmscan_memcg_reclaim_end"),
                Always,
                "memory cgroup reclaim stalls",
            ),
            // Fires only while reclaiming: pages scanned inside each stall, and in the
            // background.
            Self::LruShrinkInactive => hook(
                tp(VMSCAN, "mm_vmscan_lru_shrink_inactive"),
                Always,
                "pages scanned and reclaimed",
            ),
            Self::OomMarkVictim => hook(tp(OOM, "mark_victim"), Always, "OOM kills"),
            Self::OomWakeReaper => hook(tp(OOM, "wake_reaper"), Always, "the OOM reaper"),
            Self::OomStartReaping => hook(tp(OOM, "start_task_reaping"), Always, "the OOM reaper"),
            Self::OomFinishReaping => {
                hook(tp(OOM, "finish_task_reaping"), Always, "the OOM reaper")
            }
            Self::OomSkipReaping => hook(tp(OOM, "skip_task_reaping"), Always, "the OOM reaper"),
            Self::KswapdWake => hook(
                tp(VMSCAN, "mm_vmscan_kswapd_wake"),
                Reclaim,
                "kswapd active periods",
            ),
            Self::KswapdSleep => hook(
                tp(VMSCAN, "mm_vmscan_kswapd_sleep"),
                Reclaim,
                "kswapd active periods",
            ),
            Self::WakeupKswapd => hook(
                tp(VMSCAN, "mm_vmscan_wakeup_kswapd"),
                Reclaim,
                "who wakes kswapd",
            ),
        }
    }
}

/// Which end of a kernel function a trampoline program runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// fentry: on the way in, with the arguments.
    Entry,
    /// fexit: on the way out, with the arguments and the return value.
    Exit,
}

named_enum! {
    /// Programs on BPF trampolines (fentry/fexit) that take over a syscall's pair of
    /// tracepoint programs where the kernel allows it. A trampoline runs only for its own
    /// function, while any `syscalls/sys_*` tracepoint puts every syscall of every task on the
    /// slow path. The loader tries them first and keeps the tracepoints as the fallback
    /// (kernels without BTF trampolines, or where they are refused, as on some hosted VMs).
    /// Each name is the program's `fn` in memtrace-ebpf.
    pub enum Trampoline {
        MadviseEntry = 0 => "madvise_fentry",
        MadviseExit = 1 => "madvise_fexit",
        ProcessMadviseEntry = 2 => "process_madvise_fentry",
        ProcessMadviseExit = 3 => "process_madvise_fexit",
        MmapEntry = 4 => "mmap_fentry",
        MmapExit = 5 => "mmap_fexit",
        MunmapEntry = 6 => "munmap_fentry",
        MunmapExit = 7 => "munmap_fexit",
        MremapEntry = 8 => "mremap_fentry",
        MremapExit = 9 => "mremap_fexit",
        BrkEntry = 10 => "brk_fentry",
        BrkExit = 11 => "brk_fexit",
    }
}

impl Trampoline {
    /// The tracepoint program this one stands in for.
    pub const fn replaces(self) -> Program {
        match self {
            Self::MadviseEntry => Program::MadviseEnter,
            Self::MadviseExit => Program::MadviseExit,
            Self::ProcessMadviseEntry => Program::ProcessMadviseEnter,
            Self::ProcessMadviseExit => Program::ProcessMadviseExit,
            Self::MmapEntry => Program::MmapEnter,
            Self::MmapExit => Program::MmapExit,
            Self::MunmapEntry => Program::MunmapEnter,
            Self::MunmapExit => Program::MunmapExit,
            Self::MremapEntry => Program::MremapEnter,
            Self::MremapExit => Program::MremapExit,
            Self::BrkEntry => Program::BrkEnter,
            Self::BrkExit => Program::BrkExit,
        }
    }

    /// The kernel function it attaches to: the x86-64 syscall entry point, which takes the
    /// caller's registers (`struct pt_regs *`) on every kernel since 4.17.
    pub const fn function(self) -> &'static str {
        match self {
            Self::MadviseEntry | Self::MadviseExit => "__x64_sys_madvise",
            Self::ProcessMadviseEntry | Self::ProcessMadviseExit => "__x64_sys_process_madvise",
            Self::MmapEntry | Self::MmapExit => "__x64_sys_mmap",
            Self::MunmapEntry | Self::MunmapExit => "__x64_sys_munmap",
            Self::MremapEntry | Self::MremapExit => "__x64_sys_mremap",
            Self::BrkEntry | Self::BrkExit => "__x64_sys_brk",
        }
    }

    pub const fn end(self) -> End {
        match self {
            Self::MadviseEntry
            | Self::ProcessMadviseEntry
            | Self::MmapEntry
            | Self::MunmapEntry
            | Self::MremapEntry
            | Self::BrkEntry => End::Entry,
            _ => End::Exit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampolines_replace_syscall_pairs_once_each() {
        for (i, a) in Trampoline::ALL.iter().enumerate() {
            assert_eq!(a.replaces().hook().tracepoint.group, "syscalls", "{a:?}");
            let wants = if a.end() == End::Entry {
                "sys_enter_"
            } else {
                "sys_exit_"
            };
            let tracepoint = a.replaces().hook().tracepoint.name;
            assert!(tracepoint.starts_with(wants), "{a:?} replaces {tracepoint}");
            assert!(a.function().ends_with(&tracepoint[wants.len()..]), "{a:?}");
            for b in &Trampoline::ALL[i + 1..] {
                assert_ne!(a.replaces(), b.replaces(), "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn each_tracepoint_has_one_program() {
        for (i, a) in Program::ALL.iter().enumerate() {
            for b in &Program::ALL[i + 1..] {
                assert_ne!(a.hook().tracepoint, b.hook().tracepoint, "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn modes_choose_their_hooks() {
        let memory = Run {
            reclaim: false,
            follow: false,
            fault_events: false,
            records: false,
            args_at_exit: true,
        };
        let records = Run {
            records: true,
            ..memory
        };
        let no_registers = Run {
            args_at_exit: false,
            ..memory
        };
        let fault_events = Run {
            fault_events: true,
            ..memory
        };
        let reclaim = Run {
            reclaim: true,
            fault_events: true,
            records: true,
            ..memory
        };
        let attached = |run| {
            Program::ALL
                .iter()
                .filter(move |p| p.hook().when.applies(run))
                .count()
        };
        // Fork tells a new process from an exited one with its pid, with or without --follow.
        assert!(Program::SchedProcessFork.hook().when.applies(memory));
        assert!(!Program::KswapdWake.hook().when.applies(memory));
        assert!(!Program::PageFaultUser.hook().when.applies(reclaim));
        assert!(!Program::PageFaultUser.hook().when.applies(memory));
        assert!(Program::PageFaultUser.hook().when.applies(fault_events));
        // Syscall entries only where records are sent or the exit cannot read the registers.
        assert!(!Program::MadviseEnter.hook().when.applies(memory));
        assert!(Program::MadviseEnter.hook().when.applies(records));
        assert!(Program::MadviseEnter.hook().when.applies(no_registers));
        assert!(Program::MadviseExit.hook().when.applies(memory));
        assert_eq!(attached(memory), 20);
        assert_eq!(attached(records), 26);
        assert_eq!(attached(no_registers), 26);
        assert_eq!(attached(fault_events), 21);
        assert_eq!(attached(reclaim), 13);
    }
}
