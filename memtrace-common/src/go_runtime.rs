//! The Go runtime's own heap figures that memtrace reads from a live Go process: which globals
//! and fields they live in (Go ≥ 1.19, where `runtime.gcController` holds the heap gauges).
//!
//! Shared by `memtrace`, which finds each field through the binary's DWARF (or its symbol table
//! and a generated offset table), and by xtask's generator of that table, which resolves the
//! same paths in the DWARF of every Go toolchain the tests build with. Neither keeps a copy.
//!
//! A path names a member of the global's type, dots descending into struct members and `[n]`
//! into array elements; a member whose type is one of the runtime's atomic wrappers
//! (`atomic.Uint64` and the like) means its `value`. Where each figure comes from and how
//! `runtime.ReadMemStats` derives the rest: `mstats.go` (`readmemstats_m`) and `mgcpacer.go`
//! of each Go release.

/// A runtime global that holds heap figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Global {
    /// `runtime.gcController` (`gcControllerState`): the heap gauges, allocation totals and
    /// the pacer's inputs.
    GcController,
    /// `runtime.memstats` (`mstats`): the consistent-stats ring (stacks, work buffers) and the
    /// `*_sys` gauges.
    Memstats,
    /// `runtime.mheap_` (`mheap`): the span and mcache allocators' in-use bytes.
    Mheap,
}

impl Global {
    pub const ALL: [Self; 3] = [Self::GcController, Self::Memstats, Self::Mheap];

    /// The symbol, as the symbol table and DWARF name it.
    pub const fn symbol(self) -> &'static str {
        match self {
            Self::GcController => "runtime.gcController",
            Self::Memstats => "runtime.memstats",
            Self::Mheap => "runtime.mheap_",
        }
    }

    /// Its name without the package, as field names start.
    pub const fn short(self) -> &'static str {
        match self {
            Self::GcController => "gcController",
            Self::Memstats => "memstats",
            Self::Mheap => "mheap_",
        }
    }

    pub fn from_short(short: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|global| global.short() == short)
    }
}

/// The consistent-stats ring (`memstats.heapStats.stats`) has this many slots; readers outside
/// the runtime sum them, as `consistentHeapStats.unsafeRead` does.
pub const RING_SLOTS: usize = 3;

named_enum! {
    /// A field memtrace reads; its name is the global's short name and the path below it.
    pub enum Field {
        HeapInUse = 0 => "gcController.heapInUse",
        HeapFree = 1 => "gcController.heapFree",
        HeapReleased = 2 => "gcController.heapReleased",
        /// Sys − HeapReleased: what GOMEMLIMIT is enforced against.
        MappedReady = 3 => "gcController.mappedReady",
        TotalAlloc = 4 => "gcController.totalAlloc",
        TotalFree = 5 => "gcController.totalFree",
        /// The pacer's view of the live heap: an overestimate by design.
        HeapLive = 6 => "gcController.heapLive",
        /// The heap marked live by the last GC.
        HeapMarked = 7 => "gcController.heapMarked",
        /// GOGC (-1: off).
        GcPercent = 8 => "gcController.gcPercent",
        /// GOMEMLIMIT in bytes (math.MaxInt64: none).
        MemoryLimit = 9 => "gcController.memoryLimit",
        /// The heap goal GOGC alone sets; `heapGoal()` adjusts it with the three below.
        GcPercentHeapGoal = 10 => "gcController.gcPercentHeapGoal",
        SweepDistMinTrigger = 11 => "gcController.sweepDistMinTrigger",
        Triggered = 12 => "gcController.triggered",
        LastHeapGoal = 13 => "gcController.lastHeapGoal",
        Committed0 = 14 => "memstats.heapStats.stats[0].committed",
        Committed1 = 15 => "memstats.heapStats.stats[1].committed",
        Committed2 = 16 => "memstats.heapStats.stats[2].committed",
        Released0 = 17 => "memstats.heapStats.stats[0].released",
        Released1 = 18 => "memstats.heapStats.stats[1].released",
        Released2 = 19 => "memstats.heapStats.stats[2].released",
        InHeap0 = 20 => "memstats.heapStats.stats[0].inHeap",
        InHeap1 = 21 => "memstats.heapStats.stats[1].inHeap",
        InHeap2 = 22 => "memstats.heapStats.stats[2].inHeap",
        InStacks0 = 23 => "memstats.heapStats.stats[0].inStacks",
        InStacks1 = 24 => "memstats.heapStats.stats[1].inStacks",
        InStacks2 = 25 => "memstats.heapStats.stats[2].inStacks",
        InWorkBufs0 = 26 => "memstats.heapStats.stats[0].inWorkBufs",
        InWorkBufs1 = 27 => "memstats.heapStats.stats[1].inWorkBufs",
        InWorkBufs2 = 28 => "memstats.heapStats.stats[2].inWorkBufs",
        /// GC program bitmaps: Go ≤ 1.24 only.
        InPtrScalarBits0 = 29 => "memstats.heapStats.stats[0].inPtrScalarBits",
        InPtrScalarBits1 = 30 => "memstats.heapStats.stats[1].inPtrScalarBits",
        InPtrScalarBits2 = 31 => "memstats.heapStats.stats[2].inPtrScalarBits",
        StacksSys = 32 => "memstats.stacks_sys",
        MspanSys = 33 => "memstats.mspan_sys",
        McacheSys = 34 => "memstats.mcache_sys",
        BuckhashSys = 35 => "memstats.buckhash_sys",
        GcMiscSys = 36 => "memstats.gcMiscSys",
        OtherSys = 37 => "memstats.other_sys",
        NumGc = 38 => "memstats.numgc",
        LastGcUnix = 39 => "memstats.last_gc_unix",
        SpanallocInuse = 40 => "mheap_.spanalloc.inuse",
        CacheallocInuse = 41 => "mheap_.cachealloc.inuse",
    }
}

