//! `memtrace --stacks`: caller stacks counted in the kernel, checked against the workloads'
//! own records. A C program built with frame pointers (`tests/c/stacks.c`, built by build.rs)
//! releases and maps memory from distinct named functions a known number of times: each
//! function's calls, failures and bytes must be exact, its frame named with file and line. The
//! stripped copy must say its frames have no symbols; a Go program releasing through
//! `debug.FreeOSMemory()` from a named function must show that function, with the bytes the Go
//! runtime itself says it released.

mod support;

use std::{
    io::{BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::{
    MemCgroup, Memtrace, Output, TraceInstance, Workload, bpftrace::Bpftrace, privileged,
};

const WORKLOAD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stacks-workload"));
const STRIPPED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stacks-workload-stripped"));
const SOURCE: &str = include_str!("c/stacks.c");

/// How long a workload lives after its work, for memtrace to place its stacks in its files (a
/// debug build in a TCG guest is slow).
const PLACING: Duration = Duration::from_secs(3);

/// Writes an embedded program to the target's scratch directory, once per name.
fn program(name: &str, bytes: &[u8]) -> PathBuf {
    assert!(
        !bytes.is_empty(),
        "build.rs could not build tests/c/stacks.c (see its cargo warning): is a C compiler installed?"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stacks-workloads");
    std::fs::create_dir_all(&dir).expect("create the workloads' directory");
    let path = dir.join(name);
    // Written to a fresh name and renamed: another test may be running the old file. Fresh
    // per call, not per process: this binary's tests run in parallel threads.
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fresh = dir.join(format!("{name}.{}.{write}", std::process::id()));
    std::fs::write(&fresh, bytes).expect("write the workload");
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&fresh, &path).expect("rename the workload");
    path
}

/// A running program with memtrace-workload's protocol: a ready line, a go line, a record.
struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Program {
    fn spawn(command: &mut Command) -> Self {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        // A test thread that forks while another writes a workload file leaves its child
        // holding the file open for writing until that child execs: exec fails with ETXTBSY
        // meanwhile (the tests here run in parallel threads). It is over within moments.
        let mut tries = 0;
        let mut child = loop {
            match command.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                spawned => break spawned.expect("spawn the workload"),
            }
        };
        let stdin = child.stdin.take();
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

    /// Lets it work and returns its record.
    fn go(&mut self) -> Value {
        let mut stdin = self.stdin.take().expect("go once");
        stdin.write_all(b"go\n").expect("send go");
        // Kept open: the Go program waits for a second line before it exits.
        self.stdin = Some(stdin);
        read_json(&mut self.stdout)
    }

    /// Sends the line the program waits for before exiting.
    fn bye(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"bye\n");
        }
    }
}

impl Drop for Program {
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

/// Runs `memtrace --stacks` (with `extra` arguments) on a fresh C workload until it exits; its
/// record and memtrace's output.
fn run_c(binary: &Path, extra: &[&str]) -> (Value, Output) {
    let mut workload = Program::spawn(&mut Command::new(binary));
    let pid = workload.pid.to_string();
    let memtrace = Memtrace::attach(&[&["--stacks", "--pid", &pid], extra].concat());
    let record = workload.go();
    // memtrace places each new stack in the process's files as soon as the kernel announces
    // it; under QEMU a debug build can take a while. Then the workload exits, memtrace stops,
    // and must still name the stacks of a process that is gone.
    std::thread::sleep(PLACING);
    workload.bye();
    let output = memtrace.finish();
    assert!(
        output.status.success(),
        "memtrace failed: {}",
        output.stderr
    );
    (record, output)
}

fn stacks(process: &Value) -> &Vec<Value> {
    process["stacks"]["top"]
        .as_array()
        .unwrap_or_else(|| panic!("no stacks in {process}"))
}

fn user_frames(stack: &Value) -> &Vec<Value> {
    stack["user"]["frames"]
        .as_array()
        .unwrap_or_else(|| panic!("no user frames in {stack}"))
}

/// The frames that are calls of their own: without the functions inlined into them.
fn calls(stack: &Value) -> Vec<&Value> {
    user_frames(stack)
        .iter()
        .filter(|f| f["inlined"] != true)
        .collect()
}

fn function(frame: &Value) -> &str {
    frame["function"].as_str().unwrap_or("")
}

/// The source line of the first line of `stacks.c` holding `text`.
fn source_line(text: &str) -> u64 {
    SOURCE
        .lines()
        .position(|line| line.contains(text))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("{text} not in stacks.c"))
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn stacks_each_function_counted_exactly_with_its_frame_named() {
    if !privileged() {
        return;
    }
    each_function_counted_exactly(&[]);
}

/// The same where only totals are printed: the kernel then counts each call itself, from
/// arguments read at its exit, and sends no record per call; the stacks must be the same.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn stacks_counted_exactly_where_the_kernel_counts_the_calls() {
    if !privileged() {
        return;
    }
    each_function_counted_exactly(&["--no-events"]);
}

