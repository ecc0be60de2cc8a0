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
    debugfile, dwarf,
    heap::{Located, Reason, ReasonCode},
    layout::{Layout, NoLayout},
    table,
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
    let bias = load_bias(pid, binary)?;
    let table = table::entry(build);
    let located = |layout: Layout, located_by: String, note: Option<String>| Located {
        layout,
        bias,
        go,
        located_by,
        note,
    };
    // 1. The binary's own DWARF; 2. a separate debug file's.
    let mut dwarf_problem = None;
    match dwarf::layout(binary) {
        Ok(layout) => {
            let note = compare(&layout, &table);
            return Ok(located(layout, "DWARF".to_owned(), note));
        }
        Err(NoLayout::NoDwarf) => {}
        Err(e) => dwarf_problem = Some(e.to_string()),
    }
    if let Some((debug, path)) = debugfile::find(pid, binary) {
        match dwarf::layout(&debug) {
            Ok(layout) => {
                let note = compare(&layout, &table);
                let by = format!("DWARF of the debug file {}", path.display());
                return Ok(located(layout, by, note));
            }
            Err(e) => dwarf_problem = Some(format!("{}: {e}", path.display())),
        }
    }
    if let Some(problem) = dwarf_problem {
        return Err(Reason::new(ReasonCode::NotLocated, problem));
    }
    // 3. The symbol table with the generated offsets; 4. the code, decoded.
    let entry = table.map_err(|why| {
        Reason::new(
            ReasonCode::UnknownLayout,
            format!("the binary has no DWARF, and {why}"),
        )
    })?;
    let from_symbols = match entry.locate_by_symbols(binary) {
        Ok(layout) => {
            let by = format!("symbol table, offsets generated from {}", entry.go);
            return Ok(located(layout, by, None));
        }
        Err(why) => why,
    };
    let text_starts = |in_file| text_starts(pid, binary, bias, in_file);
    match entry.locate_by_anchors(binary, text_starts) {
        Ok(layout) => {
            let by = format!(
                "runtime code found through .gopclntab, offsets generated from {}",
                entry.go
            );
            Ok(located(layout, by, None))
        }
        Err(from_code) => Err(Reason::new(
            ReasonCode::Stripped,
            format!("the binary has no DWARF (nor a debug file); {from_symbols}; and {from_code}"),
        )),
    }
}

/// A note when the generated table disagrees with (or lacks) what DWARF says for this release:
/// a binary of it built without DWARF would be misread (or not read).
fn compare(dwarf: &Layout, table: &Result<&table::Entry, String>) -> Option<String> {
    match table {
        Err(why) => Some(format!(
            "{why}: a binary of this release without DWARF would have no runtime view"
        )),
        Ok(entry) => {
            let differences = dwarf.differences(&entry.offsets_layout());
            (!differences.is_empty()).then(|| {
                format!(
                    "the offsets generated from {} differ from this binary's DWARF ({}):                      binaries of this release without DWARF are read with the table's",
                    entry.go,
                    differences.join("; ")
                )
            })
        }
    }
}

/// Where the Go text may start, to try in turn (anchors that match byte for byte tell the
/// right one): `.gopclntab`'s header as the file has it; as the process has it (relocated at
/// load in a PIE); the `.text` section (Go ≥ 1.26 leaves the header's at 0, and an internally
/// linked binary's Go text starts there).
fn text_starts(pid: u32, binary: &Binary, bias: u64, in_file: u64) -> Vec<u64> {
    let mut starts = Vec::new();
    if in_file != 0 {
        starts.push(in_file);
    }
    if let Some(loaded) = loaded_text_start(pid, binary, bias) {
        starts.push(loaded);
    }
    if let Some(text) = binary.section(".text") {
        starts.push(text.addr);
    }
    starts.dedup();
    starts
}

/// `pcHeader.textStart` as the process has it, as a link-time address.
fn loaded_text_start(pid: u32, binary: &Binary, bias: u64) -> Option<u64> {
    let header = binary.section(".gopclntab")?;
    let mut word = [0u8; 8];
    let range = procmem::Range {
        addr: header.addr.checked_add(bias)?.checked_add(24)?,
        len: 8,
    };
    procmem::read_ranges(pid, &[range], &mut word).ok()?;
    match u64::from_le_bytes(word) {
        0 => None,
        loaded => loaded.checked_sub(bias),
    }
}

/// Where the process has the binary relative to its link-time addresses: AT_ENTRY − e_entry
/// (0 for a fixed-address executable).
fn load_bias(pid: u32, binary: &Binary) -> Result<u64, Reason> {
    let entry = procmem::entry_point(pid).map_err(|e| Reason::from_read(&e))?;
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