impl Field {
    /// The global it lives in.
    pub fn global(self) -> Global {
        let (short, _) = self.name().split_once('.').unwrap_or_default();
        match Global::from_short(short) {
            Some(global) => global,
            // Every name starts with a global's short name (a unit test checks).
            None => Global::GcController,
        }
    }

    /// The path below the global.
    pub fn path(self) -> &'static str {
        self.name().split_once('.').map_or("", |(_, path)| path)
    }

    /// Its size in bytes: every field is an integer of this width.
    pub const fn width(self) -> u8 {
        match self {
            Self::GcPercent | Self::NumGc => 4,
            _ => 8,
        }
    }

    /// Whether the value is signed (`int32`, `int64`).
    pub const fn signed(self) -> bool {
        matches!(
            self,
            Self::GcPercent
                | Self::MemoryLimit
                | Self::Committed0
                | Self::Committed1
                | Self::Committed2
                | Self::Released0
                | Self::Released1
                | Self::Released2
                | Self::InHeap0
                | Self::InHeap1
                | Self::InHeap2
                | Self::InStacks0
                | Self::InStacks1
                | Self::InStacks2
                | Self::InWorkBufs0
                | Self::InWorkBufs1
                | Self::InWorkBufs2
                | Self::InPtrScalarBits0
                | Self::InPtrScalarBits1
                | Self::InPtrScalarBits2
        )
    }

    /// Whether a Go release may lack it: `inPtrScalarBits` went away in Go 1.25.
    pub const fn optional(self) -> bool {
        matches!(
            self,
            Self::InPtrScalarBits0 | Self::InPtrScalarBits1 | Self::InPtrScalarBits2
        )
    }

    /// The three ring slots of a per-slot field, by its slot-0 variant.
    pub const fn ring(slot0: Self) -> [Self; RING_SLOTS] {
        match slot0 {
            Self::Committed0 => [Self::Committed0, Self::Committed1, Self::Committed2],
            Self::Released0 => [Self::Released0, Self::Released1, Self::Released2],
            Self::InHeap0 => [Self::InHeap0, Self::InHeap1, Self::InHeap2],
            Self::InStacks0 => [Self::InStacks0, Self::InStacks1, Self::InStacks2],
            Self::InWorkBufs0 => [Self::InWorkBufs0, Self::InWorkBufs1, Self::InWorkBufs2],
            _ => [
                Self::InPtrScalarBits0,
                Self::InPtrScalarBits1,
                Self::InPtrScalarBits2,
            ],
        }
    }
}

/// Runtime functions that every Go program links and that address the globals RIP-relative.
/// In a fully stripped binary `.gopclntab` still names them, so decoding their instructions at
/// the offsets the generated table records for the binary's Go release gives the globals'
/// addresses. Several, so that one whose code differs (another build mode) does not end it.
pub const ANCHORS: [&str; 4] = [
    "runtime.(*mheap).allocSpan",
    "runtime.(*mcache).refill",
    "runtime.(*mheap).grow",
    "runtime.(*mheap).sysAlloc",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_names_a_global_and_a_path() {
        for &field in Field::ALL {
            let (short, path) = field.name().split_once('.').unwrap();
            assert!(Global::from_short(short).is_some(), "{}", field.name());
            assert_eq!(field.global().short(), short);
            assert_eq!(field.path(), path);
        }
        let slots = [
            Field::Committed0,
            Field::Released0,
            Field::InHeap0,
            Field::InStacks0,
            Field::InWorkBufs0,
            Field::InPtrScalarBits0,
        ];
        for slot0 in slots {
            for (slot, field) in Field::ring(slot0).into_iter().enumerate() {
                assert!(field.path().contains(slot_index(slot)), "{}", field.name());
                assert!(field.signed());
            }
        }
    }

    fn slot_index(slot: usize) -> &'static str {
        ["[0]", "[1]", "[2]"][slot]
    }
}
