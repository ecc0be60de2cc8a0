//! `--json`: JSON Lines. Every line is one [`Line`], tagged by `type`; the JSON Schema in
//! `schema/memtrace.schema.json` is generated from these types (`cargo xtask schema`) and a
//! test fails when the checked-in copy is stale.

use std::collections::BTreeMap;

use memtrace_common::{
    events::{exit::GROUP_DEAD_UNKNOWN, oom::ReaperPhase},
    lost::Lost,
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Serialize, Serializer, ser::SerializeMap as _};

use crate::{
    analysis::{
        ByName, Name,
        advice::{AdviceView, advice_name},
        cgroups::{CgroupView, TotalsView},
        golang::verdict::Verdict,
        groups::GroupView,
        process::{ProcessView, StallView},
        snapshot::{KswapdView, Snapshot, StalledView},
    },
    kernel::{LostCounts, gfp::GfpNames},
    model::{
        event::{
            Event, Exec, Fault, Madvise, MapKind, MapOp, Mapping, OomKill, OomReaper, Stall,
            ThreadExit,
        },
        reclaim::Interval,
    },
    stop::StopReason,
};
use memtrace_common::advice;
use memtrace_common::events::stall::ReclaimKind;

/// The schema version every `start` and summary line carries. Fields may be added within a
/// version; renaming or removing one bumps it.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of `--json` output.
#[derive(Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schemars(
    title = "memtrace --json output, schema 1",
    description = "One JSON object per line (JSON Lines). Every line has a `type`. The first line is `start`, the last `summary` (`reclaim_summary` for `memtrace reclaim --json`, one `go_verdict` for `memtrace go --json`); events come in between as they complete. Sizes are exact byte counts, times nanoseconds (CLOCK_MONOTONIC for timestamps). Fields may be added within schema 1; renaming or removing one bumps it."
)]
pub enum Line<'a> {
    /// The first line: what is traced.
    Start(Start<'a>),
    /// A completed `madvise` call.
    Madvise(Syscall<'a, MadviseCall>),
    /// A completed `process_madvise` call, charged to its target.
    ProcessMadvise(Syscall<'a, MadviseCall>),
    Mmap(Syscall<'a, MmapCall>),
    Munmap(Syscall<'a, MunmapCall>),
    Mremap(Syscall<'a, MremapCall>),
    Brk(Syscall<'a, BrkCall>),
    /// A user-mode page fault (`--fault-events`).
    Fault(&'a Fault),
    /// A traced thread exited, with its final fault counters.
    ThreadExit(ThreadExitLine),
    /// A traced process called exec: its new name.
    Exec(&'a Exec),
    /// A direct or memcg reclaim stall of a traced thread.
    ReclaimStall(StallLine<'a>),
    /// The OOM killer chose a victim (whoever it is).
    OomKill(&'a OomKill),
    /// The OOM reaper acted on a victim.
    OomReaper(ReaperLine),
    /// `memtrace reclaim`: the stalls of one interval.
    ReclaimInterval(IntervalLine),
    /// The last line of the default report.
    Summary(Summary<'a>),
    /// The last line of `memtrace reclaim`.
    ReclaimSummary(ReclaimSummary<'a>),
    /// `memtrace go`: the verdict.
    GoVerdict(&'a Verdict),
}

impl Line<'_> {
    /// The line as text (serializing these types cannot fail: no maps with non-string keys).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The schema of every line, as checked in at `schema/memtrace.schema.json` (written by the
/// test below, which `cargo xtask schema` runs).
#[cfg(test)]
pub fn schema() -> Schema {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Line<'static>>();
    schema.insert(
        "$id".into(),
        format!("memtrace/schema/{SCHEMA_VERSION}").into(),
    );
    schema
}

/// The `schema` field: always [`SCHEMA_VERSION`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SchemaVersion;

impl Serialize for SchemaVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(SCHEMA_VERSION)
    }
}

impl JsonSchema for SchemaVersion {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SchemaVersion".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "const": SCHEMA_VERSION })
    }
}

#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Start<'a> {
    pub schema: SchemaVersion,
    /// memtrace's version.
    pub version: &'static str,
    /// `--pid` values; empty when tracing every process.
    pub pids: &'a [u32],
    /// How the memory syscalls are hooked.
    pub syscall_hooks: SyscallHooks,
}

impl<'a> Start<'a> {
    pub fn line(pids: &'a [u32], syscall_hooks: SyscallHooks) -> Line<'a> {
        Line::Start(Self {
            schema: SchemaVersion,
            version: env!("CARGO_PKG_VERSION"),
            pids,
            syscall_hooks,
        })
    }
}

/// How the memory syscalls are hooked: BPF trampolines (fentry/fexit on each syscall's entry
/// point, the others untouched) where the kernel allows, else their tracepoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyscallHooks {
    Trampolines,
    Tracepoints,
    /// Some syscalls on each (an entry point missing on this kernel).
    Mixed,
    /// This mode hooks no syscall (`memtrace reclaim`).
    None,
}

/// What every system call line has, and the call's own fields.
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Syscall<'a, T> {
    /// The process charged (the caller; for process_madvise the target).
    pub pid: u32,
    /// The calling thread.
    pub tid: u32,
    /// The calling thread's name.
    pub comm: &'a str,
    /// At entry.
    pub ts_ns: u64,
    pub latency_ns: u64,
    /// Null on success.
    pub errno: Option<i32>,
    #[serde(flatten)]
    pub call: T,
}

#[derive(Serialize, JsonSchema)]
pub struct MadviseCall {
    /// The calling process (differs from pid only for process_madvise on another process).
    pub caller: u32,
    /// Address; 0 for process_madvise.
    pub start: u64,
    /// Bytes, rounded up to whole pages; for process_madvise the count it returned.
    pub len: u64,
    pub advice: u32,
    /// FREE, DONTNEED, …; the number as text when Linux does not define it.
    pub advice_name: String,
    /// True for DONTNEED, DONTNEED_LOCKED, FREE, REMOVE, PAGEOUT.
    pub release: bool,
}

#[derive(Serialize, JsonSchema)]
pub struct MmapCall {
    /// Mapped address; 0 on failure.
    pub addr: u64,
    /// Bytes, page-rounded.
    pub len: u64,
    pub kind: MapKind,
    pub prot: u64,
    /// -1 for anonymous mappings.
    pub fd: i32,
}

#[derive(Serialize, JsonSchema)]
pub struct MunmapCall {
    pub addr: u64,
    /// Bytes, page-rounded.
    pub len: u64,
}

#[derive(Serialize, JsonSchema)]
pub struct MremapCall {
    pub old_addr: u64,
    pub old_len: u64,
    pub new_len: u64,
    /// Where the mapping ended up; 0 on failure.
    pub new_addr: u64,
}

#[derive(Serialize, JsonSchema)]
pub struct BrkCall {
    /// 0 is a query.
    pub requested: u64,
    /// The break after the call.
    pub result: u64,
}

#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThreadExitLine {
    pub pid: u32,
    pub tid: u32,
    /// Whether it was the last thread of its process; null before Linux 6.18, whose
    /// tracepoint does not say.
    pub last_thread: Option<bool>,
    /// Whether every thread of its process had begun to exit (the process is gone; before
    /// Linux 6.18 this is what tells it, and two threads exiting at once may both say so);
    /// null when this kernel's BTF does not say where to read it.
    pub process_exiting: Option<bool>,
    pub minflt: u64,
    pub majflt: u64,
    /// The id of the thread's memory cgroup as it exited: the inode number of the cgroup's
    /// directory in the hierarchy that holds the memory controller (cgroup v2: the thread's
    /// own cgroup; v1: its cgroup in the memory hierarchy); null when unknown.
    pub memory_cgroup_id: Option<u64>,
}

#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StallLine<'a> {
    pub pid: u32,
    pub tid: u32,
    /// The stalled thread's name.
    pub comm: &'a str,
    pub kind: Name<ReclaimKind>,
    /// Allocation order; -1 when the kernel's tracepoint lacks it.
    #[schemars(range(min = -1))]
    pub order: i32,
    pub gfp_flags: u64,
    /// gfp_flags decoded with this kernel's flag names.
    pub gfp: String,
    /// At the stall's begin.
    pub ts_ns: u64,
    pub latency_ns: u64,
    /// Pages.
    pub nr_reclaimed: u64,
    /// Inactive-LRU pages scanned during the stall.
    pub nr_scanned: u64,
}

#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReaperLine {
    pub pid: u32,
    pub phase: Name<ReaperPhase>,
    pub ts_ns: u64,
}

#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntervalLine {
    pub elapsed_ns: u64,
    pub stalls: Vec<IntervalStalls>,
    pub kswapd_wakes: u64,
}

/// One process's stalls of one kind in one interval.
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntervalStalls {
    pub pid: u32,
    pub comm: Option<String>,
    pub kind: Name<ReclaimKind>,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub nr_reclaimed: u64,
}

impl IntervalLine {
    /// `comm` names a process, if known.
    pub fn new(interval: &Interval, elapsed_ns: u64, comm: impl Fn(u32) -> Option<String>) -> Self {
        Self {
            elapsed_ns,
            stalls: interval
                .stalls
                .iter()
                .map(|(&(pid, kind), s)| IntervalStalls {
                    pid,
                    comm: comm(pid),
                    kind: Name(kind),
                    count: s.count,
                    total_ns: s.total_ns,
                    max_ns: s.max_ns,
                    nr_reclaimed: s.nr_reclaimed,
                })
                .collect(),
            kswapd_wakes: interval.kswapd_wakes,
        }
    }
}

/// Records the kernel side dropped: `total`, then per reason one count per CPU.
pub struct LostView<'a>(pub &'a LostCounts);

impl Serialize for LostView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1 + Lost::COUNT))?;
        map.serialize_entry("total", &self.0.total())?;
        for (why, per_cpu) in self.0.iter() {
            map.serialize_entry(why.name(), per_cpu)?;
        }
        map.end()
    }
}

