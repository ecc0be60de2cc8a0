//! The metrics page in the Prometheus text exposition format (0.0.4), rendered from a
//! snapshot; [`super::exporter`] serves it.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::{
    analysis::{
        ByName,
        golang::heap::Figures,
        snapshot::{ProcessView, Snapshot, StallView},
    },
    model::reclaim::StallStats,
};
use memtrace_common::events::stall::ReclaimKind;

/// Builds one exposition page: `# HELP`/`# TYPE` once per family, then its samples.
struct Page {
    text: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP memtrace_{name} {help}");
        let _ = writeln!(self.text, "# TYPE memtrace_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_text(name, labels, &value.to_string());
    }

    fn sample_text(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        let _ = write!(self.text, "memtrace_{name}");
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A Prometheus histogram from log2 microsecond buckets: bucket `b` holds latencies below
    /// 2^b µs, so its cumulative count is exposed with `le` = 2^b µs; the last is +Inf.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], stats: &StallStats) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bucket, &count) in stats.buckets.iter().enumerate() {
            cumulative += count;
            let le = if bucket + 1 == stats.buckets.len() {
                "+Inf".to_owned()
            } else {
                format!("{:e}", (1u64 << bucket) as f64 / 1e6)
            };
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket_name, &with_le, cumulative);
        }
        let sum = format!("{:e}", stats.total_ns as f64 / 1e9);
        self.sample_text(&format!("{name}_sum"), labels, &sum);
        self.sample(&format!("{name}_count"), labels, stats.count);
    }

    /// One family with a sample per process and per item `per_process` yields.
    fn per_process<'a, I>(
        &mut self,
        (name, kind, help): (&str, &str, &str),
        processes: &'a [ProcessView],
        per_process: impl Fn(&'a ProcessView) -> I,
    ) where
        I: IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
    {
        self.family(name, kind, help);
        for p in processes {
            let pid = p.pid.to_string();
            // With the pid, the start time tells apart two processes that had the same pid
            // (empty when it could not be known).
            let start = p.start_time.map(|t| t.to_string()).unwrap_or_default();
            for (extra, value) in per_process(p) {
                let mut labels = vec![
                    ("pid", pid.as_str()),
                    ("start_time", start.as_str()),
                    ("comm", p.comm.as_str()),
                ];
                labels.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
                self.sample(name, &labels, value);
            }
        }
    }
}

/// Label values escape backslash, double quote and line feed (exposition format 0.0.4).
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn label(key: &'static str, value: impl ToString) -> (&'static str, String) {
    (key, value.to_string())
}

/// The metrics page for the snapshot's processes (the `--comm` filter applies).
pub fn render(snapshot: &Snapshot) -> Bytes {
    let mut page = Page {
        text: String::new(),
    };
    let processes = &snapshot.processes;
    madvise_families(&mut page, processes);
    mapping_families(&mut page, processes);
    reclaim_families(&mut page, snapshot);
    fault_families(&mut page, processes, snapshot.counts_user_faults);
    memory_families(&mut page, processes);
    page.family(
        "lost_events_total",
        "counter",
        "Records the kernel side dropped, by reason and CPU; non-zero means the totals are undercounts.",
    );
    for (why, counts) in snapshot.lost.iter() {
        for (cpu, &count) in counts.iter().enumerate() {
            let cpu = cpu.to_string();
            page.sample(
                "lost_events_total",
                &[("reason", why.name()), ("cpu", &cpu)],
                count,
            );
        }
    }
    Bytes::from(page.text)
}

/// A `memtrace_go_*` gauge: its name, help, and the figure it shows.
type GoFamily = (&'static str, &'static str, fn(&Figures) -> u64);

