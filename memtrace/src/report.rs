//! What memtrace prints: the final text report, and JSON Lines (events and a summary).
//!
//! JSON schema version 1 (documented in README.md): every line is an object with a `type`.

use std::{collections::BTreeMap, fmt::Write as _};

use memtrace_common::advice;
use serde::Serialize;
use serde_json::json;

use crate::{
    attribution::{
        AdviceTotals, Attribution, CallBytes, MappingTotals, ProcessStats, RSS_MEMBER_NAMES, Rss,
    },
    cli::SortKey,
    events::{Event, Fault, Madvise, MapOp, Mapping},
    explain,
    gfp::GfpNames,
    golang::verdict::Verdict,
    procfs::SmapsRollup,
    reclaim::report::{self as reclaim_report, StallJson},
    tracer::LostCounts,
};

pub const SCHEMA: u32 = 1;

/// Why tracing stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Interrupted,
    Duration,
    TargetExited,
    OutputClosed,
    /// `memtrace go`: the release burst it waited for was seen.
    ReleaseSeen,
}

/// Which processes a report shows, in which order.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Only processes with one of these names (none: all).
    pub comms: Vec<String>,
    pub sort: SortKey,
    /// Show only the first N (text report, system-wide).
    pub top: Option<usize>,
    /// Whether fault counts were collected (else they are shown as unavailable).
    pub counts_faults: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            comms: Vec::new(),
            sort: SortKey::Released,
            top: None,
            counts_faults: true,
        }
    }
}

impl ReportOptions {
    /// Whether the process passes the --comm filter.
    pub fn shows(&self, attribution: &Attribution, pid: u32) -> bool {
        self.comms.is_empty()
            || attribution
                .process_by_pid(pid)
                .is_some_and(|p| self.comms.contains(&p.comm))
    }

    /// The processes to report, best first.
    pub fn select<'a>(&self, attribution: &'a Attribution) -> Vec<&'a ProcessStats> {
        let mut processes: Vec<&ProcessStats> = attribution
            .processes()
            .filter(|p| self.comms.is_empty() || self.comms.contains(&p.comm))
            .collect();
        // Stable: ties keep pid order.
        processes.sort_by_key(|p| std::cmp::Reverse(self.sort_value(p)));
        processes
    }

    fn sort_value(&self, p: &ProcessStats) -> u64 {
        match self.sort {
            SortKey::Released => p.released_bytes(),
            SortKey::Faults => (p.task_faults.minor() + p.task_faults.major()).max(p.faults.user),
            SortKey::Rss => p
                .smaps_last
                .map_or_else(|| p.rss.size.iter().flatten().sum(), |s| s.rss),
            SortKey::Mapped => {
                let m = &p.mappings;
                m.mapped_bytes() + m.brk_grow.bytes + m.mremap_grow.bytes
            }
        }
    }
}

#[derive(Serialize)]
pub struct StartLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: u32,
    version: &'static str,
    pids: &'a [u32],
}

impl<'a> StartLine<'a> {
    pub fn new(pids: &'a [u32]) -> Self {
        Self {
            kind: "start",
            schema: SCHEMA,
            version: env!("CARGO_PKG_VERSION"),
            pids,
        }
    }
}

/// One event as a JSON object.
pub fn event_json(event: &Event, gfp: &GfpNames) -> serde_json::Result<String> {
    serde_json::to_string(&match event {
        Event::Stall(s) => reclaim_report::stall_json(s, gfp),
        Event::OomKill(o) => reclaim_report::oom_json(o),
        Event::OomReaper(r) => reclaim_report::reaper_json(r),
        Event::Kswapd(k) => reclaim_report::kswapd_json(k),
        Event::Madvise(m) => madvise_json(m),
        Event::Mapping(m) => mapping_json(m),
        Event::Fault(f) => return Ok(fault_line(f)),
        Event::ThreadExit(t) => json!({
            "type": "thread_exit",
            "pid": t.tgid,
            "tid": t.tid,
            "last_thread": t.group_dead != 0,
            "minflt": t.min_flt,
            "majflt": t.maj_flt,
        }),
    })
}

