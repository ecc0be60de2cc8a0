//! Loading and attaching the kernel programs, and reading the maps they fill.
//!
//! What to attach comes from `memtrace_common::hooks`: every program whose hook applies to
//! this run, in table order. A hook that cannot attach (its tracepoint or a required field is
//! missing here) costs only its feature, with a warning; a required hook stops memtrace.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf},
    programs::{ProgramError, TracePoint, trace_point::TracePointLink},
    sys::SyscallError,
    util::KernelVersion,
};
use memtrace_common::{
    config::{self, Config},
    events::{
        fault::FaultCounts,
        kswapd::KswapdWakeups,
        rss::RssState,
        stall::{ReclaimKind, ScanCounts, ScanSlot, StallHist, StallKey},
        totals::SyscallTotals,
    },
    hooks::{Need, Program, Run},
    lost::Lost,
    maps,
    regs::ArgsAt,
    stacks::{Frames, StackCounts, StackKey, StackRef},
};

use super::{
    btf::Btf,
    gfp::GfpNames,
    object::PROGRAMS,
    offsets::Offsets,
    pidns, system, tracefs,
    trampoline::{self, Link},
};

/// What to load and trace.
pub struct Options {
    pub run: Run,
    /// `None` traces every process; otherwise only these.
    pub pids: Option<Vec<u32>>,
    pub ring_bytes: u32,
    /// Stream each user-mode fault.
    pub fault_events: bool,
    /// Every program returns at once (the benchmark's floor).
    pub empty_programs: bool,
    /// Try the syscall programs on BPF trampolines before their tracepoints.
    pub trampolines: bool,
    /// Park each syscall's arguments at its entry even where the exit could read them from
    /// the saved registers (the benchmark's comparison of two programs per call with one).
    pub entry_programs: bool,
    /// Keep the kernel programs' diagnostics (`--verbose`).
    pub verbose: bool,
    /// Count caller stacks (`--stacks`).
    pub stacks: bool,
}

/// Attached programs and the maps userspace reads. Dropping it detaches everything.
pub struct Tracer {
    /// The attached hooks; detached together on drop.
    links: Vec<Link>,
    ebpf: Ebpf,
    attached: Vec<Program>,
    events: Option<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    /// The kernel filter's bitmap (see `maps::TARGETS`).
    targets: Array<MapData, u64>,
    faults: PerCpuHashMap<MapData, u32, FaultCounts>,
    rss: HashMap<MapData, u32, RssState>,
    stalls: PerCpuHashMap<MapData, StallKey, StallHist>,
    stalls_all: PerCpuArray<MapData, StallHist>,
    kswapd_wakeups: PerCpuHashMap<MapData, u32, KswapdWakeups>,
    lru_scan: PerCpuArray<MapData, ScanCounts>,
    /// Memory syscalls counted per process, when this run counts them in the kernel.
    totals: HashMap<MapData, u32, SyscallTotals>,
    /// Whether it does.
    counting: bool,
    /// The totals map's capacity.
    totals_capacity: u32,
    /// Where the syscall exit programs read the arguments in this run (`--verbose` says).
    pub args_at: ArgsAt,
    stack_counts: HashMap<MapData, StackKey, StackCounts>,
    stacks: HashMap<MapData, StackRef, Frames>,
    /// Names of this kernel's GFP flags.
    pub gfp: GfpNames,
    /// What could not be attached or resolved, and what the user loses.
    pub warnings: Vec<String>,
    /// Why the syscall programs are on tracepoints rather than trampolines, if they are.
    pub trampolines_refused: Option<trampoline::Refusal>,
    /// The tracepoint programs that trampolines stand in for.
    replaced: Vec<Program>,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        detach_all(std::mem::take(&mut self.links));
    }
}

impl Tracer {
    /// Detaches every program: nothing more is counted or sent, while the maps and the ring
    /// buffer stay readable. At the end of a run, so that what the ring holds is all there is.
    pub fn detach(&mut self) {
        detach_all(std::mem::take(&mut self.links));
    }

