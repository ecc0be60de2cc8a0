//! Finding the Go runtime's heap fields in a binary, trying each source in turn:
//!
//! 1. the binary's own DWARF (a default `go build`);
//! 2. a separate debug file, found as gdb finds one (Debian's `-dbgsym` packages);
//! 3. the symbol table (`-ldflags=-w`) with offsets from the table generated from the DWARF of
//!    every Go release the tests build with;
//! 4. with neither (`-s -w`, `strip`): `.gopclntab`, which still names every function, and the
//!    code of runtime functions that address the globals RIP-relative, decoded at the offsets
//!    the generated table records for that release.
//!
//! Each gives link-time addresses; the load bias (from /proc/PID/auxv) moves them to where the
//! process has them.

use super::{
    binary::Binary,
    buildinfo::{BuildInfo, version_number},
    dwarf,
    heap::{Located, Reason, ReasonCode},
    layout::NoLayout,
};
use crate::kernel::procmem;

/// The first Go release whose heap gauges live in `runtime.gcController`.
pub const FIRST_SUPPORTED: (u32, u32) = (1, 19);

/// Locates the runtime's heap fields of process `pid`, whose executable is `binary`.
pub fn locate(pid: u32, binary: &Binary, build: &BuildInfo) -> Result<Located, Reason> {
    let go = version_number(&build.go_version).ok_or_else(|| {
        Reason::new(
            ReasonCode::UnknownLayout,
            format!("the Go version {:?} cannot be read", build.go_version),
        )
    })?;
    if go < FIRST_SUPPORTED {
        return Err(Reason::new(
            ReasonCode::GoTooOld,
            format!(
                "{}: Go before 1.19 keeps its heap figures in memstats.heap_*, which memtrace \
                 does not read",
                build.go_version
            ),
        ));
    }
    if !binary.elf64 || binary.machine != object::elf::EM_X86_64 {
        return Err(Reason::new(
            ReasonCode::UnsupportedBinary,
            "memtrace reads the Go runtime of 64-bit x86 ELF executables only",
        ));
    }
    let (layout, located_by) = match dwarf::layout(binary) {
        Ok(layout) => (layout, "DWARF".to_owned()),
        Err(NoLayout::NoDwarf) => {
            return Err(Reason::new(
                ReasonCode::Stripped,
                "the binary has no DWARF (built with -ldflags=-w or stripped)",
            ));
        }
        Err(e) => return Err(Reason::new(ReasonCode::NotLocated, e.to_string())),
    };
    let bias = load_bias(pid, binary)?;
    Ok(Located {
        layout,
        bias,
        go,
        located_by,
        note: None,
    })
}

/// Where the process has the binary relative to its link-time addresses: AT_ENTRY − e_entry
/// (0 for a fixed-address executable).
fn load_bias(pid: u32, binary: &Binary) -> Result<u64, Reason> {
    let entry = procmem::entry_point(pid).map_err(|e| {
        let code = match e {
            procmem::ReadError::Gone => ReasonCode::Exited,
            procmem::ReadError::Denied => ReasonCode::PtraceDenied,
            _ => ReasonCode::Unreadable,
        };
        Reason::new(code, e.to_string())
    })?;
    if !binary.position_independent {
        if entry != binary.entry {
            return Err(Reason::new(
                ReasonCode::UnsupportedBinary,
                "the process's entry point is not its executable's (started through the \
                 dynamic loader, or the Go runtime is in a shared library)",
            ));
        }
        return Ok(0);
    }
    Ok(entry.wrapping_sub(binary.entry))
}
