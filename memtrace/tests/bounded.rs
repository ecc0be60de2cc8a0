//! A system-wide run keeps bounded state and bounded metrics under process churn, without
//! losing a count: exited processes let go past `--max-processes` fold into their cgroup's
//! totals, which equal the workloads' own records; the biggest releaser stays in the report's
//! top N however many small processes come and go after it; the page's series stay as many as
//! the cgroups, not the processes. The workloads run in a cgroup of the test's own, under a
//! name of its own, so other processes on the machine do not count.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{MemCgroup, Memtrace, Workload, free_port, get, privileged, sample, series};

/// Children of each churn round, each releasing one page and exiting.
const CHILDREN: u64 = 150;

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

/// The first page on which `done` holds, scraping every 200 ms for at most 20 s.
fn page_when(port: u16, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, page) = get(port, "/metrics").expect("scrape /metrics");
        if done(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{page}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn churn_past_the_process_bound_keeps_every_count_and_the_biggest_releaser() {
    if !privileged() {
        return;
    }
    let Some(cgroup) = MemCgroup::new("bounded", 1 << 30) else {
        return;
    };
    let name = format!("bnd{}", std::process::id());
    let spawn = |args: &[&str]| Workload::spawn_named_in_cgroup(&name, &cgroup.path, args);
    // The biggest releaser: 8 calls of 256 pages (8 MiB), then it exits, before the churn.
    let mut big = spawn(&["madvise", "--op", "dontneed:8:256"]);
    let children = CHILDREN.to_string();
    let churn_args = [
        "fork-many",
        "--children",
        &children,
        "--hold-ms",
        "100",
        "--child-dontneed-pages",
        "1",
    ];
    let churns = [spawn(&churn_args), spawn(&churn_args)];
    let port = free_port();
    let mut memtrace = Memtrace::attach(&[
        "--comm",
        &name,
        "--max-processes",
        "40",
        "--top",
        "3",
        "--prometheus",
        &port.to_string(),
        "--prometheus-processes",
        "3",
        "--ring-size",
        "65536",
    ]);
    // Every call is a JSON line: read them as they come, or memtrace would block on a full
    // pipe (and serve no page).
    let mut stdout = memtrace.take_stdout();
    let json = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let label = support::cgroup_labels(&cgroup.name());
    let page_size = 4096;
    big.go();
    let big_pid = big.pid;
    let big_record = big.record();
    let big_bytes: u64 = big_record["advice"]
        .as_array()
        .expect("advice")
        .iter()
        .map(|a| number(&a["bytes"]))
        .sum();
    assert_eq!(big_bytes, 8 << 20);

    // Two rounds of churn, each past the bound of 40 processes.
    let mut released = big_bytes;
    let mut pages = Vec::new();
    for mut churn in churns {
        churn.go();
        let record = churn.record();
        assert_eq!(number(&record["children"]), CHILDREN);
        released += CHILDREN * number(&record["child_dontneed_bytes"]);
        let page = page_when(port, "counted every child", |page| {
            sample(page, "memtrace_released_bytes_total", &label) == Some(released)
                && sample(page, "memtrace_forgotten_processes_total", "").is_some_and(|n| n > 0)
        });
        pages.push(page);
    }
    assert_eq!(released, (8 << 20) + 2 * CHILDREN * page_size);
    let (first, last) = (&pages[0], &pages[1]);
    // Counters of the cgroup: what every process counted, dropped ones included.
    assert!(
        sample(last, "memtrace_processes_total", &label).is_some_and(|n| n > 2 * CHILDREN),
        "{last}"
    );
    // As many series after twice the churn as after once: they follow the cgroups.
    assert_eq!(
        series(first),
        series(last),
        "series grew:\n{first}\n----\n{last}"
    );
    // Per-process series: the top 3 and `other`; the biggest releaser, long exited, among
    // them with its exact count.
    assert_eq!(
        last.lines()
            .filter(|l| l.starts_with("memtrace_process_released_bytes_total{"))
            .count(),
        4,
        "{last}"
    );
    let big_line = last
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "memtrace_process_released_bytes_total{{pid=\"{big_pid}\","
            ))
        })
        .unwrap_or_else(|| panic!("the biggest releaser is not listed:\n{last}"));
    assert!(big_line.ends_with(&format!(" {big_bytes}")), "{big_line}");
    let other: u64 = last
        .lines()
        .filter(|l| l.starts_with("memtrace_process_released_bytes_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(
        other, released,
        "top 3 and other add up to the cgroup's total"
    );

    memtrace.interrupt();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let json = json.join().expect("memtrace's stdout");
    let summary: Value = json
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary: {json}"));
    let summary = &summary;
    assert_eq!(summary["lost"]["total"], 0, "events were lost");
    assert!(number(&summary["forgotten_processes"]) > 0, "{summary}");
    // The report's top N comes from every process seen: the biggest releaser first.
    let top = &summary["processes"][0];
    assert_eq!(
        (number(&top["pid"]), number(&top["released_bytes"])),
        (u64::from(big_pid), big_bytes)
    );
    assert_eq!(number(&summary["totals"]["released_bytes"]), released);
    let ours = summary["cgroups"]
        .as_array()
        .expect("cgroups")
        .iter()
        .find(|c| c["cgroup"] == cgroup.name().as_str())
        .unwrap_or_else(|| panic!("no entry for {}: {summary}", cgroup.name()));
    assert_eq!(number(&ours["released_bytes"]), released, "{ours}");
    assert_eq!(
        number(&ours["live_processes"]),
        0,
        "every workload exited: {ours}"
    );
}

