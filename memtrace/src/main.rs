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

use std::process::ExitCode;

use clap::Parser as _;

use crate::{
    analysis::selection::Selection,
    cli::{Cli, Command},
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
            let pids = cli::unique(&cli.pid);
            let config = Config {
                pids: pids.clone(),
                ring_kib: cli.ring_size,
                fault_events: cli.fault_events,
                empty_programs: cli.bench_empty_programs,
                trampolines: !cli.bench_tracepoints_only,
                entry_programs: cli.bench_entry_programs,
                follow: cli.follow,
                duration: cli.duration,
                prometheus: cli.prometheus,
                verbose: cli.verbose,
                selection: Selection {
                    comms: kernel_comms(&cli.comm),
                    containers: cli.container.clone(),
                    cgroups: cli.cgroup.clone(),
                    by: cli.by,
                    sort: cli.sort,
                    targets: pids.clone(),
                    ..Selection::default()
                },
                need_targets: false,
                stacks: cli.stacks,
                max_processes: cli.max_processes,
                keep_top: cli.top,
                metrics_processes: cli.prometheus_processes.unwrap_or(if cli.pid.is_empty() {
                    0
                } else {
                    20
                }),
            };
            let mut mode = Trace::new(pids, cli.follow, cli.json, cli.top, cli.interval);
            if cli.no_events {
                mode = mode.without_events();
            }
            session::run(config, mode).await
        }
        Some(Command::Reclaim(args)) => {
            let pids = cli::unique(&args.pid);
            let config = Config {
                pids: pids.clone(),
                ring_kib: args.ring_size,
                duration: args.duration,
                verbose: args.verbose,
                selection: Selection {
                    targets: pids.clone(),
                    ..Selection::default()
                },
                ..Config::quiet()
            };
            let mode = Reclaim {
                pids,
                json: args.json,
                interval: args.interval,
            };
            session::run(config, mode).await
        }
        Some(Command::Go(args)) => {
            let config = Config {
                pids: vec![args.pid],
                duration: Some(args.wait),
                verbose: args.verbose,
                selection: Selection {
                    targets: vec![args.pid],
                    ..Selection::default()
                },
                need_targets: true,
                ..Config::quiet()
            };
            session::run(config, Go::new(args.json, args.wait)).await
        }
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
/// is never returned: 36 MiB peak RSS instead of 26 MiB (measured by `cargo xtask bench`).
/// A fixed threshold (glibc's own initial 128 KiB) keeps large buffers in their own mappings,
/// given back to the kernel when freed.
fn keep_heap_small() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
