//! memtrace: trace what the kernel and a program really do with memory.

mod attribution;
mod btf;
mod cli;
mod events;
mod explain;
mod gfp;
mod golang;
mod live;
mod output;
mod procfs;
mod prometheus;
mod pump;
mod reclaim;
mod report;
mod tracefs;
mod tracer;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let mut cli = cli::Cli::parse();
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
    let result = match cli.command.take() {
        None => runtime.block_on(pump::run(cli)),
        Some(cli::Command::Go(args)) => runtime.block_on(pump::run_go(args)),
        Some(cli::Command::Reclaim(args)) => runtime.block_on(reclaim::pump::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("memtrace: {e:#}");
            ExitCode::FAILURE
        }
    }
}