fn each_function_counted_exactly(extra: &[&str]) {
    let (record, output) = run_c(&program("memtrace-stacks", WORKLOAD), extra);
    let pid = record["pid"].as_u64().expect("pid") as u32;
    let process = output.process(pid);
    let stacks = stacks(process);
    assert_eq!(process["stacks"]["others"], 0, "{process}");
    for expected in record["calls"].as_array().expect("calls") {
        let name = expected["function"].as_str().expect("function");
        let matching: Vec<&Value> = stacks
            .iter()
            .filter(|s| s["call"] == expected["call"] && s["detail"] == expected["detail"])
            .filter(|s| user_frames(s).iter().any(|f| function(f) == name))
            .collect();
        let sum = |field: &str| -> u64 {
            matching
                .iter()
                .map(|s| s[field].as_u64().unwrap_or(0))
                .sum()
        };
        assert_eq!(
            (sum("calls"), sum("failed"), sum("bytes")),
            (
                expected["calls"].as_u64().unwrap(),
                expected["failed"].as_u64().unwrap(),
                expected["bytes"].as_u64().unwrap()
            ),
            "{name}: stacks {matching:#?}"
        );
        for stack in matching {
            let frames = calls(stack);
            // Frame 0 is libc's wrapper, which makes the call without a frame: the function
            // that called it comes from the stack top, named with file and line.
            assert!(
                frames[0]["module"]
                    .as_str()
                    .is_some_and(|m| m.contains("libc")),
                "{name}: frame 0 {}",
                frames[0]
            );
            let caller = &frames[1];
            assert_eq!(function(caller), name, "{name}: {frames:#?}");
            assert_eq!(caller["recovered"], true, "{name}: {caller}");
            assert!(
                caller["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("stacks.c")),
                "{caller}"
            );
            assert_eq!(function(frames[2]), "main", "{name}: {frames:#?}");
            assert_eq!(stack["user"]["truncated"], false);
        }
    }
    // File and line: the madvise call in release_dontneed.
    let dontneed = stacks
        .iter()
        .find(|s| s["detail"] == "DONTNEED")
        .expect("a DONTNEED stack");
    assert_eq!(
        calls(dontneed)[1]["line"],
        source_line("return madvise(p, len, MADV_DONTNEED)")
    );
    // libc's mremap moves the stack pointer before its system call without a frame pointer:
    // its caller cannot be found, and the stack says so instead of naming main as the caller.
    let libc_mremap = &record["grow_by_libc"];
    let doubtful: Vec<&Value> = stacks
        .iter()
        .filter(|s| s["call"] == "mremap" && s["bytes"] == libc_mremap["bytes"])
        .filter(|s| {
            !user_frames(s)
                .iter()
                .any(|f| function(f) == "grow_by_syscall")
        })
        .collect();
    assert_eq!(doubtful.len(), 1, "{stacks:#?}");
    let frames = user_frames(doubtful[0]);
    assert!(
        !frames.iter().any(|f| function(f) == "grow_by_libc"),
        "{frames:#?}"
    );
    let doubts = doubtful[0]["user"]["doubts"].as_array().expect("doubts");
    assert!(
        doubts
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.contains("may be missing"))),
        "{doubts:?}"
    );
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn stacks_of_a_stripped_binary_say_so() {
    if !privileged() {
        return;
    }
    let (record, output) = run_c(&program("memtrace-stripd", STRIPPED), &[]);
    let pid = record["pid"].as_u64().expect("pid") as u32;
    let process = output.process(pid);
    let dontneed = stacks(process)
        .iter()
        .find(|s| s["detail"] == "DONTNEED")
        .unwrap_or_else(|| panic!("no DONTNEED stack: {process}"));
    assert_eq!(dontneed["calls"], 3);
    let frames = user_frames(dontneed);
    let in_binary: Vec<&Value> = frames
        .iter()
        .filter(|f| {
            f["module"]
                .as_str()
                .is_some_and(|m| m.ends_with("memtrace-stripd"))
        })
        .collect();
    // The caller (recovered from the stack top) and main.
    assert!(in_binary.len() >= 2, "{frames:#?}");
    for frame in in_binary {
        assert!(frame["function"].is_null(), "{frame}");
        assert!(
            frame["unknown"]
                .as_str()
                .is_some_and(|why| why.contains("stripped")),
            "{frame}"
        );
    }
}

