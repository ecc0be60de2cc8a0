//! Decoding ring-buffer records into typed events.

use memtrace_common::events::totals::{MmapKind, page_round_up};
use memtrace_common::events::{
    EventKind, Record,
    exec::ExecEvent,
    fault::{FaultEvent, X86_PF_FETCH, X86_PF_PROTECTION, X86_PF_WRITE},
    kswapd::KswapdEvent,
    oom::{OomReaperEvent, OomVictim, ReaperPhase},
    stall::{ReclaimKind, ReclaimStall},
    syscall::SyscallEvent,
};
pub use memtrace_common::events::{
    exit::ThreadExit, rss::AddressSpaceGone, spawn::Spawn, totals::TotalsFlush,
};
use memtrace_common::stacks::{StackRef, StackSeen};

use super::container::{Container, Placement, Pod};

/// Whose memory cgroup an OOM kill names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CgroupOf {
    /// The victim's own, read while it was (at best) a zombie.
    Victim,
    /// The victim was already reaped: the triggering task's, as the kernel side read it.
    Trigger,
}

/// What /proc still says about an OOM victim task (the session reads it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VictimFacts {
    /// The victim's process (its thread group), while /proc shows it.
    pub tgid: Option<u32>,
    /// Its memory cgroup, or the triggering task's once the victim is reaped.
    pub cgroup: Option<(String, CgroupOf)>,
}

/// A `madvise` or `process_madvise` call, completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Madvise {
    /// The process whose memory was advised: the caller for `madvise`; for `process_madvise`
    /// the target, once resolved (see [`Madvise::caller`]).
    pub tgid: u32,
    pub tid: u32,
    /// Calling process; differs from `tgid` only for `process_madvise` on another process.
    pub caller: u32,
    pub thread_comm: String,
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Start address (0 for `process_madvise`, which takes a vector of ranges).
    pub start: u64,
    /// Bytes the call covers: the length rounded up to whole pages, as the kernel does. For a
    /// successful `process_madvise`, the byte count it returned.
    pub len: u64,
    pub advice: u32,
    /// `None` on success, else the errno.
    pub errno: Option<i32>,
    /// `Some(pidfd)` for `process_madvise`.
    pub pidfd: Option<i32>,
    /// False for a `process_madvise` whose target process is not known (yet): `tgid` is then
    /// the caller's.
    pub target_known: bool,
}

/// Everything memtrace receives from the kernel, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Madvise(Madvise),
    Mapping(Mapping),
    Fault(Fault),
    ThreadExit(ThreadExit),
    Stall(Stall),
    /// Boxed: rare, and much larger than the records that stream by the million.
    OomKill(Box<OomKill>),
    OomReaper(OomReaper),
    Kswapd(Kswapd),
    Exec(Exec),
    AddressSpaceGone(AddressSpaceGone),
    Spawn(Spawn),
    /// A process's memory syscalls counted in the kernel, sent as it exits or its pid passes
    /// on.
    Totals(Box<TotalsFlush>),
    /// A new stack counted with `--stacks`, to be symbolized now.
    StackSeen(StackRef),
}

impl Event {
    /// The process the event is charged to; for an OOM kill the victim, for kswapd 0.
    pub fn tgid(&self) -> u32 {
        self.process().unwrap_or(match self {
            Self::OomKill(o) => o.pid,
            Self::OomReaper(r) => r.pid,
            _ => 0,
        })
    }

    /// The traced process the event belongs to, if it belongs to one. OOM kills (which may hit
    /// an untraced process) and kswapd state changes belong to the system.
    pub fn process(&self) -> Option<u32> {
        match self {
            Self::Madvise(m) => Some(m.tgid),
            Self::Mapping(m) => Some(m.tgid),
            Self::Fault(f) => Some(f.tgid),
            Self::ThreadExit(t) => Some(t.tgid),
            Self::Exec(e) => Some(e.tgid),
            Self::Stall(s) => Some(s.tgid),
            Self::AddressSpaceGone(g) => Some(g.tgid),
            Self::Totals(t) => Some(t.tgid),
            Self::StackSeen(s) => Some(s.tgid),
            // About a pid's next holder, which nothing is known of yet.
            Self::Spawn(_) => None,
            Self::OomKill(_) | Self::OomReaper(_) | Self::Kswapd(_) => None,
        }
    }
}

