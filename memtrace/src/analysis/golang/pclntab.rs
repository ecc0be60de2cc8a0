//! Function addresses from `.gopclntab`, the table the Go runtime itself needs (for stack
//! traces and the GC), so even a fully stripped Go binary keeps it. Layout of Go 1.18 and
//! later (`runtime/symtab.go` `pcHeader`, `_func`; magic 0xfffffff0 for 1.18–1.19, 0xfffffff1
//! since 1.20):
//!
//! ```text
//! header: magic u32, pad u8 u8, minLC u8, ptrSize u8, nfunc uintptr, nfiles uintptr,
//!         textStart uintptr, funcnameOffset, cuOffset, filetabOffset, pctabOffset,
//!         pclnOffset (uintptr, relative to the header)
//! functab at pclnOffset: nfunc × {entryoff u32, funcoff u32}, then the _func records;
//! _func at pclnOffset + funcoff: entryOff u32, nameOff i32 (into the funcname table), …
//! ```
//!
//! Read in chunks, in order: the names first (to learn the wanted names' offsets), then the
//! function table and the records, which are laid out in the same order.

use std::collections::BTreeMap;

use super::binary::{Binary, CHUNK, Section};

const MAGICS: [u32; 2] = [0xffff_fff0, 0xffff_fff1];
const HEADER_LEN: usize = 8 + 8 * 8;
/// More functions than any real program has.
const MAX_FUNCTIONS: u64 = 1 << 24;

/// Functions of the binary, by the offset of their entry from the text start.
pub struct Functions {
    /// `pcHeader.textStart` as the file has it: 0 where it is relocated at load (PIE), and in
    /// Go ≥ 1.26, which no longer fills it in.
    pub text_start: u64,
    /// The entry offset of each wanted name the binary has.
    pub entries: BTreeMap<&'static str, u64>,
}

/// The entry offsets of each of `names` that the binary has.
pub fn functions(binary: &Binary, names: &[&str]) -> Result<Functions, String> {
    let section = binary
        .section(".gopclntab")
        .ok_or("the binary has no .gopclntab section")?;
    let header = binary
        .bytes_at(section.offset, HEADER_LEN)
        .map_err(|e| e.to_string())?;
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
    let magic = u32::from_le_bytes(header[..4].try_into().unwrap_or_default());
    if !MAGICS.contains(&magic) || header[7] != 8 {
        return Err(format!(".gopclntab has an unknown format ({magic:#x})"));
    }
    let nfunc = word(8);
    let text = word(24);
    // The funcname table runs up to the compilation-unit table that follows it.
    let (names_at, names_end, functab_at) = (word(32), word(40), word(64));
    if nfunc > MAX_FUNCTIONS
        || names_at >= names_end
        || names_end > section.size
        || functab_at >= section.size
    {
        return Err(".gopclntab's header is out of range".to_owned());
    }
    let wanted = name_offsets(binary, section, names_at, names_end, names)?;
    let mut index = Window::new(binary, section, functab_at);
    let mut records = Window::new(binary, section, functab_at);
    let mut found = BTreeMap::new();
    for i in 0..nfunc {
        let entry_offset = index.u32(i * 8)?;
        let func_offset = index.u32(i * 8 + 4)?;
        let name_offset = records.u32(u64::from(func_offset) + 4)?;
        if let Some(&name) = wanted.get(&u64::from(name_offset)) {
            found.insert(name, u64::from(entry_offset));
            if found.len() == wanted.len() {
                break;
            }
        }
    }
    Ok(Functions {
        text_start: text,
        entries: found,
    })
}

/// The offset of each wanted name in the funcname table (names are NUL-terminated).
fn name_offsets(
    binary: &Binary,
    section: &Section,
    start: u64,
    end: u64,
    names: &[&str],
) -> Result<BTreeMap<u64, &'static str>, String> {
    let wanted: Vec<&'static str> = memtrace_common::go_runtime::ANCHORS
        .iter()
        .copied()
        .filter(|a| names.contains(a))
        .collect();
    let mut found = BTreeMap::new();
    let mut at = start;
    let mut name = Vec::new();
    let mut name_start = start;
    while at < end {
        let len = CHUNK.min(usize::try_from(end - at).unwrap_or(CHUNK));
        let chunk = binary
            .bytes_at(section.offset + at, len)
            .map_err(|e| e.to_string())?;
        for (i, &byte) in chunk.iter().enumerate() {
            if byte != 0 {
                if name.len() < 256 {
                    name.push(byte);
                }
                continue;
            }
            if let Some(&w) = wanted.iter().find(|w| w.as_bytes() == name.as_slice()) {
                found.insert(name_start - start, w);
            }
            name.clear();
            name_start = at + i as u64 + 1;
        }
        at += len as u64;
    }
    Ok(found)
}

/// Reads little-endian words at offsets of a section region that mostly move forward, a chunk
/// at a time.
struct Window<'a> {
    binary: &'a Binary,
    section: &'a Section,
    base: u64,
    start: u64,
    bytes: Vec<u8>,
}

impl<'a> Window<'a> {
    fn new(binary: &'a Binary, section: &'a Section, base: u64) -> Self {
        Self {
            binary,
            section,
            base,
            start: 0,
            bytes: Vec::new(),
        }
    }

    fn u32(&mut self, offset: u64) -> Result<u32, String> {
        let within = offset.checked_sub(self.start);
        let in_window = within.is_some_and(|w| w + 4 <= self.bytes.len() as u64);
        if !in_window {
            let absolute = self.base + offset;
            let left = self.section.size.saturating_sub(absolute);
            if left < 4 {
                return Err(".gopclntab is truncated".to_owned());
            }
            let len = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
            self.bytes = self
                .binary
                .bytes_at(self.section.offset + absolute, len)
                .map_err(|e| e.to_string())?;
            self.start = offset;
        }
        let at = usize::try_from(offset - self.start).map_err(|e| e.to_string())?;
        let bytes: [u8; 4] = self.bytes[at..at + 4]
            .try_into()
            .map_err(|_| "short read")?;
        Ok(u32::from_le_bytes(bytes))
    }
}
