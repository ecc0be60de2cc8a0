//! The Go runtime's own view of its memory — HeapInuse, HeapIdle, HeapReleased, stacks, GC
//! metadata, the GC goal — read from a live process without its cooperation and without
//! stopping it.
//!
//! Every field is read in one `process_vm_readv`, twice; the two reads must agree and the
//! runtime's own invariants must hold (those `runtime.ReadMemStats` checks with the world
//! stopped, `doubleCheckReadMemStats` in mstats.go), else memtrace reads again, a few times,
//! then gives up with a reason rather than numbers. Each figure says how it was obtained:
//!
//! - `word`: one aligned word the runtime keeps (HeapInuse, HeapReleased, the `*_sys` gauges);
//! - `sum`: several words added as `ReadMemStats` does (HeapIdle, Sys, the consistent-stats
//!   ring's three slots for StackInuse and GC work buffers);
//! - `lower_bound`: HeapAlloc, which misses what per-P caches allocated since their last flush
//!   (ReadMemStats flushes them with the world stopped);
//! - `overestimate`: the pacer's heapLive, which counts a cached span as used whole;
//! - `computed`: NextGC, the runtime's `heapGoal()` worked out from its inputs.
//!
//! How `ReadMemStats` derives each figure: `readmemstats_m` in mstats.go (the same from Go
//! 1.20 on; 1.19 differs only in always running its checks; 1.25 dropped `inPtrScalarBits`).

use std::{thread, time::Duration};

use memtrace_common::go_runtime::Field;
use schemars::JsonSchema;
use serde::Serialize;

use super::layout::Layout;
use crate::kernel::procmem::{self, Range, ReadError};

/// Attempts at a stable, consistent read before giving up, and the pause between them: a
/// thread the scheduler parks between two updates of one operation (a span allocation moves
/// bytes from heapFree to heapInUse in steps) leaves the words inconsistent until it runs.
const ATTEMPTS: u32 = 20;
const PAUSE: Duration = Duration::from_millis(5);
/// The runtime changes its heap gauges in whole pages; the OS page is the least of them.
const PAGE: u64 = 4096;
/// `math.MaxInt64`: GOMEMLIMIT when none is set.
const NO_LIMIT: u64 = i64::MAX as u64;

/// Where the fields are in one process, and how that was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub layout: Layout,
    /// Added to link-time addresses: 0 for a fixed-address executable, the ASLR offset of a
    /// position-independent one (AT_ENTRY − e_entry).
    pub bias: u64,
    /// `(major, minor)` of the Go release, for what differs between releases.
    pub go: (u32, u32),
    /// How the globals and offsets were located, in a few words (`"DWARF"`, …).
    pub located_by: String,
    /// Something the user should know about the location (a table that disagrees with DWARF).
    pub note: Option<String>,
}

/// How a figure was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum How {
    Word,
    Sum,
    LowerBound,
    Overestimate,
    Computed,
}

impl How {
    pub const fn word(self) -> &'static str {
        match self {
            Self::Word => "word",
            Self::Sum => "sum",
            Self::LowerBound => "lower bound",
            Self::Overestimate => "overestimate",
            Self::Computed => "computed",
        }
    }
}

/// One figure, in bytes, with how it was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    pub bytes: u64,
    pub how: How,
}

const fn word(bytes: u64) -> Figure {
    Figure {
        bytes,
        how: How::Word,
    }
}

const fn sum(bytes: u64) -> Figure {
    Figure {
        bytes,
        how: How::Sum,
    }
}

