//! `--prometheus`: the endpoint is scraped over loopback while tracing, parsed, and its counters
//! compared with the workload's own record.

mod support;

use std::{
    io::Write as _,
    net::{TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use support::{MEMTRACE, Memtrace, Workload, free_port, get, privileged, sample};

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn scraped_counters_equal_the_workload_record() {
    if !privileged() {
        return;
    }
    let port = free_port();
    let mut workload = Workload::spawn(&["madvise", "--op", "free:51:1", "--op", "dontneed:7:3"]);
    // A second target that waits forever keeps memtrace running after the first one exits.
    let idle = Workload::spawn(&["madvise", "--op", "dontneed:1:1"]);
    let (pid, idle_pid) = (workload.pid.to_string(), idle.pid.to_string());
    // Field 22 of /proc/PID/stat, read while the workload runs: the series' start_time label;
    // its memory cgroup as /proc/PID/cgroup says: the cgroup label.
    let start = support::start_time(workload.pid);
    let cgroup = support::memory_cgroup_of(workload.pid);
    let memtrace = Memtrace::attach(&[
        "--pid",
        &pid,
        "--pid",
        &idle_pid,
        "--prometheus",
        &port.to_string(),
    ]);
    workload.go();
    let record = workload.record();

    // The page is refreshed once a second: poll until it shows the finished workload. With
    // --pid, the targets have per-process series.
    let process =
        format!(r#"pid="{pid}",start_time="{start}",comm="memtrace-worklo",cgroup="{cgroup}""#);
    let labels = |advice: &str| format!(r#"{process},advice="{advice}""#);
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (status, headers, body) = get(port, "/metrics").expect("scrape /metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("Content-Type: text/plain; version=0.0.4"),
            "{headers}"
        );
        if sample(
            &body,
            "memtrace_process_madvise_calls_total",
            &labels("DONTNEED"),
        ) == Some(7)
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "counters never appeared:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for entry in record["advice"].as_array().expect("record advice") {
        let name = match entry["advice"].as_u64() {
            Some(8) => "FREE",
            Some(4) => "DONTNEED",
            other => panic!("unexpected advice {other:?}"),
        };
        assert_eq!(
            sample(&page, "memtrace_process_madvise_calls_total", &labels(name)),
            entry["calls"].as_u64(),
            "{name}:\n{page}"
        );
        let bytes_labels = format!("{},release=\"true\"", labels(name));
        assert_eq!(
            sample(&page, "memtrace_process_madvise_bytes_total", &bytes_labels),
            entry["bytes"].as_u64(),
            "{name}:\n{page}"
        );
    }
    // 51 one-page FREEs and 7 three-page DONTNEEDs.
    assert_eq!(
        sample(&page, "memtrace_process_released_bytes_total", &process),
        Some((51 + 7 * 3) * 4096)
    );
    // Its cgroup's series count the traced processes in it: the idle target made no call.
    assert_eq!(
        sample(
            &page,
            "memtrace_released_bytes_total",
            &support::cgroup_labels(&cgroup)
        ),
        Some((51 + 7 * 3) * 4096)
    );
    // The idle target made no call: no madvise series for it.
    assert!(!page.contains(&format!(
        r#"memtrace_process_madvise_calls_total{{pid="{idle_pid}""#
    )));
    let (status, _, _) = get(port, "/nope").expect("scrape /nope");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    memtrace.interrupt();
    drop(idle);
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_port_in_use_is_one_clear_line() {
    if !privileged() {
        return;
    }
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let workload = Workload::spawn(&["madvise", "--op", "dontneed:1:1"]);
    let output = Command::new(MEMTRACE)
        .args(["--pid", &workload.pid.to_string(), "--prometheus", &port])
        .output()
        .expect("run memtrace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} for --prometheus"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

/// The page's Content-Length, as a HEAD request or a GET says it.
fn content_length(headers: &str) -> Option<usize> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
}

/// What a scraper or a hostile client meets over loopback: HEAD says the length GET sends,
/// a query string is ignored, and past the cap of connections served at once a new one is
/// turned away at once (503) while the others hold theirs — and served again once they go.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn the_exporter_answers_head_query_strings_and_caps_connections() {
    if !privileged() {
        return;
    }
    let port = free_port();
    let idle = Workload::spawn(&["madvise", "--op", "dontneed:1:1"]);
    let memtrace = Memtrace::attach(&[
        "--pid",
        &idle.pid.to_string(),
        "--prometheus",
        &port.to_string(),
    ]);
    // Nothing happens to the idle target: once its first page is out, the page stays the
    // same between refreshes, so a HEAD and a GET in a row see the same page.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, head_headers, head_body) =
            support::request(port, "HEAD", "/metrics").expect("HEAD");
        let (_, get_headers, body) = get(port, "/metrics?name[]=memtrace_rss_bytes").expect("GET");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(head_body, "", "HEAD has no body");
        assert_eq!(
            content_length(&get_headers),
            Some(body.len()),
            "{get_headers}"
        );
        if body.contains("memtrace_process_rss_bytes{")
            && content_length(&head_headers) == Some(body.len())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HEAD {head_headers} vs GET {}",
            body.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Connections that send nothing hold every slot (the server waits 5 s for a request).
    let held: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    // Let the server accept them all before the next one.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, _, body) = get(port, "/metrics").expect("a connection past the cap");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "turned away at once"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = get(port, "/metrics").expect("scrape after the flood");
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    memtrace.interrupt();
    drop(idle);
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
}

/// Debian's promtool (package `prometheus`) accepts a real page with every kind of family:
/// per cgroup and per process, stall histograms (a page-cache read in a small memory cgroup),
/// user-mode faults (`--fault-events`), smaps_rollup of a `--pid` target.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn promtool_accepts_the_page() {
    if !privileged() {
        return;
    }
    let runs = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing (Debian's prometheus package; `cargo xtask test` installs it)"
        );
        eprintln!("\n*** SKIPPED: promtool is missing (apt-get install prometheus) ***\n");
        return;
    }
    let Some(cgroup) = support::MemCgroup::new("promtool", 96 << 20) else {
        return;
    };
    let port = free_port();
    let mut reader = Workload::spawn_in_cgroup(&cgroup.path, &["page-cache", "--mib", "256"]);
    // A second target that waits keeps memtrace running after the reader exits.
    let idle = Workload::spawn(&["madvise", "--op", "dontneed:1:1"]);
    let mut memtrace = Memtrace::attach(&[
        "--pid",
        &reader.pid.to_string(),
        "--pid",
        &idle.pid.to_string(),
        "--prometheus",
        &port.to_string(),
        "--fault-events",
        "--prometheus-processes",
        "3",
    ]);
    // Every fault is a JSON line: read them as they come, or memtrace would block on a full
    // pipe (and serve no page).
    let mut stdout = memtrace.take_stdout();
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    reader.go();
    let _ = reader.record();
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (_, _, body) = get(port, "/metrics").expect("scrape");
        if body.contains("memtrace_reclaim_stall_seconds_bucket{")
            && body.contains("memtrace_process_user_page_faults_total{")
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no stall histogram appeared:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    memtrace.interrupt();
    drop(idle);
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let _ = drain.join();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(page.as_bytes())
        .expect("page to promtool");
    let result = check.wait_with_output().expect("promtool result");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        result.status.success() && said.is_empty(),
        "promtool: {said}\n{page}"
    );
}
