//! The globals the loader sets (see `memtrace_common::config`): how this run behaves, and the
//! offsets of the tracepoint fields and struct members on the running kernel.
//!
//! They live in read-only data that the loader rewrites before the programs are loaded, so the
//! verifier sees them as constants. Every read is volatile: otherwise the compiler would fold in
//! the placeholder values below.

use aya_ebpf::{EbpfContext as _, programs::TracePointContext};
use memtrace_common::{
    config::{Config, FieldOffsets, MemberOffsets},
    fields::Field,
    members::Member,
};

#[unsafe(no_mangle)]
static CONFIG: Config = Config::DEFAULT;

#[unsafe(no_mangle)]
static FIELD_OFFSETS: FieldOffsets = [0; Field::COUNT];

#[unsafe(no_mangle)]
static MEMBER_OFFSETS: MemberOffsets = [0; Member::COUNT];

/// This run's configuration.
#[inline(always)]
pub fn config() -> &'static Config {
    &CONFIG
}

/// Reads one setting, e.g. `setting(&config().follow_forks)`.
#[inline(always)]
pub fn setting<T: Copy>(value: &'static T) -> T {
    // SAFETY: a reference to a global; see the module comment for why the read is volatile.
    unsafe { core::ptr::read_volatile(value) }
}

/// Whether this run measures the hooks' own cost: every program returns at once. The
/// verifier knows the value, so in a normal run the check is pruned, and in a floor run the
/// rest of the program is.
#[inline(always)]
pub fn empty_programs() -> bool {
    setting(&config().empty_programs) != 0
}

/// Where a field sits in its tracepoint's record here; 0 when it does not exist.
#[inline(always)]
pub fn offset(field: Field) -> usize {
    setting(&FIELD_OFFSETS[field as usize]) as usize
}

/// Where a struct member sits here; 0 when unknown.
#[inline(always)]
pub fn member(member: Member) -> u64 {
    u64::from(setting(&MEMBER_OFFSETS[member as usize]))
}

/// A field at its offset on this kernel, or `absent` when the field does not exist here.
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, field: Field, absent: T) -> T {
    let at = offset(field);
    if at == 0 {
        return absent;
    }
    // SAFETY: the offset comes from this kernel's format file for this tracepoint; the read
    // is checked by bpf_probe_read.
    unsafe { ctx.read_at::<T>(at) }.unwrap_or(absent)
}

/// A field at a constant offset, loaded straight from the context: tracepoint programs may
/// read their record directly (the verifier checks the offset), while `read_at` makes a
/// `bpf_probe_read` helper call per field: ~18 ns each on the benchmark machine, ~100 ns of
/// mmap_enter's ~210 (BENCHMARKS.md, item 8).
///
/// # Safety
/// `OFFSET` and `T` must lie within the tracepoint's record (its tracefs format file).
#[inline(always)]
pub unsafe fn record_field<T: Copy, const OFFSET: usize>(ctx: &TracePointContext) -> T {
    // SAFETY: per the contract; a constant offset compiles to one load from the context.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(OFFSET).cast::<T>()) }
}