/// The runtime's figures, named as `runtime.MemStats` names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    pub heap_inuse: Figure,
    /// Idle spans: not yet returned to the OS (`heapFree`) plus returned (HeapReleased).
    pub heap_idle: Figure,
    pub heap_released: Figure,
    pub heap_sys: Figure,
    /// Sys − HeapReleased (`gcController.mappedReady`): everything the runtime has mapped and
    /// not released — the most of RSS the runtime can account for, and what GOMEMLIMIT limits.
    pub ready: Figure,
    pub stack_inuse: Figure,
    pub stack_sys: Figure,
    pub mspan_inuse: Figure,
    pub mspan_sys: Figure,
    pub mcache_inuse: Figure,
    pub mcache_sys: Figure,
    pub buck_hash_sys: Figure,
    pub gc_sys: Figure,
    pub other_sys: Figure,
    pub sys: Figure,
    pub heap_alloc: Figure,
    /// The pacer's live heap.
    pub heap_live: Figure,
    /// The heap the last GC marked live.
    pub heap_marked: Figure,
    pub next_gc: Figure,
    /// GOGC; `None` when off (`GOGC=off`).
    pub gogc: Option<i32>,
    /// GOMEMLIMIT in bytes; `None` when unset.
    pub gomemlimit: Option<u64>,
    pub num_gc: u32,
    /// When the last GC ended, in ns since the Unix epoch; `None` before the first.
    pub last_gc_unix_ns: Option<u64>,
}

/// Why there are no figures: a stable code and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub code: ReasonCode,
    pub text: String,
}

/// The kinds of reasons, as JSON names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Go before 1.19 keeps its heap gauges elsewhere (`memstats.heap_*`).
    GoTooOld,
    /// Not a 64-bit x86 ELF executable, or the Go runtime lives in a shared library.
    UnsupportedBinary,
    /// No DWARF, no symbol table, and no anchor function memtrace can decode.
    Stripped,
    /// No DWARF and no generated offsets for this Go release (or build).
    UnknownLayout,
    /// DWARF or symbols present, but the globals or fields are not where they should be.
    NotLocated,
    /// ptrace access to the process is denied by policy.
    PtraceDenied,
    /// The process exited.
    Exited,
    /// Its memory could not be read (an address not mapped, another error).
    Unreadable,
    /// The figures read break the runtime's own invariants: wrong offsets, or a torn read.
    Inconsistent,
}

impl ReasonCode {
    /// The code as JSON writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::GoTooOld => "go_too_old",
            Self::UnsupportedBinary => "unsupported_binary",
            Self::Stripped => "stripped",
            Self::UnknownLayout => "unknown_layout",
            Self::NotLocated => "not_located",
            Self::PtraceDenied => "ptrace_denied",
            Self::Exited => "exited",
            Self::Unreadable => "unreadable",
            Self::Inconsistent => "inconsistent",
        }
    }
}

impl Reason {
    pub fn new(code: ReasonCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }

    /// The reason a read of the process's memory (or auxv) failed.
    pub fn from_read(error: &ReadError) -> Self {
        let code = match error {
            ReadError::Gone => ReasonCode::Exited,
            ReadError::Denied => ReasonCode::PtraceDenied,
            ReadError::Unmapped { .. } | ReadError::Other(_) => ReasonCode::Unreadable,
        };
        Self::new(code, error.to_string())
    }
}

/// The raw words of one read, by field (signed fields sign-extended).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Words([Option<i128>; Field::COUNT]);

impl Words {
    fn get(&self, field: Field) -> i128 {
        self.0[field as usize].unwrap_or(0)
    }

    fn unsigned(&self, field: Field) -> u64 {
        u64::try_from(self.get(field)).unwrap_or(0)
    }

    /// The three ring slots of a per-slot field, added.
    fn ring(&self, slot0: Field) -> i128 {
        Field::ring(slot0).iter().map(|&f| self.get(f)).sum()
    }
}

/// Reads the figures of process `pid`, retrying until a read is stable and consistent.
pub fn read(pid: u32, located: &Located) -> Result<Figures, Reason> {
    read_within(pid, located, ATTEMPTS)
}

/// One attempt, for periodic samples (the live view, /metrics) that must not hold up the loop:
/// a read that fails is simply not shown this time.
pub fn read_once(pid: u32, located: &Located) -> Result<Figures, Reason> {
    read_within(pid, located, 1)
}

