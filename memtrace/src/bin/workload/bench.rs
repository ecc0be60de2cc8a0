//! Benchmark workloads for `cargo xtask bench`: tight loops of one memory operation, timed from
//! inside the workload around the measured loop only, so a tracer's start-up and the process's
//! own start and exit never count.

use std::{io, ptr, time::Instant};

use clap::Args;
use serde_json::{Value, json};

fn page_size() -> usize {
    // SAFETY: no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// What getrusage says about this process so far.
#[derive(Clone, Copy)]
struct Usage {
    minflt: u64,
    majflt: u64,
    /// User + system CPU time. Tracepoint programs run in the traced task's context, so their
    /// cost lands here; unlike wall time it does not include waiting for a CPU on a busy machine.
    cpu_ns: u64,
}

fn usage() -> Usage {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    Usage {
        minflt: usage.ru_minflt as u64,
        majflt: usage.ru_majflt as u64,
        cpu_ns: ns(usage.ru_utime) + ns(usage.ru_stime),
    }
}

fn map_anon(len: usize) -> io::Result<*mut u8> {
    // SAFETY: no address hint; the kernel validates the rest.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(addr.cast())
    }
}

fn unmap(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: the caller mapped [addr, addr + len) and no longer uses it.
    if unsafe { libc::munmap(addr.cast(), len) } != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The record every benchmark workload prints: what it did and how long the loop took.
fn record(workload: &str, ops: u64, started: Instant, before: Usage, extra: Value) -> Value {
    let wall_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let after = usage();
    json!({
        "pid": std::process::id(),
        "workload": workload,
        "ops": ops,
        "wall_ns": wall_ns,
        "cpu_ns": after.cpu_ns - before.cpu_ns,
        "minflt": after.minflt - before.minflt,
        "majflt": after.majflt - before.majflt,
        "detail": extra,
    })
}

#[derive(Args)]
pub struct FaultHeavyArgs {
    /// MiB of fresh anonymous memory to touch, one write per page.
    #[arg(long, default_value_t = 4096)]
    mib: usize,
    /// Threads touching equal slices of the mapping at once (a higher fault rate).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Touches every page of a fresh anonymous mapping once: one minor fault per page. The mapping
/// is made before the go signal and unmapped after the clock stops.
pub fn run_fault_heavy(
    args: &FaultHeavyArgs,
    go: impl FnOnce() -> io::Result<()>,
) -> io::Result<Value> {
    let page = page_size();
    let len = args.mib << 20;
    let addr = map_anon(len)?;
    // Page by page even where transparent huge pages are always on.
    // SAFETY: our own mapping; a hint, so a failure (no THP support) changes nothing.
    unsafe { libc::madvise(addr.cast(), len, libc::MADV_NOHUGEPAGE) };
    go()?;
    let before = usage();
    let started = Instant::now();
    let threads = args.threads.max(1);
    let pages = len / page;
    // Raw pointers are not Send: each thread gets the base address as a number.
    let base = addr as usize;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (first, last) = (pages * t / threads, pages * (t + 1) / threads);
            scope.spawn(move || {
                for index in first..last {
                    // SAFETY: within the writable mapping; threads touch disjoint pages.
                    unsafe { ((base + index * page) as *mut u8).write_volatile(1) };
                }
            });
        }
    });
    let record = record(
        "fault-heavy",
        pages as u64,
        started,
        before,
        json!({ "bytes": len, "threads": threads }),
    );
    unmap(addr, len)?;
    Ok(record)
}

#[derive(Args)]
pub struct MadviseHeavyArgs {
    /// Number of MADV_DONTNEED calls, each followed by a write that faults the page back in.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
}

