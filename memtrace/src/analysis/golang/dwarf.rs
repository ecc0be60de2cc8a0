//! The Go runtime's heap fields located through a binary's DWARF: the addresses of
//! `runtime.gcController`, `runtime.memstats` and `runtime.mheap_` and the offset of every
//! field memtrace reads, as the compiler that built the binary laid them out.
//!
//! Go's linker puts the runtime's variables and its type DIEs in compilation units named
//! `runtime` (several of them: `cmd/link` `movetomodule` appends types to the runtime's), so
//! only those are kept. `.debug_info` is read as a stream, one unit at a time: the other units
//! are decompressed and dropped, so memory holds the runtime's units and one more. Globals are
//! `DW_TAG_variable`s with a `DW_OP_addr` location (DWARF 4 and, from Go 1.25, DWARF 5 alike);
//! types are referenced with `DW_FORM_ref_addr` (offsets in the section, resolved here to the
//! unit that holds them).

use std::{collections::BTreeMap, io::Read};

use gimli::{
    AttributeValue, DebugAbbrev, DebugInfo, EndianSlice, LittleEndian, Operation, UnitHeader,
    UnitOffset, constants,
};
use memtrace_common::go_runtime::{Field, Global};

use super::{
    binary::{Binary, Section},
    layout::{Layout, NoLayout},
};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// No real abbreviation table is this large; .debug_abbrev is read whole.
const MAX_ABBREV: u64 = 64 << 20;
/// Nor any one compilation unit (the runtime's holds every type of the program).
const MAX_UNIT: u64 = 1 << 30;
/// Bounds walks through typedef chains of hostile files.
const MAX_STEPS: usize = 64;
/// And through lists of children (a unit's variables and types, a struct's members).
const MAX_CHILDREN: usize = 1 << 22;
/// The compilation unit Go's linker puts the runtime's globals and all types in.
const RUNTIME_UNIT: &[u8] = b"runtime";

/// Locates every field through the DWARF of `binary` (the executable or its debug file).
pub fn layout(binary: &Binary) -> Result<Layout, NoLayout> {
    let (Some(info), Some(abbrev)) = (
        binary.section(".debug_info"),
        binary.section(".debug_abbrev"),
    ) else {
        return Err(NoLayout::NoDwarf);
    };
    let malformed = |e: &dyn std::fmt::Display| NoLayout::Malformed(format!("DWARF: {e}"));
    let abbrev = binary
        .read_section(abbrev, MAX_ABBREV)
        .map_err(|e| malformed(&e))?;
    let units = runtime_units(binary, info, &abbrev)?;
    if units.is_empty() {
        return Err(NoLayout::NoRuntimeUnit);
    }
    let types = Types::new(&units, &abbrev).map_err(|e| malformed(&e))?;
    types.layout()
}

/// A `runtime` compilation unit's bytes and where they start in `.debug_info`.
struct RuntimeUnit {
    bytes: Vec<u8>,
    base: u64,
}

/// Streams `.debug_info` unit by unit and keeps the `runtime` units.
fn runtime_units(
    binary: &Binary,
    info: &Section,
    abbrev: &[u8],
) -> Result<Vec<RuntimeUnit>, NoLayout> {
    let malformed = |what: String| NoLayout::Malformed(format!("DWARF: {what}"));
    let mut stream = binary.stream(info).map_err(|e| malformed(e.to_string()))?;
    let mut units = Vec::new();
    let mut base = 0u64;
    loop {
        let mut length = [0u8; 4];
        if !read_or_end(&mut stream, &mut length).map_err(malformed)? {
            return Ok(units);
        }
        let mut bytes = length.to_vec();
        let length = match u32::from_le_bytes(length) {
            // 64-bit DWARF: the length follows.
            0xffff_ffff => {
                let mut long = [0u8; 8];
                stream
                    .read_exact(&mut long)
                    .map_err(|e| malformed(e.to_string()))?;
                bytes.extend_from_slice(&long);
                u64::from_le_bytes(long)
            }
            length => u64::from(length),
        };
        if length > MAX_UNIT {
            return Err(malformed(format!("a unit of {length} bytes")));
        }
        let prefix = bytes.len();
        bytes.resize(prefix + length as usize, 0);
        stream
            .read_exact(&mut bytes[prefix..])
            .map_err(|e| malformed(format!("truncated .debug_info: {e}")))?;
        let next = base + bytes.len() as u64;
        if unit_name(&bytes, abbrev).as_deref() == Some(RUNTIME_UNIT) {
            units.push(RuntimeUnit { bytes, base });
        }
        base = next;
    }
}

