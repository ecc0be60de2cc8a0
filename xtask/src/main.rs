//! Developer tasks: `cargo xtask bootstrap | run | test | lint | schema | go-layouts | docs |
//! bench | vm | image`.
//!
//! Every task that builds calls `bootstrap` first, which installs what is missing (rust-src,
//! LLVM matching rustc, bpf-linker built against it) and mounts tracefs; when everything is
//! present it costs a few process spawns.

mod apt;
mod bench;
mod bootstrap;
mod docs;
mod go_layouts;
mod guest_bench;
mod image;
mod layers;
mod stats;
mod tasks;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain (rust-src, LLVM, bpf-linker) if missing; mount tracefs.
    Bootstrap,
    /// Build memtrace in release mode and run it (through sudo when not root).
    Run {
        /// Arguments for memtrace, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests and the privileged integration tests (real eBPF). Installs
    /// golang-go and bpftrace first if missing (the Go tests build and trace real Go programs).
    Test {
        /// Run the integration tests on another kernel: `host` (this machine's, the default),
        /// a Debian kernel booted under QEMU (debian-5.10, debian-6.1, debian-6.12), or `all`
        /// (the host and every Debian kernel).
        #[arg(long, value_name = "NAME", value_parser = vm::parse_kernel)]
        kernel: Option<vm::KernelChoice>,
        /// The guests' cgroup hierarchy for the memory controller (default v2).
        #[arg(long, value_enum, requires = "kernel")]
        cgroup: Option<vm::Cgroup>,
        /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`; in guests,
        /// for each test binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot a Debian kernel under QEMU with the test binaries, memtrace, bpftrace and Go
    /// inside (at their host paths) and run a command there as root, printing its output;
    /// without a command, an interactive shell on the guest's console.
    Vm {
        /// The guest kernel: debian-5.10, debian-6.1 or debian-6.12.
        #[arg(long, value_name = "NAME", value_parser = vm::parse_guest_kernel)]
        kernel: &'static vm::GuestKernel,
        /// The guest's cgroup hierarchy for the memory controller.
        #[arg(long, value_enum, default_value = "v2")]
        cgroup: vm::Cgroup,
        /// Also copy this host file or directory into the guest, at the same path (e.g. a
        /// script or a tool to investigate with; programs bring their libraries). Repeatable.
        #[arg(long = "with", value_name = "PATH")]
        with: Vec<std::path::PathBuf>,
        /// The command, after `--` (its words are joined and run by sh, as ssh does).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Build the container image deploy/daemonset.yaml runs (deploy/Dockerfile: a static
    /// memtrace, FROM scratch) with podman, pulling nothing.
    Image {
        /// The image's name and tag.
        #[arg(long, default_value = image::DEFAULT_TAG)]
        tag: String,
        /// Also save the image as an OCI archive at this path (`podman load`, `skopeo copy`).
        #[arg(long, value_name = "PATH")]
        archive: Option<std::path::PathBuf>,
    },
    /// Regenerate schema/memtrace.schema.json from memtrace's JSON line types.
    Schema,
    /// Regenerate memtrace/src/analysis/golang/layouts.rs, where the Go runtime keeps its heap
    /// figures in each Go release the tests build with, from those builds' DWARF and code
    /// (fetches the toolchains with pip and builds the Go test programs first).
    GoLayouts,
    /// Generate the man page and bash/zsh/fish completions from memtrace's CLI definition, and
    /// README.md's kernel tables from memtrace-common's hook and field tables.
    Docs {
        /// Where to write them.
        #[arg(long, default_value = "target/docs")]
        out: std::path::PathBuf,
    },
    /// `cargo fmt --check` and `cargo clippy -D warnings`, for userspace and the eBPF crate;
    /// fails when README.md's generated kernel tables are stale or a module imports a layer
    /// above its own.
    Lint,
    /// Measure memtrace's cost on benchmark workloads against untraced, bpftrace and strace;
    /// print the table and write BENCHMARKS.md (never run by `test`).
    Bench {
        /// Small workloads and one iteration: a smoke run of the whole harness (writes
        /// target/BENCHMARKS-quick.md instead of BENCHMARKS.md).
        #[arg(long)]
        quick: bool,
        /// Runs of each configuration (default 5, or 1 with --quick).
        #[arg(long, value_name = "N")]
        iterations: Option<usize>,
        /// Instead, compare the syscall programs on BPF trampolines with the same on
        /// tracepoints in a Debian guest (debian-5.10, debian-6.1 or debian-6.12); writes its
        /// section of BENCHMARKS.md.
        #[arg(long, value_name = "KERNEL", value_parser = vm::parse_guest_kernel)]
        guest: Option<&'static vm::GuestKernel>,
        /// Only this case: a workload (refault, fault-heavy, fault-heavy-2t, madvise-heavy,
        /// mmap-churn, go-mixed) or node-scale (memtrace as a busy node's --prometheus agent:
        /// 1,500 idle processes, 40 new ones a second, 60 s; its own section of BENCHMARKS.md).
        #[arg(long, value_name = "NAME", conflicts_with = "guest")]
        case: Option<String>,
        /// Only this workload (refault, fault-heavy, fault-heavy-2t, madvise-heavy, mmap-churn,
        /// go-mixed); repeatable. A partial run writes target/BENCHMARKS-only.md.
        #[arg(long, value_name = "WORKLOAD")]
        only: Vec<String>,
        /// Only this configuration (untraced, floor, pid, pid-entries, system, fault-events,
        /// bpftrace, stacks, bpftrace-ustack, strace); repeatable.
        #[arg(long = "config", value_name = "CONFIG")]
        configs: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Bootstrap => bootstrap::run(),
        Task::Run { args } => bootstrap::run().and_then(|()| tasks::run(&args)),
        Task::Test {
            kernel,
            cgroup,
            args,
        } => bootstrap::run()
            .and_then(|()| bootstrap::ensure_test_tools())
            .and_then(|()| match kernel {
                None => image::for_tests().and_then(|()| tasks::test(&args)),
                Some(kernel) => vm::test(kernel, cgroup, &args),
            }),
        Task::Image { tag, archive } => {
            bootstrap::run().and_then(|()| image::build(&image::Options { tag, archive }))
        }
        Task::Schema => bootstrap::run().and_then(|()| tasks::schema()),
        Task::GoLayouts => bootstrap::run()
            .and_then(|()| bootstrap::ensure_test_tools())
            .and_then(|()| go_layouts::generate()),
        Task::Docs { out } => docs::generate(&tasks::workspace_root().join(out))
            .and_then(|()| docs::write_readme_tables(&tasks::workspace_root().join("README.md"))),
        Task::Lint => bootstrap::run()
            .and_then(|()| docs::check_readme_tables(&tasks::workspace_root().join("README.md")))
            .and_then(|()| layers::check(&tasks::workspace_root().join("memtrace/src")))
            .and_then(|()| tasks::lint()),
        Task::Bench {
            quick,
            iterations,
            guest,
            case,
            only,
            configs,
        } => bootstrap::run().and_then(|()| {
            bench::run(&bench::Options {
                quick,
                iterations,
                guest,
                case,
                only,
                configs,
            })
        }),
        Task::Vm {
            kernel,
            cgroup,
            with,
            command,
        } => {
            // The command's own exit status is ours.
            return bootstrap::run()
                .and_then(|()| bootstrap::ensure_test_tools())
                .and_then(|()| vm::command(kernel, cgroup, &with, &command))
                .unwrap_or_else(|e| {
                    eprintln!("xtask: {e:#}");
                    ExitCode::FAILURE
                });
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