    /// Checks privileges and tracefs, loads and attaches the programs, then starts tracing
    /// `options.pids`.
    pub fn attach(options: &Options) -> anyhow::Result<Self> {
        check_privileges()?;
        let events_dir = tracefs::events_dir().map_err(|why| anyhow!("{why}"))?;
        raise_memlock_limit();
        let offsets = {
            // Parsed once and freed before aya loads its own copy: both at once raised peak
            // RSS (BENCHMARKS.md, "Reading these numbers").
            let btf = Btf::from_sys_fs();
            let task_pt_regs = KernelVersion::current()
                .is_ok_and(|version| version >= KernelVersion::new(5, 15, 0));
            Offsets::resolve(&events_dir, btf.as_ref(), task_pt_regs)
        };
        // Counted in the kernel unless each call is a record; then the entry programs park
        // the arguments, as they must where the exit cannot read them.
        let counting = !options.run.reclaim && !options.run.records;
        let readable = match options.entry_programs {
            true => ArgsAt::Parked,
            false => offsets.args_at,
        };
        let args_at = if counting { readable } else { ArgsAt::Parked };
        let run = Run {
            args_at_exit: readable != ArgsAt::Parked,
            ..options.run
        };
        let targets = options
            .pids
            .as_ref()
            .map(|pids| u32::try_from(pids.len()).unwrap_or(u32::MAX));
        let totals_capacity = maps::totals_capacity(counting, targets, options.run.follow);
        let mut ebpf = load(options, &offsets, (counting, totals_capacity), args_at)?;
        let mut warnings = offsets.warnings.clone();
        let mut on_trampolines = match options.trampolines {
            true => trampoline::attach(&mut ebpf, run),
            false => trampoline::OnTrampolines {
                refused: Some(trampoline::Refusal::NotTried),
                ..Default::default()
            },
        };
        let mut attached = on_trampolines.replaced.clone();
        let mut links = std::mem::take(&mut on_trampolines.links);
        for &program in Program::ALL {
            let hook = program.hook();
            if !hook.when.applies(run) || attached.contains(&program) {
                continue;
            }
            let result = match offsets.unusable(hook.tracepoint) {
                Some(why) => Err(anyhow!("{why}")),
                None => attach_one(&mut ebpf, program, &events_dir),
            };
            match result {
                Ok(link) => {
                    links.push(Link::Tracepoint(link));
                    attached.push(program);
                }
                Err(e) if hook.need == Need::Required => return Err(e),
                Err(e) => warnings.push(format!("{e}; {} not traced", hook.feature)),
            }
        }
        let mut tracer = Self {
            links,
            events: Some(RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)?),
            lost: PerCpuArray::try_from(take_map(&mut ebpf, maps::LOST)?)?,
            targets: Array::try_from(take_map(&mut ebpf, maps::TARGETS)?)?,
            faults: PerCpuHashMap::try_from(take_map(&mut ebpf, maps::FAULTS)?)?,
            rss: HashMap::try_from(take_map(&mut ebpf, maps::RSS)?)?,
            stalls: PerCpuHashMap::try_from(take_map(&mut ebpf, maps::STALLS)?)?,
            stalls_all: PerCpuArray::try_from(take_map(&mut ebpf, maps::STALLS_ALL)?)?,
            kswapd_wakeups: PerCpuHashMap::try_from(take_map(&mut ebpf, maps::KSWAPD_WAKEUPS)?)?,
            lru_scan: PerCpuArray::try_from(take_map(&mut ebpf, maps::LRU_SCAN)?)?,
            totals: HashMap::try_from(take_map(&mut ebpf, maps::TOTALS)?)?,
            counting,
            totals_capacity,
            args_at,
            stack_counts: HashMap::try_from(take_map(&mut ebpf, maps::STACK_COUNTS)?)?,
            stacks: HashMap::try_from(take_map(&mut ebpf, maps::STACKS)?)?,
            ebpf,
            attached,
            gfp: GfpNames::from_format_file(&events_dir),
            warnings,
            trampolines_refused: on_trampolines.refused,
            replaced: on_trampolines.replaced,
        };
        // Only now that everything is attached does the filter let the targets through: no
        // other process can slip in between attaching and choosing whom to trace.
        for &pid in options.pids.iter().flatten() {
            tracer.add_target(pid)?;
        }
        Ok(tracer)
    }

    /// How the syscall programs that this run attached are hooked: how many are on
    /// trampolines, and how many on tracepoints.
    pub fn syscall_hooks(&self) -> (usize, usize) {
        let syscall = |p: &&Program| p.hook().tracepoint.group == "syscalls";
        let on_trampolines = self
            .attached
            .iter()
            .filter(syscall)
            .filter(|p| self.replaced.contains(p))
            .count();
        let all = self.attached.iter().filter(syscall).count();
        (on_trampolines, all - on_trampolines)
    }

    /// Whether a program is attached (e.g. user-mode faults are counted).
    pub fn attached(&self, program: Program) -> bool {
        self.attached.contains(&program)
    }

    /// The events ring buffer, handed over once to the event session.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The kernel programs' diagnostics ring (only with `Options::verbose`).
    pub fn kernel_log(&mut self) -> anyhow::Result<super::log::KernelLog> {
        super::log::KernelLog::init(&mut self.ebpf)
    }

    /// Sets `pid`'s bit in the kernel filter. Done only at start: the kernel side changes
    /// bits with atomic adds, which a read-modify-write from here could undo, and the only
    /// writer there is a traced parent's fork, none of which is traced before this.
    fn add_target(&mut self, pid: u32) -> anyhow::Result<()> {
        let (word, bit) = (pid / 64, 1u64 << (pid % 64));
        let failed = || format!("cannot add pid {pid} to the kernel filter");
        let value = self.targets.get(&word, 0).with_context(failed)?;
        self.targets.set(word, value | bit, 0).with_context(failed)
    }

    /// Whether this run counts the memory syscalls in the kernel ([`Self::syscall_totals`])
    /// rather than receiving a record per call.
    pub fn counts_syscalls(&self) -> bool {
        self.counting
    }

    /// Every process's memory syscalls counted in the kernel so far (those that exited were
    /// sent in their final records and are gone from here).
    pub fn syscall_totals(&self) -> Vec<(u32, SyscallTotals)> {
        // A key deleted between two steps (its process's final copy sent meanwhile) makes the
        // kernel start over from the first key: keys already read are passed over, and the
        // walk is bounded, so a run where processes exit all the time still ends.
        let bound = 4 * self.totals_capacity as usize + 64;
        let mut seen = std::collections::BTreeSet::new();
        let mut totals = Vec::new();
        for key in self.totals.keys().take(bound) {
            let Ok(key) = key else {
                break;
            };
            if seen.insert(key)
                && let Ok(value) = self.totals.get(&key, 0)
            {
                totals.push((key, value));
            }
        }
        totals
    }

    /// Tells the kernel a process's program break, read from /proc, so that its first brk call
    /// is measured from there. Only before the process's first counted call: an entry the
    /// kernel made already knows more.
    pub fn seed_program_break(&mut self, pid: u32, brk: u64) {
        if !self.counting || brk == 0 {
            return;
        }
        let entry = SyscallTotals {
            last_brk: brk,
            ..SyscallTotals::default()
        };
        // `BPF_NOEXIST` (include/uapi/linux/bpf.h): fails, as it should, once the kernel has
        // made the entry.
        const BPF_NOEXIST: u64 = 1;
        let _ = self.totals.insert(pid, entry, BPF_NOEXIST);
    }

    /// Frees a process's slot in the kernel's fault table once it is forgotten.
    pub fn forget_faults(&mut self, pid: u32) {
        let _ = self.faults.remove(&pid);
    }

    /// Frees a process's stall histograms once it is forgotten (folded into its cgroup's
    /// totals): the next holder of the pid must not inherit them.
    pub fn forget_stalls(&mut self, pid: u32) {
        for &kind in ReclaimKind::ALL {
            let key = StallKey {
                tgid: pid,
                reclaim_kind: kind as u32,
            };
            let _ = self.stalls.remove(&key);
        }
    }

    /// User-mode fault counts per process, summed over CPUs.
    pub fn faults(&self) -> BTreeMap<u32, FaultCounts> {
        self.faults
            .iter()
            .filter_map(Result::ok)
            .map(|(pid, per_cpu)| (pid, sum(&per_cpu, add_faults)))
            .collect()
    }

    /// RSS of every address space followed, as the kernel programs keep it.
    pub fn rss(&self) -> Vec<RssState> {
        self.rss
            .iter()
            .filter_map(Result::ok)
            .map(|(_, state)| state)
            .collect()
    }

    /// Reclaim stall histograms per process and kind, summed over CPUs.
    pub fn stalls(&self) -> Vec<(StallKey, StallHist)> {
        self.stalls
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| (key, sum(&per_cpu, add_stalls)))
            .collect()
    }

    /// Every stall of traced processes, per kind, summed over CPUs.
    pub fn stalls_all(&self) -> Vec<(ReclaimKind, StallHist)> {
        ReclaimKind::ALL
            .iter()
            .filter_map(|&kind| {
                let per_cpu = self.stalls_all.get(&(kind as u32), 0).ok()?;
                Some((kind, sum(&per_cpu, add_stalls)))
            })
            .collect()
    }

    /// Who asked kswapd to wake, summed over CPUs (the name from any CPU that saw one).
    pub fn kswapd_wakeups(&self) -> Vec<(u32, KswapdWakeups)> {
        self.kswapd_wakeups
            .iter()
            .filter_map(Result::ok)
            .map(|(pid, per_cpu)| {
                let count = per_cpu.iter().map(|w| w.count).sum();
                let comm = per_cpu
                    .iter()
                    .find(|w| w.count > 0)
                    .map(|w| w.comm)
                    .unwrap_or_default();
                (pid, KswapdWakeups { count, comm })
            })
            .collect()
    }

    /// Inactive-LRU pages scanned and reclaimed, per [`ScanSlot`].
    pub fn lru_scan(&self) -> [ScanCounts; ScanSlot::COUNT] {
        let slot = |slot: ScanSlot| {
            self.lru_scan
                .get(&(slot as u32), 0)
                .map(|per_cpu| sum(&per_cpu, add_scans))
                .unwrap_or_default()
        };
        [slot(ScanSlot::InStall), slot(ScanSlot::Background)]
    }

    /// What `--stacks` counted so far, per process, call and stack.
    pub fn stack_counts(&self) -> Vec<(StackKey, StackCounts)> {
        self.stack_counts.iter().filter_map(Result::ok).collect()
    }

    /// A stored stack's frames, taken out of the kernel's table: once read they are not needed
    /// there (a stack stored again is announced again).
    pub fn take_frames(&mut self, stack: &StackRef) -> Option<Frames> {
        let frames = self.stacks.get(stack, 0).ok()?;
        let _ = self.stacks.remove(stack);
        Some(frames)
    }

    /// Deletes a stored stack's frames unread (its names are known already).
    pub fn drop_frames(&mut self, stack: &StackRef) {
        let _ = self.stacks.remove(stack);
    }

    /// Deletes the stack counts of exited processes, once read for the last time.
    pub fn forget_stack_counts(&mut self, keys: &[StackKey]) {
        for key in keys {
            let _ = self.stack_counts.remove(key);
        }
    }

    /// Records dropped in the kernel so far, per reason, per CPU.
    pub fn lost(&self) -> LostCounts {
        LostCounts {
            per_cpu: Lost::ALL
                .iter()
                .map(|&why| {
                    self.lost
                        .get(&(why as u32), 0)
                        .map(|values| values.iter().copied().collect())
                        .unwrap_or_default()
                })
                .collect(),
        }
    }
}

