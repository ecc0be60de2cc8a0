//! madvise workloads.

use std::{collections::BTreeMap, io, ptr};

use clap::Args;
use memtrace_common::advice;
use serde_json::{Value, json};

#[derive(Args)]
pub struct MadviseArgs {
    /// ADVICE:CALLS:PAGES, e.g. free:51:1 (advice by name or number). Repeatable.
    #[arg(long = "op", required = true, value_parser = parse_op)]
    ops: Vec<Op>,
    /// Use a MAP_SHARED anonymous mapping (MADV_FREE fails there with EINVAL).
    #[arg(long)]
    shared: bool,
    /// Run the ops on this many threads at once, each on its own mapping.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args)]
pub struct ProcessMadviseArgs {
    /// Advice (process_madvise accepts COLD, PAGEOUT, WILLNEED, COLLAPSE).
    #[arg(long, value_parser = parse_advice)]
    advice: u32,
    /// Pages of the child's memory to advise.
    #[arg(long)]
    pages: usize,
}

#[derive(Clone, Copy)]
struct Op {
    advice: u32,
    calls: usize,
    pages: usize,
}

fn parse_advice(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .or_else(|| advice::from_name(s))
        .ok_or_else(|| format!("unknown advice '{s}'"))
}

fn parse_op(s: &str) -> Result<Op, String> {
    let mut parts = s.split(':');
    let (Some(a), Some(c), Some(p), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("'{s}': expected ADVICE:CALLS:PAGES"));
    };
    let number = |v: &str| {
        v.parse::<usize>()
            .map_err(|_| format!("'{v}' is not a count"))
    };
    Ok(Op {
        advice: parse_advice(a)?,
        calls: number(c)?,
        pages: number(p)?,
    })
}

fn page_size() -> usize {
    // SAFETY: no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// An anonymous mapping, touched so every page is resident, unmapped on drop.
struct Mapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; each is used by one thread at a time.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: usize, shared: bool) -> io::Result<Self> {
        let sharing = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: anonymous mapping with no address hint.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                sharing | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mapping = Self {
            addr: addr.cast(),
            len,
        };
        mapping.touch();
        Ok(mapping)
    }

    fn touch(&self) {
        for offset in (0..self.len).step_by(page_size()) {
            // SAFETY: within the mapping.
            unsafe { self.addr.add(offset).write_volatile(1) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own the mapping.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// What one thread's calls with one advice did.
#[derive(Default, Clone)]
struct Outcome {
    calls: u64,
    failed: u64,
    bytes: u64,
    errnos: BTreeMap<i32, u64>,
}

impl Outcome {
    fn add(&mut self, other: &Outcome) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.bytes += other.bytes;
        for (errno, n) in &other.errnos {
            *self.errnos.entry(*errno).or_default() += n;
        }
    }
}

fn run_ops(mapping: &Mapping, ops: &[Op]) -> (u32, BTreeMap<u32, Outcome>) {
    let page = page_size();
    let mut outcomes: BTreeMap<u32, Outcome> = BTreeMap::new();
    for op in ops {
        let outcome = outcomes.entry(op.advice).or_default();
        for call in 0..op.calls {
            let len = op.pages * page;
            let offset = (call * len) % mapping.len.max(1);
            // SAFETY: the range lies within the mapping (sized for the largest op).
            let ret =
                unsafe { libc::madvise(mapping.addr.add(offset).cast(), len, op.advice as i32) };
            outcome.calls += 1;
            if ret == 0 {
                outcome.bytes += len as u64;
            } else {
                outcome.failed += 1;
                let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                *outcome.errnos.entry(errno).or_default() += 1;
            }
        }
    }
    // SAFETY: no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    (tid, outcomes)
}

pub fn run(args: &MadviseArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    let page = page_size();
    let len = args
        .ops
        .iter()
        .map(|op| op.calls * op.pages)
        .max()
        .unwrap_or(1)
        .max(1)
        * page;
    let mappings = (0..args.threads.max(1))
        .map(|_| Mapping::new(len, args.shared))
        .collect::<io::Result<Vec<_>>>()?;
    go()?;

    let results = if mappings.len() == 1 {
        vec![run_ops(&mappings[0], &args.ops)]
    } else {
        run_on_threads(mappings, &args.ops)
    };

    let mut totals: BTreeMap<u32, Outcome> = BTreeMap::new();
    for (_, outcomes) in &results {
        for (advice, outcome) in outcomes {
            totals.entry(*advice).or_default().add(outcome);
        }
    }
    Ok(json!({
        "pid": std::process::id(),
        "tids": results.iter().map(|(tid, _)| tid).collect::<Vec<_>>(),
        "advice": totals.iter().map(|(advice, o)| json!({
            "advice": advice,
            "calls": o.calls,
            "failed": o.failed,
            "bytes": o.bytes,
            "errnos": o.errnos.iter().map(|(e, n)| json!({"errno": e, "count": n})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
}

/// Runs the ops on one thread per mapping. The threads never exit: glibc madvises a thread's
/// stack with MADV_DONTNEED when the thread exits, which would add calls the record does not
/// list. They die with the process instead (exit_group skips that path).
fn run_on_threads(mappings: Vec<Mapping>, ops: &[Op]) -> Vec<(u32, BTreeMap<u32, Outcome>)> {
    let (done, results) = std::sync::mpsc::channel();
    let threads = mappings.len();
    for mapping in mappings {
        let ops = ops.to_vec();
        let done = done.clone();
        std::thread::spawn(move || {
            let _ = done.send(run_ops(&mapping, &ops));
            loop {
                std::thread::park();
            }
        });
    }
    results.iter().take(threads).collect()
}

pub fn run_process_madvise(
    args: &ProcessMadviseArgs,
    go: impl FnOnce() -> io::Result<()>,
) -> io::Result<Value> {
    let len = args.pages.max(1) * page_size();
    let mapping = Mapping::new(len, false)?;
    let child = fork_idle_child()?;
    // SAFETY: plain syscall.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) } as i32;
    if pidfd < 0 {
        let error = io::Error::last_os_error();
        reap(child);
        return Err(error);
    }
    let outcome = go().map(|()| {
        let iov = libc::iovec {
            iov_base: mapping.addr.cast(),
            iov_len: mapping.len,
        };
        // SAFETY: the iovec describes memory mapped in the child at the same address (fork).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd,
                &iov,
                1usize,
                args.advice,
                0u32,
            )
        };
        let errno = (ret < 0).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0));
        // Like a real memory manager, hold the pidfd for a while after using it: a tracer
        // names the target from the caller's open pidfd.
        std::thread::sleep(std::time::Duration::from_millis(300));
        (ret, errno)
    });
    // SAFETY: our fd.
    unsafe { libc::close(pidfd) };
    reap(child);
    let (ret, errno) = outcome?;
    Ok(json!({
        "pid": std::process::id(),
        "target": child,
        "advice": args.advice,
        "len": len,
        "ret": ret,
        "errno": errno,
    }))
}

/// A child that shares our mappings (copy-on-write) and waits to be killed.
fn fork_idle_child() -> io::Result<libc::pid_t> {
    // SAFETY: the child only calls async-signal-safe functions (pause, _exit).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => loop {
            // SAFETY: async-signal-safe.
            unsafe { libc::pause() };
        },
        child => Ok(child),
    }
}

fn reap(child: libc::pid_t) {
    // SAFETY: our child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, ptr::null_mut(), 0);
    }
}
