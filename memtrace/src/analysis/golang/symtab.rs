//! A few symbols of a binary's symbol table (`.symtab`), found without holding the table: the
//! string table is streamed to find the names, then the symbols to find those names.

use std::{collections::BTreeMap, io::Read};

use super::binary::{Binary, CHUNK};

/// An `Elf64_Sym` is 24 bytes: name (4), info, other, shndx (2), value (8), size (8).
const SYMBOL_SIZE: usize = 24;

/// Each of `names` found in the symbol table, with its value and size.
pub fn find(binary: &Binary, names: &[&str]) -> Result<BTreeMap<String, (u64, u64)>, String> {
    let symtab = binary
        .section(".symtab")
        .ok_or("the binary has no symbol table")?;
    let strtab = binary
        .sections()
        .get(symtab.link as usize)
        .filter(|s| s.name == ".strtab")
        .ok_or("the symbol table has no string table")?;
    let offsets = string_offsets(binary, strtab, names)?;
    let mut found = BTreeMap::new();
    let mut stream = binary.stream(symtab).map_err(|e| e.to_string())?;
    let mut chunk = vec![0u8; CHUNK / SYMBOL_SIZE * SYMBOL_SIZE];
    loop {
        let read = fill(&mut stream, &mut chunk)?;
        for symbol in chunk[..read].chunks_exact(SYMBOL_SIZE) {
            let word = |at: usize, len: usize| {
                symbol
                    .get(at..at + len)
                    .map(|b| {
                        b.iter()
                            .rev()
                            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
                    })
                    .unwrap_or(0)
            };
            if let Some(name) = offsets.get(&word(0, 4)) {
                found.insert(name.clone(), (word(8, 8), word(16, 8)));
            }
        }
        if read < chunk.len() {
            return Ok(found);
        }
    }
}

/// The offset of each name in the string table: where `name\0` starts right after a NUL.
fn string_offsets(
    binary: &Binary,
    strtab: &super::binary::Section,
    names: &[&str],
) -> Result<BTreeMap<u64, String>, String> {
    let longest = names.iter().map(|n| n.len()).max().unwrap_or(0) + 2;
    let mut stream = binary.stream(strtab).map_err(|e| e.to_string())?;
    let mut found = BTreeMap::new();
    // A window that keeps the end of the previous chunk, so no name is split across two.
    let mut window: Vec<u8> = Vec::with_capacity(CHUNK + longest);
    let mut window_start = 0u64;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let read = fill(&mut stream, &mut chunk)?;
        window.extend_from_slice(&chunk[..read]);
        for name in names {
            let needle: Vec<u8> = [b"\0", name.as_bytes(), b"\0"].concat();
            let mut from = 0;
            while let Some(at) = find_bytes(&window[from..], &needle) {
                found.insert(window_start + (from + at + 1) as u64, (*name).to_owned());
                from += at + 1;
            }
        }
        if read < chunk.len() {
            return Ok(found);
        }
        let keep = window.len().saturating_sub(longest);
        window.drain(..keep);
        window_start += keep as u64;
    }
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Fills `buf` from `stream` as far as it goes; returns how much.
pub fn fill(stream: &mut dyn Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(filled)
}