impl JsonSchema for LostView<'_> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Lost".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let per_cpu = generator.subschema_for::<Vec<u64>>();
        let mut properties = serde_json::Map::new();
        properties.insert("total".into(), generator.subschema_for::<u64>().into());
        for why in Lost::ALL {
            properties.insert(why.name().into(), per_cpu.clone().into());
        }
        let required: Vec<&str> = std::iter::once("total")
            .chain(Lost::ALL.iter().map(|why| why.name()))
            .collect();
        json_schema!({
            "description": "Records the kernel side dropped, per reason one count per CPU; non-zero means undercounts.",
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }
}

/// An entry of a summary's list that carries its own line type.
#[derive(Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OomKillEntry<'a> {
    OomKill(&'a OomKill),
}

#[derive(Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GoVerdictEntry<'a> {
    GoVerdict(&'a Verdict),
}

#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Summary<'a> {
    pub schema: SchemaVersion,
    pub duration_ns: u64,
    pub stop_reason: StopReason,
    pub lost: LostView<'a>,
    /// Best first by --sort.
    pub processes: &'a [ProcessView],
    /// process_madvise calls whose target could not be resolved.
    pub unattributed: &'a [AdviceView],
    /// Exited processes no longer listed in `processes`, to keep memory bounded (system-wide
    /// runs past `--max-processes`): what they counted is in `totals` and `cgroups`.
    pub forgotten_processes: u64,
    /// Every process `--comm` selects, the ones no longer listed included.
    pub totals: &'a TotalsView,
    /// The same per cgroup, in cgroup order (unknown last).
    pub cgroups: &'a [CgroupView],
    /// Why every process's `rss.external_drop` is zero although memtrace counted pages taken:
    /// it counted more than the kernel reclaimed and reaped over the window. Null otherwise.
    pub rss_taken_withheld: Option<&'a str>,
    /// Present when a traced pid is a Go binary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub go_verdicts: Vec<GoVerdictEntry<'a>>,
    /// The most recent OOM kills of the window (up to 64), traced process or not.
    pub oom_kills: Vec<OomKillEntry<'a>>,
    /// Every OOM kill of the window.
    pub oom_kills_total: u64,
    /// With `--by container|cgroup`: the processes grouped, each group with its memory
    /// cgroup's own accounting; absent otherwise.
    #[serde(default, skip_serializing_if = "<[GroupView]>::is_empty")]
    pub groups: &'a [GroupView],
}