/// Whether this process may load and attach the programs, and sees the pids they report; one
/// clear line if not.
pub fn check_privileges() -> anyhow::Result<()> {
    if !system::can_trace() {
        bail!(
            "memtrace needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
        );
    }
    pidns::check_host_pid_namespace()
}

/// Dropped-record counters: for each [`Lost`] reason, one count per possible CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostCounts {
    /// Indexed by `Lost as usize`.
    per_cpu: Vec<Vec<u64>>,
}

impl Default for LostCounts {
    fn default() -> Self {
        Self {
            per_cpu: vec![Vec::new(); Lost::COUNT],
        }
    }
}

impl LostCounts {
    /// Counts for one reason, for tests and fixtures.
    #[cfg(test)]
    pub fn with(mut self, why: Lost, per_cpu: Vec<u64>) -> Self {
        self.per_cpu[why as usize] = per_cpu;
        self
    }

    /// One count per CPU for this reason.
    pub fn of(&self, why: Lost) -> &[u64] {
        self.per_cpu.get(why as usize).map_or(&[], Vec::as_slice)
    }

    /// Every reason with its counts per CPU.
    pub fn iter(&self) -> impl Iterator<Item = (Lost, &[u64])> {
        Lost::ALL.iter().map(|&why| (why, self.of(why)))
    }

