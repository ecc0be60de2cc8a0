//! Per-process totals built from decoded events. Pure: fed events, never touches the kernel or
//! /proc, so every rule here is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use memtrace_common::{
    advice,
    events::{
        fault::FaultCounts,
        rss::{RSS_MEMBERS, RssState},
        totals::{COUNTED_ADVICE, FlushReason, MapSyscall, MmapKind, SyscallTotals},
    },
};

use super::{
    container::Whereabouts,
    event::{Event, Madvise, MapKind, MapOp, Mapping, comm_string},
    kernel_totals::{self, Fit, KernelCounted},
};
use crate::kernel::{
    procfs::SmapsRollup,
    status::{Resident, StatusMemory},
};

/// Calls with one advice value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdviceTotals {
    /// Every call, failed ones included.
    pub calls: u64,
    /// Calls that returned an error (and so advised nothing).
    pub failed: u64,
    /// Bytes covered by the calls that succeeded.
    pub bytes: u64,
}

/// A count of calls and the bytes they covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallBytes {
    pub calls: u64,
    pub bytes: u64,
}

impl CallBytes {
    fn add(&mut self, bytes: u64) {
        self.calls += 1;
        self.bytes += bytes;
    }
}

/// Address-space changes by mmap, munmap, mremap and brk.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct MappingTotals {
    /// Successful mmap calls by kind of memory.
    pub mmap: BTreeMap<MapKind, CallBytes>,
    pub munmap: CallBytes,
    pub mremap_grow: CallBytes,
    pub mremap_shrink: CallBytes,
    pub brk_grow: CallBytes,
    pub brk_shrink: CallBytes,
    /// brk calls whose growth could not be known (the break before them was unknown).
    pub brk_unknown: u64,
    /// Failed calls per syscall (`mmap`, `munmap`, `mremap`, `brk`).
    pub failed: BTreeMap<&'static str, u64>,
    /// The break after the last brk call seen (or read from /proc at start).
    #[serde(skip)]
    pub last_brk: Option<u64>,
}

impl MappingTotals {
    pub fn mapped_bytes(&self) -> u64 {
        self.mmap.values().map(|c| c.bytes).sum()
    }

    /// Net change of the address space: mapped + grown − unmapped − shrunk, in bytes.
    pub fn net_bytes(&self) -> i128 {
        let added = self.mapped_bytes() + self.mremap_grow.bytes + self.brk_grow.bytes;
        let removed = self.munmap.bytes + self.mremap_shrink.bytes + self.brk_shrink.bytes;
        i128::from(added) - i128::from(removed)
    }

    fn record(&mut self, m: &Mapping) {
        if m.errno.is_some() {
            let name = match m.op {
                MapOp::Mmap { .. } => "mmap",
                MapOp::Munmap { .. } => "munmap",
                MapOp::Mremap { .. } => "mremap",
                MapOp::Brk { .. } => "brk",
            };
            *self.failed.entry(name).or_default() += 1;
            return;
        }
        match m.op {
            MapOp::Mmap { len, kind, .. } => self.mmap.entry(kind).or_default().add(len),
            MapOp::Munmap { len, .. } => self.munmap.add(len),
            MapOp::Mremap {
                old_len, new_len, ..
            } if new_len >= old_len => {
                self.mremap_grow.add(new_len - old_len);
            }
            MapOp::Mremap {
                old_len, new_len, ..
            } => self.mremap_shrink.add(old_len - new_len),
            MapOp::Brk { requested, result } => self.record_brk(requested, result),
        }
    }

    /// Adds what the kernel counted (the growth of its totals since the last copy).
    fn add_counted(&mut self, grown: &SyscallTotals) {
        let add = |into: &mut CallBytes, count: &memtrace_common::events::totals::CallCount| {
            into.calls += count.calls;
            into.bytes += count.bytes;
        };
        for &kind in MmapKind::ALL {
            let count = &grown.mmap[kind as usize];
            if count.calls > 0 {
                add(self.mmap.entry(MapKind::from(kind)).or_default(), count);
            }
        }
        add(&mut self.munmap, &grown.munmap);
        add(&mut self.mremap_grow, &grown.mremap_grow);
        add(&mut self.mremap_shrink, &grown.mremap_shrink);
        add(&mut self.brk_grow, &grown.brk_grow);
        add(&mut self.brk_shrink, &grown.brk_shrink);
        self.brk_unknown += grown.brk_unknown;
        for &syscall in MapSyscall::ALL {
            let failed = grown.failed[syscall as usize];
            if failed > 0 {
                *self.failed.entry(syscall.name()).or_default() += failed;
            }
        }
    }

    fn record_brk(&mut self, requested: u64, result: u64) {
        match self.last_brk {
            _ if requested == 0 => {}
            Some(previous) if result >= previous => self.brk_grow.add(result - previous),
            Some(previous) => self.brk_shrink.add(previous - result),
            None => self.brk_unknown += 1,
        }
        self.last_brk = Some(result);
    }
}

