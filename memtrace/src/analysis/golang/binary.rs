//! A Go executable (or its separate debug file), opened once and read on demand: its headers,
//! and only the parts of the sections memtrace needs. A 150 MB server binary costs memtrace the
//! few KiB it reads, never the whole file; compressed debug sections are decompressed as a
//! stream, so even they are never held whole.
//!
//! `object` parses the headers through its `ReadCache` (which keeps what it read); bulk reads
//! (section streams, chunks of tables) go straight to the file with positioned reads.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::fs::FileExt as _,
    path::Path,
};

use object::{
    CompressionFormat, LittleEndian as LE, ReadCache, elf,
    read::elf::{FileHeader as _, ProgramHeader as _, SectionHeader as _},
};

/// Real executables have a few dozen section and program headers; more is a hostile file.
const MAX_HEADERS: usize = 4096;
/// A section name longer than this is not one memtrace looks for.
const MAX_NAME: usize = 64;
/// Chunk size for streams and scans.
pub const CHUNK: usize = 64 << 10;

/// Why a binary cannot be read the way memtrace needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("cannot read {0}")]
    Io(String),
    #[error("malformed ELF file: {0}")]
    Malformed(&'static str),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// A section's place in the file and in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// Its link-time virtual address (0 for sections not loaded, like debug sections).
    pub addr: u64,
    /// Where its bytes start in the file, and how many there are in the file.
    pub offset: u64,
    pub size: u64,
    /// `SHT_NOBITS` (.bss): no bytes in the file.
    pub nobits: bool,
    /// For a compressed section (`SHF_COMPRESSED`): its stream.
    pub compressed: Option<Compressed>,
    /// `sh_link` (a symbol table's string table).
    pub link: u32,
}

/// The compressed stream of a section, after its compression header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compressed {
    pub format: CompressionFormat,
    /// Where the stream starts in the file, and its length there.
    pub offset: u64,
    pub size: u64,
    /// The section's size once decompressed.
    pub uncompressed: u64,
}

/// A `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    offset: u64,
    vaddr: u64,
    file_size: u64,
}

/// An opened ELF file.
pub struct Binary {
    file: File,
    /// Headers read through `object`, kept as read.
    cache: ReadCache<File>,
    /// A 64-bit little-endian ELF file, whose headers were read.
    pub elf64: bool,
    /// `ET_DYN`: loaded at a random address (PIE).
    pub position_independent: bool,
    /// `e_entry`.
    pub entry: u64,
    pub machine: u16,
    sections: Vec<Section>,
    segments: Vec<Segment>,
}

