//! `memtrace go`: the Go madvise-mode verdict on a real Go program (memtrace/tests/go/release,
//! built here with the local Go toolchain), checked against independent truth: `go version`,
//! the program's own record, /proc/PID/smaps_rollup read by the test, and a bpftrace count of
//! the same madvise calls.

mod support;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use serde_json::Value;
use support::{Memtrace, Workload, privileged};

const MIB: u64 = 1 << 20;
/// Heap the Go program allocates, touches and then drops.
const HEAP_MIB: u64 = 256;
const FREE: u64 = 8;
const DONTNEED: u64 = 4;

/// Whether `go` and `bpftrace` (the independent oracle) can run. Outside CI the tests skip
/// without them; under CI (`cargo xtask test` installs golang-go) they fail instead.
fn tools_available() -> bool {
    for tool in ["go", "bpftrace"] {
        let runs = Command::new(tool)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            || Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !runs {
            assert!(
                std::env::var_os("CI").is_none(),
                "`{tool}` is missing and CI is set: refusing to skip"
            );
            eprintln!("\n*** SKIPPED: `{tool}` is not installed ***\n");
            return false;
        }
    }
    true
}

/// The release program, built once per test binary into target/tmp.
fn release_program() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("go-release-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create build dir");
        let binary = dir.join("release");
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go/release/main.go");
        let output = Command::new("go")
            .current_dir(&dir)
            .args(["build", "-o"])
            .arg(&binary)
            .arg(&source)
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            // CI may run without HOME, where go has no default build cache.
            .env("GOCACHE", dir.join("cache"))
            .output()
            .expect("run go build");
        assert!(
            output.status.success(),
            "go build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        binary
    })
}

/// What `go version BINARY` says built it (`BINARY: go1.19.8` → `go1.19.8`).
fn go_version_of(binary: &PathBuf) -> String {
    let output = Command::new("go")
        .arg("version")
        .arg(binary)
        .output()
        .expect("run go version");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let (_, version) = text
        .trim_end()
        .rsplit_once(": ")
        .expect("go version output");
    version.to_owned()
}

