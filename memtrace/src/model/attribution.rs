//! Per-process totals built from decoded events. Pure: fed events, never touches the kernel or
//! /proc, so every rule here is unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use memtrace_common::{
    advice,
    events::{
        fault::FaultCounts,
        rss::{RSS_MEMBERS, RssMember, RssState},
        stall::ReclaimKind,
        totals::{COUNTED_ADVICE, FlushReason, SyscallTotals},
    },
};

use super::{
    container::Whereabouts,
    counts::{AdviceTotals, MappingTotals},
    event::{Event, Madvise, comm_string},
    kernel_totals::{self, Fit, KernelCounted},
    reclaim::StallStats,
    totals::{CgroupKey, Totals, add_mappings},
};
use crate::{
    cli::SortKey,
    kernel::{
        procfs::SmapsRollup,
        status::{Resident, StatusMemory},
    },
};

/// Children whose parent is remembered, at most (threads are forks too, and never claim
/// theirs: the oldest go first).
const MAX_BORN_IN: usize = 16_384;
/// How far back among earlier holders of reused pids an answer about one is looked for (they
/// end in order, and an answer comes within a second).
const MAX_ENDED_SEARCH: usize = 4096;

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
    /// Its names before each exec while traced, oldest first (`comm` is the latest); empty
    /// where memtrace did not see the name before an exec.
    pub exec_from: Vec<String>,
    /// When /proc showed `comm`, until the next exec: a name read after that exec is the new
    /// program's, not the one before it.
    pub comm_read_ns: Option<u64>,
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
    /// Tells this entry from every other, earlier or later, with the same pid: what the
    /// session read about "pid N" a moment ago applies only if N's entry is still this one.
    pub serial: u64,
    /// The cgroup it is counted in; `None` until settled (see
    /// [`Attribution::settle_cgroup`]); `whereabouts` names the same cgroup. Settled again
    /// only when it is seen in another cgroup after an exec (see [`Attribution::moved`]):
    /// what it counted until then stays in the cgroup it left.
    pub cgroup: Option<CgroupKey>,
    /// What it had counted when it last moved to another cgroup (its process count left
    /// out); its current cgroup counts what came since.
    pub moved_from: Option<Totals>,
    /// What it had counted (stalls aside) when it last exec'd, until /proc shows where its
    /// new program runs: the point where its counts change cgroup, if they do.
    pub at_exec: Option<Totals>,
    /// The process that forked it, when that was seen while tracing.
    pub parent: Option<u32>,
    /// Where it was when tracing began (read at attach), or where it was born (its parent's
    /// cgroup when it forked it), as far as known: its cgroup when /proc no longer shows it.
    pub cgroup_at_start: Option<String>,
    /// The last copy of its memory syscalls counted in the kernel taken into `madvise` and
    /// `mappings` (runs that print only totals; see [`kernel_totals`]).
    pub kernel: Option<KernelCounted>,
    /// Its memory cgroup's id as the kernel programs read it (`memtrace_common::cgroup`; the
    /// directory's inode number): at its first counted syscall, as a thread of it exits, or as
    /// it triggered an OOM kill. Named when /proc no longer shows its cgroup.
    pub memory_cgroup: Option<u64>,
}

impl ProcessStats {
    /// Adds this process, with its stalls, to a sum of processes.
    pub fn sum_into<'a>(
        &self,
        sum: &mut Totals,
        stalls: impl IntoIterator<Item = (ReclaimKind, &'a StallStats)>,
    ) {
        sum.processes += 1;
        for (&advice, totals) in &self.madvise {
            let into = sum.madvise.entry(advice).or_default();
            into.calls += totals.calls;
            into.failed += totals.failed;
            into.bytes += totals.bytes;
        }
        add_mappings(&mut sum.mappings, &self.mappings);
        if self.task_faults.known() {
            sum.minor_faults += self.task_faults.minor();
            sum.major_faults += self.task_faults.major();
        }
        sum.user_faults.user += self.faults.user;
        sum.user_faults.write += self.faults.write;
        sum.fault_events += self.fault_events;
        for (into, taken) in sum.taken.iter_mut().zip(self.taken()) {
            *into += taken;
        }
        for (kind, stats) in stalls {
            sum.stalls.entry(kind).or_default().merge(stats);
        }
    }

    /// Adds what this process counted in its current cgroup, to that cgroup's sum: since it
    /// moved there, if it did (the rest is in the cgroups it left).
    pub fn sum_here_into<'a>(
        &self,
        sum: &mut Totals,
        stalls: impl IntoIterator<Item = (ReclaimKind, &'a StallStats)>,
    ) {
        let Some(before) = &self.moved_from else {
            return self.sum_into(sum, stalls);
        };
        let mut here = Totals::default();
        self.sum_into(&mut here, stalls);
        here.remove(before);
        sum.add(&here);
    }

