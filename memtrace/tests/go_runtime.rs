//! The Go runtime's own view in `memtrace go`: the heap figures memtrace reads from a live Go
//! process without its cooperation, checked against the runtime's own truth — the program's
//! `runtime.ReadMemStats`, recorded just before and just after memtrace reads (the GC is off,
//! so only the printing of the records moves anything, by a span at most: ± 8 KiB) — for every
//! toolchain and every way a binary ships: default builds (DWARF), `-ldflags=-w` (symbol
//! table + generated offsets), `-s -w` (the runtime's code, found through .gopclntab), PIE,
//! cgo, a separate debug file, and a real Debian Go daemon (prometheus-node-exporter, whose
//! own go_memstats_* gauges are the truth).

mod support;

use std::{
    fs,
    io::{BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    Memtrace,
    go::{Flags, Program, Source, TOOLCHAINS, Toolchain, available, program, skip_unless_ci},
    privileged,
};

const MIB: u64 = 1 << 20;
/// One runtime page: what printing a record may allocate between the two records.
const SLACK: u64 = 8 << 10;
/// The figures the runtime's record must bracket, memtrace's name → ReadMemStats's.
const EXACT: [&str; 6] = [
    "heap_inuse",
    "heap_idle",
    "heap_released",
    "stack_inuse",
    "heap_sys",
    "sys",
];

/// The heap program (memtrace/tests/go/heap), running: it has allocated its kept set, returned
/// its dropped set, and parked its goroutines.
struct HeapProgram {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    /// MiB of C heap it holds (cgo builds).
    c_mib: u64,
}

impl HeapProgram {
    fn spawn(binary: &Path, godebug: Option<&str>) -> Self {
        let mut command = Command::new(binary);
        command
            .args(["--keep-mib", "48", "--drop-mib", "64"])
            .env_remove("GODEBUG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(godebug) = godebug {
            command.env("GODEBUG", godebug);
        }
        let mut child = command.spawn().expect("spawn the heap program");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let ready = read_json(&mut stdout);
        assert_eq!(ready["ready"], true, "{ready}");
        Self {
            pid: ready["pid"].as_u64().expect("pid") as u32,
            c_mib: ready["c_mib"].as_u64().unwrap_or(0),
            child,
            stdin,
            stdout,
        }
    }

    /// The runtime's own record (runtime.ReadMemStats), now.
    fn stats(&mut self) -> Value {
        self.stdin.write_all(b"stats\n").expect("ask for stats");
        read_json(&mut self.stdout)
    }
}

impl Drop for HeapProgram {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"bye\n");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_json(reader: &mut impl std::io::BufRead) -> Value {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// `memtrace go --pid PID --json` for a process that releases nothing: its verdict object.
fn memtrace_go(pid: u32) -> Value {
    let output =
        Memtrace::attach_with(&["go", "--pid", &pid.to_string(), "--wait", "1", "--json"]).finish();
    assert!(output.status.success(), "memtrace go: {}", output.stderr);
    assert_eq!(output.lines.len(), 1, "{}", output.stderr);
    output.lines[0].clone()
}

/// One reading: the runtime's record, memtrace's view, the runtime's record again.
struct Reading {
    before: Value,
    verdict: Value,
    after: Value,
    c_mib: u64,
}

impl Reading {
    fn take(binary: &Path, godebug: Option<&str>) -> Self {
        let mut program = HeapProgram::spawn(binary, godebug);
        let before = program.stats();
        let verdict = memtrace_go(program.pid);
        let after = program.stats();
        Self {
            before,
            verdict,
            after,
            c_mib: program.c_mib,
        }
    }

    fn runtime(&self) -> &Value {
        &self.verdict["runtime"]
    }

    /// Every figure of [`EXACT`] within the runtime's two records ± one page; returns the
    /// largest distance from the nearer record, for the report.
    fn assert_exact(&self, what: &str) -> u64 {
        let figures = &self.runtime()["figures"];
        assert!(
            figures.is_object(),
            "{what}: no figures: {}",
            self.runtime()
        );
        let mut worst = 0;
        for name in EXACT {
            let seen = figures[name]["bytes"].as_u64().expect("a figure");
            worst = worst.max(distance(seen, &self.before[name], &self.after[name]));
            assert!(
                bracketed(seen, &self.before[name], &self.after[name]),
                "{what}: {name} {seen} outside the runtime's records {} … {} (± {SLACK})",
                self.before[name],
                self.after[name]
            );
        }
        worst
    }
}

fn bracketed(seen: u64, before: &Value, after: &Value) -> bool {
    let (a, b) = (
        before.as_u64().expect("record"),
        after.as_u64().expect("record"),
    );
    a.min(b).saturating_sub(SLACK) <= seen && seen <= a.max(b) + SLACK
}

fn distance(seen: u64, before: &Value, after: &Value) -> u64 {
    let (a, b) = (before.as_u64().unwrap_or(0), after.as_u64().unwrap_or(0));
    if (a.min(b)..=a.max(b)).contains(&seen) {
        0
    } else {
        seen.abs_diff(a).min(seen.abs_diff(b))
    }
}

/// Every build kind of the heap program, built by `toolchain`, read under both release modes.
fn check_toolchain(toolchain: Toolchain) {
    if !privileged() || !available("go") {
        return;
    }
    let build = |flags| match program(toolchain, Source::Heap, flags) {
        Ok(program) => Some(program),
        Err(why) => {
            skip_unless_ci(&format!("no {} {flags:?} build: {why}", toolchain.name()));
            None
        }
    };
    let Some(plain) = build(Flags::Plain) else {
        return;
    };
    let what = |flags: Flags| format!("{} {}", plain.version, flags.name());

    // Default build, MADV_DONTNEED: DWARF, and the generated table agrees with it (no note).
    let reading = Reading::take(&plain.path, None);
    let runtime = reading.runtime();
    assert_eq!(runtime["located_by"], "DWARF", "{runtime}");
    assert_eq!(
        runtime["note"],
        Value::Null,
        "the generated table is stale for {}: run `cargo xtask go-layouts`",
        plain.version
    );
    let worst = reading.assert_exact(&what(Flags::Plain));
    let reconciliation = &runtime["reconciliation"];
    // DONTNEED: nothing the runtime released stays resident.
    assert_eq!(reconciliation["released_resident"], 0, "{reconciliation}");
    eprintln!("{}: worst distance {worst} B", what(Flags::Plain));

    // MADV_FREE: the dropped set stays resident as LazyFree, and the verdict says so.
    let reading = Reading::take(&plain.path, Some("madvdontneed=0"));
    reading.assert_exact(&format!("{} madvdontneed=0", what(Flags::Plain)));
    let r = &reading.runtime()["reconciliation"];
    let released = reading.after["heap_released"].as_u64().unwrap();
    let resident = r["released_resident"].as_u64().unwrap();
    assert!(
        resident >= 48 * MIB && resident <= released,
        "LazyFree of the dropped 64 MiB: {r}"
    );
    assert!(
        r["verdict"]
            .as_str()
            .unwrap()
            .contains("released with MADV_FREE is still resident as LazyFree"),
        "{r}"
    );
    check_residual(r);

    for flags in [Flags::NoDwarf, Flags::Stripped, Flags::Pie, Flags::Cgo] {
        let Some(built) = build(flags) else {
            continue;
        };
        let reading = Reading::take(&built.path, None);
        let runtime = reading.runtime();
        let by = runtime["located_by"].as_str().unwrap_or_default();
        let expected = match flags {
            Flags::NoDwarf => "symbol table, offsets generated from ",
            Flags::Stripped => "runtime code found through .gopclntab, offsets generated from ",
            _ => "DWARF",
        };
        assert!(by.starts_with(expected), "{}: {runtime}", what(flags));
        let worst = reading.assert_exact(&what(flags));
        eprintln!("{}: located by {by}; worst distance {worst} B", what(flags));
        if flags == Flags::Cgo {
            // 32 MiB of C heap the runtime never sees: a positive residual.
            assert_eq!(reading.c_mib, 32);
            let r = &runtime["reconciliation"];
            assert!(r["residual"].as_i64().unwrap() >= 16 * MIB as i64, "{r}");
            assert!(
                r["residual_meaning"]
                    .as_str()
                    .unwrap()
                    .contains("of anonymous memory is not the Go runtime's"),
                "{r}"
            );
        }
    }
}

/// The arithmetic adds up: anonymous = ready + released-resident + residual.
fn check_residual(r: &Value) {
    let n = |k: &str| r[k].as_i64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert_eq!(
        n("anonymous"),
        n("ready") + n("released_resident") + n("residual"),
        "{r}"
    );
}

macro_rules! toolchain_matrix {
    ($($test:ident => $toolchain:expr,)*) => {
        $(
            #[test]
            #[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
            fn $test() {
                check_toolchain($toolchain);
            }
        )*
    };
}

toolchain_matrix! {
    runtime_view_with_local_go => TOOLCHAINS[0],
    runtime_view_with_go1_21 => TOOLCHAINS[1],
    runtime_view_with_go1_22 => TOOLCHAINS[2],
    runtime_view_with_go1_23 => TOOLCHAINS[3],
    runtime_view_with_go1_24 => TOOLCHAINS[4],
    runtime_view_with_go1_25 => TOOLCHAINS[5],
    runtime_view_with_go1_26 => TOOLCHAINS[6],
    runtime_view_with_go1_27 => TOOLCHAINS[7],
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("memtrace-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a scratch directory");
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(program: &str, args: &[&std::ffi::OsStr]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?}");
}

/// Splits `binary` into a stripped executable and a debug file, as Debian's dh_strip does.
fn split_debug(binary: &Program, dir: &Path) -> (PathBuf, PathBuf) {
    let exe = dir.join("heap");
    let debug = dir.join("heap.debug");
    fs::copy(&binary.path, &exe).expect("copy the binary");
    run(
        "objcopy",
        &[
            "--only-keep-debug".as_ref(),
            exe.as_os_str(),
            debug.as_os_str(),
        ],
    );
    run(
        "strip",
        &[
            "--strip-unneeded".as_ref(),
            "--remove-section=.comment".as_ref(),
            exe.as_os_str(),
        ],
    );
    (exe, debug)
}

fn build_id(path: &Path) -> Option<String> {
    let output = Command::new("readelf").arg("-n").arg(path).output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
}

/// Debian ships Go daemons stripped, their DWARF in `-dbgsym` packages: memtrace finds it by
/// build id under /usr/lib/debug/.build-id, or by .gnu_debuglink next to the executable.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn separate_debug_files_as_gdb_finds_them() {
    if !privileged() || !available("go") || !available("objcopy") {
        return;
    }
    let local = Toolchain::Local;
    // By build id: the cgo build is linked by the system linker, which writes a GNU build id.
    let cgo = program(local, Source::Heap, Flags::Cgo).unwrap_or_else(|why| panic!("{why}"));
    let scratch = Scratch::new("debug-build-id");
    let (exe, debug) = split_debug(&cgo, &scratch.0);
    let id = build_id(&exe).expect("a GNU build id");
    let installed = Path::new("/usr/lib/debug/.build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    fs::create_dir_all(installed.parent().unwrap()).expect("create the build-id directory");
    fs::copy(&debug, &installed).expect("install the debug file");
    let reading = Reading::take(&exe, None);
    let _ = fs::remove_file(&installed);
    let by = reading.runtime()["located_by"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        by,
        format!(
            "DWARF of the debug file /proc/{}/root{}",
            pid_of(&reading),
            installed.display()
        ),
        "{}",
        reading.runtime()
    );
    reading.assert_exact("debug file by build id");

    // By debug link, in .debug/ beside the executable (and checked by its CRC).
    let plain = program(local, Source::Heap, Flags::Plain).unwrap_or_else(|why| panic!("{why}"));
    let scratch = Scratch::new("debug-link");
    let (exe, debug) = split_debug(&plain, &scratch.0);
    fs::create_dir_all(scratch.0.join(".debug")).unwrap();
    let linked = scratch.0.join(".debug/heap.debug");
    fs::rename(&debug, &linked).unwrap();
    run(
        "objcopy",
        &[
            format!("--add-gnu-debuglink={}", linked.display()).as_ref(),
            exe.as_os_str(),
        ],
    );
    let reading = Reading::take(&exe, None);
    let by = reading.runtime()["located_by"].as_str().unwrap_or_default();
    assert!(by.ends_with("/.debug/heap.debug"), "{}", reading.runtime());
    reading.assert_exact("debug file by debug link");
}

fn pid_of(reading: &Reading) -> u64 {
    reading.verdict["pid"].as_u64().expect("pid")
}

/// A real Go daemon as Debian ships it: prometheus-node-exporter (stripped, cgo, Go 1.19),
/// whose own go_memstats_* gauges, scraped just before and after memtrace reads, are the truth.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn prometheus_node_exporter_agrees_with_its_own_gauges() {
    const EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
    if !privileged() {
        return;
    }
    if !Path::new(EXPORTER).exists() {
        return skip_unless_ci(
            "prometheus-node-exporter is not installed (cargo xtask test installs it)",
        );
    }
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut child = Command::new(EXPORTER)
        .arg(format!("--web.listen-address={address}"))
        .args(["--collector.disable-defaults", "--collector.meminfo"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node-exporter");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while scrape(&address).is_none() {
        assert!(Instant::now() < deadline, "node-exporter did not serve");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gauges = [
        ("heap_inuse", "go_memstats_heap_inuse_bytes"),
        ("heap_idle", "go_memstats_heap_idle_bytes"),
        ("heap_released", "go_memstats_heap_released_bytes"),
        ("stack_inuse", "go_memstats_stack_inuse_bytes"),
    ];
    let mut last = String::new();
    for _ in 0..5 {
        let before = scrape(&address).expect("scrape");
        let verdict = memtrace_go(pid);
        let after = scrape(&address).expect("scrape");
        let runtime = &verdict["runtime"];
        assert!(
            runtime["located_by"]
                .as_str()
                .is_some_and(|by| by.starts_with("runtime code found through .gopclntab")),
            "{runtime}"
        );
        let figures = &runtime["figures"];
        let off: Vec<String> = gauges
            .iter()
            .filter_map(|(name, gauge)| {
                let seen = figures[name]["bytes"].as_u64()?;
                let (a, b) = (gauge_value(&before, gauge)?, gauge_value(&after, gauge)?);
                (!bracketed(seen, &a.into(), &b.into()))
                    .then(|| format!("{name} {seen} vs {a} … {b}"))
            })
            .collect();
        if off.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        // A GC or a scavenge between the two scrapes moves the gauges: read again.
        last = off.join(", ");
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("node-exporter's gauges never bracketed memtrace's figures: {last}");
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn scrape(address: &str) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.contains("go_memstats_heap_inuse_bytes")
        .then_some(text)
}

fn gauge_value(page: &str, name: &str) -> Option<u64> {
    page.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.trim();
        value.parse::<f64>().ok().map(|v| v as u64)
    })
}