/// The Go program of `tests/go/stacks`, built with the local Go (Debian's golang-go), like
/// tests/golang.rs builds its own.
fn go_program() -> Option<PathBuf> {
    let go_runs = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !go_runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "`go` is not installed, and CI is set: refusing to skip"
        );
        eprintln!("\n*** SKIPPED: `go` is not installed ***\n");
        return None;
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-toolchains");
    // Under `built/`, which the kernel guests get, so they need not build it again.
    let dir = cache.join("built").join("stacks");
    let binary = dir.join("stacks");
    let source = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/go/stacks/main.go"
    ))
    .expect("read the Go source");
    let stamp = dir.join("main.go");
    if std::fs::read(&stamp).is_ok_and(|s| s == source) && binary.exists() {
        return Some(binary);
    }
    std::fs::create_dir_all(&dir).expect("create the Go build directory");
    std::fs::write(dir.join("go.mod"), "module example.com/stacks\n\ngo 1.19\n").expect("go.mod");
    std::fs::write(&stamp, &source).expect("main.go");
    let output = Command::new("go")
        .current_dir(&dir)
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&binary)
        .arg(".")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOENV", "off")
        .env("GOCACHE", cache.join("cache"))
        .env("GOPATH", cache.join("gopath"))
        .output()
        .expect("run go build");
    assert!(
        output.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(binary)
}

/// An independent count of the successful madvise calls a Go function makes, by advice:
/// bpftrace counts them on the calling thread between uprobes on the function's entry and on a
/// marker it calls last (the function keeps its goroutine on one thread).
struct Oracle(Bpftrace);

/// (bpftrace attaches its uprobes slowly in a TCG guest: over a minute on 5.10.)
const BPFTRACE_TIMEOUT: Duration = Duration::from_secs(180);

impl Oracle {
    fn attach(binary: &Path, pid: u32, function: &str, done: &str) -> Self {
        let binary = binary.display();
        let script = format!(
            "BEGIN {{ printf(\"ready\\n\"); }}
             uprobe:{binary}:\"{function}\" /pid == {pid}/ {{ @on[tid] = 1; }}
             uprobe:{binary}:\"{done}\" /pid == {pid}/ {{ delete(@on[tid]); }}
             tracepoint:syscalls:sys_enter_madvise /@on[tid]/ {{
                 @len[tid] = (args->len_in + 4095) & ~4095; @adv[tid] = args->behavior;
                 @pending[tid] = 1; }}
             tracepoint:syscalls:sys_exit_madvise /@pending[tid]/ {{
                 if (args->ret == 0) {{
                     @calls[@adv[tid]] = count(); @bytes[@adv[tid]] = sum(@len[tid]); }}
                 delete(@pending[tid]); delete(@len[tid]); delete(@adv[tid]); }}"
        );
        Self(Bpftrace::attach(&script, BPFTRACE_TIMEOUT, true))
    }

