//! memtrace-workload: performs exactly known memory operations and prints a JSON record of what
//! it did, so tests and benchmarks can hold memtrace to independent ground truth.
//!
//! Protocol: the workload sets up (maps and touches memory, forks helpers), prints one line
//! `{"ready":true,"pid":N}`, then waits for a line on stdin before doing the measured work; this
//! lets the tracer attach first. It then prints one JSON record line and exits.

mod bench;
mod madvise;
mod memory;
mod reclaim;

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
    /// mmap, touch and munmap anonymous and file memory, private and shared.
    Mmap(memory::MmapArgs),
    /// Grow and shrink the program break.
    Brk(memory::BrkArgs),
    /// mmap, then mremap to another size, then munmap.
    Mremap(memory::MremapArgs),
    /// Touch fresh anonymous pages and read an evicted file: known minor and major faults.
    Faults(memory::FaultArgs),
    /// madvise in the parent, fork, madvise and mmap in the child.
    Fork(memory::ForkArgs),
    /// madvise, then exec this binary under another name to run another workload.
    Exec(memory::ExecArgs),
    /// Fork many children that live a while, all at once.
    ForkMany(memory::ForkManyArgs),
    /// MADV_FREE a region, wait while the driver creates pressure, count reclaimed pages.
    Lazyfree(memory::LazyFreeArgs),
    /// Fault in and release the same pages, round after round, until told to stop.
    Steady(memory::SteadyArgs),
    /// Read a fresh sparse file through the page cache (memcg reclaim inside a small cgroup).
    PageCache(reclaim::PageCacheArgs),
    /// Touch anonymous memory past a cgroup's limit (gets OOM-killed).
    Hog(reclaim::HogArgs),
    /// Benchmark: touch fresh anonymous memory page by page (one fault per page), timed.
    BenchFaults(bench::FaultHeavyArgs),
    /// Benchmark: MADV_DONTNEED one page and write it again, many times, timed.
    BenchMadvise(bench::MadviseHeavyArgs),
    /// Benchmark: mmap, touch and munmap a small anonymous region, many times, timed.
    BenchMmap(bench::MmapChurnArgs),
    /// Benchmark: write every page of a warm mapping, MADV_DONTNEED it, pass after pass, timed.
    BenchRefault(bench::RefaultArgs),
    /// Benchmark: a syscall memtrace does not trace (getppid), many times, timed.
    BenchSyscalls(bench::SyscallsArgs),
    /// Benchmark (node scale): sleep, waking now and then to touch and release a page.
    BenchIdle(bench::IdleArgs),
}

fn main() {
    let cli = Cli::parse();
    let go = || go_signal(cli.no_wait);
    let result = match cli.command {
        Command::Madvise(args) => madvise::run(&args, go),
        Command::ProcessMadvise(args) => madvise::run_process_madvise(&args, go),
        Command::Mmap(args) => memory::run_mmap(&args, go),
        Command::Brk(args) => memory::run_brk(&args, go),
        Command::Mremap(args) => memory::run_mremap(&args, go),
        Command::Faults(args) => memory::run_faults(&args, go),
        Command::Fork(args) => memory::run_fork(&args, go),
        Command::Exec(args) => memory::run_exec(&args, go),
        Command::ForkMany(args) => memory::run_fork_many(&args, go),
        Command::Lazyfree(args) => memory::run_lazyfree(&args, go),
        Command::Steady(args) => memory::run_steady(&args, go),
        Command::PageCache(args) => reclaim::run_page_cache(&args, go),
        Command::Hog(args) => reclaim::run_hog(&args, go),
        Command::BenchFaults(args) => bench::run_fault_heavy(&args, go),
        Command::BenchMadvise(args) => bench::run_madvise_heavy(&args, go),
        Command::BenchMmap(args) => bench::run_mmap_churn(&args, go),
        Command::BenchRefault(args) => bench::run_refault(&args, go),
        Command::BenchSyscalls(args) => bench::run_syscalls(&args, go),
        Command::BenchIdle(args) => bench::run_idle(&args, go),
    };
    match result {
        Ok(record) => {
            println!("{record}");
            let _ = io::stdout().flush();
            // Leave at once: the runtime's own cleanup (e.g. unmapping the signal stack) would
            // add memory calls that the record does not list.
            // SAFETY: nothing is left to flush or drop that matters.
            unsafe { libc::_exit(0) };
        }
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
