//! Struct member offsets from the kernel's BTF.
//!
//! memtrace's kernel programs are built without CO-RE relocations, so the few kernel struct
//! fields they read (e.g. `task_struct.min_flt`) are located here, in userspace, from the
//! kernel's own type information (`/sys/kernel/btf/vmlinux`) and handed to the programs as
//! constants. Only what member lookup needs is kept: the types, the struct/union members and
//! the string section. The blob is untrusted input as far as this module is concerned: every
//! read is bounds checked and every chain of references is bounded, so a corrupt blob yields
//! an [`Error`], never a panic or a hang.

/// Where the running kernel exposes its BTF.
const SYS_FS_PATH: &str = "/sys/kernel/btf/vmlinux";
/// `BTF_MAGIC`, as read in the host's (little endian) byte order.
const MAGIC: u16 = 0xeb9f;
/// The only BTF format version there is.
const VERSION: u8 = 1;
/// `sizeof(struct btf_header)`: the fields this module reads. Newer headers may be longer.
const HEADER_LEN: u32 = 24;
/// `sizeof(struct btf_member)`, and of the other 12-byte trailing records.
const RECORD_LEN: usize = 12;
/// How many references (typedefs, qualifiers, array elements, nested anonymous members) a
/// lookup follows before deciding the blob is corrupt; real kernels need a handful.
const MAX_HOPS: usize = 32;
/// How many members one lookup may visit: anonymous members can share types, so a corrupt
/// blob could otherwise make the search through them exponential.
const MAX_VISITS: usize = 1 << 20;
/// Kernel pointers are 8 bytes on the 64-bit kernels memtrace supports.
const POINTER_SIZE: u32 = 8;

/// Why the BTF could not be read or a member not found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The BTF file could not be read.
    #[error("cannot read BTF: {0}")]
    Io(String),
    /// Not raw BTF in the host's byte order.
    #[error("not raw BTF (bad magic number)")]
    BadMagic,
    /// A header field or record points past the end of the data.
    #[error("BTF data is truncated")]
    Truncated,
    /// The data is inconsistent in the way described.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// No struct has this name.
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    /// Structs named `ty` exist, but none has this member.
    #[error("BTF struct {ty} has no member {member}")]
    NoMember { ty: String, member: String },
}

