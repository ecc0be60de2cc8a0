//! `--prometheus`: the endpoint is scraped over loopback while tracing, parsed, and its counters
//! compared with the workload's own record.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use support::{MEMTRACE, Memtrace, Workload, privileged};

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// `(status line, headers, body)` of one plain HTTP/1.1 GET.
fn get(port: u16, path: &str) -> std::io::Result<(String, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_owned(), headers.to_owned(), body.to_owned()))
}

/// The value of the sample `name{labels}` in an exposition page, labels matched as written.
fn sample(page: &str, name: &str, labels: &str) -> Option<u64> {
    let key = format!("{name}{{{labels}}} ");
    page.lines()
        .find_map(|line| line.strip_prefix(&key))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn scraped_counters_equal_the_workload_record() {
    if !privileged() {
        return;
    }
    let port = free_port();
    let mut workload = Workload::spawn(&["madvise", "--op", "free:51:1", "--op", "dontneed:7:3"]);
    // A second target that waits forever keeps memtrace running after the first one exits.
    let idle = Workload::spawn(&["madvise", "--op", "dontneed:1:1"]);
    let (pid, idle_pid) = (workload.pid.to_string(), idle.pid.to_string());
    // Field 22 of /proc/PID/stat, read while the workload runs: the series' start_time label.
    let start = support::start_time(workload.pid);
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

    // The page is refreshed once a second: poll until it shows the finished workload.
    let labels = |advice: &str| {
        format!(r#"pid="{pid}",start_time="{start}",comm="memtrace-worklo",advice="{advice}""#)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (status, headers, body) = get(port, "/metrics").expect("scrape /metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("Content-Type: text/plain; version=0.0.4"),
            "{headers}"
        );
        if sample(&body, "memtrace_madvise_calls_total", &labels("DONTNEED")) == Some(7) {
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
            sample(&page, "memtrace_madvise_calls_total", &labels(name)),
            entry["calls"].as_u64(),
            "{name}:\n{page}"
        );
        let bytes_labels = format!("{},release=\"true\"", labels(name));
        assert_eq!(
            sample(&page, "memtrace_madvise_bytes_total", &bytes_labels),
            entry["bytes"].as_u64(),
            "{name}:\n{page}"
        );
    }
    // 51 one-page FREEs and 7 three-page DONTNEEDs.
    assert_eq!(
        sample(
            &page,
            "memtrace_released_bytes_total",
            &format!(r#"pid="{pid}",start_time="{start}",comm="memtrace-worklo""#)
        ),
        Some((51 + 7 * 3) * 4096)
    );
    // The idle target made no call: no madvise series for it.
    assert!(!page.contains(&format!(
        r#"memtrace_madvise_calls_total{{pid="{idle_pid}""#
    )));
    let (status, _, _) = get(port, "/nope").expect("scrape /nope");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    memtrace.interrupt();
    drop(idle);
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
}

#[test]
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
