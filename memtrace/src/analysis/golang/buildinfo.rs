//! The Go toolchain version and build settings embedded in a Go binary.
//!
//! How the Go runtime releases memory (`MADV_FREE` or `MADV_DONTNEED`, and whether it does so
//! eagerly) depends on the Go version and on `GODEBUG` defaults compiled into the binary, so
//! memtrace reads them from the `.go.buildinfo` blob that Go's linker writes into every binary.
//! This mirrors Go's `debug/buildinfo` (`src/debug/buildinfo/buildinfo.go`) for ELF files only;
//! the `object` crate reads the ELF structure, this module decodes the blob.
//!
//! The input is an arbitrary `/proc/PID/exe`, so everything read from the file is distrusted:
//! offsets are added with checked arithmetic, slices are taken with `get`, string lengths are
//! capped before anything is allocated, and table walks are bounded. Bad input yields an
//! [`Error`], never a panic.

use std::{mem, str::CharIndices};

use object::{
    Endianness, ReadRef, elf,
    read::elf::{FileHeader, ProgramHeader, SectionHeader},
};

use super::binary::Binary;

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
/// Bounds walks over program and section headers; real executables have a few dozen. `object`
/// keeps the tables inside the file, but every address lookup walks the segments again.
const MAX_TABLE_ENTRIES: usize = 4096;
/// Bounds how many magic matches one region may offer, so a file full of magics stays cheap.
const MAX_CANDIDATES: usize = 64;
/// Without section headers, the blob is searched for this far into the data segment: Go's
/// linker puts it first there (Go's own `debug/buildinfo` of Go 1.19 reads only 64 KiB), and
/// memtrace never reads a whole segment of a large binary.
const MAX_DATA_SCAN: u64 = 1 << 20;
/// A `.go.buildinfo` section holds the header and modinfo (tens of KiB); past this it is not one.
const MAX_SECTION_LEN: u64 = 4 << 20;

/// Sentinels `cmd/go` wraps modinfo in (`modload.infoStart` and `infoEnd`).
const MODINFO_START: [u8; 16] = [
    0x30, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18, 0xe6,
];
const MODINFO_END: [u8; 16] = [
    0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0x00, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8, 0xf2,
];
/// Both sentinels plus at least one byte of content.
const MIN_FRAMED_LEN: usize = 33;

/// Prefix of the modinfo line naming the main package.
const PATH_PREFIX: &str = "path\t";
/// Prefix of the modinfo lines holding build settings.
const SETTING_PREFIX: &str = "build\t";
/// The setting Go >= 1.21 records the compiled-in `GODEBUG` defaults under.
const DEFAULT_GODEBUG: &str = "DefaultGODEBUG";

/// The section name as stored in the string table, with its terminator.
const SECTION_NAME: &[u8] = b".go.buildinfo\0";
/// Indexes into `e_ident`, which `object` only offers as a whole `Ident`.
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const EI_VERSION: usize = 6;

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

    /// The main package's import path (modinfo's `path` line), e.g. `example.com/svc/cmd/svc`
    /// or `command-line-arguments` for `go build main.go`.
    pub fn main_path(&self) -> Option<&str> {
        self.module_info
            .as_deref()?
            .lines()
            .find_map(|line| line.strip_prefix(PATH_PREFIX))
    }

    /// The DefaultGODEBUG build setting, if any.
    ///
    /// Go >= 1.21 derives it from the main module's `go` line and `//go:debug` directives and
    /// links it in as the runtime's compiled-in default, unless the user's
    /// `-X runtime.godebugDefault=…` replaces it (`godebug::Compiled` tells which).
    pub fn default_godebug(&self) -> Option<&str> {
        self.setting(DEFAULT_GODEBUG)
    }
}