/// Minor and major faults over the trace window, from the kernel's per-task counters (the
/// numbers behind /proc/PID/stat): sampled from /proc for live threads, and reported by the
/// kernel programs for threads as they exit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFaults {
    /// `(minflt, majflt)` of each live thread when first seen; zero for threads born after.
    baseline: BTreeMap<u32, (u64, u64)>,
    /// Latest `(minflt, majflt)` of each live thread.
    latest: BTreeMap<u32, (u64, u64)>,
    /// Faults of threads that exited while traced.
    exited: (u64, u64),
    /// Threads already reported exited (a zombie leader stays listed in /proc for a while).
    gone: BTreeSet<u32>,
    /// Set after the first look: threads that appear later were born while traced.
    watching: bool,
}

impl TaskFaults {
    pub fn minor(&self) -> u64 {
        self.exited.0 + self.live_delta().0
    }

    pub fn major(&self) -> u64 {
        self.exited.1 + self.live_delta().1
    }

    /// Whether anything is known yet.
    pub fn known(&self) -> bool {
        self.watching || !self.gone.is_empty()
    }

    fn live_delta(&self) -> (u64, u64) {
        self.latest
            .iter()
            .fold((0, 0), |(min, maj), (tid, &(lmin, lmaj))| {
                let (bmin, bmaj) = self.baseline.get(tid).copied().unwrap_or_default();
                (
                    min + lmin.saturating_sub(bmin),
                    maj + lmaj.saturating_sub(bmaj),
                )
            })
    }

    /// The process was created while traced: every fault of it counts.
    pub fn born_while_traced(&mut self) {
        self.watching = true;
    }

    /// Counts from each thread's counters when tracing began; threads born later count whole.
    fn start_from(&mut self, threads: &[(u32, u64, u64)]) {
        self.baseline = threads
            .iter()
            .map(|&(tid, minflt, majflt)| (tid, (minflt, majflt)))
            .collect();
        self.watching = true;
    }

    fn sample(&mut self, threads: &[(u32, u64, u64)]) {
        for &(tid, minflt, majflt) in threads {
            if self.gone.contains(&tid) {
                continue;
            }
            let born = if self.watching {
                (0, 0)
            } else {
                (minflt, majflt)
            };
            self.baseline.entry(tid).or_insert(born);
            self.latest.insert(tid, (minflt, majflt));
        }
        self.watching = true;
    }

    fn exit(&mut self, tid: u32, minflt: u64, majflt: u64) {
        // A thread never sampled was born (or first met) while traced: all its faults count.
        let (bmin, bmaj) = self.baseline.remove(&tid).unwrap_or_default();
        self.latest.remove(&tid);
        self.gone.insert(tid);
        self.exited.0 += minflt.saturating_sub(bmin);
        self.exited.1 += majflt.saturating_sub(bmaj);
    }
}

/// RSS of a process from the kernel's counters (`kmem/rss_stat`), in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    /// Per [`memtrace_common::events::rss::RssMember`]; `None` until seen.
    pub size: [Option<u64>; RSS_MEMBERS],
    /// Bytes taken away by other tasks (reclaim, OOM reaper) per member.
    pub external_drop: [u64; RSS_MEMBERS],
}