fn read_within(pid: u32, located: &Located, attempts: u32) -> Result<Figures, Reason> {
    let fields: Vec<(Field, u64)> = Field::ALL
        .iter()
        .filter_map(|&f| Some((f, located.layout.address(f)?.checked_add(located.bias)?)))
        .collect();
    let ranges: Vec<Range> = fields
        .iter()
        .map(|&(field, addr)| Range {
            addr,
            len: usize::from(field.width()),
        })
        .collect();
    let mut last = String::new();
    for attempt in 0..attempts {
        if attempt > 0 {
            thread::sleep(PAUSE);
        }
        let first = read_words(pid, &fields, &ranges)?;
        let second = read_words(pid, &fields, &ranges)?;
        if first != second {
            last = "the figures kept changing between two reads".to_owned();
            continue;
        }
        match check(&first) {
            Ok(()) => return Ok(figures(&first, located.go)),
            Err(why) => last = why,
        }
    }
    Err(Reason::new(
        ReasonCode::Inconsistent,
        format!(
            "the runtime's own invariants do not hold in {attempts} reads ({last}): the layout \
             does not match this binary, or the process is changing its heap too fast to read"
        ),
    ))
}

/// One `process_vm_readv` of every field.
fn read_words(pid: u32, fields: &[(Field, u64)], ranges: &[Range]) -> Result<Words, Reason> {
    let total = ranges.iter().map(|r| r.len).sum();
    let mut bytes = vec![0u8; total];
    procmem::read_ranges(pid, ranges, &mut bytes).map_err(|e| Reason::from_read(&e))?;
    let mut words = Words([None; Field::COUNT]);
    let mut at = 0;
    for &(field, _) in fields {
        let width = usize::from(field.width());
        let Some(raw) = bytes.get(at..at + width) else {
            break;
        };
        at += width;
        let value = match (width, field.signed()) {
            (4, true) => raw.try_into().map(|b| i128::from(i32::from_le_bytes(b))),
            (4, false) => raw.try_into().map(|b| i128::from(u32::from_le_bytes(b))),
            (_, true) => raw.try_into().map(|b| i128::from(i64::from_le_bytes(b))),
            (_, false) => raw.try_into().map(|b| i128::from(u64::from_le_bytes(b))),
        };
        words.0[field as usize] = value.ok();
    }
    Ok(words)
}

/// The runtime's own invariants (`doubleCheckReadMemStats`), which wrong offsets or a read in
/// the middle of an update break.
fn check(w: &Words) -> Result<(), String> {
    let heap_in_use = w.get(Field::HeapInUse);
    let heap_free = w.get(Field::HeapFree);
    let heap_released = w.get(Field::HeapReleased);
    if heap_in_use <= 0 {
        return Err("HeapInuse is not positive".to_owned());
    }
    for field in [Field::HeapInUse, Field::HeapFree, Field::HeapReleased] {
        if w.get(field) < 0 || w.get(field) % i128::from(PAGE) != 0 {
            return Err(format!("{} is not a whole number of pages", field.name()));
        }
    }
    let equal = |what: &str, left: i128, right: i128| {
        if left == right {
            Ok(())
        } else {
            Err(format!("{what}: {left} ≠ {right}"))
        }
    };
    equal(
        "heapInUse vs the ring's inHeap",
        heap_in_use,
        w.ring(Field::InHeap0),
    )?;
    equal(
        "heapReleased vs the ring's released",
        heap_released,
        w.ring(Field::Released0),
    )?;
    equal(
        "heapInUse + heapFree vs the ring's committed − stacks − work buffers − bitmaps",
        heap_in_use + heap_free,
        w.ring(Field::Committed0)
            - w.ring(Field::InStacks0)
            - w.ring(Field::InWorkBufs0)
            - w.ring(Field::InPtrScalarBits0),
    )?;
    equal(
        "mappedReady vs Sys − HeapReleased",
        w.get(Field::MappedReady),
        i128::from(sys(w)) - heap_released,
    )?;
    if w.get(Field::TotalAlloc) < w.get(Field::TotalFree) {
        return Err("more freed than allocated".to_owned());
    }
    if w.get(Field::GcPercent) < -1 || w.get(Field::MemoryLimit) < 0 {
        return Err("GOGC or GOMEMLIMIT out of range".to_owned());
    }
    Ok(())
}

