//! `cargo xtask bench`: what memtrace costs the process it traces, next to the tools people
//! would otherwise reach for (bpftrace counting the same tracepoints, strace), on workloads from
//! the workspace. Configurations are interleaved (A B C A B C …) so machine drift hits all of
//! them alike; the report gives medians and ratios to the untraced run.
//!
//! Every workload times its own measured loop (after the go signal), so a tracer's start-up and
//! the process's start and exit never count; tracers are measured separately (time to attach,
//! peak RSS and CPU time from wait4's rusage). The node-scale case ([`node_scale`]) measures
//! memtrace as the always-on agent of a busy node instead.

/// How the bench reads its children's output: the integration tests' own harness file (of
/// which the bench uses less).
#[allow(dead_code)]
#[path = "../../memtrace/tests/support/lines.rs"]
mod lines;
mod node_scale;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use memtrace_common::hooks::{Program, Run};
use serde_json::Value;

use self::lines::Lines;
use crate::{
    stats::{median, verdict},
    tasks::{capture, cargo, is_root, status, which, workspace_root},
};

/// How long a tracer may take to attach, and any single run to finish.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// The generated part of BENCHMARKS.md lies between these markers; the rest (designs tried,
/// analysis) is written by hand and kept across runs.
const BEGIN_MARK: &str = "<!-- bench:generated:begin -->";
const END_MARK: &str = "<!-- bench:generated:end -->";

/// The case that runs memtrace as a node's agent rather than against one workload.
pub const NODE_SCALE: &str = "node-scale";

pub struct Options {
    pub quick: bool,
    pub iterations: Option<usize>,
    /// Only this case: a workload's name or [`NODE_SCALE`].
    pub case: Option<String>,
    /// Only these workloads (by name); all when empty.
    pub only: Vec<String>,
    /// Only these configurations (by [`Config::key`]); all when empty. A partial run's report
    /// goes to target/BENCHMARKS-only.md.
    pub configs: Vec<String>,
    /// Compare trampolines with tracepoints in this guest instead.
    pub guest: Option<&'static crate::vm::GuestKernel>,
}

/// One way of running a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Config {
    Untraced,
    /// memtrace's hooks with programs that return at once: what the hooks cost by themselves.
    Floor,
    MemtracePid,
    /// `--pid` with an entry program parking each syscall's arguments for the exit, as before
    /// the exit read them from the saved registers: two programs per call against one.
    MemtracePidEntries,
    MemtraceSystem,
    MemtraceFaultEvents,
    Bpftrace,
    /// `memtrace --pid --stacks`: caller stacks counted in the kernel.
    MemtraceStacks,
    /// bpftrace counting the same hooks, and the memory syscalls per user stack.
    BpftraceUstack,
    Strace,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Floor => "floor: same hooks, empty programs",
            Config::MemtracePid => "memtrace --pid (default)",
            Config::MemtracePidEntries => "memtrace --pid, entry + exit programs per call",
            Config::MemtraceSystem => "memtrace system-wide",
            Config::MemtraceFaultEvents => "memtrace --pid --fault-events --json",
            Config::Bpftrace => "bpftrace count()",
            Config::MemtraceStacks => "memtrace --pid --stacks",
            Config::BpftraceUstack => "bpftrace count() + @[ustack] per syscall",
            Config::Strace => "strace -f -e trace=memory",
        }
    }

    /// The name `cargo xtask bench --config` selects it by.
    fn key(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Floor => "floor",
            Config::MemtracePid => "pid",
            Config::MemtracePidEntries => "pid-entries",
            Config::MemtraceSystem => "system",
            Config::MemtraceFaultEvents => "fault-events",
            Config::Bpftrace => "bpftrace",
            Config::MemtraceStacks => "stacks",
            Config::BpftraceUstack => "bpftrace-ustack",
            Config::Strace => "strace",
        }
    }

    fn is_memtrace(self) -> bool {
        matches!(
            self,
            Config::MemtracePid
                | Config::MemtracePidEntries
                | Config::MemtraceSystem
                | Config::MemtraceFaultEvents
                | Config::MemtraceStacks
        )
    }
}

/// A workload: how to start it, how strace runs it (possibly fewer operations), which
/// configurations apply.
struct Workload {
    name: &'static str,
    /// Program and arguments; the program waits for a go line unless given `no_wait`.
    argv: Vec<String>,
    /// Arguments replacing the size arguments under strace (a reduced count), if any.
    strace_argv: Vec<String>,
    no_wait: &'static str,
    configs: Vec<Config>,
}

/// Which optional tools can run, or why not.
struct Tools {
    bpftrace: Result<PathBuf, String>,
    strace: Result<PathBuf, String>,
    taskset: Option<PathBuf>,
}

/// What a tracer cost, from outside the workload.
#[derive(Clone, Debug, Default)]
struct TracerCost {
    attach: Duration,
    peak_rss_kib: u64,
    cpu: Duration,
    lost: Option<u64>,
    /// Per-event records received (memtrace --fault-events: fault lines on stdout).
    events: Option<u64>,
}

#[derive(Clone, Debug)]
struct Sample {
    wall_ns: u64,
    /// The workload's own CPU time over the loop (getrusage inside it).
    cpu_ns: u64,
    ops: u64,
    tracer: Option<TracerCost>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("benchmarks load eBPF programs and need root: run `sudo -E cargo xtask bench`");
    }
    let iterations = options
        .iterations
        .unwrap_or(if options.quick { 1 } else { 5 });
    if iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    status(cargo().args(["build", "--release", "--package", "memtrace", "--bins"]))?;
    let root = workspace_root()
        .canonicalize()
        .context("cannot resolve the workspace root")?;
    let release = root.join("target/release");
    if let Some(kernel) = options.guest {
        return guest_section(&root, &release, kernel, iterations);
    }
    if options.case.as_deref() == Some(NODE_SCALE) {
        return node_scale_section(&root, &release);
    }
    let tools = Tools {
        bpftrace: ensure_tool("bpftrace", "bpftrace"),
        strace: ensure_tool("strace", "strace"),
        taskset: which("taskset"),
    };
    let go_bench = build_go_bench(&root, &release);
    let workloads = selected(options, workloads(options.quick, &release, &go_bench))?;
    let partial = !options.only.is_empty() || !options.configs.is_empty();

    let load_before = loadavg();
    let started = chrono_like_utc();
    let (results, mut skipped) = measure(&workloads, iterations, &release, &tools)?;
    let costs = match ensure_tool("bpftool", "bpftool") {
        Ok(bpftool) => program_costs(
            &workloads,
            &release,
            &tools,
            &bpftool,
            iterations.min(COST_RUNS),
        )?,
        Err(reason) => {
            skipped.push(format!(
                "per-program costs: bpftool not available: {reason}"
            ));
            Vec::new()
        }
    };
    let machine = Machine {
        date: started,
        load_before,
        load_after: loadavg(),
        iterations,
        quick: options.quick,
    };
    let names: Vec<&str> = workloads
        .iter()
        .map(|w| w.as_ref().map_or("", |w| w.name))
        .collect();
    let report = render(
        &machine, &workloads, &names, &results, &costs, &skipped, &tools,
    );
    println!("{report}");
    let path = if partial || options.case.is_some() {
        root.join("target/BENCHMARKS-only.md")
    } else if options.quick {
        root.join("target/BENCHMARKS-quick.md")
    } else {
        root.join("BENCHMARKS.md")
    };
    write_report(&path, &report)?;
    eprintln!("xtask bench: wrote {}", path.display());
    // The whole bench includes the node-scale case (a minute); a smoke run or one case not.
    if !options.quick && options.case.is_none() && !partial {
        node_scale_section(&root, &release)?;
    }
    Ok(())
}