/// A process that moves to another cgroup and execs, as a container runtime starts a
/// container's first process: what it counted before stays in the cgroup it left, what its new
/// program counts goes to the new one — each exactly the workload's calls — and the process
/// itself keeps all of them.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_process_that_moves_cgroup_and_execs_counts_in_each() {
    if !privileged() {
        return;
    }
    let (Some(from), Some(to)) = (
        MemCgroup::new("from", 1 << 30),
        MemCgroup::new("to", 1 << 30),
    ) else {
        return;
    };
    let signal = std::env::temp_dir().join(format!("memtrace-move-{}", std::process::id()));
    let _ = std::fs::remove_file(&signal);
    let (signal_arg, to_arg) = (signal.display().to_string(), to.path.display().to_string());
    let mut workload = Workload::spawn_in_cgroup(
        &from.path,
        &[
            "exec",
            "--before",
            "5",
            "--exec-when",
            &signal_arg,
            "--move-to",
            &to_arg,
            "--as",
            "memtrace-moved",
            "--",
            "madvise",
            "--op",
            "dontneed:7:1",
        ],
    );
    let pid = workload.pid;
    let port = free_port();
    let memtrace = Memtrace::attach(&["--no-events", "--prometheus", &port.to_string()]);
    workload.go();
    let (from_labels, to_labels) = (
        support::cgroup_labels(&from.name()),
        support::cgroup_labels(&to.name()),
    );
    let released = |page: &str, labels: &str| sample(page, "memtrace_released_bytes_total", labels);
    let page_size = 4096;
    page_when(port, "the calls before the move", |page| {
        released(page, &from_labels) == Some(5 * page_size)
    });
    std::fs::write(&signal, "").expect("signal the workload");
    // The new program announces itself under the same pid, then does its work.
    assert_eq!(workload.next_line()["pid"], pid);
    let record = workload.record();
    assert_eq!(record["advice"][0]["calls"], 7);
    let page = page_when(port, "the calls after the move", |page| {
        released(page, &to_labels) == Some(7 * page_size)
    });
    assert_eq!(released(&page, &from_labels), Some(5 * page_size), "{page}");
    for labels in [&from_labels, &to_labels] {
        assert_eq!(
            sample(&page, "memtrace_processes_total", labels),
            Some(1),
            "{page}"
        );
    }
    memtrace.interrupt();
    let output = memtrace.finish();
    let _ = std::fs::remove_file(&signal);
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("memtrace-exec-{pid}")));
    assert!(output.status.success(), "{}", output.stderr);
    let process = output.process(pid);
    assert_eq!(process["cgroup"], to.name(), "{process}");
    assert_eq!(
        support::advice_totals(process, 4),
        Some((5 + 7, 0, 12 * page_size))
    );
}