impl Rss {
    /// RSS per process: the sum of each process's address spaces, as the kernel programs keep
    /// them per mm.
    pub fn by_process(states: &[RssState]) -> BTreeMap<u32, Self> {
        let mut by_pid: BTreeMap<u32, Self> = BTreeMap::new();
        for state in states {
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
}

/// What memtrace knows about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    pub pid: u32,
    /// Process name; from /proc when it could be read, else the first calling thread's name.
    pub comm: String,
    /// madvise and process_madvise calls by advice value.
    pub madvise: BTreeMap<u32, AdviceTotals>,
    /// Other processes that advised this one's memory through process_madvise.
    pub advised_by: BTreeSet<u32>,
    pub mappings: MappingTotals,
    /// User-mode faults counted in the kernel (page_fault_user).
    pub faults: FaultCounts,
    /// Minor and major faults from the task counters.
    pub task_faults: TaskFaults,
    /// Individual user-mode faults received (`--fault-events`).
    pub fault_events: u64,
    pub rss: Rss,
    /// /proc/PID/smaps_rollup when first seen and at the latest sample.
    pub smaps_first: Option<SmapsRollup>,
    pub smaps_last: Option<SmapsRollup>,
    /// /proc/PID/status at the latest sample, where smaps_rollup was refused, and why it was.
    pub status_last: Option<(StatusMemory, &'static str)>,
    /// The largest LazyFree sampled: a drop from it means reclaim took MADV_FREE'd pages (or
    /// the process wrote to them again).
    pub lazy_free_peak: Option<u64>,
    /// Its names before each exec while traced, oldest first (`comm` is the latest).
    pub exec_from: Vec<String>,
    /// When it started, in clock ticks after boot (`starttime` of /proc/PID/stat): with the pid,
    /// what tells it from another process that had or has the same pid. None when memtrace
    /// could not read it (the process was gone before it looked).
    pub start_time: Option<u64>,
    /// It is known to have exited.
    pub exited: bool,
    /// Its cgroup, container, pod and pid inside its namespace, read when first met.
    pub whereabouts: Whereabouts,
    /// Bytes reclaim took per RSS member from its address spaces that are gone (torn down at
    /// exit or exec), which the kernel's per-mm state no longer holds.
    pub taken_from_gone: [u64; RSS_MEMBERS],
    /// The last copy of its memory syscalls counted in the kernel taken into `madvise` and
    /// `mappings` (runs that print only totals; see [`kernel_totals`]).
    pub kernel: Option<KernelCounted>,
    /// Its memory cgroup's id as the kernel programs read it (`memtrace_common::cgroup`): at
    /// its first counted syscall, and as a thread of it exits.
    pub memory_cgroup: Option<u64>,
}

impl ProcessStats {
    /// The process replaced its program: a new name, and a new address space whose program
    /// break memtrace has not seen yet.
    fn exec(&mut self, comm: &str) {
        let old = std::mem::replace(&mut self.comm, comm.to_owned());
        self.exec_from.push(old);
        self.mappings.last_brk = None;
    }

    /// Takes in a copy of its syscall totals counted in the kernel: what grew since the last
    /// one is added to its totals by advice and by mapping kind.
    fn take_kernel_totals(&mut self, totals: &SyscallTotals, last: bool) {
        let grown = kernel_totals::growth(&mut self.kernel, totals, last);
        for (advice, count) in grown.madvise.iter().enumerate().take(COUNTED_ADVICE) {
            if count.calls > 0 {
                let into = self.madvise.entry(advice as u32).or_default();
                into.calls += count.calls;
                into.failed += count.failed;
                into.bytes += count.bytes;
            }
        }
        self.mappings.add_counted(&grown);
        if totals.cgroup_id != 0 {
            self.memory_cgroup = Some(totals.cgroup_id);
        }
    }

    /// Bytes given back by successful releasing advice (DONTNEED, FREE, REMOVE, PAGEOUT).
    /// One of its address spaces was torn down with `taken` bytes taken from it: they move
    /// from the live address spaces' sum (as last sampled) to the gone ones'.
    fn address_space_gone(&mut self, taken: [u64; RSS_MEMBERS]) {
        for (m, bytes) in taken.into_iter().enumerate() {
            self.taken_from_gone[m] += bytes;
            self.rss.external_drop[m] = self.rss.external_drop[m].saturating_sub(bytes);
        }
    }

    /// Bytes taken away by other tasks (reclaim, OOM reaper) per RSS member, from live and
    /// torn-down address spaces.
    pub fn taken(&self) -> [u64; RSS_MEMBERS] {
        std::array::from_fn(|m| self.rss.external_drop[m] + self.taken_from_gone[m])
    }

    pub fn released_bytes(&self) -> u64 {
        self.madvise
            .iter()
            .filter(|(advice, _)| advice::is_release(**advice))
            .map(|(_, totals)| totals.bytes)
            .sum()
    }
}

/// Totals for every process seen.
#[derive(Debug, Default)]
pub struct Attribution {
    /// The current holder of each pid.
    processes: BTreeMap<u32, ProcessStats>,
    /// Earlier holders of pids that passed to a new process while traced, oldest first.
    ended: Vec<ProcessStats>,
    /// process_madvise calls whose target could not be resolved (the caller closed its pidfd or
    /// exited before memtrace looked), by advice. Charged to nobody rather than to the wrong
    /// process.
    pub unattributed: BTreeMap<u32, AdviceTotals>,
    /// Exited processes dropped to keep a long system-wide run's memory bounded.
    pub forgotten: u64,
    /// The threads' fault counters of the processes alive when tracing began, until each is
    /// first met: its faults then count from there, over the same window as the kernel's.
    at_attach: AtAttach,
}

/// Per-thread `(tid, minflt, majflt)` of processes when tracing began, and where each runs.
#[derive(Debug, Default)]
pub struct AtAttach {
    pub threads: BTreeMap<u32, Vec<(u32, u64, u64)>>,
    /// Read while they ran: a process that exits before memtrace reads /proc for one of its
    /// records still names its cgroup and container.
    pub whereabouts: BTreeMap<u32, Whereabouts>,
    /// Whether every process on the machine was read (system-wide): one missing was then born
    /// while traced.
    pub every_process: bool,
}

impl Attribution {
    /// How many processes are kept.
    pub fn len(&self) -> usize {
        self.processes.len() + self.ended.len()
    }

    /// Drops exited processes (lowest pids first) until at most `keep` remain; returns the
    /// pids dropped. `alive` says whether a pid still runs; live processes are never dropped.
    pub fn forget_exited(&mut self, keep: usize, alive: impl Fn(u32) -> bool) -> Vec<u32> {
        // Earlier holders of reused pids go first: they ended before any current one.
        let ended = self.ended.len().min(self.len().saturating_sub(keep));
        self.ended.drain(..ended);
        self.forgotten += ended as u64;
        let excess = self.len().saturating_sub(keep);
        // Not one whose syscall totals the kernel has yet to send complete: the final copy
        // would come back as a new entry, its counts taken in twice.
        let dropped: Vec<u32> = self
            .processes
            .iter()
            .filter(|(pid, p)| !alive(**pid) && p.kernel.as_ref().is_none_or(|k| k.last))
            .map(|(pid, _)| *pid)
            .take(excess)
            .collect();
        for pid in &dropped {
            self.processes.remove(pid);
        }
        self.forgotten += dropped.len() as u64;
        dropped
    }

    pub fn record(&mut self, event: &Event) {
        match event {
            Event::Madvise(m) => self.record_madvise(m),
            Event::Mapping(m) => self.process(m.tgid, &m.thread_comm).mappings.record(m),
            Event::Fault(f) => self.process(f.tgid, "").fault_events += 1,
            Event::Exec(e) => self.process(e.tgid, "").exec(&e.comm),
            Event::ThreadExit(t) => {
                // The leader's name is the process's; other threads may have their own.
                let comm = if t.tid == t.tgid {
                    comm_string(&t.comm)
                } else {
                    String::new()
                };
                let process = self.process(t.tgid, &comm);
                process.task_faults.exit(t.tid, t.min_flt, t.maj_flt);
                if t.cgroup_id != 0 {
                    process.memory_cgroup = Some(t.cgroup_id);
                }
            }
            Event::Totals(flush) => {
                self.kernel_totals(flush.tgid, &flush.totals, true);
                if flush.reason == FlushReason::Exit as u32 {
                    self.exited(flush.tgid);
                }
            }
            Event::Stall(s) => {
                self.process(s.tgid, &s.thread_comm);
            }
            Event::AddressSpaceGone(g) => self.process(g.tgid, "").address_space_gone(g.taken),
            Event::Spawn(s) => self.pid_passed_on(s.child),
            // The system's, not a process's (see `super::reclaim`).
            Event::OomKill(_) | Event::OomReaper(_) | Event::Kswapd(_) => {}
            // Named by the session and kept in `super::stacks`.
            Event::StackSeen(_) => {}
        }
    }

    /// The fault counters when tracing began (read just before the programs attached).
    pub fn set_at_attach(&mut self, at_attach: AtAttach) {
        self.at_attach = at_attach;
    }

    /// A new task got `pid`: whoever had it before has ended, and what comes next with that pid
    /// is another process's.
    fn pid_passed_on(&mut self, pid: u32) {
        self.at_attach.threads.remove(&pid);
        self.at_attach.whereabouts.remove(&pid);
        if let Some(mut previous) = self.processes.remove(&pid) {
            previous.exited = true;
            self.ended.push(previous);
        }
    }

    /// A copy of a process's memory syscalls counted in the kernel, read from the kernel's map
    /// (`last`: its final copy, from the ring). It goes to the process it is of: see
    /// [`kernel_totals::fit`].
    pub fn kernel_totals(&mut self, pid: u32, totals: &SyscallTotals, last: bool) {
        let current = self.processes.get(&pid).and_then(|p| p.kernel.as_ref());
        let ended = self
            .ended
            .iter()
            .filter(|p| p.pid == pid)
            .map(|p| p.kernel.as_ref());
        match kernel_totals::fit(totals.start_ns, current, ended) {
            Fit::Stale => return,
            Fit::NewProcess => self.pid_passed_on(pid),
            Fit::Take => {}
        }
        self.process(pid, "").take_kernel_totals(totals, last);
    }

    /// A process is known to have exited (its pidfd said so).
    pub fn exited(&mut self, pid: u32) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.exited = true;
        }
    }