impl<'a> Summary<'a> {
    pub fn line(snapshot: &'a Snapshot, stop_reason: StopReason) -> Line<'a> {
        Line::Summary(Self {
            schema: SchemaVersion,
            duration_ns: snapshot.elapsed_ns,
            stop_reason,
            lost: LostView(&snapshot.lost),
            processes: &snapshot.processes,
            unattributed: &snapshot.unattributed,
            forgotten_processes: snapshot.forgotten,
            totals: &snapshot.totals,
            cgroups: &snapshot.cgroups,
            rss_taken_withheld: snapshot.taken_withheld.as_deref(),
            go_verdicts: snapshot
                .go_verdicts
                .iter()
                .map(GoVerdictEntry::GoVerdict)
                .collect(),
            oom_kills: oom_entries(snapshot),
            oom_kills_total: snapshot.oom_kills_total,
            groups: &snapshot.groups,
        })
    }
}

#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReclaimSummary<'a> {
    pub schema: SchemaVersion,
    pub duration_ns: u64,
    pub stop_reason: StopReason,
    pub system_wide: bool,
    /// Records dropped in the kernel (streamed stalls undercount; histograms do not).
    pub lost: u64,
    /// The most recent OOM kills (up to 64).
    pub oom_kills: Vec<OomKillEntry<'a>>,
    /// Every OOM kill of the window.
    pub oom_kills_total: u64,
    /// Every stall of the traced processes (all processes without --pid).
    pub stalls: &'a ByName<ReclaimKind, Option<StallView>>,
    /// Processes with stalls, most stall time first, then --pid targets without any.
    pub processes: &'a [StalledView],
    pub kswapd: &'a KswapdView,
    /// Change of each reclaim counter of /proc/vmstat over the window.
    pub vmstat_delta: &'a BTreeMap<String, i64>,
}