/// Fills `buf`; `false` at a clean end of stream.
fn read_or_end(stream: &mut impl Read, buf: &mut [u8]) -> Result<bool, String> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err("truncated .debug_info".to_owned()),
            Ok(read) => filled += read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(true)
}

/// The `DW_AT_name` of a unit's root DIE, when it is an inline string (as Go writes it).
fn unit_name(bytes: &[u8], abbrev: &[u8]) -> Option<Vec<u8>> {
    let header = DebugInfo::new(bytes, LittleEndian).units().next().ok()??;
    let abbrevs = header
        .abbreviations(&DebugAbbrev::new(abbrev, LittleEndian))
        .ok()?;
    let mut entries = header.entries(&abbrevs);
    let root = entries.next_dfs().ok()??;
    match root.attr_value(constants::DW_AT_name)? {
        AttributeValue::String(name) => Some(name.slice().to_vec()),
        _ => None,
    }
}

/// One runtime unit, parsed.
struct Unit<'a> {
    header: UnitHeader<Slice<'a>>,
    abbrevs: gimli::Abbreviations,
    /// Where the unit starts in `.debug_info`, for `DW_FORM_ref_addr` references.
    base: u64,
    len: u64,
}

/// A DIE: which runtime unit, and where in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ref {
    unit: usize,
    offset: UnitOffset,
}

/// The type and variable DIEs of the runtime units.
struct Types<'a> {
    units: Vec<Unit<'a>>,
}

/// What memtrace needs of one DIE.
#[derive(Default)]
struct Die<'a> {
    tag: Option<constants::DwTag>,
    name: Option<&'a [u8]>,
    ty: Option<Ref>,
    byte_size: Option<u64>,
    member_offset: Option<u64>,
    count: Option<u64>,
    address: Option<u64>,
}

impl<'a> Types<'a> {
    fn new(units: &'a [RuntimeUnit], abbrev: &'a [u8]) -> gimli::Result<Self> {
        let debug_abbrev = DebugAbbrev::new(abbrev, LittleEndian);
        let units = units
            .iter()
            .map(|unit| {
                let header = DebugInfo::new(&unit.bytes, LittleEndian)
                    .units()
                    .next()?
                    .ok_or(gimli::Error::UnexpectedEof(gimli::ReaderOffsetId(0)))?;
                Ok(Unit {
                    abbrevs: header.abbreviations(&debug_abbrev)?,
                    header,
                    base: unit.base,
                    len: unit.bytes.len() as u64,
                })
            })
            .collect::<gimli::Result<_>>()?;
        Ok(Self { units })
    }

    fn layout(&self) -> Result<Layout, NoLayout> {
        let globals = self.globals()?;
        let mut layout = Layout::default();
        for global in Global::ALL {
            let Some(&(address, ty)) = globals.get(&global) else {
                return Err(NoLayout::GlobalMissing(global.symbol()));
            };
            layout.globals[global as usize] = address;
            layout.sizes[global as usize] = self
                .strip_typedefs(ty)
                .and_then(|ty| self.die(ty))
                .ok()
                .and_then(|die| die.byte_size);
            for &field in Field::ALL.iter().filter(|f| f.global() == global) {
                match self.resolve(ty, field) {
                    Ok(offset) => layout.offsets[field as usize] = Some(offset),
                    Err(_) if field.optional() => {}
                    Err(why) => return Err(NoLayout::FieldMissing(field.name(), why)),
                }
            }
        }
        Ok(layout)
    }