/// `--guest KERNEL`: trampolines against tracepoints inside a guest, in that guest's section.
fn guest_section(
    root: &Path,
    release: &Path,
    kernel: &'static crate::vm::GuestKernel,
    iterations: usize,
) -> anyhow::Result<()> {
    let section = crate::guest_bench::run(kernel, release, iterations.min(3))?;
    println!("{section}");
    let path = root.join("BENCHMARKS.md");
    let marks = (
        format!("<!-- bench:guest:{}:begin -->", kernel.name),
        format!("<!-- bench:guest:{}:end -->", kernel.name),
    );
    write_section(&path, (&marks.0, &marks.1), &section)?;
    eprintln!("xtask bench: wrote {}", path.display());
    Ok(())
}

/// The workloads and configurations `--case`, `--only` and `--config` select.
fn selected(
    options: &Options,
    mut workloads: Vec<Result<Workload, String>>,
) -> anyhow::Result<Vec<Result<Workload, String>>> {
    if let Some(case) = &options.case {
        workloads.retain(|w| w.as_ref().is_ok_and(|w| w.name == case));
        if workloads.is_empty() {
            bail!("no case {case}: the cases are {NODE_SCALE} and the workloads of BENCHMARKS.md");
        }
    }
    if !options.only.is_empty() {
        let known: Vec<&str> = workloads.iter().flatten().map(|w| w.name).collect();
        if let Some(unknown) = options.only.iter().find(|n| !known.contains(&n.as_str())) {
            bail!(
                "no workload {unknown}: the workloads are {}",
                known.join(", ")
            );
        }
    }
    if !options.only.is_empty() || !options.configs.is_empty() {
        workloads.retain(|w| {
            w.as_ref()
                .is_ok_and(|w| options.only.is_empty() || options.only.iter().any(|o| o == w.name))
        });
        for workload in workloads.iter_mut().flatten() {
            workload.configs.retain(|c| {
                options.configs.is_empty() || options.configs.iter().any(|k| k == c.key())
            });
        }
    }
    Ok(workloads)
}

type Results = BTreeMap<(usize, Config), Vec<Sample>>;

/// Every configuration of every workload, `iterations` times, interleaved (A B C … A B C …);
/// and what could not run, and why.
fn measure(
    workloads: &[Result<Workload, String>],
    iterations: usize,
    release: &Path,
    tools: &Tools,
) -> anyhow::Result<(Results, Vec<String>)> {
    let mut results = Results::new();
    let mut skipped: Vec<String> = Vec::new();
    for (index, workload) in workloads.iter().enumerate() {
        let Ok(workload) = workload else {
            continue;
        };
        for iteration in 0..iterations {
            for &config in &workload.configs {
                if let Some(reason) = unavailable(config, tools) {
                    let note = format!(
                        "{}: {} not available: {reason}",
                        workload.name,
                        config.label()
                    );
                    if !skipped.contains(&note) {
                        skipped.push(note);
                    }
                    continue;
                }
                eprint!(
                    "xtask bench: {} / {} ({}/{iterations}) … ",
                    workload.name,
                    config.label(),
                    iteration + 1
                );
                let _ = std::io::stderr().flush();
                let sample = run_once(workload, config, release, tools)
                    .with_context(|| format!("{} under {}", workload.name, config.label()))?;
                eprintln!("{:.3} s", sample.wall_ns as f64 / 1e9);
                results.entry((index, config)).or_default().push(sample);
            }
        }
    }
    for workload in workloads {
        if let Err(reason) = workload {
            skipped.push(reason.clone());
        }
    }
    Ok((results, skipped))
}

/// Runs the node-scale case and writes its section of BENCHMARKS.md.
fn node_scale_section(root: &Path, release: &Path) -> anyhow::Result<()> {
    let section = node_scale::run(release)?;
    println!("{section}");
    let path = root.join("BENCHMARKS.md");
    let marks = (
        "<!-- bench:node-scale:begin -->",
        "<!-- bench:node-scale:end -->",
    );
    write_section(&path, marks, &section)?;
    eprintln!("xtask bench: wrote {}", path.display());
    Ok(())
}

