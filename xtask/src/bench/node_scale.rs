//! The node-scale case of `cargo xtask bench` (`--case node-scale`): memtrace as the always-on
//! agent of a busy node. 1,500 idle processes (daemons that wake every 10 s to write and give
//! back one page), about 40 new short-lived processes a second (each releasing one page), and
//! 60 s of system-wide `memtrace --prometheus … --interval 5`, scraped every second over
//! loopback. Measured against issue 19's budgets: the page's series count flat under churn and
//! at most 5,000, scrape p99 ≤ 100 ms and max ≤ 500 ms, memtrace at most 5 % of one core and a
//! peak RSS of at most 64 MiB.

use std::{
    fmt::Write as _,
    io::{BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    ATTACH_TIMEOUT, chrono_like_utc,
    lines::{ATTACHED, Lines},
    loadavg, machine_lines, timeval, wait4,
};
use crate::stats::verdict;

const IDLE_PROCESSES: usize = 1_500;
/// The idle processes wake this often (each at its own phase).
const IDLE_WAKE_MS: &str = "10000";
const CHURN_PER_SECOND: u32 = 40;
const RUN: Duration = Duration::from_secs(60);
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// A scrape that takes longer failed (Prometheus's default scrape timeout is 10 s; a client
/// that gives up at 5 s met this in the issue).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

const MAX_SERIES: usize = 5_000;
/// "Flat": the last page has at most this much more series than the page at 15 s (or one
/// new cgroup's worth, [`NEW_CGROUP_SERIES`], on a shared machine where cgroups come and go).
const FLAT_GROWTH: f64 = 0.05;
const NEW_CGROUP_SERIES: usize = 70;
const MAX_P99: Duration = Duration::from_millis(100);
const MAX_SCRAPE: Duration = Duration::from_millis(500);
const MAX_CPU_SHARE: f64 = 0.05;
const MAX_PEAK_RSS_KIB: u64 = 64 << 10;

/// One scrape: when, how long, how many series and bytes (`None`: it failed).
#[derive(Clone, Copy, Debug)]
struct Scrape {
    at: Duration,
    took: Duration,
    page: Option<(usize, usize)>,
}

/// What the run measured.
struct Measured {
    scrapes: Vec<Scrape>,
    churned: u64,
    cpu: Duration,
    wall: Duration,
    peak_rss_kib: u64,
    attach: Duration,
    lost: Option<u64>,
}

/// Runs the case and returns its section of BENCHMARKS.md.
pub fn run(release: &Path) -> anyhow::Result<String> {
    let load_before = loadavg();
    let date = chrono_like_utc();
    let workload = release.join("memtrace-workload");
    eprintln!("xtask bench: node-scale: starting {IDLE_PROCESSES} idle processes");
    let mut idle = Idle::start(&workload)?;
    let measured = measure(&release.join("memtrace"), &workload);
    idle.stop();
    let measured = measured?;
    Ok(render(&measured, &date, &load_before))
}

/// The idle processes, killed (by their own pids) when dropped.
struct Idle(Vec<Child>);

impl Idle {
    fn start(workload: &Path) -> anyhow::Result<Self> {
        let mut idle = Self(Vec::with_capacity(IDLE_PROCESSES));
        for _ in 0..IDLE_PROCESSES {
            let child = Command::new(workload)
                .args(["--no-wait", "bench-idle", "--wake-ms", IDLE_WAKE_MS])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start an idle process")?;
            idle.0.push(child);
        }
        Ok(idle)
    }

    fn stop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for mut child in self.0.drain(..) {
            let _ = child.wait();
        }
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn measure(memtrace: &Path, workload: &Path) -> anyhow::Result<Measured> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("no free loopback port")?
        .port();
    let started = Instant::now();
    let mut agent = Command::new(memtrace)
        .args([
            "--prometheus",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "5",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", memtrace.display()))?;
    let pid = agent.id();
    let mut stderr = Lines::of(agent.stderr.take().context("no stderr")?);
    let Some(at) = stderr.wait_attached(ATTACH_TIMEOUT) else {
        bail!("memtrace did not attach: {}", stderr.arrived().join(" | "));
    };
    let attach = at - started;
    // Its live lines, one per 5 s: read and dropped, so it never blocks on a pipe.
    if let Some(stdout) = agent.stdout.take() {
        thread::spawn(move || {
            let _ = std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink());
        });
    }
    eprintln!(
        "xtask bench: node-scale: memtrace attached in {} ms; {} s of churn and scrapes",
        attach.as_millis(),
        RUN.as_secs()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, churned, workload) = (
            Arc::clone(&stop),
            Arc::clone(&churned),
            workload.to_path_buf(),
        );
        thread::spawn(move || churn(&workload, &stop, &churned))
    };
    let scraper = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || scrape_until(port, &stop))
    };
    thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    let scrapes = scraper.join().unwrap_or_default();
    let _ = churn.join();
    let lost = scrapes_lost(port);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let (status, usage) = wait4(pid, ATTACH_TIMEOUT)?;
    // Its warnings, if any.
    for line in stderr
        .arrived()
        .iter()
        .filter(|line| !line.starts_with(ATTACHED))
    {
        eprintln!("{line}");
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("memtrace failed (wait status {status})");
    }
    Ok(Measured {
        scrapes,
        churned: churned.load(Ordering::Relaxed),
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        wall: started.elapsed(),
        peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        attach,
        lost,
    })
}

