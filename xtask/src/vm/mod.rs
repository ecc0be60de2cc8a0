//! The kernel matrix: the privileged integration tests on the kernels users run (Debian's
//! 5.10, 6.1 and 6.12 cloud kernels), each booted under QEMU, next to the host's own kernel;
//! and `cargo xtask vm`, a shell or one command in such a guest, to investigate differences.
//!
//! A run: install the host tools that are missing, fetch the kernels (cached in
//! target/kernels), build the integration tests, list their tests on the host, build one root
//! image for all guests (rootfs.rs), then per kernel boot a guest whose job is one step per
//! test (job.rs, guest/init.sh), follow it (session.rs) and judge the results (report.rs).
//!
//! Tests run one at a time, each in its own process: the two vCPUs share one host thread
//! (single-threaded TCG), so running tests side by side would buy little, and several tests
//! trace the whole system and count exactly, so a neighbour would disturb them. It also gives
//! each test its own time limit and log.

mod disk;
mod format;
mod job;
mod kernels;
mod qemu;
mod report;
mod rootfs;
mod session;
mod suite;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub use self::kernels::GuestKernel;
use self::{
    format::seconds,
    job::{Job, Mode, shell_quote},
    kernels::{GUESTS, Prepared},
    qemu::Machine,
    report::{KernelReport, Outcome, Verdict},
    session::Progress,
    suite::{Build, TestCase},
};
use crate::{
    apt::{self, Tool},
    image,
    tasks::{self, which, workspace_root},
};

/// How long one test may run in a guest (5–7× slower than the host) before it is killed.
const TEST_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a `cargo xtask vm` command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);
/// libtest flags that ask for `#[ignore]`d tests to run.
const RUN_IGNORED: [&str; 2] = ["--ignored", "--include-ignored"];

const HOST_TOOLS: [Tool; 3] = [
    Tool {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
    },
    // Static, so it runs in the guest without libraries.
    Tool {
        program: "busybox",
        package: "busybox-static",
    },
    Tool {
        program: "mkfs.ext4",
        package: "e2fsprogs",
    },
];

/// Which kernel `cargo xtask test --kernel` runs the tests on.
#[derive(Clone, Copy)]
pub enum KernelChoice {
    /// This machine's kernel: plain `cargo test`.
    Host,
    Guest(&'static GuestKernel),
    /// The host and every guest.
    All,
}

/// `--kernel`'s parser: `host`, `all` or a guest's name.
pub fn parse_kernel(name: &str) -> Result<KernelChoice, String> {
    match name {
        "host" => Ok(KernelChoice::Host),
        "all" => Ok(KernelChoice::All),
        _ => parse_guest_kernel(name)
            .map(KernelChoice::Guest)
            .map_err(|e| format!("{e}, host, all")),
    }
}

/// A guest kernel's name, for `cargo xtask vm --kernel`.
pub fn parse_guest_kernel(name: &str) -> Result<&'static GuestKernel, String> {
    kernels::by_name(name).ok_or_else(|| {
        let names: Vec<&str> = GUESTS.iter().map(|k| k.name).collect();
        format!("unknown kernel '{name}'; known: {}", names.join(", "))
    })
}

/// Which cgroup hierarchy the guest's memory controller is on.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cgroup {
    V1,
    V2,
}

impl Cgroup {
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// `cargo xtask test --kernel …`: `args` go to `cargo test` on the host and, in guests, to
/// each test binary (libtest arguments such as a name filter).
pub fn test(choice: KernelChoice, cgroup: Option<Cgroup>, args: &[String]) -> anyhow::Result<()> {
    let guests: Vec<&'static GuestKernel> = match choice {
        KernelChoice::Host if cgroup.is_some() => {
            bail!("--cgroup is for guest kernels: the host's tests use the host's cgroups")
        }
        KernelChoice::Host => return image::for_tests().and_then(|()| tasks::test(args)),
        KernelChoice::Guest(kernel) => vec![kernel],
        KernelChoice::All => GUESTS.iter().collect(),
    };
    let cgroup = cgroup.unwrap_or(Cgroup::V2);
    // The host first: it is quick and builds what the guests need too.
    let host = matches!(choice, KernelChoice::All).then(|| {
        let result = image::for_tests().and_then(|()| tasks::test(args));
        if let Err(e) = &result {
            eprintln!("xtask: host: {e:#}");
        }
        result.is_ok()
    });
    let started = Instant::now();
    let kernels = prepare_kernels(&guests, cgroup)?;
    let build = suite::build()?;
    let cases = suite::list(&build, &libtest_filters(args))?;
    if cases.is_empty() {
        bail!("no integration test matches {args:?}");
    }
    suite::prepare_on_host(&build)?;
    let image = rootfs::create(&build, &[], &vm_dir())?;
    eprintln!(
        "xtask: guests prepared in {} ({} selected)",
        seconds(started.elapsed()),
        tests(cases.len())
    );
    let mut reports = Vec::new();
    for kernel in &kernels {
        let report = run_tests(kernel, cgroup, image.path(), &build, &cases)?;
        report.print();
        reports.push(report);
    }
    print_matrix(host, &reports);
    let failed = host == Some(false) || reports.iter().any(|r| !r.passed());
    if failed {
        bail!("the integration tests did not all pass on every kernel");
    }
    Ok(())
}

