//! The generated offset table (layouts.rs, `cargo xtask go-layouts`) and how memtrace uses it
//! for binaries without DWARF: with a symbol table (`-ldflags=-w`), the globals' addresses come
//! from the symbols and the offsets from the table; fully stripped (`-s -w`), the globals'
//! addresses come from decoding the table's anchor instructions in runtime functions that
//! `.gopclntab` still names.
//!
//! The table covers the Go releases the tests build with, for default builds. A binary of
//! another minor release, or built with a GOEXPERIMENT, gets no offsets from it: a reason
//! rather than a guess.

use std::collections::BTreeMap;

use memtrace_common::go_runtime::{Field, Global};

use super::{
    binary::Binary,
    buildinfo::{BuildInfo, version_number},
    layout::Layout,
    layouts::ENTRIES,
    pclntab, symtab,
};

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

/// The entry for the binary's Go release, or why there is none.
pub fn entry(build: &BuildInfo) -> Result<&'static Entry, String> {
    let go = version_number(&build.go_version);
    if let Some(experiment) = build.setting("GOEXPERIMENT") {
        return Err(format!(
            "built with GOEXPERIMENT={experiment}, which may lay the runtime out differently \
             from the default builds the offsets were generated from"
        ));
    }
    ENTRIES
        .iter()
        .find(|entry| version_number(entry.go) == go && go.is_some())
        .ok_or_else(|| {
            let known: Vec<&str> = ENTRIES.iter().map(|e| e.go).collect();
            format!(
                "no generated offsets for {} (memtrace has them for {})",
                build.go_version,
                known.join(", ")
            )
        })
}

impl Entry {
    /// The layout with the given globals' addresses.
    fn layout(&self, globals: [u64; Global::ALL.len()]) -> Layout {
        Layout {
            globals,
            sizes: self.sizes.map(Some),
            offsets: self.offsets,
        }
    }

    /// The layout as the table has it, to compare with what DWARF says.
    pub fn offsets_layout(&self) -> Layout {
        self.layout([0; Global::ALL.len()])
    }

    /// The globals from the symbol table, checked against the table's sizes.
    pub fn locate_by_symbols(&self, binary: &Binary) -> Result<Layout, String> {
        let names: Vec<&str> = Global::ALL.iter().map(|g| g.symbol()).collect();
        let symbols = symtab::find(binary, &names)?;
        let mut globals = [0; Global::ALL.len()];
        for global in Global::ALL {
            let &(address, size) = symbols
                .get(global.symbol())
                .ok_or_else(|| format!("{} is not in the symbol table", global.symbol()))?;
            let expected = self.sizes[global as usize];
            if size != expected {
                return Err(format!(
                    "{} is {size} bytes here, {expected} in {}: not the layout of the table",
                    global.symbol(),
                    self.go
                ));
            }
            globals[global as usize] = address;
        }
        Ok(self.layout(globals))
    }

    /// The globals from the anchor instructions, in a binary without symbols: `.gopclntab`
    /// gives the functions' offsets from the text start, tried at each of `text_starts` (the
    /// header's may be 0); every recorded instruction of a function must match byte for byte,
    /// and every function that matches must agree on every global.
    pub fn locate_by_anchors(
        &self,
        binary: &Binary,
        text_starts: impl Fn(u64) -> Vec<u64>,
    ) -> Result<Layout, String> {
        let mut names: Vec<&str> = self.anchors.iter().map(|a| a.function).collect();
        names.dedup();
        let functions = pclntab::functions(binary, &names)?;
        let mut last = String::from("no text start to try");
        for text in text_starts(functions.text_start) {
            match self.globals_at(binary, text, &functions.entries) {
                Ok(globals) => return Ok(self.layout(globals)),
                Err(why) => last = why,
            }
        }
        Err(last)
    }

    /// The globals the anchors give with the text starting at `text`.
    fn globals_at(
        &self,
        binary: &Binary,
        text: u64,
        entries: &BTreeMap<&'static str, u64>,
    ) -> Result<[u64; Global::ALL.len()], String> {
        let mut globals: [Option<u64>; Global::ALL.len()] = [None; Global::ALL.len()];
        let mut matched = Vec::new();
        for anchor in self.anchors {
            let Some(&offset) = entries.get(anchor.function) else {
                continue;
            };
            let Some(found) = decode(binary, text + offset, anchor.refs) else {
                continue;
            };
            for (global, address) in found {
                match globals[global as usize] {
                    Some(known) if known != address => {
                        return Err(format!(
                            "{} disagrees with another anchor about {}",
                            anchor.function,
                            global.symbol()
                        ));
                    }
                    _ => globals[global as usize] = Some(address),
                }
            }
            matched.push(anchor.function);
        }
        let mut addresses = [0; Global::ALL.len()];
        for global in Global::ALL {
            addresses[global as usize] = globals[global as usize].ok_or_else(|| {
                format!(
                    "no runtime function's code matches what {} compiles to (matched: {}), so \
                     {} cannot be found",
                    self.go,
                    if matched.is_empty() {
                        "none".to_owned()
                    } else {
                        matched.join(", ")
                    },
                    global.symbol()
                )
            })?;
        }
        Ok(addresses)
    }
}

/// The globals one anchor's instructions address, if every instruction matches; a global
/// addressed twice must be the same.
fn decode(binary: &Binary, function: u64, refs: &[Ref]) -> Option<Vec<(Global, u64)>> {
    let mut found: Vec<(Global, u64)> = Vec::new();
    for r in refs {
        let at = function.checked_add(u64::from(r.offset))?;
        let code = binary.bytes_at_addr(at, r.code.len()).ok()?;
        let disp_at = usize::from(r.disp_at);
        let disp_bytes: [u8; 4] = code.get(disp_at..disp_at + 4)?.try_into().ok()?;
        let same = code
            .iter()
            .zip(r.code)
            .enumerate()
            .all(|(i, (a, b))| (disp_at..disp_at + 4).contains(&i) || a == b);
        if !same {
            return None;
        }
        let next = at.checked_add(r.code.len() as u64)?;
        let target = next.checked_add_signed(i64::from(i32::from_le_bytes(disp_bytes)))?;
        let address = target.checked_sub(u64::from(r.addend))?;
        match found.iter().find(|(g, _)| *g == r.global) {
            Some(&(_, known)) if known != address => return None,
            Some(_) => {}
            None => found.push((r.global, address)),
        }
    }
    Some(found)
}
