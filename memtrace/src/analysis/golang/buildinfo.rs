//! The Go toolchain version and build settings embedded in a Go binary.
//!
//! How the Go runtime releases memory (`MADV_FREE` or `MADV_DONTNEED`, and whether it does so
//! eagerly) depends on the Go version and on `GODEBUG` defaults compiled into the binary, so
//! memtrace reads them from the `.go.buildinfo` blob that Go's linker writes into every binary.
//! This mirrors Go's `debug/buildinfo` (`src/debug/buildinfo/buildinfo.go`) for ELF files only,
//! with a tiny ELF reader of its own rather than a dependency.
//!
//! The input is an arbitrary `/proc/PID/exe`, so everything read from the file is distrusted:
//! offsets are added with checked arithmetic, slices are taken with `get`, string lengths are
//! capped before anything is allocated, and table walks are bounded. Bad input yields an
//! [`Error`], never a panic.

use std::{fmt, fs, io, path::Path, str::CharIndices};

/// Starts the build-info blob. Go's linker aligns the blob to [`BLOB_ALIGN`].
const MAGIC: &[u8] = b"\xff Go buildinf:";
/// magic (14 bytes), pointer size (1), flags (1), then two pointers padded to 32 bytes.
const HEADER_LEN: usize = 32;
/// Only positions at this alignment are candidates, which keeps scans cheap. Stray copies of the
/// magic can still be aligned (the `go` command's own `debug/buildinfo` holds one in its data),
/// which is why the search prefers the section and tries every candidate.
const BLOB_ALIGN: usize = 16;
/// In the pointer format (Go < 1.18), the pointers are big-endian.
const FLAG_BIG_ENDIAN: u8 = 1;
/// Go >= 1.18: the strings follow the header inline instead of being pointed to.
const FLAG_INLINE_STRINGS: u8 = 2;
/// Real version strings are tiny and modinfo is tens of KiB; anything longer is corrupt.
const MAX_STRING_LEN: u64 = 1 << 20;
/// A LEB128 encoding of a `u64` takes at most this many bytes.
const MAX_VARINT_LEN: usize = 10;
/// Bounds walks over program and section headers; real executables have a few dozen.
const MAX_TABLE_ENTRIES: u64 = 4096;
/// Bounds how many magic matches one region may offer, so a file full of magics stays cheap.
const MAX_CANDIDATES: usize = 64;

/// Sentinels `cmd/go` wraps modinfo in (`modload.infoStart` and `infoEnd`).
const MODINFO_START: [u8; 16] = [
    0x30, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18, 0xe6,
];
const MODINFO_END: [u8; 16] = [
    0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0x00, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8, 0xf2,
];
/// Both sentinels plus at least one byte of content.
const MIN_FRAMED_LEN: usize = 33;

/// Prefix of the modinfo lines holding build settings.
const SETTING_PREFIX: &str = "build\t";
/// The setting Go >= 1.21 records the compiled-in `GODEBUG` defaults under.
const DEFAULT_GODEBUG: &str = "DefaultGODEBUG";

const ELF_MAGIC: &[u8] = b"\x7fELF";
const PT_LOAD: u64 = 1;
const PF_X: u64 = 1;
const PF_W: u64 = 2;
const SHT_NOBITS: u64 = 8;
const SHN_XINDEX: u64 = 0xffff;
/// The section name as stored in the string table, with its terminator.
const SECTION_NAME: &[u8] = b".go.buildinfo\0";

/// What a Go binary says about how it was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The toolchain version, e.g. `go1.19.8`.
    pub go_version: String,
    /// The modinfo text (`path`, `mod`, `dep` and `build` lines) with its sentinels removed, if
    /// the binary has any.
    pub module_info: Option<String>,
    /// The `build\tKEY=VALUE` lines of modinfo, unquoted, in file order.
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// The value of build setting `key` (e.g. `GOOS`, `-ldflags`), if recorded.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// The compiled-in DefaultGODEBUG setting, if any.
    ///
    /// Go >= 1.21 derives it from the main module's `go` line and `//go:debug` directives; it
    /// decides runtime behaviour the binary was built with unless `GODEBUG` overrides it.
    pub fn default_godebug(&self) -> Option<&str> {
        self.setting(DEFAULT_GODEBUG)
    }
}