/// The Go runtime's own figures of the named Go processes (`memtrace_go_*`), read from each
/// process at the sample; appended to the page. Empty without Go processes.
pub fn go_runtime(processes: &[(u32, String, &Figures)]) -> String {
    let mut page = Page {
        text: String::new(),
    };
    if processes.is_empty() {
        return page.text;
    }
    let families: [GoFamily; 8] = [
        (
            "go_heap_inuse_bytes",
            "HeapInuse: bytes in in-use spans, as the Go runtime counts them.",
            |f| f.heap_inuse.bytes,
        ),
        (
            "go_heap_idle_bytes",
            "HeapIdle: bytes in idle spans, returned to the OS or not.",
            |f| f.heap_idle.bytes,
        ),
        (
            "go_heap_released_bytes",
            "HeapReleased: idle bytes the runtime returned to the OS (with MADV_FREE they may still be resident).",
            |f| f.heap_released.bytes,
        ),
        (
            "go_stack_inuse_bytes",
            "StackInuse: bytes of goroutine stacks.",
            |f| f.stack_inuse.bytes,
        ),
        (
            "go_sys_bytes",
            "Sys: everything the Go runtime has mapped.",
            |f| f.sys.bytes,
        ),
        (
            "go_ready_bytes",
            "Sys − HeapReleased: what the runtime holds and has not released (what GOMEMLIMIT limits).",
            |f| f.ready.bytes,
        ),
        (
            "go_heap_alloc_bytes",
            "HeapAlloc, a lower bound (per-P caches are not flushed from outside).",
            |f| f.heap_alloc.bytes,
        ),
        (
            "go_next_gc_bytes",
            "NextGC: the heap size the next GC aims at, computed as the runtime does.",
            |f| f.next_gc.bytes,
        ),
    ];
    for (name, help, value) in families {
        page.family(name, "gauge", help);
        for (pid, comm, figures) in processes {
            let pid = pid.to_string();
            page.sample(name, &[("pid", &pid), ("comm", comm)], value(figures));
        }
    }
    page.family("go_gc_total", "counter", "NumGC: completed GC cycles.");
    for (pid, comm, figures) in processes {
        let pid = pid.to_string();
        page.sample(
            "go_gc_total",
            &[("pid", &pid), ("comm", comm)],
            figures.num_gc.into(),
        );
    }
    page.text
}

fn madvise_families(page: &mut Page, processes: &[ProcessView]) {
    page.per_process(
        (
            "madvise_calls_total",
            "counter",
            "madvise and process_madvise calls, failed ones included, by advice.",
        ),
        processes,
        |p| {
            p.madvise
                .iter()
                .map(|a| (vec![label("advice", &a.name)], a.calls))
        },
    );
    page.per_process(
        (
            "madvise_failed_total",
            "counter",
            "madvise calls that returned an error, by advice.",
        ),
        processes,
        |p| {
            p.madvise
                .iter()
                .map(|a| (vec![label("advice", &a.name)], a.failed))
        },
    );
    page.per_process(
        (
            "madvise_bytes_total",
            "counter",
            "Bytes covered by successful madvise calls, by advice; release=\"true\" for advice that gives memory back.",
        ),
        processes,
        |p| {
            p.madvise.iter().map(|a| {
                let labels = vec![label("advice", &a.name), label("release", a.release)];
                (labels, a.bytes)
            })
        },
    );
    page.per_process(
        (
            "released_bytes_total",
            "counter",
            "Bytes given back by DONTNEED, DONTNEED_LOCKED, FREE, REMOVE and PAGEOUT.",
        ),
        processes,
        |p| [(Vec::new(), p.released_bytes)],
    );
}

fn mapping_families(page: &mut Page, processes: &[ProcessView]) {
    page.per_process(
        (
            "mapped_bytes_total",
            "counter",
            "Bytes mapped by successful mmap calls, by kind (anon/file, private/shared).",
        ),
        processes,
        |p| {
            p.mappings
                .mmap
                .iter()
                .map(|(kind, c)| (vec![label("kind", kind.name())], c.bytes))
        },
    );
    page.per_process(
        (
            "address_space_bytes_total",
            "counter",
            "Address-space changes by munmap, brk and mremap, by operation.",
        ),
        processes,
        |p| {
            let m = &p.mappings;
            [
                ("munmap", m.munmap),
                ("brk_grow", m.brk_grow),
                ("brk_shrink", m.brk_shrink),
                ("mremap_grow", m.mremap_grow),
                ("mremap_shrink", m.mremap_shrink),
            ]
            .map(|(op, c)| (vec![label("op", op)], c.bytes))
        },
    );
}

fn reclaim_families(page: &mut Page, snapshot: &Snapshot) {
    page.family(
        "reclaim_stall_seconds",
        "histogram",
        "Time the process's allocations stalled in direct or memory-cgroup reclaim, per stall.",
    );
    for p in &snapshot.processes {
        let pid = p.pid.to_string();
        stall_histograms(page, &[("pid", &pid), ("comm", &p.comm)], &p.reclaim);
    }
    page.family(
        "system_reclaim_stall_seconds",
        "histogram",
        "Reclaim stalls of every traced process together, per stall.",
    );
    for (kind, stats) in snapshot.system_stalls.iter() {
        if let Some(s) = stats {
            page.histogram(
                "system_reclaim_stall_seconds",
                &[("kind", kind.name())],
                &s.stats,
            );
        }
    }
    page.family(
        "oom_kills_total",
        "counter",
        "Processes the OOM killer chose while memtrace ran, whoever they were.",
    );
    page.sample("oom_kills_total", &[], snapshot.oom_kills.len() as u64);
}