    /// The three globals' addresses and types, from the units' top-level variables.
    fn globals(&self) -> Result<BTreeMap<Global, (u64, Ref)>, NoLayout> {
        let malformed = |e: String| NoLayout::Malformed(format!("DWARF: {e}"));
        let mut found = BTreeMap::new();
        for (index, unit) in self.units.iter().enumerate() {
            let root = Ref {
                unit: index,
                offset: unit.header.root_offset(),
            };
            self.for_children(root, |die| {
                let global = die.name.and_then(|name| {
                    Global::ALL
                        .into_iter()
                        .find(|g| g.symbol().as_bytes() == name)
                });
                if let (Some(constants::DW_TAG_variable), Some(global), Some(address), Some(ty)) =
                    (die.tag, global, die.address, die.ty)
                {
                    found.insert(global, (address, ty));
                }
            })
            .map_err(malformed)?;
        }
        Ok(found)
    }

    /// The offset of `field` within its global, whose type is `ty`.
    fn resolve(&self, mut ty: Ref, field: Field) -> Result<u32, String> {
        let mut offset = 0u64;
        for part in field.path().split('.') {
            let (name, index) = split_index(part)?;
            let (member_offset, member_type) = self.member(ty, name)?;
            offset += member_offset;
            ty = member_type;
            if let Some(index) = index {
                let array = self.strip_typedefs(ty)?;
                let die = self.die(array)?;
                if die.tag != Some(constants::DW_TAG_array_type) {
                    return Err(format!("{name} is not an array"));
                }
                let element = die.ty.ok_or("an array without an element type")?;
                let count = self.array_count(array)?;
                if index >= count {
                    return Err(format!("{name} has {count} elements, not {}", index + 1));
                }
                let stride = self
                    .die(self.strip_typedefs(element)?)?
                    .byte_size
                    .ok_or("an array element without a size")?;
                offset += index * stride;
                ty = element;
            }
        }
        // The runtime's atomic wrappers (`atomic.Uint64` …) hold their word in `value`.
        if let Ok((value_offset, value_type)) = self.member(ty, "value") {
            offset += value_offset;
            ty = value_type;
        }
        let size = self
            .die(self.strip_typedefs(ty)?)?
            .byte_size
            .ok_or("a member without a size")?;
        if size != u64::from(field.width()) {
            return Err(format!("{size} bytes, not {}", field.width()));
        }
        u32::try_from(offset).map_err(|_| "offset past 4 GiB".to_owned())
    }

    /// Member `name` of the struct `ty` (through typedefs): its offset and type.
    fn member(&self, ty: Ref, name: &str) -> Result<(u64, Ref), String> {
        let ty = self.strip_typedefs(ty)?;
        if self.die(ty)?.tag != Some(constants::DW_TAG_structure_type) {
            return Err(format!("no struct holds {name}"));
        }
        let mut found = None;
        self.for_children(ty, |die| {
            if die.tag == Some(constants::DW_TAG_member) && die.name == Some(name.as_bytes()) {
                found = Some((die.member_offset, die.ty));
            }
        })?;
        match found {
            Some((Some(offset), Some(ty))) => Ok((offset, ty)),
            Some(_) => Err(format!("member {name} without offset or type")),
            None => Err(format!("no member {name}")),
        }
    }

    /// The element count of an array type, from its subrange.
    fn array_count(&self, array: Ref) -> Result<u64, String> {
        let mut count = None;
        self.for_children(array, |die| {
            if die.tag == Some(constants::DW_TAG_subrange_type) {
                count = die.count;
            }
        })?;
        count.ok_or_else(|| "an array without a count".to_owned())
    }

    /// Follows typedefs (and qualifiers) to the type they name.
    fn strip_typedefs(&self, mut ty: Ref) -> Result<Ref, String> {
        for _ in 0..MAX_STEPS {
            let die = self.die(ty)?;
            match die.tag {
                Some(
                    constants::DW_TAG_typedef
                    | constants::DW_TAG_const_type
                    | constants::DW_TAG_volatile_type,
                ) => ty = die.ty.ok_or("a typedef of nothing")?,
                _ => return Ok(ty),
            }
        }
        Err("a typedef cycle".to_owned())
    }