/// `cargo xtask vm`: runs `command` (its words joined with spaces and run by sh, as ssh does)
/// as root in a guest with the host paths `with` added, and returns its exit status; without a
/// command, an interactive shell.
pub fn command(
    kernel: &'static GuestKernel,
    cgroup: Cgroup,
    with: &[PathBuf],
    command: &[String],
) -> anyhow::Result<ExitCode> {
    ensure_host_tools()?;
    let kernel = prepare_kernel(kernel, cgroup)?;
    let image = rootfs::create(&suite::build()?, with, &vm_dir())?;
    let mode = if command.is_empty() {
        Mode::Shell
    } else {
        Mode::Steps(vec![command.join(" ")])
    };
    let dir = kernel_dir(&kernel, cgroup)?;
    let job_image = job(mode, cgroup, COMMAND_TIMEOUT, &kernel).write_image(&dir)?;
    let machine = Machine {
        kernel: &kernel,
        root: image.path(),
        job: job_image.path(),
        console_log: dir.join("console.log"),
    };
    eprintln!(
        "xtask: {} ({}), cgroup {}; console log: {}",
        kernel.name,
        kernel.package,
        cgroup.name(),
        machine.console_log.display()
    );
    if command.is_empty() {
        machine.interactive()?;
        return Ok(ExitCode::SUCCESS);
    }
    run_command(&machine)
}

/// Runs `command` (by sh) as root in a guest with the host paths `with` added, and returns its
/// exit status and output, echoing each line to stderr as it comes.
pub fn capture(
    kernel: &'static GuestKernel,
    with: &[PathBuf],
    command: &str,
) -> anyhow::Result<(i32, String)> {
    let cgroup = Cgroup::V2;
    ensure_host_tools()?;
    let kernel = prepare_kernel(kernel, cgroup)?;
    let image = rootfs::create(&suite::build()?, with, &vm_dir())?;
    let dir = kernel_dir(&kernel, cgroup)?;
    let job_image = job(
        Mode::Steps(vec![command.to_owned()]),
        cgroup,
        COMMAND_TIMEOUT,
        &kernel,
    )
    .write_image(&dir)?;
    let machine = Machine {
        kernel: &kernel,
        root: image.path(),
        job: job_image.path(),
        console_log: dir.join("console.log"),
    };
    let mut session = session::run(&machine, 1, COMMAND_TIMEOUT, |progress| {
        if let Progress::Line(line) = progress {
            eprintln!("xtask: {}: {line}", kernel.name);
        }
    })?;
    if let Some(problem) = session.problem {
        bail!("{problem} (console: {})", machine.console_log.display());
    }
    let step = session.steps.remove(0);
    let status = step.status.context("the command did not finish")?;
    Ok((status, step.output))
}

/// Boots `machine`, whose job is one command; prints its output as it comes and returns its
/// exit status.
fn run_command(machine: &Machine) -> anyhow::Result<ExitCode> {
    let session = session::run(machine, 1, COMMAND_TIMEOUT, |progress| {
        if let Progress::Line(line) = progress {
            println!("{line}");
        }
    })?;
    if let Some(problem) = session.problem {
        bail!("{problem} (console: {})", machine.console_log.display());
    }
    let status = session.steps[0]
        .status
        .context("the command did not finish")?;
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)))
}

