//! Loading and attaching the kernel programs, and the handles userspace keeps on them.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{TracePoint, trace_point::TracePointLink},
};
use memtrace_common::{
    FaultCounts, RssState,
    event::RSS_MEMBERS,
    maps::{self, LOST_COUNTERS, Lost},
    reclaim::{
        KswapdWakeups, ReclaimKind, SCAN_BACKGROUND, SCAN_IN_STALL, ScanCounts, StallHist, StallKey,
    },
};

use crate::{
    attribution::Rss,
    btf::Btf,
    events::comm_string,
    gfp::GfpNames,
    procfs,
    reclaim::{StallStats, Wakeups},
    tracefs,
};

/// The kernel programs' object file, built by build.rs.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// A kernel hook: which program runs on which tracepoint, what it gives the user, whether
/// memtrace can do without it.
///
/// Only tracepoints: fentry/fexit (BPF trampolines) and kprobes are refused on the machines
/// memtrace is developed on, and tracepoints are the stable interface anyway.
struct Hook {
    program: &'static str,
    category: &'static str,
    name: &'static str,
    feature: &'static str,
    required: bool,
}

const fn tracepoint(
    program: &'static str,
    category: &'static str,
    name: &'static str,
    feature: &'static str,
) -> Hook {
    Hook {
        program,
        category,
        name,
        feature,
        required: false,
    }
}

const fn required(hook: Hook) -> Hook {
    Hook {
        required: true,
        ..hook
    }
}

const HOOKS: &[Hook] = &[
    required(tracepoint(
        "madvise_enter",
        "syscalls",
        "sys_enter_madvise",
        "madvise",
    )),
    required(tracepoint(
        "madvise_exit",
        "syscalls",
        "sys_exit_madvise",
        "madvise",
    )),
    // process_madvise appeared in Linux 5.10.
    tracepoint(
        "process_madvise_enter",
        "syscalls",
        "sys_enter_process_madvise",
        "process_madvise",
    ),
    tracepoint(
        "process_madvise_exit",
        "syscalls",
        "sys_exit_process_madvise",
        "process_madvise",
    ),
    tracepoint("mmap_enter", "syscalls", "sys_enter_mmap", "mmap"),
    tracepoint("mmap_exit", "syscalls", "sys_exit_mmap", "mmap"),
    tracepoint("munmap_enter", "syscalls", "sys_enter_munmap", "munmap"),
    tracepoint("munmap_exit", "syscalls", "sys_exit_munmap", "munmap"),
    tracepoint("mremap_enter", "syscalls", "sys_enter_mremap", "mremap"),
    tracepoint("mremap_exit", "syscalls", "sys_exit_mremap", "mremap"),
    tracepoint("brk_enter", "syscalls", "sys_enter_brk", "brk"),
    tracepoint("brk_exit", "syscalls", "sys_exit_brk", "brk"),
    tracepoint(
        "page_fault_user",
        "exceptions",
        "page_fault_user",
        "user-mode page fault counts",
    ),
    tracepoint(
        "sched_process_exit",
        "sched",
        "sched_process_exit",
        "faults of exiting threads",
    ),
    tracepoint("rss_stat", "kmem", "rss_stat", "RSS from kernel counters"),
];

/// Reclaim stalls, pages scanned, OOM kills: traced in every mode.
const RECLAIM_HOOKS: &[Hook] = &[
    tracepoint(
        "direct_reclaim_begin",
        "vmscan",
        "mm_vmscan_direct_reclaim_begin",
        "direct reclaim stalls",
    ),
    tracepoint(
        "direct_reclaim_end",
        "vmscan",
        "mm_vmscan_direct_reclaim_end",
        "direct reclaim stalls",
    ),
    tracepoint(
        "memcg_reclaim_begin",
        "vmscan",
        "mm_vmscan_memcg_reclaim_begin",
        "memory cgroup reclaim stalls",
    ),
    tracepoint(
        "memcg_reclaim_end",
        "vmscan",
        "mm_vmscan_memcg_reclaim_end",
        "memory cgroup reclaim stalls",
    ),
    tracepoint("oom_mark_victim", "oom", "mark_victim", "OOM kills"),
    tracepoint("oom_wake_reaper", "oom", "wake_reaper", "the OOM reaper"),
    tracepoint(
        "oom_start_reaping",
        "oom",
        "start_task_reaping",
        "the OOM reaper",
    ),
    tracepoint(
        "oom_finish_reaping",
        "oom",
        "finish_task_reaping",
        "the OOM reaper",
    ),
    tracepoint(
        "oom_skip_reaping",
        "oom",
        "skip_task_reaping",
        "the OOM reaper",
    ),
    // Fires only while reclaiming: pages scanned inside each stall, and in the background.
    tracepoint(
        "lru_shrink_inactive",
        "vmscan",
        "mm_vmscan_lru_shrink_inactive",
        "pages scanned and reclaimed",
    ),
];

