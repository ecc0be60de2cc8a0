//! Whether a frame-pointer walk can be trusted at a given instruction, from the module's own
//! unwind information (DWARF CFI: `.eh_frame`, else `.debug_frame`).
//!
//! The kernel walks user stacks by frame pointers: the caller of each frame is found through
//! `rbp`. That is right only where the function has set up its frame (`push rbp; mov rbp,
//! rsp`). A function that has not — libc's and Go's system-call wrappers, any C compiled with
//! `-fomit-frame-pointer` — leaves `rbp` as its caller's (so the walk skips a caller) or uses
//! it as a plain register (so what follows is garbage). The CFI says, for every instruction,
//! how the frame is found: from `rbp` (a frame pointer), or from `rsp` (none).

use std::{collections::HashMap, fs::File, path::Path};

use gimli::{
    BaseAddresses, CfaRule, DebugFrame, EhFrame, LittleEndian, UnwindContext, UnwindSection, X86_64,
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _, read::ReadCache};

/// How the function at an instruction keeps its frame there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keeping {
    /// It set up its frame pointer: the walk finds its caller.
    FramePointer,
    /// It has not touched the stack: its return address is the word at the stack pointer,
    /// and the walk skips its caller.
    NothingPushed,
    /// It moved the stack pointer without a frame pointer: the walk past it may skip frames
    /// or read garbage.
    NoFramePointer,
    /// No unwind information covers the instruction.
    Unknown,
}

/// One module's unwind tables, read once.
struct Module {
    /// `.eh_frame` (or `.debug_frame`) bytes, its address, and which it is.
    cfi: Option<(Vec<u8>, u64, bool)>,
    /// `.text`'s address, for pc-relative pointers in `.eh_frame`.
    text: u64,
    /// PT_LOAD segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
    /// Go keeps a frame pointer in every function that has a frame (amd64, since Go 1.7), but
    /// its CFI always describes frames from `rsp`.
    go: bool,
}

/// Unwind tables of the modules seen so far, by path.
#[derive(Default)]
pub struct Unwinder {
    modules: HashMap<String, Option<Module>>,
}

impl Unwinder {
    /// How the function at `file_offset` in the module at `path` keeps its frame.
    pub fn keeping(&mut self, path: &Path, file_offset: u64) -> Keeping {
        let key = path.to_string_lossy().into_owned();
        let module = self
            .modules
            .entry(key)
            .or_insert_with(|| Module::read(path));
        module
            .as_ref()
            .map_or(Keeping::Unknown, |m| m.keeping(file_offset))
    }
}

impl Module {
    fn read(path: &Path) -> Option<Self> {
        let file = File::open(path).ok()?;
        let cache = ReadCache::new(file);
        let elf = object::File::parse(&cache).ok()?;
        let section = |name: &str| {
            let s = elf.section_by_name(name)?;
            Some((s.uncompressed_data().ok()?.into_owned(), s.address()))
        };
        let cfi = match section(".eh_frame") {
            Some((data, address)) if !data.is_empty() => Some((data, address, true)),
            _ => section(".debug_frame").map(|(data, address)| (data, address, false)),
        };
        Some(Self {
            cfi,
            text: elf.section_by_name(".text").map_or(0, |s| s.address()),
            segments: elf
                .segments()
                .map(|s| {
                    let (offset, size) = s.file_range();
                    (offset, size, s.address())
                })
                .collect(),
            go: elf.section_by_name(".gopclntab").is_some()
                || elf.section_by_name(".go.buildinfo").is_some(),
        })
    }

    fn address(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(offset, size, _)| file_offset >= offset && file_offset < offset + size)
            .map(|&(offset, _, address)| file_offset - offset + address)
    }

    fn keeping(&self, file_offset: u64) -> Keeping {
        let (Some((data, section_address, eh)), Some(address)) =
            (&self.cfi, self.address(file_offset))
        else {
            return Keeping::Unknown;
        };
        let bases = BaseAddresses::default()
            .set_eh_frame(*section_address)
            .set_text(self.text);
        let mut ctx = UnwindContext::new();
        let rule = if *eh {
            let section = EhFrame::new(data, LittleEndian);
            section
                .unwind_info_for_address(&bases, &mut ctx, address, EhFrame::cie_from_offset)
                .map(|row| row.cfa().clone())
        } else {
            let mut section = DebugFrame::new(data, LittleEndian);
            section.set_address_size(8);
            section
                .unwind_info_for_address(&bases, &mut ctx, address, DebugFrame::cie_from_offset)
                .map(|row| row.cfa().clone())
        };
        match rule {
            Ok(rule) => classify(&rule, self.go),
            Err(_) => Keeping::Unknown,
        }
    }
}

fn classify<T: gimli::ReaderOffset>(rule: &CfaRule<T>, go: bool) -> Keeping {
    match *rule {
        CfaRule::RegisterAndOffset { register, .. } if register == X86_64::RBP => {
            Keeping::FramePointer
        }
        // Only the return address is on the stack.
        CfaRule::RegisterAndOffset { register, offset }
            if register == X86_64::RSP && offset == 8 =>
        {
            Keeping::NothingPushed
        }
        CfaRule::RegisterAndOffset { register, .. } if register == X86_64::RSP && go => {
            Keeping::FramePointer
        }
        CfaRule::RegisterAndOffset { register, .. } if register == X86_64::RSP => {
            Keeping::NoFramePointer
        }
        _ => Keeping::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary's own libc: its `madvise` wrapper makes the system call without a
    /// frame (checked by disassembly on Debian's glibc: `mov $0x1c,%eax; syscall`).
    #[test]
    fn libc_madvise_pushes_nothing() {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so"))
            .expect("libc mapped");
        let elf = std::fs::read(libc).expect("read libc");
        let file = object::File::parse(&*elf).expect("ELF");
        let madvise = object::Object::symbols(&file)
            .chain(object::Object::dynamic_symbols(&file))
            .find(|s| object::ObjectSymbol::name(s) == Ok("madvise"))
            .map(|s| object::ObjectSymbol::address(&s))
            .expect("madvise in libc");
        let module = Module::read(Path::new(libc)).expect("read libc");
        // The address is a file offset in a shared object whose first segment starts at 0.
        let offset = module
            .segments
            .iter()
            .find(|&&(_, size, address)| madvise >= address && madvise < address + size)
            .map(|&(offset, _, address)| madvise - address + offset)
            .expect("in a segment");
        assert_eq!(module.keeping(offset), Keeping::NothingPushed);
        assert!(!module.go);
    }
}
