//! Shared harness for the privileged integration tests: spawns workloads and memtrace, and
//! reads back both sides' records.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const MEMTRACE: &str = env!("CARGO_BIN_EXE_memtrace");
pub const WORKLOAD: &str = env!("CARGO_BIN_EXE_memtrace-workload");

/// How long memtrace may take to load and attach (the first load also JITs every program).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the privileged tests can run. In CI (`CI` set) they must: not being root fails the
/// test instead of skipping it, so a CI run never passes without loading real eBPF.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
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

    /// Spawns the workload inside a cgroup v1 memory cgroup (it joins before it allocates).
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

/// A cgroup v1 memory cgroup with a limit, removed (with its processes killed) on drop, so
/// no test path leaves it behind.
pub struct MemCgroup {
    pub path: PathBuf,
}

impl MemCgroup {
    /// `None` when the cgroup v1 memory controller is not mounted (an error in CI).
    pub fn new(tag: &str, limit_bytes: u64) -> Option<Self> {
        let root = Path::new("/sys/fs/cgroup/memory");
        if !root.join("memory.limit_in_bytes").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "no cgroup v1 memory controller"
            );
            eprintln!("*** SKIPPED: no cgroup v1 memory controller ***");
            return None;
        }
        let path = root.join(format!("memtrace-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&path).expect("create memory cgroup");
        let cgroup = Self { path };
        std::fs::write(
            cgroup.path.join("memory.limit_in_bytes"),
            limit_bytes.to_string(),
        )
        .expect("set limit");
        Some(cgroup)
    }

    /// The path as /proc/PID/cgroup shows it (relative to the hierarchy's root).
    pub fn name(&self) -> String {
        let root = Path::new("/sys/fs/cgroup/memory");
        format!(
            "/{}",
            self.path.strip_prefix(root).unwrap_or(&self.path).display()
        )
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
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

/// What a finished memtrace printed.
pub struct Output {
    pub status: std::process::ExitStatus,
    pub lines: Vec<Value>,
    pub stderr: String,
}

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

    /// The summary's entry for `pid`.
    pub fn process(&self, pid: u32) -> &Value {
        self.summary()["processes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
            .unwrap_or_else(|| panic!("pid {pid} missing from summary {}", self.summary()))
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
        let mut child = Command::new(MEMTRACE)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let stderr = child.stderr.take().expect("memtrace stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut memtrace = Self {
            child,
            stderr: rx,
            stderr_seen: Vec::new(),
        };
        memtrace.wait_attached();
        memtrace
    }

    fn wait_attached(&mut self) {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let attached = line.starts_with("memtrace: attached");
                    self.stderr_seen.push(line);
                    if attached {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        panic!(
            "memtrace did not attach (eBPF must load here); stderr:\n{}",
            self.stderr_seen.join("\n")
        );
    }

    /// Takes stdout to read live (for tests of output handling).
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout already taken")
    }

    pub fn interrupt(&self) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Waits for memtrace to stop by itself and collects what it printed.
    pub fn finish(mut self) -> Output {
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout)
                .expect("read memtrace stdout");
        }
        let status = wait_with_timeout(&mut self.child, EXIT_TIMEOUT);
        self.stderr_seen.extend(self.stderr.try_iter());
        // The reader thread may still be draining the last lines.
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.stderr_seen.push(line);
        }
        let lines = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        Output {
            status,
            lines,
            stderr: self.stderr_seen.join("\n"),
        }
    }
}

impl Drop for Memtrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
