//! Where a Go binary's runtime keeps the heap figures: the link-time address of each global
//! and the offset of each field in it, and how memtrace found them.

use memtrace_common::go_runtime::{Field, Global};

/// The runtime's heap fields in one binary, at link-time addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Each [`Global`]'s link-time address.
    pub globals: [u64; Global::ALL.len()],
    /// Each global's size, where the source says (DWARF, the symbol table).
    pub sizes: [Option<u64>; Global::ALL.len()],
    /// Each [`Field`]'s offset in its global; `None` only for an optional field this Go
    /// release lacks.
    pub offsets: [Option<u32>; Field::COUNT],
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            globals: [0; Global::ALL.len()],
            sizes: [None; Global::ALL.len()],
            offsets: [None; Field::COUNT],
        }
    }
}

impl Layout {
    /// A field's link-time address, if the release has it.
    pub fn address(&self, field: Field) -> Option<u64> {
        let offset = self.offsets[field as usize]?;
        Some(self.globals[field.global() as usize] + u64::from(offset))
    }

    /// Fields whose offsets differ from `other`'s, by name.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        Field::ALL
            .iter()
            .filter(|&&f| self.offsets[f as usize] != other.offsets[f as usize])
            .map(|&f| {
                let show =
                    |o: Option<u32>| o.map_or_else(|| "absent".to_owned(), |o| o.to_string());
                format!(
                    "{}: {} here, {} in the table",
                    f.name(),
                    show(self.offsets[f as usize]),
                    show(other.offsets[f as usize])
                )
            })
            .collect()
    }
}

/// Why the fields could not be located.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoLayout {
    #[error("the binary has no DWARF")]
    NoDwarf,
    #[error("its DWARF has no `runtime` compilation unit")]
    NoRuntimeUnit,
    #[error("{0} is not in the binary's DWARF or symbol table")]
    GlobalMissing(&'static str),
    #[error("{0} cannot be located: {1}")]
    FieldMissing(&'static str, String),
    #[error("{0}")]
    Malformed(String),
}