    pub fn total(&self) -> u64 {
        self.per_cpu.iter().flatten().sum()
    }
}

/// Folds a per-CPU map value into one.
fn sum<T: Copy + Default + aya::Pod>(per_cpu: &PerCpuValues<T>, add: fn(&mut T, &T)) -> T {
    let mut total = T::default();
    for value in per_cpu.iter() {
        add(&mut total, value);
    }
    total
}

fn add_faults(total: &mut FaultCounts, c: &FaultCounts) {
    total.user += c.user;
    total.write += c.write;
}

fn add_scans(total: &mut ScanCounts, c: &ScanCounts) {
    total.nr_scanned += c.nr_scanned;
    total.nr_reclaimed += c.nr_reclaimed;
}

/// Sums stall histograms (max of maxima).
fn add_stalls(total: &mut StallHist, h: &StallHist) {
    total.count += h.count;
    total.total_ns += h.total_ns;
    total.max_ns = total.max_ns.max(h.max_ns);
    total.nr_reclaimed += h.nr_reclaimed;
    total.nr_scanned += h.nr_scanned;
    for (sum, n) in total.buckets.iter_mut().zip(h.buckets) {
        *sum += n;
    }
}

/// Loads the object with this run's configuration and this kernel's offsets.
/// `totals`: whether the syscalls are counted in the kernel, and the capacity of their map.
fn load(
    options: &Options,
    offsets: &Offsets,
    (counting, totals_capacity): (bool, u32),
    args_at: ArgsAt,
) -> anyhow::Result<Ebpf> {
    let config = Config {
        self_tgid: std::process::id(),
        memcg_subsys_index: offsets.memcg_subsys_index,
        // Userspace is woken once a quarter of the ring is full; a timer drains the rest.
        wakeup_bytes: u64::from(options.ring_bytes / 4),
        page_size: u32::try_from(system::page_size()).unwrap_or(4096),
        pt_regs_offset: offsets.pt_regs_offset,
        filter_by_tgid: u8::from(options.pids.is_some()),
        follow_forks: u8::from(options.run.follow),
        stream_faults: u8::from(options.fault_events),
        empty_programs: u8::from(options.empty_programs),
        count_syscalls: u8::from(counting),
        args_at: args_at as u8,
        cgroup_ids: offsets.cgroup_ids as u8,
        stacks: u8::from(options.stacks),
    };
    // Logging off unless asked for: the programs' log statements then are dead code the
    // verifier prunes.
    let log_level = if options.verbose {
        aya_log::Level::Debug as u8
    } else {
        0
    };
    // The stack maps exist either way; they get room only when used (STACKS alone holds
    // 528 bytes per entry, preallocated).
    let stack_room = |capacity: u32| if options.stacks { capacity } else { 1 };
    // The loader needs no kernel BTF: it would use it only for CO-RE relocations, which Rust
    // eBPF programs cannot carry (the kernel's offsets come in as globals instead). aya 0.14's
    // `EbpfLoader::new` reads it all the same (aya#1172; fixed upstream in releases that need a
    // newer rustc than this project's): that copy is dropped at once, before the program
    // loads and before the trampolines read their own, so one is held at a time (two at once
    // raised peak RSS by half: BENCHMARKS.md, "Reading these numbers").
    let ebpf = EbpfLoader::new()
        .btf(None)
        .map_max_entries(maps::STACK_COUNTS, stack_room(maps::MAX_STACK_COUNTS))
        .map_max_entries(maps::STACKS, stack_room(maps::MAX_STACKS))
        .map_max_entries(maps::LAST_BREAK, stack_room(maps::MAX_BREAKS))
        .override_global(config::CONFIG, &config, true)
        .override_global(config::FIELD_OFFSETS, &offsets.fields, true)
        .override_global(config::MEMBER_OFFSETS, &offsets.members, true)
        .override_global(aya_log::LEVEL, &log_level, true)
        .map_max_entries(maps::EVENTS, options.ring_bytes)
        .map_max_entries(
            maps::TARGETS,
            maps::target_words(options.pids.is_some(), system::pid_max()),
        )
        .map_max_entries(maps::TOTALS, totals_capacity)
        .load(PROGRAMS)
        .map_err(|e| anyhow!("loading the eBPF programs failed: {}", error_chain(&e)))?;
    Ok(ebpf)
}