    /// The process replaced its program: a new name, and a new address space whose program
    /// break memtrace has not seen yet.
    ///
    /// A name /proc showed after the exec (`ts_ns`) is already the new program's: the one
    /// before it was not seen.
    fn exec(&mut self, comm: &str, ts_ns: u64) {
        let old = std::mem::replace(&mut self.comm, comm.to_owned());
        let read_after = self.comm_read_ns.take().is_some_and(|read| read >= ts_ns);
        self.exec_from
            .push(if read_after { String::new() } else { old });
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

    /// Resident memory in bytes, while it lives: smaps_rollup's Rss where sampled, else the
    /// kernel's counters (file + anon + shmem, those seen). `None` once it has exited — RSS is
    /// a current quantity, and an exited process holds none.
    pub fn resident_bytes(&self) -> Option<u64> {
        if self.exited {
            return None;
        }
        let status = self.status_last.map(|(status, _)| status.rss);
        self.smaps_last.map(|s| s.rss).or(status).or_else(|| {
            [RssMember::File, RssMember::Anon, RssMember::Shmem]
                .iter()
                .filter_map(|&m| self.rss.size[m as usize])
                .reduce(|a, b| a + b)
        })
    }

    /// Its value for `--sort`: what the report's (and the metrics') top N is chosen by.
    pub fn rank(&self, sort: SortKey) -> u64 {
        match sort {
            SortKey::Released => self.released_bytes(),
            SortKey::Faults => {
                (self.task_faults.minor() + self.task_faults.major()).max(self.faults.user)
            }
            SortKey::Rss => self.resident_bytes().unwrap_or(0),
            SortKey::Mapped => {
                let m = &self.mappings;
                m.mapped_bytes() + m.brk_grow.bytes + m.mremap_grow.bytes
            }
        }
    }
}

/// How a long system-wide run keeps its memory bounded (see [`Attribution::take_for_bound`]).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// Processes kept, at most; live ones are never let go, so there may be more.
    pub max_processes: usize,
    /// Exited processes ranking in the top this many by `sort` are kept whatever the bound, so
    /// the report's top N is chosen from every process seen.
    pub keep_top: usize,
    pub sort: SortKey,
}

/// An entry to look up in /proc: the current holder of `pid`, if it still is entry `serial`;
/// `parent` to read the cgroup of if its own is gone (where it was born).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fresh {
    pub pid: u32,
    pub serial: u64,
    pub parent: Option<u32>,
    /// The memory cgroup id the kernel read as it exec'd: its cgroup once /proc no longer
    /// shows it (a short program may be gone before memtrace looks).
    pub memcg_at_exec: Option<u64>,
}

/// What /proc said about a process when the session looked it up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub comm: Option<String>,
    /// When `comm` was read (CLOCK_MONOTONIC ns, as the records' times).
    pub comm_read_ns: u64,
    /// Clock ticks after boot (`starttime` of /proc/PID/stat).
    pub start_ticks: Option<u64>,
    /// Its cgroup path (see `kernel::cgroup`).
    pub cgroup: Option<String>,
    /// When its own could not be read: its parent's (where it was born, unless it moved).
    pub parent_cgroup: Option<String>,
    /// Its pid inside its own pid namespace (`NSpid` of /proc/PID/status).
    pub nspid: Option<u32>,
}

/// What the session's periodic look at /proc found for a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// None once the pid is gone.
    pub start_ticks: Option<u64>,
    /// Neither gone nor a zombie.
    pub alive: bool,
    /// Per thread `(tid, minflt, majflt)`, if its fault counters were read.
    pub threads: Option<Vec<(u32, u64, u64)>>,
    /// smaps_rollup, or status where smaps_rollup is refused.
    pub resident: Option<Resident>,
}

/// Where exited processes' cgroups come from when /proc no longer shows them: per child pid,
/// its parent and (if settled then) the parent's cgroup at fork, bounded.
#[derive(Debug, Default)]
struct BornIn {
    by_child: BTreeMap<u32, (u32, Option<String>)>,
    order: VecDeque<u32>,
}

impl BornIn {
    fn insert(&mut self, child: u32, parent: u32, cgroup: Option<String>) {
        if self.by_child.insert(child, (parent, cgroup)).is_none() {
            self.order.push_back(child);
        }
        while self.order.len() > MAX_BORN_IN {
            if let Some(oldest) = self.order.pop_front() {
                self.by_child.remove(&oldest);
            }
        }
    }