    /// When a process started (see [`ProcessStats::start_time`]), as /proc showed it: kept
    /// only while nothing better is known.
    pub fn set_start_time(&mut self, pid: u32, ticks: u64) {
        self.process(pid, "").start_time.get_or_insert(ticks);
    }

    /// When a process started, as the kernel reported it with the process's own task: always
    /// right, where /proc may already show a later holder of the pid.
    pub fn set_start_time_from_kernel(&mut self, pid: u32, ticks: u64) {
        self.process(pid, "").start_time = Some(ticks);
    }

    /// Per-thread `(tid, minflt, majflt)` of a process, read from /proc.
    pub fn sample_task_faults(&mut self, pid: u32, threads: &[(u32, u64, u64)]) {
        self.process(pid, "").task_faults.sample(threads);
    }

    /// Marks a process as created while traced (a followed child).
    pub fn born_while_traced(&mut self, pid: u32) {
        self.process(pid, "").task_faults.born_while_traced();
    }

    /// Replaces a process's fault counts with the kernel's latest totals.
    pub fn set_faults(&mut self, pid: u32, faults: FaultCounts) {
        self.process(pid, "").faults = faults;
    }

    /// The RSS of every process from the kernel's live address spaces; a process without any
    /// left keeps its last sizes, and takes nothing more (what was taken from its torn-down
    /// ones came with their [`Event::AddressSpaceGone`]).
    pub fn set_rss(&mut self, mut by_pid: BTreeMap<u32, Rss>) {
        for (pid, process) in &mut self.processes {
            match by_pid.remove(pid) {
                Some(rss) => process.rss = rss,
                None => process.rss.external_drop = [0; RSS_MEMBERS],
            }
        }
        for (pid, rss) in by_pid {
            self.process(pid, "").rss = rss;
        }
    }