/// Why no build information could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The input does not start with the ELF magic.
    NotElf,
    /// An ELF file without a Go build-info blob.
    NotGo,
    /// A header, table or string runs past the end of the input or of its segment.
    Truncated,
    /// A value that no real binary contains.
    Malformed(&'static str),
    /// A valid encoding this reader does not handle.
    Unsupported(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => f.write_str("not an ELF file"),
            Self::NotGo => f.write_str("no Go build information found"),
            Self::Truncated => f.write_str("Go build information is truncated"),
            Self::Malformed(what) => write!(f, "malformed Go binary: {what}"),
            Self::Unsupported(what) => write!(f, "unsupported Go binary: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// Reads the build information from the bytes of an ELF Go binary.
pub fn parse(bytes: &[u8]) -> Result<BuildInfo, Error> {
    let elf = Elf::parse(bytes)?;
    let (go_version, modinfo) = elf.find_build_info()?;
    let modinfo = String::from_utf8_lossy(unframe(modinfo)).into_owned();
    let settings = parse_settings(&modinfo);
    Ok(BuildInfo {
        go_version: go_version.to_owned(),
        module_info: (!modinfo.is_empty()).then_some(modinfo),
        settings,
    })
}

/// Reads the file at `path` (e.g. `/proc/PID/exe`) and parses it. The outer error is about
/// reading the file, the inner one about its contents.
pub fn read(path: &Path) -> io::Result<Result<BuildInfo, Error>> {
    let bytes = fs::read(path)?;
    Ok(parse(&bytes))
}

/// Parses a Go version string like "go1.14.15", "go1.21rc2", "go1.22.0 X:nocoverageredesign",
/// "devel go1.23-abc" into (major, minor) = (1, 14).
///
/// Takes the first whitespace-separated word of the form `goMAJOR[.MINOR...]`, so development
/// builds, experiment suffixes and pre-release tags are all understood. A bare `go1` is 1.0.
pub fn version_number(go_version: &str) -> Option<(u32, u32)> {
    go_version.split_whitespace().find_map(parse_version_word)
}

fn parse_version_word(word: &str) -> Option<(u32, u32)> {
    let (major, rest) = leading_number(word.strip_prefix("go")?)?;
    let minor = match rest.strip_prefix('.') {
        Some(rest) => leading_number(rest)?.0,
        None => 0,
    };
    Some((major, minor))
}

/// Splits the leading decimal digits off `s`, if there are any.
fn leading_number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, rest) = s.split_at_checked(end)?;
    Some((digits.parse().ok()?, rest))
}

#[derive(Debug, Clone, Copy)]
enum Endian {
    Little,
    Big,
}

/// Reads fixed-width unsigned fields out of a byte slice; every read is bounds-checked.
#[derive(Debug, Clone, Copy)]
struct Fields<'a> {
    bytes: &'a [u8],
    endian: Endian,
    /// Size of an address field: 4 for ELF32 / 32-bit Go, 8 for ELF64 / 64-bit Go.
    word: u8,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], endian: Endian, word: u8) -> Self {
        Self {
            bytes,
            endian,
            word,
        }
    }

    /// The same byte order and word size over other bytes.
    fn over(self, bytes: &'a [u8]) -> Self {
        Self { bytes, ..self }
    }

    fn uint(&self, offset: usize, width: usize) -> Result<u64, Error> {
        let end = offset.checked_add(width).ok_or(Error::Truncated)?;
        let field = self.bytes.get(offset..end).ok_or(Error::Truncated)?;
        let be = |acc: u64, &byte: &u8| (acc << 8) | u64::from(byte);
        Ok(match self.endian {
            Endian::Little => field.iter().rev().fold(0, be),
            Endian::Big => field.iter().fold(0, be),
        })
    }

    fn u16(&self, offset: usize) -> Result<u64, Error> {
        self.uint(offset, 2)
    }

    fn u32(&self, offset: usize) -> Result<u64, Error> {
        self.uint(offset, 4)
    }

    fn word(&self, offset: usize) -> Result<u64, Error> {
        self.uint(offset, usize::from(self.word))
    }
}

/// `len` bytes of `data` at `offset`, or `Truncated` if they are not all there.
fn slice_at(data: &[u8], offset: u64, len: u64) -> Result<&[u8], Error> {
    let start = usize::try_from(offset).map_err(|_| Error::Truncated)?;
    let len = usize::try_from(len).map_err(|_| Error::Truncated)?;
    let end = start.checked_add(len).ok_or(Error::Truncated)?;
    data.get(start..end).ok_or(Error::Truncated)
}

/// A header table (program or section headers) as the ELF header describes it.
#[derive(Debug, Clone, Copy)]
struct Table {
    offset: u64,
    count: u64,
    entry_size: u64,
}

impl Table {
    fn entry<'a>(&self, data: &'a [u8], index: u64) -> Result<&'a [u8], Error> {
        let offset = index
            .checked_mul(self.entry_size)
            .and_then(|relative| relative.checked_add(self.offset))
            .ok_or(Error::Truncated)?;
        slice_at(data, offset, self.entry_size)
    }
}

/// A `PT_LOAD` program header: what maps virtual addresses to file offsets.
#[derive(Debug, Clone, Copy)]
struct Segment {
    flags: u64,
    offset: u64,
    vaddr: u64,
    file_size: u64,
}

impl Segment {
    fn contains(&self, addr: u64) -> bool {
        addr.checked_sub(self.vaddr)
            .is_some_and(|relative| relative < self.file_size)
    }
}

/// The parts of a section header this reader needs.
#[derive(Debug, Clone, Copy)]
struct Section {
    name: u64,
    kind: u64,
    offset: u64,
    size: u64,
    link: u64,
}

/// Just enough of an ELF file to find the blob and resolve the addresses it contains.
struct Elf<'a> {
    data: &'a [u8],
    /// Byte order and word size of the ELF headers (not of the blob, which has its own).
    fields: Fields<'a>,
    segments: Vec<Segment>,
    sections: Table,
    section_names: u64,
}

