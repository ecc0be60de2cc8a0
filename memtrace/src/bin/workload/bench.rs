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

/// Minor and major faults of this process so far (getrusage).
fn rusage_faults() -> (u64, u64) {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (usage.ru_minflt as u64, usage.ru_majflt as u64)
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
fn record(
    workload: &str,
    ops: u64,
    started: Instant,
    faults_before: (u64, u64),
    extra: Value,
) -> Value {
    let wall_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let faults_after = rusage_faults();
    json!({
        "pid": std::process::id(),
        "workload": workload,
        "ops": ops,
        "wall_ns": wall_ns,
        "minflt": faults_after.0 - faults_before.0,
        "majflt": faults_after.1 - faults_before.1,
        "detail": extra,
    })
}

#[derive(Args)]
pub struct FaultHeavyArgs {
    /// MiB of fresh anonymous memory to touch, one write per page.
    #[arg(long, default_value_t = 4096)]
    mib: usize,
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
    let before = rusage_faults();
    let started = Instant::now();
    for offset in (0..len).step_by(page) {
        // SAFETY: within the writable mapping of `len` bytes.
        unsafe { addr.add(offset).write_volatile(1) };
    }
    let record = record(
        "fault-heavy",
        (len / page) as u64,
        started,
        before,
        json!({ "bytes": len }),
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
    let before = rusage_faults();
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
    let before = rusage_faults();
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
