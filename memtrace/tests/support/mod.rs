//! Shared harness for the privileged integration tests: spawns workloads and memtrace, and
//! reads back both sides' records.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    io::{BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod bpftrace;
pub mod go;
mod lines;

use lines::Lines;

pub const MEMTRACE: &str = env!("CARGO_BIN_EXE_memtrace");
pub const WORKLOAD: &str = env!("CARGO_BIN_EXE_memtrace-workload");

/// How long memtrace may take to load and attach (the first load also JITs every program).
/// In a TCG guest on a loaded host (several guests and builds sharing two cores) it has taken
/// over a minute.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(180);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the privileged tests can run. In CI (`CI` set) they must: not being root fails the
/// test instead of skipping it, so a CI run never passes without loading real eBPF.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        watchdog();
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("integration tests need root to load eBPF, and CI is set: refusing to skip");
    }
    eprintln!(
        "\n*** SKIPPED: this test loads eBPF programs and needs root (sudo -E cargo xtask test) ***\n"
    );
    false
}

/// How long one test binary may run before it is taken to hang (the longest, global reclaim,
/// takes about a minute on the host and five in a guest).
const BINARY_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Ends this test binary, and every process it started, if it runs longer than
/// [`BINARY_TIMEOUT`]: a hung child must fail the run, not stall CI until its time limit.
fn watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(BINARY_TIMEOUT);
            let children = kill_children();
            eprintln!(
                "\n*** test binary still running after {BINARY_TIMEOUT:?}: something hung; killed its processes {children:?} ***\n"
            );
            std::process::exit(101);
        });
    });
}

/// SIGKILLs every direct child of this process; returns their pids and names.
fn kill_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_field(&stat, 4) == Some(me.as_str()) {
            // SAFETY: plain kill(2) on a child of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let comm = stat
                .split_once(" (")
                .and_then(|(_, rest)| rest.rsplit_once(')'));
            killed.push(format!("{pid} {}", comm.map_or("?", |(c, _)| c)));
        }
    }
    killed
}

/// A running memtrace-workload, set up and waiting for the go signal.
pub struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