impl<'a> Elf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, Error> {
        if !data.starts_with(ELF_MAGIC) {
            return Err(Error::NotElf);
        }
        let word = match data.get(4) {
            Some(1) => 4,
            Some(2) => 8,
            Some(_) => return Err(Error::Unsupported("unknown ELF class")),
            None => return Err(Error::Truncated),
        };
        let endian = match data.get(5) {
            Some(1) => Endian::Little,
            Some(2) => Endian::Big,
            Some(_) => return Err(Error::Unsupported("unknown ELF byte order")),
            None => return Err(Error::Truncated),
        };
        let fields = Fields::new(data, endian, word);
        // e_phoff, e_shoff and the run of 16-bit sizes and counts sit at different offsets in
        // ELF32 and ELF64 headers; everything after e_flags is laid out identically.
        let (phoff, shoff, sizes) = if word == 8 {
            (fields.word(0x20)?, fields.word(0x28)?, 0x36)
        } else {
            (fields.word(0x1c)?, fields.word(0x20)?, 0x2a)
        };
        let programs = Table {
            offset: phoff,
            count: fields.u16(sizes + 2)?,
            entry_size: fields.u16(sizes)?,
        };
        let sections = Table {
            offset: shoff,
            count: fields.u16(sizes + 6)?,
            entry_size: fields.u16(sizes + 4)?,
        };
        let mut elf = Self {
            data,
            fields,
            segments: Vec::new(),
            sections,
            section_names: fields.u16(sizes + 8)?,
        };
        elf.segments = elf.load_segments(programs)?;
        Ok(elf)
    }

    /// The `PT_LOAD` segments. Unlike section headers these are required to run the binary, so
    /// a damaged table is an error rather than something to work around.
    fn load_segments(&self, table: Table) -> Result<Vec<Segment>, Error> {
        if table.count > MAX_TABLE_ENTRIES {
            return Err(Error::Unsupported("too many program headers"));
        }
        let min_size = if self.fields.word == 8 { 56 } else { 32 };
        if table.count > 0 && table.entry_size < min_size {
            return Err(Error::Malformed("program header entries too small"));
        }
        let mut segments = Vec::new();
        for index in 0..table.count {
            let entry = self.fields.over(table.entry(self.data, index)?);
            if entry.u32(0)? == PT_LOAD {
                segments.push(self.parse_segment(entry)?);
            }
        }
        Ok(segments)
    }

    fn parse_segment(&self, entry: Fields<'_>) -> Result<Segment, Error> {
        Ok(if self.fields.word == 8 {
            Segment {
                flags: entry.u32(4)?,
                offset: entry.word(8)?,
                vaddr: entry.word(16)?,
                file_size: entry.word(32)?,
            }
        } else {
            Segment {
                flags: entry.u32(24)?,
                offset: entry.word(4)?,
                vaddr: entry.word(8)?,
                file_size: entry.word(16)?,
            }
        })
    }

    fn section(&self, index: u64) -> Result<Section, Error> {
        let min_size = if self.fields.word == 8 { 64 } else { 40 };
        if self.sections.entry_size < min_size {
            return Err(Error::Malformed("section header entries too small"));
        }
        let entry = self.fields.over(self.sections.entry(self.data, index)?);
        Ok(if self.fields.word == 8 {
            Section {
                name: entry.u32(0)?,
                kind: entry.u32(4)?,
                offset: entry.word(24)?,
                size: entry.word(32)?,
                link: entry.u32(40)?,
            }
        } else {
            Section {
                name: entry.u32(0)?,
                kind: entry.u32(4)?,
                offset: entry.word(16)?,
                size: entry.word(20)?,
                link: entry.u32(24)?,
            }
        })
    }

    /// Section count and string-table index, resolving the extended numbering ELF uses when
    /// they overflow 16 bits (both then live in section 0). `None` without section headers.
    fn section_counts(&self) -> Option<(u64, u64)> {
        if self.sections.offset == 0 {
            return None;
        }
        let mut count = self.sections.count;
        let mut names = self.section_names;
        if count == 0 || names == SHN_XINDEX {
            let first = self.section(0).ok()?;
            if count == 0 {
                count = first.size;
            }
            if names == SHN_XINDEX {
                names = first.link;
            }
        }
        (count <= MAX_TABLE_ENTRIES).then_some((count, names))
    }

    /// The file bytes of the section named `name` (NUL-terminated). Section headers are
    /// optional and often mangled by strippers, so any problem here just means "not found".
    fn section_bytes(&self, name: &[u8]) -> Option<&'a [u8]> {
        let (count, names_index) = self.section_counts()?;
        let names = self.section(names_index).ok()?;
        let names = slice_at(self.data, names.offset, names.size).ok()?;
        (0..count).find_map(|index| {
            let section = self.section(index).ok()?;
            let start = usize::try_from(section.name).ok()?;
            let matches = names.get(start..)?.starts_with(name);
            if !matches || section.kind == SHT_NOBITS {
                return None;
            }
            slice_at(self.data, section.offset, section.size).ok()
        })
    }

    /// The file bytes of the first writable, non-executable `PT_LOAD` segment, where Go's
    /// linker puts the blob first; like Go's `DataStart`. Clipped to the file.
    fn data_segment_bytes(&self) -> Option<&'a [u8]> {
        let segment = self
            .segments
            .iter()
            .find(|segment| segment.flags & (PF_X | PF_W) == PF_W)?;
        let start = usize::try_from(segment.offset).ok()?;
        let rest = self.data.get(start..)?;
        let len = usize::try_from(segment.file_size).map_or(rest.len(), |len| len.min(rest.len()));
        rest.get(..len)
    }

    /// `len` bytes at virtual address `addr`, all within one segment's file data.
    fn bytes_at_address(&self, addr: u64, len: u64) -> Result<&'a [u8], Error> {
        let segment = self
            .segments
            .iter()
            .find(|segment| segment.contains(addr))
            .ok_or(Error::Malformed("address outside the loadable segments"))?;
        let relative = addr.checked_sub(segment.vaddr).ok_or(Error::Truncated)?;
        let end = relative.checked_add(len).ok_or(Error::Truncated)?;
        if end > segment.file_size {
            return Err(Error::Truncated);
        }
        let offset = segment
            .offset
            .checked_add(relative)
            .ok_or(Error::Truncated)?;
        slice_at(self.data, offset, len)
    }

    /// Finds and decodes the blob: in the `.go.buildinfo` section if there is one, else in the
    /// data segment (where Go's linker puts it first). Returns the version and the raw modinfo.
    ///
    /// Every aligned magic is tried in turn because a file can hold stray copies (and a
    /// corrupt section should not hide an intact blob found by scanning); the first error is
    /// reported if none decodes. The rest of the file is not searched: read-only data of
    /// programs that parse Go binaries (memtrace itself) holds the magic too.
    fn find_build_info(&self) -> Result<(&'a str, &'a [u8]), Error> {
        let regions = [self.section_bytes(SECTION_NAME), self.data_segment_bytes()];
        let mut first_error = None;
        for blob in regions.into_iter().flatten().flat_map(magic_candidates) {
            match self.decode_blob(blob) {
                Ok(found) => return Ok(found),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or(Error::NotGo))
    }

    /// Decodes the blob at the start of `blob`.
    fn decode_blob(&self, blob: &'a [u8]) -> Result<(&'a str, &'a [u8]), Error> {
        let (header, rest) = blob.split_at_checked(HEADER_LEN).ok_or(Error::Truncated)?;
        let header: &[u8; HEADER_LEN] = header.try_into().map_err(|_| Error::Truncated)?;
        let (ptr_size, flags) = (header[14], header[15]);
        if ptr_size != 4 && ptr_size != 8 {
            return Err(Error::Unsupported("pointer size is neither 4 nor 8"));
        }
        let (version, modinfo) = if flags & FLAG_INLINE_STRINGS != 0 {
            let (version, rest) = take_varint_string(rest)?;
            (version, take_varint_string(rest)?.0)
        } else {
            let endian = if flags & FLAG_BIG_ENDIAN != 0 {
                Endian::Big
            } else {
                Endian::Little
            };
            let pointers = Fields::new(header, endian, ptr_size);
            let version = self.go_string(pointers, pointers.word(16)?)?;
            let modinfo = self.go_string(pointers, pointers.word(16 + usize::from(ptr_size))?)?;
            (version, modinfo)
        };
        Ok((validate_version(version)?, modinfo))
    }

    /// The bytes of the Go string whose header (data pointer, length) is at address `addr`,
    /// read with the blob's pointer size and byte order.
    fn go_string(&self, pointers: Fields<'_>, addr: u64) -> Result<&'a [u8], Error> {
        let word = u64::from(pointers.word);
        let header = pointers.over(self.bytes_at_address(addr, word.saturating_mul(2))?);
        let len = header.word(usize::from(pointers.word))?;
        if len == 0 {
            // The data pointer of an empty string may be nil.
            return Ok(&[]);
        }
        if len > MAX_STRING_LEN {
            return Err(Error::Malformed("string longer than 1 MiB"));
        }
        self.bytes_at_address(header.word(0)?, len)
    }
}

/// The tails of `region` starting with the magic at aligned offsets, at most
/// [`MAX_CANDIDATES`] of them.
fn magic_candidates(region: &[u8]) -> impl Iterator<Item = &[u8]> {
    (0..region.len())
        .step_by(BLOB_ALIGN)
        .filter_map(move |offset| region.get(offset..))
        .filter(|tail| tail.starts_with(MAGIC))
        .take(MAX_CANDIDATES)
}

/// Rejects versions no toolchain writes, so a stray magic decoding to garbage is not
/// mistaken for the real blob. Go itself treats an empty version as "not a Go binary".
fn validate_version(version: &[u8]) -> Result<&str, Error> {
    if version.is_empty() {
        return Err(Error::NotGo);
    }
    let version =
        std::str::from_utf8(version).map_err(|_| Error::Malformed("Go version is not UTF-8"))?;
    if version.chars().any(char::is_control) {
        return Err(Error::Malformed("Go version contains control characters"));
    }
    Ok(version)
}

/// Splits a uvarint-length-prefixed string off the front of `bytes`.
fn take_varint_string(bytes: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let (len, rest) = read_uvarint(bytes)?;
    if len > MAX_STRING_LEN {
        return Err(Error::Malformed("string longer than 1 MiB"));
    }
    let len = usize::try_from(len).map_err(|_| Error::Malformed("string length"))?;
    rest.split_at_checked(len).ok_or(Error::Truncated)
}

/// Decodes an unsigned LEB128 value (Go's `binary.Uvarint`) and returns it with the rest.
fn read_uvarint(bytes: &[u8]) -> Result<(u64, &[u8]), Error> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(MAX_VARINT_LEN) {
        if index == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(Error::Malformed("varint overflows 64 bits"));
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((value, bytes.get(index + 1..).unwrap_or_default()));
        }
    }
    Err(Error::Truncated)
}