    fn unit(&self, at: Ref) -> Result<&Unit<'a>, String> {
        self.units
            .get(at.unit)
            .ok_or_else(|| "a reference to no unit".to_owned())
    }

    fn for_children(&self, parent: Ref, mut each: impl FnMut(Die<'a>)) -> Result<(), String> {
        let unit = self.unit(parent)?;
        let mut tree = unit
            .header
            .entries_tree(&unit.abbrevs, Some(parent.offset))
            .map_err(|e| e.to_string())?;
        let root = tree.root().map_err(|e| e.to_string())?;
        let mut children = root.children();
        for _ in 0..MAX_CHILDREN {
            let Some(child) = children.next().map_err(|e| e.to_string())? else {
                return Ok(());
            };
            each(self.read_die(parent.unit, child.entry()));
        }
        Err("too many children".to_owned())
    }

    fn die(&self, at: Ref) -> Result<Die<'a>, String> {
        let unit = self.unit(at)?;
        let mut cursor = unit
            .header
            .entries_at_offset(&unit.abbrevs, at.offset)
            .map_err(|e| e.to_string())?;
        let entry = cursor
            .next_dfs()
            .map_err(|e| e.to_string())?
            .ok_or("a reference past the unit")?;
        Ok(self.read_die(at.unit, entry))
    }

    fn read_die(
        &self,
        unit: usize,
        entry: &gimli::DebuggingInformationEntry<Slice<'a>>,
    ) -> Die<'a> {
        let mut die = Die {
            tag: Some(entry.tag()),
            ..Die::default()
        };
        for attr in entry.attrs() {
            let value = attr.value();
            match attr.name() {
                constants::DW_AT_name => {
                    if let AttributeValue::String(name) = value {
                        die.name = Some(name.slice());
                    }
                }
                constants::DW_AT_type => die.ty = self.reference(unit, &value),
                constants::DW_AT_byte_size => die.byte_size = value.udata_value(),
                constants::DW_AT_data_member_location => die.member_offset = value.udata_value(),
                constants::DW_AT_count => die.count = value.udata_value(),
                constants::DW_AT_upper_bound => {
                    die.count = die.count.or(value.udata_value().map(|b| b + 1));
                }
                constants::DW_AT_location => die.address = self.address(unit, &value),
                _ => {}
            }
        }
        die
    }

    /// A type reference: within `unit`, or (`ref_addr`) anywhere in the section, which must
    /// be one of the runtime units.
    fn reference(&self, unit: usize, value: &AttributeValue<Slice<'a>>) -> Option<Ref> {
        match *value {
            AttributeValue::UnitRef(offset) => Some(Ref { unit, offset }),
            AttributeValue::DebugInfoRef(offset) => {
                let offset = offset.0 as u64;
                self.units.iter().enumerate().find_map(|(index, u)| {
                    let within = offset.checked_sub(u.base)?;
                    (within < u.len).then_some(Ref {
                        unit: index,
                        offset: UnitOffset(within as usize),
                    })
                })
            }
            _ => None,
        }
    }

    /// The static address of a `DW_OP_addr` location.
    fn address(&self, unit: usize, value: &AttributeValue<Slice<'a>>) -> Option<u64> {
        let expression = value.exprloc_value()?;
        let encoding = self.units.get(unit)?.header.encoding();
        let mut operations = expression.operations(encoding);
        match operations.next().ok()?? {
            Operation::Address { address } => Some(address),
            _ => None,
        }
    }
}

/// `stats[2]` → (`stats`, Some(2)); `heapInUse` → (`heapInUse`, None).
fn split_index(part: &str) -> Result<(&str, Option<u64>), String> {
    let Some((name, rest)) = part.split_once('[') else {
        return Ok((part, None));
    };
    let index = rest
        .strip_suffix(']')
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| format!("bad path part {part}"))?;
    Ok((name, Some(index)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parts() {
        assert_eq!(split_index("stats[2]"), Ok(("stats", Some(2))));
        assert_eq!(split_index("heapInUse"), Ok(("heapInUse", None)));
        assert!(split_index("stats[x]").is_err());
    }

    #[test]
    fn no_dwarf_in_a_rust_binary_without_a_runtime_unit() {
        // memtrace's own test binary has DWARF but no Go runtime unit.
        let me = Binary::open(std::path::Path::new("/proc/self/exe")).unwrap();
        match layout(&me) {
            Err(NoLayout::NoDwarf | NoLayout::NoRuntimeUnit) => {}
            other => panic!("{other:?}"),
        }
    }
}
