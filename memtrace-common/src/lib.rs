//! What memtrace's kernel programs (`memtrace-ebpf`) and its userspace (`memtrace`) must agree
//! on, each defined once:
//!
//! - [`hooks`]: every kernel program, where it attaches, whether memtrace can do without it and
//!   which runs need it;
//! - [`fields`] and [`members`]: the tracepoint fields and kernel struct members the programs
//!   read, at offsets userspace resolves on the running kernel (layouts differ across kernels);
//! - [`events`]: the records streamed through the ring buffer and the map values, one file per
//!   event, and [`events::EventKind`];
//! - [`lost`]: why the kernel side dropped a record;
//! - [`regs`]: where a syscall's arguments are at its exit; [`cgroup`]: which memory-cgroup id
//!   the programs read;
//! - [`config`] and [`maps`]: the loader-set globals and the maps userspace reads;
//! - [`go_runtime`]: the Go runtime's heap fields memtrace reads from a live Go process, shared
//!   with xtask's generator of their offset table;
//! - [`stacks`]: the caller stacks counted in the kernel with `--stacks`.
//!
//! Everything shared in memory is `#[repr(C)]` plain data without implicit padding, so both
//! sides agree on every byte.
#![no_std]

#[macro_use]
mod named;

pub use named::Named;

pub mod advice;
pub mod cgroup;
pub mod config;
pub mod events;
pub mod fields;
pub mod go_runtime;
pub mod hooks;
pub mod lost;
pub mod maps;
pub mod members;
pub mod regs;
pub mod stacks;

/// Lets userspace copy these types in and out of maps and ring-buffer records. Only for types
/// whose zerocopy derives (`FromBytes`, `IntoBytes`) proved them plain data without padding:
/// the bound below fails to compile otherwise.
macro_rules! pod {
    ($($ty:ty),+ $(,)?) => {
        $(
            const _: () = {
                const fn plain<T: zerocopy::FromBytes + zerocopy::IntoBytes>() {}
                plain::<$ty>()
            };
            #[cfg(feature = "user")]
            // SAFETY: zerocopy's derives proved every bit pattern valid and no byte padding.
            unsafe impl aya::Pod for $ty {}
        )+
    };
}
pub(crate) use pod;

/// A kernel release as `(major, minor)`, for facts that differ between kernel versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kernel(pub u32, pub u32);

impl Kernel {
    /// The kernels memtrace is tested on (Debian 11, 12, 13 and this project's host).
    pub const TESTED: [Self; 4] = [Self(5, 10), Self(6, 1), Self(6, 12), Self(6, 18)];
}