    /// Keeps a sample of a process's resident memory: smaps_rollup's, or status's in its place.
    pub fn sample_resident(&mut self, pid: u32, sample: Resident) {
        match sample {
            Resident::Smaps(smaps) => self.sample_smaps(pid, smaps),
            Resident::Status(status, why) => {
                self.process(pid, "").status_last = Some((status, why));
            }
        }
    }

    /// Keeps the first and the latest smaps_rollup sample of a process.
    pub fn sample_smaps(&mut self, pid: u32, sample: SmapsRollup) {
        let process = self.process(pid, "");
        process.smaps_first.get_or_insert(sample);
        process.smaps_last = Some(sample);
        process.lazy_free_peak = Some(
            process
                .lazy_free_peak
                .map_or(sample.lazy_free, |peak| peak.max(sample.lazy_free)),
        );
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.keys().copied().collect()
    }

    /// The program break before tracing started, so the first brk call has a known delta.
    pub fn set_initial_brk(&mut self, pid: u32, brk: u64) {
        let mappings = &mut self.process(pid, "").mappings;
        mappings.last_brk.get_or_insert(brk);
    }

    fn record_madvise(&mut self, m: &Madvise) {
        if !m.target_known {
            add_call(self.unattributed.entry(m.advice).or_default(), m);
            return;
        }
        let process = self.process(m.tgid, &m.thread_comm);
        add_call(process.madvise.entry(m.advice).or_default(), m);
        if m.caller != m.tgid {
            process.advised_by.insert(m.caller);
        }
    }

    /// The stats of `pid`, created on first sight with `fallback_comm` as its name.
    fn process(&mut self, pid: u32, fallback_comm: &str) -> &mut ProcessStats {
        let at_attach = &mut self.at_attach;
        let process = self.processes.entry(pid).or_insert_with(|| {
            let mut process = ProcessStats {
                pid,
                ..ProcessStats::default()
            };
            match at_attach.threads.remove(&pid) {
                Some(threads) => process.task_faults.start_from(&threads),
                None if at_attach.every_process => process.task_faults.born_while_traced(),
                None => {}
            }
            if let Some(whereabouts) = at_attach.whereabouts.remove(&pid) {
                process.whereabouts = whereabouts;
            }
            process
        });
        if process.comm.is_empty() {
            fallback_comm.clone_into(&mut process.comm);
        }
        process
    }

    /// Registers a process memtrace learnt of from the kernel's maps (a stall histogram, say)
    /// rather than from an event.
    pub fn register(&mut self, pid: u32) {
        self.process(pid, "");
    }

    /// Registers a process before any event (so it is reported even if it does nothing) or
    /// replaces its name with a better one (from /proc).
    pub fn name(&mut self, pid: u32, comm: &str) {
        self.process(pid, comm).comm = comm.to_owned();
    }

    /// Where a process runs (read from /proc when memtrace first meets it).
    pub fn place(&mut self, pid: u32, whereabouts: Whereabouts) {
        self.process(pid, "").whereabouts = whereabouts;
    }

    /// Whether a process still has no name.
    pub fn unnamed(&self, pid: u32) -> bool {
        self.processes.get(&pid).is_none_or(|p| p.comm.is_empty())
    }

    pub fn process_by_pid(&self, pid: u32) -> Option<&ProcessStats> {
        self.processes.get(&pid)
    }

    /// Every process seen, the earlier holders of reused pids included.
    pub fn processes(&self) -> impl Iterator<Item = &ProcessStats> {
        self.ended.iter().chain(self.processes.values())
    }
}

