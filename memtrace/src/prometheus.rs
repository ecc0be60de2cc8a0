//! `--prometheus ADDR`: the per-process totals in the Prometheus text exposition format, served
//! over plain HTTP so a fleet can scrape memtrace running as a DaemonSet.
//!
//! The event pump renders a fresh page once per sample interval and publishes it through a
//! watch channel; the server only ever copies the latest page out. So a slow or stuck scraper
//! never holds up the pump, and scrapes never see a half-updated set of counters.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use memtrace_common::{advice, reclaim::ReclaimKind};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::{
    attribution::{Attribution, RSS_MEMBER_NAMES},
    reclaim::{Reclaim, StallStats},
    report::{ReportOptions, advice_name},
    tracer::LostCounts,
};

/// A request must arrive whole within this; then the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests larger than this are not scrapes.
const MAX_REQUEST_BYTES: usize = 8 << 10;

/// A bound listener, ready to serve once tracing starts.
pub struct Exporter {
    listener: TcpListener,
    page: watch::Sender<String>,
}

impl Exporter {
    /// Binds before any eBPF is loaded, so a port in use is a clean one-line error.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for --prometheus"))?;
        let (page, _) = watch::channel(String::new());
        Ok(Self { listener, page })
    }

    /// Serves the latest published page from now on; returns the handle to publish pages.
    pub fn start(self) -> watch::Sender<String> {
        let pages = self.page.subscribe();
        tokio::spawn(serve(self.listener, pages));
        self.page
    }
}

async fn serve(listener: TcpListener, pages: watch::Receiver<String>) {
    loop {
        // Accept errors (e.g. out of fds) concern one connection; keep serving.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let page = pages.borrow().clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, page)).await;
        });
    }
}

/// Answers one HTTP/1.x request: the metrics for `GET /metrics` (or `/`), 404 otherwise.
async fn answer(mut stream: TcpStream, page: String) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() + n > MAX_REQUEST_BYTES {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let response = response_for(&request, &page);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn response_for(request: &[u8], page: &str) -> String {
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next(), words.next());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET" | b"HEAD"), Some(b"/metrics" | b"/")) => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", page)
        }
        (Some(b"GET" | b"HEAD"), _) => ("404 Not Found", "text/plain", "try /metrics\n"),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n"),
    };
    let body = if method == Some(b"HEAD") { "" } else { body };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
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
}

/// Label values escape backslash, double quote and line feed (exposition format 0.0.4).
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// The metrics page for the processes the report would show (the --comm filter applies).
pub fn render(attribution: &Attribution, options: &ReportOptions, lost: &LostCounts) -> String {
    let mut page = Page {
        text: String::new(),
    };
    let processes: Vec<_> = attribution
        .processes()
        .filter(|p| options.shows(attribution, p.pid))
        .collect();
    let ids: Vec<(String, &str)> = processes
        .iter()
        .map(|p| (p.pid.to_string(), p.comm.as_str()))
        .collect();

    page.family(
        "madvise_calls_total",
        "counter",
        "madvise and process_madvise calls, failed ones included, by advice.",
    );
    for (p, (pid, comm)) in processes.iter().zip(&ids) {
        for (&value, totals) in &p.madvise {
            let name = advice_name(value);
            let labels = [("pid", pid.as_str()), ("comm", comm), ("advice", &name)];
            page.sample("madvise_calls_total", &labels, totals.calls);
        }
    }
    page.family(
        "madvise_failed_total",
        "counter",
        "madvise calls that returned an error, by advice.",
    );
    for (p, (pid, comm)) in processes.iter().zip(&ids) {
        for (&value, totals) in &p.madvise {
            let name = advice_name(value);
            let labels = [("pid", pid.as_str()), ("comm", comm), ("advice", &name)];
            page.sample("madvise_failed_total", &labels, totals.failed);
        }
    }
    page.family(
        "madvise_bytes_total",
        "counter",
        "Bytes covered by successful madvise calls, by advice; release=\"true\" for advice that gives memory back.",
    );
    for (p, (pid, comm)) in processes.iter().zip(&ids) {
        for (&value, totals) in &p.madvise {
            let name = advice_name(value);
            let release = if advice::is_release(value) {
                "true"
            } else {
                "false"
            };
            let labels = [
                ("pid", pid.as_str()),
                ("comm", comm),
                ("advice", &name),
                ("release", release),
            ];
            page.sample("madvise_bytes_total", &labels, totals.bytes);
        }
    }
    page.family(
        "released_bytes_total",
        "counter",
        "Bytes given back by DONTNEED, DONTNEED_LOCKED, FREE, REMOVE and PAGEOUT.",
    );
    for (p, (pid, comm)) in processes.iter().zip(&ids) {
        let labels = [("pid", pid.as_str()), ("comm", comm)];
        page.sample("released_bytes_total", &labels, p.released_bytes());
    }
    mapping_families(&mut page, &processes, &ids);
    reclaim_families(&mut page, &attribution.reclaim, &processes, &ids);
    fault_families(&mut page, &processes, &ids, options.counts_faults);
    memory_families(&mut page, &processes, &ids);
    page.family(
        "lost_events_total",
        "counter",
        "Records the kernel side dropped, by reason and CPU; non-zero means the totals are undercounts.",
    );
    for (reason, counts) in [
        ("ring_full", &lost.ring_full),
        ("pending_full", &lost.pending_full),
        ("fault_table_full", &lost.fault_table_full),
        ("targets_full", &lost.targets_full),
    ] {
        for (cpu, &count) in counts.iter().enumerate() {
            let cpu = cpu.to_string();
            page.sample(
                "lost_events_total",
                &[("reason", reason), ("cpu", &cpu)],
                count,
            );
        }
    }
    page.text
}

