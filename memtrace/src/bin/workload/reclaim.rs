//! Workloads that make the kernel reclaim or kill: page-cache reads inside a memory cgroup,
//! and an allocation past a cgroup's limit.

use std::{
    fs::{self, OpenOptions},
    io::{self, Read as _},
    ptr,
};

use clap::Args;
use serde_json::{Value, json};

#[derive(Args)]
pub struct PageCacheArgs {
    /// MiB to read through the page cache (a fresh sparse file of that size).
    #[arg(long)]
    mib: u64,
}

/// Reads a fresh sparse file of `--mib` MiB once, sequentially: every page enters the page
/// cache, so in a smaller memory cgroup the reader must reclaim (memcg reclaim) as it goes.
/// Sparse, so creating it dirties nothing and reclaim never waits for writeback.
pub fn run_page_cache(
    args: &PageCacheArgs,
    go: impl FnOnce() -> io::Result<()>,
) -> io::Result<Value> {
    let path = std::env::temp_dir().join(format!("memtrace-pagecache-{}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path);
    let result = file.and_then(|mut file| {
        file.set_len(args.mib << 20)?;
        go()?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut read = 0u64;
        loop {
            match file.read(&mut buffer)? {
                0 => break,
                n => read += n as u64,
            }
        }
        Ok(read)
    });
    let _ = fs::remove_file(&path);
    let read = result?;
    Ok(json!({ "pid": std::process::id(), "bytes_read": read }))
}

#[derive(Args)]
pub struct HogArgs {
    /// MiB of anonymous memory to touch, page by page.
    #[arg(long)]
    mib: usize,
}

/// Touches `--mib` MiB of anonymous memory. Run in a memory cgroup with a smaller limit (and no
/// swap) it never finishes: the OOM killer kills it.
pub fn run_hog(args: &HogArgs, go: impl FnOnce() -> io::Result<()>) -> io::Result<Value> {
    let len = args.mib << 20;
    // SAFETY: no address hint; the kernel validates the rest.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    go()?;
    let addr = addr.cast::<u8>();
    for offset in (0..len).step_by(4096) {
        // SAFETY: within the mapping.
        unsafe { addr.add(offset).write_volatile(1) };
    }
    Ok(json!({ "pid": std::process::id(), "touched": len }))
}