/// A traced process called exec; its JSON line as it is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    #[serde(rename = "pid")]
    pub tgid: u32,
    /// The new program's name.
    pub comm: String,
    pub ts_ns: u64,
    /// Its memory cgroup as its new program starts: the inode number of the cgroup's
    /// directory in the hierarchy that holds the memory controller; null when unknown.
    pub memory_cgroup_id: Option<u64>,
}

/// One direct or memcg reclaim stall of a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    pub tgid: u32,
    pub tid: u32,
    pub thread_comm: String,
    pub kind: ReclaimKind,
    /// Allocation order (-1 when the tracepoint lacks it).
    pub order: i32,
    pub gfp_flags: u64,
    pub start_ns: u64,
    pub latency_ns: u64,
    /// Pages freed by this reclaim.
    pub nr_reclaimed: u64,
    /// Inactive-LRU pages scanned during it.
    pub nr_scanned: u64,
}

/// A victim chosen by the OOM killer; its JSON line as it is. Sizes in kB; `None` where this
/// kernel's tracepoint lacks the field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OomKill {
    /// The victim's process id (its thread group, when /proc still shows it).
    pub pid: u32,
    /// The victim task the kernel named (a thread of `pid`).
    pub tid: u32,
    pub comm: String,
    /// The task whose allocation invoked the OOM killer.
    pub trigger_pid: u32,
    pub trigger_tid: u32,
    pub trigger_comm: String,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i32>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    pub ts_ns: u64,
    /// The victim's memory cgroup, read from /proc/PID/cgroup as soon as the record arrives;
    /// if the victim is already reaped, the triggering task's (see `cgroup_of`); null when it
    /// could not be known.
    pub cgroup: Option<String>,
    /// Whose cgroup `cgroup` is.
    pub cgroup_of: Option<CgroupOf>,
    /// The container `cgroup`'s path names (runtime and id); null for none.
    pub container: Option<Container>,
    /// The Kubernetes pod `cgroup`'s path names; null for none.
    pub pod: Option<Pod>,
    /// Kernfs id (directory inode) of the triggering task's memory cgroup, from the kernel.
    pub trigger_memcg_id: Option<u64>,
    /// What the OOM reaper did with the victim, as far as seen (complete only in summaries).
    pub reaper: ReaperOutcome,
}

impl OomKill {
    /// Completes the kernel's record with what /proc still said about the victim.
    pub fn learn(&mut self, facts: VictimFacts) {
        if let Some(tgid) = facts.tgid {
            self.pid = tgid;
        }
        if let Some((path, of)) = facts.cgroup {
            let placement = Placement::of_path(&path);
            (self.container, self.pod) = (placement.container, placement.pod);
            self.cgroup = Some(path);
            self.cgroup_of = Some(of);
        }
    }
}

/// The OOM reaper's steps for one victim (CLOCK_MONOTONIC ns). It is queued at the kill and
/// acts about two seconds later, only if the victim has not freed its memory by exiting. JSON
/// shows what happened: `woken`, `skipped`, `reaped` and `reap_ns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[schemars(with = "ReaperJson")]
pub struct ReaperOutcome {
    pub woken_ns: Option<u64>,
    pub start_ns: Option<u64>,
    pub finish_ns: Option<u64>,
    /// The reaper found nothing to do (the victim exited, or its memory cannot be reaped).
    pub skipped_ns: Option<u64>,
}

impl ReaperOutcome {
    pub fn record(&mut self, phase: ReaperPhase, ts_ns: u64) {
        let slot = match phase {
            ReaperPhase::Woken => &mut self.woken_ns,
            ReaperPhase::Start => &mut self.start_ns,
            ReaperPhase::Finish => &mut self.finish_ns,
            ReaperPhase::Skip => &mut self.skipped_ns,
        };
        slot.get_or_insert(ts_ns);
    }

