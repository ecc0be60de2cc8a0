//! The metrics page in the Prometheus text exposition format (0.0.4), rendered from a
//! snapshot; [`super::exporter`] serves it.
//!
//! Bounded by design, for an agent left on every node for weeks:
//! - the default families (`memtrace_*`) are per cgroup (label `cgroup`: its path in the
//!   hierarchy that holds the memory controller, or `unknown`; and `container_id`,
//!   `container_runtime`, `pod_uid`, `pod_qos` where the path names a container or a pod,
//!   empty elsewhere), so their number follows the
//!   cgroups on the node, not the processes that come and go; exited processes' counts stay in
//!   their cgroup's counters, which never go down;
//! - per-process families (`memtrace_process_*`, labels `pid`, `start_time`, `comm`, `cgroup`)
//!   are opt-in (`--prometheus-processes N`, or `--pid`) and capped: the top N processes by
//!   `--sort`, the rest summed in one series labelled `pid="other"` (its other labels empty);
//! - machine-wide families (system stalls, OOM kills, lost events) have no process or cgroup
//!   label.
//!
//! Every family of a kind carries the same labels (the stall histograms too), so any two join.
//! Nothing on the page is prose: no explanation is built for a scrape.

use std::fmt::Write as _;

use bytes::Bytes;
use memtrace_common::events::{rss::RssMember, stall::ReclaimKind};

use crate::{
    analysis::{
        ByName,
        advice::AdviceView,
        cgroups::TotalsView,
        golang::{GoProcess, heap::Figures},
        process::{ProcessView, StallView},
        snapshot::Snapshot,
    },
    kernel::procfs::SmapsRollup,
    model::{container::Placement, counts::MappingTotals, reclaim::StallStats},
};

/// What one series set (a cgroup, a process, the others) counted, as the page shows it.
struct Counts<'a> {
    madvise: &'a [AdviceView],
    released: u64,
    mappings: &'a MappingTotals,
    minor: Option<u64>,
    major: Option<u64>,
    user: Option<u64>,
    user_write: Option<u64>,
    /// Resident bytes per member; empty for an exited process (it holds none).
    rss: Vec<(RssMember, u64)>,
    taken: Vec<(RssMember, u64)>,
    smaps: Option<SmapsRollup>,
    stalls: &'a ByName<ReclaimKind, Option<StallView>>,
}

impl<'a> Counts<'a> {
    fn of_totals(t: &'a TotalsView) -> Self {
        Self {
            madvise: &t.madvise,
            released: t.released_bytes,
            mappings: &t.mappings,
            minor: Some(t.faults.minor),
            major: Some(t.faults.major),
            user: t.faults.user,
            user_write: t.faults.user_write,
            rss: t.rss.iter().map(|(m, &b)| (m, b)).collect(),
            taken: t.rss_taken.iter().map(|(m, &b)| (m, b)).collect(),
            smaps: None,
            stalls: &t.reclaim,
        }
    }

    fn of_process(p: &'a ProcessView) -> Self {
        let live = !p.exited;
        Self {
            madvise: &p.madvise,
            released: p.released_bytes,
            mappings: &p.mappings,
            minor: p.faults.minor,
            major: p.faults.major,
            user: p.faults.user,
            user_write: p.faults.user_write,
            rss: p
                .rss
                .size
                .iter()
                .filter(|_| live)
                .filter_map(|(m, b)| Some((m, (*b)?)))
                .collect(),
            taken: p.rss.external_drop.iter().map(|(m, &b)| (m, b)).collect(),
            smaps: p.smaps_rollup.last.filter(|_| live),
            stalls: &p.reclaim,
        }
    }
}