fn reclaim_families(
    page: &mut Page,
    reclaim: &Reclaim,
    processes: &[&crate::attribution::ProcessStats],
    ids: &[(String, &str)],
) {
    page.family(
        "reclaim_stall_seconds",
        "histogram",
        "Time the process's allocations stalled in direct or memory-cgroup reclaim, per stall.",
    );
    for (p, (pid, comm)) in processes.iter().zip(ids) {
        for kind in [ReclaimKind::Direct, ReclaimKind::Memcg] {
            if let Some(stats) = reclaim.of(p.pid, kind) {
                let labels = [("pid", pid.as_str()), ("comm", comm), ("kind", kind.name())];
                page.histogram("reclaim_stall_seconds", &labels, stats);
            }
        }
    }
    page.family(
        "system_reclaim_stall_seconds",
        "histogram",
        "Reclaim stalls of every traced process together, per stall.",
    );
    for kind in [ReclaimKind::Direct, ReclaimKind::Memcg] {
        if let Some(stats) = reclaim.system.get(&kind).filter(|s| s.count > 0) {
            page.histogram(
                "system_reclaim_stall_seconds",
                &[("kind", kind.name())],
                stats,
            );
        }
    }
    page.family(
        "oom_kills_total",
        "counter",
        "Processes the OOM killer chose while memtrace ran, whoever they were.",
    );
    page.sample("oom_kills_total", &[], reclaim.ooms.len() as u64);
}

fn mapping_families(
    page: &mut Page,
    processes: &[&crate::attribution::ProcessStats],
    ids: &[(String, &str)],
) {
    page.family(
        "mapped_bytes_total",
        "counter",
        "Bytes mapped by successful mmap calls, by kind (anon/file, private/shared).",
    );
    for (p, (pid, comm)) in processes.iter().zip(ids) {
        for (kind, c) in &p.mappings.mmap {
            let labels = [("pid", pid.as_str()), ("comm", comm), ("kind", kind.name())];
            page.sample("mapped_bytes_total", &labels, c.bytes);
        }
    }
    page.family(
        "address_space_bytes_total",
        "counter",
        "Address-space changes by munmap, brk and mremap, by operation.",
    );
    for (p, (pid, comm)) in processes.iter().zip(ids) {
        let m = &p.mappings;
        for (op, c) in [
            ("munmap", m.munmap),
            ("brk_grow", m.brk_grow),
            ("brk_shrink", m.brk_shrink),
            ("mremap_grow", m.mremap_grow),
            ("mremap_shrink", m.mremap_shrink),
        ] {
            let labels = [("pid", pid.as_str()), ("comm", comm), ("op", op)];
            page.sample("address_space_bytes_total", &labels, c.bytes);
        }
    }
}

fn fault_families(
    page: &mut Page,
    processes: &[&crate::attribution::ProcessStats],
    ids: &[(String, &str)],
    counts_faults: bool,
) {
    page.family(
        "page_faults_total",
        "counter",
        "Minor and major page faults while traced, from the kernel's per-task counters.",
    );
    for (p, (pid, comm)) in processes.iter().zip(ids) {
        if !p.task_faults.known() {
            continue;
        }
        for (kind, count) in [
            ("minor", p.task_faults.minor()),
            ("major", p.task_faults.major()),
        ] {
            let labels = [("pid", pid.as_str()), ("comm", comm), ("type", kind)];
            page.sample("page_faults_total", &labels, count);
        }
    }
    if !counts_faults {
        return;
    }
    page.family(
        "user_page_faults_total",
        "counter",
        "Page faults taken in user mode (exceptions/page_fault_user), by access.",
    );
    for (p, (pid, comm)) in processes.iter().zip(ids) {
        for (access, count) in [
            ("read", p.faults.user - p.faults.write.min(p.faults.user)),
            ("write", p.faults.write),
        ] {
            let labels = [("pid", pid.as_str()), ("comm", comm), ("access", access)];
            page.sample("user_page_faults_total", &labels, count);
        }
    }
}