    /// Stops bpftrace: `advice → (calls, bytes)`.
    fn finish(self) -> std::collections::BTreeMap<u64, (u64, u64)> {
        let mut counts = std::collections::BTreeMap::<u64, (u64, u64)>::new();
        // Lines like `@calls[4]: 24`.
        for line in self.0.finish() {
            let Some((key, value)) = line.split_once("]: ") else {
                continue;
            };
            let Some((map, advice)) = key.split_once('[') else {
                continue;
            };
            let number = |s: &str| s.trim().parse::<u64>().expect("a number");
            let entry = counts.entry(number(advice)).or_default();
            match map {
                "@calls" => entry.0 = number(value),
                "@bytes" => entry.1 = number(value),
                _ => {}
            }
        }
        counts
    }
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn stacks_go_release_through_free_os_memory_from_a_named_function() {
    if !privileged() {
        return;
    }
    let Some(binary) = go_program() else {
        return;
    };
    let mut program = Program::spawn(Command::new(&binary).env_remove("GODEBUG"));
    let pid = program.pid.to_string();
    let memtrace = Memtrace::attach(&["--stacks", "--pid", &pid]);
    let oracle = Oracle::attach(
        &binary,
        program.pid,
        "main.releaseFromHere",
        "main.releaseDone",
    );
    program.go();
    // Let memtrace place the stacks in the process's files while it lives, then let it exit.
    std::thread::sleep(PLACING);
    let expected = oracle.finish();
    program.bye();
    let output = memtrace.finish();
    assert!(
        output.status.success(),
        "memtrace failed: {}",
        output.stderr
    );
    let process = output.process(program.pid);
    let through_named: Vec<&Value> = stacks(process)
        .iter()
        .filter(|s| s["call"] == "madvise")
        .filter(|s| {
            user_frames(s)
                .iter()
                .any(|f| function(f) == "main.releaseFromHere")
        })
        .collect();
    let mut counted = std::collections::BTreeMap::<u64, (u64, u64)>::new();
    for stack in &through_named {
        let advice = memtrace_common::advice::from_name(stack["detail"].as_str().unwrap_or(""))
            .map_or(u64::MAX, u64::from);
        let entry = counted.entry(advice).or_default();
        let n = |k: &str| stack[k].as_u64().unwrap_or(0);
        entry.0 += n("calls") - n("failed");
        entry.1 += n("bytes");
    }
    assert!(
        expected.get(&4).is_some_and(|&(calls, _)| calls > 0),
        "the Go runtime released nothing with DONTNEED: {expected:?}"
    );
    assert_eq!(counted, expected, "{through_named:#?}");
    for stack in &through_named {
        // FreeOSMemory is inlined into the caller: a frame of its own, marked inlined.
        assert!(
            user_frames(stack)
                .iter()
                .any(|f| function(f) == "runtime/debug.FreeOSMemory" && f["inlined"] == true),
            "{stack:#}"
        );
        let frames = calls(stack);
        // runtime.madvise makes the call without a frame: its caller comes from the stack top.
        assert_eq!(function(frames[0]), "runtime.madvise", "{frames:#?}");
        assert_eq!(frames[1]["recovered"], true, "{frames:#?}");
    }
}

/// memcg reclaim stalls counted per stack against an independent tracefs count of the same
/// tracepoint for the stalled process: every stall, and every page reclaimed, under a kernel
/// stack that runs through memory-cgroup reclaim.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn stacks_of_memcg_reclaim_stalls() {
    if !privileged() {
        return;
    }
    let Some(cgroup) = MemCgroup::new("stacks", 128 << 20) else {
        return;
    };
    let mut reader = Workload::spawn_in_cgroup(&cgroup.path, &["page-cache", "--mib", "384"]);
    let pid = reader.pid;
    let oracle = TraceInstance::new(
        "stacks",
        &[(
            "vmscan/mm_vmscan_memcg_reclaim_end",
            format!("common_pid == {pid}"),
        )],
    );
    let memtrace = Memtrace::attach(&["--stacks", "--pid", &pid.to_string()]);
    reader.go();
    let record = reader.record();
    assert_eq!(record["bytes_read"], 384u64 << 20);
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let (mut stalls, mut reclaimed) = (0u64, 0u64);
    for line in oracle.lines() {
        if let Some((_, rest)) = line.split_once("mm_vmscan_memcg_reclaim_end:") {
            stalls += 1;
            reclaimed += support::trace_number(rest, "nr_reclaimed=");
        }
    }
    assert!(
        stalls > 10,
        "the cgroup should have forced reclaim: {stalls}"
    );
    let process = output.process(pid);
    let memcg: Vec<&Value> = stacks(process)
        .iter()
        .filter(|s| s["call"] == "memcg_reclaim")
        .collect();
    // Few distinct stacks (one read loop): all are among the top ones shown.
    assert_eq!(process["stacks"]["others"], 0, "{process:#}");
    let sum = |field: &str| -> u64 { memcg.iter().map(|s| s[field].as_u64().unwrap_or(0)).sum() };
    assert_eq!((sum("calls"), sum("reclaimed_pages")), (stalls, reclaimed));
    for stack in memcg {
        let kernel = stack["kernel"]["frames"].as_array().expect("kernel frames");
        assert!(
            kernel
                .iter()
                .any(|f| function(f) == "try_to_free_mem_cgroup_pages"),
            "{kernel:#?}"
        );
        assert!(
            stack["stall_ns"].as_u64().is_some_and(|ns| ns > 0),
            "{stack}"
        );
        // The reader stalled in a read(): its user stack starts in libc's wrapper.
        assert!(!user_frames(stack).is_empty(), "{stack}");
    }
}