/// Why no build information could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input does not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// An ELF file without a Go build-info blob.
    #[error("no Go build information found")]
    NotGo,
    /// A header, table or string runs past the end of the input or of its segment.
    #[error("Go build information is truncated")]
    Truncated,
    /// A value that no real binary contains.
    #[error("malformed Go binary: {0}")]
    Malformed(&'static str),
    /// A valid encoding this reader does not handle.
    #[error("unsupported Go binary: {0}")]
    Unsupported(&'static str),
}

/// Reads the build information from the bytes of an ELF Go binary.
#[cfg(test)]
pub fn parse(bytes: &[u8]) -> Result<BuildInfo, Error> {
    parse_from(bytes)
}

/// Reads the build information from an ELF Go binary through a `ReadRef` that reads only the
/// headers and ranges asked for.
fn parse_from<'a, R: ReadRef<'a>>(data: R) -> Result<BuildInfo, Error> {
    let (go_version, modinfo) = Image::parse(data)?.find_build_info()?;
    let modinfo = String::from_utf8_lossy(unframe(modinfo)).into_owned();
    let settings = parse_settings(&modinfo);
    Ok(BuildInfo {
        go_version: go_version.to_owned(),
        module_info: (!modinfo.is_empty()).then_some(modinfo),
        settings,
    })
}

/// Reads the build information of an opened binary: its headers, the `.go.buildinfo` section
/// (or the start of its data segment) and what the blob points to, nothing else.
pub fn read(binary: &Binary) -> Result<BuildInfo, Error> {
    parse_from(binary.cache())
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

/// How a pointer-format blob stores addresses. The blob has its own word size and byte order,
/// which a cross-compiled or odd binary need not share with its ELF headers.
#[derive(Debug, Clone, Copy)]
struct Pointers {
    size: u8,
    endian: Endianness,
}

impl Pointers {
    /// The pointer-sized unsigned value at `offset` in `bytes`, bounds-checked.
    fn read(self, bytes: &[u8], offset: usize) -> Result<u64, Error> {
        let end = offset
            .checked_add(usize::from(self.size))
            .ok_or(Error::Truncated)?;
        let field = bytes.get(offset..end).ok_or(Error::Truncated)?;
        let be = |acc: u64, &byte: &u8| (acc << 8) | u64::from(byte);
        Ok(match self.endian {
            Endianness::Little => field.iter().rev().fold(0, be),
            Endianness::Big => field.iter().fold(0, be),
        })
    }
}

/// `len` bytes of `data` at `offset`, or `Truncated` if they are not all there.
fn slice_at<'a, R: ReadRef<'a>>(data: R, offset: u64, len: u64) -> Result<&'a [u8], Error> {
    data.read_bytes_at(offset, len)
        .map_err(|()| Error::Truncated)
}

/// A `PT_LOAD` program header: what maps virtual addresses to file offsets.
///
/// Kept as plain numbers, not as `object`'s headers, so the blob decoding below needs no ELF
/// class or byte order, and so a truncated file still maps the addresses it does hold
/// (`object`'s `data_range` wants the whole segment in the file).
#[derive(Debug, Clone, Copy)]
struct Segment {
    flags: u32,
    offset: u64,
    vaddr: u64,
    file_size: u64,
}

impl Segment {
    fn new<P: ProgramHeader>(header: &P, endian: P::Endian) -> Self {
        Self {
            flags: header.p_flags(endian),
            offset: header.p_offset(endian).into(),
            vaddr: header.p_vaddr(endian).into(),
            file_size: header.p_filesz(endian).into(),
        }
    }

    fn contains(&self, addr: u64) -> bool {
        addr.checked_sub(self.vaddr)
            .is_some_and(|relative| relative < self.file_size)
    }
}

/// What the blob search needs from an ELF file: its segments and the build-info section.
struct Image<'a, R: ReadRef<'a>> {
    data: R,
    segments: Vec<Segment>,
    /// The file bytes of `.go.buildinfo`, if section headers name it.
    section: Option<&'a [u8]>,
}

impl<'a, R: ReadRef<'a>> Image<'a, R> {
    fn parse(data: R) -> Result<Self, Error> {
        if is_64_bit(data)? {
            Self::parse_as::<elf::FileHeader64<Endianness>>(data)
        } else {
            Self::parse_as::<elf::FileHeader32<Endianness>>(data)
        }
    }

    fn parse_as<Elf: FileHeader<Endian = Endianness>>(data: R) -> Result<Self, Error> {
        // `is_64_bit` vetted the ident, so `object` can only reject a file too short for it.
        let header = Elf::parse(data).map_err(|_| Error::Truncated)?;
        let endian = header
            .endian()
            .map_err(|_| Error::Unsupported("unknown ELF byte order"))?;
        Ok(Self {
            data,
            segments: load_segments(header, endian, data)?,
            section: section_bytes(header, endian, data),
        })
    }

    /// The file bytes of the first writable, non-executable `PT_LOAD` segment, where Go's
    /// linker puts the blob first; like Go's `DataStart`. Clipped to the file and to
    /// [`MAX_DATA_SCAN`].
    fn data_segment_bytes(&self) -> Option<&'a [u8]> {
        let segment = self
            .segments
            .iter()
            .find(|segment| segment.flags & (elf::PF_X | elf::PF_W) == elf::PF_W)?;
        let in_file = self.data.len().ok()?.checked_sub(segment.offset)?;
        let len = segment.file_size.min(in_file).min(MAX_DATA_SCAN);
        self.data.read_bytes_at(segment.offset, len).ok()
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
        let regions = [self.section, self.data_segment_bytes()];
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
                Endianness::Big
            } else {
                Endianness::Little
            };
            let pointers = Pointers {
                size: ptr_size,
                endian,
            };
            let version = self.go_string(pointers, pointers.read(header, 16)?)?;
            let modinfo_at = 16 + usize::from(ptr_size);
            let modinfo = self.go_string(pointers, pointers.read(header, modinfo_at)?)?;
            (version, modinfo)
        };
        Ok((validate_version(version)?, modinfo))
    }

    /// The bytes of the Go string whose header (data pointer, length) is at address `addr`.
    /// The header and the data are looked up separately, so they may lie in different segments.
    fn go_string(&self, pointers: Pointers, addr: u64) -> Result<&'a [u8], Error> {
        let header = self.bytes_at_address(addr, 2 * u64::from(pointers.size))?;
        let len = pointers.read(header, usize::from(pointers.size))?;
        if len == 0 {
            // The data pointer of an empty string may be nil.
            return Ok(&[]);
        }
        if len > MAX_STRING_LEN {
            return Err(Error::Malformed("string longer than 1 MiB"));
        }
        self.bytes_at_address(pointers.read(header, 0)?, len)
    }
}