    /// How long reaping took, once finished.
    pub fn reap_ns(&self) -> Option<u64> {
        Some(self.finish_ns?.saturating_sub(self.start_ns?))
    }
}

impl serde::Serialize for ReaperOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ReaperJson {
            woken: self.woken_ns.is_some(),
            skipped: self.skipped_ns.is_some(),
            reaped: self.finish_ns.is_some(),
            reap_ns: self.reap_ns(),
        }
        .serialize(serializer)
    }
}

/// How [`ReaperOutcome`] reads in JSON.
#[derive(serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReaperJson {
    woken: bool,
    skipped: bool,
    reaped: bool,
    reap_ns: Option<u64>,
}

/// One step of the OOM reaper for a victim task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomReaper {
    /// The victim task, as `oom/mark_victim` named it ([`OomKill::tid`]).
    pub pid: u32,
    pub phase: ReaperPhase,
    pub ts_ns: u64,
}

/// kswapd of a NUMA node woke (started balancing) or went back to sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kswapd {
    pub nid: u32,
    pub awake: bool,
    pub order: i32,
    pub ts_ns: u64,
}

/// An mmap, munmap, mremap or brk call, completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub tgid: u32,
    pub tid: u32,
    pub thread_comm: String,
    pub enter_ns: u64,
    pub exit_ns: u64,
    pub op: MapOp,
    /// `None` on success, else the errno (brk, which reports failure by returning the old
    /// break, has `Some(ENOMEM)` when the break did not move to the requested address).
    pub errno: Option<i32>,
}

/// What kind of memory an mmap call maps.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MapKind {
    AnonPrivate,
    AnonShared,
    FilePrivate,
    FileShared,
}

impl MapKind {
    /// From mmap's flags: MAP_ANONYMOUS picks anonymous; MAP_SHARED or MAP_SHARED_VALIDATE
    /// picks shared.
    pub fn from_flags(flags: u64) -> Self {
        MmapKind::from_flags(flags).into()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::AnonPrivate => "anon_private",
            Self::AnonShared => "anon_shared",
            Self::FilePrivate => "file_private",
            Self::FileShared => "file_shared",
        }
    }
}