impl<'a> ReclaimSummary<'a> {
    pub fn line(snapshot: &'a Snapshot, stop_reason: StopReason) -> Line<'a> {
        Line::ReclaimSummary(Self {
            schema: SchemaVersion,
            duration_ns: snapshot.elapsed_ns,
            stop_reason,
            system_wide: snapshot.system_wide,
            lost: snapshot.lost.total(),
            oom_kills: oom_entries(snapshot),
            oom_kills_total: snapshot.oom_kills_total,
            stalls: &snapshot.system_stalls,
            processes: &snapshot.stalled,
            kswapd: &snapshot.kswapd,
            vmstat_delta: &snapshot.vmstat_delta,
        })
    }
}

fn oom_entries(snapshot: &Snapshot) -> Vec<OomKillEntry<'_>> {
    snapshot
        .oom_kills
        .iter()
        .map(OomKillEntry::OomKill)
        .collect()
}

/// The line for one event, or `None` for events that are summed up rather than streamed
/// (kswapd state changes become active periods, a torn-down address space's taken pages join
/// its process's RSS, a new task with a pid starts a new process entry).
pub fn event_line(event: &Event, gfp: &GfpNames) -> Option<String> {
    let line = match event {
        Event::Madvise(m) => madvise_line(m),
        Event::Mapping(m) => mapping_line(m),
        Event::Fault(f) => Line::Fault(f),
        Event::ThreadExit(t) => Line::ThreadExit(thread_exit_line(t)),
        Event::Exec(e) => Line::Exec(e),
        Event::Stall(s) => Line::ReclaimStall(stall_line(s, gfp)),
        Event::OomKill(o) => Line::OomKill(o),
        Event::OomReaper(r) => Line::OomReaper(reaper_line(r)),
        Event::Kswapd(_)
        | Event::AddressSpaceGone(_)
        | Event::Spawn(_)
        | Event::Totals(_)
        | Event::StackSeen(_) => {
            return None;
        }
    };
    Some(line.to_json())
}

fn syscall<'a, T>(
    (pid, tid, comm): (u32, u32, &'a str),
    (enter_ns, exit_ns): (u64, u64),
    errno: Option<i32>,
    call: T,
) -> Syscall<'a, T> {
    Syscall {
        pid,
        tid,
        comm,
        ts_ns: enter_ns,
        latency_ns: exit_ns.saturating_sub(enter_ns),
        errno,
        call,
    }
}

fn madvise_line(m: &Madvise) -> Line<'_> {
    let line = syscall(
        (m.tgid, m.tid, &m.thread_comm),
        (m.enter_ns, m.exit_ns),
        m.errno,
        MadviseCall {
            caller: m.caller,
            start: m.start,
            len: m.len,
            advice: m.advice,
            advice_name: advice_name(m.advice),
            release: advice::is_release(m.advice),
        },
    );
    if m.pidfd.is_some() {
        Line::ProcessMadvise(line)
    } else {
        Line::Madvise(line)
    }
}