/// The running Go program: prints `{"ready":…,"pid":…}`, releases its heap on a line, prints
/// a record, exits on another line.
struct GoProgram {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl GoProgram {
    fn spawn(godebug: Option<&str>) -> Self {
        let mut command = Command::new(release_program());
        command
            .arg("--mib")
            .arg(HEAP_MIB.to_string())
            .env_remove("GODEBUG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(godebug) = godebug {
            command.env("GODEBUG", godebug);
        }
        let mut child = command.spawn().expect("spawn the Go program");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let ready = read_json(&mut stdout);
        assert_eq!(ready["ready"], true, "{ready}");
        let pid = ready["pid"].as_u64().expect("pid") as u32;
        Self {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// Drops the heap and calls debug.FreeOSMemory(); returns the program's record.
    fn release(&mut self) -> Value {
        self.stdin.write_all(b"go\n").expect("send go");
        read_json(&mut self.stdout)
    }

    /// Lets the program exit after its release (it waits for a second line).
    fn exit(mut self) {
        self.stdin.write_all(b"bye\n").expect("send bye");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the Go program did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(status.success(), "Go program failed: {status}");
    }
}

impl Drop for GoProgram {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_json(reader: &mut impl std::io::BufRead) -> Value {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// Rss, Anonymous and LazyFree of a process, in bytes, read by the test itself.
#[derive(Debug, Clone, Copy)]
struct Smaps {
    rss: u64,
    anonymous: u64,
    lazy_free: u64,
}

fn smaps(pid: u32) -> Smaps {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from smaps_rollup"))
            * 1024
    };
    Smaps {
        rss: field("Rss:"),
        anonymous: field("Anonymous:"),
        lazy_free: field("LazyFree:"),
    }
}

/// An independent count of the successful madvise calls of one process, by advice: calls and
/// page-rounded bytes, as bpftrace sees them on the same tracepoints.
struct Oracle {
    child: Child,
    /// bpftrace's stdout, line by line, read by a thread so that no wait can hang.
    lines: std::sync::mpsc::Receiver<String>,
}

/// How long bpftrace may take to attach, or to print its maps once interrupted.
const BPFTRACE_TIMEOUT: Duration = Duration::from_secs(60);

impl Oracle {
    fn attach(pid: u32) -> Self {
        let script = format!(
            "BEGIN {{ printf(\"ready\\n\"); }}
             tracepoint:syscalls:sys_enter_madvise /pid == {pid}/ {{
                 @len[tid] = (args->len_in + 4095) & ~4095; @adv[tid] = args->behavior;
                 @pending[tid] = 1; }}
             tracepoint:syscalls:sys_exit_madvise /pid == {pid} && @pending[tid]/ {{
                 if (args->ret == 0) {{ @calls[@adv[tid]] = count(); @bytes[@adv[tid]] = sum(@len[tid]); }}
                 delete(@pending[tid]); delete(@len[tid]); delete(@adv[tid]); }}"
        );
        let mut child = Command::new("bpftrace")
            .args(["-B", "line", "-e", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bpftrace");
        let stdout = BufReader::new(child.stdout.take().expect("bpftrace stdout"));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let oracle = Self { child, lines };
        loop {
            match oracle.lines.recv_timeout(BPFTRACE_TIMEOUT) {
                Ok(line) if line.trim() == "ready" => return oracle,
                Ok(_) => {}
                Err(e) => panic!("bpftrace did not attach within {BPFTRACE_TIMEOUT:?}: {e}"),
            }
        }
    }

    /// Stops bpftrace and returns `advice → (calls, bytes)` of successful calls.
    fn finish(mut self) -> BTreeMap<u64, (u64, u64)> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = std::time::Instant::now() + BPFTRACE_TIMEOUT;
        let mut text = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => text.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("bpftrace did not print its maps within {BPFTRACE_TIMEOUT:?} of SIGINT");
                }
            }
        }
        let _ = self.child.wait();
        let mut counts: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for line in &text {
            let Some((key, value)) = line.split_once("]: ") else {
                continue;
            };
            let Some((map, advice)) = key.split_once('[') else {
                continue;
            };
            let (advice, value): (u64, u64) = (advice.parse().unwrap(), value.parse().unwrap());
            let entry = counts.entry(advice).or_default();
            match map {
                "@calls" => entry.0 = value,
                "@bytes" => entry.1 = value,
                _ => {}
            }
        }
        counts
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `advice → (calls, bytes)` of successful calls in memtrace's per-advice list.
fn memtrace_counts(madvise: &Value) -> BTreeMap<u64, (u64, u64)> {
    madvise
        .as_array()
        .expect("madvise list")
        .iter()
        .map(|a| {
            let n = |k: &str| a[k].as_u64().unwrap();
            (n("advice"), (n("calls") - n("failed"), n("bytes")))
        })
        .filter(|(_, (calls, _))| *calls > 0)
        .collect()
}

/// One run: the Go program under `memtrace go --json`, a plain `memtrace --json --pid`, and
/// the bpftrace oracle, all attached before it releases.
struct Run {
    verdict: Value,
    summary: Value,
    record: Value,
    oracle: BTreeMap<u64, (u64, u64)>,
    before: Smaps,
    after: Smaps,
    version: String,
    pid: u32,
}

fn run(godebug: Option<&str>) -> Run {
    let mut program = GoProgram::spawn(godebug);
    let pid = program.pid.to_string();
    let before = smaps(program.pid);
    let oracle = Oracle::attach(program.pid);
    let report = Memtrace::attach(&["--pid", &pid]);
    let go = Memtrace::attach_with(&["go", "--pid", &pid, "--wait", "60", "--json"]);
    let record = program.release();
    // `memtrace go` stops by itself once the release burst has settled.
    let output = go.finish();
    assert!(output.status.success(), "memtrace go: {}", output.stderr);
    assert_eq!(output.lines.len(), 1, "one JSON object");
    let verdict = output.lines[0].clone();
    report.interrupt();
    let report = report.finish();
    assert!(report.status.success(), "memtrace: {}", report.stderr);
    let summary = report.summary().clone();
    let oracle = oracle.finish();
    let after = smaps(program.pid);
    let run = Run {
        verdict,
        summary,
        record,
        oracle,
        before,
        after,
        version: go_version_of(release_program()),
        pid: program.pid,
    };
    program.exit();
    run
}

/// What holds in every mode.
fn assert_common(run: &Run, godebug: Option<&str>) {
    let v = &run.verdict;
    assert_eq!(v["type"], "go_verdict");
    assert_eq!(v["pid"], run.pid);
    assert_eq!(v["go"], true);
    // The version read from the binary is exactly what `go version` and the runtime say.
    assert_eq!(v["go_version"], run.version.as_str());
    assert_eq!(v["go_version"], run.record["version"]);
    assert_eq!(v["godebug"], godebug.map_or(Value::Null, Value::from));
    // Every successful madvise call, hints included, matches bpftrace exactly (both count the
    // same syscalls of the same process between attach and stop; the program is idle on
    // stdin before and after its release).
    assert_eq!(memtrace_counts(&v["madvise"]), run.oracle, "{v}");
    let released: u64 = run
        .oracle
        .iter()
        .filter(|(advice, _)| [DONTNEED, FREE].contains(advice))
        .map(|(_, (_, bytes))| bytes)
        .sum();
    assert_eq!(v["released_bytes"], released);
    // Every page of the dropped heap was touched and is free after the GC, and
    // FreeOSMemory returns all free pages: at least the whole heap is released. (The
    // program's own heap_released is cumulative since start and shrinks when pages are
    // reused, so it is only a bound, not the window's exact bytes.)
    let allocated = run.record["allocated"].as_u64().unwrap();
    assert_eq!(allocated, HEAP_MIB * MIB);
    assert!(released >= allocated, "released {released} < {allocated}");
    assert!(run.record["heap_released"].as_u64().unwrap() >= allocated);
    // memtrace's memory picture is smaps_rollup after the release. It is not exactly the
    // test's later reading: MADV_FREE queues pages in per-CPU LRU batches (up to 31 folios)
    // and LazyFree counts them only once a batch drains, so up to a batch per CPU may appear
    // after memtrace looked (seen here: 2 pages).
    let batches = 31 * 4096 * std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let seen = v["memory"]["lazy_free"].as_u64().unwrap();
    assert!(
        seen <= run.after.lazy_free && run.after.lazy_free - seen <= batches,
        "memtrace LazyFree {seen}, later {}",
        run.after.lazy_free
    );
    // The plain report of the same run counts the same calls and carries the same verdict.
    let process = run.summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == run.pid)
        .expect("pid in summary");
    assert_eq!(memtrace_counts(&process["madvise"]), run.oracle);
    let in_report = &run.summary["go_verdicts"][0];
    assert_eq!(in_report["pid"], run.pid);
    assert_eq!(in_report["summary"], v["summary"]);
}

#[test]
fn go_default_is_confirmed_dontneed() {
    if !privileged() || !tools_available() {
        return;
    }
    let run = run(None);
    assert_common(&run, None);
    let v = &run.verdict;
    assert_eq!(v["verdict"], "confirmed", "{v}");
    assert_eq!(v["summary"], "CONFIRMED MADV_DONTNEED");
    assert_eq!(v["expected"]["mode"], "DONTNEED");
    assert_eq!(v["observed"], "DONTNEED");
    assert!(
        v["expected"]["reason"]
            .as_str()
            .unwrap()
            .contains("GODEBUG unset → MADV_DONTNEED by default"),
        "{v}"
    );
    assert_eq!(v["fix"], Value::Null);
    assert!(!run.oracle.contains_key(&FREE), "{:?}", run.oracle);
    // DONTNEED frees at once: nothing is lazily free, and the heap left RSS.
    assert_eq!(run.after.lazy_free, 0);
    let dropped = run.before.anonymous - run.after.anonymous;
    assert!(
        dropped >= HEAP_MIB * MIB * 9 / 10,
        "{run:?}",
        run = (run.before, run.after)
    );
}

#[test]
fn madvdontneed_0_is_confirmed_free_and_stays_in_rss() {
    if !privileged() || !tools_available() {
        return;
    }
    let godebug = "madvdontneed=0";
    let run = run(Some(godebug));
    assert_common(&run, Some(godebug));
    let v = &run.verdict;
    assert_eq!(v["verdict"], "confirmed", "{v}");
    assert_eq!(v["summary"], "CONFIRMED MADV_FREE");
    assert_eq!(v["observed"], "FREE");
    assert!(
        v["expected"]["reason"]
            .as_str()
            .unwrap()
            .ends_with("GODEBUG madvdontneed=0 → MADV_FREE"),
        "{v}"
    );
    assert!(v["fix"].as_str().unwrap().contains("madvdontneed"), "{v}");
    // Issue 2: the plain report shows the MADV_FREE bytes.
    let free_bytes = run.oracle[&FREE].1;
    assert!(!run.oracle.contains_key(&DONTNEED), "{:?}", run.oracle);
    // The freed pages stay in RSS as LazyFree: more than 90 % of the FREE bytes (pages of
    // the released ranges that were never touched add bytes but no LazyFree), never more.
    let lazy = run.after.lazy_free - run.before.lazy_free;
    assert!(
        lazy * 10 > free_bytes * 9,
        "LazyFree +{lazy} of {free_bytes}"
    );
    assert!(lazy <= free_bytes, "LazyFree +{lazy} > FREE {free_bytes}");
    assert!(run.after.rss >= HEAP_MIB * MIB, "{:?}", run.after);
    assert!(
        v["memory"]["meaning"]
            .as_str()
            .unwrap()
            .ends_with("of RSS is LazyFree: reclaimable on pressure, not a leak"),
        "{v}"
    );
}

#[test]
fn non_go_process_gets_its_observed_mode() {
    if !privileged() {
        return;
    }
    // 8 DONTNEED calls of 4 pages and 4 FREE calls of 2 pages: DONTNEED covers more bytes.
    let mut workload = Workload::spawn(&["madvise", "--op", "dontneed:8:4", "--op", "free:4:2"]);
    let pid = workload.pid.to_string();
    let memtrace = Memtrace::attach_with(&["go", "--pid", &pid, "--wait", "60", "--json"]);
    workload.go();
    let record = workload.record();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let v = &output.lines[0];
    assert_eq!(v["go"], false);
    assert_eq!(v["verdict"], "not_go");
    assert_eq!(v["summary"], "NOT A GO BINARY; observed MADV_DONTNEED");
    assert_eq!(
        v["expected"]["reason"],
        "not a Go binary (no Go build information found)"
    );
    let expected: BTreeMap<u64, (u64, u64)> = record["advice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let n = |k: &str| a[k].as_u64().unwrap();
            (n("advice"), (n("calls") - n("failed"), n("bytes")))
        })
        .collect();
    assert_eq!(memtrace_counts(&v["madvise"]), expected);
    assert!(
        v["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("also 32.0 KiB released with MADV_FREE")),
        "{v}"
    );
}

#[test]
fn go_errors_are_one_line() {
    if !privileged() || !tools_available() {
        return;
    }
    let one_line = |args: &[&str], expected: &str| {
        let output = Command::new(support::MEMTRACE)
            .args(args)
            .output()
            .expect("run memtrace");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("attached")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(expected), "{stderr}");
    };
    // A kernel thread has no user memory (nor an executable).
    one_line(&["go", "--pid", "2"], "is a kernel thread");
    one_line(
        &["go", "--pid", &i32::MAX.to_string()],
        "no process with pid",
    );
    // The process exits while memtrace waits for its first release.
    let program = GoProgram::spawn(None);
    let pid = program.pid.to_string();
    let memtrace = Memtrace::attach_with(&["go", "--pid", &pid, "--wait", "60"]);
    drop(program); // kills it before it releases anything
    let output = memtrace.finish();
    assert!(!output.status.success());
    let last = output.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("pid {pid} exited after"))
            && last.contains("before releasing any memory"),
        "{}",
        output.stderr
    );
}

#[test]
fn nothing_released_within_wait_is_expected_not_confirmed() {
    if !privileged() || !tools_available() {
        return;
    }
    let program = GoProgram::spawn(Some("madvdontneed=0"));
    let pid = program.pid.to_string();
    // The program holds its heap until told to release, which this test never does.
    let output = Memtrace::attach_with(&["go", "--pid", &pid, "--wait", "1", "--json"]).finish();
    assert!(output.status.success(), "{}", output.stderr);
    let v = &output.lines[0];
    assert_eq!(v["verdict"], "expected", "{v}");
    assert_eq!(v["observed"], Value::Null);
    assert_eq!(v["released_bytes"], 0);
    let summary = v["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("EXPECTED MADV_FREE (not yet observed: no release in 1."),
        "{summary}"
    );
    // Nothing was released: the heap is all in RSS and none of it is LazyFree.
    assert_eq!(v["memory"]["lazy_free"], 0);
    assert!(v["memory"]["anonymous"].as_u64().unwrap() >= HEAP_MIB * MIB);
    drop(program); // killed: it is still waiting for its go line
}