/// The workloads at full or quick size. A workload that cannot run here is an `Err(reason)`.
fn workloads(
    quick: bool,
    release: &Path,
    go_bench: &Result<PathBuf, String>,
) -> Vec<Result<Workload, String>> {
    let workload = release.join("memtrace-workload").display().to_string();
    let args = |list: &[&str]| -> Vec<String> {
        std::iter::once(workload.clone())
            .chain(list.iter().map(|s| (*s).to_owned()))
            .collect()
    };
    let (mib, calls, strace_calls, rounds, strace_rounds, go_rounds, passes) = if quick {
        ("256", "100000", "1000", "20000", "2000", "5", "4")
    } else {
        ("4096", "1000000", "10000", "100000", "10000", "40", "16")
    };
    use Config::*;
    let common = vec![
        Untraced,
        Floor,
        MemtracePid,
        MemtraceSystem,
        Bpftrace,
        Strace,
    ];
    // Where syscalls dominate: one program per call against an entry and an exit, and
    // --stacks (a stack walked per call) against bpftrace's ustack.
    let with_entries = vec![
        Untraced,
        Floor,
        MemtracePid,
        MemtracePidEntries,
        MemtraceSystem,
        Bpftrace,
        Strace,
        MemtraceStacks,
        BpftraceUstack,
    ];
    let mut list = vec![
        // The same pages faulted in and dropped pass after pass: the fault path itself, where
        // fresh memory is dominated by the host (DESIGN.md §6).
        Ok(Workload {
            name: "refault",
            argv: args(&["bench-refault", "--mib", "64", "--passes", passes]),
            strace_argv: Vec::new(),
            no_wait: "--no-wait",
            configs: vec![Untraced, Floor, MemtracePid, MemtraceSystem, Bpftrace],
        }),
        Ok(Workload {
            name: "fault-heavy",
            argv: args(&["bench-faults", "--mib", mib]),
            strace_argv: args(&["bench-faults", "--mib", mib]),
            no_wait: "--no-wait",
            configs: vec![
                Untraced,
                Floor,
                MemtracePid,
                MemtraceSystem,
                MemtraceFaultEvents,
                Bpftrace,
                Strace,
            ],
        }),
        // The fault rate one thread reaches here is below 1 M/s; two threads (one per CPU,
        // competing with memtrace itself) test streaming at the highest rate this machine makes.
        Ok(Workload {
            name: "fault-heavy-2t",
            argv: args(&["bench-faults", "--mib", mib, "--threads", "2"]),
            strace_argv: Vec::new(),
            no_wait: "--no-wait",
            configs: vec![Untraced, MemtracePid, MemtraceFaultEvents],
        }),
        Ok(Workload {
            name: "madvise-heavy",
            argv: args(&["bench-madvise", "--calls", calls]),
            strace_argv: args(&["bench-madvise", "--calls", strace_calls]),
            no_wait: "--no-wait",
            configs: with_entries.clone(),
        }),
        Ok(Workload {
            name: "mmap-churn",
            argv: args(&["bench-mmap", "--rounds", rounds]),
            strace_argv: args(&["bench-mmap", "--rounds", strace_rounds]),
            no_wait: "--no-wait",
            configs: with_entries,
        }),
    ];
    list.push(match go_bench {
        Ok(binary) => {
            let argv = vec![
                binary.display().to_string(),
                "-rounds".to_owned(),
                go_rounds.to_owned(),
            ];
            Ok(Workload {
                name: "go-mixed",
                strace_argv: argv.clone(),
                argv,
                no_wait: "-no-wait",
                configs: common,
            })
        }
        Err(reason) => Err(format!("go-mixed: skipped: {reason}")),
    });
    list
}

fn unavailable(config: Config, tools: &Tools) -> Option<String> {
    match config {
        Config::Bpftrace | Config::BpftraceUstack => tools.bpftrace.as_ref().err().cloned(),
        Config::Strace => tools.strace.as_ref().err().cloned(),
        _ => None,
    }
}

/// Finds `binary`, installing Debian's `package` with apt-get when missing (as root).
fn ensure_tool(binary: &str, package: &str) -> Result<PathBuf, String> {
    if let Some(path) = which(binary) {
        return Ok(path);
    }
    if which("apt-get").is_none() {
        return Err(format!(
            "{binary} is not installed and apt-get is not available"
        ));
    }
    eprintln!("xtask bench: installing {package} with apt-get");
    let installed = crate::apt::install_packages(&[package]);
    match (installed, which(binary)) {
        (_, Some(path)) => Ok(path),
        (Ok(()), None) => Err(format!(
            "apt-get installed {package} but {binary} is missing"
        )),
        (Err(e), None) => Err(format!("apt-get install {package} failed: {e:#}")),
    }
}

/// Builds the Go workload with the system's Go (installing Debian's golang-go if missing).
fn build_go_bench(root: &Path, release: &Path) -> Result<PathBuf, String> {
    ensure_tool("go", "golang-go")?;
    let out = release.join("memtrace-go-bench");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg("main.go")
        .current_dir(root.join("memtrace/tests/go/bench"))
        .env("GO111MODULE", "off")
        .status()
        .map_err(|e| format!("cannot run go: {e}"))?;
    if !built.success() {
        return Err(format!("go build failed ({built})"));
    }
    Ok(out)
}

/// One run of one workload under one configuration.
fn run_once(
    workload: &Workload,
    config: Config,
    release: &Path,
    tools: &Tools,
) -> anyhow::Result<Sample> {
    run_traced(workload, config, release, tools, None).map(|(sample, _)| sample)
}

/// One run; with `bpftool`, also what each of memtrace's programs ran, read once the workload
/// is done and before memtrace unloads them.
fn run_traced(
    workload: &Workload,
    config: Config,
    release: &Path,
    tools: &Tools,
    bpftool: Option<&Path>,
) -> anyhow::Result<(Sample, Vec<ProgramStats>)> {
    if config == Config::Strace {
        return Ok((run_strace(workload, tools)?, Vec::new()));
    }
    let memtrace = release.join("memtrace");
    let mut target = Running::spawn(
        Command::new(&workload.argv[0]).args(&workload.argv[1..]),
        true,
    )?;
    let ready = target.json_line()?;
    let pid = ready["pid"]
        .as_u64()
        .ok_or_else(|| anyhow!("workload ready line without a pid: {ready}"))?;
    let pid = pid.to_string();

    let mut tracer = match config {
        Config::Untraced => None,
        // Empty programs filter nothing: with or without --pid they cost the same.
        Config::Floor => Some(Tracer::memtrace(
            &memtrace,
            &["--pid", &pid, "--bench-empty-programs"],
        )?),
        Config::MemtracePid => Some(Tracer::memtrace(&memtrace, &["--pid", &pid])?),
        Config::MemtracePidEntries => Some(Tracer::memtrace(
            &memtrace,
            &["--pid", &pid, "--bench-entry-programs"],
        )?),
        Config::MemtraceSystem => Some(Tracer::memtrace(&memtrace, &[])?),
        Config::MemtraceFaultEvents => Some(Tracer::memtrace(
            &memtrace,
            &["--pid", &pid, "--fault-events", "--json"],
        )?),
        Config::Bpftrace | Config::BpftraceUstack => Some(Tracer::bpftrace(
            tools.bpftrace.as_ref().map_err(|e| anyhow!("{e}"))?,
            &pid,
            config == Config::BpftraceUstack,
        )?),
        Config::MemtraceStacks => Some(Tracer::memtrace(&memtrace, &["--pid", &pid, "--stacks"])?),
        Config::Strace => unreachable!("handled above"),
    };
    target.go()?;
    let record = target.json_line()?;
    let programs = match (bpftool, &tracer) {
        (Some(bpftool), Some(tracer)) => program_stats(bpftool, tracer.process.child.id())?,
        _ => Vec::new(),
    };
    target.wait(RUN_TIMEOUT)?;
    let cost = match tracer.as_mut() {
        None => None,
        Some(tracer) => Some(tracer.finish(config)?),
    };
    Ok((sample(&record, cost)?, programs))
}

/// What the kernel counted for one of memtrace's programs (`kernel.bpf_stats_enabled`).
#[derive(Clone, Debug)]
struct ProgramStats {
    name: &'static str,
    runs: u64,
    run_ns: u64,
}