fn stall_histograms(
    page: &mut Page,
    labels: &[(&str, &str)],
    stalls: &ByName<ReclaimKind, Option<StallView>>,
) {
    for (kind, stats) in stalls.iter() {
        if let Some(s) = stats {
            let mut with_kind = labels.to_vec();
            with_kind.push(("kind", kind.name()));
            page.histogram("reclaim_stall_seconds", &with_kind, &s.stats);
        }
    }
}

fn fault_families(page: &mut Page, processes: &[ProcessView], counts_user_faults: bool) {
    page.per_process(
        (
            "page_faults_total",
            "counter",
            "Minor and major page faults while traced, from the kernel's per-task counters.",
        ),
        processes,
        |p| {
            [("minor", p.faults.minor), ("major", p.faults.major)]
                .into_iter()
                .filter_map(|(kind, count)| Some((vec![label("type", kind)], count?)))
        },
    );
    if !counts_user_faults {
        return;
    }
    page.per_process(
        (
            "user_page_faults_total",
            "counter",
            "Page faults taken in user mode (exceptions/page_fault_user), by access.",
        ),
        processes,
        |p| {
            let (user, write) = (p.faults.user.unwrap_or(0), p.faults.user_write.unwrap_or(0));
            [("read", user - write.min(user)), ("write", write)]
                .map(|(access, count)| (vec![label("access", access)], count))
        },
    );
}

fn memory_families(page: &mut Page, processes: &[ProcessView]) {
    page.per_process(
        (
            "rss_bytes",
            "gauge",
            "Resident memory from the kernel's RSS counters (kmem/rss_stat), by member.",
        ),
        processes,
        |p| {
            p.rss
                .size
                .iter()
                .filter_map(|(member, size)| Some((vec![label("member", member.name())], (*size)?)))
        },
    );
    page.per_process(
        (
            "rss_taken_bytes_total",
            "counter",
            "Resident memory taken from the process by other tasks (reclaim, OOM reaper), by member.",
        ),
        processes,
        |p| {
            p.rss
                .external_drop
                .iter()
                .map(|(member, bytes)| (vec![label("member", member.name())], *bytes))
        },
    );
    page.per_process(
        (
            "smaps_rollup_bytes",
            "gauge",
            "Latest /proc/PID/smaps_rollup sample (Rss, Pss, Anonymous, LazyFree, AnonHugePages, Swap).",
        ),
        processes,
        |p| {
            p.smaps_rollup.last.into_iter().flat_map(|s| {
                [
                    ("rss", s.rss),
                    ("pss", s.pss),
                    ("anonymous", s.anonymous),
                    ("lazy_free", s.lazy_free),
                    ("anon_huge_pages", s.anon_huge_pages),
                    ("swap", s.swap),
                ]
                .map(|(field, bytes)| (vec![label("field", field)], bytes))
            })
        },
    );
}

#[cfg(test)]
mod tests {
    use memtrace_common::{advice, lost::Lost};

    use super::*;
    use crate::{
        analysis::snapshot::{Selection, Window},
        kernel::LostCounts,
        model::{Model, event::test_madvise},
    };

    fn page(model: &Model, selection: &Selection) -> String {
        let snapshot = Snapshot::new(model, selection, Window::default());
        String::from_utf8(render(&snapshot).to_vec()).unwrap()
    }

