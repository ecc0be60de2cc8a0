//! Mapping, fault and fork workloads.

use std::{io, os::fd::AsRawFd as _, ptr};

use clap::Args;
use serde_json::{Value, json};

fn page_size() -> usize {
    // SAFETY: no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Minor and major faults of this process so far (getrusage).
fn rusage_faults() -> (u64, u64) {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (usage.ru_minflt as u64, usage.ru_majflt as u64)
}

/// A size line of /proc/self/status (`RssAnon:   65536 kB`), in bytes: the kernel's own RSS
/// counters of this process.
fn status_bytes(field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| {
            let kib = line.strip_prefix(field)?.strip_prefix(':')?.trim();
            kib.strip_suffix(" kB")?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/self/status")))
}

/// A file of `pages` pages in /tmp, removed on drop.
struct TempFile {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl TempFile {
    fn new(pages: usize) -> io::Result<Self> {
        use std::io::Write as _;
        let path =
            std::env::temp_dir().join(format!("memtrace-workload-{}-{pages}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(&vec![7u8; pages * page_size()])?;
        file.sync_all()?;
        Ok(Self { file, path })
    }

    /// Drops the file's pages from the page cache, so the next access reads from disk.
    fn evict(&self) -> io::Result<()> {
        // SAFETY: valid fd.
        let rc =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn map(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<*mut u8> {
    // SAFETY: no address hint; the kernel validates the rest.
    let addr = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd, 0) };
    if addr == libc::MAP_FAILED {
        Err(last_error())
    } else {
        Ok(addr.cast())
    }
}

fn unmap(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: the caller mapped [addr, addr + len).
    if unsafe { libc::munmap(addr.cast(), len) } != 0 {
        Err(last_error())
    } else {
        Ok(())
    }
}

/// Writes one byte per page (reads if `read_only`): one fault per page not yet present.
fn touch(addr: *mut u8, len: usize, read_only: bool) -> u64 {
    let mut sum = 0u64;
    for offset in (0..len).step_by(page_size()) {
        // SAFETY: within a mapping of `len` bytes with the needed protection.
        unsafe {
            if read_only {
                sum += u64::from(addr.add(offset).read_volatile());
            } else {
                addr.add(offset).write_volatile(1);
            }
        }
    }
    sum
}

#[derive(Args)]
pub struct MmapArgs {
    /// Pages of private anonymous memory to map, touch and unmap.
    #[arg(long, default_value_t = 0)]
    anon_private: usize,
    /// Pages of shared anonymous memory.
    #[arg(long, default_value_t = 0)]
    anon_shared: usize,
    /// Pages of a private file mapping (read).
    #[arg(long, default_value_t = 0)]
    file_private: usize,
    /// Pages of a shared file mapping (read).
    #[arg(long, default_value_t = 0)]
    file_shared: usize,
    /// Leave the mappings in place instead of unmapping them.
    #[arg(long)]
    keep: bool,
}

pub fn run_mmap(args: &MmapArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    let page = page_size();
    let file_pages = args.file_private.max(args.file_shared);
    let file = (file_pages > 0)
        .then(|| TempFile::new(file_pages))
        .transpose()?;
    let fd = file.as_ref().map_or(-1, |f| f.file.as_raw_fd());
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let plan = [
        (
            "anon_private",
            args.anon_private,
            rw,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            false,
        ),
        (
            "anon_shared",
            args.anon_shared,
            rw,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            false,
        ),
        (
            "file_private",
            args.file_private,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            true,
        ),
        (
            "file_shared",
            args.file_shared,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            true,
        ),
    ];
    go()?;
    let before = rusage_faults();
    let mut mapped = serde_json::Map::new();
    let mut unmapped = 0;
    let mut calls = 0;
    for (kind, pages, prot, flags, fd, read_only) in plan {
        if pages == 0 {
            continue;
        }
        let len = pages * page;
        let addr = map(len, prot, flags, fd)?;
        touch(addr, len, read_only);
        mapped.insert(kind.into(), json!({ "calls": 1, "bytes": len }));
        if !args.keep {
            unmap(addr, len)?;
            unmapped += len;
            calls += 1;
        }
    }
    let after = rusage_faults();
    Ok(json!({
        "pid": std::process::id(),
        "mmap": mapped,
        "munmap": { "calls": calls, "bytes": unmapped },
        "minflt": after.0 - before.0,
        "majflt": after.1 - before.1,
    }))
}

#[derive(Args)]
pub struct BrkArgs {
    /// Bytes to grow the break by (rounded up to pages).
    #[arg(long)]
    grow: usize,
    /// Bytes to shrink it by afterwards (rounded up to pages; at most --grow).
    #[arg(long, default_value_t = 0)]
    shrink: usize,
}

fn brk(addr: usize) -> usize {
    // SAFETY: raw brk: returns the new break, or the old one on failure.
    unsafe { libc::syscall(libc::SYS_brk, addr) as usize }
}

pub fn run_brk(args: &BrkArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    let page = page_size();
    let grow = args.grow.div_ceil(page) * page;
    let shrink = (args.shrink.div_ceil(page) * page).min(grow);
    // Keep malloc off the break while measuring: no trimming, nothing new from the heap.
    // SAFETY: mallopt has no memory-safety preconditions.
    unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) };
    go()?;
    let start = brk(0);
    let grown = brk(start + grow);
    let shrunk = brk(grown - shrink);
    // Give the memory back so malloc's view of the heap stays true.
    let end = brk(start);
    Ok(json!({
        "pid": std::process::id(),
        "start": start,
        "grow": grown - start,
        "shrink": (grown - shrunk) + (shrunk - end),
        "calls": 4,
    }))
}

#[derive(Args)]
pub struct MremapArgs {
    /// Pages mapped first.
    #[arg(long)]
    pages: usize,
    /// Pages after mremap.
    #[arg(long)]
    to: usize,
}

pub fn run_mremap(args: &MremapArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    let page = page_size();
    let (old_len, new_len) = (args.pages * page, args.to * page);
    go()?;
    let addr = map(
        old_len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    touch(addr, old_len, false);
    // SAFETY: remapping our own mapping; may move.
    let moved = unsafe { libc::mremap(addr.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
    if moved == libc::MAP_FAILED {
        return Err(last_error());
    }
    unmap(moved.cast(), new_len)?;
    Ok(json!({
        "pid": std::process::id(),
        "mmap": old_len,
        "mremap_grow": new_len.saturating_sub(old_len),
        "mremap_shrink": old_len.saturating_sub(new_len),
        "munmap": new_len,
    }))
}

#[derive(Args)]
pub struct FaultArgs {
    /// Fresh anonymous pages to touch.
    #[arg(long, default_value_t = 0)]
    pages: usize,
    /// Pages of a file to read through a private mapping after evicting it from the page
    /// cache (major faults).
    #[arg(long, default_value_t = 0)]
    file_pages: usize,
}

pub fn run_faults(args: &FaultArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    let page = page_size();
    let len = args.pages * page;
    let anon = (len > 0)
        .then(|| {
            map(
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
            )
        })
        .transpose()?;
    let file = (args.file_pages > 0)
        .then(|| TempFile::new(args.file_pages))
        .transpose()?;
    if let Some(file) = &file {
        file.evict()?;
    }
    go()?;
    let before = rusage_faults();
    if let Some(addr) = anon {
        touch(addr, len, false);
    }
    let mut checksum = 0;
    if let Some(file) = &file {
        let file_len = args.file_pages * page;
        let addr = map(
            file_len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.file.as_raw_fd(),
        )?;
        checksum = touch(addr, file_len, true);
    }
    let after = rusage_faults();
    Ok(json!({
        "pid": std::process::id(),
        "minflt": after.0 - before.0,
        "majflt": after.1 - before.1,
        "checksum": checksum,
    }))
}

#[derive(Args)]
pub struct ForkArgs {
    /// madvise(MADV_DONTNEED) calls of one page the parent makes.
    #[arg(long, default_value_t = 0)]
    parent_calls: usize,
    /// madvise(MADV_DONTNEED) calls of one page the child makes.
    #[arg(long, default_value_t = 0)]
    child_calls: usize,
    /// Pages the child maps and touches.
    #[arg(long, default_value_t = 0)]
    child_pages: usize,
}

fn dontneed(addr: *mut u8, calls: usize) {
    for call in 0..calls {
        // SAFETY: within a mapping of `calls` pages.
        unsafe {
            libc::madvise(
                addr.add(call * page_size()).cast(),
                page_size(),
                libc::MADV_DONTNEED,
            )
        };
    }
}

pub fn run_fork(args: &ForkArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    let page = page_size();
    let region = args.parent_calls.max(args.child_calls).max(1) * page;
    let addr = map(
        region,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    touch(addr, region, false);
    go()?;
    dontneed(addr, args.parent_calls);
    // SAFETY: the child only makes raw syscalls and _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(last_error());
    }
    if child == 0 {
        dontneed(addr, args.child_calls);
        let len = args.child_pages * page;
        if len > 0 {
            // SAFETY: raw syscalls only.
            unsafe {
                let mem = libc::mmap(
                    ptr::null_mut(),
                    len,
                    3,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if mem != libc::MAP_FAILED {
                    touch(mem.cast(), len, false);
                }
            }
        }
        // SAFETY: leave without running the parent's atexit handlers or flushing its stdio.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    Ok(json!({
        "pid": std::process::id(),
        "child": child,
        "parent_calls": args.parent_calls,
        "child_calls": args.child_calls,
        "child_mmap_bytes": args.child_pages * page,
    }))
}

#[derive(Args)]
pub struct LazyFreeArgs {
    /// MiB of anonymous memory to touch and release with MADV_FREE.
    #[arg(long)]
    mib: usize,
}

/// On the go signal touches memory and releases it with MADV_FREE, prints `{"freed": BYTES}`, then
/// waits for a second line (the driver creates memory pressure meanwhile) and reports how many
/// pages the kernel reclaimed: those read back as zero (MADV_FREE pages that are reclaimed
/// lose their content; ones still present keep it).
pub fn run_lazyfree(args: &LazyFreeArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    use std::io::{BufRead as _, Write as _};
    let page = page_size();
    let len = args.mib << 20;
    let addr = map(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    go()?;
    let before = rusage_faults();
    // Allocate, then release, while traced (a tracer learns which address space is ours from
    // our own RSS changes).
    touch(addr, len, false);
    // SAFETY: our mapping.
    if unsafe { libc::madvise(addr.cast(), len, libc::MADV_FREE) } != 0 {
        return Err(last_error());
    }
    let after = rusage_faults();
    // Read last: MADV_FREE'd pages stay resident until reclaimed.
    let (rss_anon, vm_rss) = (status_bytes("RssAnon")?, status_bytes("VmRSS")?);
    println!(
        "{}",
        json!({
            "freed": len,
            "minflt": after.0 - before.0,
            "majflt": after.1 - before.1,
            "rss_anon": rss_anon,
            "vm_rss": vm_rss,
        })
    );
    io::stdout().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let pages = len / page;
    let zero_pages = (0..pages)
        // SAFETY: within the mapping; reading does not re-dirty a lazily freed page.
        .filter(|i| unsafe { addr.add(i * page).read_volatile() } == 0)
        .count();
    Ok(json!({ "pid": std::process::id(), "pages": pages, "zero_pages": zero_pages }))
}

#[derive(clap::Args)]
pub struct ExecArgs {
    /// madvise(MADV_DONTNEED) calls of one page made before the exec.
    #[arg(long, default_value_t = 0)]
    before: usize,
    /// The name to exec under (a link to this binary in $TMPDIR/memtrace-exec-PID/): the new
    /// process name.
    #[arg(long = "as", value_name = "NAME")]
    name: String,
    /// Before the exec, wait until this file exists (the driver says when).
    #[arg(long, value_name = "FILE")]
    exec_when: Option<std::path::PathBuf>,
    /// Just before the exec, move into this cgroup directory (its pid to `cgroup.procs`), as
    /// a container runtime moves a container's first process.
    #[arg(long, value_name = "DIR")]
    move_to: Option<std::path::PathBuf>,
    /// The workload the new program runs (started at once, without a go signal).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    then: Vec<String>,
}

/// Makes `before` DONTNEED calls, then execs this binary under another name to run `then`. The
/// new program prints its own ready line and record; this one prints nothing after go.
pub fn run_exec(args: &ExecArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt as _};
    let page = page_size();
    let region = args.before.max(1) * page;
    let addr = map(
        region,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    touch(addr, region, false);
    // Its own directory (the driver removes it): the link's name is the new comm, whole.
    let dir = exec_dir(std::process::id());
    std::fs::create_dir_all(&dir)?;
    let link = dir.join(&args.name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(std::env::current_exe()?, &link)?;
    let cstring = |bytes: &[u8]| {
        CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let path = cstring(link.as_os_str().as_bytes())?;
    let mut argv = vec![cstring(args.name.as_bytes())?, cstring(b"--no-wait")?];
    for arg in &args.then {
        argv.push(cstring(arg.as_bytes())?);
    }
    let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    pointers.push(ptr::null());
    go()?;
    dontneed(addr, args.before);
    if let Some(file) = &args.exec_when {
        while !file.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    if let Some(cgroup) = &args.move_to {
        std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())?;
    }
    // The kernel resolves the link at exec; the new program's comm is the link's name.
    // SAFETY: NUL-terminated strings and a NULL-terminated vector that outlive the call.
    unsafe { libc::execv(path.as_ptr(), pointers.as_ptr()) };
    let error = last_error();
    let _ = std::fs::remove_dir_all(&dir);
    Err(error)
}

/// Where `exec` puts the link it execs, per pid: `$TMPDIR/memtrace-exec-PID`.
pub fn exec_dir(pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("memtrace-exec-{pid}"))
}

#[derive(clap::Args)]
pub struct ForkManyArgs {
    /// Children to fork, one after the other.
    #[arg(long)]
    children: usize,
    /// How long each child lives, so they are all alive at once.
    #[arg(long, default_value_t = 3000)]
    hold_ms: u64,
    /// Pages of the parent's memory each child releases with one MADV_DONTNEED call, at once.
    #[arg(long, default_value_t = 0)]
    child_dontneed_pages: usize,
}

/// Forks `children` children that release `child_dontneed_pages` pages, sleep `hold_ms` and
/// exit, then reaps them all.
pub fn run_fork_many(
    args: &ForkManyArgs,
    go: impl FnOnce() -> io::Result<()>,
) -> io::Result<Value> {
    let release = args.child_dontneed_pages * page_size();
    let region = (release > 0)
        .then(|| {
            map(
                release,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
            )
        })
        .transpose()?;
    if let Some(addr) = region {
        touch(addr, release, false);
    }
    go()?;
    let hold = libc::timespec {
        tv_sec: (args.hold_ms / 1000) as libc::time_t,
        tv_nsec: ((args.hold_ms % 1000) * 1_000_000) as libc::c_long,
    };
    let mut forked = 0;
    for _ in 0..args.children {
        // SAFETY: the child only sleeps and leaves with _exit.
        match unsafe { libc::fork() } {
            0 => unsafe {
                if let Some(addr) = region {
                    libc::madvise(addr.cast(), release, libc::MADV_DONTNEED);
                }
                libc::nanosleep(&hold, ptr::null_mut());
                libc::_exit(0)
            },
            child if child > 0 => forked += 1,
            _ => return Err(last_error()),
        }
    }
    for _ in 0..forked {
        // SAFETY: waits for any of our children.
        unsafe { libc::wait(ptr::null_mut()) };
    }
    Ok(json!({
        "pid": std::process::id(),
        "children": forked,
        "child_dontneed_bytes": release,
    }))
}

#[derive(clap::Args)]
pub struct SteadyArgs {
    /// Pages each round touches (one fault each) and then releases with MADV_DONTNEED.
    #[arg(long)]
    pages: usize,
    /// Pause between rounds.
    #[arg(long, default_value_t = 5)]
    period_ms: u64,
    /// Make the process non-dumpable first, as a daemon that drops privileges becomes: only
    /// CAP_SYS_PTRACE then reads its smaps_rollup, maps and exe.
    #[arg(long)]
    undumpable: bool,
}

/// After go, faults in and releases the same pages round after round until a line arrives on
/// stdin: steady work in every interval of a tracer's live view. Then prints what it did (rounds,
/// bytes released, faults taken) and waits for one more line before it exits.
///
/// No thread watches stdin (glibc madvises a thread's stack when the thread exits, a release
/// the record would not list): each round polls it.
pub fn run_steady(args: &SteadyArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    use std::io::{BufRead as _, Write as _};
    // SAFETY: plain prctl on ourselves.
    if args.undumpable && unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) } != 0 {
        return Err(last_error());
    }
    let len = args.pages * page_size();
    let addr = map(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    // Base pages only: a huge page would take one fault for 512 pages.
    // SAFETY: our mapping.
    unsafe { libc::madvise(addr.cast(), len, libc::MADV_NOHUGEPAGE) };
    go()?;
    let mut stdin = io::stdin().lock();
    let before = rusage_faults();
    let mut rounds = 0u64;
    // The driver sends nothing after go until it wants a stop, so stdin's buffer holds
    // nothing yet and the fd itself says when the stop line came.
    while !readable(libc::STDIN_FILENO) {
        touch(addr, len, false);
        // SAFETY: our mapping.
        if unsafe { libc::madvise(addr.cast(), len, libc::MADV_DONTNEED) } != 0 {
            return Err(last_error());
        }
        rounds += 1;
        std::thread::sleep(std::time::Duration::from_millis(args.period_ms));
    }
    let after = rusage_faults();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    println!(
        "{}",
        json!({
            "rounds": rounds,
            "released": rounds * len as u64,
            "minflt": after.0 - before.0,
            "majflt": after.1 - before.1,
        })
    );
    io::stdout().flush()?;
    line.clear();
    stdin.read_line(&mut line)?;
    Ok(json!({ "pid": std::process::id() }))
}

/// Whether a read from `fd` would not block now.
fn readable(fd: i32) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout returns at once.
    unsafe { libc::poll(&mut poll, 1, 0) > 0 }
}