    fn take(&mut self, child: u32) -> Option<(u32, Option<String>)> {
        // Its slot in `order` goes when it reaches the front.
        self.by_child.remove(&child)
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
    /// What the dropped processes had counted, per cgroup (those `--comm` shows), and what
    /// processes counted in a cgroup they left (see [`Attribution::moved`]).
    pub folded: BTreeMap<CgroupKey, Totals>,
    /// Processes counted in `folded` for a cgroup they left: counted there, and again where
    /// they went (the machine's process count takes them out).
    pub moves: u64,
    /// Processes /proc showed in another cgroup than theirs, to be moved (`(pid, serial,
    /// path)`; see [`Attribution::moved`]).
    seen_elsewhere: Vec<(u32, u64, String)>,
    /// The threads' fault counters of the processes alive when tracing began, until each is
    /// first met: its faults then count from there, over the same window as the kernel's.
    at_attach: AtAttach,
    /// The next entry's [`ProcessStats::serial`].
    next_serial: u64,
    /// Entries created since the session last looked.
    fresh: Vec<Fresh>,
    born_in: BornIn,
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

    /// Lets go of exited processes until at most `bound.max_processes` are kept, lowest-ranked
    /// by `bound.sort` first (oldest first among equals), and returns them for the caller to
    /// fold ([`Attribution::fold`]). Never a live process, nor one of the top
    /// `bound.keep_top` of those `shows` selects: a counter only grows, so a process let go
    /// below the top can never rise into it, and the top N stays that of every process seen.
    /// A process whose cgroup is not settled yet waits for it (unless the bound is far
    /// exceeded); one whose kernel-counted totals have not arrived complete waits for them.
    /// Each comes with whether it was the current holder of its pid (else an earlier holder of
    /// a reused pid).
    pub fn take_for_bound(
        &mut self,
        bound: &Bound,
        shows: impl Fn(&ProcessStats) -> bool,
    ) -> Vec<(ProcessStats, bool)> {
        let excess = self.len().saturating_sub(bound.max_processes);
        if excess == 0 {
            return Vec::new();
        }
        let rank = |p: &ProcessStats| if shows(p) { p.rank(bound.sort) } else { 0 };
        let mut shown: Vec<(u64, u64)> = self
            .processes()
            .filter(|p| shows(p))
            .map(|p| (rank(p), p.serial))
            .collect();
        shown.sort_unstable_by_key(|&(rank, serial)| (std::cmp::Reverse(rank), serial));
        let top: HashSet<u64> = shown
            .iter()
            .take(bound.keep_top)
            .map(|&(_, serial)| serial)
            .collect();
        let far_over = self.len() > 2 * bound.max_processes;
        let mut candidates: Vec<(u64, u64)> = self
            .processes()
            .filter(|p| p.exited && !top.contains(&p.serial))
            .filter(|p| p.cgroup.is_some() || far_over)
            // Not one whose syscall totals the kernel has yet to send complete: the final copy
            // would come back as a new entry, its counts taken in twice.
            .filter(|p| p.kernel.as_ref().is_none_or(|k| k.last))
            .map(|p| (rank(p), p.serial))
            .collect();
        candidates.sort_unstable();
        let chosen: HashSet<u64> = candidates
            .into_iter()
            .take(excess)
            .map(|(_, serial)| serial)
            .collect();
        let mut taken = Vec::with_capacity(chosen.len());
        let ended = std::mem::take(&mut self.ended);
        for p in ended {
            if chosen.contains(&p.serial) {
                taken.push((p, false));
            } else {
                self.ended.push(p);
            }
        }
        let current: Vec<u32> = self
            .processes
            .values()
            .filter(|p| chosen.contains(&p.serial))
            .map(|p| p.pid)
            .collect();
        for pid in current {
            taken.extend(self.processes.remove(&pid).map(|p| (p, true)));
        }
        self.forgotten += taken.len() as u64;
        taken
    }

    /// Adds a process that was let go, with its stalls, to its cgroup's folded totals.
    pub fn fold<'a>(
        &mut self,
        p: &ProcessStats,
        stalls: impl IntoIterator<
            Item = (
                memtrace_common::events::stall::ReclaimKind,
                &'a super::reclaim::StallStats,
            ),
        >,
    ) {
        // One let go before its cgroup was read (far over the bound, /proc lagging behind a
        // burst of exits) counts where it was born, as one gone before memtrace looked does.
        let key = p.cgroup.clone().unwrap_or_else(|| {
            p.cgroup_at_start
                .clone()
                .map_or(CgroupKey::Unknown, CgroupKey::Path)
        });
        p.sum_here_into(self.folded.entry(key).or_default(), stalls);
    }

    /// Whether the current holder of `pid` is the entry with `serial`.
    fn is_current(&self, pid: u32, serial: u64) -> bool {
        self.processes.get(&pid).is_some_and(|p| p.serial == serial)
    }

    /// Entry `serial` of `pid`, and whether it is the pid's current holder: an earlier holder
    /// (its pid passed on since) is looked for among the most recent ones.
    fn entry_mut(&mut self, pid: u32, serial: u64) -> Option<(&mut ProcessStats, bool)> {
        if self.is_current(pid, serial) {
            return self.processes.get_mut(&pid).map(|p| (p, true));
        }
        self.ended
            .iter_mut()
            .rev()
            .take(MAX_ENDED_SEARCH)
            .find(|p| p.serial == serial)
            .map(|p| (p, false))
    }

    /// Entries created since the last call, to look up.
    pub fn take_fresh(&mut self) -> Vec<Fresh> {
        std::mem::take(&mut self.fresh)
    }

    /// Applies what /proc said about entry `serial` of `pid`, if /proc showed that same process:
    /// the start times agree — and are known, for an entry whose pid passed to another process
    /// since (/proc then likely showed that one). Returns the kernel's memory-cgroup id to name
    /// when /proc did not show its cgroup (see [`Attribution::settle_cgroup`]).
    pub fn identify(&mut self, pid: u32, serial: u64, identity: Identity) -> Option<u64> {
        let (process, current) = self.entry_mut(pid, serial)?;
        let same = match (process.start_time, identity.start_ticks) {
            (Some(known), Some(read)) => known == read,
            _ => current,
        };
        if process.cgroup_at_start.is_none() {
            // The parent's, read only when the process itself was gone.
            process.cgroup_at_start = identity.parent_cgroup;
        }
        if !same {
            // Another process has the pid by now: nothing read is about this one.
            return settle(process, None);
        }
        if let Some(ticks) = identity.start_ticks {
            process.start_time.get_or_insert(ticks);
        }
        // An exec seen since gave a better name than /proc's read, which may predate it.
        if let Some(comm) = identity.comm
            && process.exec_from.is_empty()
        {
            process.comm = comm;
            process.comm_read_ns = Some(identity.comm_read_ns);
        }
        if identity.nspid.is_some() {
            process.whereabouts.nspid = identity.nspid;
        }
        if let (Some(key), Some(path)) = (&process.cgroup, &identity.cgroup)
            && key.path() != Some(path.as_str())
        {
            self.seen_elsewhere.push((pid, serial, path.clone()));
            return None;
        }
        process.at_exec = None;
        settle(process, identity.cgroup)
    }