    fn sample_lines(page: &str, family: &str) -> Vec<String> {
        page.lines()
            .filter(|l| l.starts_with(&format!("memtrace_{family}{{")))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn madvise_families_by_advice() {
        let mut model = Model::default();
        for _ in 0..3 {
            model.record(&test_madvise(42, advice::FREE, 8192, None));
        }
        model.record(&test_madvise(42, advice::FREE, 4096, Some(libc::EINVAL)));
        model.record(&test_madvise(42, advice::NOHUGEPAGE, 2 << 20, None));
        model.attribution.name(42, "my \"app\"");
        model.attribution.set_start_time(42, 4242);
        model.lost = LostCounts::default().with(Lost::RingFull, vec![0, 2]);
        let page = page(&model, &Selection::default());
        assert_eq!(
            sample_lines(&page, "madvise_calls_total"),
            [
                r#"memtrace_madvise_calls_total{pid="42",start_time="4242",comm="my \"app\"",advice="FREE"} 4"#,
                r#"memtrace_madvise_calls_total{pid="42",start_time="4242",comm="my \"app\"",advice="NOHUGEPAGE"} 1"#,
            ]
        );
        assert_eq!(
            sample_lines(&page, "madvise_bytes_total"),
            [
                r#"memtrace_madvise_bytes_total{pid="42",start_time="4242",comm="my \"app\"",advice="FREE",release="true"} 24576"#,
                r#"memtrace_madvise_bytes_total{pid="42",start_time="4242",comm="my \"app\"",advice="NOHUGEPAGE",release="false"} 2097152"#,
            ]
        );
        assert_eq!(
            sample_lines(&page, "released_bytes_total"),
            [
                r#"memtrace_released_bytes_total{pid="42",start_time="4242",comm="my \"app\""} 24576"#
            ]
        );
        assert!(page.contains(r#"memtrace_lost_events_total{reason="ring_full",cpu="1"} 2"#));
        // Every family is announced once, before its samples.
        assert_eq!(
            page.matches("# TYPE memtrace_madvise_calls_total counter")
                .count(),
            1
        );
    }

    /// Every lost reason has its series, by construction (one was once counted in the total
    /// but missing here).
    #[test]
    fn every_lost_reason_is_exported() {
        let mut model = Model::default();
        for &why in Lost::ALL {
            model.lost = model.lost.clone().with(why, vec![1]);
        }
        let page = page(&model, &Selection::default());
        for why in Lost::ALL {
            let series = format!(
                "memtrace_lost_events_total{{reason=\"{}\",cpu=\"0\"}} 1",
                why.name()
            );
            assert!(page.contains(&series), "{series} missing:\n{page}");
        }
    }

    #[test]
    fn stall_histogram_is_cumulative_in_seconds() {
        let mut model = Model::default();
        model.attribution.name(42, "reader");
        let mut stats = StallStats::default();
        for latency_ns in [5_000, 6_000, 40_000] {
            stats.add(latency_ns, 1, 1);
        }
        model.reclaim.stalls.insert((42, ReclaimKind::Memcg), stats);
        let page = page(&model, &Selection::default());
        let labels = r#"pid="42",comm="reader",kind="memcg""#;
        let value = |suffix: &str, le: &str| {
            let key = if le.is_empty() {
                format!("memtrace_reclaim_stall_seconds_{suffix}{{{labels}}} ")
            } else {
                format!("memtrace_reclaim_stall_seconds_{suffix}{{{labels},le=\"{le}\"}} ")
            };
            page.lines()
                .find_map(|l| l.strip_prefix(&key))
                .unwrap_or_else(|| panic!("{key} missing:\n{page}"))
                .to_owned()
        };
        // 5 and 6 µs fall in the bucket below 8 µs; 40 µs below 64 µs.
        assert_eq!(value("bucket", "4e-6"), "0");
        assert_eq!(value("bucket", "8e-6"), "2");
        assert_eq!(value("bucket", "3.2e-5"), "2");
        assert_eq!(value("bucket", "6.4e-5"), "3");
        assert_eq!(value("bucket", "+Inf"), "3");
        assert_eq!(value("count", ""), "3");
        assert_eq!(value("sum", ""), "5.1e-5");
        assert!(page.contains("# TYPE memtrace_reclaim_stall_seconds histogram"));
        assert!(page.contains("memtrace_oom_kills_total 0"));
    }

    #[test]
    fn comm_filter_applies() {
        let mut model = Model::default();
        model.record(&test_madvise(42, advice::DONTNEED, 4096, None));
        model.attribution.name(42, "other");
        let selection = Selection {
            comms: vec!["wanted".into()],
            ..Selection::default()
        };
        assert!(sample_lines(&page(&model, &selection), "madvise_calls_total").is_empty());
    }

    #[test]
    fn go_runtime_families_per_go_process() {
        let figures = crate::analysis::golang::heap::example();
        assert_eq!(go_runtime(&[]), "");
        let page = go_runtime(&[(42, "svc".to_owned(), &figures)]);
        assert!(
            page.contains("# TYPE memtrace_go_heap_inuse_bytes gauge\n"),
            "{page}"
        );
        assert!(
            page.contains("memtrace_go_heap_inuse_bytes{pid=\"42\",comm=\"svc\"} 10485760\n"),
            "{page}"
        );
        assert!(
            page.contains("memtrace_go_heap_released_bytes{pid=\"42\",comm=\"svc\"} 4194304\n")
        );
        assert!(page.contains("memtrace_go_stack_inuse_bytes{pid=\"42\",comm=\"svc\"} 524288\n"));
        assert!(page.contains("# TYPE memtrace_go_gc_total counter\n"));
    }
}