impl Workload {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_command(Command::new(WORKLOAD).args(args))
    }

    /// Spawns the workload inside a memory cgroup (it joins before it allocates).
    pub fn spawn_in_cgroup(cgroup: &std::path::Path, args: &[&str]) -> Self {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            cgroup.display()
        );
        Self::spawn_command(
            Command::new("sh")
                .args(["-c", &script, WORKLOAD])
                .args(args),
        )
    }

    /// Spawns the workload already inside a cgroup: it joins between fork and exec, so a
    /// system-wide memtrace, which meets it at its exec, finds it there.
    pub fn spawn_joined(cgroup: &std::path::Path, args: &[&str]) -> Self {
        use std::os::{fd::AsRawFd, unix::process::CommandExt};
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(cgroup.join("cgroup.procs"))
            .expect("open cgroup.procs");
        let fd = procs.as_raw_fd();
        let mut command = Command::new(WORKLOAD);
        command.args(args);
        // SAFETY: the closure only calls write(2), which is async-signal-safe, on an fd that
        // stays open until the child has exec'd ("0": the writing process itself).
        unsafe {
            command.pre_exec(move || match libc::write(fd, b"0".as_ptr().cast(), 1) {
                1 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        let workload = Self::spawn_command(&mut command);
        drop(procs);
        workload
    }

    /// Spawns the workload under its own process name, so a system-wide run picks out this
    /// test's processes with `--comm` (other tests' workloads may run meanwhile). The kernel
    /// names a process after the file it executes: a link named `name` (of which the kernel
    /// keeps the first 15 bytes), removed once the workload runs.
    pub fn spawn_named(name: &str, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("memtrace-named-{name}"));
        std::fs::create_dir_all(&dir).expect("create the link's directory");
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(WORKLOAD, &link).expect("link the workload");
        let workload = Self::spawn_command(Command::new(&link).args(args));
        let _ = std::fs::remove_dir_all(&dir);
        workload
    }

    /// Spawns the workload under its own process name (see [`Workload::spawn_named`]) inside a
    /// cgroup (see [`Workload::spawn_in_cgroup`]).
    pub fn spawn_named_in_cgroup(name: &str, cgroup: &std::path::Path, args: &[&str]) -> Self {
        assert!(name.len() <= 15, "{name} is longer than a process name");
        let dir = std::env::temp_dir().join(format!("memtrace-named-{name}-{}", args.len()));
        std::fs::create_dir_all(&dir).expect("create the link's directory");
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(WORKLOAD, &link).expect("link the workload");
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            cgroup.display()
        );
        let workload = Self::spawn_command(
            Command::new("sh")
                .args(["-c", &script])
                .arg(&link)
                .args(args),
        );
        let _ = std::fs::remove_dir_all(&dir);
        workload
    }

    /// Spawns the workload as pid 1 of a new pid namespace (`unshare -fp --mount-proc`), as a
    /// container without the host's pid namespace runs it: `pid` is its pid on the host; the
    /// pid it printed (its own namespace's) is returned beside it.
    pub fn spawn_in_pid_namespace(args: &[&str]) -> (Self, u32) {
        let mut workload = Self::spawn_command(
            Command::new("unshare")
                .args(["--fork", "--pid", "--mount-proc", WORKLOAD])
                .args(args),
        );
        let ns_pid = workload.pid;
        let unshare = workload.child.id();
        workload.pid = children_of(unshare)
            .first()
            .copied()
            .expect("the workload's pid on the host");
        (workload, ns_pid)
    }

    /// The next JSON line the workload prints (for workloads with intermediate lines).
    pub fn next_line(&mut self) -> Value {
        read_json_line(&mut self.stdout).expect("workload line")
    }

    /// Takes stdin to keep sending lines after go (for workloads that wait twice).
    pub fn go_keeping_stdin(&mut self) -> ChildStdin {
        let mut stdin = self.stdin.take().expect("go called twice");
        stdin.write_all(b"go\n").expect("send go signal");
        stdin
    }

    fn spawn_command(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn memtrace-workload");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("workload stdout"));
        let ready = read_json_line(&mut stdout).expect("workload ready line");
        assert_eq!(ready["ready"], true, "unexpected first line {ready}");
        let pid = ready["pid"].as_u64().expect("ready pid") as u32;
        Self {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// Lets the workload do its measured work.
    pub fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("go() called twice");
        stdin.write_all(b"go\n").expect("send go signal");
    }

    /// Waits for the workload's record, then reads its final /proc/PID/stat `(minflt, majflt)`
    /// while it is a zombie (exited, not yet reaped by us): the kernel's own totals.
    pub fn record_and_final_faults(mut self) -> (Value, (u64, u64)) {
        let record = read_json_line(&mut self.stdout).expect("workload record line");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("zombie stat");
            if stat_field(&stat, 3) == Some("Z") {
                let faults = proc_faults_from(&stat);
                let status = wait_with_timeout(&mut self.child, EXIT_TIMEOUT);
                assert!(status.success(), "workload failed: {status}");
                return (record, faults);
            }
            assert!(Instant::now() < deadline, "workload did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the workload to end, however it ends (for workloads meant to be killed).
    pub fn wait(mut self) -> std::process::ExitStatus {
        wait_with_timeout(&mut self.child, EXIT_TIMEOUT)
    }

    /// Waits for the workload's record of what it did.
    pub fn record(mut self) -> Value {
        let record = read_json_line(&mut self.stdout).expect("workload record line");
        let status = wait_with_timeout(&mut self.child, EXIT_TIMEOUT);
        assert!(status.success(), "workload failed: {status}");
        record
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs memtrace as user nobody with no capabilities at all, as an unprivileged user would.
pub fn memtrace_unprivileged(args: &[&str]) -> std::process::Output {
    memtrace_as_nobody(&[], args)
}

/// memtrace run as `nobody` with only the capabilities `caps` (`bpf`, `perfmon`, …), as an
/// agent given exactly those would run.
pub fn memtrace_as_nobody(caps: &[&str], args: &[&str]) -> std::process::Output {
    let mut setpriv = Command::new("setpriv");
    setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if caps.is_empty() {
        setpriv.args(["--inh-caps=-all", "--bounding-set=-all"]);
    } else {
        let caps: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
        let caps = caps.join(",");
        setpriv.args([
            format!("--inh-caps={caps}"),
            format!("--ambient-caps={caps}"),
        ]);
    }
    setpriv
        .arg(MEMTRACE)
        .args(args)
        .output()
        .expect("run setpriv")
}

/// Which memory cgroup interface this machine offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The v1 memory controller, mounted at /sys/fs/cgroup/memory.
    V1,
    /// The unified hierarchy with the memory controller, at `root`.
    V2,
}

/// A memory cgroup with a limit (cgroup v1 or v2, whichever holds the memory controller here),
/// removed (with its processes killed) on drop, so no test path leaves it behind.
pub struct MemCgroup {
    pub path: PathBuf,
    root: PathBuf,
    pub version: CgroupVersion,
}

/// Where the memory controller is: the v1 memory hierarchy, or a cgroup2 mount that offers it.
fn memory_hierarchy() -> Option<(PathBuf, CgroupVersion)> {
    let v1 = Path::new("/sys/fs/cgroup/memory");
    if v1.join("memory.limit_in_bytes").exists() {
        return Some((v1.to_path_buf(), CgroupVersion::V1));
    }
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|root| {
            std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        })
        .map(|root| (root, CgroupVersion::V2))
}

impl MemCgroup {
    /// `None` when no hierarchy offers the memory controller (an error in CI).
    pub fn new(tag: &str, limit_bytes: u64) -> Option<Self> {
        Self::named(
            &format!("memtrace-test-{tag}-{}", std::process::id()),
            limit_bytes,
        )
    }

    /// A memory cgroup of this name directly below the root (e.g. named as a container
    /// runtime names its cgroups).
    pub fn named(name: &str, limit_bytes: u64) -> Option<Self> {
        let Some((root, version)) = memory_hierarchy() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no memory cgroup controller (v1 or v2)"
            );
            eprintln!("*** SKIPPED: no memory cgroup controller ***");
            return None;
        };
        let path = root.join(name);
        let limit_file = match version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => {
                // Children get the controller only once their parent hands it down.
                std::fs::write(root.join("cgroup.subtree_control"), "+memory")
                    .expect("enable the memory controller for child cgroups");
                "memory.max"
            }
        };
        std::fs::create_dir(&path).expect("create memory cgroup");
        let cgroup = Self {
            path,
            root,
            version,
        };
        std::fs::write(cgroup.path.join(limit_file), limit_bytes.to_string()).expect("set limit");
        if version == CgroupVersion::V2 {
            // No swap: like the v1 setup, reclaim can only drop clean and lazily freed pages.
            let _ = std::fs::write(cgroup.path.join("memory.swap.max"), "0");
        }
        Some(cgroup)
    }

    /// The path as /proc/PID/cgroup shows it (relative to the hierarchy's root).
    pub fn name(&self) -> String {
        format!(
            "/{}",
            self.path
                .strip_prefix(&self.root)
                .unwrap_or(&self.path)
                .display()
        )
    }

    /// OOM kills in this cgroup, by the cgroup's own count.
    pub fn oom_kills(&self) -> u64 {
        match self.version {
            CgroupVersion::V1 => self.counter("memory.oom_control", "oom_kill "),
            CgroupVersion::V2 => self.counter("memory.events", "oom_kill "),
        }
    }

    /// A line of a cgroup file such as `memory.oom_control` (`oom_kill 1`) as a number.
    pub fn counter(&self, file: &str, key: &str) -> u64 {
        let text = std::fs::read_to_string(self.path.join(file)).expect("cgroup file");
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {file}: {text}"))
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..250 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.path.display());
    }
}