/// MADV_DONTNEED of one page, then a write that faults a zeroed page back in, `calls` times.
pub fn run_madvise_heavy(
    args: &MadviseHeavyArgs,
    go: impl FnOnce() -> io::Result<()>,
) -> io::Result<Value> {
    let page = page_size();
    let addr = map_anon(page)?;
    // SAFETY: inside the mapping.
    unsafe { addr.write_volatile(1) };
    go()?;
    let before = usage();
    let started = Instant::now();
    for _ in 0..args.calls {
        // SAFETY: the range is our own anonymous page.
        if unsafe { libc::madvise(addr.cast(), page, libc::MADV_DONTNEED) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: inside the mapping.
        unsafe { addr.write_volatile(1) };
    }
    let record = record("madvise-heavy", args.calls, started, before, json!({}));
    unmap(addr, page)?;
    Ok(record)
}

#[derive(Args)]
pub struct MmapChurnArgs {
    /// Number of mmap / touch / munmap rounds.
    #[arg(long, default_value_t = 100_000)]
    rounds: u64,
    /// Pages per mapping (each touched once).
    #[arg(long, default_value_t = 1)]
    pages: usize,
}

/// mmap an anonymous region, write each page, munmap it, `rounds` times.
pub fn run_mmap_churn(
    args: &MmapChurnArgs,
    go: impl FnOnce() -> io::Result<()>,
) -> io::Result<Value> {
    let page = page_size();
    let len = args.pages.max(1) * page;
    go()?;
    let before = usage();
    let started = Instant::now();
    for _ in 0..args.rounds {
        let addr = map_anon(len)?;
        for offset in (0..len).step_by(page) {
            // SAFETY: within the fresh mapping.
            unsafe { addr.add(offset).write_volatile(1) };
        }
        unmap(addr, len)?;
    }
    Ok(record(
        "mmap-churn",
        args.rounds,
        started,
        before,
        json!({ "bytes_per_round": len }),
    ))
}

#[derive(Args)]
pub struct RefaultArgs {
    /// MiB of anonymous memory, touched once before the clock starts.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Passes of (write every page, MADV_DONTNEED the whole range).
    #[arg(long, default_value_t = 16)]
    passes: u64,
}

/// Warms a mapping once, then `passes` times writes every page and drops the range with
/// MADV_DONTNEED: one minor fault per page per pass. Fresh memory would be dominated by the
/// host here (the same 512 MiB first touch took 0.29–1.56 s untraced); the pages freed by one
/// pass are the ones the next gets back, so the fault path itself is what is timed.
pub fn run_refault(args: &RefaultArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    let page = page_size();
    let len = args.mib.max(1) << 20;
    let addr = map_anon(len)?;
    // SAFETY: our own mapping; a hint (one fault per page even where THP is always on).
    unsafe { libc::madvise(addr.cast(), len, libc::MADV_NOHUGEPAGE) };
    let touch = || {
        for offset in (0..len).step_by(page) {
            // SAFETY: within the writable mapping.
            unsafe { addr.add(offset).write_volatile(1) };
        }
    };
    let drop_range = || {
        // SAFETY: the range is our own anonymous mapping.
        if unsafe { libc::madvise(addr.cast(), len, libc::MADV_DONTNEED) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    touch();
    drop_range()?;
    go()?;
    let before = usage();
    let started = Instant::now();
    for _ in 0..args.passes {
        touch();
        drop_range()?;
    }
    let pages = (len / page) as u64;
    let record = record(
        "refault",
        pages * args.passes,
        started,
        before,
        json!({ "bytes": len, "passes": args.passes }),
    );
    unmap(addr, len)?;
    Ok(record)
}

#[derive(Args)]
pub struct SyscallsArgs {
    /// Number of getppid calls.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
}

/// Calls getppid, which memtrace does not trace, `calls` times: what a tracer costs every
/// other syscall of every process (a `syscalls/sys_*` tracepoint puts them all on the slow
/// path; a trampoline on one syscall does not).
pub fn run_syscalls(args: &SyscallsArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    go()?;
    let before = usage();
    let started = Instant::now();
    for _ in 0..args.calls {
        // SAFETY: no preconditions.
        unsafe { libc::getppid() };
    }
    Ok(record(
        "other-syscalls",
        args.calls,
        started,
        before,
        json!({}),
    ))
}

#[derive(Args)]
pub struct IdleArgs {
    /// How often it wakes to touch and release one page, in ms (the first wake at a random
    /// point of the period, so many idle processes do not wake together).
    #[arg(long, default_value_t = 10_000)]
    wake_ms: u64,
}

/// Benchmark (node scale): a daemon that sleeps, waking every `--wake-ms` to write one page
/// and give it back with MADV_DONTNEED, until killed.
pub fn run_idle(args: &IdleArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    let page = page_size();
    let addr = map_anon(page)?;
    go()?;
    let period = std::time::Duration::from_millis(args.wake_ms.max(1));
    // A phase from the pid: spread without a random number generator.
    let phase = period.mul_f64(f64::from(std::process::id() % 1000) / 1000.0);
    std::thread::sleep(phase);
    loop {
        // SAFETY: addr is a private anonymous page mapped above.
        unsafe {
            ptr::write_volatile(addr, 1);
            libc::madvise(addr.cast(), page, libc::MADV_DONTNEED);
        }
        std::thread::sleep(period);
    }
}
