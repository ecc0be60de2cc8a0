//! What memtrace prints: the final text report, and JSON Lines (events and a summary).
//!
//! JSON schema version 1 (documented in README.md): every line is an object with a `type`.

use std::{collections::BTreeMap, fmt::Write as _};

use memtrace_common::advice;
use serde::Serialize;

use crate::{
    attribution::{AdviceTotals, Attribution, ProcessStats},
    events::{Event, Madvise},
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

#[derive(Serialize)]
struct MadviseLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: u32,
    tid: u32,
    caller: u32,
    comm: &'a str,
    ts_ns: u64,
    latency_ns: u64,
    start: u64,
    len: u64,
    advice: u32,
    advice_name: String,
    release: bool,
    errno: Option<i32>,
}

/// One event as a JSON object.
pub fn event_json(event: &Event) -> serde_json::Result<String> {
    match event {
        Event::Madvise(m) => serde_json::to_string(&madvise_line(m)),
    }
}

fn madvise_line(m: &Madvise) -> MadviseLine<'_> {
    MadviseLine {
        kind: if m.pidfd.is_some() {
            "process_madvise"
        } else {
            "madvise"
        },
        pid: m.tgid,
        tid: m.tid,
        caller: m.caller,
        comm: &m.thread_comm,
        ts_ns: m.enter_ns,
        latency_ns: m.exit_ns.saturating_sub(m.enter_ns),
        start: m.start,
        len: m.len,
        advice: m.advice,
        advice_name: advice_name(m.advice),
        release: advice::is_release(m.advice),
        errno: m.errno,
    }
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
}

#[derive(Serialize)]
struct LostJson {
    total: u64,
    ring_full: Vec<u64>,
    pending_full: Vec<u64>,
}

#[derive(Serialize)]
struct ProcessJson {
    pid: u32,
    comm: String,
    released_bytes: u64,
    advised_by: Vec<u32>,
    madvise: Vec<AdviceJson>,
}

#[derive(Serialize)]
struct AdviceJson {
    advice: u32,
    name: String,
    release: bool,
    calls: u64,
    failed: u64,
    bytes: u64,
}

impl Summary {
    pub fn new(
        attribution: &Attribution,
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
            },
            processes: attribution.processes().map(process_json).collect(),
            unattributed: advice_json(&attribution.unattributed),
        }
    }
}

fn process_json(p: &ProcessStats) -> ProcessJson {
    ProcessJson {
        pid: p.pid,
        comm: p.comm.clone(),
        released_bytes: p.released_bytes(),
        advised_by: p.advised_by.iter().copied().collect(),
        madvise: advice_json(&p.madvise),
    }
}

fn advice_json(by_advice: &BTreeMap<u32, AdviceTotals>) -> Vec<AdviceJson> {
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

/// The final report people read.
pub fn text(
    attribution: &Attribution,
    lost: &LostCounts,
    duration_ns: u64,
    stop_reason: StopReason,
) -> String {
    let mut out = String::new();
    let secs = duration_ns as f64 / 1e9;
    let why = match stop_reason {
        StopReason::Interrupted => "interrupted",
        StopReason::Duration => "duration reached",
        StopReason::TargetExited => "traced process exited",
        StopReason::OutputClosed => "output closed",
    };
    let _ = writeln!(out, "memtrace report: {secs:.1} s traced ({why})");
    for p in attribution.processes() {
        out.push('\n');
        process_text(&mut out, p);
    }
    if !attribution.unattributed.is_empty() {
        let calls: u64 = attribution.unattributed.values().map(|t| t.calls).sum();
        let _ = writeln!(
            out,
            "\nprocess_madvise calls whose target could not be resolved: {calls} (not charged to any process)"
        );
    }
    out.push('\n');
    lost_text(&mut out, lost);
    out
}

fn process_text(out: &mut String, p: &ProcessStats) {
    let _ = writeln!(out, "pid {} ({})", p.pid, p.comm);
    if p.madvise.is_empty() {
        let _ = writeln!(out, "  no madvise calls");
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
    let _ = writeln!(
        out,
        "lost events: {} (ring buffer full: {} [{}]; pairing table full: {} [{}]) — totals above are undercounts; retry with a larger --ring-size",
        lost.total(),
        lost.ring_full.iter().sum::<u64>(),
        per_cpu(&lost.ring_full),
        lost.pending_full.iter().sum::<u64>(),
        per_cpu(&lost.pending_full),
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

#[cfg(test)]
mod tests {
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
    }

    #[test]
    fn event_line_has_decoded_advice() {
        let line: serde_json::Value =
            serde_json::from_str(&event_json(&free_call(4096, None)).unwrap()).unwrap();
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
            pending_full: vec![0, 0],
        };
        let report = text(&a, &lost, 2_500_000_000, StopReason::TargetExited);
        assert_eq!(
            report,
            "memtrace report: 2.5 s traced (traced process exited)\n\
             \n\
             pid 42 (workload)\n\
             \x20 madvise advice        calls   failed        bytes\n\
             \x20 FREE                     52        1    204.0 KiB  release\n\
             \x20 released: 204.0 KiB (FREE 204.0 KiB)\n\
             \n\
             lost events: 3 (ring buffer full: 3 [cpu1=3]; pairing table full: 0 []) — totals above are undercounts; retry with a larger --ring-size\n"
        );
    }

    #[test]
    fn summary_json_shape() {
        let mut a = Attribution::default();
        a.record(&free_call(8192, None));
        let summary = Summary::new(&a, &LostCounts::default(), 10, StopReason::Duration);
        let v: serde_json::Value = serde_json::to_value(&summary).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["stop_reason"], "duration");
        assert_eq!(v["processes"][0]["released_bytes"], 8192);
        assert_eq!(v["processes"][0]["madvise"][0]["name"], "FREE");
        assert_eq!(v["processes"][0]["madvise"][0]["calls"], 1);
    }
}