/// A process's cgroup as memtrace names it, read independently: its path in the hierarchy
/// that holds the memory controller (the v1 `memory` line of /proc/PID/cgroup, else the v2
/// `0::` line).
pub fn memory_cgroup_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("/proc/PID/cgroup");
    let v1 = matches!(memory_hierarchy(), Some((_, CgroupVersion::V1)));
    let line = text
        .lines()
        .find(|line| match v1 {
            true => line
                .split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory")),
            false => line.starts_with("0::"),
        })
        .unwrap_or_else(|| panic!("no memory cgroup in {text}"));
    line.splitn(3, ':').nth(2).unwrap_or_default().to_owned()
}

/// The processes whose parent is `ppid` (field 4 of /proc/PID/stat).
pub fn children_of(ppid: u32) -> Vec<u32> {
    let parent = ppid.to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat_field(&stat, 4) == Some(parent.as_str()))
        })
        .collect()
}

/// `(minflt, majflt)` of a live process from /proc/PID/stat.
pub fn proc_faults(pid: u32) -> (u64, u64) {
    proc_faults_from(&std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat"))
}

fn proc_faults_from(stat: &str) -> (u64, u64) {
    let number = |field| {
        stat_field(stat, field)
            .and_then(|v| v.parse().ok())
            .expect("fault field")
    };
    (number(10), number(12))
}

/// Field N (from 3, as numbered in proc(5)) of a stat line; comm may hold spaces.
/// When a live process started: field 22 of /proc/PID/stat, in clock ticks after boot.
pub fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat_field(&stat, 22)
        .and_then(|v| v.parse().ok())
        .expect("starttime")
}