impl From<MmapKind> for MapKind {
    fn from(kind: MmapKind) -> Self {
        match kind {
            MmapKind::AnonPrivate => Self::AnonPrivate,
            MmapKind::AnonShared => Self::AnonShared,
            MmapKind::FilePrivate => Self::FilePrivate,
            MmapKind::FileShared => Self::FileShared,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// `len` is page-rounded; `addr` is the mapped address (0 on failure).
    Mmap {
        addr: u64,
        len: u64,
        kind: MapKind,
        prot: u64,
        fd: i32,
    },
    Munmap {
        addr: u64,
        len: u64,
    },
    /// Lengths page-rounded; `new_addr` is where the mapping ended up (0 on failure).
    Mremap {
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        new_addr: u64,
    },
    /// `requested` 0 is a query; `result` is the break after the call.
    Brk {
        requested: u64,
        result: u64,
    },
}

/// One user-mode page fault (only with `--fault-events`); its JSON line as it is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(rename = "pid")]
    pub tgid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    pub address: u64,
    pub ip: u64,
    /// A write access (x86 error code bit 1).
    pub write: bool,
    /// The page was present: a protection fault (bit 0).
    pub protection: bool,
    /// An instruction fetch (bit 4).
    pub fetch: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated record of kind {kind}: {len} bytes")]
    Truncated { kind: u32, len: usize },
    #[error("record of unknown kind {0}")]
    UnknownKind(u32),
}

/// Decodes one ring-buffer record. `page_size` rounds madvise lengths as the kernel does.
pub fn decode(bytes: &[u8], page_size: u64) -> Result<Event, DecodeError> {
    let kind = bytes
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DecodeError::Truncated {
            kind: 0,
            len: bytes.len(),
        })?;
    let unknown = DecodeError::UnknownKind(kind);
    Ok(
        match EventKind::from_u32(kind).ok_or(DecodeError::UnknownKind(kind))? {
            EventKind::Madvise | EventKind::ProcessMadvise => {
                Event::Madvise(madvise(&record(bytes, kind)?, page_size))
            }
            EventKind::Mmap | EventKind::Munmap | EventKind::Mremap | EventKind::Brk => {
                Event::Mapping(mapping(&record(bytes, kind)?, page_size))
            }
            EventKind::Fault => Event::Fault(fault(&record(bytes, kind)?)),
            EventKind::ThreadExit => Event::ThreadExit(record(bytes, kind)?),
            EventKind::ReclaimStall => {
                let raw: ReclaimStall = record(bytes, kind)?;
                let reclaim_kind = ReclaimKind::from_u32(raw.reclaim_kind).ok_or(unknown)?;
                Event::Stall(stall(&raw, reclaim_kind))
            }
            EventKind::OomKill => Event::OomKill(Box::new(oom_kill(&record(bytes, kind)?))),
            EventKind::OomReaper => {
                let raw: OomReaperEvent = record(bytes, kind)?;
                Event::OomReaper(OomReaper {
                    pid: raw.pid,
                    phase: ReaperPhase::from_u32(raw.phase).ok_or(unknown)?,
                    ts_ns: raw.ts_ns,
                })
            }
            EventKind::Exec => {
                let raw: ExecEvent = record(bytes, kind)?;
                Event::Exec(Exec {
                    tgid: raw.tgid,
                    comm: comm_string(&raw.comm),
                    ts_ns: raw.ts_ns,
                    memory_cgroup_id: (raw.cgroup_id != 0).then_some(raw.cgroup_id),
                })
            }
            EventKind::AddressSpaceGone => Event::AddressSpaceGone(record(bytes, kind)?),
            EventKind::Spawn => Event::Spawn(record(bytes, kind)?),
            EventKind::Totals => Event::Totals(Box::new(record(bytes, kind)?)),
            EventKind::StackSeen => {
                let raw: StackSeen = record(bytes, kind)?;
                Event::StackSeen(raw.stack)
            }
            EventKind::Kswapd => {
                let raw: KswapdEvent = record(bytes, kind)?;
                Event::Kswapd(Kswapd {
                    nid: raw.nid,
                    awake: raw.awake != 0,
                    order: raw.order,
                    ts_ns: raw.ts_ns,
                })
            }
        },
    )
}

/// The record of type `T` at the start of `bytes`, which must be long enough.
fn record<T: Record>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    debug_assert!(T::KINDS.iter().any(|&k| k as u32 == kind));
    T::read_from_prefix(bytes)
        .map(|(record, _rest)| record)
        .map_err(|_| DecodeError::Truncated {
            kind,
            len: bytes.len(),
        })
}

fn stall(raw: &ReclaimStall, kind: ReclaimKind) -> Stall {
    Stall {
        tgid: raw.tgid,
        tid: raw.tid,
        thread_comm: comm_string(&raw.comm),
        kind,
        order: raw.order,
        gfp_flags: raw.gfp_flags,
        start_ns: raw.start_ns,
        latency_ns: raw.latency_ns,
        nr_reclaimed: raw.nr_reclaimed,
        nr_scanned: raw.nr_scanned,
    }
}

/// The kernel side marks fields this kernel lacks with the type's extreme value.
fn known(value: u64) -> Option<u64> {
    (value != u64::MAX).then_some(value)
}

