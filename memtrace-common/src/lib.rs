//! Types shared by memtrace's kernel programs (`memtrace-ebpf`) and its userspace (`memtrace`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into maps and ring
//! buffers, userspace reads the same bytes back. Keep layouts free of implicit padding so both
//! sides agree on every byte.
#![no_std]

pub mod advice;
pub mod event;
pub mod maps;
pub mod reclaim;

pub use event::{EventKind, FaultCounts, FaultEvent, RssState, SyscallEvent, ThreadExit};