fn attach_one(ebpf: &mut Ebpf, program: Program, events: &Path) -> anyhow::Result<TracePointLink> {
    let tracepoint = program.hook().tracepoint;
    let (group, name) = (tracepoint.group, tracepoint.name);
    if !tracefs::exists(events, tracepoint) {
        bail!("tracepoint {group}/{name} does not exist on this kernel");
    }
    let tracepoint_program: &mut TracePoint = ebpf
        .program_mut(program.name())
        .ok_or_else(|| anyhow!("program {} missing from the eBPF object", program.name()))?
        .try_into()?;
    let failed = |e: &dyn std::error::Error| {
        anyhow!(
            "attaching to tracepoint {group}/{name}: {}",
            first_line(&error_chain(e))
        )
    };
    tracepoint_program.load().map_err(|e| match &e {
        // The verifier's verdict, not its log (many lines): errors stay one line.
        // `MEMTRACE_VERIFIER_LOG=1` keeps the whole log, for debugging.
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } if std::env::var_os("MEMTRACE_VERIFIER_LOG").is_none() => anyhow!(
            "attaching to tracepoint {group}/{name}: {}",
            trampoline::load_refusal(io_error, &verifier_log.to_string())
        ),
        _ => failed(&e),
    })?;
    let link = tracepoint_program.attach(group, name).map_err(|e| {
        let refused = matches!(
            &e,
            ProgramError::SyscallError(SyscallError { io_error, .. })
                if matches!(io_error.raw_os_error(), Some(libc::EACCES | libc::EPERM))
        );
        match system::perf_event_paranoid() {
            Some(level) if refused && level > 2 => anyhow!(
                "{}: kernel.perf_event_paranoid is {level} here, at which this kernel opens perf \
                 events (how tracepoints attach) for CAP_SYS_ADMIN only: run memtrace with \
                 CAP_SYS_ADMIN, or set `sysctl kernel.perf_event_paranoid=2` (CAP_PERFMON then \
                 suffices)",
                failed(&e)
            ),
            _ => failed(&e),
        }
    })?;
    // Owned here so that detaching can be done in parallel (see Tracer's Drop).
    tracepoint_program.take_link(link).map_err(|e| failed(&e))
}

