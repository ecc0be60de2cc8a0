//! memtrace-workload: performs exactly known memory operations and prints a JSON record of what
//! it did, so tests and benchmarks can hold memtrace to independent ground truth.
//!
//! Protocol: the workload sets up (maps and touches memory, forks helpers), prints one line
//! `{"ready":true,"pid":N}`, then waits for a line on stdin before doing the measured work; this
//! lets the tracer attach first. It then prints one JSON record line and exits.

mod madvise;

use std::io::{self, BufRead as _, Write as _};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "memtrace-workload",
    about = "Known memory workloads for testing memtrace"
)]
struct Cli {
    /// Start at once instead of waiting for a line on stdin.
    #[arg(long, global = true)]
    no_wait: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// madvise calls on anonymous memory: each --op ADVICE:CALLS:PAGES makes CALLS calls of
    /// PAGES pages each, on consecutive pages of one mapping.
    Madvise(madvise::MadviseArgs),
    /// process_madvise on a forked child's memory.
    ProcessMadvise(madvise::ProcessMadviseArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Madvise(args) => madvise::run(&args, || go_signal(cli.no_wait)),
        Command::ProcessMadvise(args) => {
            madvise::run_process_madvise(&args, || go_signal(cli.no_wait))
        }
    };
    match result {
        Ok(record) => println!("{record}"),
        Err(e) => {
            eprintln!("memtrace-workload: {e}");
            std::process::exit(1);
        }
    }
}

/// Announces readiness and blocks until the driver says go (a line on stdin).
fn go_signal(no_wait: bool) -> io::Result<()> {
    println!(
        "{}",
        serde_json::json!({ "ready": true, "pid": std::process::id() })
    );
    io::stdout().flush()?;
    if no_wait {
        return Ok(());
    }
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stdin closed before the go signal",
        ));
    }
    Ok(())
}