/// Removes the sentinels `cmd/go` puts around modinfo. Like Go's `debug/buildinfo`, modinfo
/// counts as framed when it is long enough and its content ends with a newline; anything else
/// is not modinfo and is dropped.
fn unframe(modinfo: &[u8]) -> &[u8] {
    if modinfo.len() < MIN_FRAMED_LEN {
        return &[];
    }
    let body = modinfo
        .get(MODINFO_START.len()..modinfo.len() - MODINFO_END.len())
        .unwrap_or_default();
    if body.last() == Some(&b'\n') {
        body
    } else {
        &[]
    }
}

/// The `build\tKEY=VALUE` lines of modinfo. Lines that do not parse are skipped: the settings
/// are informative, and one odd line should not hide the others.
fn parse_settings(modinfo: &str) -> Vec<(String, String)> {
    modinfo
        .lines()
        .filter_map(|line| line.strip_prefix(SETTING_PREFIX))
        .filter_map(parse_setting)
        .collect()
}

/// Parses `KEY=VALUE`, where Go quotes (`strconv.Quote`) a key containing `=`, whitespace or
/// quotes and a value containing whitespace or quotes.
fn parse_setting(line: &str) -> Option<(String, String)> {
    let (key, raw_value) = if line.starts_with(['"', '`']) {
        let (key, rest) = unquote_prefix(line)?;
        (key, rest.strip_prefix('=')?)
    } else {
        let (key, value) = line.split_once('=')?;
        (key.to_owned(), value)
    };
    if key.is_empty() {
        return None;
    }
    let value = if raw_value.starts_with(['"', '`']) {
        let (value, rest) = unquote_prefix(raw_value)?;
        rest.is_empty().then_some(value)?
    } else {
        raw_value.to_owned()
    };
    Some((key, value))
}

/// Decodes the Go string literal at the start of `s` (interpreted `"..."` or raw `` `...` ``)
/// and returns it with the rest of `s`. Handles the escapes `strconv.Quote` produces.
fn unquote_prefix(s: &str) -> Option<(String, &str)> {
    if let Some(raw) = s.strip_prefix('`') {
        let (body, rest) = raw.split_once('`')?;
        return Some((body.to_owned(), rest));
    }
    let body = s.strip_prefix('"')?;
    let mut decoded = Vec::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                let rest = body.get(at.checked_add(1)?..)?;
                return Some((String::from_utf8_lossy(&decoded).into_owned(), rest));
            }
            '\\' => unescape(&mut chars, &mut decoded)?,
            '\n' => return None,
            c => push_char(&mut decoded, c),
        }
    }
    None
}

/// Decodes one escape sequence (after its backslash) onto `out`. `\x` and octal escapes are
/// bytes, which is how Go quotes invalid UTF-8.
fn unescape(chars: &mut CharIndices<'_>, out: &mut Vec<u8>) -> Option<()> {
    let (_, c) = chars.next()?;
    match c {
        'x' => out.push(u8::try_from(digits(chars, 2, 16)?).ok()?),
        'u' => push_char(out, char::from_u32(digits(chars, 4, 16)?)?),
        'U' => push_char(out, char::from_u32(digits(chars, 8, 16)?)?),
        '0'..='7' => {
            let high = c.to_digit(8)?.checked_mul(64)?;
            let value = high.checked_add(digits(chars, 2, 8)?)?;
            out.push(u8::try_from(value).ok()?);
        }
        _ => out.push(simple_escape(c)?),
    }
    Some(())
}

