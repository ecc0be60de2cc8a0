//! Developer tasks: `cargo xtask bootstrap | run | test | lint | schema | docs | bench`.
//!
//! Every task that builds calls `bootstrap` first, which installs what is missing (rust-src,
//! LLVM matching rustc, bpf-linker built against it) and mounts tracefs; when everything is
//! present it costs a few process spawns.

mod bench;
mod bootstrap;
mod docs;
mod layers;
mod tasks;

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
        /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Regenerate schema/memtrace.schema.json from memtrace's JSON line types.
    Schema,
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Bootstrap => bootstrap::run(),
        Task::Run { args } => bootstrap::run().and_then(|()| tasks::run(&args)),
        Task::Test { args } => bootstrap::run()
            .and_then(|()| bootstrap::ensure_test_tools())
            .and_then(|()| tasks::test(&args)),
        Task::Schema => bootstrap::run().and_then(|()| tasks::schema()),
        Task::Docs { out } => docs::generate(&tasks::workspace_root().join(out))
            .and_then(|()| docs::write_readme_tables(&tasks::workspace_root().join("README.md"))),
        Task::Lint => bootstrap::run()
            .and_then(|()| docs::check_readme_tables(&tasks::workspace_root().join("README.md")))
            .and_then(|()| layers::check(&tasks::workspace_root().join("memtrace/src")))
            .and_then(|()| tasks::lint()),
        Task::Bench { quick, iterations } => {
            bootstrap::run().and_then(|()| bench::run(&bench::Options { quick, iterations }))
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