/// The programs of the tracer with pid `owner` with the runs and run time the kernel counted,
/// from `bpftool` (an independent reader; names are cut to 15 bytes by the kernel). Only the
/// tracer's own: other memtraces on a shared machine load programs of the same names.
fn program_stats(bpftool: &Path, owner: u32) -> anyhow::Result<Vec<ProgramStats>> {
    let owned = owned_programs(owner);
    let output = Command::new(bpftool)
        .args(["prog", "show", "--json"])
        .output()
        .context("cannot run bpftool")?;
    let list: Value =
        serde_json::from_slice(&output.stdout).context("bpftool printed no JSON list")?;
    let mut stats = Vec::new();
    for program in list.as_array().into_iter().flatten() {
        let Some(kernel_name) = program["name"].as_str() else {
            continue;
        };
        if !program["id"].as_u64().is_some_and(|id| owned.contains(&id)) {
            continue;
        }
        let ours = Program::ALL
            .iter()
            .map(|p| p.name())
            .find(|name| name.get(..15).unwrap_or(name) == kernel_name);
        if let (Some(name), Some(runs), Some(run_ns)) = (
            ours,
            program["run_cnt"].as_u64(),
            program["run_time_ns"].as_u64(),
        ) {
            stats.push(ProgramStats { name, runs, run_ns });
        }
    }
    Ok(stats)
}

/// The ids of the BPF programs process `pid` holds (its program and link fds' `prog_id`).
fn owned_programs(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// Per-program cost with `kernel.bpf_stats_enabled` on, in runs of their own: counting adds
/// two clock reads per run, so these runs are kept out of the timings above.
/// Runs of each configuration for the per-program costs, interleaved like the timings; each
/// program's ns per run is the median over them.
const COST_RUNS: usize = 3;

fn program_costs(
    workloads: &[Result<Workload, String>],
    release: &Path,
    tools: &Tools,
    bpftool: &Path,
    runs: usize,
) -> anyhow::Result<Vec<(&'static str, Config, Vec<ProgramStats>)>> {
    const SWITCH: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(SWITCH).context("cannot read bpf_stats_enabled")?;
    std::fs::write(SWITCH, "1").context("cannot enable bpf_stats")?;
    let mut measured: BTreeMap<(usize, Config), Vec<Vec<ProgramStats>>> = BTreeMap::new();
    let mut result = Ok(());
    'all: for (index, workload) in workloads.iter().enumerate() {
        let Ok(workload) = workload else {
            continue;
        };
        for run in 0..runs {
            for config in [
                Config::Floor,
                Config::MemtracePid,
                Config::MemtracePidEntries,
                Config::MemtraceSystem,
            ] {
                if !workload.configs.contains(&config) {
                    continue;
                }
                eprintln!(
                    "xtask bench: program costs: {} / {} ({}/{runs})",
                    workload.name,
                    config.label(),
                    run + 1
                );
                match run_traced(workload, config, release, tools, Some(bpftool)) {
                    Ok((_, programs)) => {
                        measured.entry((index, config)).or_default().push(programs);
                    }
                    Err(e) => {
                        result = Err(e);
                        break 'all;
                    }
                }
            }
        }
    }
    std::fs::write(SWITCH, before.trim()).context("cannot restore bpf_stats_enabled")?;
    result?;
    let name = |index: usize| workloads[index].as_ref().map_or("", |w| w.name);
    Ok(measured
        .into_iter()
        .map(|((index, config), runs)| (name(index), config, median_costs(&runs)))
        .collect())
}

/// Each program's median ns per run over several workload runs (as `run_ns` over `runs`, runs
/// being its mean count per workload run).
fn median_costs(runs: &[Vec<ProgramStats>]) -> Vec<ProgramStats> {
    let mut names: Vec<&'static str> = runs.iter().flatten().map(|p| p.name).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let of_name = || {
                runs.iter()
                    .flatten()
                    .filter(move |p| p.name == name && p.runs > 0)
            };
            let mut per_run: Vec<f64> =
                of_name().map(|p| p.run_ns as f64 / p.runs as f64).collect();
            let mean_runs = of_name().map(|p| p.runs).sum::<u64>() / per_run.len().max(1) as u64;
            ProgramStats {
                name,
                runs: mean_runs,
                run_ns: (median(&mut per_run) * mean_runs as f64) as u64,
            }
        })
        .collect()
}

/// strace runs the workload itself (pinned: strace on one CPU, the workload on the other;
/// unpinned it is erratic here), starting at once.
fn run_strace(workload: &Workload, tools: &Tools) -> anyhow::Result<Sample> {
    let strace = tools.strace.as_ref().map_err(|e| anyhow!("{e}"))?;
    let mut command = match &tools.taskset {
        Some(taskset) => {
            let mut c = Command::new(taskset);
            c.args(["-c", "1"]).arg(strace);
            c
        }
        None => Command::new(strace),
    };
    command.args(["-f", "-qq", "-e", "trace=memory", "-o", "/dev/null"]);
    if let Some(taskset) = &tools.taskset {
        command.arg(taskset).args(["-c", "0"]);
    }
    command.args(&workload.strace_argv).arg(workload.no_wait);
    let mut target = Running::spawn(&mut command, false)?;
    let _ready = target.json_line()?;
    let record = target.json_line()?;
    target.wait(RUN_TIMEOUT)?;
    sample(&record, None)
}

fn sample(record: &Value, tracer: Option<TracerCost>) -> anyhow::Result<Sample> {
    let field = |name: &str| {
        record[name]
            .as_u64()
            .ok_or_else(|| anyhow!("workload record without {name}: {record}"))
    };
    Ok(Sample {
        wall_ns: field("wall_ns")?,
        cpu_ns: field("cpu_ns")?,
        ops: field("ops")?,
        tracer,
    })
}

/// A child process whose output lines arrive on channels (see `lines.rs`).
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    /// None for memtrace, whose stdout `keep_stdout` reads.
    stdout: Option<Lines>,
    /// stderr, when collected instead of shown (bpftrace warns about RLIMIT_MEMLOCK each run).
    stderr: Option<Lines>,
    reaped: bool,
}

impl Running {
    fn spawn(command: &mut Command, piped_stdin: bool) -> anyhow::Result<Self> {
        Self::spawn_with(command, piped_stdin, false)
    }

    fn spawn_with(
        command: &mut Command,
        piped_stdin: bool,
        collect_stderr: bool,
    ) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(if collect_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        Ok(Self {
            stdin: child.stdin.take(),
            stdout: child.stdout.take().map(Lines::of),
            stderr: child.stderr.take().map(Lines::of),
            child,
            reaped: false,
        })
    }

    fn json_line(&mut self) -> anyhow::Result<Value> {
        let line = self
            .stdout
            .as_mut()
            .context("stdout not read here")?
            .next(RUN_TIMEOUT)
            .ok()
            .context("workload printed nothing (exited or hung)")?;
        serde_json::from_str(line).with_context(|| format!("workload printed {line:?}"))
    }

    /// What it wrote on stderr so far, on one line (when collected).
    fn errors(&mut self) -> String {
        self.stderr
            .as_mut()
            .map(|lines| lines.arrived().join(" | "))
            .unwrap_or_default()
    }