    /// The processes /proc showed in another cgroup than the one they are counted in, since
    /// the last call: each to be [`Attribution::moved`].
    pub fn take_seen_elsewhere(&mut self) -> Vec<(u32, u64, String)> {
        std::mem::take(&mut self.seen_elsewhere)
    }

    /// Entry `serial` of `pid` moved to cgroup `path` (a container's runtime moves its first
    /// process into the container's cgroup before it execs the container's program; so do
    /// `cgexec` and `systemd-run`): what it counted until now, with `stalls`, stays in the
    /// cgroup it left — folded there as if it had exited, when `shows` selects it — and its
    /// new cgroup counts from here on. So no cgroup's counters go down.
    pub fn moved<'a>(
        &mut self,
        (pid, serial, path): (u32, u64, String),
        stalls: impl IntoIterator<Item = (ReclaimKind, &'a StallStats)>,
        shows: impl Fn(&ProcessStats) -> bool,
    ) {
        let Some((process, _)) = self.entry_mut(pid, serial) else {
            return;
        };
        // Split where it exec'd (the stalls as known now: the kernel keeps them apart).
        let mut now = Totals::default();
        process.sum_into(&mut now, stalls);
        if let Some(at_exec) = process.at_exec.take() {
            now = Totals {
                stalls: std::mem::take(&mut now.stalls),
                ..at_exec
            };
        }
        let mut there = now.clone();
        if let Some(before) = &process.moved_from {
            there.remove(before);
        }
        now.processes = 0;
        process.moved_from = Some(now);
        let left = process.cgroup.clone().unwrap_or(CgroupKey::Unknown);
        let counted = shows(process);
        settle_in(process, Some(path));
        if counted {
            self.folded.entry(left).or_default().add(&there);
            self.moves += 1;
        }
    }

    /// Settles the cgroup of entry `serial` of `pid` (see [`settle`]).
    #[cfg(test)]
    pub fn settle_cgroup(
        &mut self,
        pid: u32,
        serial: u64,
        from_proc: Option<String>,
    ) -> Option<u64> {
        let (process, _) = self.entry_mut(pid, serial)?;
        settle(process, from_proc)
    }

    /// The kernel's memory-cgroup id of entry `serial` named (or not: then its parent's cgroup
    /// at fork, else unknown).
    pub fn named_memcg(&mut self, pid: u32, serial: u64, path: Option<String>) {
        if let Some((process, _)) = self.entry_mut(pid, serial)
            && process.cgroup.is_none()
        {
            let path = path.or_else(|| process.cgroup_at_start.clone());
            settle_in(process, path);
        }
    }

    /// The memory cgroup id a kernel program read for a process.
    pub fn set_memory_cgroup(&mut self, pid: u32, id: u64) {
        self.process(pid, "").memory_cgroup = Some(id);
    }

    /// Applies the session's periodic reading of `pid`'s /proc entries, if its current holder
    /// is still entry `serial`: a pid gone, a zombie, or now another process's (another start
    /// time) means that process exited.
    pub fn read(&mut self, pid: u32, serial: u64, reading: Reading) {
        if !self.is_current(pid, serial) {
            return;
        }
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        let same = match (process.start_time, reading.start_ticks) {
            (_, None) => false,
            (Some(known), Some(read)) => known == read,
            (None, Some(_)) => true,
        };
        if !same || !reading.alive {
            process.exited = true;
        }
        if !same {
            return;
        }
        if let Some(threads) = reading.threads.filter(|t| !t.is_empty()) {
            process.task_faults.sample(&threads);
        }
        if let Some(resident) = reading.resident {
            self.sample_resident(pid, resident);
        }
    }

    /// The entry's serial of the current holder of `pid`.
    pub fn serial_of(&self, pid: u32) -> Option<u64> {
        self.processes.get(&pid).map(|p| p.serial)
    }