fn simple_escape(c: char) -> Option<u8> {
    Some(match c {
        'a' => 0x07,
        'b' => 0x08,
        'f' => 0x0c,
        'n' => b'\n',
        'r' => b'\r',
        't' => b'\t',
        'v' => 0x0b,
        '\\' => b'\\',
        '"' => b'"',
        '\'' => b'\'',
        _ => return None,
    })
}

/// Reads exactly `count` digits in `radix`.
fn digits(chars: &mut CharIndices<'_>, count: usize, radix: u32) -> Option<u32> {
    (0..count).try_fold(0u32, |value, _| {
        let digit = chars.next()?.1.to_digit(radix)?;
        value.checked_mul(radix)?.checked_add(digit)
    })
}

fn push_char(out: &mut Vec<u8>, c: char) {
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        env,
        path::PathBuf,
        process::Command,
        sync::atomic::{AtomicUsize, Ordering},
    };

    // ---- helpers: temporary directories and Go builds ----

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = env::temp_dir().join(format!(
                "memtrace-buildinfo-{}-{tag}-{n}",
                std::process::id()
            ));
            fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Whether `go` can run. Outside CI the real-binary tests skip without it; under CI
    /// (`CI` set, where `cargo xtask test` installs golang-go) they fail instead.
    fn go_available() -> bool {
        let available = Command::new("go")
            .arg("version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !available {
            assert!(
                env::var_os("CI").is_none(),
                "`go` is not on PATH and CI is set: refusing to skip (install golang-go)"
            );
            eprintln!("skipping: `go` is not on PATH (apt-get install golang-go)");
        }
        available
    }

    /// A `go` command that builds offline and reproducibly whatever the caller's environment.
    fn go_command() -> Command {
        let mut command = Command::new("go");
        command
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GO111MODULE", "on");
        if env::var_os("GOCACHE").is_none() && env::var_os("HOME").is_none() {
            command.env(
                "GOCACHE",
                env::temp_dir().join("memtrace-buildinfo-gocache"),
            );
        }
        command
    }

    /// Builds a hello-world module in `dir` with extra `go build` arguments.
    fn build_hello(dir: &TempDir, name: &str, args: &[&str]) -> PathBuf {
        fs::write(
            dir.0.join("go.mod"),
            "module example.com/hello\n\ngo 1.19\n",
        )
        .unwrap();
        fs::write(
            dir.0.join("main.go"),
            "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n",
        )
        .unwrap();
        let out = dir.0.join(name);
        let output = go_command()
            .current_dir(&dir.0)
            .args(["build", "-buildvcs=false", "-o"])
            .arg(&out)
            .args(args)
            .arg(".")
            .output()
            .expect("run go build");
        assert!(
            output.status.success(),
            "go build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    }

    /// What `go version FILE` says the file was built with, if it recognises it.
    fn go_version_of(path: &Path) -> Option<String> {
        let output = go_command().arg("version").arg(path).output().ok()?;
        if !output.status.success() {
            return None;
        }
        let stdout = String::from_utf8(output.stdout).ok()?;
        let (_, version) = stdout.trim_end().rsplit_once(": ")?;
        Some(version.to_owned())
    }

    /// Hides the section headers of a 64-bit little-endian ELF, as if never written.
    fn drop_section_headers(bytes: &mut [u8]) {
        bytes[0x28..0x30].fill(0); // e_shoff
        bytes[0x3c..0x3e].fill(0); // e_shnum
    }

    fn first_blob_offset(bytes: &[u8]) -> usize {
        (0..bytes.len())
            .step_by(BLOB_ALIGN)
            .find(|&at| bytes[at..].starts_with(MAGIC))
            .expect("binary has a blob")
    }

    // ---- helpers: synthetic ELF files ----

    const BASE: u64 = 0x40_0000;
    const PAYLOAD_OFFSET: usize = 0x100;

    fn put(buf: &mut [u8], at: usize, width: usize, value: u64, big: bool) {
        let field = &mut buf[at..at + width];
        field.copy_from_slice(&value.to_le_bytes()[..width]);
        if big {
            field.reverse();
        }
    }

    /// An executable with one RW `PT_LOAD` segment mapping the whole file at `BASE` and no
    /// section headers; `payload` sits at file offset `PAYLOAD_OFFSET`.
    fn synthetic_elf(is64: bool, big: bool, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; PAYLOAD_OFFSET];
        buf.extend_from_slice(payload);
        let total = buf.len() as u64;
        let w = if is64 { 8 } else { 4 };
        buf[..4].copy_from_slice(ELF_MAGIC);
        buf[4] = if is64 { 2 } else { 1 };
        buf[5] = if big { 2 } else { 1 };
        buf[6] = 1;
        put(&mut buf, 16, 2, 2, big); // ET_EXEC
        put(&mut buf, 18, 2, if big { 8 } else { 62 }, big);
        put(&mut buf, 20, 4, 1, big);
        let (ehsize, phsize, phoff_at, sizes_at) = if is64 {
            (64, 56, 0x20, 0x34)
        } else {
            (52, 32, 0x1c, 0x28)
        };
        put(&mut buf, 24, w, BASE, big); // e_entry
        put(&mut buf, phoff_at, w, ehsize as u64, big);
        put(&mut buf, sizes_at, 2, ehsize as u64, big); // e_ehsize
        put(&mut buf, sizes_at + 2, 2, phsize, big); // e_phentsize
        put(&mut buf, sizes_at + 4, 2, 1, big); // e_phnum
        let ph = ehsize;
        put(&mut buf, ph, 4, PT_LOAD, big);
        if is64 {
            put(&mut buf, ph + 4, 4, 6, big); // PF_R | PF_W
            put(&mut buf, ph + 16, 8, BASE, big);
            put(&mut buf, ph + 24, 8, BASE, big);
            put(&mut buf, ph + 32, 8, total, big);
            put(&mut buf, ph + 40, 8, total, big);
        } else {
            put(&mut buf, ph + 8, 4, BASE, big);
            put(&mut buf, ph + 12, 4, BASE, big);
            put(&mut buf, ph + 16, 4, total, big);
            put(&mut buf, ph + 20, 4, total, big);
            put(&mut buf, ph + 24, 4, 6, big);
        }
        buf
    }

    fn header(ptr_size: u8, flags: u8) -> Vec<u8> {
        let mut blob = MAGIC.to_vec();
        blob.extend([ptr_size, flags]);
        blob.resize(HEADER_LEN, 0);
        blob
    }

    /// A Go < 1.18 blob: pointers to string headers, then the headers and the string bytes.
    fn pointer_blob(word: usize, big: bool, version: &[u8], modinfo: &[u8]) -> Vec<u8> {
        let mut blob = header(word as u8, u8::from(big));
        let addr = |relative: usize| BASE + (PAYLOAD_OFFSET + relative) as u64;
        let (version_header, mod_header) = (HEADER_LEN, HEADER_LEN + 2 * word);
        let version_data = HEADER_LEN + 4 * word;
        let mod_data = version_data + version.len();
        blob.resize(version_data, 0);
        put(&mut blob, 16, word, addr(version_header), big);
        put(&mut blob, 16 + word, word, addr(mod_header), big);
        put(&mut blob, version_header, word, addr(version_data), big);
        put(
            &mut blob,
            version_header + word,
            word,
            version.len() as u64,
            big,
        );
        put(&mut blob, mod_header, word, addr(mod_data), big);
        put(
            &mut blob,
            mod_header + word,
            word,
            modinfo.len() as u64,
            big,
        );
        blob.extend_from_slice(version);
        blob.extend_from_slice(modinfo);
        blob
    }

    fn uvarint(mut value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
        out
    }

    /// A Go >= 1.18 blob: the header then length-prefixed version and modinfo.
    fn inline_blob(ptr_size: u8, version: &[u8], modinfo: &[u8]) -> Vec<u8> {
        let mut blob = header(ptr_size, FLAG_INLINE_STRINGS);
        for field in [version, modinfo] {
            blob.extend(uvarint(field.len() as u64));
            blob.extend_from_slice(field);
        }
        blob
    }

    fn framed(content: &str) -> Vec<u8> {
        [&MODINFO_START[..], content.as_bytes(), &MODINFO_END[..]].concat()
    }

    const OLD_MODINFO: &str = "path\texample.com/old\nmod\texample.com/old\t(devel)\t\n";

    /// Deterministic xorshift64 generator for the pseudo-fuzz tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound.max(1) as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            match self.below(4) {
                0 => 0,
                1 => 0xff,
                _ => self.next() as u8,
            }
        }
    }

    // ---- real Go binaries ----

    #[test]
    fn real_binary_matches_go_version() {
        if !go_available() {
            return;
        }
        let dir = TempDir::new("plain");
        let path = build_hello(&dir, "hello", &[]);
        let info = read(&path).unwrap().unwrap();
        assert_eq!(Some(info.go_version.clone()), go_version_of(&path));
        assert_eq!(info.setting("GOOS"), Some("linux"));
        assert_eq!(info.setting("CGO_ENABLED"), Some("0"));
        assert_eq!(info.setting("-compiler"), Some("gc"));
        assert_eq!(info.setting("-ldflags"), None);
        let module_info = info.module_info.as_deref().unwrap();
        assert!(
            module_info.starts_with("path\texample.com/hello\n"),
            "{module_info:?}"
        );
        let (major, minor) = version_number(&info.go_version).unwrap();
        if (major, minor) < (1, 21) {
            assert_eq!(info.default_godebug(), None);
        }
    }

    #[test]
    fn stripped_binary_records_ldflags() {
        if !go_available() {
            return;
        }
        let dir = TempDir::new("stripped");
        let path = build_hello(&dir, "hello", &["-ldflags=-s -w"]);
        let info = parse(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(Some(info.go_version.clone()), go_version_of(&path));
        assert!(info.setting("-ldflags").unwrap().contains("-s -w"));
        assert_eq!(info.setting("GOOS"), Some("linux"));
    }

    #[test]
    fn blob_found_without_section_headers() {
        if !go_available() {
            return;
        }
        let dir = TempDir::new("sectionless");
        for (name, args) in [("plain", &[][..]), ("stripped", &["-ldflags=-s -w"][..])] {
            let bytes = fs::read(build_hello(&dir, name, args)).unwrap();
            let expected = parse(&bytes).unwrap();
            let mut sectionless = bytes.clone();
            drop_section_headers(&mut sectionless);
            let elf = Elf::parse(&sectionless).unwrap();
            assert!(elf.section_bytes(SECTION_NAME).is_none());
            assert_eq!(parse(&sectionless), Ok(expected));
        }
    }

    /// The toolchain's own binaries: `go` links `debug/buildinfo`, so it also carries a copy
    /// of the magic outside the blob.
    #[test]
    fn toolchain_binaries_match_go_version() {
        if !go_available() {
            return;
        }
        let output = go_command().args(["env", "GOROOT"]).output().unwrap();
        let goroot = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
        let mut dirs = vec![goroot.join("bin")];
        if let Ok(entries) = fs::read_dir(goroot.join("pkg/tool")) {
            dirs.extend(entries.flatten().map(|entry| entry.path()));
        }
        let mut checked = Vec::new();
        for file in dirs.iter().flat_map(fs::read_dir).flatten().flatten() {
            let path = file.path();
            let Some(expected) = go_version_of(&path) else {
                continue;
            };
            let mut bytes = fs::read(&path).unwrap();
            let info = parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(info.go_version, expected, "{}", path.display());
            drop_section_headers(&mut bytes);
            assert_eq!(parse(&bytes).map(|i| i.go_version), Ok(expected));
            checked.push(file.file_name());
        }
        for name in ["go", "gofmt", "compile", "link"] {
            assert!(
                checked.iter().any(|checked| checked == name),
                "{name} not found under {}: checked {checked:?}",
                goroot.display()
            );
        }
    }

    #[test]
    fn mutated_real_binary_never_panics() {
        if !go_available() {
            return;
        }
        let dir = TempDir::new("fuzz");
        let original = fs::read(build_hello(&dir, "hello", &[])).unwrap();
        let blob = first_blob_offset(&original);
        let shoff = u64::from_le_bytes(original[0x28..0x30].try_into().unwrap()) as usize;
        let mut bytes = original.clone();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut still_parsed = 0;
        for _ in 0..2000 {
            let mut undo = Vec::new();
            for _ in 0..1 + rng.below(8) {
                let at = match rng.below(10) {
                    0..=5 => blob - 16 + rng.below(HEADER_LEN + 512),
                    6 | 7 => rng.below(0x40 + 0x38 * 8),
                    _ => shoff + rng.below(original.len() - shoff),
                };
                undo.push((at, bytes[at]));
                bytes[at] = rng.byte();
            }
            let len = match rng.below(10) {
                0 => rng.below(bytes.len()),
                1 => blob + rng.below(HEADER_LEN + 512),
                _ => bytes.len(),
            };
            if parse(&bytes[..len]).is_ok() {
                still_parsed += 1;
            }
            for (at, byte) in undo.into_iter().rev() {
                bytes[at] = byte;
            }
        }
        assert_eq!(bytes, original);
        assert!(still_parsed > 0);
    }

    // ---- synthetic binaries ----

    #[test]
    fn pointer_format_64_bit_little_endian() {
        let blob = pointer_blob(8, false, b"go1.14.15", &framed(OLD_MODINFO));
        let info = parse(&synthetic_elf(true, false, &blob)).unwrap();
        assert_eq!(info.go_version, "go1.14.15");
        assert_eq!(info.module_info.as_deref(), Some(OLD_MODINFO));
        assert!(info.settings.is_empty());
        assert_eq!(version_number(&info.go_version), Some((1, 14)));
    }

    #[test]
    fn pointer_format_32_bit_big_endian() {
        let blob = pointer_blob(4, true, b"go1.12.17", &framed(OLD_MODINFO));
        let info = parse(&synthetic_elf(false, true, &blob)).unwrap();
        assert_eq!(info.go_version, "go1.12.17");
        assert_eq!(info.module_info.as_deref(), Some(OLD_MODINFO));
    }

    #[test]
    fn pointer_format_without_modinfo() {
        let blob = pointer_blob(8, false, b"go1.11.13", b"");
        let info = parse(&synthetic_elf(true, false, &blob)).unwrap();
        assert_eq!(info.go_version, "go1.11.13");
        assert_eq!(info.module_info, None);
    }

    #[test]
    fn inline_format_settings_and_default_godebug() {
        let modinfo = "path\texample.com/new\n\
                       build\t-ldflags=\"-s -w -X \\\"main.v=1\\\"\"\n\
                       build\t\"odd key=x\"=`raw \"value\"`\n\
                       build\tDefaultGODEBUG=panicnil=1,httpmuxgo121=1\n\
                       build\tGOOS=linux\n";
        let blob = inline_blob(4, b"go1.22.0 X:nocoverageredesign", &framed(modinfo));
        let info = parse(&synthetic_elf(false, false, &blob)).unwrap();
        assert_eq!(info.go_version, "go1.22.0 X:nocoverageredesign");
        assert_eq!(info.module_info.as_deref(), Some(modinfo));
        assert_eq!(info.setting("-ldflags"), Some("-s -w -X \"main.v=1\""));
        assert_eq!(info.setting("odd key=x"), Some("raw \"value\""));
        assert_eq!(info.default_godebug(), Some("panicnil=1,httpmuxgo121=1"));
        assert_eq!(info.setting("GOOS"), Some("linux"));
        assert_eq!(info.settings.len(), 4);
    }

    #[test]
    fn unframed_modinfo_is_dropped_as_go_does() {
        for modinfo in [&b"build\tGOOS=linux"[..], &[b'x'; 40][..]] {
            let blob = inline_blob(8, b"go1.20", modinfo);
            let info = parse(&synthetic_elf(true, false, &blob)).unwrap();
            assert_eq!(info.go_version, "go1.20");
            assert_eq!(info.module_info, None);
            assert!(info.settings.is_empty());
        }
    }

    #[test]
    fn setting_lines() {
        let parsed = parse_settings(
            "path\tx\n\
             build\tA=1\n\
             build\tEMPTY=\n\
             build\t=novalue\n\
             build\tnoequals\n\
             build\t\"unterminated=1\n\
             build\tQ=\"tab\\there \\x41\\u00e9\\101\"\n\
             build\tBAD=\"trailing\" junk\n\
             build\tKEY=a=b\n",
        );
        let expected = [
            ("A", "1"),
            ("EMPTY", ""),
            ("Q", "tab\there AéA"),
            ("KEY", "a=b"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(parsed, expected);
    }

    // ---- malformed input ----

    #[test]
    fn not_elf() {
        assert_eq!(parse(b""), Err(Error::NotElf));
        assert_eq!(parse(b"MZ\x90\x00"), Err(Error::NotElf));
        let mut rng = XorShift(42);
        let random: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        assert_eq!(parse(&random), Err(Error::NotElf));
    }

    #[test]
    fn damaged_elf_headers() {
        assert_eq!(parse(b"\x7fELF"), Err(Error::Truncated));
        assert_eq!(
            parse(b"\x7fELF\x03\x01"),
            Err(Error::Unsupported("unknown ELF class"))
        );
        let blob = inline_blob(8, b"go1.20", b"");
        let elf = synthetic_elf(true, false, &blob);
        assert_eq!(parse(&elf[..40]), Err(Error::Truncated));
        let mut many = elf.clone();
        put(&mut many, 0x38, 2, 0xffff, false); // e_phnum
        assert_eq!(
            parse(&many),
            Err(Error::Unsupported("too many program headers"))
        );
        let mut outside = elf.clone();
        put(&mut outside, 0x20, 8, u64::MAX - 8, false); // e_phoff
        assert_eq!(parse(&outside), Err(Error::Truncated));
        let mut rng = XorShift(7);
        let mut random: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        random[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(parse(&random).is_err());
    }

    #[test]
    fn elf_without_blob_is_not_go() {
        let elf = synthetic_elf(true, false, &[0u8; 64]);
        assert_eq!(parse(&elf), Err(Error::NotGo));
        let mut wrong_magic = inline_blob(8, b"go1.20", b"");
        wrong_magic[3] = b'g';
        assert_eq!(
            parse(&synthetic_elf(true, false, &wrong_magic)),
            Err(Error::NotGo)
        );
        let empty_version = inline_blob(8, b"", b"");
        assert_eq!(
            parse(&synthetic_elf(true, false, &empty_version)),
            Err(Error::NotGo)
        );
        // A C program, if the system has one where expected.
        let c_program = Path::new("/bin/true");
        if c_program.exists() {
            assert_eq!(read(c_program).unwrap(), Err(Error::NotGo));
        }
    }

    #[test]
    fn truncated_blobs() {
        let blob = inline_blob(8, b"go1.20", &framed(OLD_MODINFO));
        let elf = synthetic_elf(true, false, &blob);
        // Magic at the very end of the file, header cut short.
        assert_eq!(
            parse(&elf[..PAYLOAD_OFFSET + MAGIC.len()]),
            Err(Error::Truncated)
        );
        // Cut inside the version, inside modinfo, inside a varint.
        assert_eq!(
            parse(&elf[..PAYLOAD_OFFSET + HEADER_LEN + 3]),
            Err(Error::Truncated)
        );
        assert_eq!(parse(&elf[..elf.len() - 1]), Err(Error::Truncated));
        let long = inline_blob(8, &[b'g'; 300], b"");
        let elf = synthetic_elf(true, false, &long);
        assert_eq!(
            parse(&elf[..PAYLOAD_OFFSET + HEADER_LEN + 1]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn huge_and_overlong_varints() {
        let mut blob = header(8, FLAG_INLINE_STRINGS);
        blob.extend(uvarint(u64::MAX));
        blob.extend([0u8; 64]);
        let too_long = Err(Error::Malformed("string longer than 1 MiB"));
        assert_eq!(parse(&synthetic_elf(true, false, &blob)), too_long);
        let mut blob = header(8, FLAG_INLINE_STRINGS);
        blob.extend([0xff; 9]);
        blob.push(0x02);
        let overflow = Err(Error::Malformed("varint overflows 64 bits"));
        assert_eq!(parse(&synthetic_elf(true, false, &blob)), overflow);
    }

    #[test]
    fn bad_pointers() {
        let outside = Err(Error::Malformed("address outside the loadable segments"));
        let mut blob = pointer_blob(8, false, b"go1.14.15", b"");
        put(&mut blob, 16, 8, 0xdead_0000, false);
        assert_eq!(parse(&synthetic_elf(true, false, &blob)), outside);
        // String data pointer outside, and a length running past the segment.
        let mut blob = pointer_blob(8, false, b"go1.14.15", b"");
        put(&mut blob, HEADER_LEN, 8, 1, false);
        assert_eq!(parse(&synthetic_elf(true, false, &blob)), outside);
        let mut blob = pointer_blob(8, false, b"go1.14.15", b"");
        put(&mut blob, HEADER_LEN + 8, 8, 0x1000, false);
        assert_eq!(
            parse(&synthetic_elf(true, false, &blob)),
            Err(Error::Truncated)
        );
        let mut blob = pointer_blob(8, false, b"go1.14.15", b"");
        put(&mut blob, HEADER_LEN + 8, 8, u64::MAX, false);
        let too_long = Err(Error::Malformed("string longer than 1 MiB"));
        assert_eq!(parse(&synthetic_elf(true, false, &blob)), too_long);
    }

    #[test]
    fn unsupported_pointer_size() {
        let unsupported = Err(Error::Unsupported("pointer size is neither 4 nor 8"));
        let blob = inline_blob(3, b"go1.20", b"");
        assert_eq!(parse(&synthetic_elf(true, false, &blob)), unsupported);
        let mut blob = pointer_blob(8, false, b"go1.14.15", b"");
        blob[14] = 3;
        assert_eq!(parse(&synthetic_elf(true, false, &blob)), unsupported);
    }

    #[test]
    fn mutated_synthetic_binaries_never_panic() {
        let blobs = [
            (
                true,
                false,
                pointer_blob(8, false, b"go1.14.15", &framed(OLD_MODINFO)),
            ),
            (
                false,
                true,
                pointer_blob(4, true, b"go1.12.17", &framed(OLD_MODINFO)),
            ),
            (
                true,
                false,
                inline_blob(8, b"go1.21.0", &framed(OLD_MODINFO)),
            ),
        ];
        let mut rng = XorShift(0xdead_beef);
        for (is64, big, blob) in blobs {
            let original = synthetic_elf(is64, big, &blob);
            for _ in 0..2000 {
                let mut bytes = original.clone();
                for _ in 0..1 + rng.below(6) {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.byte();
                }
                let len = if rng.below(8) == 0 {
                    rng.below(bytes.len())
                } else {
                    bytes.len()
                };
                let _ = parse(&bytes[..len]);
            }
        }
    }

    // ---- the rest of the API ----

    #[test]
    fn version_numbers() {
        assert_eq!(version_number("go1.14.15"), Some((1, 14)));
        assert_eq!(version_number("go1.21rc2"), Some((1, 21)));
        assert_eq!(version_number("go1.22.0 X:foo"), Some((1, 22)));
        assert_eq!(
            version_number("devel go1.23-abc123 Tue Jan 2 2024"),
            Some((1, 23))
        );
        assert_eq!(version_number("go1"), Some((1, 0)));
        assert_eq!(version_number("garbage"), None);
        assert_eq!(version_number("devel +b2f1b07 Mon Jan 1"), None);
        assert_eq!(version_number("go99999999999.1"), None);
        assert_eq!(version_number(""), None);
    }

    #[test]
    fn errors_display_and_io() {
        assert_eq!(Error::NotGo.to_string(), "no Go build information found");
        assert_eq!(Error::Malformed("x").to_string(), "malformed Go binary: x");
        let missing = Path::new("/nonexistent/memtrace-buildinfo-test");
        assert!(read(missing).is_err());
    }
}