/// Background reclaim: only for `memtrace reclaim`.
const KSWAPD_HOOKS: &[Hook] = &[
    tracepoint(
        "kswapd_wake",
        "vmscan",
        "mm_vmscan_kswapd_wake",
        "kswapd active periods",
    ),
    tracepoint(
        "kswapd_sleep",
        "vmscan",
        "mm_vmscan_kswapd_sleep",
        "kswapd active periods",
    ),
    tracepoint(
        "wakeup_kswapd",
        "vmscan",
        "mm_vmscan_wakeup_kswapd",
        "who wakes kswapd",
    ),
];

const FOLLOW: Hook = tracepoint(
    "sched_process_fork",
    "sched",
    "sched_process_fork",
    "--follow",
);

/// Which programs to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// The default: memory syscalls, faults, RSS, plus reclaim stalls and OOM kills.
    Memory,
    /// `memtrace reclaim`: reclaim stalls, OOM kills, kswapd and LRU scanning only.
    Reclaim,
}

pub struct Options {
    pub focus: Focus,
    /// `None` traces every process; otherwise only these.
    pub pids: Option<Vec<u32>>,
    pub ring_bytes: u32,
    /// Stream each user-mode fault.
    pub fault_events: bool,
    /// Trace children forked by traced processes.
    pub follow: bool,
}

/// Attached programs and the maps userspace reads. Dropping it detaches everything.
pub struct Tracer {
    /// The attached hooks; detached together on drop.
    links: Vec<TracePointLink>,
    _ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    targets: HashMap<MapData, u32, u8>,
    faults: PerCpuHashMap<MapData, u32, FaultCounts>,
    rss: HashMap<MapData, u32, RssState>,
    stalls: PerCpuHashMap<MapData, StallKey, StallHist>,
    stalls_all: PerCpuArray<MapData, StallHist>,
    kswapd_wakeups: PerCpuHashMap<MapData, u32, KswapdWakeups>,
    lru_scan: PerCpuArray<MapData, ScanCounts>,
    /// Names of this kernel's GFP flags.
    pub gfp: GfpNames,
    /// Warnings about parts that could not be attached.
    pub warnings: Vec<String>,
    /// Whether user-mode faults are counted (page_fault_user attached).
    pub counts_faults: bool,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        detach_all(std::mem::take(&mut self.links));
    }
}