impl Binary {
    /// Opens `path` and reads its ELF, program and section headers (and section names). Only
    /// an error opening the file fails: a file that is not 64-bit little-endian ELF opens with
    /// no sections or segments (`elf64` false), and the build-info reader may still read it.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let cache = ReadCache::new(file.try_clone()?);
        let mut binary = Self {
            file,
            cache,
            elf64: false,
            position_independent: false,
            entry: 0,
            machine: 0,
            sections: Vec::new(),
            segments: Vec::new(),
        };
        let parsed = {
            let data = &binary.cache;
            elf::FileHeader64::<LE>::parse(data)
                .ok()
                .filter(|header| header.is_little_endian())
                .and_then(|header| {
                    let endian = LE;
                    Some((
                        header.e_type(endian),
                        header.e_entry(endian),
                        header.e_machine(endian),
                        sections(header, data).unwrap_or_default(),
                        segments(header, data)?,
                    ))
                })
        };
        if let Some((kind, entry, machine, sections, segments)) = parsed {
            binary.elf64 = true;
            binary.position_independent = kind == elf::ET_DYN;
            binary.entry = entry;
            binary.machine = machine;
            binary.sections = sections;
            binary.segments = segments;
        }
        Ok(binary)
    }

    /// What `object` parses headers from (the build-info reader uses it).
    pub fn cache(&self) -> &ReadCache<File> {
        &self.cache
    }

    /// The section called `name`, if the section headers name one.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Every section, by index.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Fills `buf` from file offset `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.file.read_exact_at(buf, offset).map_err(Error::from)
    }

    /// `len` bytes at file offset `offset`.
    pub fn bytes_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0; len];
        self.read_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// The file offset of link-time address `addr`, if a loaded segment holds it in the file.
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let at = addr.checked_sub(s.vaddr)?;
            (at < s.file_size).then(|| s.offset.checked_add(at))?
        })
    }

    /// `len` bytes at link-time address `addr`, from the file.
    pub fn bytes_at_addr(&self, addr: u64, len: usize) -> Result<Vec<u8>, Error> {
        let offset = self
            .file_offset(addr)
            .ok_or(Error::Malformed("address outside the file's segments"))?;
        self.bytes_at(offset, len)
    }

    /// The section's bytes as a stream, decompressed if the section is compressed.
    pub fn stream(&self, section: &Section) -> Result<Box<dyn Read + '_>, Error> {
        if section.nobits {
            return Err(Error::Malformed("section has no bytes in the file"));
        }
        let Some(compressed) = section.compressed else {
            return Ok(Box::new(Range {
                file: &self.file,
                offset: section.offset,
                left: section.size,
            }));
        };
        let raw = Range {
            file: &self.file,
            offset: compressed.offset,
            left: compressed.size,
        };
        match compressed.format {
            CompressionFormat::Zlib => Ok(Box::new(flate2::read::ZlibDecoder::new(raw))),
            CompressionFormat::Zstandard => {
                let decoder = ruzstd::decoding::StreamingDecoder::new(raw)
                    .map_err(|e| Error::Io(format!("zstd: {e}")))?;
                Ok(Box::new(decoder))
            }
            _ => Err(Error::Malformed("unknown section compression")),
        }
    }

    /// The whole section, decompressed, if it is at most `max` bytes.
    pub fn read_section(&self, section: &Section, max: u64) -> Result<Vec<u8>, Error> {
        let size = section.compressed.map_or(section.size, |c| c.uncompressed);
        if size > max {
            return Err(Error::Malformed("section larger than expected"));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        self.stream(section)?.take(max).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// The GNU build id (`.note.gnu.build-id`), as separate debug files are found by it.
    pub fn build_id(&self) -> Option<Vec<u8>> {
        let section = self.section(".note.gnu.build-id")?;
        let note = self.read_section(section, 4096).ok()?;
        let word = |at: usize| Some(u32::from_le_bytes(note.get(at..at + 4)?.try_into().ok()?));
        let (name_size, desc_size, kind) = (word(0)?, word(4)?, word(8)?);
        if kind != elf::NT_GNU_BUILD_ID || name_size != 4 {
            return None;
        }
        let desc = 12 + 4;
        let id = note.get(desc..desc + usize::try_from(desc_size).ok()?)?;
        (!id.is_empty()).then(|| id.to_vec())
    }

    /// `.gnu_debuglink`: the separate debug file's name and the CRC-32 of its contents.
    pub fn debuglink(&self) -> Option<(String, u32)> {
        let section = self.section(".gnu_debuglink")?;
        let bytes = self.read_section(section, 4096).ok()?;
        let end = bytes.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(bytes.get(..end)?).ok()?;
        // The CRC follows the name's NUL, padded to 4 bytes.
        let crc_at = (end + 1).next_multiple_of(4);
        let crc = u32::from_le_bytes(bytes.get(crc_at..crc_at + 4)?.try_into().ok()?);
        (!name.is_empty() && !name.contains('/')).then(|| (name.to_owned(), crc))
    }

    /// The CRC-32 of the whole file, read in chunks (how a debug link is checked).
    pub fn crc32(&self) -> Result<u32, Error> {
        let mut hasher = flate2::Crc::new();
        let mut buf = vec![0; CHUNK];
        let mut offset = 0;
        loop {
            let read = self.file.read_at(&mut buf, offset)?;
            if read == 0 {
                return Ok(hasher.sum());
            }
            hasher.update(buf.get(..read).unwrap_or_default());
            offset += read as u64;
        }
    }
}

/// A byte range of the file as a `Read`, with positioned reads (no shared file offset).
struct Range<'a> {
    file: &'a File,
    offset: u64,
    left: u64,
}