/// The BTF type kinds (`BTF_KIND_*`); 0 (`BTF_KIND_UNKN`) never appears in the type section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    /// The kind in bits 24-28 of `btf_type.info`, if this module knows it: the length of an
    /// unknown kind's trailing data is unknown, so nothing after it could be read.
    fn from_info(info: u32) -> Option<Self> {
        Some(match (info >> 24) & 0x1f {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// Bytes of kind-specific data after the common `btf_type` record; `vlen` is at most
    /// 0xffff, so this cannot overflow.
    fn trailing_len(self, vlen: u16) -> usize {
        let vlen = usize::from(vlen);
        match self {
            Self::Int | Self::Var | Self::DeclTag => 4,
            Self::Array => RECORD_LEN,
            Self::Struct | Self::Union | Self::Datasec | Self::Enum64 => vlen * RECORD_LEN,
            Self::Enum | Self::FuncProto => vlen * 8,
            Self::Ptr
            | Self::Fwd
            | Self::Typedef
            | Self::Volatile
            | Self::Const
            | Self::Restrict
            | Self::Func
            | Self::Float
            | Self::TypeTag => 0,
        }
    }

    /// Kinds that only qualify or rename another type: their size is the referenced type's.
    fn is_alias(self) -> bool {
        matches!(
            self,
            Self::Typedef | Self::Volatile | Self::Const | Self::Restrict | Self::TypeTag
        )
    }
}

/// One type, without the trailing data member lookup does not need.
#[derive(Debug)]
struct Type {
    kind: Kind,
    name_off: u32,
    /// A size for ints, enums, structs, unions and floats; a type id for pointers and aliases.
    size_or_type: u32,
    detail: Detail,
}

/// The trailing data kept for the kinds member lookup looks into.
#[derive(Debug)]
enum Detail {
    None,
    /// A struct's or union's members: `Btf::members[start..start + len]`.
    Members {
        start: u32,
        len: u16,
    },
    Array {
        elem: u32,
        nelems: u32,
    },
    /// An enum's values: `Btf::enumerators[start..start + len]`.
    Enumerators {
        start: u32,
        len: u16,
    },
}

/// One `btf_member`, its offset decoded once whatever the parent's `kind_flag`. A bitfield's
/// width is not kept: only whether it starts on a byte boundary matters here.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

/// A member found by name: where it is relative to the struct searched from.
#[derive(Clone, Copy, Debug)]
struct Found {
    bit_offset: u32,
    type_id: u32,
}

/// A parsed BTF blob's types and strings (only what member lookup needs).
pub struct Btf {
    /// Type id `n` is `types[n - 1]`; id 0 is `void`.
    types: Vec<Type>,
    members: Vec<Member>,
    /// Every 32-bit enum's values, as `(name offset, value)`.
    enumerators: Vec<(u32, i64)>,
    /// The string section; it starts and ends with NUL, so every in-range offset names a
    /// NUL-terminated string.
    strings: Vec<u8>,
}

impl Btf {
    /// Reads the running kernel's BTF from `/sys/kernel/btf/vmlinux`.
    pub fn from_sys_fs() -> Result<Self, Error> {
        let bytes =
            std::fs::read(SYS_FS_PATH).map_err(|e| Error::Io(format!("{SYS_FS_PATH}: {e}")))?;
        Self::parse(&bytes)
    }

    /// Parses raw BTF in the host's byte order (as the kernel exposes it).
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (type_section, strings) = sections(bytes)?;
        if strings.first() != Some(&0) || strings.last() != Some(&0) {
            return Err(Error::Malformed(
                "string section does not start and end with NUL",
            ));
        }
        let (types, members, enumerators) = parse_types(type_section, strings.len())?;
        Ok(Self {
            types,
            members,
            enumerators,
            strings: strings.to_vec(),
        })
    }

    /// The value of `enumerator` in the enum named `ty` (e.g. `memory_cgrp_id` in
    /// `cgroup_subsys_id`: an index that depends on the kernel's configuration).
    pub fn enum_value(&self, ty: &str, enumerator: &str) -> Result<i64, Error> {
        let mut seen_enum = false;
        for t in &self.types {
            if t.kind != Kind::Enum || self.name(t.name_off) != ty.as_bytes() {
                continue;
            }
            seen_enum = true;
            let Detail::Enumerators { start, len } = t.detail else {
                continue;
            };
            let start = index(start);
            let values = start
                .checked_add(usize::from(len))
                .and_then(|end| self.enumerators.get(start..end))
                .unwrap_or_default();
            if let Some(&(_, value)) = values
                .iter()
                .find(|(name_off, _)| self.name(*name_off) == enumerator.as_bytes())
            {
                return Ok(value);
            }
        }
        Err(if seen_enum {
            Error::NoMember {
                ty: ty.to_owned(),
                member: enumerator.to_owned(),
            }
        } else {
            Error::NoStruct(ty.to_owned())
        })
    }

    /// The size in bytes of the struct named `ty`.
    pub fn struct_size(&self, ty: &str) -> Result<u32, Error> {
        self.types
            .iter()
            .find(|t| t.kind == Kind::Struct && self.name(t.name_off) == ty.as_bytes())
            .map(|t| t.size_or_type)
            .ok_or_else(|| Error::NoStruct(ty.to_owned()))
    }

    /// Whether the kernel has a function named `name` (one BTF knows: most non-inlined ones),
    /// which tells what its configuration built in.
    pub fn has_function(&self, name: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.kind == Kind::Func && self.name(t.name_off) == name.as_bytes())
    }

    /// Byte offset of `member` inside the struct named `ty`, searching through anonymous
    /// struct/union members (adding their offsets) as the kernel's layout nests some fields;
    /// errors if the member is a bitfield not on a byte boundary.
    pub fn member_offset(&self, ty: &str, member: &str) -> Result<u32, Error> {
        let found = self.find(ty, member)?;
        if found.bit_offset % 8 != 0 {
            return Err(Error::Malformed(
                "member is a bitfield not on a byte boundary",
            ));
        }
        Ok(found.bit_offset / 8)
    }

    /// Byte size of the member's type (follow typedef/const/volatile/restrict/type_tag to the
    /// underlying int/pointer/struct/enum/array; pointer = 8 on 64-bit), so callers can check
    /// `unsigned long` is 8 bytes. For a bitfield this is the size of its declared type.
    pub fn member_size(&self, ty: &str, member: &str) -> Result<u32, Error> {
        let found = self.find(ty, member)?;
        self.size_of(found.type_id)
    }

    /// The first struct named `ty` that has `member` (kernels can have several, e.g. from
    /// modules or differing configs), and where the member is in it.
    fn find(&self, ty: &str, member: &str) -> Result<Found, Error> {
        // Anonymous structs have the empty name; they are not what a caller means.
        let mut seen_struct = false;
        let mut visits = MAX_VISITS;
        if !ty.is_empty() {
            for t in &self.types {
                if t.kind != Kind::Struct || self.name(t.name_off) != ty.as_bytes() {
                    continue;
                }
                seen_struct = true;
                if let Some(found) = self.find_in(t, member.as_bytes(), 0, &mut visits)? {
                    return Ok(found);
                }
            }
        }
        Err(if seen_struct {
            Error::NoMember {
                ty: ty.to_owned(),
                member: member.to_owned(),
            }
        } else {
            Error::NoStruct(ty.to_owned())
        })
    }

    /// Searches a struct's or union's members for `name`, descending into anonymous members
    /// (whose fields C code names as if they were the parent's).
    fn find_in(
        &self,
        parent: &Type,
        name: &[u8],
        depth: usize,
        visits: &mut usize,
    ) -> Result<Option<Found>, Error> {
        if depth > MAX_HOPS {
            return Err(Error::Malformed("anonymous members nested too deeply"));
        }
        let Detail::Members { start, len } = parent.detail else {
            return Ok(None);
        };
        let start = index(start);
        let members = start
            .checked_add(usize::from(len))
            .and_then(|end| self.members.get(start..end))
            .unwrap_or_default();
        for member in members {
            *visits = visits
                .checked_sub(1)
                .ok_or(Error::Malformed("too many nested anonymous members"))?;
            let member_name = self.name(member.name_off);
            if !member_name.is_empty() {
                if member_name == name {
                    return Ok(Some(Found {
                        bit_offset: member.bit_offset,
                        type_id: member.type_id,
                    }));
                }
                continue;
            }
            let Some(inner) = self.resolve(member.type_id)? else {
                continue;
            };
            if let Some(found) = self.find_in(inner, name, depth + 1, visits)? {
                let bit_offset = member
                    .bit_offset
                    .checked_add(found.bit_offset)
                    .ok_or(Error::Malformed("member offset overflows"))?;
                return Ok(Some(Found {
                    bit_offset,
                    ..found
                }));
            }
        }
        Ok(None)
    }

    /// Size in bytes of type `id`, through aliases and arrays (of arrays).
    fn size_of(&self, mut id: u32) -> Result<u32, Error> {
        const OVERFLOW: Error = Error::Malformed("type size overflows");
        let mut count: u32 = 1;
        for _ in 0..MAX_HOPS {
            let t = self
                .get(id)?
                .ok_or(Error::Malformed("member type is void"))?;
            let size = match t.kind {
                Kind::Int
                | Kind::Enum
                | Kind::Enum64
                | Kind::Struct
                | Kind::Union
                | Kind::Float => t.size_or_type,
                Kind::Ptr => POINTER_SIZE,
                Kind::Array => {
                    let Detail::Array { elem, nelems } = t.detail else {
                        return Err(Error::Malformed("array without element type"));
                    };
                    count = count.checked_mul(nelems).ok_or(OVERFLOW)?;
                    id = elem;
                    continue;
                }
                kind if kind.is_alias() => {
                    id = t.size_or_type;
                    continue;
                }
                _ => return Err(Error::Malformed("member type has no size")),
            };
            return size.checked_mul(count).ok_or(OVERFLOW);
        }
        Err(Error::Malformed("type chain too long"))
    }

    /// Type `id` with its aliases (typedefs, qualifiers, type tags) looked through; `None` for
    /// `void`.
    fn resolve(&self, mut id: u32) -> Result<Option<&Type>, Error> {
        for _ in 0..MAX_HOPS {
            match self.get(id)? {
                Some(t) if t.kind.is_alias() => id = t.size_or_type,
                other => return Ok(other),
            }
        }
        Err(Error::Malformed("type chain too long"))
    }

    /// Type `id`; `None` for `void` (id 0).
    fn get(&self, id: u32) -> Result<Option<&Type>, Error> {
        let Some(index) = index(id).checked_sub(1) else {
            return Ok(None);
        };
        self.types
            .get(index)
            .map(Some)
            .ok_or(Error::Malformed("type id out of range"))
    }

    /// The NUL-terminated string at `offset`; empty if out of range (parsing checked offsets).
    fn name(&self, offset: u32) -> &[u8] {
        let tail = self.strings.get(index(offset)..).unwrap_or_default();
        tail.split(|&b| b == 0).next().unwrap_or_default()
    }
}