fn madvise_json(m: &Madvise) -> serde_json::Value {
    json!({
        "type": if m.pidfd.is_some() { "process_madvise" } else { "madvise" },
        "pid": m.tgid,
        "tid": m.tid,
        "caller": m.caller,
        "comm": m.thread_comm,
        "ts_ns": m.enter_ns,
        "latency_ns": m.exit_ns.saturating_sub(m.enter_ns),
        "start": m.start,
        "len": m.len,
        "advice": m.advice,
        "advice_name": advice_name(m.advice),
        "release": advice::is_release(m.advice),
        "errno": m.errno,
    })
}

fn mapping_json(m: &Mapping) -> serde_json::Value {
    let mut line = match m.op {
        MapOp::Mmap {
            addr,
            len,
            kind,
            prot,
            fd,
        } => json!({
            "type": "mmap", "addr": addr, "len": len, "kind": kind.name(), "prot": prot, "fd": fd,
        }),
        MapOp::Munmap { addr, len } => json!({ "type": "munmap", "addr": addr, "len": len }),
        MapOp::Mremap {
            old_addr,
            old_len,
            new_len,
            new_addr,
        } => json!({
            "type": "mremap", "old_addr": old_addr, "old_len": old_len,
            "new_len": new_len, "new_addr": new_addr,
        }),
        MapOp::Brk { requested, result } => {
            json!({ "type": "brk", "requested": requested, "result": result })
        }
    };
    let common = json!({
        "pid": m.tgid,
        "tid": m.tid,
        "comm": m.thread_comm,
        "ts_ns": m.enter_ns,
        "latency_ns": m.exit_ns.saturating_sub(m.enter_ns),
        "errno": m.errno,
    });
    if let (Some(line), serde_json::Value::Object(common)) = (line.as_object_mut(), common) {
        line.extend(common);
    }
    line
}

/// A fault event line, formatted directly: faults stream at up to a million a second, and
/// building a `serde_json::Value` per fault cost ~0.8 µs of memtrace's CPU each (measured by
/// `cargo xtask bench`). Keys in serde_json's (sorted) order, so lines read the same as before.
fn fault_line(f: &Fault) -> String {
    format!(
        "{{\"address\":{},\"fetch\":{},\"ip\":{},\"pid\":{},\"protection\":{},\"tid\":{},\"ts_ns\":{},\"type\":\"fault\",\"write\":{}}}",
        f.address, f.fetch, f.ip, f.tgid, f.protection, f.tid, f.ts_ns, f.write
    )
}

/// `FREE`, `DONTNEED`, …; a value Linux does not define is shown as its number.
pub fn advice_name(value: u32) -> String {
    advice::name(value).map_or_else(|| value.to_string(), str::to_owned)
}

#[derive(Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: u32,
    duration_ns: u64,
    stop_reason: StopReason,
    lost: LostJson,
    processes: Vec<ProcessJson>,
    /// process_madvise calls whose target could not be resolved.
    unattributed: Vec<AdviceJson>,
    /// Exited processes dropped from the totals to bound memory (long system-wide runs).
    forgotten_processes: u64,
    /// The Go release-mode verdict of each traced pid that is a Go binary.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub go_verdicts: Vec<Verdict>,
    /// Every OOM kill during the window, traced process or not.
    oom_kills: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct LostJson {
    total: u64,
    ring_full: Vec<u64>,
    pending_full: Vec<u64>,
    fault_table_full: Vec<u64>,
    targets_full: Vec<u64>,
    reclaim_pending_full: Vec<u64>,
}

#[derive(Serialize)]
struct ProcessJson {
    pid: u32,
    comm: String,
    released_bytes: u64,
    advised_by: Vec<u32>,
    madvise: Vec<AdviceJson>,
    mappings: MappingsJson,
    faults: FaultsJson,
    rss: RssJson,
    smaps_rollup: SmapsJson,
    /// The report's plain-English reading of the numbers above, one sentence per entry.
    explanation: Vec<String>,
    /// Direct and memcg reclaim stalls (`null` per kind when none).
    reclaim: BTreeMap<&'static str, Option<StallJson>>,
}