    fn go(&mut self) -> anyhow::Result<()> {
        let mut stdin = self.stdin.take().context("go sent twice")?;
        stdin.write_all(b"go\n").context("cannot send the go line")
    }

    fn wait(&mut self, timeout: Duration) -> anyhow::Result<libc::rusage> {
        let (exit, usage) = wait4(self.child.id(), timeout)?;
        self.reaped = true;
        if !exit_ok(exit) {
            bail!("{:?} failed (wait status {exit})", self.child);
        }
        Ok(usage)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn exit_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Waits for a child and returns its wait status and resource usage (peak RSS, CPU time).
fn wait4(pid: u32, timeout: Duration) -> anyhow::Result<(i32, libc::rusage)> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid out-parameter.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers; pid is our own child.
        let rc = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
        if rc == pid as i32 {
            return Ok((status, usage));
        }
        if rc < 0 {
            bail!("wait4({pid}): {}", std::io::Error::last_os_error());
        }
        if Instant::now() > deadline {
            bail!("pid {pid} did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// A tracer process (memtrace or bpftrace) attached to the benchmark.
struct Tracer {
    process: Running,
    attached: Duration,
    /// memtrace stops by itself when its --pid target exits; the others are interrupted.
    stops_itself: bool,
    fault_lines: Arc<AtomicU64>,
    kept: Option<thread::JoinHandle<Vec<String>>>,
}

impl Tracer {
    fn memtrace(binary: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let fault_lines = Arc::new(AtomicU64::new(0));
        let kept = keep_stdout(
            child.stdout.take().context("no stdout")?,
            Arc::clone(&fault_lines),
        );
        let mut stderr = Lines::of(child.stderr.take().context("no stderr")?);
        let attached = stderr.wait_attached(ATTACH_TIMEOUT);
        let mut process = Running {
            child,
            stdin: None,
            stdout: None,
            stderr: Some(stderr),
            reaped: false,
        };
        let Some(at) = attached else {
            bail!("memtrace did not attach: {}", process.errors());
        };
        Ok(Self {
            process,
            attached: at - started,
            stops_itself: args.contains(&"--pid"),
            fault_lines,
            kept: Some(kept),
        })
    }

    /// bpftrace counting, per probe, every tracepoint memtrace attaches by default, for the
    /// target pid. bpftrace attaches probes one by one and fires BEGIN before the others, so
    /// readiness is two probes on getppid placed first and last in the script: once both fire
    /// (the bench calls getppid until they do), everything in between is attached.
    fn bpftrace(binary: &Path, pid: &str, ustack: bool) -> anyhow::Result<Self> {
        let me = std::process::id();
        let script = bpftrace_script(pid, me, ustack);
        let started = Instant::now();
        let mut process =
            Running::spawn_with(Command::new(binary).args(["-e", &script]), false, true)?;
        let deadline = started + ATTACH_TIMEOUT;
        loop {
            // SAFETY: no preconditions; a syscall the readiness probes watch.
            unsafe { libc::getppid() };
            let printed = process.stdout.as_mut().map_or(&[][..], Lines::arrived);
            let seen = |wanted: &str| printed.iter().any(|line| line == wanted);
            if seen("memtrace-bench-ready-first") && seen("memtrace-bench-ready-last") {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "bpftrace did not attach within {ATTACH_TIMEOUT:?}: {}",
                    process.errors()
                );
            }
            if process.child.try_wait().ok().flatten().is_some() {
                bail!("bpftrace exited before attaching: {}", process.errors());
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(Self {
            process,
            attached: started.elapsed(),
            stops_itself: false,
            fault_lines: Arc::default(),
            kept: None,
        })
    }

    /// Stops the tracer (unless it stops by itself) and collects its costs and results.
    fn finish(&mut self, config: Config) -> anyhow::Result<TracerCost> {
        if !self.stops_itself {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(self.process.child.id() as i32, libc::SIGINT) };
        }
        let usage = self.process.wait(RUN_TIMEOUT)?;
        let output = match (self.kept.take(), self.process.stdout.as_mut()) {
            (Some(handle), _) => handle.join().unwrap_or_default(),
            (None, Some(lines)) => lines.arrived().to_vec(),
            (None, None) => Vec::new(),
        };
        let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
        let mut cost = TracerCost {
            attach: self.attached,
            peak_rss_kib: usage.ru_maxrss as u64,
            cpu,
            ..TracerCost::default()
        };
        if config.is_memtrace() {
            cost.lost = memtrace_lost(&output);
            if config == Config::MemtraceFaultEvents {
                cost.events = Some(self.fault_lines.load(Ordering::Relaxed));
            }
        }
        Ok(cost)
    }
}

/// The memory syscalls `--stacks` counts by caller, and what bpftrace sums for each with its
/// user stack (`ustack`: a stack-trace map, walked by frame pointers as memtrace's are).
const USTACK_PROBES: [(&str, &str); 5] = [
    (
        "sys_enter_madvise",
        "@stacks[ustack, probe, args->behavior] = count(); @stack_bytes[ustack, probe, args->behavior] = sum(args->len_in);",
    ),
    (
        "sys_enter_mmap",
        "@stacks[ustack, probe, 0] = count(); @stack_bytes[ustack, probe, 0] = sum(args->len);",
    ),
    (
        "sys_enter_munmap",
        "@stacks[ustack, probe, 0] = count(); @stack_bytes[ustack, probe, 0] = sum(args->len);",
    ),
    (
        "sys_enter_mremap",
        "@stacks[ustack, probe, 0] = count(); @stack_bytes[ustack, probe, 0] = sum(args->new_len);",
    ),
    (
        "sys_enter_brk",
        "@stacks[ustack, probe, 0] = count(); @stack_bytes[ustack, probe, 0] = sum(args->brk);",
    ),
];

/// bpftrace counting what memtrace attaches by default; with `ustack`, the memory syscalls
/// are counted per user stack (and their bytes summed) instead.
fn bpftrace_script(pid: &str, me: u32, ustack: bool) -> String {
    // Exactly what memtrace attaches by default: the hook table says.
    let default_run = Run {
        reclaim: false,
        follow: false,
        fault_events: false,
        records: false,
        args_at_exit: true,
    };
    let by_stack = |name: &str| ustack && USTACK_PROBES.iter().any(|(probe, _)| *probe == name);
    let probes: Vec<String> = Program::ALL
        .iter()
        .map(|program| program.hook())
        .filter(|hook| hook.when.applies(default_run))
        .filter(|hook| !by_stack(hook.tracepoint.name))
        .map(|hook| {
            format!(
                "tracepoint:{}:{}",
                hook.tracepoint.group, hook.tracepoint.name
            )
        })
        .collect();
    let stacks: String = USTACK_PROBES
        .iter()
        .filter(|_| ustack)
        .map(|(probe, action)| {
            format!("tracepoint:syscalls:{probe} /pid == {pid}/ {{ {action} }}\n")
        })
        .collect();
    format!(
        "tracepoint:syscalls:sys_enter_getppid /pid == {me}/ {{ printf(\"memtrace-bench-ready-first\\n\"); }}\n\
         {} /pid == {pid}/ {{ @[probe, pid] = count(); }}\n\
         {stacks}\
         tracepoint:syscalls:sys_exit_getppid /pid == {me}/ {{ printf(\"memtrace-bench-ready-last\\n\"); }}\n",
        probes.join(",\n")
    )
}

/// Drains memtrace's stdout: counts `fault` event lines (there can be millions) and keeps the
/// rest (the report, or the JSON start and summary lines).
fn keep_stdout(
    stdout: impl Read + Send + 'static,
    faults: Arc<AtomicU64>,
) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut reader = BufReader::with_capacity(1 << 20, stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("\"type\":\"fault\"") {
                faults.fetch_add(1, Ordering::Relaxed);
            } else {
                kept.push(line.trim_end().to_owned());
            }
            line.clear();
        }
        kept
    })
}

/// Lost events from memtrace's output: the JSON summary's `lost.total`, or the text report's
/// `lost events: N` line.
fn memtrace_lost(output: &[String]) -> Option<u64> {
    for line in output.iter().rev() {
        if line.starts_with('{')
            && let Ok(value) = serde_json::from_str::<Value>(line)
            && value["type"] == "summary"
        {
            return value["lost"]["total"].as_u64();
        }
        if let Some(rest) = line.strip_prefix("lost events: ") {
            return rest.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    None
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

struct Machine {
    date: String,
    load_before: String,
    load_after: String,
    iterations: usize,
    quick: bool,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn chrono_like_utc() -> String {
    capture(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown date".to_owned())
}

fn machine_lines() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or_else(
            || "?".to_owned(),
            |kib| format!("{:.1} GiB", kib as f64 / 1048576.0),
        );
    let uname = capture(Command::new("uname").arg("-a"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    vec![
        format!("- CPU: {model}, {cpus} logical CPUs; memory {memory}"),
        format!("- Kernel: `{uname}`"),
        format!("- Transparent huge pages: `{thp}`"),
    ]
}

/// Median of one value over the samples of a configuration.
fn med(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let mut values: Vec<f64> = samples.iter().filter_map(f).collect();
    (!values.is_empty()).then(|| median(&mut values))
}

fn ns_per_op(s: &Sample) -> f64 {
    s.wall_ns as f64 / s.ops.max(1) as f64
}

fn cpu_per_op(s: &Sample) -> f64 {
    s.cpu_ns as f64 / s.ops.max(1) as f64
}

fn render(
    machine: &Machine,
    workloads: &[Result<Workload, String>],
    names: &[&str],
    results: &Results,
    costs: &[(&str, Config, Vec<ProgramStats>)],
    skipped: &[String],
    tools: &Tools,
) -> String {
    let mut out = header(machine);
    out.push_str(&results_table(names, results));
    out.push_str(TABLE_NOTES);
    for note in skipped {
        let _ = writeln!(out, "- Not run: {note}");
    }
    if !costs.is_empty() {
        out.push_str(&program_cost_table(costs));
    }
    let _ = writeln!(out, "\n### Budgets\n");
    for line in budgets(names, results) {
        let _ = writeln!(out, "- {line}");
    }
    out.push_str(&commands(workloads, tools));
    out
}

/// When, how, and on what the bench ran.
fn header(machine: &Machine) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Results ({})\n", machine.date);
    let _ = writeln!(
        out,
        "`cargo xtask bench{}` — {} iteration(s) per configuration, interleaved; medians.\n",
        if machine.quick { " --quick" } else { "" },
        machine.iterations
    );
    for line in machine_lines() {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "- Load average (1/5/15 min) before: {}, after: {}\n",
        machine.load_before, machine.load_after
    );
    out
}

/// One row per workload and configuration, ratios against that workload's untraced run.
fn results_table(names: &[&str], results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | configuration | ops | median wall | ns/op | × untraced | × untraced (CPU) | attach | tracer peak RSS | tracer CPU | lost | events/s |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (index, name) in names.iter().enumerate() {
        let untraced = results.get(&(index, Config::Untraced));
        let baseline = untraced.and_then(|s| med(s, |s| Some(ns_per_op(s))));
        let cpu_baseline = untraced.and_then(|s| med(s, |s| Some(cpu_per_op(s))));
        for ((_, config), samples) in
            results.range((index, Config::Untraced)..=(index, Config::Strace))
        {
            let row = result_row(samples, baseline, cpu_baseline);
            let _ = writeln!(out, "| {name} | {} | {row} |", config.label());
        }
    }
    out
}

/// A row's cells after the workload and configuration.
fn result_row(samples: &[Sample], baseline: Option<f64>, cpu_baseline: Option<f64>) -> String {
    let per_op = med(samples, |s| Some(ns_per_op(s))).unwrap_or(f64::NAN);
    let wall = med(samples, |s| Some(s.wall_ns as f64 / 1e9)).unwrap_or(f64::NAN);
    let ops = samples.first().map_or(0, |s| s.ops);
    let ratio = baseline.map_or("—".to_owned(), |b| format!("{:.2}×", per_op / b));
    let cpu_ratio = cpu_baseline.map_or("—".to_owned(), |b| {
        format!(
            "{:.2}×",
            med(samples, |s| Some(cpu_per_op(s))).unwrap_or(f64::NAN) / b
        )
    });
    let tracer =
        |f: &dyn Fn(&TracerCost) -> Option<f64>| med(samples, |s| s.tracer.as_ref().and_then(f));
    let attach = tracer(&|t| Some(t.attach.as_secs_f64() * 1e3));
    let rss = tracer(&|t| Some(t.peak_rss_kib as f64 / 1024.0));
    let cpu = tracer(&|t| Some(t.cpu.as_secs_f64()));
    let lost = samples.iter().filter_map(|s| s.tracer.as_ref()?.lost).max();
    let rate = med(samples, |s| {
        Some(s.tracer.as_ref()?.events? as f64 / (s.wall_ns as f64 / 1e9))
    });
    format!(
        "{} | {:.3} s | {:.0} | {ratio} | {cpu_ratio} | {} | {} | {} | {} | {}",
        thousands(ops),
        wall,
        per_op,
        attach.map_or("—".into(), |v| format!("{v:.0} ms")),
        rss.map_or("—".into(), |v| format!("{v:.1} MiB")),
        cpu.map_or("—".into(), |v| format!("{v:.2} s")),
        lost.map_or("—".into(), |v| v.to_string()),
        rate.map_or("—".into(), |v| format!("{:.2} M", v / 1e6)),
    )
}

/// What the table's columns mean.
const TABLE_NOTES: &str = "\n- **ns/op** and **× untraced** are wall time per operation (a page touched, a madvise + retouch, an \
     mmap/touch/munmap round, a Go allocate/drop/GC round), so the strace rows, which run fewer \
     operations where noted in **ops**, compare fairly. **× untraced (CPU)** compares the \
     workload's own CPU time (getrusage around the loop): tracepoint programs run in its \
     context, so their cost shows there, while waiting for a CPU on a busy machine does not.\n\
     - **attach**: from starting the tracer to memtrace printing `attached` (bpftrace: until \
     probes placed first and last in its script both fire). **tracer peak RSS / CPU**: the \
     tracer's own `ru_maxrss` and user+system time from wait4.\n\
     - **events/s**: per-fault records received on memtrace's stdout divided by the workload's \
     wall time; **lost**: the largest `lost` total memtrace reported over the iterations.\n";

/// The commands each configuration ran, to reproduce a row by hand.
fn commands(workloads: &[Result<Workload, String>], tools: &Tools) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n### Commands\n");
    let _ = writeln!(out, "```");
    let root = format!(
        "{}/",
        workspace_root()
            .canonicalize()
            .unwrap_or_default()
            .display()
    );
    for workload in workloads.iter().flatten() {
        let _ = writeln!(
            out,
            "{}   # waits for a go line; prints its record",
            workload.argv.join(" ").replace(&root, "")
        );
    }
    let _ = writeln!(out, "target/release/memtrace --pid PID");
    let _ = writeln!(
        out,
        "target/release/memtrace   # system-wide, stopped with SIGINT after the workload exits"
    );
    let _ = writeln!(
        out,
        "target/release/memtrace --pid PID --fault-events --json"
    );
    if tools.bpftrace.is_ok() {
        let _ = writeln!(
            out,
            "bpftrace -e '{}'",
            bpftrace_script("PID", 0, false).replace("pid == 0", "pid == BENCH")
        );
        let _ = writeln!(
            out,
            "bpftrace with @[ustack] (madvise-heavy, mmap-churn): the same, with these for the memory syscalls:\n{}",
            USTACK_PROBES
                .iter()
                .map(|(probe, action)| format!(
                    "tracepoint:syscalls:{probe} /pid == PID/ {{ {action} }}"
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if tools.strace.is_ok() {
        let _ = writeln!(
            out,
            "taskset -c 1 strace -f -qq -e trace=memory -o /dev/null taskset -c 0 WORKLOAD --no-wait"
        );
        for workload in workloads.iter().flatten() {
            if !workload.strace_argv.is_empty() && workload.strace_argv != workload.argv {
                let _ = writeln!(
                    out,
                    "  strace runs {}: {}",
                    workload.name,
                    workload.strace_argv[1..].join(" ")
                );
            }
        }
    }
    let _ = writeln!(out, "```");
    out
}

/// ns per run of each program that ran at least 1000 times, per workload and configuration.
fn program_cost_table(costs: &[(&str, Config, Vec<ProgramStats>)]) -> String {
    let configs = [
        Config::Floor,
        Config::MemtracePid,
        Config::MemtracePidEntries,
        Config::MemtraceSystem,
    ];
    let mut out = String::from(
        "\n### Cost per program run (bpf_stats)\n\n\
         One run per configuration with `kernel.bpf_stats_enabled=1` (separate from the timings \
         above: the kernel then reads the clock twice around every program run, which is \
         included in each figure; the floor row shows that share). Programs that ran at least \
         1000 times. **entry + exit**: `--pid` with the syscall entry programs parking the \
         arguments, where the default reads them at exit from the saved registers.\n\n\
         | workload | program | runs | floor ns/run | memtrace --pid ns/run | entry + exit ns/run | system-wide ns/run |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (workload, _, programs) in costs {
        for p in programs {
            if p.runs >= 1000 && !seen.contains(&(workload, p.name)) {
                seen.push((workload, p.name));
            }
        }
    }
    for (workload, name) in seen {
        let find = |config: Config| {
            costs
                .iter()
                .find(|(w, c, _)| *w == workload && *c == config)
                .and_then(|(_, _, programs)| programs.iter().find(|p| p.name == name))
        };
        let runs = configs
            .iter()
            .filter_map(|&c| find(c))
            .map(|p| p.runs)
            .max()
            .unwrap_or(0);
        let cells: Vec<String> = configs
            .iter()
            .map(|&c| {
                find(c)
                    .filter(|p| p.runs > 0)
                    .map_or("—".to_owned(), |p| format!("{}", p.run_ns / p.runs))
            })
            .collect();
        let _ = writeln!(
            out,
            "| {workload} | `{name}` | {} | {} |",
            thousands(runs),
            cells.join(" | ")
        );
    }
    out
}

/// The issue's budgets, each with the measured value and PASS/MISS.
fn budgets(names: &[&str], results: &Results) -> Vec<String> {
    let table = Measured { names, results };
    [
        refault_budgets(&table),
        floor_budgets(&table),
        below(
            &table,
            (Config::MemtracePid, Config::Bpftrace),
            "default mode below bpftrace",
        ),
        below(
            &table,
            (Config::MemtraceStacks, Config::BpftraceUstack),
            "--stacks below bpftrace's ustack count",
        ),
        streaming_budgets(&table),
        tracer_budgets(&table),
    ]
    .concat()
}

/// The medians the budgets are judged on.
struct Measured<'a> {
    names: &'a [&'a str],
    results: &'a Results,
}

impl Measured<'_> {
    fn samples(&self, name: &str, config: Config) -> Option<&[Sample]> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.results.get(&(i, config)).map(Vec::as_slice)
    }

    /// A configuration's median per operation over the untraced run's.
    fn ratio_by(&self, name: &str, config: Config, per_op: fn(&Sample) -> f64) -> Option<f64> {
        let base = med(self.samples(name, Config::Untraced)?, |s| Some(per_op(s)))?;
        Some(med(self.samples(name, config)?, |s| Some(per_op(s)))? / base)
    }

    /// Wall time per operation over untraced.
    fn ratio(&self, name: &str, config: Config) -> Option<f64> {
        self.ratio_by(name, config, ns_per_op)
    }

    /// The workload's CPU time per operation over untraced, as a table cell.
    fn cpu(&self, name: &str, config: Config) -> String {
        self.ratio_by(name, config, cpu_per_op)
            .map_or("—".to_owned(), |r| format!("{r:.2}×"))
    }

    /// The workloads measured here (not the empty ones left out of a quick run).
    fn workloads(&self) -> impl Iterator<Item = &str> {
        self.names.iter().copied().filter(|n| !n.is_empty())
    }
}

/// Refault, the fault path's cost, within 10 % of untraced.
fn refault_budgets(t: &Measured) -> Vec<String> {
    [Config::MemtracePid, Config::MemtraceSystem]
        .into_iter()
        .filter_map(|config| {
            let (r, floor) = (
                t.ratio("refault", config)?,
                t.ratio("refault", Config::Floor)?,
            );
            Some(format!(
                "{}: {} on refault ≤ 1.10× untraced: {r:.2}× (CPU time {}; floor {floor:.2}×)",
                verdict(r <= 1.10),
                config.label(),
                t.cpu("refault", config)
            ))
        })
        .collect()
}

/// memtrace's own work over the hooks' cost by themselves (the floor), within a margin.
fn floor_budgets(t: &Measured) -> Vec<String> {
    let margins = [
        ("refault", 0.03),
        ("madvise-heavy", 0.10),
        ("fault-heavy", 0.03),
    ];
    let mut lines = Vec::new();
    for (name, margin) in margins {
        for config in [Config::MemtracePid, Config::MemtraceSystem] {
            if let (Some(r), Some(floor)) = (t.ratio(name, config), t.ratio(name, Config::Floor)) {
                lines.push(format!(
                    "{}: {} on {name} within {margin:.2} of the floor: {r:.2}× vs {floor:.2}× \
                     (CPU time {} vs {})",
                    verdict(r <= floor + margin),
                    config.label(),
                    t.cpu(name, config),
                    t.cpu(name, Config::Floor)
                ));
            }
        }
    }
    lines
}

/// `ours` costs less than `theirs` on every workload both ran.
fn below(t: &Measured, (ours, theirs): (Config, Config), what: &str) -> Vec<String> {
    t.workloads()
        .filter_map(|name| {
            let (m, b) = (t.ratio(name, ours)?, t.ratio(name, theirs)?);
            Some(format!(
                "{}: {what} on {name}: {m:.2}× vs {b:.2}× (CPU time {} vs {})",
                verdict(m < b),
                t.cpu(name, ours),
                t.cpu(name, theirs)
            ))
        })
        .collect()
}

/// Streaming every fault: nothing lost at a million events a second; nothing lost by default.
fn streaming_budgets(t: &Measured) -> Vec<String> {
    let mut lines = Vec::new();
    for name in ["fault-heavy", "fault-heavy-2t"] {
        let Some(samples) = t.samples(name, Config::MemtraceFaultEvents) else {
            continue;
        };
        let lost = samples.iter().filter_map(|s| s.tracer.as_ref()?.lost).max();
        let rate = med(samples, |s| {
            Some(s.tracer.as_ref()?.events? as f64 / (s.wall_ns as f64 / 1e9))
        });
        // How fast the workload faults with nothing attached: the most it could ask for.
        let untraced = t
            .samples(name, Config::Untraced)
            .and_then(|u| med(u, |s| Some(s.ops as f64 / (s.wall_ns as f64 / 1e9))));
        if let (Some(lost), Some(rate)) = (lost, rate) {
            lines.push(format!(
                "{}: 0 lost at ≥ 1 M events/s streamed (--fault-events --json, default ring), \
                 {name}: {lost} lost at {:.2} M events/s (untraced, this workload faults at {} M/s)",
                verdict(lost == 0 && rate >= 1e6),
                rate / 1e6,
                untraced.map_or("?".to_owned(), |r| format!("{:.2}", r / 1e6))
            ));
        }
    }
    let default_lost = t
        .results
        .iter()
        .filter(|((_, c), _)| matches!(c, Config::MemtracePid | Config::MemtraceSystem))
        .flat_map(|(_, samples)| samples.iter().filter_map(|s| s.tracer.as_ref()?.lost))
        .max();
    if let Some(lost) = default_lost {
        lines.push(format!(
            "{}: 0 lost events in the default mode (--pid and system-wide, every workload): \
             at most {lost}",
            verdict(lost == 0)
        ));
    }
    lines
}

/// memtrace's own start and footprint, over every run of it.
fn tracer_budgets(t: &Measured) -> Vec<String> {
    let costs: Vec<&TracerCost> = t
        .results
        .iter()
        .filter(|((_, c), _)| c.is_memtrace())
        .flat_map(|(_, samples)| samples.iter().filter_map(|s| s.tracer.as_ref()))
        .collect();
    if costs.is_empty() {
        return Vec::new();
    }
    let mut attach: Vec<f64> = costs.iter().map(|t| t.attach.as_secs_f64() * 1e3).collect();
    let worst = attach.iter().copied().fold(0.0, f64::max);
    let typical = median(&mut attach);
    let rss = costs.iter().map(|t| t.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    vec![
        format!(
            "{}: attached ≤ 150 ms: median {typical:.0} ms, worst {worst:.0} ms over {} starts",
            verdict(worst <= 150.0),
            attach.len()
        ),
        format!(
            "{}: memtrace peak RSS ≤ 32 MiB: worst {rss:.1} MiB",
            verdict(rss <= 32.0)
        ),
    ]
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Replaces the generated part of the report file, keeping the hand-written rest.
fn write_report(path: &Path, generated: &str) -> anyhow::Result<()> {
    write_section(path, (BEGIN_MARK, END_MARK), generated)
}

/// Replaces the text between `marks` in the report file (appending it when they are
/// missing), keeping the rest.
fn write_section(path: &Path, marks: (&str, &str), generated: &str) -> anyhow::Result<()> {
    let (begin_mark, end_mark) = marks;
    let block = format!("{begin_mark}\n{generated}\n{end_mark}");
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# memtrace benchmarks\n\nGenerated by `cargo xtask bench`; the results sections are \
         rewritten on every run, the rest is kept.\n"
            .to_owned()
    });
    let text = match (existing.find(begin_mark), existing.find(end_mark)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{block}{}",
            &existing[..begin],
            &existing[end + end_mark.len()..]
        ),
        _ => format!("{}\n{block}\n", existing.trim_end()),
    };
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_from_text_and_json() {
        assert_eq!(
            memtrace_lost(&["x".into(), "lost events: 0".into()]),
            Some(0)
        );
        assert_eq!(
            memtrace_lost(&["lost events: 12 (ring buffer full: 12) — totals".into()]),
            Some(12)
        );
        assert_eq!(
            memtrace_lost(&[r#"{"type":"summary","lost":{"total":7}}"#.into()]),
            Some(7)
        );
        assert_eq!(memtrace_lost(&["nothing".into()]), None);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1_048_576), "1,048,576");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }

    #[test]
    fn report_keeps_hand_written_text() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("B.md");
        std::fs::write(
            &path,
            format!("head\n{BEGIN_MARK}\nold\n{END_MARK}\ntail\n"),
        )
        .unwrap();
        write_report(&path, "new").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("head\n{BEGIN_MARK}\nnew\n{END_MARK}\ntail\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