/// The type and string sections of a BTF blob, as located by its header.
fn sections(bytes: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let mut header = Cursor(bytes);
    if u16::from_le_bytes(header.array()?) != MAGIC {
        return Err(Error::BadMagic);
    }
    let [version, _flags] = header.array()?;
    if version != VERSION {
        return Err(Error::Malformed("unsupported BTF version"));
    }
    let hdr_len = header.u32()?;
    let [type_off, type_len, str_off, str_len] =
        [header.u32()?, header.u32()?, header.u32()?, header.u32()?];
    if hdr_len < HEADER_LEN {
        return Err(Error::Malformed("header length too small"));
    }
    // Section offsets count from the end of the header, whose length may grow in future.
    let body = bytes.get(index(hdr_len)..).ok_or(Error::Truncated)?;
    Ok((
        section(body, type_off, type_len)?,
        section(body, str_off, str_len)?,
    ))
}

/// `len` bytes at `offset` in `body`.
fn section(body: &[u8], offset: u32, len: u32) -> Result<&[u8], Error> {
    let start = index(offset);
    start
        .checked_add(index(len))
        .and_then(|end| body.get(start..end))
        .ok_or(Error::Truncated)
}

/// Decodes the type section, checking every name offset against the string section's length
/// (`strings_len`) so that lookups never need to.
#[allow(clippy::type_complexity, reason = "the three tables a parse fills")]
fn parse_types(
    section: &[u8],
    strings_len: usize,
) -> Result<(Vec<Type>, Vec<Member>, Vec<(u32, i64)>), Error> {
    let check_name = |name_off: u32| {
        if index(name_off) < strings_len {
            Ok(name_off)
        } else {
            Err(Error::Malformed("name offset beyond the string section"))
        }
    };
    let mut cursor = Cursor(section);
    let mut types = Vec::new();
    let mut members = Vec::new();
    let mut enumerators = Vec::new();
    while !cursor.is_empty() {
        let [name_off, info, size_or_type] = [cursor.u32()?, cursor.u32()?, cursor.u32()?];
        let name_off = check_name(name_off)?;
        let kind = Kind::from_info(info).ok_or(Error::Malformed("unknown type kind"))?;
        let vlen = info as u16; // Bits 0-15.
        // Taking the trailing data whole bounds `vlen` by the bytes actually there.
        let mut trailing = Cursor(cursor.take(kind.trailing_len(vlen))?);
        let detail = match kind {
            Kind::Struct | Kind::Union => {
                // The section is at most 4 GiB, of which a member takes 12 bytes.
                let start = u32::try_from(members.len())
                    .map_err(|_| Error::Malformed("too many members"))?;
                members.reserve(usize::from(vlen));
                let kind_flag = info >> 31 == 1;
                for _ in 0..vlen {
                    members.push(Member {
                        name_off: check_name(trailing.u32()?)?,
                        type_id: trailing.u32()?,
                        bit_offset: member_bit_offset(trailing.u32()?, kind_flag),
                    });
                }
                Detail::Members { start, len: vlen }
            }
            Kind::Array => {
                let elem = trailing.u32()?;
                let _index_type = trailing.u32()?;
                let nelems = trailing.u32()?;
                Detail::Array { elem, nelems }
            }
            Kind::Enum => {
                let start = u32::try_from(enumerators.len())
                    .map_err(|_| Error::Malformed("too many enumerators"))?;
                // The kind flag says whether the values are signed.
                let signed = info >> 31 == 1;
                for _ in 0..vlen {
                    let name_off = check_name(trailing.u32()?)?;
                    let raw = trailing.u32()?;
                    let value = if signed {
                        i64::from(raw as i32)
                    } else {
                        i64::from(raw)
                    };
                    enumerators.push((name_off, value));
                }
                Detail::Enumerators { start, len: vlen }
            }
            _ => Detail::None,
        };
        types.push(Type {
            kind,
            name_off,
            size_or_type,
            detail,
        });
    }
    Ok((types, members, enumerators))
}

