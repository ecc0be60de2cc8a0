//! Kernel access: loading and attaching the programs, the maps they fill, the offsets they
//! need, and what /proc, tracefs and BTF say. Everything here returns plain data (types from
//! memtrace-common and small structs of its own) and knows nothing of reports.

pub mod btf;
pub mod cgroup;
pub mod clock;
pub mod gfp;
pub mod log;
pub mod memcg;
pub mod namer;
mod object;
mod offsets;
pub mod pidns;
pub mod procfs;
pub mod procmem;
pub mod status;
pub mod symbols;
pub mod system;
pub mod tracefs;
mod tracer;
mod trampoline;
mod unwind;

pub use tracer::{LostCounts, Options, Tracer, check_privileges};