    pub fn record(&mut self, event: &Event) {
        match event {
            Event::Madvise(m) => self.record_madvise(m),
            Event::Mapping(m) => self.process(m.tgid, &m.thread_comm).mappings.record(m),
            Event::Fault(f) => self.process(f.tgid, "").fault_events += 1,
            Event::Exec(e) => {
                let process = self.process(e.tgid, "");
                process.exec(&e.comm, e.ts_ns);
                // Its counts before the new program, for a cgroup it may turn out to leave.
                let mut at_exec = Totals::default();
                process.sum_into(&mut at_exec, []);
                process.at_exec = Some(at_exec);
                // Where it runs is read again: a runtime moves a container's first process
                // into the container's cgroup just before this exec.
                let (pid, serial) = (process.pid, process.serial);
                // Looked up once, for where it is after the exec.
                let parent = self.fresh.iter().find(|f| f.serial == serial);
                let parent = parent.and_then(|f| f.parent);
                self.fresh.retain(|f| f.serial != serial);
                self.fresh.push(Fresh {
                    pid,
                    serial,
                    parent,
                    memcg_at_exec: e.memory_cgroup_id,
                });
            }
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
                // The last thread (the tracepoint says so from Linux 6.18 on; before, every
                // thread having begun to exit says it): the process is gone.
                if t.group_dead == 1 || t.process_exiting == 1 {
                    process.exited = true;
                }
            }
            Event::Totals(flush) => {
                // Its final copy, sent as it exited (or as its pid passed on, which the spawn
                // record says too); at exec, a copy along the way.
                let last = flush.reason != FlushReason::Exec as u32;
                if self.kernel_totals(flush.tgid, &flush.totals, last)
                    && flush.reason == FlushReason::Exit as u32
                    && let Some(process) = self.processes.get_mut(&flush.tgid)
                {
                    process.exited = true;
                }
            }
            Event::Stall(s) => {
                self.process(s.tgid, &s.thread_comm);
            }
            Event::AddressSpaceGone(g) => self.process(g.tgid, "").address_space_gone(g.taken),
            Event::Spawn(s) => {
                self.pid_passed_on(s.child);
                let cgroup = self.cgroup_known(s.parent);
                self.born_in.insert(s.child, s.parent, cgroup);
            }
            // The kernel read the memory cgroup of the task that triggered it: its process's,
            // when memtrace knows that process.
            Event::OomKill(o) => {
                if let Some(id) = o.trigger_memcg_id
                    && self.processes.contains_key(&o.trigger_pid)
                {
                    self.set_memory_cgroup(o.trigger_pid, id);
                }
            }
            // The system's, not a process's (see `super::reclaim`).
            Event::OomReaper(_) | Event::Kswapd(_) => {}
            // Named by the session and kept in `super::stacks`.
            Event::StackSeen(_) => {}
        }
    }

    /// Where a process is, as far as known without /proc: its settled cgroup, else where it was
    /// at attach, else where it was born.
    fn cgroup_known(&self, pid: u32) -> Option<String> {
        let settled = self.processes.get(&pid).and_then(|p| match &p.cgroup {
            Some(key) => key.path(),
            None => p.cgroup_at_start.as_deref(),
        });
        settled
            .or_else(|| self.at_attach.whereabouts.get(&pid)?.cgroup.as_deref())
            .or_else(|| self.born_in.by_child.get(&pid)?.1.as_deref())
            .map(str::to_owned)
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
    /// (`last`: its final copy, from the ring). It goes to the process it is of (see
    /// [`kernel_totals::fit`]); says whether it was taken in (not a stale copy).
    pub fn kernel_totals(&mut self, pid: u32, totals: &SyscallTotals, last: bool) -> bool {
        let current = self.processes.get(&pid).and_then(|p| p.kernel.as_ref());
        let ended = self
            .ended
            .iter()
            .filter(|p| p.pid == pid)
            .map(|p| p.kernel.as_ref());
        match kernel_totals::fit(totals.start_ns, current, ended) {
            Fit::Stale => return false,
            Fit::NewProcess => self.pid_passed_on(pid),
            Fit::Take => {}
        }
        self.process(pid, "").take_kernel_totals(totals, last);
        true
    }

    /// A process is known to have exited (for tests; the session learns it from /proc's
    /// readings, see [`Attribution::read`], and from the kernel's records).
    #[cfg(test)]
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

    #[cfg(test)]
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
        let (next_serial, fresh, born_in) =
            (&mut self.next_serial, &mut self.fresh, &mut self.born_in);
        let process = self.processes.entry(pid).or_insert_with(|| {
            *next_serial += 1;
            let (parent, born) = born_in.take(pid).unzip();
            let at_start = at_attach.whereabouts.remove(&pid);
            let nspid = at_start.as_ref().and_then(|w| w.nspid);
            let cgroup_at_start = at_start.and_then(|w| w.cgroup).or(born.flatten());
            fresh.push(Fresh {
                pid,
                serial: *next_serial,
                // The parent's cgroup is read only while it is not known already.
                parent: parent.filter(|_| cgroup_at_start.is_none()),
                memcg_at_exec: None,
            });
            let mut process = ProcessStats {
                pid,
                serial: *next_serial,
                parent,
                cgroup_at_start,
                // Its cgroup is named once settled (see `settle`); its pid inside its namespace
                // is its own for life.
                whereabouts: Whereabouts::new(None, nspid),
                ..ProcessStats::default()
            };
            match at_attach.threads.remove(&pid) {
                Some(threads) => process.task_faults.start_from(&threads),
                None if at_attach.every_process => process.task_faults.born_while_traced(),
                None => {}
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

    pub fn process_by_pid(&self, pid: u32) -> Option<&ProcessStats> {
        self.processes.get(&pid)
    }

    /// Every process seen, the earlier holders of reused pids included.
    pub fn processes(&self) -> impl Iterator<Item = &ProcessStats> {
        self.ended.iter().chain(self.processes.values())
    }
}

/// Settles a process's cgroup, once: the path /proc showed; else, when the kernel reported its
/// memory cgroup's id, that id, returned for the caller to name (then
/// [`Attribution::named_memcg`]); else its parent's at fork; else unknown.
fn settle(process: &mut ProcessStats, from_proc: Option<String>) -> Option<u64> {
    if process.cgroup.is_some() {
        return None;
    }
    match (from_proc, process.memory_cgroup) {
        (Some(path), _) => settle_in(process, Some(path)),
        (None, Some(id)) => return Some(id),
        (None, None) => {
            let born = process.cgroup_at_start.clone();
            settle_in(process, born);
        }
    }
    None
}

/// The one place a process's cgroup is set: the key its counts go to, and where it runs as
/// reports show it (the container and pod that path names), so both always agree.
fn settle_in(process: &mut ProcessStats, path: Option<String>) {
    process.whereabouts = Whereabouts::new(path.clone(), process.whereabouts.nspid);
    process.cgroup = Some(path.map_or(CgroupKey::Unknown, CgroupKey::Path));
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
    use crate::model::{
        counts::CallBytes,
        event::{self, AddressSpaceGone, MapKind, MapOp, Mapping, Spawn, ThreadExit},
    };
    use memtrace_common::events::exit::GROUP_DEAD_UNKNOWN;

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
        spawn_of(1, child)
    }

    fn spawn_of(parent: u32, child: u32) -> Event {
        Event::Spawn(Spawn {
            kind: 15,
            parent,
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
            min_flt: 70,
            comm: *b"t6\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            ..event::thread_exit(5, 6)
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
        assert_eq!(p.whereabouts.nspid, Some(1));
        // Where it ran, read at attach, is its cgroup once /proc no longer shows it.
        let serial = p.serial;
        a.identify(5, serial, Identity::default());
        let p = a.process_by_pid(5).unwrap();
        assert_eq!(p.cgroup, Some(CgroupKey::Path("/jobs/a".into())));
        assert_eq!(p.whereabouts.cgroup.as_deref(), Some("/jobs/a"));
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
                min_flt,
                maj_flt,
                ..event::thread_exit(7, tid)
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
            memory_cgroup_id: None,
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

    /// /proc read before an exec names the program before it; read after, it already shows
    /// the new one, and the name before is not known (not "churn became churn").
    #[test]
    fn a_name_read_after_an_exec_is_not_the_name_before_it() {
        let exec = |a: &mut Attribution, ts_ns| {
            a.record(&Event::Exec(crate::model::event::Exec {
                tgid: 7,
                comm: "churn".into(),
                ts_ns,
                memory_cgroup_id: None,
            }));
        };
        for (read_ns, before) in [(50, "timeout"), (200, "")] {
            let mut a = Attribution::default();
            a.record(&madvise(7, 7, advice::DONTNEED, 4096, None));
            let serial = a.serial_of(7).unwrap();
            let comm = if read_ns < 100 { "timeout" } else { "churn" };
            a.identify(
                7,
                serial,
                Identity {
                    comm: Some(comm.into()),
                    comm_read_ns: read_ns,
                    ..Identity::default()
                },
            );
            exec(&mut a, 100);
            let p = a.process_by_pid(7).unwrap();
            assert_eq!(p.exec_from, [before], "read at {read_ns}");
            assert_eq!(p.comm, "churn");
        }
    }

    #[test]
    fn child_born_while_traced_counts_from_zero() {
        let mut a = Attribution::default();
        a.born_while_traced(9);
        a.sample_task_faults(9, &[(9, 12, 1)]);
        let f = &a.processes().next().unwrap().task_faults;
        assert_eq!((f.minor(), f.major()), (12, 1));
    }

    fn settled(a: &mut Attribution, pid: u32, cgroup: &str) {
        let serial = a.serial_of(pid).unwrap();
        a.settle_cgroup(pid, serial, Some(cgroup.to_owned()));
    }

    fn exit_now(a: &mut Attribution, pid: u32) {
        let serial = a.serial_of(pid).unwrap();
        a.read(pid, serial, Reading::default());
    }

    #[test]
    fn the_bound_lets_go_of_the_lowest_ranked_exited_processes() {
        let mut a = Attribution::default();
        // pid N released N pages; 2 and 4 still run, the others exited. 5, the biggest
        // exited releaser, is among the top 2 of everything seen.
        for pid in 1..=6 {
            a.record(&madvise(
                pid,
                pid,
                advice::DONTNEED,
                u64::from(pid) * 4096,
                None,
            ));
            settled(&mut a, pid, "/jobs");
        }
        for pid in [1, 3, 5, 6] {
            exit_now(&mut a, pid);
        }
        let bound = Bound {
            max_processes: 3,
            keep_top: 2,
            sort: SortKey::Released,
        };
        let taken = a.take_for_bound(&bound, |_| true);
        let taken: Vec<(u32, bool)> = taken.iter().map(|(p, current)| (p.pid, *current)).collect();
        // 6 and 5 are the top 2; live 2 and 4 stay; of 1 and 3, both must go (6 > 3).
        assert_eq!(taken, vec![(1, true), (3, true)]);
        assert_eq!(a.pids(), vec![2, 4, 5, 6]);
        assert_eq!(a.forgotten, 2);
        // Under the bound nothing goes, even when exited.
        let loose = Bound {
            max_processes: 4,
            ..bound
        };
        assert!(a.take_for_bound(&loose, |_| true).is_empty());
        // Not shown by --comm: ranked last, so let go first.
        let tight = Bound {
            max_processes: 3,
            keep_top: 0,
            ..bound
        };
        let taken = a.take_for_bound(&tight, |p| p.pid != 6);
        assert_eq!(taken[0].0.pid, 6);
    }

    #[test]
    fn exited_processes_wait_for_their_cgroup_before_they_are_let_go() {
        let mut a = Attribution::default();
        for pid in 1..=3 {
            a.record(&madvise(pid, pid, advice::DONTNEED, 4096, None));
            exit_now(&mut a, pid);
        }
        settled(&mut a, 3, "/a");
        let bound = Bound {
            max_processes: 2,
            keep_top: 0,
            sort: SortKey::Released,
        };
        let taken: Vec<u32> = a
            .take_for_bound(&bound, |_| true)
            .iter()
            .map(|(p, _)| p.pid)
            .collect();
        assert_eq!(taken, vec![3]);
    }

    #[test]
    fn the_cgroup_comes_from_proc_else_the_kernel_else_the_parent() {
        let mut a = Attribution::default();
        // /proc showed it.
        a.record(&madvise(5, 5, advice::DONTNEED, 4096, None));
        let fresh = a.take_fresh();
        assert_eq!(
            fresh,
            vec![Fresh {
                pid: 5,
                serial: 1,
                parent: None,
                memcg_at_exec: None,
            }]
        );
        let identity = Identity {
            comm: Some("app".into()),
            comm_read_ns: 0,
            start_ticks: Some(100),
            cgroup: Some("/jobs/a".into()),
            parent_cgroup: None,
            nspid: None,
        };
        assert_eq!(a.identify(5, 1, identity.clone()), None);
        let p = a.process_by_pid(5).unwrap();
        assert_eq!((p.comm.as_str(), p.start_time), ("app", Some(100)));
        assert_eq!(p.cgroup, Some(CgroupKey::Path("/jobs/a".into())));
        // Settled once: settling again does not move its counts (a reading after an exec
        // does, see `moved`).
        a.settle_cgroup(5, 1, Some("/elsewhere".into()));
        assert_eq!(
            a.process_by_pid(5).unwrap().cgroup,
            Some(CgroupKey::Path("/jobs/a".into()))
        );

        // Its child exits before /proc is read: born in the parent's cgroup.
        a.record(&spawn_of(5, 6));
        a.record(&madvise(6, 6, advice::DONTNEED, 4096, None));
        assert_eq!(
            a.take_fresh()[0].parent,
            None,
            "the parent's cgroup is known"
        );
        assert_eq!(a.identify(6, 2, Identity::default()), None);
        assert_eq!(
            a.process_by_pid(6).unwrap().cgroup,
            Some(CgroupKey::Path("/jobs/a".into()))
        );

        // The kernel named its memory cgroup: that id is what to name.
        a.record(&madvise(7, 7, advice::DONTNEED, 4096, None));
        a.set_memory_cgroup(7, 4242);
        assert_eq!(a.identify(7, 3, Identity::default()), Some(4242));
        assert_eq!(
            a.process_by_pid(7).unwrap().cgroup,
            None,
            "waits for the name"
        );
        a.named_memcg(7, 3, Some("/jobs/b".into()));
        assert_eq!(
            a.process_by_pid(7).unwrap().cgroup,
            Some(CgroupKey::Path("/jobs/b".into()))
        );

        // Alive when tracing began, gone before /proc was read again: where it was then.
        a.set_at_attach(AtAttach {
            whereabouts: BTreeMap::from([(20, Whereabouts::new(Some("/at/attach".into()), None))]),
            ..AtAttach::default()
        });
        // Its child, forked before memtrace met it, gone too: born there.
        a.record(&spawn_of(20, 21));
        for pid in [21, 20] {
            a.record(&madvise(pid, pid, advice::DONTNEED, 4096, None));
            let serial = a.serial_of(pid).unwrap();
            a.identify(pid, serial, Identity::default());
            assert_eq!(
                a.process_by_pid(pid).unwrap().cgroup,
                Some(CgroupKey::Path("/at/attach".into()))
            );
        }

        // Nothing known: unknown, said as such.
        a.record(&madvise(8, 8, advice::DONTNEED, 4096, None));
        let serial = a.serial_of(8).unwrap();
        a.identify(8, serial, Identity::default());
        assert_eq!(
            a.process_by_pid(8).unwrap().cgroup,
            Some(CgroupKey::Unknown)
        );

        // Forked by a process memtrace had not met: /proc showed the parent's cgroup.
        a.record(&spawn_of(30, 9));
        a.record(&madvise(9, 9, advice::DONTNEED, 4096, None));
        let fresh = a.take_fresh();
        assert_eq!(fresh.last().and_then(|f| f.parent), Some(30));
        let parents = Identity {
            parent_cgroup: Some("/jobs/c".into()),
            ..Identity::default()
        };
        let serial = a.serial_of(9).unwrap();
        a.identify(9, serial, parents);
        assert_eq!(
            a.process_by_pid(9).unwrap().cgroup,
            Some(CgroupKey::Path("/jobs/c".into()))
        );
    }

    #[test]
    fn what_proc_said_of_another_holder_of_the_pid_is_not_applied() {
        let mut a = Attribution::default();
        a.record(&madvise(5, 5, advice::DONTNEED, 4096, None));
        a.set_start_time_from_kernel(5, 100);
        // /proc shows a process that started later: another one has the pid now.
        let later = Identity {
            comm: Some("other".into()),
            comm_read_ns: 0,
            start_ticks: Some(900),
            cgroup: Some("/other".into()),
            parent_cgroup: None,
            nspid: None,
        };
        a.identify(5, 1, later);
        let p = a.process_by_pid(5).unwrap();
        assert_eq!(
            (p.comm.as_str(), p.cgroup.clone()),
            ("t5", Some(CgroupKey::Unknown))
        );
        // A stale serial: the entry was replaced meanwhile.
        a.record(&spawn(5));
        a.record(&madvise(5, 5, advice::DONTNEED, 4096, None));
        a.identify(
            5,
            1,
            Identity {
                comm: Some("x".into()),
                ..Identity::default()
            },
        );
        assert_eq!(a.process_by_pid(5).unwrap().comm, "t5");
        // A reading of another start time: the holder memtrace knew exited.
        a.set_start_time(5, 200);
        let serial = a.serial_of(5).unwrap();
        let reading = |start| Reading {
            start_ticks: Some(start),
            alive: true,
            threads: Some(vec![(5, 10, 0)]),
            resident: None,
        };
        a.read(5, serial, reading(200));
        assert!(!a.process_by_pid(5).unwrap().exited);
        a.read(5, serial, reading(300));
        assert!(a.process_by_pid(5).unwrap().exited);
    }

    /// An answer about a process whose pid passed on meanwhile still settles its cgroup; /proc's
    /// name and cgroup count only if its start time says /proc showed that very process.
    #[test]
    fn an_earlier_holder_of_a_pid_is_still_settled() {
        let mut a = Attribution::default();
        a.record(&madvise(5, 5, advice::DONTNEED, 4096, None));
        a.record(&madvise(6, 6, advice::DONTNEED, 4096, None));
        a.set_start_time_from_kernel(6, 60);
        a.record(&spawn(5));
        a.record(&spawn(6));
        let seen = |start| Identity {
            comm: Some("late".into()),
            comm_read_ns: 0,
            start_ticks: Some(start),
            cgroup: Some("/later".into()),
            parent_cgroup: None,
            nspid: None,
        };
        a.identify(5, 1, seen(70));
        a.identify(6, 2, seen(60));
        let ended: Vec<_> = a
            .processes()
            .map(|p| (p.comm.clone(), p.cgroup.clone()))
            .collect();
        assert_eq!(
            ended,
            [
                ("t5".to_owned(), Some(CgroupKey::Unknown)),
                ("late".to_owned(), Some(CgroupKey::Path("/later".into()))),
            ]
        );
    }

    #[test]
    fn resident_memory_is_a_live_process_s_only() {
        let mut a = Attribution::default();
        a.set_rss(BTreeMap::from([(
            5,
            Rss {
                // File, anon, swap (not resident), shmem not seen yet.
                size: [Some(4096), Some(8192), Some(4096), None],
                external_drop: [0; RSS_MEMBERS],
            },
        )]));
        assert_eq!(a.process_by_pid(5).unwrap().resident_bytes(), Some(12288));
        assert_eq!(a.process_by_pid(5).unwrap().rank(SortKey::Rss), 12288);
        a.record(&Event::ThreadExit(ThreadExit {
            group_dead: 1,
            process_exiting: 1,
            ..event::thread_exit(5, 5)
        }));
        let p = a.process_by_pid(5).unwrap();
        assert!(p.exited, "the last thread exited");
        assert_eq!((p.resident_bytes(), p.rank(SortKey::Rss)), (None, 0));
    }

    /// Before Linux 6.18 the tracepoint does not say which thread is the last; every thread
    /// having begun to exit does, and a sibling's exit while others live does not.
    #[test]
    fn a_process_is_gone_when_all_its_threads_exit_without_group_dead() {
        let exit = |tid, process_exiting| {
            Event::ThreadExit(ThreadExit {
                group_dead: GROUP_DEAD_UNKNOWN,
                process_exiting,
                ..event::thread_exit(5, tid)
            })
        };
        let mut a = Attribution::default();
        a.record(&exit(6, 0));
        assert!(!a.process_by_pid(5).unwrap().exited, "a sibling left");
        a.record(&exit(7, GROUP_DEAD_UNKNOWN));
        assert!(!a.process_by_pid(5).unwrap().exited, "nothing known");
        a.record(&exit(5, 1));
        assert!(a.process_by_pid(5).unwrap().exited, "every thread exiting");
    }

    /// An exited process whose kernel-counted totals have not arrived complete is not let go:
    /// its final copy would come back as a new entry, counted twice.
    #[test]
    fn the_bound_waits_for_kernel_totals_to_arrive_complete() {
        use memtrace_common::events::totals::TotalsFlush;
        let mut a = Attribution::default();
        let t = SyscallTotals {
            start_ns: 7,
            ..SyscallTotals::default()
        };
        for pid in [7, 8] {
            assert!(a.kernel_totals(pid, &t, false));
            settled(&mut a, pid, "/jobs");
            exit_now(&mut a, pid);
        }
        // 8's final copy arrives, as it exits.
        a.record(&Event::Totals(Box::new(TotalsFlush {
            kind: 0,
            tgid: 8,
            reason: FlushReason::Exit as u32,
            _pad: 0,
            totals: t,
        })));
        let bound = Bound {
            max_processes: 0,
            keep_top: 0,
            sort: SortKey::Released,
        };
        let taken: Vec<u32> = a
            .take_for_bound(&bound, |_| true)
            .iter()
            .map(|(p, _)| p.pid)
            .collect();
        assert_eq!(taken, vec![8]);
        assert_eq!(a.pids(), vec![7], "7 kept, over the bound");
    }

    /// The same calls, as records and as the kernel's totals (taken in twice, as a sample and
    /// then the final copy), give the same totals.
    #[test]
    fn kernel_totals_give_what_records_give() {
        use memtrace_common::events::totals::{AdviceCount, CallCount, MapSyscall, MmapKind};
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