/// Sys, as `readmemstats_m` adds it up.
fn sys(w: &Words) -> u64 {
    let total = w.get(Field::HeapInUse)
        + w.get(Field::HeapFree)
        + w.get(Field::HeapReleased)
        + w.get(Field::StacksSys)
        + w.get(Field::MspanSys)
        + w.get(Field::McacheSys)
        + w.get(Field::BuckhashSys)
        + w.get(Field::GcMiscSys)
        + w.get(Field::OtherSys)
        + w.ring(Field::InStacks0)
        + w.ring(Field::InWorkBufs0)
        + w.ring(Field::InPtrScalarBits0);
    u64::try_from(total).unwrap_or(0)
}

fn figures(w: &Words, go: (u32, u32)) -> Figures {
    let u = |field| w.unsigned(field);
    let ring = |slot0| u64::try_from(w.ring(slot0)).unwrap_or(0);
    let stack_inuse = ring(Field::InStacks0);
    let heap_alloc = u(Field::TotalAlloc).saturating_sub(u(Field::TotalFree));
    let gogc = i32::try_from(w.get(Field::GcPercent))
        .ok()
        .filter(|&p| p >= 0);
    let limit = u(Field::MemoryLimit);
    let last_gc = u(Field::LastGcUnix);
    Figures {
        heap_inuse: word(u(Field::HeapInUse)),
        heap_idle: sum(u(Field::HeapFree) + u(Field::HeapReleased)),
        heap_released: word(u(Field::HeapReleased)),
        heap_sys: sum(u(Field::HeapInUse) + u(Field::HeapFree) + u(Field::HeapReleased)),
        ready: word(u(Field::MappedReady)),
        stack_inuse: sum(stack_inuse),
        stack_sys: sum(stack_inuse + u(Field::StacksSys)),
        mspan_inuse: word(u(Field::SpanallocInuse)),
        mspan_sys: word(u(Field::MspanSys)),
        mcache_inuse: word(u(Field::CacheallocInuse)),
        mcache_sys: word(u(Field::McacheSys)),
        buck_hash_sys: word(u(Field::BuckhashSys)),
        gc_sys: sum(u(Field::GcMiscSys) + ring(Field::InWorkBufs0) + ring(Field::InPtrScalarBits0)),
        other_sys: word(u(Field::OtherSys)),
        sys: sum(sys(w)),
        heap_alloc: Figure {
            bytes: heap_alloc,
            how: How::LowerBound,
        },
        heap_live: Figure {
            bytes: u(Field::HeapLive),
            how: How::Overestimate,
        },
        heap_marked: word(u(Field::HeapMarked)),
        next_gc: Figure {
            bytes: heap_goal(w, go),
            how: How::Computed,
        },
        gogc,
        gomemlimit: (limit != NO_LIMIT).then_some(limit),
        num_gc: u32::try_from(u(Field::NumGc)).unwrap_or(u32::MAX),
        last_gc_unix_ns: (last_gc != 0).then_some(last_gc),
    }
}