/// A series set: its labels, and what it counted.
struct Series<'a> {
    labels: Vec<(&'static str, String)>,
    counts: Counts<'a>,
}

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

    /// [`Page::sample`] with labels whose values are owned (a cgroup's, a process's).
    fn sample_owned(&mut self, name: &str, labels: &[(&str, String)], value: u64) {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.sample(name, &labels, value);
    }

    fn sample_text(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        let _ = write!(self.text, "memtrace_{name}");
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
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

    /// One family: `# HELP`/`# TYPE`, then a sample per series and per item `each` yields,
    /// the series' labels first.
    fn each<'s, I>(
        &mut self,
        (name, kind, help): (&str, &str, &str),
        series: &'s [Series<'s>],
        each: impl Fn(&'s Counts<'s>) -> I,
    ) where
        I: IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
    {
        self.family(name, kind, help);
        for s in series {
            for (extra, value) in each(&s.counts) {
                let labels: Vec<(&str, &str)> = s
                    .labels
                    .iter()
                    .chain(&extra)
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect();
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

/// A process's labels, the same on every per-process family (the `memtrace_go_*` ones too):
/// with the pid, the start time tells apart two processes that had the same pid (empty when
/// it could not be known).
fn process_labels(
    pid: u32,
    start_time: Option<u64>,
    comm: &str,
    cgroup: Option<&str>,
) -> [(&'static str, String); 4] {
    [
        label("pid", pid),
        label(
            "start_time",
            start_time.map(|t| t.to_string()).unwrap_or_default(),
        ),
        label("comm", comm),
        label("cgroup", cgroup.unwrap_or("unknown")),
    ]
}

/// A cgroup's labels: its path (`unknown` when memtrace could not learn it), and the container
/// and pod the path names (empty when it names none). Functions of the path: they add no
/// series.
fn cgroup_labels(path: Option<&str>) -> Vec<(&'static str, String)> {
    let placement = path.map(Placement::of_path).unwrap_or_default();
    let container = placement.container.as_ref();
    let pod = placement.pod.as_ref();
    vec![
        label("cgroup", path.unwrap_or("unknown")),
        label("container_id", container.map_or("", |c| c.id.as_str())),
        label(
            "container_runtime",
            container.and_then(|c| c.runtime).map_or("", |r| r.name()),
        ),
        label("pod_uid", pod.map_or("", |p| p.uid.as_str())),
        label("pod_qos", pod.map_or("", |p| p.qos.name())),
    ]
}

/// The page: per-cgroup families, per-process ones when the snapshot lists processes for
/// them ([`crate::analysis::snapshot::Detail::Metrics`]), then the machine's.
pub fn render(snapshot: &Snapshot) -> Bytes {
    let mut page = Page {
        text: String::with_capacity(64 << 10),
    };
    let cgroups: Vec<Series> = snapshot
        .cgroups
        .iter()
        .map(|c| Series {
            labels: cgroup_labels(c.cgroup.as_deref()),
            counts: Counts::of_totals(&c.totals),
        })
        .collect();
    families(&mut page, "", &cgroups, snapshot.counts_user_faults);
    process_counts(&mut page, snapshot);
    cgroup_oom_kills(&mut page, snapshot);
    if let Some(others) = &snapshot.others {
        let mut series: Vec<Series> = snapshot
            .processes
            .iter()
            .map(|p| Series {
                labels: process_labels(p.pid, p.start_time, &p.comm, p.cgroup.as_deref()).into(),
                counts: Counts::of_process(p),
            })
            .collect();
        series.push(Series {
            labels: vec![
                label("pid", "other"),
                label("start_time", ""),
                label("comm", ""),
                label("cgroup", ""),
            ],
            counts: Counts::of_totals(others),
        });
        families(&mut page, "process_", &series, snapshot.counts_user_faults);
        smaps_family(&mut page, &series);
    }
    system_families(&mut page, snapshot);
    Bytes::from(page.text)
}

/// The families every series set has; `prefix` is "" for cgroups, "process_" for processes.
fn families(page: &mut Page, prefix: &str, series: &[Series], counts_user_faults: bool) {
    madvise_families(page, prefix, series);
    mapping_families(page, prefix, series);
    fault_families(page, prefix, series, counts_user_faults);
    memory_families(page, prefix, series);
    let name = format!("{prefix}reclaim_stall_seconds");
    page.family(
        &name,
        "histogram",
        "Time allocations stalled in direct or memory-cgroup reclaim, per stall, by kind.",
    );
    for s in series {
        for (kind, stats) in s.counts.stalls.iter() {
            if let Some(stats) = stats {
                let mut labels: Vec<(&str, &str)> =
                    s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                labels.push(("kind", kind.name()));
                page.histogram(&name, &labels, &stats.stats);
            }
        }
    }
}

/// A `memtrace_go_*` gauge: its name, help, and the figure it shows.
type GoFamily = (&'static str, &'static str, fn(&Figures) -> u64);

/// The Go runtime's own figures of the named Go processes (`memtrace_go_*`), read from each
/// process at the sample; appended to the page. Empty without Go processes.
pub fn go_runtime(processes: &[GoProcess]) -> String {
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
    // The labels of the per-process families, so that the series join.
    let labels: Vec<[(&str, String); 4]> = processes
        .iter()
        .map(|p| process_labels(p.pid, p.start_time, &p.comm, p.cgroup.as_deref()))
        .collect();
    for (name, help, value) in families {
        page.family(name, "gauge", help);
        for (p, labels) in processes.iter().zip(&labels) {
            page.sample_owned(name, labels, value(p.figures));
        }
    }
    page.family("go_gc_total", "counter", "NumGC: completed GC cycles.");
    for (p, labels) in processes.iter().zip(&labels) {
        page.sample_owned("go_gc_total", labels, p.figures.num_gc.into());
    }
    page.text
}

fn madvise_families(page: &mut Page, prefix: &str, series: &[Series]) {
    page.each(
        (
            &format!("{prefix}madvise_calls_total"),
            "counter",
            "madvise and process_madvise calls, failed ones included, by advice.",
        ),
        series,
        |c| {
            c.madvise
                .iter()
                .map(|a| (vec![label("advice", &a.name)], a.calls))
        },
    );
    page.each(
        (
            &format!("{prefix}madvise_failed_total"),
            "counter",
            "madvise calls that returned an error, by advice.",
        ),
        series,
        |c| {
            c.madvise
                .iter()
                .map(|a| (vec![label("advice", &a.name)], a.failed))
        },
    );
    page.each(
        (
            &format!("{prefix}madvise_bytes_total"),
            "counter",
            "Bytes covered by successful madvise calls, by advice; release=\"true\" for advice that gives memory back.",
        ),
        series,
        |c| {
            c.madvise.iter().map(|a| {
                let labels = vec![label("advice", &a.name), label("release", a.release)];
                (labels, a.bytes)
            })
        },
    );
    page.each(
        (
            &format!("{prefix}released_bytes_total"),
            "counter",
            "Bytes given back by DONTNEED, DONTNEED_LOCKED, FREE, REMOVE and PAGEOUT.",
        ),
        series,
        |c| [(Vec::new(), c.released)],
    );
}

fn mapping_families(page: &mut Page, prefix: &str, series: &[Series]) {
    page.each(
        (
            &format!("{prefix}mapped_bytes_total"),
            "counter",
            "Bytes mapped by successful mmap calls, by kind (anon/file, private/shared).",
        ),
        series,
        |c| {
            c.mappings
                .mmap
                .iter()
                .map(|(kind, c)| (vec![label("kind", kind.name())], c.bytes))
        },
    );
    page.each(
        (
            &format!("{prefix}address_space_bytes_total"),
            "counter",
            "Address-space changes by munmap, brk and mremap, by operation.",
        ),
        series,
        |c| {
            let m = c.mappings;
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

fn fault_families(page: &mut Page, prefix: &str, series: &[Series], counts_user_faults: bool) {
    page.each(
        (
            &format!("{prefix}page_faults_total"),
            "counter",
            "Minor and major page faults while traced, from the kernel's per-task counters.",
        ),
        series,
        |c| {
            [("minor", c.minor), ("major", c.major)]
                .into_iter()
                .filter_map(|(kind, count)| Some((vec![label("type", kind)], count?)))
        },
    );
    if !counts_user_faults {
        return;
    }
    page.each(
        (
            &format!("{prefix}user_page_faults_total"),
            "counter",
            "Page faults taken in user mode (exceptions/page_fault_user), by access.",
        ),
        series,
        |c| {
            let (user, write) = (c.user.unwrap_or(0), c.user_write.unwrap_or(0));
            [("read", user - write.min(user)), ("write", write)]
                .map(|(access, count)| (vec![label("access", access)], count))
        },
    );
}

fn memory_families(page: &mut Page, prefix: &str, series: &[Series]) {
    page.each(
        (
            &format!("{prefix}rss_bytes"),
            "gauge",
            "Resident memory of live processes from the kernel's RSS counters (kmem/rss_stat), by member, as far as each counter changed while traced (one that did not is not counted); summed per process, so shared pages count once per process.",
        ),
        series,
        |c| {
            c.rss
                .iter()
                .map(|(member, bytes)| (vec![label("member", member.name())], *bytes))
        },
    );
    page.each(
        (
            &format!("{prefix}rss_taken_bytes_total"),
            "counter",
            "Resident memory taken from processes by other tasks (reclaim, OOM reaper), by member.",
        ),
        series,
        |c| {
            c.taken
                .iter()
                .map(|(member, bytes)| (vec![label("member", member.name())], *bytes))
        },
    );
}

fn smaps_family(page: &mut Page, series: &[Series]) {
    page.each(
        (
            "process_smaps_rollup_bytes",
            "gauge",
            "Latest /proc/PID/smaps_rollup sample of a live --pid target (Rss, Pss, Anonymous, LazyFree, AnonHugePages, Swap).",
        ),
        series,
        |c| {
            c.smaps.into_iter().flat_map(|s| {
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

/// How many processes each cgroup counted, and how many of them live.
fn process_counts(page: &mut Page, snapshot: &Snapshot) {
    page.family(
        "processes_total",
        "counter",
        "Processes counted in the cgroup since memtrace started (those that did something traced), exited ones included.",
    );
    for c in &snapshot.cgroups {
        let labels = cgroup_labels(c.cgroup.as_deref());
        page.sample_owned("processes_total", &labels, c.totals.processes);
    }
    page.family(
        "live_processes",
        "gauge",
        "Of the processes counted in the cgroup, those alive at the latest look.",
    );
    for c in &snapshot.cgroups {
        let labels = cgroup_labels(c.cgroup.as_deref());
        page.sample_owned("live_processes", &labels, c.totals.live_processes);
    }
}

/// OOM kills by cgroup: bounded by the cgroups. A kill is counted once /proc told its cgroup
/// (moments after it); one whose cgroup could not be read is in `oom_kills_total` only, so
/// that no counter here ever goes down.
fn cgroup_oom_kills(page: &mut Page, snapshot: &Snapshot) {
    page.family(
        "cgroup_oom_kills_total",
        "counter",
        "OOM kills by the memory cgroup of the victim as /proc showed it after the kill (the trigger's once the victim was gone); kills whose cgroup could not be read are in memtrace_oom_kills_total only.",
    );
    for (path, &kills) in &snapshot.oom_kills_by_cgroup {
        page.sample_owned("cgroup_oom_kills_total", &cgroup_labels(Some(path)), kills);
    }
}

/// The machine's families: no process or cgroup label.
fn system_families(page: &mut Page, snapshot: &Snapshot) {
    page.family(
        "system_reclaim_stall_seconds",
        "histogram",
        "Reclaim stalls of every traced process together, per stall, by kind.",
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
    page.sample("oom_kills_total", &[], snapshot.oom_kills_total);
    page.family(
        "forgotten_processes_total",
        "counter",
        "Exited processes memtrace folded into their cgroup's totals and let go, to keep its memory bounded.",
    );
    page.sample("forgotten_processes_total", &[], snapshot.forgotten);
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
}

#[cfg(test)]
mod tests {
    use memtrace_common::{advice, lost::Lost};

    use super::*;
    use crate::{
        analysis::{
            selection::Selection,
            snapshot::{Detail, Window},
        },
        kernel::LostCounts,
        model::{
            Model,
            attribution::{Bound, Reading},
            event::test_madvise,
        },
    };

    fn page_with(model: &Model, selection: &Selection, processes: usize) -> String {
        let window = Window {
            detail: Detail::Metrics { processes },
            ..Window::default()
        };
        let snapshot = Snapshot::new(model, selection, window);
        String::from_utf8(render(&snapshot).to_vec()).unwrap()
    }

    fn page(model: &Model, selection: &Selection) -> String {
        page_with(model, selection, 10)
    }

    fn sample_lines(page: &str, family: &str) -> Vec<String> {
        page.lines()
            .filter(|l| l.starts_with(&format!("memtrace_{family}{{")))
            .map(str::to_owned)
            .collect()
    }

    fn settle(model: &mut Model, pid: u32, cgroup: &str) {
        let serial = model.attribution.serial_of(pid).unwrap();
        model
            .attribution
            .settle_cgroup(pid, serial, Some(cgroup.to_owned()));
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
        settle(&mut model, 42, "/jobs/a");
        model.lost = LostCounts::default().with(Lost::RingFull, vec![0, 2]);
        let page = page(&model, &Selection::default());
        let process = r#"pid="42",start_time="4242",comm="my \"app\"",cgroup="/jobs/a""#;
        let other = r#"pid="other",start_time="",comm="",cgroup="""#;
        assert_eq!(
            sample_lines(&page, "process_madvise_calls_total"),
            [
                format!(r#"memtrace_process_madvise_calls_total{{{process},advice="FREE"}} 4"#),
                format!(
                    r#"memtrace_process_madvise_calls_total{{{process},advice="NOHUGEPAGE"}} 1"#
                ),
            ]
        );
        assert_eq!(
            sample_lines(&page, "madvise_bytes_total"),
            [
                r#"memtrace_madvise_bytes_total{cgroup="/jobs/a",container_id="",container_runtime="",pod_uid="",pod_qos="",advice="FREE",release="true"} 24576"#,
                r#"memtrace_madvise_bytes_total{cgroup="/jobs/a",container_id="",container_runtime="",pod_uid="",pod_qos="",advice="NOHUGEPAGE",release="false"} 2097152"#,
            ]
        );
        assert_eq!(
            sample_lines(&page, "process_released_bytes_total"),
            [
                format!("memtrace_process_released_bytes_total{{{process}}} 24576"),
                format!("memtrace_process_released_bytes_total{{{other}}} 0"),
            ]
        );
        assert!(page.contains(r#"memtrace_lost_events_total{reason="ring_full",cpu="1"} 2"#));
        // Every family is announced once, before its samples.
        assert_eq!(
            page.matches("# TYPE memtrace_madvise_calls_total counter")
                .count(),
            1
        );
        // No prose: explanations are for reports.
        assert!(!page.contains("in short"), "{page}");
    }

    /// A cgroup whose path names a container or a pod says so in its labels; OOM kills count
    /// by the cgroup /proc told, once.
    #[test]
    fn container_and_pod_labels_and_oom_kills_by_cgroup() {
        let id = "0123456789abcdef".repeat(4);
        let container = format!("/libpod_parent/libpod-{id}");
        let pod = "/kubepods/burstable/pod0a1b2c3d-0000-4000-8000-000000000001";
        let mut model = Model::default();
        for (pid, path) in [(1, container.as_str()), (2, pod)] {
            model.record(&test_madvise(pid, advice::DONTNEED, 4096, None));
            settle(&mut model, pid, path);
        }
        model.reclaim.ooms.total = 3;
        model.reclaim.ooms.by_cgroup.insert(container.clone(), 2);
        let page = page(&model, &Selection::default());
        let container_labels = format!(
            r#"cgroup="{container}",container_id="{id}",container_runtime="podman",pod_uid="",pod_qos="""#
        );
        let pod_labels = format!(
            r#"cgroup="{pod}",container_id="",container_runtime="",pod_uid="0a1b2c3d-0000-4000-8000-000000000001",pod_qos="burstable""#
        );
        for labels in [&container_labels, &pod_labels] {
            let line = format!("memtrace_released_bytes_total{{{labels}}} 4096");
            assert!(page.contains(&line), "{line} missing:\n{page}");
        }
        assert_eq!(
            sample_lines(&page, "cgroup_oom_kills_total"),
            [format!(
                "memtrace_cgroup_oom_kills_total{{{container_labels}}} 2"
            )]
        );
        assert!(page.contains("memtrace_oom_kills_total 3\n"));
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
    fn stall_histogram_is_cumulative_in_seconds_and_joins_on_the_same_labels() {
        let mut model = Model::default();
        model.attribution.name(42, "reader");
        model.attribution.set_start_time(42, 7);
        settle(&mut model, 42, "/r");
        let mut stats = StallStats::default();
        for latency_ns in [5_000, 6_000, 40_000] {
            stats.add(latency_ns, 1, 1);
        }
        model.reclaim.stalls.insert((42, ReclaimKind::Memcg), stats);
        let page = page(&model, &Selection::default());
        let value = |family: &str, labels: &str, suffix: &str, le: &str| {
            let key = if le.is_empty() {
                format!("memtrace_{family}_{suffix}{{{labels}}} ")
            } else {
                format!("memtrace_{family}_{suffix}{{{labels},le=\"{le}\"}} ")
            };
            page.lines()
                .find_map(|l| l.strip_prefix(&key))
                .unwrap_or_else(|| panic!("{key} missing:\n{page}"))
                .to_owned()
        };
        let process = r#"pid="42",start_time="7",comm="reader",cgroup="/r",kind="memcg""#;
        let cgroup = r#"cgroup="/r",container_id="",container_runtime="",pod_uid="",pod_qos="",kind="memcg""#;
        for (family, labels) in [
            ("process_reclaim_stall_seconds", process),
            ("reclaim_stall_seconds", cgroup),
        ] {
            // 5 and 6 µs fall in the bucket below 8 µs; 40 µs below 64 µs.
            assert_eq!(value(family, labels, "bucket", "4e-6"), "0");
            assert_eq!(value(family, labels, "bucket", "8e-6"), "2");
            assert_eq!(value(family, labels, "bucket", "3.2e-5"), "2");
            assert_eq!(value(family, labels, "bucket", "6.4e-5"), "3");
            assert_eq!(value(family, labels, "bucket", "+Inf"), "3");
            assert_eq!(value(family, labels, "count", ""), "3");
            assert_eq!(value(family, labels, "sum", ""), "5.1e-5");
        }
        assert!(page.contains("# TYPE memtrace_reclaim_stall_seconds histogram"));
        assert!(page.contains("memtrace_oom_kills_total 0"));
    }

    #[test]
    fn comm_filter_applies() {
        let mut model = Model::default();
        model.record(&test_madvise(42, advice::DONTNEED, 4096, None));
        model.attribution.name(42, "other");
        settle(&mut model, 42, "/x");
        let selection = Selection {
            comms: vec!["wanted".into()],
            ..Selection::default()
        };
        let page = page(&model, &selection);
        assert!(sample_lines(&page, "process_madvise_calls_total").is_empty());
        assert!(sample_lines(&page, "madvise_calls_total").is_empty());
    }

    /// Per-process series are capped: the top N by --sort, the rest in `other`; the cgroup
    /// series, and `other`, keep what exited processes let go had counted.
    #[test]
    fn processes_beyond_the_top_are_summed_in_other() {
        let mut model = Model::default();
        for pid in 1..=5 {
            model.record(&test_madvise(
                pid,
                advice::DONTNEED,
                u64::from(pid) * 4096,
                None,
            ));
            model.attribution.name(pid, "p");
            settle(&mut model, pid, "/c");
        }
        let page_of = |model: &Model| page_with(model, &Selection::default(), 2);
        let released = |page: &str| sample_lines(page, "process_released_bytes_total");
        let before = page_of(&model);
        assert_eq!(released(&before).len(), 3, "{before}");
        assert!(released(&before)[0].contains(r#"pid="5""#));
        assert!(released(&before)[1].contains(r#"pid="4""#));
        assert!(released(&before)[2].ends_with(&format!("}} {}", 6 * 4096)));
        // pid 1 exits and is let go: still counted, in other and in its cgroup.
        let serial = model.attribution.serial_of(1).unwrap();
        model.attribution.read(1, serial, Reading::default());
        let bound = Bound {
            max_processes: 4,
            keep_top: 2,
            sort: crate::cli::SortKey::Released,
        };
        assert_eq!(model.bound(&bound, |_| true), vec![1]);
        let after = page_of(&model);
        assert_eq!(released(&after), released(&before));
        assert_eq!(
            sample_lines(&after, "released_bytes_total"),
            [format!(
                r#"memtrace_released_bytes_total{{cgroup="/c",container_id="",container_runtime="",pod_uid="",pod_qos=""}} {}"#,
                15 * 4096
            )]
        );
        assert!(after.contains("memtrace_forgotten_processes_total 1"));
        let c = r#"cgroup="/c",container_id="",container_runtime="",pod_uid="",pod_qos="""#;
        assert!(after.contains(&format!("memtrace_processes_total{{{c}}} 5")));
        assert!(after.contains(&format!("memtrace_live_processes{{{c}}} 4")));
        // None asked for: no per-process family at all.
        let none = page_with(&model, &Selection::default(), 0);
        assert!(!none.contains("memtrace_process_"), "{none}");
    }

    #[test]
    fn go_runtime_families_per_go_process() {
        let figures = crate::analysis::golang::heap::example();
        assert_eq!(go_runtime(&[]), "");
        let page = go_runtime(&[GoProcess {
            pid: 42,
            start_time: Some(4242),
            comm: "svc".to_owned(),
            cgroup: Some("/jobs/svc".to_owned()),
            figures: &figures,
        }]);
        // The per-process families' labels: the series join on them.
        let labels = r#"pid="42",start_time="4242",comm="svc",cgroup="/jobs/svc""#;
        assert!(
            page.contains("# TYPE memtrace_go_heap_inuse_bytes gauge\n"),
            "{page}"
        );
        for (family, value) in [
            ("go_heap_inuse_bytes", 10485760),
            ("go_heap_released_bytes", 4194304),
            ("go_stack_inuse_bytes", 524288),
        ] {
            let line = format!("memtrace_{family}{{{labels}}} {value}\n");
            assert!(page.contains(&line), "{line} in {page}");
        }
        assert!(page.contains("# TYPE memtrace_go_gc_total counter\n"));
    }
}