fn memory_families(
    page: &mut Page,
    processes: &[&crate::attribution::ProcessStats],
    ids: &[(String, &str)],
) {
    page.family(
        "rss_bytes",
        "gauge",
        "Resident memory from the kernel's RSS counters (kmem/rss_stat), by member.",
    );
    for (p, (pid, comm)) in processes.iter().zip(ids) {
        for (member, size) in RSS_MEMBER_NAMES.iter().zip(p.rss.size) {
            if let Some(size) = size {
                let labels = [("pid", pid.as_str()), ("comm", comm), ("member", member)];
                page.sample("rss_bytes", &labels, size);
            }
        }
    }
    page.family(
        "rss_taken_bytes_total",
        "counter",
        "Resident memory taken from the process by other tasks (reclaim, OOM reaper), by member.",
    );
    for (p, (pid, comm)) in processes.iter().zip(ids) {
        for (member, bytes) in RSS_MEMBER_NAMES.iter().zip(p.rss.external_drop) {
            let labels = [("pid", pid.as_str()), ("comm", comm), ("member", member)];
            page.sample("rss_taken_bytes_total", &labels, bytes);
        }
    }
    page.family(
        "smaps_rollup_bytes",
        "gauge",
        "Latest /proc/PID/smaps_rollup sample (Rss, Pss, Anonymous, LazyFree, AnonHugePages, Swap).",
    );
    for (p, (pid, comm)) in processes.iter().zip(ids) {
        let Some(s) = p.smaps_last else {
            continue;
        };
        for (field, bytes) in [
            ("rss", s.rss),
            ("pss", s.pss),
            ("anonymous", s.anonymous),
            ("lazy_free", s.lazy_free),
            ("anon_huge_pages", s.anon_huge_pages),
            ("swap", s.swap),
        ] {
            let labels = [("pid", pid.as_str()), ("comm", comm), ("field", field)];
            page.sample("smaps_rollup_bytes", &labels, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, test_madvise};

    fn call(advice: u32, len: u64, errno: Option<i32>) -> Event {
        test_madvise(42, advice, len, errno)
    }

    fn sample_lines(page: &str, family: &str) -> Vec<String> {
        page.lines()
            .filter(|l| l.starts_with(&format!("memtrace_{family}{{")))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn madvise_families_by_advice() {
        let mut a = Attribution::default();
        for _ in 0..3 {
            a.record(&call(advice::FREE, 8192, None));
        }
        a.record(&call(advice::FREE, 4096, Some(libc::EINVAL)));
        a.record(&call(advice::NOHUGEPAGE, 2 << 20, None));
        a.name(42, "my \"app\"");
        let lost = LostCounts {
            ring_full: vec![0, 2],
            ..LostCounts::default()
        };
        let page = render(&a, &ReportOptions::default(), &lost);
        assert_eq!(
            sample_lines(&page, "madvise_calls_total"),
            [
                r#"memtrace_madvise_calls_total{pid="42",comm="my \"app\"",advice="FREE"} 4"#,
                r#"memtrace_madvise_calls_total{pid="42",comm="my \"app\"",advice="NOHUGEPAGE"} 1"#,
            ]
        );
        assert_eq!(
            sample_lines(&page, "madvise_bytes_total"),
            [
                r#"memtrace_madvise_bytes_total{pid="42",comm="my \"app\"",advice="FREE",release="true"} 24576"#,
                r#"memtrace_madvise_bytes_total{pid="42",comm="my \"app\"",advice="NOHUGEPAGE",release="false"} 2097152"#,
            ]
        );
        assert_eq!(
            sample_lines(&page, "released_bytes_total"),
            [r#"memtrace_released_bytes_total{pid="42",comm="my \"app\""} 24576"#]
        );
        assert!(page.contains(r#"memtrace_lost_events_total{reason="ring_full",cpu="1"} 2"#));
        // Every family is announced once, before its samples.
        assert_eq!(
            page.matches("# TYPE memtrace_madvise_calls_total counter")
                .count(),
            1
        );
    }

    #[test]
    fn stall_histogram_is_cumulative_in_seconds() {
        let mut a = Attribution::default();
        a.name(42, "reader");
        let mut stats = StallStats::default();
        for latency_ns in [5_000, 6_000, 40_000] {
            stats.add(latency_ns, 1, 1);
        }
        a.reclaim.stalls.insert((42, ReclaimKind::Memcg), stats);
        let page = render(&a, &ReportOptions::default(), &LostCounts::default());
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
        let mut a = Attribution::default();
        a.record(&call(advice::DONTNEED, 4096, None));
        a.name(42, "other");
        let options = ReportOptions {
            comms: vec!["wanted".into()],
            ..ReportOptions::default()
        };
        let page = render(&a, &options, &LostCounts::default());
        assert!(sample_lines(&page, "madvise_calls_total").is_empty());
    }

    #[test]
    fn http_answers() {
        let ok = response_for(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "m 1\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 4\r\n") && ok.ends_with("\r\n\r\nm 1\n"));
        let head = response_for(b"HEAD / HTTP/1.1\r\n\r\n", "m 1\n");
        assert!(head.contains("Content-Length: 0") && head.ends_with("\r\n\r\n"));
        assert!(response_for(b"GET /x HTTP/1.1\r\n\r\n", "").starts_with("HTTP/1.1 404"));
        assert!(response_for(b"POST / HTTP/1.1\r\n\r\n", "").starts_with("HTTP/1.1 405"));
        assert!(response_for(b"", "").starts_with("HTTP/1.1 405"));
    }
}