/// `gcControllerState.heapGoal()` (mgcpacer.go, the same from Go 1.19 on): the GOGC goal,
/// lowered to the memory limit's goal when that is smaller, else raised to keep the sweeper's
/// distance and 64 KiB of runway past the trigger.
fn heap_goal(w: &Words, go: (u32, u32)) -> u64 {
    const MIN_RUNWAY: u64 = 64 << 10;
    let mut goal = w.unsigned(Field::GcPercentHeapGoal);
    let limit_goal = memory_limit_goal(w, go);
    if limit_goal < goal {
        return limit_goal;
    }
    goal = goal.max(w.unsigned(Field::SweepDistMinTrigger));
    let triggered = w.unsigned(Field::Triggered);
    if triggered != u64::MAX && goal < triggered.saturating_add(MIN_RUNWAY) {
        goal = triggered + MIN_RUNWAY;
    }
    goal
}

/// `memoryLimitHeapGoal()`: the limit less what is not heap, less headroom (1 MiB before Go
/// 1.21; 3 % of the goal, at least 1 MiB, since), never below the live heap.
fn memory_limit_goal(w: &Words, go: (u32, u32)) -> u64 {
    const MIN_HEADROOM: u64 = 1 << 20;
    let heap_free = w.unsigned(Field::HeapFree);
    let heap_alloc = w
        .unsigned(Field::TotalAlloc)
        .saturating_sub(w.unsigned(Field::TotalFree));
    let mapped_ready = w.unsigned(Field::MappedReady);
    let limit = w.unsigned(Field::MemoryLimit);
    let heap_marked = w.unsigned(Field::HeapMarked);
    let non_heap = mapped_ready.saturating_sub(heap_free + heap_alloc);
    let overage = mapped_ready.saturating_sub(limit);
    if non_heap + overage >= limit {
        return heap_marked;
    }
    let goal = limit - (non_heap + overage);
    let headroom = if go >= (1, 21) {
        (goal / 100 * 3).max(MIN_HEADROOM)
    } else {
        MIN_HEADROOM
    };
    let goal = if goal < headroom || goal - headroom < headroom {
        headroom
    } else {
        goal - headroom
    };
    goal.max(heap_marked)
}

