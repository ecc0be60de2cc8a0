//! memtrace: trace what the kernel and a program really do with memory.
//!
//! Layers, each importing only those below it: [`kernel`] (loading, maps, offsets, /proc) →
//! [`model`] (decoded events, per-process attribution, reclaim) → [`analysis`] (explanation,
//! Go verdict, the snapshot every output reads) → [`output`] (text, live view, JSON,
//! Prometheus) → [`session`] (the one event loop, and the modes). [`units`] and [`stop`] are
//! shared vocabulary. ARCHITECTURE.md walks through it.

mod analysis;
mod cli;
mod kernel;
mod model;
mod output;
mod session;
mod stop;
mod units;

use std::{process::ExitCode, time::Duration};

use clap::Parser as _;

use crate::{
    analysis::selection::Selection,
    cli::{Cli, Command, KernelArgs},
    session::{Config, go::Go, reclaim::Reclaim, trace::Trace},
};

fn main() -> ExitCode {
    // Before anything else: a signal from now on ends the run with a report.
    session::signals::block();
    keep_heap_small();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("memtrace: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("memtrace: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the mode the command line asks for.
async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => {
            let pids = cli::unique(&cli.scope.pid);
            let mut config = base_config(&pids, cli.scope.duration, &cli.kernel);
            config.fault_events = cli.fault_events;
            config.empty_programs = cli.bench_empty_programs;
            config.trampolines = !cli.bench_tracepoints_only;
            config.entry_programs = cli.bench_entry_programs;
            config.follow = cli.follow;
            config.prometheus = cli.prometheus;
            config.stacks = cli.stacks;
            config.max_processes = cli.max_processes;
            config.keep_top = cli.top;
            // Per-process series by default only for named targets: system-wide they would
            // grow with every process on the node.
            config.metrics_processes =
                cli.prometheus_processes
                    .unwrap_or(if pids.is_empty() { 0 } else { 20 });
            config.selection = Selection {
                comms: kernel_comms(&cli.comm),
                containers: cli.container.clone(),
                cgroups: cli.cgroup.clone(),
                by: cli.by,
                sort: cli.sort,
                ..config.selection
            };
            let mut mode = Trace::new(&pids, cli.follow, cli.json, cli.top, cli.interval);
            if cli.no_events {
                mode = mode.without_events();
            }
            session::run(config, mode).await
        }
        Some(Command::Reclaim(args)) => {
            let pids = cli::unique(&args.scope.pid);
            let mut config = base_config(&pids, args.scope.duration, &args.kernel);
            config.stacks = args.stacks;
            let mode = Reclaim {
                json: args.json,
                interval: args.interval,
            };
            session::run(config, mode).await
        }
        Some(Command::Go(args)) => {
            let mut config = base_config(&[args.pid], Some(args.wait), &args.kernel);
            config.need_targets = true;
            session::run(config, Go::new(args.json, args.wait)).await
        }
    }
}

/// What every command's session starts from: its targets (none: every process), how long it
/// runs, and how it works with the kernel.
fn base_config(pids: &[u32], duration: Option<Duration>, kernel: &KernelArgs) -> Config {
    Config {
        pids: pids.to_vec(),
        ring_kib: kernel.ring_size,
        duration,
        verbose: kernel.verbose,
        selection: Selection {
            targets: pids.to_vec(),
            ..Selection::default()
        },
        ..Config::quiet()
    }
}

/// `--comm` names as the kernel keeps them, with a warning for each it had to cut.
fn kernel_comms(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            let (kept, cut) = cli::comm_as_kernel_keeps(name);
            if cut {
                eprintln!(
                    "memtrace: warning: --comm {name}: the kernel keeps only the first 15 bytes of a process's name; matching '{kept}'"
                );
            }
            kept.to_owned()
        })
        .collect()
}

/// Loading reads the kernel's BTF (megabytes) into buffers freed right after. glibc then raises
/// its mmap threshold to that size, so later large buffers land on the heap and the freed space
/// is never returned (peak RSS a third higher, measured by `cargo xtask bench`).
/// A fixed threshold (glibc's own initial 128 KiB) keeps large buffers in their own mappings,
/// given back to the kernel when freed.
fn keep_heap_small() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
