//! memtrace's kernel programs.
//!
//! Kept small enough to read in one sitting: every program filters by tgid before doing any
//! work, reads only tracepoint fields (no kernel struct walking: Rust eBPF cannot emit CO-RE
//! relocations), and has no loops beyond constant bounds.
#![no_std]
#![no_main]

mod faults;
mod filter;
mod lifecycle;
mod reclaim;
mod ring;
mod rss;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