fn stat_field(stat: &str, field: usize) -> Option<&str> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(field - 3)
}

fn read_json_line(reader: &mut impl std::io::BufRead) -> Option<Value> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// A running memtrace, attached.
pub struct Memtrace {
    child: Child,
    stderr: Lines,
    /// Its stdout's lines as they come, once [`Memtrace::watch_stdout`] was called.
    watched: Option<Lines>,
}

/// What a finished memtrace printed.
pub struct Output {
    pub status: std::process::ExitStatus,
    pub lines: Vec<Value>,
    pub stderr: String,
    /// What a second memtrace that counted the same processes' syscalls in the kernel
    /// printed ([`Twins`]).
    pub counted: Option<Box<Output>>,
}

/// What a process's summary entry says about its memory syscalls: the same whether the calls
/// came as records or were counted in the kernel.
const SYSCALL_TOTALS: [&str; 6] = [
    "madvise",
    "mappings",
    "released_bytes",
    "advised_by",
    "start_time",
    "exited",
];

impl Output {
    /// The final summary object.
    pub fn summary(&self) -> &Value {
        let last = self
            .lines
            .last()
            .unwrap_or_else(|| panic!("no JSON output; stderr:\n{}", self.stderr));
        assert_eq!(
            last["type"], "summary",
            "last line is not the summary: {last}"
        );
        last
    }