fn oom_kill(raw: &OomVictim) -> OomKill {
    OomKill {
        pid: raw.pid,
        tid: raw.pid,
        comm: comm_string(&raw.comm),
        trigger_pid: raw.trigger_tgid,
        trigger_tid: raw.trigger_tid,
        trigger_comm: comm_string(&raw.trigger_comm),
        uid: (raw.uid != u32::MAX).then_some(raw.uid),
        oom_score_adj: (raw.oom_score_adj != i32::from(i16::MIN)).then_some(raw.oom_score_adj),
        total_vm_kb: known(raw.total_vm_kb),
        anon_rss_kb: known(raw.anon_rss_kb),
        file_rss_kb: known(raw.file_rss_kb),
        shmem_rss_kb: known(raw.shmem_rss_kb),
        pgtables_kb: known(raw.pgtables_kb),
        ts_ns: raw.ts_ns,
        cgroup: None,
        cgroup_of: None,
        container: None,
        pod: None,
        trigger_memcg_id: (raw.trigger_memcg_id != 0).then_some(raw.trigger_memcg_id),
        reaper: ReaperOutcome::default(),
    }
}

fn madvise(raw: &SyscallEvent, page_size: u64) -> Madvise {
    let errno = (raw.ret < 0).then(|| -raw.ret as i32);
    let (start, len, advice, pidfd) = if raw.kind == EventKind::ProcessMadvise as u32 {
        // process_madvise(pidfd, iovec, vlen, advice, flags) returns the bytes advised.
        let len = if raw.ret > 0 { raw.ret as u64 } else { 0 };
        (0, len, raw.args[3] as u32, Some(raw.args[0] as i32))
    } else {
        // madvise(start, len, advice): the kernel rounds len up to whole pages.
        (
            raw.args[0],
            round_up(raw.args[1], page_size),
            raw.args[2] as u32,
            None,
        )
    };
    Madvise {
        tgid: raw.tgid,
        tid: raw.tid,
        caller: raw.tgid,
        thread_comm: comm_string(&raw.comm),
        enter_ns: raw.enter_ns,
        exit_ns: raw.exit_ns,
        start,
        len,
        advice,
        errno,
        pidfd,
        target_known: pidfd.is_none(),
    }
}

fn mapping(raw: &SyscallEvent, page_size: u64) -> Mapping {
    let mut errno = (raw.ret < 0).then(|| -raw.ret as i32);
    let result = if raw.ret < 0 { 0 } else { raw.ret as u64 };
    let a = raw.args;
    let op = match EventKind::from_u32(raw.kind) {
        Some(EventKind::Mmap) => MapOp::Mmap {
            addr: result,
            len: round_up(a[1], page_size),
            kind: MapKind::from_flags(a[3]),
            prot: a[2],
            fd: a[4] as i32,
        },
        Some(EventKind::Munmap) => MapOp::Munmap {
            addr: a[0],
            len: round_up(a[1], page_size),
        },
        Some(EventKind::Mremap) => MapOp::Mremap {
            old_addr: a[0],
            old_len: round_up(a[1], page_size),
            new_len: round_up(a[2], page_size),
            new_addr: result,
        },
        _ => {
            // brk never returns an error: it returns the unchanged break instead.
            let requested = a[0];
            if requested != 0 && result != requested {
                errno = Some(libc::ENOMEM);
            }
            MapOp::Brk {
                requested,
                result: raw.ret as u64,
            }
        }
    };
    Mapping {
        tgid: raw.tgid,
        tid: raw.tid,
        thread_comm: comm_string(&raw.comm),
        enter_ns: raw.enter_ns,
        exit_ns: raw.exit_ns,
        op,
        errno,
    }
}

fn fault(raw: &FaultEvent) -> Fault {
    Fault {
        tgid: raw.tgid,
        tid: raw.tid,
        ts_ns: raw.ts_ns,
        address: raw.address,
        ip: raw.ip,
        protection: raw.error_code & X86_PF_PROTECTION != 0,
        write: raw.error_code & X86_PF_WRITE != 0,
        fetch: raw.error_code & X86_PF_FETCH != 0,
    }
}

fn round_up(len: u64, page_size: u64) -> u64 {
    page_round_up(len, page_size)
}

