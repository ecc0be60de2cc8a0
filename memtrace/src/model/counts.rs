//! Counts of calls and bytes by advice and by mapping syscall: what one process counted, and
//! what many summed (`super::totals`). Pure.

use std::collections::BTreeMap;

use memtrace_common::events::totals::{MapSyscall, MmapKind, SyscallTotals};

use super::event::{MapKind, MapOp, Mapping};

/// Calls with one advice value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdviceTotals {
    /// Every call, failed ones included.
    pub calls: u64,
    /// Calls that returned an error (and so advised nothing).
    pub failed: u64,
    /// Bytes covered by the calls that succeeded.
    pub bytes: u64,
}

/// A count of calls and the bytes they covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallBytes {
    pub calls: u64,
    pub bytes: u64,
}

impl CallBytes {
    pub(super) fn add(&mut self, bytes: u64) {
        self.calls += 1;
        self.bytes += bytes;
    }
}

/// Address-space changes by mmap, munmap, mremap and brk.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct MappingTotals {
    /// Successful mmap calls by kind of memory.
    pub mmap: BTreeMap<MapKind, CallBytes>,
    pub munmap: CallBytes,
    pub mremap_grow: CallBytes,
    pub mremap_shrink: CallBytes,
    pub brk_grow: CallBytes,
    pub brk_shrink: CallBytes,
    /// brk calls whose growth could not be known (the break before them was unknown).
    pub brk_unknown: u64,
    /// Failed calls per syscall (`mmap`, `munmap`, `mremap`, `brk`).
    pub failed: BTreeMap<&'static str, u64>,
    /// The break after the last brk call seen (or read from /proc at start).
    #[serde(skip)]
    pub last_brk: Option<u64>,
}

impl MappingTotals {
    pub fn mapped_bytes(&self) -> u64 {
        self.mmap.values().map(|c| c.bytes).sum()
    }

    /// Net change of the address space: mapped + grown − unmapped − shrunk, in bytes.
    pub fn net_bytes(&self) -> i128 {
        let added = self.mapped_bytes() + self.mremap_grow.bytes + self.brk_grow.bytes;
        let removed = self.munmap.bytes + self.mremap_shrink.bytes + self.brk_shrink.bytes;
        i128::from(added) - i128::from(removed)
    }

    pub(super) fn record(&mut self, m: &Mapping) {
        if m.errno.is_some() {
            let name = match m.op {
                MapOp::Mmap { .. } => "mmap",
                MapOp::Munmap { .. } => "munmap",
                MapOp::Mremap { .. } => "mremap",
                MapOp::Brk { .. } => "brk",
            };
            *self.failed.entry(name).or_default() += 1;
            return;
        }
        match m.op {
            MapOp::Mmap { len, kind, .. } => self.mmap.entry(kind).or_default().add(len),
            MapOp::Munmap { len, .. } => self.munmap.add(len),
            MapOp::Mremap {
                old_len, new_len, ..
            } if new_len >= old_len => {
                self.mremap_grow.add(new_len - old_len);
            }
            MapOp::Mremap {
                old_len, new_len, ..
            } => self.mremap_shrink.add(old_len - new_len),
            MapOp::Brk { requested, result } => self.record_brk(requested, result),
        }
    }

    /// Adds what the kernel counted (the growth of its totals since the last copy).
    pub(super) fn add_counted(&mut self, grown: &SyscallTotals) {
        let add = |into: &mut CallBytes, count: &memtrace_common::events::totals::CallCount| {
            into.calls += count.calls;
            into.bytes += count.bytes;
        };
        for &kind in MmapKind::ALL {
            let count = &grown.mmap[kind as usize];
            if count.calls > 0 {
                add(self.mmap.entry(MapKind::from(kind)).or_default(), count);
            }
        }
        add(&mut self.munmap, &grown.munmap);
        add(&mut self.mremap_grow, &grown.mremap_grow);
        add(&mut self.mremap_shrink, &grown.mremap_shrink);
        add(&mut self.brk_grow, &grown.brk_grow);
        add(&mut self.brk_shrink, &grown.brk_shrink);
        self.brk_unknown += grown.brk_unknown;
        for &syscall in MapSyscall::ALL {
            let failed = grown.failed[syscall as usize];
            if failed > 0 {
                *self.failed.entry(syscall.name()).or_default() += failed;
            }
        }
    }

    fn record_brk(&mut self, requested: u64, result: u64) {
        match self.last_brk {
            _ if requested == 0 => {}
            Some(previous) if result >= previous => self.brk_grow.add(result - previous),
            Some(previous) => self.brk_shrink.add(previous - result),
            None => self.brk_unknown += 1,
        }
        self.last_brk = Some(result);
    }
}