fn add_call(totals: &mut AdviceTotals, m: &Madvise) {
    totals.calls += 1;
    match m.errno {
        Some(_) => totals.failed += 1,
        None => totals.bytes += m.len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::{AddressSpaceGone, Spawn, ThreadExit};

    fn madvise(tgid: u32, tid: u32, advice: u32, len: u64, errno: Option<i32>) -> Event {
        Event::Madvise(Madvise {
            tgid,
            tid,
            caller: tgid,
            thread_comm: format!("t{tid}"),
            enter_ns: 1,
            exit_ns: 2,
            start: 0x7000_0000,
            len,
            advice,
            errno,
            pidfd: None,
            target_known: true,
        })
    }

    #[test]
    fn totals_by_advice_with_failures_apart() {
        let mut a = Attribution::default();
        for _ in 0..51 {
            a.record(&madvise(5, 5, advice::FREE, 4096, None));
            a.record(&madvise(5, 5, advice::DONTNEED, 4096, None));
        }
        a.record(&madvise(5, 5, advice::FREE, 4096, Some(libc::EINVAL)));
        let p = a.processes().next().unwrap();
        assert_eq!(
            p.madvise[&advice::FREE],
            AdviceTotals {
                calls: 52,
                failed: 1,
                bytes: 208_896
            }
        );
        assert_eq!(
            p.madvise[&advice::DONTNEED],
            AdviceTotals {
                calls: 51,
                failed: 0,
                bytes: 208_896
            }
        );
        assert_eq!(p.released_bytes(), 2 * 208_896);
    }

    #[test]
    fn hints_are_not_released_bytes() {
        let mut a = Attribution::default();
        a.record(&madvise(5, 5, advice::NOHUGEPAGE, 2 << 20, None));
        a.record(&madvise(5, 5, advice::HUGEPAGE, 2 << 20, None));
        let p = a.processes().next().unwrap();
        assert_eq!(p.released_bytes(), 0);
        assert_eq!(p.madvise[&advice::NOHUGEPAGE].bytes, 2 << 20);
    }

    fn spawn(child: u32) -> Event {
        Event::Spawn(Spawn {
            kind: 15,
            parent: 1,
            child,
            followed: 0,
        })
    }

    #[test]
    fn a_pid_passed_to_a_new_process_starts_a_new_entry() {
        let mut a = Attribution::default();
        a.record(&madvise(5, 5, advice::DONTNEED, 4096, None));
        a.set_start_time(5, 100);
        a.record(&spawn(5));
        a.record(&madvise(5, 5, advice::DONTNEED, 8192, None));
        a.set_start_time(5, 200);
        let entries: Vec<_> = a.processes().collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[0].start_time, entries[0].exited),
            (Some(100), true)
        );
        assert_eq!(entries[0].madvise[&advice::DONTNEED].bytes, 4096);
        assert_eq!(
            (entries[1].start_time, entries[1].exited),
            (Some(200), false)
        );
        assert_eq!(entries[1].madvise[&advice::DONTNEED].bytes, 8192);
        assert_eq!(a.process_by_pid(5).and_then(|p| p.start_time), Some(200));
        // A new pid that nobody had: nothing to close.
        a.record(&spawn(6));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn faults_count_from_the_counters_at_attach() {
        let mut a = Attribution::default();
        a.set_at_attach(AtAttach {
            threads: BTreeMap::from([(5, vec![(5, 100, 1), (6, 50, 0)])]),
            whereabouts: BTreeMap::from([(5, Whereabouts::new(Some("/jobs/a".into()), Some(1)))]),
            every_process: true,
        });
        // Thread 6 exits before pid 5 is first sampled: only its faults since attach count.
        a.record(&Event::ThreadExit(ThreadExit {
            kind: 8,
            tgid: 5,
            tid: 6,
            group_dead: 0,
            min_flt: 70,
            maj_flt: 0,
            process_start_ns: 0,
            cgroup_id: 0,
            comm: *b"t6\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        }));
        assert_eq!(
            a.process_by_pid(5).unwrap().comm,
            "",
            "a thread's name is not its process's"
        );
        a.sample_task_faults(5, &[(5, 130, 2), (7, 9, 0)]);
        let p = a.process_by_pid(5).unwrap();
        // 20 (tid 6) + 30 (tid 5) + 9 (tid 7, born while traced).
        assert_eq!((p.task_faults.minor(), p.task_faults.major()), (59, 1));
        // Where it ran, read at attach, is kept even though it was never read again.
        assert_eq!(p.whereabouts.cgroup.as_deref(), Some("/jobs/a"));
        assert_eq!(p.whereabouts.nspid, Some(1));
        // A process that was not there at attach was born while traced: all its faults count.
        a.sample_task_faults(8, &[(8, 40, 0)]);
        assert_eq!(a.process_by_pid(8).unwrap().task_faults.minor(), 40);
        // Nor is a later holder of an attach-time pid measured from the earlier one's counters.
        let mut a = Attribution::default();
        a.set_at_attach(AtAttach {
            threads: BTreeMap::from([(5, vec![(5, 100, 0)])]),
            whereabouts: BTreeMap::from([(5, Whereabouts::new(Some("/old".into()), None))]),
            every_process: true,
        });
        a.record(&spawn(5));
        a.sample_task_faults(5, &[(5, 12, 0)]);
        assert_eq!(a.process_by_pid(5).unwrap().task_faults.minor(), 12);
        assert_eq!(
            a.process_by_pid(5).unwrap().whereabouts,
            Whereabouts::default()
        );
    }

    #[test]
    fn taken_from_a_torn_down_address_space_is_counted_once() {
        let mut a = Attribution::default();
        let live = |anon: u64| Rss {
            size: [Some(4096), Some(8192), None, None],
            external_drop: [0, anon, 0, 0],
        };
        a.set_rss(BTreeMap::from([(5, live(3 << 20))]));
        // The mm goes, with what was taken since the last sample too.
        a.record(&Event::AddressSpaceGone(AddressSpaceGone {
            kind: 14,
            tgid: 5,
            taken: [0, 4 << 20, 0, 0],
        }));
        assert_eq!(a.process_by_pid(5).unwrap().taken(), [0, 4 << 20, 0, 0]);
        // The next sample has no address space of pid 5 left.
        a.set_rss(BTreeMap::new());
        let p = a.process_by_pid(5).unwrap();
        assert_eq!(p.taken(), [0, 4 << 20, 0, 0]);
        assert_eq!(p.rss.size[1], Some(8192), "the last size stays shown");
    }

    #[test]
    fn threads_count_toward_their_process() {
        let mut a = Attribution::default();
        for tid in 5..9 {
            a.record(&madvise(5, tid, advice::DONTNEED, 8192, None));
        }
        a.record(&madvise(6, 6, advice::DONTNEED, 8192, None));
        let pids: Vec<_> = a
            .processes()
            .map(|p| (p.pid, p.madvise[&advice::DONTNEED].calls))
            .collect();
        assert_eq!(pids, vec![(5, 4), (6, 1)]);
        // The first thread seen names the process until /proc gives a better name.
        assert_eq!(a.processes().next().unwrap().comm, "t5");
        a.name(5, "server");
        assert_eq!(a.processes().next().unwrap().comm, "server");
    }

    fn mapping(op: MapOp, errno: Option<i32>) -> Event {
        Event::Mapping(Mapping {
            tgid: 7,
            tid: 7,
            thread_comm: "m".into(),
            enter_ns: 0,
            exit_ns: 0,
            op,
            errno,
        })
    }

    #[test]
    fn mappings_by_kind_and_net_change() {
        let mut a = Attribution::default();
        let mmap = |len, kind| MapOp::Mmap {
            addr: 0x1000,
            len,
            kind,
            prot: 3,
            fd: -1,
        };
        a.record(&mapping(mmap(8192, MapKind::AnonPrivate), None));
        a.record(&mapping(mmap(4096, MapKind::AnonPrivate), None));
        a.record(&mapping(mmap(4096, MapKind::FileShared), None));
        a.record(&mapping(
            mmap(4096, MapKind::FileShared),
            Some(libc::ENOMEM),
        ));
        a.record(&mapping(
            MapOp::Munmap {
                addr: 0x1000,
                len: 8192,
            },
            None,
        ));
        a.record(&mapping(
            MapOp::Mremap {
                old_addr: 0,
                old_len: 4096,
                new_len: 16384,
                new_addr: 0x9000,
            },
            None,
        ));
        let m = &a.processes().next().unwrap().mappings;
        assert_eq!(
            m.mmap[&MapKind::AnonPrivate],
            CallBytes {
                calls: 2,
                bytes: 12288
            }
        );
        assert_eq!(
            m.mmap[&MapKind::FileShared],
            CallBytes {
                calls: 1,
                bytes: 4096
            }
        );
        assert_eq!(m.failed["mmap"], 1);
        assert_eq!(
            m.mremap_grow,
            CallBytes {
                calls: 1,
                bytes: 12288
            }
        );
        assert_eq!(m.net_bytes(), 12288 + 4096 - 8192 + 12288);
    }

    #[test]
    fn brk_growth_needs_a_known_break() {
        let mut a = Attribution::default();
        let brk = |requested, result| mapping(MapOp::Brk { requested, result }, None);
        a.record(&brk(0x5000, 0x5000)); // previous break unknown
        a.record(&brk(0, 0x5000)); // query
        a.record(&brk(0x9000, 0x9000));
        a.record(&brk(0x7000, 0x7000));
        let m = &a.processes().next().unwrap().mappings;
        assert_eq!(
            (m.brk_unknown, m.brk_grow, m.brk_shrink),
            (
                1,
                CallBytes {
                    calls: 1,
                    bytes: 0x4000
                },
                CallBytes {
                    calls: 1,
                    bytes: 0x2000
                }
            )
        );
        assert_eq!(m.net_bytes(), 0x2000);

        let mut a = Attribution::default();
        a.set_initial_brk(7, 0x4000);
        a.record(&brk(0x6000, 0x6000));
        assert_eq!(
            a.processes().next().unwrap().mappings.brk_grow.bytes,
            0x2000
        );
    }

    #[test]
    fn task_faults_over_the_window() {
        use crate::model::event::ThreadExit;
        let mut a = Attribution::default();
        // At attach: two threads with history; only what happens after counts.
        a.sample_task_faults(7, &[(7, 100, 2), (8, 50, 0)]);
        a.sample_task_faults(7, &[(7, 130, 3), (8, 50, 0), (9, 5, 0)]); // 9 born meanwhile
        let f = &a.processes().next().unwrap().task_faults;
        assert_eq!((f.minor(), f.major()), (30 + 5, 1));
        // Thread 8 exits having faulted 10 more times; 9 exits too.
        let exit = |tid, min_flt, maj_flt| {
            Event::ThreadExit(ThreadExit {
                kind: 8,
                tgid: 7,
                tid,
                group_dead: 0,
                min_flt,
                maj_flt,
                process_start_ns: 0,
                cgroup_id: 0,
                comm: [0; 16],
            })
        };
        a.record(&exit(8, 60, 0));
        a.record(&exit(9, 7, 0));
        // The leader exits last; a late sample still listing the zombie leader changes nothing.
        a.record(&exit(7, 140, 3));
        a.sample_task_faults(7, &[(7, 140, 3)]);
        let f = &a.processes().next().unwrap().task_faults;
        assert_eq!((f.minor(), f.major()), (40 + 10 + 7, 1));
    }

    #[test]
    fn exec_renames_and_forgets_the_break() {
        let mut a = Attribution::default();
        a.name(7, "sh");
        a.set_initial_brk(7, 0x4000);
        a.record(&Event::Exec(crate::model::event::Exec {
            tgid: 7,
            comm: "worker".into(),
            ts_ns: 1,
        }));
        // The old program's break says nothing about the new one's first brk call.
        a.record(&mapping(
            MapOp::Brk {
                requested: 0x9000,
                result: 0x9000,
            },
            None,
        ));
        let p = a.process_by_pid(7).unwrap();
        assert_eq!(
            (p.comm.as_str(), p.exec_from.as_slice()),
            ("worker", &["sh".to_owned()][..])
        );
        assert_eq!((p.mappings.brk_unknown, p.mappings.brk_grow.calls), (1, 0));
    }

    #[test]
    fn child_born_while_traced_counts_from_zero() {
        let mut a = Attribution::default();
        a.born_while_traced(9);
        a.sample_task_faults(9, &[(9, 12, 1)]);
        let f = &a.processes().next().unwrap().task_faults;
        assert_eq!((f.minor(), f.major()), (12, 1));
    }

    #[test]
    fn only_exited_processes_are_forgotten() {
        let mut a = Attribution::default();
        for pid in 1..=6 {
            a.record(&madvise(pid, pid, advice::DONTNEED, 4096, None));
        }
        // 2 and 4 still run; the others exited. Keep at most 3.
        let dropped = a.forget_exited(3, |pid| pid == 2 || pid == 4);
        assert_eq!(dropped, vec![1, 3, 5]);
        assert_eq!(a.pids(), vec![2, 4, 6]);
        assert_eq!(a.forgotten, 3);
        // Under the cap nothing goes, even when exited.
        assert!(a.forget_exited(3, |_| false).is_empty());
        // Nor one whose kernel-counted totals have not arrived complete.
        let t = memtrace_common::events::totals::SyscallTotals {
            start_ns: 7,
            ..Default::default()
        };
        a.kernel_totals(7, &t, false);
        a.kernel_totals(8, &t, true);
        assert_eq!(a.forget_exited(2, |_| false), vec![2, 4, 6]);
        assert_eq!(a.pids(), vec![7, 8], "7 kept, over the cap");
    }

    /// The same calls, as records and as the kernel's totals (taken in twice, as a sample and
    /// then the final copy), give the same totals.
    #[test]
    fn kernel_totals_give_what_records_give() {
        use memtrace_common::events::totals::{AdviceCount, CallCount};
        let mut records = Attribution::default();
        for _ in 0..3 {
            records.record(&madvise(7, 7, advice::DONTNEED, 8192, None));
        }
        records.record(&madvise(7, 7, advice::FREE, 4096, Some(libc::EINVAL)));
        let mmap = MapOp::Mmap {
            addr: 0x1000,
            len: 12288,
            kind: MapKind::FileShared,
            prot: 3,
            fd: 3,
        };
        records.record(&mapping(mmap, None));
        // A brk whose break did not move where asked (decoded as ENOMEM).
        records.record(&mapping(
            MapOp::Brk {
                requested: 0x9000,
                result: 0x8000,
            },
            Some(libc::ENOMEM),
        ));
        let mut t = SyscallTotals {
            start_ns: 5,
            cgroup_id: 9,
            ..SyscallTotals::default()
        };
        t.madvise[advice::DONTNEED as usize] = AdviceCount {
            calls: 3,
            failed: 0,
            bytes: 3 * 8192,
        };
        t.madvise[advice::FREE as usize] = AdviceCount {
            calls: 1,
            failed: 1,
            bytes: 0,
        };
        t.mmap[MmapKind::FileShared as usize] = CallCount {
            calls: 1,
            bytes: 12288,
        };
        t.failed[MapSyscall::Brk as usize] = 1;
        let mut counted = Attribution::default();
        counted.kernel_totals(7, &t, false);
        counted.kernel_totals(7, &t, true);
        let (r, c) = (
            records.process_by_pid(7).unwrap(),
            counted.process_by_pid(7).unwrap(),
        );
        assert_eq!(r.madvise, c.madvise);
        assert_eq!(r.mappings, c.mappings);
        assert_eq!(c.memory_cgroup, Some(9));
    }

    #[test]
    fn process_madvise_is_charged_to_the_target() {
        let mut a = Attribution::default();
        let Event::Madvise(mut m) = madvise(9, 3, advice::PAGEOUT, 65536, None) else {
            unreachable!()
        };
        m.caller = 3;
        a.record(&Event::Madvise(m));
        let p = a.processes().next().unwrap();
        assert_eq!((p.pid, p.released_bytes()), (9, 65536));
        assert_eq!(p.advised_by.iter().copied().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn unresolved_process_madvise_is_charged_to_nobody() {
        let mut a = Attribution::default();
        let Event::Madvise(mut m) = madvise(3, 3, advice::PAGEOUT, 65536, None) else {
            unreachable!()
        };
        m.pidfd = Some(5);
        m.target_known = false;
        a.record(&Event::Madvise(m));
        assert_eq!(a.processes().count(), 0);
        assert_eq!(
            a.unattributed[&advice::PAGEOUT],
            AdviceTotals {
                calls: 1,
                failed: 0,
                bytes: 65536
            }
        );
    }
}