/// One advice value's totals, as the summary and the Go verdict list them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdviceJson {
    pub advice: u32,
    pub name: String,
    pub release: bool,
    pub calls: u64,
    pub failed: u64,
    pub bytes: u64,
}

#[derive(Serialize)]
struct CallBytesJson {
    calls: u64,
    bytes: u64,
}

impl From<CallBytes> for CallBytesJson {
    fn from(c: CallBytes) -> Self {
        Self {
            calls: c.calls,
            bytes: c.bytes,
        }
    }
}

#[derive(Serialize)]
struct MappingsJson {
    mmap: BTreeMap<&'static str, CallBytesJson>,
    munmap: CallBytesJson,
    mremap_grow: CallBytesJson,
    mremap_shrink: CallBytesJson,
    brk_grow: CallBytesJson,
    brk_shrink: CallBytesJson,
    brk_unknown: u64,
    failed: BTreeMap<&'static str, u64>,
    net_bytes: i128,
}

#[derive(Serialize)]
struct FaultsJson {
    /// From the task counters; `null` when never sampled.
    minor: Option<u64>,
    major: Option<u64>,
    /// User-mode faults counted in the kernel; `null` when page_fault_user could not attach.
    user: Option<u64>,
    user_write: Option<u64>,
    /// Individual fault events received (`--fault-events`).
    events: u64,
}