impl Read for Range<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let Some(buf) = buf.get_mut(..want) else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let read = self.file.read_at(buf, self.offset)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.offset += read as u64;
        self.left -= read as u64;
        Ok(read)
    }
}

fn sections(header: &elf::FileHeader64<LE>, data: &ReadCache<File>) -> Option<Vec<Section>> {
    let endian = LE;
    let table = header.section_headers(endian, data).ok()?;
    if table.len() > MAX_HEADERS {
        return None;
    }
    let names_index = header.section_strings_index(endian, data).ok()?;
    let names = table.get(names_index.0)?;
    let (names_offset, names_size) = names.file_range(endian)?;
    let mut sections = Vec::with_capacity(table.len());
    for header in table {
        let name = section_name(data, names_offset, names_size, header.sh_name(endian));
        let nobits = header.sh_type(endian) == elf::SHT_NOBITS;
        let compressed =
            header
                .compression(endian, data)
                .ok()
                .flatten()
                .map(|(ch, offset, size)| Compressed {
                    format: match ch.ch_type.get(endian) {
                        elf::ELFCOMPRESS_ZLIB => CompressionFormat::Zlib,
                        elf::ELFCOMPRESS_ZSTD => CompressionFormat::Zstandard,
                        _ => CompressionFormat::Unknown,
                    },
                    offset,
                    size,
                    uncompressed: ch.ch_size.get(endian),
                });
        sections.push(Section {
            name,
            addr: header.sh_addr(endian),
            offset: header.sh_offset(endian),
            size: if nobits { 0 } else { header.sh_size(endian) },
            nobits,
            compressed,
            link: header.sh_link(endian),
        });
    }
    Some(sections)
}

/// A section's name from the section-name string table, bounded (a table without NULs would
/// otherwise be scanned to its end for every section).
fn section_name(data: &ReadCache<File>, table: u64, size: u64, at: u32) -> String {
    use object::ReadRef as _;
    let start = table.saturating_add(u64::from(at));
    let end = table
        .saturating_add(size)
        .min(start.saturating_add(MAX_NAME as u64));
    data.read_bytes_at_until(start..end, 0)
        .ok()
        .and_then(|name| std::str::from_utf8(name).ok())
        .unwrap_or_default()
        .to_owned()
}

fn segments(header: &elf::FileHeader64<LE>, data: &ReadCache<File>) -> Option<Vec<Segment>> {
    let endian = LE;
    let table = header.program_headers(endian, data).ok()?;
    if table.len() > MAX_HEADERS {
        return None;
    }
    Some(
        table
            .iter()
            .filter(|p| p.p_type(endian) == elf::PT_LOAD)
            .map(|p| Segment {
                offset: p.p_offset(endian),
                vaddr: p.p_vaddr(endian),
                file_size: p.p_filesz(endian),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_headers_and_sections() {
        let me = Binary::open(Path::new("/proc/self/exe")).unwrap();
        assert_eq!(me.machine, elf::EM_X86_64);
        let text = me.section(".text").expect(".text").clone();
        assert!(text.size > 0 && text.addr != 0);
        // Code bytes read through the segments are the section's bytes.
        let by_addr = me.bytes_at_addr(text.addr, 16).unwrap();
        assert_eq!(by_addr, me.bytes_at(text.offset, 16).unwrap());
        let streamed = me.read_section(&text, text.size).unwrap();
        assert_eq!(streamed.len() as u64, text.size);
        assert_eq!(&streamed[..16], &by_addr[..]);
        assert!(me.read_section(&text, 8).is_err());
        assert!(me.build_id().is_some_and(|id| id.len() >= 8));
        assert!(me.crc32().is_ok());
        assert!(me.elf64);
        assert!(!Binary::open(Path::new("/proc/self/status")).unwrap().elf64);
        assert!(Binary::open(Path::new("/nonexistent")).is_err());
    }
}