/// The bit offset in a `btf_member`'s `offset`: all of it, or, when the parent's `kind_flag`
/// is set, bits 0-23 (bits 24-31 then hold the bitfield's width).
fn member_bit_offset(offset: u32, kind_flag: bool) -> u32 {
    if kind_flag {
        offset & 0x00ff_ffff
    } else {
        offset
    }
}

/// A `u32` from the blob as an index; saturating, so that on a platform where it does not fit
/// the bounds check that follows fails instead of wrapping.
fn index(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Reads little-endian fields off the front of a byte slice, failing with
/// [`Error::Truncated`] rather than reading past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Error> {
        if len > self.0.len() {
            return Err(Error::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(Error::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, Error> {
        self.array().map(u32::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND_INT: u32 = 1;
    const KIND_PTR: u32 = 2;
    const KIND_ARRAY: u32 = 3;
    const KIND_STRUCT: u32 = 4;
    const KIND_UNION: u32 = 5;
    const KIND_ENUM: u32 = 6;
    const KIND_FWD: u32 = 7;
    const KIND_TYPEDEF: u32 = 8;
    const KIND_VOLATILE: u32 = 9;
    const KIND_CONST: u32 = 10;
    const KIND_FUNC_PROTO: u32 = 13;
    const KIND_VAR: u32 = 14;
    const KIND_DATASEC: u32 = 15;
    const KIND_FLOAT: u32 = 16;
    const KIND_DECL_TAG: u32 = 17;
    const KIND_TYPE_TAG: u32 = 18;
    const KIND_ENUM64: u32 = 19;

    /// Assembles raw BTF: types are numbered from 1 in the order they are added.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        count: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                count: 0,
            }
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let offset = u32::try_from(self.strings.len()).expect("small test blob");
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            offset
        }

        fn word(&mut self, word: u32) -> &mut Self {
            self.types.extend_from_slice(&word.to_le_bytes());
            self
        }

        /// Adds a `btf_type` and returns its id; trailing data follows with `word`/`member`.
        fn ty(&mut self, name: &str, kind: u32, vlen: u32, kind_flag: bool, size: u32) -> u32 {
            let name_off = self.name(name);
            let info = u32::from(kind_flag) << 31 | kind << 24 | vlen;
            self.word(name_off).word(info).word(size);
            self.count += 1;
            self.count
        }

        fn member(&mut self, name: &str, type_id: u32, offset: u32) -> &mut Self {
            let name_off = self.name(name);
            self.word(name_off).word(type_id).word(offset)
        }

        fn build(&self) -> Vec<u8> {
            let type_len = u32::try_from(self.types.len()).expect("small test blob");
            let str_len = u32::try_from(self.strings.len()).expect("small test blob");
            let mut blob = Vec::new();
            blob.extend_from_slice(&MAGIC.to_le_bytes());
            blob.extend_from_slice(&[VERSION, 0]);
            for field in [HEADER_LEN, 0, type_len, type_len, str_len] {
                blob.extend_from_slice(&field.to_le_bytes());
            }
            blob.extend_from_slice(&self.types);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    /// A small BTF with the shapes the kernel's layout uses: anonymous unions and structs,
    /// bitfields, typedef chains, arrays, pointers, same-named structs and a typedef loop.
    fn synthetic() -> Vec<u8> {
        let mut b = Builder::new();
        let ulong = b.ty("unsigned long", KIND_INT, 0, false, 8);
        b.word(64);
        let int = b.ty("int", KIND_INT, 0, false, 4);
        b.word(32);
        let u64_ = b.ty("u64", KIND_TYPEDEF, 0, false, ulong);
        let const_u64 = b.ty("", KIND_CONST, 0, false, u64_);
        let volatile = b.ty("", KIND_VOLATILE, 0, false, const_u64);
        let vu64 = b.ty("vu64", KIND_TYPEDEF, 0, false, volatile);
        let halves = b.ty("", KIND_STRUCT, 2, false, 8);
        b.member("lo", int, 0).member("hi", int, 32);
        let either = b.ty("", KIND_UNION, 2, false, 8);
        b.member("whole", ulong, 0).member("", halves, 0);
        let outer_ptr = b.ty("", KIND_PTR, 0, false, 0);
        let outer = b.ty("outer", KIND_STRUCT, 7, true, 48);
        assert_eq!(outer_ptr + 1, outer, "the pointer below points at outer");
        b.member("first", int, 0)
            .member("", either, 64)
            .member("flag", int, 1 << 24 | 128)
            .member("bits", int, 3 << 24 | 129)
            .member("next", outer_ptr, 192)
            .member("arr", outer + 1, 256)
            .member("counter", vu64, 320);
        let array = b.ty("", KIND_ARRAY, 0, false, 0);
        b.word(int).word(int).word(4);
        assert_eq!(array, outer + 1);
        b.ty("dup", KIND_STRUCT, 1, false, 4);
        b.member("a", int, 0);
        b.ty("dup", KIND_STRUCT, 2, false, 12);
        b.member("a", int, 32).member("b", int, 64);
        b.ty("dup", KIND_UNION, 1, false, 4);
        b.member("c", int, 0);
        let looped = b.ty("loop", KIND_TYPEDEF, 0, false, 0);
        // Patch the typedef to point at itself.
        let at = b.types.len() - 4;
        b.types[at..].copy_from_slice(&looped.to_le_bytes());
        b.ty("looped", KIND_STRUCT, 1, false, 8);
        b.member("x", looped, 0);
        b.ty("outer", KIND_FWD, 0, false, 0);
        let e = b.ty("e", KIND_ENUM, 2, false, 4);
        b.member("A", 0, 0).word(0); // Two 8-byte enum records.
        let e64 = b.ty("e64", KIND_ENUM64, 1, false, 8);
        b.member("B", 1, 0);
        let proto = b.ty("", KIND_FUNC_PROTO, 1, false, int);
        b.word(0).word(int);
        b.ty("v", KIND_VAR, 0, false, int);
        b.word(1);
        b.ty(".data", KIND_DATASEC, 1, false, 4);
        b.word(proto + 2).word(0).word(4);
        b.ty("tag", KIND_DECL_TAG, 0, false, outer);
        b.word(u32::MAX);
        let float = b.ty("double", KIND_FLOAT, 0, false, 8);
        let tagged = b.ty("user", KIND_TYPE_TAG, 0, false, outer_ptr);
        b.ty("kinds", KIND_STRUCT, 5, false, 32);
        b.member("e", e, 0)
            .member("e64", e64, 64)
            .member("f", float, 128)
            .member("tagged", tagged, 192)
            .member("proto", proto, 256);
        b.build()
    }

    fn parsed() -> Btf {
        Btf::parse(&synthetic()).expect("synthetic BTF parses")
    }

    #[test]
    fn plain_and_nested_offsets() {
        let btf = parsed();
        assert_eq!(btf.member_offset("outer", "first"), Ok(0));
        assert_eq!(btf.member_offset("outer", "whole"), Ok(8));
        assert_eq!(btf.member_offset("outer", "lo"), Ok(8));
        assert_eq!(btf.member_offset("outer", "hi"), Ok(12));
        assert_eq!(btf.member_offset("outer", "next"), Ok(24));
        assert_eq!(btf.member_offset("outer", "arr"), Ok(32));
        assert_eq!(btf.member_offset("outer", "counter"), Ok(40));
    }

    #[test]
    fn bitfields() {
        let btf = parsed();
        assert_eq!(btf.member_offset("outer", "flag"), Ok(16));
        assert_eq!(btf.member_size("outer", "flag"), Ok(4));
        assert!(matches!(
            btf.member_offset("outer", "bits"),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn sizes() {
        let btf = parsed();
        assert_eq!(btf.member_size("outer", "first"), Ok(4));
        assert_eq!(btf.member_size("outer", "whole"), Ok(8));
        assert_eq!(btf.member_size("outer", "hi"), Ok(4));
        assert_eq!(btf.member_size("outer", "next"), Ok(8));
        assert_eq!(btf.member_size("outer", "arr"), Ok(16));
        assert_eq!(btf.member_size("outer", "counter"), Ok(8));
        assert_eq!(btf.member_size("kinds", "e"), Ok(4));
        assert_eq!(btf.member_size("kinds", "e64"), Ok(8));
        assert_eq!(btf.member_size("kinds", "f"), Ok(8));
        assert_eq!(btf.member_size("kinds", "tagged"), Ok(8));
        assert!(matches!(
            btf.member_size("kinds", "proto"),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn same_named_structs_and_missing_names() {
        let btf = parsed();
        assert_eq!(btf.member_offset("dup", "a"), Ok(0), "first struct with a");
        assert_eq!(btf.member_offset("dup", "b"), Ok(8), "first struct with b");
        let no_member = |ty: &str, member: &str| Error::NoMember {
            ty: ty.into(),
            member: member.into(),
        };
        assert_eq!(btf.member_offset("dup", "c"), Err(no_member("dup", "c")));
        assert_eq!(
            btf.member_offset("outer", "missing"),
            Err(no_member("outer", "missing"))
        );
        assert_eq!(btf.member_offset("outer", ""), Err(no_member("outer", "")));
        assert_eq!(
            btf.member_size("nosuch", "x"),
            Err(Error::NoStruct("nosuch".into()))
        );
        assert_eq!(
            btf.member_offset("", "lo"),
            Err(Error::NoStruct(String::new()))
        );
    }

    #[test]
    fn typedef_loop_is_an_error() {
        let btf = parsed();
        assert_eq!(btf.member_offset("looped", "x"), Ok(0));
        assert_eq!(
            btf.member_size("looped", "x"),
            Err(Error::Malformed("type chain too long"))
        );
    }

    /// Overwrites the little-endian `u32` at `at`.
    fn put(blob: &mut [u8], at: usize, value: u32) {
        blob[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn corrupt_headers() {
        let good = synthetic();
        assert_eq!(Btf::parse(&[]).err(), Some(Error::Truncated));
        assert_eq!(Btf::parse(&good[..10]).err(), Some(Error::Truncated));
        assert_eq!(Btf::parse(b"\x9f\xeb").err(), Some(Error::Truncated));
        assert_eq!(Btf::parse(b"\xeb\x9f\x01\x00").err(), Some(Error::BadMagic));
        let mut blob = good.clone();
        blob[2] = 2;
        assert!(matches!(Btf::parse(&blob), Err(Error::Malformed(_))));
        let mut blob = good.clone();
        put(&mut blob, 4, 8);
        assert!(matches!(Btf::parse(&blob), Err(Error::Malformed(_))));
        let mut blob = good.clone();
        put(&mut blob, 4, u32::MAX);
        assert_eq!(Btf::parse(&blob).err(), Some(Error::Truncated));
        // type_len beyond the end.
        let mut blob = good.clone();
        put(&mut blob, 12, u32::try_from(good.len()).expect("small"));
        assert_eq!(Btf::parse(&blob).err(), Some(Error::Truncated));
        // Offset plus length overflowing.
        let mut blob = good.clone();
        put(&mut blob, 16, u32::MAX);
        put(&mut blob, 20, u32::MAX);
        assert_eq!(Btf::parse(&blob).err(), Some(Error::Truncated));
        // The whole blob cut short.
        assert_eq!(
            Btf::parse(&good[..good.len() - 1]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn corrupt_types_and_strings() {
        let mut b = Builder::new();
        b.ty("s", KIND_STRUCT, 0xffff, false, 4);
        b.member("a", 0, 0);
        assert_eq!(
            Btf::parse(&b.build()).err(),
            Some(Error::Truncated),
            "huge vlen"
        );

        let mut b = Builder::new();
        b.ty("int", KIND_INT, 0, false, 4);
        b.word(32);
        let mut blob = b.build();
        let types = usize::try_from(HEADER_LEN).expect("small");
        put(&mut blob, types, 1000);
        assert!(
            matches!(Btf::parse(&blob), Err(Error::Malformed(_))),
            "name beyond strings"
        );

        for kind in [0, 20, 31] {
            let mut b = Builder::new();
            b.ty("x", kind, 0, false, 4);
            assert_eq!(
                Btf::parse(&b.build()).err(),
                Some(Error::Malformed("unknown type kind"))
            );
        }

        let mut b = Builder::new();
        b.ty("int", KIND_INT, 0, false, 4);
        b.word(32).word(7); // A stray partial record.
        assert_eq!(Btf::parse(&b.build()).err(), Some(Error::Truncated));

        let mut b = Builder::new();
        b.ty("int", KIND_INT, 0, false, 4);
        b.word(32);
        b.strings.push(b'x');
        assert!(matches!(Btf::parse(&b.build()), Err(Error::Malformed(_))));
    }

    #[test]
    fn dangling_and_cyclic_references() {
        let mut b = Builder::new();
        let s = b.ty("s", KIND_STRUCT, 3, false, 8);
        b.member("dangling", 99, 0)
            .member("", s, 0) // Anonymous member of its own type.
            .member("", 98, 0);
        let btf = Btf::parse(&b.build()).expect("references are checked on lookup");
        assert_eq!(
            btf.member_size("s", "dangling"),
            Err(Error::Malformed("type id out of range"))
        );
        assert!(matches!(
            btf.member_offset("s", "missing"),
            Err(Error::Malformed(_))
        ));
    }

    /// `levels` nested anonymous structs, each holding the next level `fanout` times, inside
    /// a struct named `top`.
    fn nested(levels: u32, fanout: u32) -> Btf {
        let mut b = Builder::new();
        let int = b.ty("int", KIND_INT, 0, false, 4);
        b.word(32);
        let mut inner = b.ty("", KIND_STRUCT, 1, false, 4);
        b.member("leaf", int, 0);
        for level in 1..=levels {
            let name = if level == levels { "top" } else { "" };
            let next = b.ty(name, KIND_STRUCT, fanout, false, 4);
            for _ in 0..fanout {
                b.member("", inner, 0);
            }
            inner = next;
        }
        Btf::parse(&b.build()).expect("valid shape")
    }

    #[test]
    fn deep_or_shared_anonymous_members_are_bounded() {
        assert_eq!(
            nested(MAX_HOPS as u32, 1).member_offset("top", "leaf"),
            Ok(0)
        );
        assert_eq!(
            nested(MAX_HOPS as u32 + 2, 1).member_offset("top", "leaf"),
            Err(Error::Malformed("anonymous members nested too deeply"))
        );
        // 2^30 paths to search: the visit budget ends it.
        assert_eq!(
            nested(30, 2).member_offset("top", "missing"),
            Err(Error::Malformed("too many nested anonymous members"))
        );
    }

    /// A deterministic pseudo-random sequence (xorshift64).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(bound).expect("fits")).expect("fits")
        }
    }

    #[test]
    fn mutated_blobs_never_panic() {
        let good = synthetic();
        let queries = [
            ("outer", "hi"),
            ("outer", "counter"),
            ("outer", "arr"),
            ("outer", "bits"),
            ("dup", "b"),
            ("looped", "x"),
            ("kinds", "tagged"),
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut parsed = 0;
        for _ in 0..2_000 {
            let mut blob = good.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(blob.len());
                let [byte, ..] = rng.next().to_le_bytes();
                blob[at] = match rng.below(3) {
                    0 => byte,
                    1 => blob[at] ^ (1 << (byte % 8)),
                    _ => 0xff,
                };
            }
            if rng.below(8) == 0 {
                blob.truncate(rng.below(blob.len()));
            }
            if let Ok(btf) = Btf::parse(&blob) {
                parsed += 1;
                for (ty, member) in queries {
                    let _ = btf.member_offset(ty, member);
                    let _ = btf.member_size(ty, member);
                }
            }
        }
        eprintln!("{parsed} of 2000 mutated blobs parsed");
        assert!(parsed > 0, "some mutations keep the blob parseable");
    }

    /// The running kernel's BTF, or `None` (and a note) where it has none.
    fn kernel_btf() -> Option<Btf> {
        if !std::path::Path::new(SYS_FS_PATH).exists() {
            eprintln!("skipping: {SYS_FS_PATH} does not exist");
            return None;
        }
        let start = std::time::Instant::now();
        let btf = Btf::from_sys_fs().expect("the kernel's BTF parses");
        eprintln!("parsed {SYS_FS_PATH} in {:?}", start.elapsed());
        Some(btf)
    }

    #[test]
    fn kernel_task_struct_fault_counters() {
        let Some(btf) = kernel_btf() else { return };
        let min_flt = btf
            .member_offset("task_struct", "min_flt")
            .expect("min_flt");
        let maj_flt = btf
            .member_offset("task_struct", "maj_flt")
            .expect("maj_flt");
        eprintln!("task_struct.min_flt at {min_flt}, maj_flt at {maj_flt}");
        assert_eq!(maj_flt, min_flt + 8);
        assert_eq!(btf.member_size("task_struct", "min_flt"), Ok(8));
        assert_eq!(btf.member_size("task_struct", "maj_flt"), Ok(8));
        // A pointer, found through the same lookup.
        assert_eq!(btf.member_size("task_struct", "mm"), Ok(8));
    }

    #[test]
    fn kernel_nested_member() {
        let Some(btf) = kernel_btf() else { return };
        // mm_users sits in anonymous structs on every tested kernel (5.10–6.18): found through
        // them, at the offset bpftool reads.
        let offset = btf
            .member_offset("mm_struct", "mm_users")
            .expect("mm_struct.mm_users is found through anonymous members");
        assert_eq!(
            btf.member_size("mm_struct", "mm_users"),
            Ok(4),
            "an atomic_t"
        );
        if let Some(dump) = bpftool_raw() {
            assert_eq!(Some(offset), dump.member_offset("mm_struct", "mm_users"));
        }
    }

    /// Every member the programs read sits where bpftool, reading the same BTF independently,
    /// says it does.
    #[test]
    fn kernel_members_agree_with_bpftool() {
        let Some(btf) = kernel_btf() else { return };
        let Some(dump) = bpftool_raw() else { return };
        for member in memtrace_common::members::Member::ALL {
            let (ty, name) = member.path();
            assert_eq!(
                btf.member_offset(ty, name).ok(),
                dump.member_offset(ty, name),
                "{ty}.{name}"
            );
        }
    }

    /// This kernel's members are as wide as the programs read them (`Member::read_bytes`), so
    /// the loader passes every offset on.
    #[test]
    fn kernel_members_are_as_wide_as_the_programs_read_them() {
        use memtrace_common::members::Member;
        let Some(btf) = kernel_btf() else { return };
        for member in Member::ALL {
            let (ty, name) = member.path();
            let size = btf.member_size(ty, name).expect("member size");
            let read = member.read_bytes();
            match member {
                Member::CssSetSubsys => assert_eq!(size % read, 0, "{ty}.{name}: {size}"),
                _ => assert_eq!(size, read, "{ty}.{name}"),
            }
        }
    }

    /// `bpftool btf dump file /sys/kernel/btf/vmlinux format raw`, parsed just enough to find
    /// a member's offset: structs and unions with their members.
    struct RawDump {
        types: std::collections::HashMap<u32, RawType>,
    }

    struct RawType {
        /// A struct or a union.
        aggregate: bool,
        name: String,
        /// `(name, type id, bit offset)`.
        members: Vec<(String, u32, u32)>,
    }

    /// The dump, or `None` (and a note) where bpftool is missing, except under CI.
    fn bpftool_raw() -> Option<RawDump> {
        let output = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", SYS_FS_PATH, "format", "raw"])
            .output();
        let output = match output {
            Ok(output) if output.status.success() => output,
            other => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "bpftool is needed under CI: {other:?}"
                );
                eprintln!("skipping the comparison with bpftool: {other:?}");
                return None;
            }
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let mut types = std::collections::HashMap::new();
        let mut current = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('[') {
                let (id, rest) = rest.split_once("] ").expect("[id] KIND 'name'");
                let mut words = rest.split_whitespace();
                let kind = words.next().unwrap_or_default();
                let name = rest.split('\'').nth(1).unwrap_or_default().to_owned();
                let id: u32 = id.parse().expect("numeric id");
                let aggregate = matches!(kind, "STRUCT" | "UNION");
                let members = Vec::new();
                types.insert(
                    id,
                    RawType {
                        aggregate,
                        name,
                        members,
                    },
                );
                current = Some(id);
            } else if let (Some(id), Some(rest)) = (current, line.trim().strip_prefix('\'')) {
                let (name, rest) = rest.split_once('\'').expect("'member'");
                let field = |key: &str| -> u32 {
                    rest.split_whitespace()
                        .find_map(|w| w.strip_prefix(key))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(u32::MAX)
                };
                let member = (name.to_owned(), field("type_id="), field("bits_offset="));
                if let Some(ty) = types.get_mut(&id) {
                    ty.members.push(member);
                }
            }
        }
        Some(RawDump { types })
    }

    impl RawDump {
        /// The byte offset of `member` in the first struct or union named `ty` that has it,
        /// looking into anonymous members depth-first.
        fn member_offset(&self, ty: &str, member: &str) -> Option<u32> {
            let mut ids: Vec<&u32> = self.types.keys().collect();
            ids.sort();
            ids.into_iter()
                .filter(|id| {
                    self.types
                        .get(id)
                        .is_some_and(|t| t.aggregate && t.name == ty)
                })
                .find_map(|&id| self.bits_in(id, member, 0))
                .map(|bits| bits / 8)
        }

        fn bits_in(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
            if depth > 8 {
                return None;
            }
            self.types
                .get(&id)?
                .members
                .iter()
                .find_map(|(name, type_id, bits)| {
                    if name == member {
                        Some(*bits)
                    } else if name == "(anon)" {
                        Some(bits + self.bits_in(*type_id, member, depth + 1)?)
                    } else {
                        None
                    }
                })
        }
    }

    #[test]
    fn enum_values_struct_sizes_and_functions() {
        let mut b = Builder::new();
        b.ty("cgroup_subsys_id", KIND_ENUM, 3, false, 4);
        let (cpu, memory, count) = (b.name("cpu_cgrp_id"), b.name("memory_cgrp_id"), b.name("n"));
        b.word(cpu)
            .word(0)
            .word(memory)
            .word(4)
            .word(count)
            .word(13);
        b.ty("signed", KIND_ENUM, 1, true, 4);
        let minus = b.name("minus_one");
        b.word(minus).word(u32::MAX);
        b.ty("pt_regs", KIND_STRUCT, 0, false, 168);
        let proto = b.ty("", KIND_FUNC_PROTO, 0, false, 0);
        b.ty("fred_entry_from_user", 12, 0, false, proto);
        let btf = Btf::parse(&b.build()).expect("parses");
        assert_eq!(btf.enum_value("cgroup_subsys_id", "memory_cgrp_id"), Ok(4));
        assert_eq!(btf.enum_value("cgroup_subsys_id", "n"), Ok(13));
        assert_eq!(btf.enum_value("signed", "minus_one"), Ok(-1));
        assert!(matches!(
            btf.enum_value("cgroup_subsys_id", "pids_cgrp_id"),
            Err(Error::NoMember { .. })
        ));
        assert_eq!(
            btf.enum_value("nosuch", "x"),
            Err(Error::NoStruct("nosuch".into()))
        );
        assert_eq!(btf.struct_size("pt_regs"), Ok(168));
        assert!(btf.has_function("fred_entry_from_user"));
        assert!(!btf.has_function("pt_regs"));
    }

    #[test]
    fn kernel_memory_controller_and_registers() {
        let Some(btf) = kernel_btf() else { return };
        // What /proc/cgroups lists in id order says the same as the enum.
        let index = btf
            .enum_value("cgroup_subsys_id", "memory_cgrp_id")
            .expect("memory_cgrp_id");
        if let Some(row) = crate::kernel::system::memory_controller_index() {
            assert_eq!(index, i64::from(row));
        }
        assert_eq!(
            btf.struct_size("pt_regs"),
            Ok(memtrace_common::regs::PT_REGS_SIZE)
        );
    }

    #[test]
    fn kernel_missing_names() {
        let Some(btf) = kernel_btf() else { return };
        assert_eq!(
            btf.member_offset("task_struct", "no_such_member"),
            Err(Error::NoMember {
                ty: "task_struct".into(),
                member: "no_such_member".into(),
            })
        );
        assert_eq!(
            btf.member_offset("no_such_struct", "x"),
            Err(Error::NoStruct("no_such_struct".into()))
        );
    }
}