/// Installs missing host tools, then fetches the kernels.
fn prepare_kernels(
    guests: &[&'static GuestKernel],
    cgroup: Cgroup,
) -> anyhow::Result<Vec<Prepared>> {
    ensure_host_tools()?;
    guests
        .iter()
        .map(|guest| prepare_kernel(guest, cgroup))
        .collect()
}

/// Fetches a kernel (or finds it cached) and checks it has what `cgroup` needs.
fn prepare_kernel(guest: &'static GuestKernel, cgroup: Cgroup) -> anyhow::Result<Prepared> {
    let started = Instant::now();
    let kernel = guest.prepare(&workspace().join("target/kernels"))?;
    eprintln!(
        "xtask: {}: {} ready in {}",
        kernel.name,
        kernel.package,
        seconds(started.elapsed())
    );
    if cgroup == Cgroup::V1 && !kernel.has_cgroup_v1_memory()? {
        bail!(
            "{} has no cgroup v1 memory controller (CONFIG_MEMCG_V1 is off): use --cgroup v2",
            kernel.name
        );
    }
    Ok(kernel)
}

/// A job for `kernel`, started in the workspace.
fn job(mode: Mode, cgroup: Cgroup, step_timeout: Duration, kernel: &Prepared) -> Job {
    Job {
        mode,
        cgroup,
        workdir: workspace(),
        step_timeout,
        headers: kernel.headers.clone(),
    }
}

/// QEMU, busybox and mkfs.ext4, installed with apt-get if missing.
fn ensure_host_tools() -> anyhow::Result<()> {
    let apt_dir = workspace().join("target/host-apt");
    apt::ensure_tools(&HOST_TOOLS, host_has, "booting test kernels", &apt_dir)
}

fn host_has(program: &str) -> bool {
    which(program).is_some() || program == "mkfs.ext4" && disk::mkfs_ext4().is_ok()
}

/// Runs every selected test on `kernel`, one step per test.
fn run_tests(
    kernel: &Prepared,
    cgroup: Cgroup,
    image: &Path,
    build: &Build,
    cases: &[TestCase],
) -> anyhow::Result<KernelReport> {
    let label = format!("{}, cgroup {}", kernel.name, cgroup.name());
    let dir = kernel_dir(kernel, cgroup)?;
    let logs = dir.join("logs");
    recreate_dir(&logs)?;
    // Every test, `#[ignore]`d ones too: they are ignored for runs without root, and the guest
    // runs them as root.
    let runnable: Vec<&TestCase> = cases.iter().collect();
    let steps = runnable.iter().map(|c| test_step(build, c)).collect();
    let job_image = job(Mode::Steps(steps), cgroup, TEST_TIMEOUT, kernel).write_image(&dir)?;
    let machine = Machine {
        kernel,
        root: image,
        job: job_image.path(),
        console_log: dir.join("console.log"),
    };
    eprintln!("xtask: {label}: running {}", tests(runnable.len()));
    let session = session::run(&machine, runnable.len(), TEST_TIMEOUT, |progress| {
        if let Progress::Finished(index, step) = progress {
            eprintln!(
                "xtask: {label}: {:<9} {} ({})",
                Verdict::of(step, TEST_TIMEOUT).to_string(),
                test_name(build, runnable[index]),
                seconds(step.duration)
            );
        }
    })?;
    let mut outcomes = Vec::new();
    for (case, step) in runnable.iter().zip(&session.steps) {
        let name = test_name(build, case);
        outcomes.push(Outcome::of_step(name, step, TEST_TIMEOUT, &logs)?);
    }
    Ok(KernelReport {
        label,
        package: match &session.release {
            Some(release) => format!("{}, uname -r {release}", kernel.package),
            None => kernel.package.clone(),
        },
        boot: session.boot,
        run: session.run,
        outcomes,
        problem: session.problem,
        console_log: machine.console_log,
    })
}

/// The guest's script for one test: from its package's directory, like cargo; the test's own
/// output uncaptured, so whatever it prints (skips included) reaches the log.
fn test_step(build: &Build, case: &TestCase) -> String {
    let binary = &build.binaries[case.binary];
    let mut script = format!(
        "cd {} && exec {} --exact {} --test-threads=1 --nocapture",
        shell_quote(&binary.package_dir.to_string_lossy()),
        shell_quote(&binary.path.to_string_lossy()),
        shell_quote(&case.name)
    );
    if case.ignored {
        script.push_str(" --include-ignored");
    }
    script.push('\n');
    script
}

/// `1 test`, `2 tests`.
fn tests(count: usize) -> String {
    format!("{count} test{}", if count == 1 { "" } else { "s" })
}

fn test_name(build: &Build, case: &TestCase) -> String {
    format!("{}/{}", build.binaries[case.binary].target, case.name)
}

/// The arguments for test binaries' `--list`: the user's, without those selecting ignored
/// tests (ignored tests are listed separately).
fn libtest_filters(args: &[String]) -> Vec<String> {
    args.iter()
        .filter(|a| !RUN_IGNORED.contains(&a.as_str()))
        .cloned()
        .collect()
}

fn print_matrix(host: Option<bool>, reports: &[KernelReport]) {
    println!();
    println!("kernel matrix:");
    if let Some(passed) = host {
        println!(
            "  {:<24} {}",
            "host",
            if passed { "passed" } else { "FAILED" }
        );
    }
    for report in reports {
        let verdict = if report.passed() { "passed" } else { "FAILED" };
        println!("  {:<24} {verdict}: {}", report.label, report.counts());
    }
}

/// The workspace's root, without `..` (it is shown, and becomes the guests' working directory).
fn workspace() -> PathBuf {
    fs::canonicalize(workspace_root()).unwrap_or_else(|_| workspace_root())
}

/// target/vm: the root image, and a directory per kernel and cgroup mode.
fn vm_dir() -> PathBuf {
    workspace().join("target/vm")
}

fn kernel_dir(kernel: &Prepared, cgroup: Cgroup) -> anyhow::Result<PathBuf> {
    let dir = vm_dir().join(format!("{}-{}", kernel.name, cgroup.name()));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A file only this run uses (a disk image it boots), removed when the run is done with it.
pub struct RunFile(PathBuf);

impl RunFile {
    /// This run's own name for `file`: a hard link next to it.
    fn link(file: &Path) -> anyhow::Result<Self> {
        let own = file.with_extension(format!("run-{}", std::process::id()));
        let _ = fs::remove_file(&own);
        fs::hard_link(file, &own)
            .with_context(|| format!("cannot link {} to {}", file.display(), own.display()))?;
        Ok(Self(own))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// An empty directory at `dir`, whatever was there before.
fn recreate_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}
