//! memtrace's kernel programs, one file per feature; where each attaches is in
//! `memtrace_common::hooks`.
//!
//! Kept small enough to read in one sitting: every program filters by tgid before doing any
//! work, reads tracepoint fields at offsets the loader resolved on the running kernel (Rust
//! eBPF cannot emit CO-RE relocations), and has no loops beyond constant bounds. Rare
//! conditions (a full map, an unexpected field value) are logged with aya-log, shown by
//! `memtrace --verbose`; nothing is logged on a hot path.
#![no_std]
#![no_main]
// The bpf target has atomic adds but no compare-and-swap, so core's atomic types lack
// `fetch_add`; the intrinsic is what they would call (filter.rs).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod cgroup;
mod config;
mod faults;
mod filter;
mod kswapd;
mod lifecycle;
mod oom;
mod reclaim;
mod regs;
mod ring;
mod rss;
mod syscalls;
mod task;
mod totals;
mod trampolines;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