impl Tracer {
    /// Checks privileges and tracefs, loads and attaches the programs, then starts tracing
    /// `options.pids`.
    pub fn attach(options: &Options) -> anyhow::Result<Self> {
        let mut warnings = Vec::new();
        if !procfs::can_trace() {
            bail!(
                "memtrace needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
            );
        }
        let Some(events_dir) = procfs::tracefs_events() else {
            bail!(
                "tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` (as root) and retry"
            );
        };
        raise_memlock_limit();
        let offsets = Offsets::read(&events_dir);
        // Parsed once (a few MiB): both lookups below need it.
        let btf = Btf::from_sys_fs().map_err(|e| format!("cannot read kernel BTF: {e}"));
        let task_offsets = task_fault_offsets(&btf).unwrap_or_else(|e| {
            warnings.push(format!(
                "{e}; faults of threads that exit while traced are not counted"
            ));
            (0, 0)
        });
        let memcg_path = memcg_path_offsets(&btf).unwrap_or_else(|e| {
            warnings.push(format!(
                "{e}; an OOM victim's memory cgroup is known only while /proc shows it"
            ));
            MemcgPath::UNKNOWN
        });
        // Freed before aya loads its own copy of the BTF: both at once raised peak RSS by 6 MiB.
        drop(btf);
        let stream_faults = u8::from(options.fault_events);

        let filter = u8::from(options.pids.is_some());
        let follow = u8::from(options.follow);
        let self_tgid = std::process::id();
        // Userspace is woken once a quarter of the ring is full; a timer drains the rest.
        let wakeup_bytes = u64::from(options.ring_bytes / 4);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(maps::FILTER_BY_TGID, &filter, true)
            .override_global(maps::SELF_TGID, &self_tgid, true)
            .override_global(maps::WAKEUP_BYTES, &wakeup_bytes, true)
            .override_global(maps::FOLLOW_FORKS, &follow, true)
            .override_global(maps::STREAM_FAULTS, &stream_faults, true)
            .override_global(maps::TASK_MIN_FLT_OFFSET, &task_offsets.0, true)
            .override_global(maps::TASK_MAJ_FLT_OFFSET, &task_offsets.1, true)
            .override_global(maps::TASK_CGROUPS_OFFSET, &memcg_path.task_cgroups, true)
            .override_global(
                maps::CSS_SET_SUBSYS_OFFSET,
                &memcg_path.css_set_subsys,
                true,
            )
            .override_global(maps::CSS_CGROUP_OFFSET, &memcg_path.css_cgroup, true)
            .override_global(maps::CGROUP_KN_OFFSET, &memcg_path.cgroup_kn, true)
            .override_global(maps::KERNFS_NODE_ID_OFFSET, &memcg_path.kernfs_id, true)
            .override_global(maps::MEMCG_SUBSYS_INDEX, &memcg_path.subsys_index, true)
            .map_max_entries(maps::EVENTS, options.ring_bytes);
        for (global, value) in &offsets.values {
            loader.override_global(global, value, true);
        }
        let mut ebpf = loader
            .load(PROGRAMS)
            .map_err(|e| anyhow!("loading the eBPF programs failed: {}", error_chain(&e)))?;

        let mut hooks: Vec<&Hook> = RECLAIM_HOOKS.iter().collect();
        match options.focus {
            Focus::Memory => hooks.extend(HOOKS),
            Focus::Reclaim => hooks.extend(KSWAPD_HOOKS),
        }
        hooks.extend(options.follow.then_some(&FOLLOW));
        let mut counts_faults = false;
        let mut links = Vec::new();
        for hook in hooks {
            let result = offsets
                .missing_for(hook)
                .map_or_else(|| attach_one(&mut ebpf, hook, &events_dir), Err);
            match result {
                Ok(link) => {
                    links.push(link);
                    counts_faults |= hook.program == "page_fault_user";
                }
                Err(e) if hook.required => return Err(e),
                Err(e) => warnings.push(format!("{e}; {} not traced", hook.feature)),
            }
        }

        let events = RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)?;
        let lost = PerCpuArray::try_from(take_map(&mut ebpf, maps::LOST)?)?;
        let targets = HashMap::try_from(take_map(&mut ebpf, maps::TARGETS)?)?;
        let faults = PerCpuHashMap::try_from(take_map(&mut ebpf, maps::FAULTS)?)?;
        let rss = HashMap::try_from(take_map(&mut ebpf, maps::RSS)?)?;
        let stalls = PerCpuHashMap::try_from(take_map(&mut ebpf, maps::STALLS)?)?;
        let stalls_all = PerCpuArray::try_from(take_map(&mut ebpf, maps::STALLS_ALL)?)?;
        let kswapd_wakeups = PerCpuHashMap::try_from(take_map(&mut ebpf, maps::KSWAPD_WAKEUPS)?)?;
        let lru_scan = PerCpuArray::try_from(take_map(&mut ebpf, maps::LRU_SCAN)?)?;
        let mut tracer = Self {
            links,
            _ebpf: ebpf,
            events: Some(events),
            lost,
            targets,
            faults,
            rss,
            stalls,
            stalls_all,
            kswapd_wakeups,
            lru_scan,
            gfp: GfpNames::from_format_file(&events_dir),
            warnings,
            counts_faults,
        };
        // Only now that everything is attached does the filter let the targets through: no
        // other process can slip in between attaching and choosing whom to trace.
        for &pid in options.pids.iter().flatten() {
            tracer.add_target(pid)?;
        }
        Ok(tracer)
    }

    /// The events ring buffer, handed over once to the event pump.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    pub fn add_target(&mut self, pid: u32) -> anyhow::Result<()> {
        self.targets
            .insert(pid, 1, 0)
            .with_context(|| format!("cannot add pid {pid} to the kernel filter"))
    }

    /// Pids in the kernel filter (targets and, with --follow, their children and threads).
    pub fn targets(&self) -> Vec<u32> {
        self.targets.keys().filter_map(Result::ok).collect()
    }

    pub fn remove_target(&mut self, pid: u32) {
        let _ = self.targets.remove(&pid);
    }

    /// Frees a process's slot in the kernel's fault table once it is forgotten.
    pub fn forget_faults(&mut self, pid: u32) {
        let _ = self.faults.remove(&pid);
    }

    /// Fault counts per process, summed over CPUs.
    pub fn faults(&self) -> BTreeMap<u32, FaultCounts> {
        self.faults
            .iter()
            .filter_map(Result::ok)
            .map(|(pid, per_cpu)| {
                let total = per_cpu
                    .iter()
                    .fold(FaultCounts::default(), |sum, c| FaultCounts {
                        user: sum.user + c.user,
                        write: sum.write + c.write,
                    });
                (pid, total)
            })
            .collect()
    }

    /// RSS per process from the kernel's counters (all of a process's mms summed).
    pub fn rss(&self) -> BTreeMap<u32, Rss> {
        let mut by_pid: BTreeMap<u32, Rss> = BTreeMap::new();
        for (_, state) in self.rss.iter().filter_map(Result::ok) {
            let rss = by_pid.entry(state.tgid).or_default();
            for member in 0..RSS_MEMBERS {
                if let Ok(size) = u64::try_from(state.size[member]) {
                    *rss.size[member].get_or_insert(0) += size;
                }
                rss.external_drop[member] += state.external_drop[member];
            }
        }
        by_pid
    }

    /// Reclaim stalls per process and kind, from the kernel's histograms.
    pub fn stalls(&self) -> BTreeMap<(u32, ReclaimKind), StallStats> {
        self.stalls
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(key, per_cpu)| {
                let kind = ReclaimKind::from_u32(key.reclaim_kind)?;
                Some(((key.tgid, kind), StallStats::from_per_cpu(per_cpu.iter())))
            })
            .collect()
    }

    /// Every stall of traced processes, per kind.
    pub fn stalls_all(&self) -> BTreeMap<ReclaimKind, StallStats> {
        [ReclaimKind::Direct, ReclaimKind::Memcg]
            .into_iter()
            .filter_map(|kind| {
                let per_cpu = self.stalls_all.get(&(kind as u32), 0).ok()?;
                Some((kind, StallStats::from_per_cpu(per_cpu.iter())))
            })
            .collect()
    }

    /// Who asked kswapd to wake, per process.
    pub fn kswapd_wakeups(&self) -> BTreeMap<u32, Wakeups> {
        self.kswapd_wakeups
            .iter()
            .filter_map(Result::ok)
            .map(|(pid, per_cpu)| {
                let count = per_cpu.iter().map(|w| w.count).sum();
                let comm = per_cpu
                    .iter()
                    .find(|w| w.count > 0)
                    .map(|w| comm_string(&w.comm))
                    .unwrap_or_default();
                (pid, Wakeups { count, comm })
            })
            .collect()
    }

    /// Inactive-LRU pages scanned and reclaimed `(inside traced stalls, background)`.
    pub fn lru_scan(&self) -> (ScanCounts, ScanCounts) {
        let sum = |slot: u32| {
            self.lru_scan
                .get(&slot, 0)
                .map(|per_cpu| {
                    per_cpu
                        .iter()
                        .fold(ScanCounts::default(), |a, c| ScanCounts {
                            nr_scanned: a.nr_scanned + c.nr_scanned,
                            nr_reclaimed: a.nr_reclaimed + c.nr_reclaimed,
                        })
                })
                .unwrap_or_default()
        };
        (sum(SCAN_IN_STALL), sum(SCAN_BACKGROUND))
    }

    /// Records dropped in the kernel so far, per reason, per CPU.
    pub fn lost(&self) -> LostCounts {
        let per_cpu = |why: Lost| -> Vec<u64> {
            self.lost
                .get(&(why as u32), 0)
                .map(|values| values.iter().copied().collect())
                .unwrap_or_default()
        };
        debug_assert_eq!(LOST_COUNTERS, 5);
        LostCounts {
            ring_full: per_cpu(Lost::RingFull),
            pending_full: per_cpu(Lost::PendingFull),
            fault_table_full: per_cpu(Lost::FaultTableFull),
            targets_full: per_cpu(Lost::TargetsFull),
            reclaim_pending_full: per_cpu(Lost::ReclaimPendingFull),
        }
    }
}