/// Figures of a consistent read (10 MiB in use, 6 MiB idle of which 4 MiB released, 512 KiB of
/// stacks), for other modules' tests.
#[cfg(test)]
pub fn example() -> Figures {
    figures(&tests::consistent(), (1, 22))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i128 = 1 << 20;

    /// A consistent set of words: 10 MiB in use, 2 MiB free, 4 MiB released; stacks 512 KiB.
    pub(super) fn consistent() -> Words {
        let mut w = Words([Some(0); Field::COUNT]);
        let mut set = |f: Field, v: i128| w.0[f as usize] = Some(v);
        set(Field::HeapInUse, 10 * MIB);
        set(Field::HeapFree, 2 * MIB);
        set(Field::HeapReleased, 4 * MIB);
        // The ring: spread over slots, as concurrent writers leave it.
        set(Field::InHeap0, 6 * MIB);
        set(Field::InHeap2, 4 * MIB);
        set(Field::Released1, 4 * MIB);
        set(Field::InStacks0, MIB / 2);
        set(Field::InWorkBufs1, MIB / 4);
        set(Field::Committed0, 12 * MIB + MIB / 2 + MIB / 4);
        set(Field::StacksSys, MIB / 8);
        set(Field::OtherSys, MIB);
        set(Field::GcMiscSys, MIB);
        set(Field::TotalAlloc, 100 * MIB);
        set(Field::TotalFree, 92 * MIB);
        set(Field::GcPercent, 100);
        set(Field::MemoryLimit, i64::MAX.into());
        set(Field::GcPercentHeapGoal, 16 * MIB);
        set(Field::Triggered, u64::MAX.into());
        let sys = sys(&w);
        w.0[Field::MappedReady as usize] = Some(i128::from(sys) - 4 * MIB);
        w
    }

    #[test]
    fn a_consistent_read_gives_figures_by_how_they_were_obtained() {
        let w = consistent();
        assert_eq!(check(&w), Ok(()));
        let f = figures(&w, (1, 22));
        assert_eq!(f.heap_inuse, word(10 << 20));
        assert_eq!(f.heap_idle, sum(6 << 20));
        assert_eq!(f.heap_sys, sum(16 << 20));
        assert_eq!(f.stack_inuse, sum(512 << 10));
        assert_eq!(f.stack_sys, sum((512 << 10) + (128 << 10)));
        assert_eq!(f.gc_sys, sum((1 << 20) + (256 << 10)));
        assert_eq!(f.heap_alloc.how, How::LowerBound);
        assert_eq!(f.heap_alloc.bytes, 8 << 20);
        assert_eq!(f.ready.bytes, f.sys.bytes - (4 << 20));
        assert_eq!(f.gogc, Some(100));
        assert_eq!(f.gomemlimit, None);
        assert_eq!(
            f.next_gc,
            Figure {
                bytes: 16 << 20,
                how: How::Computed
            }
        );
        assert_eq!(f.last_gc_unix_ns, None);
    }

    #[test]
    fn broken_invariants_are_named() {
        let mut w = consistent();
        w.0[Field::InHeap1 as usize] = Some(8192);
        assert!(
            check(&w)
                .unwrap_err()
                .starts_with("heapInUse vs the ring's inHeap")
        );
        let mut w = consistent();
        w.0[Field::HeapFree as usize] = Some(3 * MIB);
        assert!(check(&w).is_err());
        let mut w = consistent();
        w.0[Field::HeapInUse as usize] = Some(0);
        assert_eq!(check(&w), Err("HeapInuse is not positive".to_owned()));
        let mut w = consistent();
        w.0[Field::MappedReady as usize] = Some(MIB);
        assert!(check(&w).unwrap_err().starts_with("mappedReady"));
    }

    #[test]
    fn heap_goal_follows_the_runtime() {
        let mut w = consistent();
        // GOGC's goal stands when there is no limit.
        assert_eq!(heap_goal(&w, (1, 22)), 16 << 20);
        // Raised to 64 KiB past the trigger.
        w.0[Field::Triggered as usize] = Some(16 * MIB);
        assert_eq!(heap_goal(&w, (1, 22)), (16 << 20) + (64 << 10));
        // A 20 MiB limit: 20 MiB less what is not heap (ready − free − alloc), less 1 MiB.
        w.0[Field::MemoryLimit as usize] = Some(20 * MIB);
        let ready = w.unsigned(Field::MappedReady);
        let non_heap = ready - (2 << 20) - (8 << 20);
        let expected = (20 << 20) - non_heap - (1 << 20);
        assert_eq!(heap_goal(&w, (1, 22)), expected.min(16 << 20));
        // A limit below what is not heap: the live heap.
        w.0[Field::MemoryLimit as usize] = Some(MIB);
        w.0[Field::HeapMarked as usize] = Some(5 * MIB);
        assert_eq!(heap_goal(&w, (1, 19)), 5 << 20);
    }

    #[test]
    fn reads_its_own_words_as_a_process() {
        // Our own memory laid out like a tiny runtime: every field read back in one call.
        let w = consistent();
        let words: Vec<u64> = Field::ALL.iter().map(|&f| w.get(f) as u64).collect();
        let base = words.as_ptr() as u64;
        let mut layout = Layout::default();
        for (index, &field) in Field::ALL.iter().enumerate() {
            layout.globals[field.global() as usize] = 0;
            layout.offsets[field as usize] = Some(u32::try_from(index * 8).unwrap());
        }
        let located = Located {
            layout,
            bias: base,
            go: (1, 22),
            located_by: "test".to_owned(),
            note: None,
        };
        let f = read(std::process::id(), &located).unwrap();
        assert_eq!(f.heap_inuse.bytes, 10 << 20);
        assert_eq!(f.stack_inuse.bytes, 512 << 10);
        assert_eq!(f.gogc, Some(100));
        let gone = read(u32::MAX >> 1, &located).unwrap_err();
        assert_eq!(gone.code, ReasonCode::Exited);
    }
}