#[derive(Serialize)]
struct RssJson {
    file: Option<u64>,
    anon: Option<u64>,
    swap: Option<u64>,
    shmem: Option<u64>,
    external_drop: BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct SmapsJson {
    first: Option<SmapsRollup>,
    last: Option<SmapsRollup>,
}

impl Summary {
    pub fn new(
        attribution: &Attribution,
        options: &ReportOptions,
        lost: &LostCounts,
        duration_ns: u64,
        stop_reason: StopReason,
    ) -> Self {
        Self {
            kind: "summary",
            schema: SCHEMA,
            duration_ns,
            stop_reason,
            lost: LostJson {
                total: lost.total(),
                ring_full: lost.ring_full.clone(),
                pending_full: lost.pending_full.clone(),
                fault_table_full: lost.fault_table_full.clone(),
                targets_full: lost.targets_full.clone(),
                reclaim_pending_full: lost.reclaim_pending_full.clone(),
            },
            processes: options
                .select(attribution)
                .into_iter()
                .map(|p| process_json(p, options, attribution))
                .collect(),
            unattributed: advice_json(&attribution.unattributed),
            forgotten_processes: attribution.forgotten,
            go_verdicts: Vec::new(),
            oom_kills: reclaim_report::oom_kills_json(&attribution.reclaim),
        }
    }
}

fn process_json(
    p: &ProcessStats,
    options: &ReportOptions,
    attribution: &Attribution,
) -> ProcessJson {
    ProcessJson {
        pid: p.pid,
        comm: p.comm.clone(),
        released_bytes: p.released_bytes(),
        advised_by: p.advised_by.iter().copied().collect(),
        madvise: advice_json(&p.madvise),
        mappings: mappings_json(&p.mappings),
        faults: FaultsJson {
            minor: p.task_faults.known().then(|| p.task_faults.minor()),
            major: p.task_faults.known().then(|| p.task_faults.major()),
            user: options.counts_faults.then_some(p.faults.user),
            user_write: options.counts_faults.then_some(p.faults.write),
            events: p.fault_events,
        },
        rss: RssJson {
            file: p.rss.size[0],
            anon: p.rss.size[1],
            swap: p.rss.size[2],
            shmem: p.rss.size[3],
            external_drop: RSS_MEMBER_NAMES
                .iter()
                .copied()
                .zip(p.rss.external_drop)
                .collect(),
        },
        smaps_rollup: SmapsJson {
            first: p.smaps_first,
            last: p.smaps_last,
        },
        explanation: explain::explain(p, &attribution.reclaim),
        reclaim: reclaim_report::process_stalls_json(&attribution.reclaim, p.pid),
    }
}

fn mappings_json(m: &MappingTotals) -> MappingsJson {
    MappingsJson {
        mmap: m
            .mmap
            .iter()
            .map(|(kind, c)| (kind.name(), (*c).into()))
            .collect(),
        munmap: m.munmap.into(),
        mremap_grow: m.mremap_grow.into(),
        mremap_shrink: m.mremap_shrink.into(),
        brk_grow: m.brk_grow.into(),
        brk_shrink: m.brk_shrink.into(),
        brk_unknown: m.brk_unknown,
        failed: m.failed.clone(),
        net_bytes: m.net_bytes(),
    }
}

pub fn advice_json(by_advice: &BTreeMap<u32, AdviceTotals>) -> Vec<AdviceJson> {
    by_advice
        .iter()
        .map(|(&value, t)| AdviceJson {
            advice: value,
            name: advice_name(value),
            release: advice::is_release(value),
            calls: t.calls,
            failed: t.failed,
            bytes: t.bytes,
        })
        .collect()
}

/// The final report people read. `sections` (e.g. Go verdicts) go after the processes, before
/// the lost-events line that always ends it.
pub fn text(
    attribution: &Attribution,
    options: &ReportOptions,
    lost: &LostCounts,
    duration_ns: u64,
    stop_reason: StopReason,
    sections: &[String],
) -> String {
    let mut out = String::new();
    let secs = duration_ns as f64 / 1e9;
    let why = match stop_reason {
        StopReason::Interrupted => "interrupted",
        StopReason::Duration => "duration reached",
        StopReason::TargetExited => "traced process exited",
        StopReason::OutputClosed => "output closed",
        StopReason::ReleaseSeen => "releases seen",
    };
    let _ = writeln!(out, "memtrace report: {secs:.1} s traced ({why})");
    reclaim_report::oom_text(&mut out, &attribution.reclaim);
    let processes = options.select(attribution);
    let shown = options.top.unwrap_or(usize::MAX).min(processes.len());
    for p in &processes[..shown] {
        out.push('\n');
        process_text(&mut out, p, options);
        reclaim_report::process_stalls_text(&mut out, &attribution.reclaim, p.pid);
        explain_text(&mut out, p, &attribution.reclaim);
    }
    if shown < processes.len() {
        let more = processes.len() - shown;
        let _ = writeln!(
            out,
            "\n… and {more} more processes (see --top, --sort, --comm, or --json)"
        );
    }
    if !attribution.unattributed.is_empty() {
        let calls: u64 = attribution.unattributed.values().map(|t| t.calls).sum();
        let _ = writeln!(
            out,
            "\nprocess_madvise calls whose target could not be resolved: {calls} (not charged to any process)"
        );
    }
    if attribution.forgotten > 0 {
        let _ = writeln!(
            out,
            "\n{} exited processes were dropped from these totals to keep memtrace's memory bounded",
            attribution.forgotten
        );
    }
    for section in sections {
        out.push('\n');
        out.push_str(section.trim_end());
        out.push('\n');
    }
    out.push('\n');
    lost_text(&mut out, lost);
    out
}

fn process_text(out: &mut String, p: &ProcessStats, options: &ReportOptions) {
    let _ = writeln!(out, "pid {} ({})", p.pid, p.comm);
    madvise_text(out, p);
    mappings_text(out, &p.mappings);
    faults_text(out, p, options);
    rss_text(out, &p.rss);
    smaps_text(out, p);
}

fn madvise_text(out: &mut String, p: &ProcessStats) {
    if p.madvise.is_empty() {
        let _ = writeln!(out, "  madvise: no calls");
        return;
    }
    let _ = writeln!(
        out,
        "  {:<16} {:>10} {:>8} {:>12}",
        "madvise advice", "calls", "failed", "bytes"
    );
    for (&value, t) in &p.madvise {
        let kind = if advice::is_release(value) {
            "release"
        } else {
            "hint"
        };
        let _ = writeln!(
            out,
            "  {:<16} {:>10} {:>8} {:>12}  {kind}",
            advice_name(value),
            t.calls,
            t.failed,
            human_bytes(t.bytes)
        );
    }
    let parts: Vec<String> = p
        .madvise
        .iter()
        .filter(|(value, t)| advice::is_release(**value) && t.bytes > 0)
        .map(|(&value, t)| format!("{} {}", advice_name(value), human_bytes(t.bytes)))
        .collect();
    let _ = write!(out, "  released: {}", human_bytes(p.released_bytes()));
    if !parts.is_empty() {
        let _ = write!(out, " ({})", parts.join(", "));
    }
    out.push('\n');
    if !p.advised_by.is_empty() {
        let callers: Vec<String> = p.advised_by.iter().map(u32::to_string).collect();
        let _ = writeln!(
            out,
            "  advised by other processes (process_madvise): {}",
            callers.join(", ")
        );
    }
}

fn mappings_text(out: &mut String, m: &MappingTotals) {
    let calls: u64 = m.mmap.values().map(|c| c.calls).sum();
    let _ = write!(
        out,
        "  mappings: mmap {calls} calls {}",
        human_bytes(m.mapped_bytes())
    );
    let kinds: Vec<String> = m
        .mmap
        .iter()
        .map(|(kind, c)| format!("{} {}", kind.name().replace('_', " "), human_bytes(c.bytes)))
        .collect();
    if !kinds.is_empty() {
        let _ = write!(out, " ({})", kinds.join(", "));
    }
    let _ = write!(
        out,
        "; munmap {} calls {}",
        m.munmap.calls,
        human_bytes(m.munmap.bytes)
    );
    if m.brk_grow.calls + m.brk_shrink.calls + m.brk_unknown > 0 {
        let (grow, shrink) = (
            human_bytes(m.brk_grow.bytes),
            human_bytes(m.brk_shrink.bytes),
        );
        let _ = write!(out, "; brk +{grow} −{shrink}");
    }
    if m.mremap_grow.calls + m.mremap_shrink.calls > 0 {
        let (grow, shrink) = (
            human_bytes(m.mremap_grow.bytes),
            human_bytes(m.mremap_shrink.bytes),
        );
        let _ = write!(out, "; mremap +{grow} −{shrink}");
    }
    let _ = write!(out, "; net {}", signed_bytes(m.net_bytes()));
    if !m.failed.is_empty() {
        let failed: Vec<String> = m
            .failed
            .iter()
            .map(|(call, n)| format!("{call} {n}"))
            .collect();
        let _ = write!(out, "; failed: {}", failed.join(", "));
    }
    out.push('\n');
}

fn faults_text(out: &mut String, p: &ProcessStats, options: &ReportOptions) {
    let _ = write!(out, "  faults:");
    if p.task_faults.known() {
        let _ = write!(
            out,
            " {} minor, {} major;",
            p.task_faults.minor(),
            p.task_faults.major()
        );
    }
    if options.counts_faults {
        let _ = write!(
            out,
            " {} taken in user mode ({} on write)",
            p.faults.user, p.faults.write
        );
    } else {
        let _ = write!(
            out,
            " user-mode faults not counted (page_fault_user unavailable)"
        );
    }
    if p.fault_events > 0 {
        let _ = write!(out, "; {} fault events", p.fault_events);
    }
    out.push('\n');
}

fn rss_text(out: &mut String, rss: &Rss) {
    if rss.size.iter().all(Option::is_none) {
        return;
    }
    let sizes: Vec<String> = RSS_MEMBER_NAMES
        .iter()
        .zip(rss.size)
        .filter_map(|(name, size)| Some(format!("{name} {}", human_bytes(size?))))
        .collect();
    let _ = write!(out, "  rss (kernel counters, latest): {}", sizes.join(", "));
    let taken: Vec<String> = RSS_MEMBER_NAMES
        .iter()
        .zip(rss.external_drop)
        .filter(|(_, bytes)| *bytes > 0)
        .map(|(name, bytes)| format!("{name} {}", human_bytes(bytes)))
        .collect();
    if !taken.is_empty() {
        let _ = write!(
            out,
            "; taken by reclaim or the OOM reaper: {}",
            taken.join(", ")
        );
    }
    out.push('\n');
}

fn smaps_text(out: &mut String, p: &ProcessStats) {
    let (Some(first), Some(last)) = (p.smaps_first, p.smaps_last) else {
        return;
    };
    let change = |a: u64, b: u64| {
        if a == b {
            human_bytes(b)
        } else {
            format!("{} → {}", human_bytes(a), human_bytes(b))
        }
    };
    let _ = writeln!(
        out,
        "  smaps_rollup: Rss {}, Anonymous {}, LazyFree {}, AnonHugePages {}, Swap {}",
        change(first.rss, last.rss),
        change(first.anonymous, last.anonymous),
        change(first.lazy_free, last.lazy_free),
        change(first.anon_huge_pages, last.anon_huge_pages),
        change(first.swap, last.swap),
    );
}

/// The plain-English paragraph, wrapped, under the numbers it explains.
fn explain_text(out: &mut String, p: &ProcessStats, reclaim: &crate::reclaim::Reclaim) {
    const WIDTH: usize = 96;
    let mut line = String::from("  in short:");
    for word in explain::explain(p, reclaim).join(" ").split(' ') {
        if line.chars().count() + 1 + word.chars().count() > WIDTH {
            let _ = writeln!(out, "{line}");
            line = String::from("   ");
        }
        line.push(' ');
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

fn lost_text(out: &mut String, lost: &LostCounts) {
    if lost.total() == 0 {
        let _ = writeln!(out, "lost events: 0");
        return;
    }
    let per_cpu = |counts: &[u64]| {
        counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(cpu, n)| format!("cpu{cpu}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let parts: Vec<String> = [
        ("ring buffer full", &lost.ring_full),
        ("pairing table full", &lost.pending_full),
        ("fault table full", &lost.fault_table_full),
        ("target table full", &lost.targets_full),
    ]
    .into_iter()
    .filter(|(_, counts)| counts.iter().sum::<u64>() > 0)
    .map(|(why, counts)| {
        format!(
            "{why}: {} [{}]",
            counts.iter().sum::<u64>(),
            per_cpu(counts)
        )
    })
    .collect();
    let _ = writeln!(
        out,
        "lost events: {} ({}) — totals above are undercounts; retry with a larger --ring-size",
        lost.total(),
        parts.join("; ")
    );
}

/// Bytes in binary units, exact below 1 KiB: `512 B`, `204.0 KiB`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn signed_bytes(bytes: i128) -> String {
    let magnitude = human_bytes(u64::try_from(bytes.unsigned_abs()).unwrap_or(u64::MAX));
    if bytes < 0 {
        format!("−{magnitude}")
    } else {
        format!("+{magnitude}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fault_lines_are_what_serde_json_writes() {
        let fault = crate::events::Fault {
            tgid: 12,
            tid: 13,
            ts_ns: u64::MAX,
            address: 0x7fff_0000_1000,
            ip: 0x40_1000,
            write: true,
            protection: false,
            fetch: true,
        };
        let expected = serde_json::json!({
            "type": "fault", "pid": 12, "tid": 13, "ts_ns": u64::MAX,
            "address": 0x7fff_0000_1000_u64, "ip": 0x40_1000, "write": true,
            "protection": false, "fetch": true,
        });
        let line =
            super::event_json(&Event::Fault(fault), &crate::gfp::GfpNames::default()).unwrap();
        assert_eq!(line, serde_json::to_string(&expected).unwrap());
    }

    use super::*;
    use crate::events::Madvise;

    fn free_call(len: u64, errno: Option<i32>) -> Event {
        Event::Madvise(Madvise {
            tgid: 42,
            tid: 43,
            caller: 42,
            thread_comm: "worker".into(),
            enter_ns: 1_000,
            exit_ns: 1_500,
            start: 0x1000,
            len,
            advice: advice::FREE,
            errno,
            pidfd: None,
            target_known: true,
        })
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(208_896), "204.0 KiB");
        assert_eq!(human_bytes(512 << 20), "512.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(signed_bytes(-4096), "−4.0 KiB");
    }

    #[test]
    fn event_line_has_decoded_advice() {
        let line: serde_json::Value = serde_json::from_str(
            &event_json(&free_call(4096, None), &GfpNames::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(line["type"], "madvise");
        assert_eq!(line["advice_name"], "FREE");
        assert_eq!(line["release"], true);
        assert_eq!(line["latency_ns"], 500);
        assert_eq!(line["errno"], serde_json::Value::Null);
    }

    #[test]
    fn text_report_golden() {
        let mut a = Attribution::default();
        for _ in 0..51 {
            a.record(&free_call(4096, None));
        }
        a.record(&free_call(4096, Some(libc::EINVAL)));
        a.name(42, "workload");
        let lost = LostCounts {
            ring_full: vec![0, 3],
            ..LostCounts::default()
        };
        let report = text(
            &a,
            &ReportOptions::default(),
            &lost,
            2_500_000_000,
            StopReason::TargetExited,
            &["Go release mode\n(a verdict)".to_owned()],
        );
        assert_eq!(
            report,
            "memtrace report: 2.5 s traced (traced process exited)\n\
             \n\
             pid 42 (workload)\n\
             \x20 madvise advice        calls   failed        bytes\n\
             \x20 FREE                     52        1    204.0 KiB  release\n\
             \x20 released: 204.0 KiB (FREE 204.0 KiB)\n\
             \x20 mappings: mmap 0 calls 0 B; munmap 0 calls 0 B; net +0 B\n\
             \x20 faults: 0 taken in user mode (0 on write)\n\
             \x20 in short: 204.0 KiB was released with MADV_FREE: those pages stay in RSS as LazyFree until\n\
             \x20   memory pressure reclaims them. 1 madvise calls failed and released nothing.\n\
             \n\
             Go release mode\n\
             (a verdict)\n\
             \n\
             lost events: 3 (ring buffer full: 3 [cpu1=3]) — totals above are undercounts; retry with a larger --ring-size\n"
        );
    }

    #[test]
    fn top_and_sort_select_processes() {
        let mut a = Attribution::default();
        for (pid, faults) in [(1, 10), (2, 300), (3, 20)] {
            a.set_faults(
                pid,
                memtrace_common::FaultCounts {
                    user: faults,
                    write: 0,
                },
            );
            a.name(pid, &format!("p{pid}"));
        }
        let options = ReportOptions {
            sort: SortKey::Faults,
            top: Some(2),
            ..ReportOptions::default()
        };
        let pids: Vec<u32> = options.select(&a).iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![2, 3, 1]);
        let report = text(
            &a,
            &options,
            &LostCounts::default(),
            0,
            StopReason::Duration,
            &[],
        );
        assert!(report.contains("pid 2 (p2)") && report.contains("pid 3 (p3)"));
        assert!(!report.contains("pid 1 (p1)"));
        assert!(report.contains("… and 1 more processes"));
        let comm = ReportOptions {
            comms: vec!["p1".into()],
            ..ReportOptions::default()
        };
        assert_eq!(
            comm.select(&a).iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![1]
        );
    }

    #[test]
    fn summary_json_shape() {
        let mut a = Attribution::default();
        a.record(&free_call(8192, None));
        let summary = Summary::new(
            &a,
            &ReportOptions::default(),
            &LostCounts::default(),
            10,
            StopReason::Duration,
        );
        let v: serde_json::Value = serde_json::to_value(&summary).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["stop_reason"], "duration");
        assert_eq!(v["processes"][0]["released_bytes"], 8192);
        assert_eq!(v["processes"][0]["madvise"][0]["name"], "FREE");
        assert_eq!(v["processes"][0]["madvise"][0]["calls"], 1);
        assert_eq!(
            v["processes"][0]["faults"]["minor"],
            serde_json::Value::Null
        );
        assert_eq!(v["processes"][0]["faults"]["user"], 0);
        assert_eq!(v["processes"][0]["mappings"]["net_bytes"], 0);
    }
}