/// Detaches every link at once. Each tracepoint detach waits for an RCU grace period (~80 ms
/// here); one after the other, 25 hooks kept memtrace from exiting for two seconds after its
/// report. Grace periods waited for concurrently are shared.
fn detach_all(links: Vec<Link>) {
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

/// A message up to its first line break: errors and warnings stay one line.
/// `MEMTRACE_VERIFIER_LOG=1` keeps every line, for debugging.
fn first_line(message: &str) -> &str {
    if std::env::var_os("MEMTRACE_VERIFIER_LOG").is_some() {
        return message;
    }
    message.lines().next().unwrap_or_default()
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

    #[test]
    fn lost_counts_by_reason() {
        let lost = LostCounts::default()
            .with(Lost::RingFull, vec![0, 3])
            .with(Lost::ReclaimPendingFull, vec![2, 0]);
        assert_eq!(lost.total(), 5);
        assert_eq!(lost.of(Lost::ReclaimPendingFull), &[2, 0]);
        assert_eq!(lost.iter().count(), Lost::COUNT);
    }

    #[test]
    fn stall_histograms_sum_with_the_max_of_maxima() {
        let mut a = StallHist {
            count: 2,
            total_ns: 30,
            max_ns: 20,
            nr_reclaimed: 5,
            nr_scanned: 6,
            ..StallHist::default()
        };
        a.buckets[1] = 2;
        let mut b = a;
        b.max_ns = 50;
        b.buckets[3] = 1;
        let mut total = StallHist::default();
        add_stalls(&mut total, &a);
        add_stalls(&mut total, &b);
        assert_eq!((total.count, total.total_ns, total.max_ns), (4, 60, 50));
        assert_eq!((total.nr_reclaimed, total.nr_scanned), (10, 12));
        assert_eq!((total.buckets[1], total.buckets[3]), (4, 1));
    }
}