/// A NUL-padded kernel `comm` as text.
pub fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// A completed madvise call by `pid`'s main thread, for unit tests of what consumes events.
#[cfg(test)]
pub fn test_madvise(pid: u32, advice: u32, len: u64, errno: Option<i32>) -> Event {
    Event::Madvise(Madvise {
        tgid: pid,
        tid: pid,
        caller: pid,
        thread_comm: "test".into(),
        enter_ns: 0,
        exit_ns: 0,
        start: 0,
        len,
        advice,
        errno,
        pidfd: None,
        target_known: true,
    })
}

/// A thread's exit record as tests need it: `tid` of `tgid`, not the last, nothing read.
#[cfg(test)]
pub fn thread_exit(tgid: u32, tid: u32) -> ThreadExit {
    ThreadExit {
        kind: EventKind::ThreadExit as u32,
        tgid,
        tid,
        group_dead: 0,
        process_exiting: 0,
        _reserved: 0,
        min_flt: 0,
        maj_flt: 0,
        process_start_ns: 0,
        cgroup_id: 0,
        comm: [0; 16],
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::advice;

    use super::*;

    fn raw(kind: EventKind, args: [u64; 6], ret: i64) -> Vec<u8> {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"work");
        let event = SyscallEvent {
            kind: kind as u32,
            tgid: 10,
            tid: 11,
            _pad: 0,
            enter_ns: 100,
            exit_ns: 250,
            args,
            ret,
            comm,
        };
        zerocopy::IntoBytes::as_bytes(&event).to_vec()
    }

    #[test]
    fn madvise_length_is_rounded_to_pages() {
        let bytes = raw(
            EventKind::Madvise,
            [0x1000, 5000, advice::FREE as u64, 0, 0, 0],
            0,
        );
        let Event::Madvise(m) = decode(&bytes, 4096).unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.start, m.len, m.advice, m.errno),
            (0x1000, 8192, advice::FREE, None)
        );
        assert_eq!((m.tgid, m.tid, m.caller), (10, 11, 10));
        assert_eq!(m.thread_comm, "work");
        assert_eq!(m.pidfd, None);
    }

    #[test]
    fn failed_call_keeps_errno() {
        let bytes = raw(
            EventKind::Madvise,
            [0x1000, 4096, advice::FREE as u64, 0, 0, 0],
            -22,
        );
        let Event::Madvise(m) = decode(&bytes, 4096).unwrap() else {
            panic!()
        };
        assert_eq!(m.errno, Some(libc::EINVAL));
    }

    #[test]
    fn process_madvise_uses_returned_bytes() {
        let bytes = raw(
            EventKind::ProcessMadvise,
            [7, 0xdead, 2, advice::PAGEOUT as u64, 0, 0],
            65536,
        );
        let Event::Madvise(m) = decode(&bytes, 4096).unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.len, m.advice, m.pidfd),
            (65536, advice::PAGEOUT, Some(7))
        );
    }

    #[test]
    fn mmap_kinds_from_flags() {
        let anon_private = (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE) as u64;
        let bytes = raw(
            EventKind::Mmap,
            [0, 5000, 3, anon_private, u64::MAX, 0],
            0x7f00_0000_0000,
        );
        let Event::Mapping(m) = decode(&bytes, 4096).unwrap() else {
            panic!()
        };
        assert_eq!(
            m.op,
            MapOp::Mmap {
                addr: 0x7f00_0000_0000,
                len: 8192,
                kind: MapKind::AnonPrivate,
                prot: 3,
                fd: -1
            }
        );
        assert_eq!(
            MapKind::from_flags((libc::MAP_ANONYMOUS | libc::MAP_SHARED) as u64),
            MapKind::AnonShared
        );
        assert_eq!(
            MapKind::from_flags(libc::MAP_SHARED_VALIDATE as u64),
            MapKind::FileShared
        );
        assert_eq!(
            MapKind::from_flags(libc::MAP_PRIVATE as u64),
            MapKind::FilePrivate
        );
    }

    #[test]
    fn failed_mmap_and_brk() {
        let bytes = raw(EventKind::Mmap, [0, 4096, 3, 0x22, u64::MAX, 0], -12);
        let Event::Mapping(m) = decode(&bytes, 4096).unwrap() else {
            panic!()
        };
        assert_eq!(m.errno, Some(libc::ENOMEM));
        // brk reports failure by returning the old break.
        let bytes = raw(EventKind::Brk, [0x60_0000, 0, 0, 0, 0, 0], 0x50_0000);
        let Event::Mapping(m) = decode(&bytes, 4096).unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.errno, m.op),
            (
                Some(libc::ENOMEM),
                MapOp::Brk {
                    requested: 0x60_0000,
                    result: 0x50_0000
                }
            )
        );
        // A query (brk(0)) never fails.
        let bytes = raw(EventKind::Brk, [0, 0, 0, 0, 0, 0], 0x50_0000);
        let Event::Mapping(m) = decode(&bytes, 4096).unwrap() else {
            panic!()
        };
        assert_eq!(m.errno, None);
    }

    fn bytes_of<T: zerocopy::IntoBytes + zerocopy::Immutable>(value: &T) -> Vec<u8> {
        value.as_bytes().to_vec()
    }

    #[test]
    fn stall_and_oom_records() {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"cat");
        let stall = ReclaimStall {
            kind: EventKind::ReclaimStall as u32,
            tgid: 7,
            tid: 8,
            reclaim_kind: ReclaimKind::Memcg as u32,
            order: 0,
            _pad: 0,
            gfp_flags: 0xcc0,
            start_ns: 5,
            latency_ns: 12_345,
            nr_reclaimed: 32,
            nr_scanned: 40,
            comm,
        };
        let Event::Stall(s) = decode(&bytes_of(&stall), 4096).unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                s.tgid,
                s.tid,
                s.kind,
                s.latency_ns,
                s.nr_reclaimed,
                s.nr_scanned
            ),
            (7, 8, ReclaimKind::Memcg, 12_345, 32, 40)
        );
        assert_eq!(s.thread_comm, "cat");
        assert_eq!(Event::Stall(s).process(), Some(7));

        let oom = OomVictim {
            kind: EventKind::OomKill as u32,
            pid: 99,
            trigger_tgid: 98,
            trigger_tid: 98,
            uid: 0,
            oom_score_adj: i32::from(i16::MIN),
            ts_ns: 1,
            total_vm_kb: 1000,
            anon_rss_kb: 900,
            file_rss_kb: 4,
            shmem_rss_kb: u64::MAX,
            pgtables_kb: 8,
            trigger_memcg_id: 0,
            comm,
            trigger_comm: comm,
        };
        let Event::OomKill(o) = decode(&bytes_of(&oom), 4096).unwrap() else {
            panic!()
        };
        assert_eq!(
            (o.pid, o.anon_rss_kb, o.shmem_rss_kb),
            (99, Some(900), None)
        );
        assert_eq!((o.uid, o.oom_score_adj), (Some(0), None));
        // The victim's cgroup names its container.
        let mut o = o;
        let id = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";
        o.learn(VictimFacts {
            tgid: Some(99),
            cgroup: Some((format!("/libpod_parent/libpod-{id}"), CgroupOf::Victim)),
        });
        assert_eq!(
            o.container.as_ref().map(|c| c.to_string()),
            Some("podman container 4f797c539e6c".to_owned())
        );
        assert_eq!(o.pod, None);
        let event = Event::OomKill(o);
        assert_eq!((event.process(), event.tgid()), (None, 99));
    }

    #[test]
    fn bad_records_are_errors() {
        assert_eq!(
            decode(&[1, 0], 4096),
            Err(DecodeError::Truncated { kind: 0, len: 2 })
        );
        assert_eq!(
            decode(&[1, 0, 0, 0, 9], 4096),
            Err(DecodeError::Truncated { kind: 1, len: 5 })
        );
        assert_eq!(
            decode(&[99, 0, 0, 0], 4096),
            Err(DecodeError::UnknownKind(99))
        );
    }
}