/// Checks `e_ident` and says whether the file is ELF64. Done here rather than left to
/// `object`, whose one "unsupported ELF header" error would not tell these cases apart.
fn is_64_bit<'a, R: ReadRef<'a>>(data: R) -> Result<bool, Error> {
    let len = data
        .len()
        .map_err(|()| Error::NotElf)?
        .min(EI_VERSION as u64 + 1);
    let data = data.read_bytes_at(0, len).map_err(|()| Error::NotElf)?;
    if !data.starts_with(&elf::ELFMAG) {
        return Err(Error::NotElf);
    }
    let ident = |index: usize| data.get(index).copied().ok_or(Error::Truncated);
    let is_64_bit = match ident(EI_CLASS)? {
        elf::ELFCLASS32 => false,
        elf::ELFCLASS64 => true,
        _ => return Err(Error::Unsupported("unknown ELF class")),
    };
    if !matches!(ident(EI_DATA)?, elf::ELFDATA2LSB | elf::ELFDATA2MSB) {
        return Err(Error::Unsupported("unknown ELF byte order"));
    }
    if ident(EI_VERSION)? != elf::EV_CURRENT {
        return Err(Error::Unsupported("unknown ELF version"));
    }
    Ok(is_64_bit)
}

/// The `PT_LOAD` segments. Unlike section headers these are required to run the binary, so
/// a damaged table is an error rather than something to work around.
fn load_segments<'a, Elf: FileHeader, R: ReadRef<'a>>(
    header: &Elf,
    endian: Elf::Endian,
    data: R,
) -> Result<Vec<Segment>, Error> {
    // Fails only for `PN_XNUM` when section 0, which then holds the real count, is unreadable.
    let count = header
        .phnum(endian, data)
        .map_err(|_| Error::Malformed("extended program header count"))?;
    if count > MAX_TABLE_ENTRIES {
        return Err(Error::Unsupported("too many program headers"));
    }
    let entry_size = usize::from(header.e_phentsize(endian));
    if count > 0 && entry_size != mem::size_of::<Elf::ProgramHeader>() {
        return Err(Error::Malformed("wrong program header entry size"));
    }
    // With count and entry size vetted, what is left to fail is the table's place in the file.
    let headers = header
        .program_headers(endian, data)
        .map_err(|_| Error::Truncated)?;
    Ok(headers
        .iter()
        .filter(|header| header.p_type(endian) == elf::PT_LOAD)
        .map(|header| Segment::new(header, endian))
        .collect())
}

