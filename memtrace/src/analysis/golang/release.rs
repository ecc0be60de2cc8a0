//! The row type of the generated offset table (layouts.rs): where one Go release keeps the
//! heap fields. A leaf, so that the generated data and the code that uses it (table.rs) both
//! import it and not each other.

use memtrace_common::go_runtime::{Field, Global};

/// Where one Go release keeps the fields, as its DWARF and code said.
#[derive(Debug)]
pub struct Entry {
    /// The release the entry was generated from (it stands for its minor release).
    pub go: &'static str,
    /// Each global's size (`sizeof(gcControllerState)` …), checked against the symbol table.
    pub sizes: [u64; Global::ALL.len()],
    /// Each field's offset in its global, `None` where the release lacks it.
    pub offsets: [Option<u32>; Field::COUNT],
    /// Runtime functions' instructions that address a global RIP-relative; a function may
    /// appear more than once (its code differs in PIE or cgo builds).
    pub anchors: &'static [Anchor],
}

#[derive(Debug)]
pub struct Anchor {
    pub function: &'static str,
    pub refs: &'static [Ref],
}

/// One instruction: at `offset` in the function, its bytes `code` (with the 32-bit
/// displacement at `disp_at` zeroed) address `global + addend` relative to the next
/// instruction.
#[derive(Debug)]
pub struct Ref {
    pub offset: u32,
    pub global: Global,
    pub addend: u32,
    pub code: &'static [u8],
    pub disp_at: u8,
}