    /// The summary's entry for `pid`; with a [`Twins`] run, checked to say the same of its
    /// syscalls as the kernel-counted run's.
    pub fn process(&self, pid: u32) -> &Value {
        let process = self.summary()["processes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
            .unwrap_or_else(|| panic!("pid {pid} missing from summary {}", self.summary()));
        if let Some(counted) = &self.counted {
            assert_same_syscalls(process, counted.process(pid));
        }
        process
    }

    /// Pids in the summary, in increasing order.
    pub fn pids(&self) -> Vec<u32> {
        let processes = self.summary()["processes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut pids: Vec<u32> = processes
            .iter()
            .filter_map(|p| p["pid"].as_u64())
            .map(|p| p as u32)
            .collect();
        pids.sort_unstable();
        pids
    }
}

impl Memtrace {
    /// Starts `memtrace --json ARGS` and waits until it says it is attached.
    pub fn attach(args: &[&str]) -> Self {
        Self::attach_with(&[&["--json"], args].concat())
    }

    /// Starts `memtrace ARGS` (e.g. a subcommand) and waits until it says it is attached.
    pub fn attach_with(args: &[&str]) -> Self {
        Self::attach_wrapped(&[], args)
    }

    /// Starts `WRAPPER… memtrace ARGS` (e.g. `setpriv` with fewer capabilities) and waits
    /// until it says it is attached.
    pub fn attach_wrapped(wrapper: &[&str], args: &[&str]) -> Self {
        let mut command = match wrapper {
            [program, rest @ ..] => {
                let mut command = Command::new(program);
                command.args(rest).arg(MEMTRACE);
                command
            }
            [] => Command::new(MEMTRACE),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let stderr = Lines::of(child.stderr.take().expect("memtrace stderr"));
        let mut memtrace = Self {
            child,
            stderr,
            watched: None,
        };
        memtrace.wait_attached();
        memtrace
    }

    fn wait_attached(&mut self) {
        if self.stderr.wait_attached(ATTACH_TIMEOUT).is_none() {
            let _ = self.child.kill();
            panic!(
                "memtrace did not attach (eBPF must load here); stderr:\n{}",
                self.stderr_text()
            );
        }
    }

    /// What memtrace wrote on stderr so far.
    fn stderr_text(&mut self) -> String {
        self.stderr.arrived().join("\n")
    }

    /// Takes stdout to read live (for tests of output handling).
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout already taken")
    }

    /// Reads stdout as it comes from now on, for [`Memtrace::wait_for_lines`]; what
    /// [`Memtrace::finish`] returns still holds every line.
    pub fn watch_stdout(&mut self) {
        self.watched = Some(Lines::of(self.take_stdout()));
    }

    /// Waits until memtrace printed `count` JSON lines of type `line_type` that were not read
    /// yet when called (the lines already received are passed over; one may still have been
    /// in the pipe). Needs [`Memtrace::watch_stdout`].
    pub fn wait_for_lines(&mut self, line_type: &str, count: usize) {
        let watched = self.watched.as_mut().expect("watch_stdout first");
        watched.arrived();
        let of_type = |line: &str| {
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
            parsed["type"] == line_type
        };
        for found in 0..count {
            if watched.wait_for(EXIT_TIMEOUT, of_type).is_none() {
                let _ = self.child.kill();
                panic!(
                    "memtrace printed {found} of {count} {line_type} lines within {EXIT_TIMEOUT:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
        }
    }

    /// memtrace's pid (its only thread while tracing).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn interrupt(&self) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Waits for memtrace to stop by itself and collects what it printed.
    pub fn finish(mut self) -> Output {
        let stdout = (self.watched.take()).or_else(|| self.child.stdout.take().map(Lines::of));
        let lines = match stdout.map(|mut lines| lines.until_eof(EXIT_TIMEOUT)) {
            None => Vec::new(),
            Some(Ok(lines)) => lines,
            Some(Err(_)) => {
                let _ = self.child.kill();
                panic!(
                    "memtrace did not finish its output within {EXIT_TIMEOUT:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
        };
        let status = wait_with_timeout(&mut self.child, EXIT_TIMEOUT);
        // Exited: its stderr closes as soon as the reader has drained it.
        let stderr = self
            .stderr
            .until_eof(EXIT_TIMEOUT)
            .unwrap_or_else(|seen| seen)
            .join("\n");
        let lines = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        Output {
            status,
            lines,
            stderr,
            counted: None,
        }
    }
}

impl Drop for Memtrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two memtraces on the same processes: one with a record per call (`--json`), one counting
/// the calls in the kernel (`--json --no-events`, as the text report and Prometheus do), so
/// that a test's truths hold for both ways of counting. The second's output is the first's
/// [`Output::counted`].
pub struct Twins {
    records: Memtrace,
    counted: Memtrace,
}

impl Twins {
    /// Starts both with `ARGS` and waits until both are attached.
    pub fn attach(args: &[&str]) -> Self {
        let records = Memtrace::attach(args);
        let counted = Memtrace::attach(&[&["--no-events"], args].concat());
        Self { records, counted }
    }

    /// The pids of the one with records and the one that counts in the kernel.
    pub fn pids(&self) -> (u32, u32) {
        (self.records.pid(), self.counted.pid())
    }

    pub fn interrupt(&self) {
        self.records.interrupt();
        self.counted.interrupt();
    }

    /// Waits for both to stop and collects what they printed; both must agree on every
    /// process's syscalls.
    pub fn finish(self) -> Output {
        let counted = self.counted.finish();
        let mut output = self.records.finish();
        assert!(
            counted.status.success(),
            "memtrace --no-events failed: {}\n{}",
            counted.status,
            counted.stderr
        );
        assert!(
            counted
                .lines
                .iter()
                .all(|l| l["type"] == "start" || l["type"] == "summary"),
            "--no-events printed event lines"
        );
        output.counted = Some(Box::new(counted));
        output
    }
}

/// A process's syscall totals as recorded per call and as counted in the kernel are the same.
pub fn assert_same_syscalls(records: &Value, counted: &Value) {
    for key in SYSCALL_TOTALS {
        assert_eq!(
            records[key], counted[key],
            "{key} differs between per-call records and kernel counts\nrecords: {records}\ncounted: {counted}"
        );
    }
}

/// Everything `reader` yields until EOF, or None if EOF does not come within `timeout` (the
/// reading thread is then left to end when the writer is killed).
pub fn read_all_within(
    mut reader: impl Read + Send + 'static,
    timeout: Duration,
) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = reader.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx.recv_timeout(timeout).ok()
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(calls, failed, bytes)` for one advice in a summary process entry.
pub fn advice_totals(process: &Value, advice: u32) -> Option<(u64, u64, u64)> {
    process["madvise"]
        .as_array()?
        .iter()
        .find(|a| a["advice"] == advice)
        .map(|a| {
            (
                a["calls"].as_u64().unwrap_or(0),
                a["failed"].as_u64().unwrap_or(0),
                a["bytes"].as_u64().unwrap_or(0),
            )
        })
}

/// Advice values in a summary process entry or a workload record.
pub fn advice_values(list: &Value) -> Vec<u64> {
    list.as_array()
        .map(|a| a.iter().filter_map(|e| e["advice"].as_u64()).collect())
        .unwrap_or_default()
}

/// An independent record of some tracepoints: a private tracefs instance with those events
/// enabled, each with its own filter (no hist triggers on every kernel, so the instance's own
/// ring buffer is read back, checked for overruns). Disabled and removed on drop.
pub struct TraceInstance {
    path: PathBuf,
    events: Vec<&'static str>,
}

impl TraceInstance {
    /// `events`: `(group/name, filter)`; an empty filter records every event.
    pub fn new(tag: &str, events: &[(&'static str, String)]) -> Self {
        let path = Path::new("/sys/kernel/tracing/instances")
            .join(format!("memtrace-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&path).expect("create tracefs instance");
        let instance = Self {
            path,
            events: events.iter().map(|(e, _)| *e).collect(),
        };
        instance.write("buffer_size_kb", "8192");
        for (event, filter) in events {
            if !filter.is_empty() {
                instance.write(&format!("events/{event}/filter"), filter);
            }
            instance.write(&format!("events/{event}/enable"), "1");
        }
        instance
    }

    fn write(&self, file: &str, value: &str) {
        std::fs::write(self.path.join(file), value)
            .unwrap_or_else(|e| panic!("write {value} to {file}: {e}"));
    }

    /// Stops recording.
    pub fn stop(&self) {
        self.write("tracing_on", "0");
    }

    /// The recorded event lines, once tracing is off.
    pub fn lines(&self) -> Vec<String> {
        self.stop();
        let per_cpu = std::fs::read_dir(self.path.join("per_cpu")).expect("per_cpu");
        for cpu in per_cpu.filter_map(Result::ok) {
            let stats = std::fs::read_to_string(cpu.path().join("stats")).expect("stats");
            assert!(
                stats.contains("overrun: 0\n"),
                "the oracle lost events: {stats}"
            );
        }
        let trace = std::fs::read_to_string(self.path.join("trace")).expect("trace");
        trace
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        for event in &self.events {
            let _ = std::fs::write(self.path.join(format!("events/{event}/enable")), "0");
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.path.display());
    }
}

/// The number after `key` (`nr_reclaimed=`) in a trace line's fields.
pub fn trace_number(fields: &str, key: &str) -> u64 {
    fields
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {fields}"))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// `(status line, headers, body)` of one plain HTTP/1.1 request (`GET`, `HEAD`, …).
pub fn request(port: u16, method: &str, path: &str) -> std::io::Result<(String, String, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_owned(), headers.to_owned(), body.to_owned()))
}

/// `(status line, headers, body)` of one plain HTTP/1.1 GET.
pub fn get(port: u16, path: &str) -> std::io::Result<(String, String, String)> {
    request(port, "GET", path)
}

/// The value of the sample `name{labels}` in an exposition page, labels matched as written
/// (none: `name` alone).
pub fn sample(page: &str, name: &str, labels: &str) -> Option<u64> {
    let key = match labels {
        "" => format!("{name} "),
        labels => format!("{name}{{{labels}}} "),
    };
    page.lines()
        .find_map(|line| line.strip_prefix(&key))
        .and_then(|value| value.trim().parse().ok())
}

/// The labels of a per-cgroup series for `path`, a cgroup whose path names no container or
/// pod (the tests' own, or the host's): those labels are empty.
pub fn cgroup_labels(path: &str) -> String {
    format!(r#"cgroup="{path}",container_id="",container_runtime="",pod_uid="",pod_qos="""#)
}

/// How many series a page holds (its sample lines).
pub fn series(page: &str) -> usize {
    page.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}