/// The file bytes of the `.go.buildinfo` section. Section headers are optional and often
/// mangled by strippers, so any problem here just means "not found".
fn section_bytes<'a, Elf: FileHeader, R: ReadRef<'a>>(
    header: &Elf,
    endian: Elf::Endian,
    data: R,
) -> Option<&'a [u8]> {
    let sections = header.section_headers(endian, data).ok()?;
    if sections.len() > MAX_TABLE_ENTRIES {
        return None;
    }
    let names_index = header.section_strings_index(endian, data).ok()?;
    let names = sections.get(names_index.0)?;
    // Either table that large is not a real one, and is not read.
    let small = |section: &Elf::SectionHeader| {
        section
            .file_range(endian)
            .is_some_and(|(_, size)| size <= MAX_SECTION_LEN)
    };
    if !small(names) {
        return None;
    }
    let names = names.data(endian, data).ok()?;
    // A bounded prefix compare rather than `object`'s `StringTable::get`, which scans for each
    // name's terminator: a hostile table without NULs would make that quadratic.
    sections.iter().find_map(|section| {
        let name = names.get(usize::try_from(section.sh_name(endian)).ok()?..)?;
        if !name.starts_with(SECTION_NAME) || !small(section) {
            return None;
        }
        section.data(endian, data).ok()
    })
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
        env, fs,
        path::{Path, PathBuf},
        process::Command,
        sync::atomic::{AtomicUsize, Ordering},
    };

    // ---- helpers: temporary directories and Go builds ----

    /// Opens a binary and reads its build information, as memtrace reads /proc/PID/exe.
    fn read_path(path: &Path) -> Result<BuildInfo, Error> {
        read(&Binary::open(path).expect("open the binary"))
    }

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

    /// Where the fields that differ between ELF32 and ELF64 sit.
    struct Layout {
        word: usize,
        e_phoff: usize,
        e_shoff: usize,
        /// `e_ehsize`, followed by the 16-bit table sizes, counts and `e_shstrndx`.
        e_ehsize: usize,
        header_size: usize,
        phdr_size: usize,
        shdr_size: usize,
        /// `p_flags`, `p_offset`, `p_vaddr`, `p_filesz` within a program header.
        phdr_fields: [usize; 4],
        /// `sh_offset`, `sh_size`, `sh_link`, `sh_info` within a section header.
        shdr_fields: [usize; 4],
    }

    const ELF64: Layout = Layout {
        word: 8,
        e_phoff: 0x20,
        e_shoff: 0x28,
        e_ehsize: 0x34,
        header_size: 64,
        phdr_size: 56,
        shdr_size: 64,
        phdr_fields: [4, 8, 16, 32],
        shdr_fields: [24, 32, 40, 44],
    };

    const ELF32: Layout = Layout {
        word: 4,
        e_phoff: 0x1c,
        e_shoff: 0x20,
        e_ehsize: 0x28,
        header_size: 52,
        phdr_size: 32,
        shdr_size: 40,
        phdr_fields: [24, 4, 8, 16],
        shdr_fields: [16, 20, 24, 28],
    };

    fn layout(is64: bool) -> &'static Layout {
        if is64 { &ELF64 } else { &ELF32 }
    }

    /// A `PT_LOAD` program header for [`elf_with_segments`].
    #[derive(Clone, Copy)]
    struct Load {
        flags: u32,
        offset: u64,
        vaddr: u64,
        size: u64,
    }

    /// An executable with `loads` for program headers and no section headers; `payload` sits
    /// at file offset `PAYLOAD_OFFSET`.
    fn elf_with_segments(is64: bool, big: bool, payload: &[u8], loads: &[Load]) -> Vec<u8> {
        let l = layout(is64);
        let mut buf = vec![0u8; PAYLOAD_OFFSET];
        buf.extend_from_slice(payload);
        buf[..4].copy_from_slice(&elf::ELFMAG);
        buf[4] = if is64 {
            elf::ELFCLASS64
        } else {
            elf::ELFCLASS32
        };
        buf[5] = if big {
            elf::ELFDATA2MSB
        } else {
            elf::ELFDATA2LSB
        };
        buf[6] = elf::EV_CURRENT;
        put(&mut buf, 16, 2, elf::ET_EXEC.into(), big);
        put(&mut buf, 18, 2, if big { 8 } else { 62 }, big); // MIPS, x86-64
        put(&mut buf, 20, 4, 1, big);
        put(&mut buf, 24, l.word, BASE, big); // e_entry
        put(&mut buf, l.e_phoff, l.word, l.header_size as u64, big);
        put(&mut buf, l.e_ehsize, 2, l.header_size as u64, big);
        put(&mut buf, l.e_ehsize + 2, 2, l.phdr_size as u64, big);
        put(&mut buf, l.e_ehsize + 4, 2, loads.len() as u64, big);
        for (index, load) in loads.iter().enumerate() {
            let ph = l.header_size + index * l.phdr_size;
            assert!(ph + l.phdr_size <= PAYLOAD_OFFSET, "too many segments");
            let [flags, offset, vaddr, size] = l.phdr_fields.map(|field| ph + field);
            put(&mut buf, ph, 4, elf::PT_LOAD.into(), big);
            put(&mut buf, flags, 4, load.flags.into(), big);
            put(&mut buf, offset, l.word, load.offset, big);
            put(&mut buf, vaddr, l.word, load.vaddr, big);
            put(&mut buf, size, l.word, load.size, big); // p_filesz
            put(&mut buf, size + l.word, l.word, load.size, big); // p_memsz
        }
        buf
    }

    /// An executable with one RW `PT_LOAD` segment mapping the whole file at `BASE` and no
    /// section headers; `payload` sits at file offset `PAYLOAD_OFFSET`.
    fn synthetic_elf(is64: bool, big: bool, payload: &[u8]) -> Vec<u8> {
        let whole = Load {
            flags: elf::PF_R | elf::PF_W,
            offset: 0,
            vaddr: BASE,
            size: (PAYLOAD_OFFSET + payload.len()) as u64,
        };
        elf_with_segments(is64, big, payload, &[whole])
    }

    /// Appends section headers for `sections` (name, file offset, size), a null section 0 and
    /// `.shstrtab` last. With `extended`, `e_shstrndx` is `SHN_XINDEX` and section 0 holds the
    /// index, as in files with too many sections for 16 bits.
    fn add_sections(
        elf: &mut Vec<u8>,
        is64: bool,
        big: bool,
        sections: &[(&str, u64, u64)],
        extended: bool,
    ) {
        let l = layout(is64);
        let mut names = vec![0u8];
        let mut entries = vec![(0, 0, 0, 0)]; // sh_name, sh_type, sh_offset, sh_size
        for &(name, offset, size) in sections {
            entries.push((names.len(), elf::SHT_PROGBITS, offset, size));
            names.extend(name.as_bytes().iter().chain([&0]));
        }
        let strings_index = entries.len() as u64;
        entries.push((names.len(), elf::SHT_STRTAB, elf.len() as u64, 0));
        names.extend(b".shstrtab\0");
        entries.last_mut().unwrap().3 = names.len() as u64;
        elf.extend(&names);
        elf.resize(elf.len().next_multiple_of(8), 0);
        let shoff = elf.len();
        elf.resize(shoff + entries.len() * l.shdr_size, 0);
        for (index, &(name, kind, offset, size)) in entries.iter().enumerate() {
            let sh = shoff + index * l.shdr_size;
            let [offset_at, size_at, link_at, _] = l.shdr_fields.map(|field| sh + field);
            put(elf, sh, 4, name as u64, big);
            put(elf, sh + 4, 4, kind.into(), big);
            put(elf, offset_at, l.word, offset, big);
            put(elf, size_at, l.word, size, big);
            if index == 0 && extended {
                put(elf, link_at, 4, strings_index, big);
            }
        }
        put(elf, l.e_shoff, l.word, shoff as u64, big);
        put(elf, l.e_ehsize + 6, 2, l.shdr_size as u64, big);
        put(elf, l.e_ehsize + 8, 2, entries.len() as u64, big);
        let shstrndx = if extended {
            elf::SHN_XINDEX.into()
        } else {
            strings_index
        };
        put(elf, l.e_ehsize + 10, 2, shstrndx, big);
    }

    /// The file offset of section header `index`, for tests that damage it.
    fn section_header_at(elf: &[u8], index: usize) -> usize {
        let shoff = u64::from_le_bytes(elf[ELF64.e_shoff..][..8].try_into().unwrap());
        shoff as usize + index * ELF64.shdr_size
    }

    fn header(ptr_size: u8, flags: u8) -> Vec<u8> {
        let mut blob = MAGIC.to_vec();
        blob.extend([ptr_size, flags]);
        blob.resize(HEADER_LEN, 0);
        blob
    }

    /// A Go < 1.18 blob for [`synthetic_elf`]: pointers to string headers, then the headers
    /// and the string bytes.
    fn pointer_blob(word: usize, big: bool, version: &[u8], modinfo: &[u8]) -> Vec<u8> {
        let addr = |relative: usize| BASE + (PAYLOAD_OFFSET + relative) as u64;
        pointer_blob_with(word, big, version, modinfo, addr)
    }

    /// [`pointer_blob`] where `addr` gives the address of each offset in the blob.
    fn pointer_blob_with(
        word: usize,
        big: bool,
        version: &[u8],
        modinfo: &[u8],
        addr: impl Fn(usize) -> u64,
    ) -> Vec<u8> {
        let mut blob = header(word as u8, u8::from(big));
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
        let info = read_path(&path).unwrap();
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
        assert_eq!(info.main_path(), Some("example.com/hello"));
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

    /// What the go command records of `-ldflags`, which `godebug::Compiled` relies on: the
    /// flags as given, and nothing with `-trimpath` (go.dev/issue/52372), which it records.
    #[test]
    fn trimpath_leaves_ldflags_unrecorded() {
        if !go_available() {
            return;
        }
        let dir = TempDir::new("ldflags");
        let x = "-ldflags=-X=runtime.godebugDefault=madvdontneed=0";
        let linked = read_path(&build_hello(&dir, "linked", &[x])).unwrap();
        assert_eq!(linked.setting("-ldflags"), x.strip_prefix("-ldflags="));
        assert_eq!(linked.setting("-trimpath"), None);
        let trimmed = read_path(&build_hello(&dir, "trimmed", &["-trimpath", x])).unwrap();
        assert_eq!(trimmed.setting("-ldflags"), None);
        assert_eq!(trimmed.setting("-trimpath"), Some("true"));
        assert_eq!(trimmed.setting("-compiler"), Some("gc"));
        assert_eq!(trimmed.main_path(), Some("example.com/hello"));
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
            assert!(Image::parse(&sectionless[..]).unwrap().section.is_none());
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
        assert_eq!(info.main_path(), Some("example.com/new"));
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
        put(&mut many, 0x38, 2, 0xfffe, false); // e_phnum; 0xffff would be PN_XNUM
        assert_eq!(
            parse(&many),
            Err(Error::Unsupported("too many program headers"))
        );
        let mut outside = elf.clone();
        put(&mut outside, 0x20, 8, u64::MAX - 8, false); // e_phoff
        assert_eq!(parse(&outside), Err(Error::Truncated));
        let mut ident = elf.clone();
        ident[5] = 3;
        let byte_order = Err(Error::Unsupported("unknown ELF byte order"));
        assert_eq!(parse(&ident), byte_order);
        ident[5] = 1;
        ident[6] = 0;
        let version = Err(Error::Unsupported("unknown ELF version"));
        assert_eq!(parse(&ident), version);
        let mut rng = XorShift(7);
        let mut random: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        random[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(parse(&random).is_err());
    }

    #[test]
    fn damaged_program_headers() {
        let elf = synthetic_elf(true, false, &inline_blob(8, b"go1.20", b""));
        assert_eq!(parse(&elf[..ELF64.header_size + 20]), Err(Error::Truncated));
        let mut wide = elf.clone();
        put(&mut wide, 0x36, 2, 64, false); // e_phentsize
        let wrong_size = Err(Error::Malformed("wrong program header entry size"));
        assert_eq!(parse(&wide), wrong_size);
        // PN_XNUM puts the real count in section 0, which this file lacks...
        let mut extended = elf.clone();
        put(&mut extended, 0x38, 2, elf::PN_XNUM.into(), false);
        let no_count = Err(Error::Malformed("extended program header count"));
        assert_eq!(parse(&extended), no_count);
        // ...and once it has one, the count there is used.
        add_sections(&mut extended, true, false, &[], false);
        let sh_info = section_header_at(&extended, 0) + ELF64.shdr_fields[3];
        put(&mut extended, sh_info, 4, 1, false);
        assert_eq!(parse(&extended).map(|i| i.go_version), Ok("go1.20".into()));
    }

    /// A decoy blob first in the data segment, where a scan finds it, and the real one after
    /// it, where `.go.buildinfo` says.
    fn decoy_then_real() -> (Vec<u8>, (&'static str, u64, u64)) {
        let mut payload = inline_blob(8, b"go1.1", b"");
        payload.resize(64, 0);
        payload.extend(inline_blob(8, b"go1.21.0", &framed(OLD_MODINFO)));
        let real_at = (PAYLOAD_OFFSET + 64) as u64;
        let section = (".go.buildinfo", real_at, payload.len() as u64 - 64);
        (payload, section)
    }

    #[test]
    fn section_is_preferred_over_the_data_segment() {
        let (payload, section) = decoy_then_real();
        let data = (".data", PAYLOAD_OFFSET as u64, 64);
        for (is64, big) in [(true, false), (false, true)] {
            for extended in [false, true] {
                let mut elf = synthetic_elf(is64, big, &payload);
                assert_eq!(parse(&elf).unwrap().go_version, "go1.1");
                add_sections(&mut elf, is64, big, &[data, section], extended);
                let info = parse(&elf).unwrap();
                assert_eq!(
                    info.go_version, "go1.21.0",
                    "is64 {is64} extended {extended}"
                );
                assert_eq!(info.module_info.as_deref(), Some(OLD_MODINFO));
            }
        }
    }

    #[test]
    fn damaged_section_headers_fall_back_to_the_data_segment() {
        let (payload, section) = decoy_then_real();
        let mut elf = synthetic_elf(true, false, &payload);
        add_sections(&mut elf, true, false, &[section], false);
        assert_eq!(parse(&elf).unwrap().go_version, "go1.21.0");
        let ours = section_header_at(&elf, 1);
        let [sh_offset, sh_size, ..] = ELF64.shdr_fields.map(|field| ours + field);
        let damage: [(usize, usize, u64); 7] = [
            (0x3a, 2, 63),           // e_shentsize
            (0x28, 8, u64::MAX - 8), // e_shoff
            (0x3e, 2, 99),           // e_shstrndx
            (ours, 4, 0xffff),       // sh_name past the string table
            (ours + 4, 4, elf::SHT_NOBITS.into()),
            (sh_offset, 8, u64::MAX),
            (sh_size, 8, elf.len() as u64), // runs past the end of the file
        ];
        for (at, width, value) in damage {
            let mut damaged = elf.clone();
            put(&mut damaged, at, width, value, false);
            let found = parse(&damaged).map(|info| info.go_version);
            assert_eq!(found, Ok("go1.1".into()), "{value:#x} at {at:#x}");
        }
    }

    #[test]
    fn pointer_format_across_two_segments() {
        const HIGH: u64 = 0x7f00_0000;
        // Split after the blob's header (string headers and data in the second segment), or
        // after the string headers (only the data there).
        for split in [HEADER_LEN, HEADER_LEN + 4 * 8] {
            let addr = |relative: usize| {
                if relative < split {
                    BASE + (PAYLOAD_OFFSET + relative) as u64
                } else {
                    HIGH + relative as u64
                }
            };
            let blob = pointer_blob_with(8, false, b"go1.16.15", &framed(OLD_MODINFO), addr);
            let cut = (PAYLOAD_OFFSET + split) as u64;
            let data = Load {
                flags: elf::PF_R | elf::PF_W,
                offset: 0,
                vaddr: BASE,
                size: cut,
            };
            let rodata = Load {
                flags: elf::PF_R,
                offset: cut,
                vaddr: HIGH + split as u64,
                size: (blob.len() - split) as u64,
            };
            let info = parse(&elf_with_segments(true, false, &blob, &[data, rodata])).unwrap();
            assert_eq!(info.go_version, "go1.16.15");
            assert_eq!(info.module_info.as_deref(), Some(OLD_MODINFO));
            let outside = Err(Error::Malformed("address outside the loadable segments"));
            assert_eq!(
                parse(&elf_with_segments(true, false, &blob, &[data])),
                outside
            );
            let short = Load {
                size: rodata.size - 1,
                ..rodata
            };
            let cut_short = elf_with_segments(true, false, &blob, &[data, short]);
            assert_eq!(parse(&cut_short), Err(Error::Truncated));
        }
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
            assert_eq!(read_path(c_program), Err(Error::NotGo));
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
        assert!(Binary::open(missing).is_err());
    }
}