fn mapping_line(m: &Mapping) -> Line<'_> {
    let who = (m.tgid, m.tid, m.thread_comm.as_str());
    let when = (m.enter_ns, m.exit_ns);
    match m.op {
        MapOp::Mmap {
            addr,
            len,
            kind,
            prot,
            fd,
        } => Line::Mmap(syscall(
            who,
            when,
            m.errno,
            MmapCall {
                addr,
                len,
                kind,
                prot,
                fd,
            },
        )),
        MapOp::Munmap { addr, len } => {
            Line::Munmap(syscall(who, when, m.errno, MunmapCall { addr, len }))
        }
        MapOp::Mremap {
            old_addr,
            old_len,
            new_len,
            new_addr,
        } => Line::Mremap(syscall(
            who,
            when,
            m.errno,
            MremapCall {
                old_addr,
                old_len,
                new_len,
                new_addr,
            },
        )),
        MapOp::Brk { requested, result } => {
            Line::Brk(syscall(who, when, m.errno, BrkCall { requested, result }))
        }
    }
}

fn thread_exit_line(t: &ThreadExit) -> ThreadExitLine {
    ThreadExitLine {
        pid: t.tgid,
        tid: t.tid,
        last_thread: (t.group_dead != GROUP_DEAD_UNKNOWN).then_some(t.group_dead != 0),
        process_exiting: (t.process_exiting != GROUP_DEAD_UNKNOWN)
            .then_some(t.process_exiting != 0),
        minflt: t.min_flt,
        majflt: t.maj_flt,
        memory_cgroup_id: (t.cgroup_id != 0).then_some(t.cgroup_id),
    }
}

fn stall_line<'a>(s: &'a Stall, gfp: &GfpNames) -> StallLine<'a> {
    StallLine {
        pid: s.tgid,
        tid: s.tid,
        comm: &s.thread_comm,
        kind: Name(s.kind),
        order: s.order,
        gfp_flags: s.gfp_flags,
        gfp: gfp.name(s.gfp_flags),
        ts_ns: s.start_ns,
        latency_ns: s.latency_ns,
        nr_reclaimed: s.nr_reclaimed,
        nr_scanned: s.nr_scanned,
    }
}

fn reaper_line(r: &OomReaper) -> ReaperLine {
    ReaperLine {
        pid: r.pid,
        phase: Name(r.phase),
        ts_ns: r.ts_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::test_madvise;

    #[test]
    fn event_line_has_decoded_advice() {
        let mut event = test_madvise(42, advice::FREE, 4096, None);
        if let Event::Madvise(m) = &mut event {
            (m.enter_ns, m.exit_ns) = (1_000, 1_500);
        }
        let line: serde_json::Value =
            serde_json::from_str(&event_line(&event, &GfpNames::default()).unwrap()).unwrap();
        assert_eq!(line["type"], "madvise");
        assert_eq!(line["advice_name"], "FREE");
        assert_eq!(line["release"], true);
        assert_eq!(line["latency_ns"], 500);
        assert_eq!(line["errno"], serde_json::Value::Null);
    }

    #[test]
    fn fault_lines_are_flat_objects() {
        let fault = Event::Fault(Fault {
            tgid: 12,
            tid: 13,
            ts_ns: u64::MAX,
            address: 0x7fff_0000_1000,
            ip: 0x40_1000,
            write: true,
            protection: false,
            fetch: true,
        });
        let line = event_line(&fault, &GfpNames::default()).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            serde_json::json!({
                "type": "fault", "pid": 12, "tid": 13, "ts_ns": u64::MAX,
                "address": 0x7fff_0000_1000_u64, "ip": 0x40_1000, "write": true,
                "protection": false, "fetch": true,
            })
        );
    }

    /// Every lost reason is a key of the JSON, by construction (a reason once went missing
    /// from the text and the metrics while still counted in the total).
    #[test]
    fn every_lost_reason_is_shown() {
        let mut lost = LostCounts::default();
        for (i, &why) in Lost::ALL.iter().enumerate() {
            lost = lost.with(why, vec![0, i as u64 + 1]);
        }
        let json = serde_json::to_value(LostView(&lost)).unwrap();
        for (i, why) in Lost::ALL.iter().enumerate() {
            assert_eq!(json[why.name()], serde_json::json!([0, i + 1]), "{why:?}");
        }
        assert_eq!(json["total"], lost.total());
    }

    /// `schema/memtrace.schema.json` is generated from these types: regenerate it with
    /// `cargo xtask schema` (which runs this test with MEMTRACE_WRITE_SCHEMA=1).
    #[test]
    fn checked_in_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schema/memtrace.schema.json"
        );
        let generated = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
        if std::env::var_os("MEMTRACE_WRITE_SCHEMA").is_some() {
            std::fs::write(path, &generated).unwrap();
            return;
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "schema/memtrace.schema.json is stale: run `cargo xtask schema` and commit it"
        );
    }
}