/// Starts about [`CHURN_PER_SECOND`] short processes a second until told to stop; counts them.
fn churn(workload: &Path, stop: &AtomicBool, churned: &AtomicU64) {
    let period = Duration::from_secs(1) / CHURN_PER_SECOND;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Command::new(workload)
            .args(["--no-wait", "madvise", "--op", "dontneed:1:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if started.is_ok() {
            churned.fetch_add(1, Ordering::Relaxed);
        }
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
}

/// Scrapes every [`SCRAPE_EVERY`] until told to stop.
fn scrape_until(port: u16, stop: &AtomicBool) -> Vec<Scrape> {
    let started = Instant::now();
    let mut scrapes = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let at = started.elapsed();
        let before = Instant::now();
        let page = get_page(port).ok();
        let took = before.elapsed();
        scrapes.push(Scrape {
            at,
            took,
            page: page.map(|p| (series(&p), p.len())),
        });
        thread::sleep(SCRAPE_EVERY.saturating_sub(took));
    }
    scrapes
}

/// The page, read whole within [`SCRAPE_TIMEOUT`].
fn get_page(port: u16) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("no HTTP response");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

fn series(page: &str) -> usize {
    page.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// Records the kernel side dropped, from a last page (memtrace still runs).
fn scrapes_lost(port: u16) -> Option<u64> {
    let page = get_page(port).ok()?;
    page.lines()
        .filter(|l| l.starts_with("memtrace_lost_events_total{"))
        .map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// The `p`-th percentile (nearest rank) of durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The series count of the last page taken at or before `at`.
fn series_at(scrapes: &[Scrape], at: Duration) -> Option<usize> {
    scrapes
        .iter()
        .filter(|s| s.at <= at)
        .filter_map(|s| s.page.map(|(series, _)| series))
        .next_back()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn render(m: &Measured, date: &str, load_before: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Node scale ({date})\n");
    let _ = writeln!(
        out,
        "`cargo xtask bench --case node-scale`: {IDLE_PROCESSES} idle processes \
         (`memtrace-workload bench-idle`, each writing and releasing a page every 10 s), \
         about {CHURN_PER_SECOND} new short-lived processes a second (`memtrace-workload \
         madvise --op dontneed:1:1`), {} s of system-wide `memtrace --prometheus \
         127.0.0.1:PORT --interval 5` (default labels: per cgroup), scraped every second.\n",
        RUN.as_secs()
    );
    for line in machine_lines() {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "- Load average (1/5/15 min) before: {load_before}, after: {}\n",
        loadavg()
    );
    let mut took: Vec<Duration> = m.scrapes.iter().map(|s| s.took).collect();
    took.sort();
    let failed = m.scrapes.iter().filter(|s| s.page.is_none()).count();
    let (p50, p99) = (percentile(&took, 50.0), percentile(&took, 99.0));
    let max = took.last().copied().unwrap_or_default();
    let at = |secs: u64| series_at(&m.scrapes, Duration::from_secs(secs));
    let counts: Vec<String> = [15, 30, 45, 60]
        .map(|s| at(s).map_or("—".to_owned(), |n| n.to_string()))
        .to_vec();
    let most = m
        .scrapes
        .iter()
        .filter_map(|s| s.page.map(|(series, _)| series))
        .max()
        .unwrap_or(0);
    let flat = match (at(15), m.scrapes.iter().rev().find_map(|s| s.page)) {
        (Some(early), Some((last, _))) => {
            last as f64 <= early as f64 * (1.0 + FLAT_GROWTH) || last <= early + NEW_CGROUP_SERIES
        }
        _ => false,
    };
    let mut slowest: Vec<&Scrape> = m.scrapes.iter().collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.took));
    let slowest: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|s| format!("{} at {:.0} s", ms(s.took), s.at.as_secs_f64()))
        .collect();
    let page_kib = m
        .scrapes
        .iter()
        .rev()
        .find_map(|s| s.page.map(|(_, bytes)| bytes as f64 / 1024.0))
        .unwrap_or(0.0);
    let cpu_share = m.cpu.as_secs_f64() / m.wall.as_secs_f64().max(1e-9);
    let rows = [
        (
            "series at 15 / 30 / 45 / 60 s (max)".to_owned(),
            format!("{} ({most})", counts.join(" / ")),
            format!(
                "flat (≤ +{:.0} % or +{NEW_CGROUP_SERIES} after 15 s), ≤ {MAX_SERIES}",
                FLAT_GROWTH * 100.0
            ),
            verdict(flat && most <= MAX_SERIES),
        ),
        (
            format!("scrape p50 / p99 / max ({} scrapes)", m.scrapes.len()),
            format!("{} / {} / {}", ms(p50), ms(p99), ms(max)),
            format!("p99 ≤ {}, max ≤ {}", ms(MAX_P99), ms(MAX_SCRAPE)),
            verdict(failed == 0 && p99 <= MAX_P99 && max <= MAX_SCRAPE),
        ),
        (
            "failed scrapes".to_owned(),
            failed.to_string(),
            "0".to_owned(),
            verdict(failed == 0),
        ),
        (
            "memtrace CPU".to_owned(),
            format!(
                "{:.2} % of one core ({:.2} s over {:.1} s)",
                cpu_share * 100.0,
                m.cpu.as_secs_f64(),
                m.wall.as_secs_f64()
            ),
            format!("≤ {:.0} %", MAX_CPU_SHARE * 100.0),
            verdict(cpu_share <= MAX_CPU_SHARE),
        ),
        (
            "memtrace peak RSS".to_owned(),
            format!("{:.1} MiB", m.peak_rss_kib as f64 / 1024.0),
            format!("≤ {} MiB", MAX_PEAK_RSS_KIB >> 10),
            verdict(m.peak_rss_kib <= MAX_PEAK_RSS_KIB),
        ),
    ];
    let _ = writeln!(out, "| measure | value | budget | |");
    let _ = writeln!(out, "|---|---:|---|---|");
    for (measure, value, budget, verdict) in rows {
        let _ = writeln!(out, "| {measure} | {value} | {budget} | {verdict} |");
    }
    let _ = writeln!(
        out,
        "\nSlowest scrapes: {}. Page size at the end {page_kib:.1} KiB; {} short-lived processes \
         started ({:.1}/s); memtrace attached in {} ms; lost events {}.",
        slowest.join(", "),
        m.churned,
        m.churned as f64 / RUN.as_secs_f64(),
        m.attach.as_millis(),
        m.lost.map_or("?".to_owned(), |n| n.to_string())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_series_at() {
        let ms = Duration::from_millis;
        let took: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&took, 50.0), ms(50));
        assert_eq!(percentile(&took, 99.0), ms(99));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
        let scrapes = [
            Scrape {
                at: Duration::from_secs(14),
                took: ms(1),
                page: Some((100, 1)),
            },
            Scrape {
                at: Duration::from_secs(15),
                took: ms(1),
                page: None,
            },
            Scrape {
                at: Duration::from_secs(16),
                took: ms(1),
                page: Some((120, 1)),
            },
        ];
        assert_eq!(series_at(&scrapes, Duration::from_secs(15)), Some(100));
        assert_eq!(series_at(&scrapes, Duration::from_secs(60)), Some(120));
        assert_eq!(series("# HELP x\nx 1\n\ny{a=\"b\"} 2\n"), 2);
    }
}