/// Dropped-record counters, one entry per possible CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LostCounts {
    /// Events dropped because the ring buffer was full.
    pub ring_full: Vec<u64>,
    /// Syscalls missed because the entry/exit pairing table was full.
    pub pending_full: Vec<u64>,
    /// Faults of processes that found the fault table full.
    pub fault_table_full: Vec<u64>,
    /// Children that could not be followed because the target table was full.
    pub targets_full: Vec<u64>,
    /// Reclaim stalls missed because the begin/end pairing table was full.
    pub reclaim_pending_full: Vec<u64>,
}

impl LostCounts {
    pub fn total(&self) -> u64 {
        [
            &self.ring_full,
            &self.pending_full,
            &self.fault_table_full,
            &self.targets_full,
            &self.reclaim_pending_full,
        ]
        .into_iter()
        .flatten()
        .sum()
    }
}

/// Field offsets of version-dependent tracepoint records, read from tracefs.
struct Offsets {
    values: Vec<(&'static str, u32)>,
    missing: Vec<(&'static str, String)>,
}

/// A tracepoint field a program reads: `(global, category, tracepoint, field, required)`. A
/// missing required field disables the hook; a missing optional one is passed as offset 0 and
/// the program reports the value as unknown.
type Field = (&'static str, &'static str, &'static str, &'static str, bool);

impl Offsets {
    const FIELDS: &[Field] = &[
        (
            maps::FORK_CHILD_PID_OFFSET,
            "sched",
            "sched_process_fork",
            "child_pid",
            true,
        ),
        (
            maps::EXIT_GROUP_DEAD_OFFSET,
            "sched",
            "sched_process_exit",
            "group_dead",
            true,
        ),
        (maps::RSS_MM_ID_OFFSET, "kmem", "rss_stat", "mm_id", true),
        (maps::RSS_CURR_OFFSET, "kmem", "rss_stat", "curr", true),
        (maps::RSS_MEMBER_OFFSET, "kmem", "rss_stat", "member", true),
        (maps::RSS_SIZE_OFFSET, "kmem", "rss_stat", "size", true),
        (
            maps::DIRECT_BEGIN_ORDER_OFFSET,
            "vmscan",
            "mm_vmscan_direct_reclaim_begin",
            "order",
            false,
        ),
        (
            maps::DIRECT_BEGIN_GFP_OFFSET,
            "vmscan",
            "mm_vmscan_direct_reclaim_begin",
            "gfp_flags",
            false,
        ),
        (
            maps::DIRECT_END_RECLAIMED_OFFSET,
            "vmscan",
            "mm_vmscan_direct_reclaim_end",
            "nr_reclaimed",
            false,
        ),
        (
            maps::MEMCG_BEGIN_ORDER_OFFSET,
            "vmscan",
            "mm_vmscan_memcg_reclaim_begin",
            "order",
            false,
        ),
        (
            maps::MEMCG_BEGIN_GFP_OFFSET,
            "vmscan",
            "mm_vmscan_memcg_reclaim_begin",
            "gfp_flags",
            false,
        ),
        (
            maps::MEMCG_END_RECLAIMED_OFFSET,
            "vmscan",
            "mm_vmscan_memcg_reclaim_end",
            "nr_reclaimed",
            false,
        ),
        (
            maps::KSWAPD_WAKE_NID_OFFSET,
            "vmscan",
            "mm_vmscan_kswapd_wake",
            "nid",
            false,
        ),
        (
            maps::KSWAPD_WAKE_ORDER_OFFSET,
            "vmscan",
            "mm_vmscan_kswapd_wake",
            "order",
            false,
        ),
        (
            maps::KSWAPD_SLEEP_NID_OFFSET,
            "vmscan",
            "mm_vmscan_kswapd_sleep",
            "nid",
            false,
        ),
        (
            maps::SHRINK_SCANNED_OFFSET,
            "vmscan",
            "mm_vmscan_lru_shrink_inactive",
            "nr_scanned",
            true,
        ),
        (
            maps::SHRINK_RECLAIMED_OFFSET,
            "vmscan",
            "mm_vmscan_lru_shrink_inactive",
            "nr_reclaimed",
            true,
        ),
        (maps::OOM_PID_OFFSET, "oom", "mark_victim", "pid", true),
        (maps::OOM_COMM_OFFSET, "oom", "mark_victim", "comm", false),
        (
            maps::OOM_TOTAL_VM_OFFSET,
            "oom",
            "mark_victim",
            "total_vm",
            false,
        ),
        (
            maps::OOM_ANON_RSS_OFFSET,
            "oom",
            "mark_victim",
            "anon_rss",
            false,
        ),
        (
            maps::OOM_FILE_RSS_OFFSET,
            "oom",
            "mark_victim",
            "file_rss",
            false,
        ),
        (
            maps::OOM_SHMEM_RSS_OFFSET,
            "oom",
            "mark_victim",
            "shmem_rss",
            false,
        ),
        (maps::OOM_UID_OFFSET, "oom", "mark_victim", "uid", false),
        (
            maps::OOM_PGTABLES_OFFSET,
            "oom",
            "mark_victim",
            "pgtables",
            false,
        ),
        (
            maps::OOM_SCORE_ADJ_OFFSET,
            "oom",
            "mark_victim",
            "oom_score_adj",
            false,
        ),
        (
            maps::REAPER_WAKE_PID_OFFSET,
            "oom",
            "wake_reaper",
            "pid",
            true,
        ),
        (
            maps::REAPER_START_PID_OFFSET,
            "oom",
            "start_task_reaping",
            "pid",
            true,
        ),
        (
            maps::REAPER_FINISH_PID_OFFSET,
            "oom",
            "finish_task_reaping",
            "pid",
            true,
        ),
        (
            maps::REAPER_SKIP_PID_OFFSET,
            "oom",
            "skip_task_reaping",
            "pid",
            true,
        ),
    ];

    fn read(events: &Path) -> Self {
        let mut offsets = Self {
            values: Vec::new(),
            missing: Vec::new(),
        };
        for &(global, category, name, field, required) in Self::FIELDS {
            match tracefs::field_offset(events, category, name, field) {
                Some(offset) => offsets.values.push((global, offset)),
                None if required => offsets.missing.push((
                    name,
                    format!("tracepoint {category}/{name} has no field {field}"),
                )),
                None => offsets.values.push((global, 0)),
            }
        }
        offsets
    }

    /// Why a hook cannot work on this kernel, if a field it reads is missing.
    fn missing_for(&self, hook: &Hook) -> Option<anyhow::Error> {
        self.missing
            .iter()
            .find(|(tp, _)| *tp == hook.name)
            .map(|(_, why)| anyhow!("{why}"))
    }
}

fn attach_one(ebpf: &mut Ebpf, hook: &Hook, events: &Path) -> anyhow::Result<TracePointLink> {
    let (category, name) = (hook.category, hook.name);
    if !events.join(category).join(name).is_dir() {
        bail!("tracepoint {category}/{name} does not exist on this kernel");
    }
    let program: &mut TracePoint = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| anyhow!("program {} missing from the eBPF object", hook.program))?
        .try_into()?;
    let failed = |e: &dyn std::error::Error| {
        anyhow!(
            "attaching to tracepoint {category}/{name}: {}",
            first_line(&error_chain(e))
        )
    };
    program.load().map_err(|e| failed(&e))?;
    let link = program.attach(category, name).map_err(|e| failed(&e))?;
    // Owned here so that detaching can be done in parallel (see Tracer's Drop).
    program.take_link(link).map_err(|e| failed(&e))
}

/// Detaches every link at once. Each tracepoint detach waits for an RCU grace period (~80 ms
/// here); one after the other, 25 hooks kept memtrace from exiting for two seconds after its
/// report. Grace periods waited for concurrently are shared.
fn detach_all(links: Vec<TracePointLink>) {
    std::thread::scope(|scope| {
        for link in links {
            // Closing an fd needs next to no stack.
            let detach = std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn_scoped(scope, move || drop(link));
            // Could not start a thread: the link (moved into the failed closure) is dropped
            // right here instead, one at a time.
            drop(detach);
        }
    });
}

/// Where the kernel programs find a task's memory cgroup id.
struct MemcgPath {
    task_cgroups: u32,
    css_set_subsys: u32,
    css_cgroup: u32,
    cgroup_kn: u32,
    kernfs_id: u32,
    subsys_index: u32,
}

impl MemcgPath {
    const UNKNOWN: Self = Self {
        task_cgroups: 0,
        css_set_subsys: 0,
        css_cgroup: 0,
        cgroup_kn: 0,
        kernfs_id: 0,
        subsys_index: u32::MAX,
    };
}

/// Member offsets from the kernel's BTF and the memory controller's index from /proc/cgroups.
fn memcg_path_offsets(btf: &Result<Btf, String>) -> anyhow::Result<MemcgPath> {
    let btf = btf.as_ref().map_err(|e| anyhow!("{e}"))?;
    let offset = |ty, member| {
        btf.member_offset(ty, member)
            .map_err(|e| anyhow!("kernel BTF: {ty}.{member}: {e}"))
    };
    let subsys_index = procfs::memory_controller_index()
        .ok_or_else(|| anyhow!("no memory controller in /proc/cgroups"))?;
    Ok(MemcgPath {
        task_cgroups: offset("task_struct", "cgroups")?,
        css_set_subsys: offset("css_set", "subsys")?,
        css_cgroup: offset("cgroup_subsys_state", "cgroup")?,
        cgroup_kn: offset("cgroup", "kn")?,
        kernfs_id: offset("kernfs_node", "id")?,
        subsys_index,
    })
}

/// Offsets of `min_flt` and `maj_flt` in `struct task_struct`, from the kernel's BTF.
fn task_fault_offsets(btf: &Result<Btf, String>) -> anyhow::Result<(u32, u32)> {
    let btf = btf.as_ref().map_err(|e| anyhow!("{e}"))?;
    let offset = |member| {
        btf.member_offset("task_struct", member)
            .map_err(|e| anyhow!("kernel BTF: task_struct.{member}: {e}"))
    };
    Ok((offset("min_flt")?, offset("maj_flt")?))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; raise it rather than fail there.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid struct. Failure only matters on old kernels, where
    // loading then reports the real error.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// A message up to its first line break, without the verifier's log (many lines): errors and
/// warnings stay one line. `MEMTRACE_VERIFIER_LOG=1` keeps the log, for debugging.
fn first_line(message: &str) -> &str {
    if std::env::var_os("MEMTRACE_VERIFIER_LOG").is_some() {
        return message;
    }
    let line = message.lines().next().unwrap_or_default();
    line.split(". Verifier output").next().unwrap_or(line)
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake tracefs `events` directory: `mark_victim` as on kernels before 6.2 (pid only),
    /// no `mm_vmscan_lru_shrink_inactive` at all.
    fn old_kernel_events() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("memtrace-offsets-{}", std::process::id()));
        let oom = dir.join("oom/mark_victim");
        std::fs::create_dir_all(&oom).unwrap();
        std::fs::write(
            oom.join("format"),
            "name: mark_victim\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
             \tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn optional_fields_read_as_absent_and_required_ones_disable_their_hook() {
        let dir = old_kernel_events();
        let offsets = Offsets::read(&dir);
        let value = |global| {
            offsets
                .values
                .iter()
                .find(|(g, _)| *g == global)
                .map(|&(_, v)| v)
        };
        assert_eq!(value(maps::OOM_PID_OFFSET), Some(8));
        // Absent optional fields are passed as 0: the program reports them unknown.
        assert_eq!(value(maps::OOM_COMM_OFFSET), Some(0));
        assert_eq!(value(maps::OOM_ANON_RSS_OFFSET), Some(0));
        assert_eq!(value(maps::MEMCG_END_RECLAIMED_OFFSET), Some(0));
        let hook = |program| RECLAIM_HOOKS.iter().find(|h| h.program == program).unwrap();
        assert!(offsets.missing_for(hook("oom_mark_victim")).is_none());
        let shrink = offsets.missing_for(hook("lru_shrink_inactive")).unwrap();
        assert!(
            shrink.to_string().contains("has no field nr_scanned"),
            "{shrink}"
        );
        // Stalls need no field to be timed.
        assert!(offsets.missing_for(hook("memcg_reclaim_end")).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
