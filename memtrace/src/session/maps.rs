//! The kernel's maps, read at one instant and applied to the model: fault counters, RSS
//! states, stall histograms, kswapd wakeups, scan counts, lost records, stack counts and
//! syscall totals.

use std::collections::BTreeMap;

use memtrace_common::{
    events::{
        fault::FaultCounts,
        kswapd::KswapdWakeups,
        stall::{ReclaimKind, ScanCounts, ScanSlot, StallHist, StallKey},
        totals::SyscallTotals,
    },
    stacks::{StackCounts, StackKey},
};

use super::Session;
use crate::{
    kernel::LostCounts,
    model::{attribution::Rss, event, reclaim::Wakeups},
};

type StallMaps = (Vec<(StallKey, StallHist)>, Vec<(ReclaimKind, StallHist)>);

/// The kernel's maps at one sampling instant, read before the ring is drained and applied after.
pub(super) struct KernelSample {
    faults: BTreeMap<u32, FaultCounts>,
    rss: BTreeMap<u32, Rss>,
    /// Per process and kind, and for every process per kind.
    stalls: StallMaps,
    wakeups: Vec<(u32, KswapdWakeups)>,
    scans: [ScanCounts; ScanSlot::COUNT],
    lost: LostCounts,
    /// Memory syscalls counted per process, when the kernel counts them.
    totals: Vec<(u32, SyscallTotals)>,
    stacks: Vec<(StackKey, StackCounts)>,
}

impl Session {
    /// The kernel's maps, read at one instant.
    pub(super) fn read_kernel(&mut self) -> KernelSample {
        let tracer = &mut self.tracer;
        KernelSample {
            faults: tracer.faults(),
            rss: Rss::by_process(&tracer.rss()),
            stalls: (tracer.stalls(), tracer.stalls_all()),
            wakeups: tracer.kswapd_wakeups(),
            scans: tracer.lru_scan(),
            lost: tracer.lost(),
            stacks: match self.symbols {
                Some(_) => tracer.stack_counts(),
                None => Vec::new(),
            },
            totals: match tracer.counts_syscalls() {
                true => tracer.syscall_totals(),
                false => Vec::new(),
            },
        }
    }

    pub(super) fn apply_kernel(&mut self, kernel: KernelSample) {
        // First: a copy of a process that exited must find it before it may be forgotten.
        for (pid, totals) in &kernel.totals {
            self.model.attribution.kernel_totals(*pid, totals, false);
            self.start_from_totals(*pid, totals.start_ns);
        }
        let model = &mut self.model;
        if self.system_wide {
            let selection = &self.selection;
            for pid in model.bound(&self.bound, |p| selection.shows(Some(p))) {
                self.tracer.forget_faults(pid);
                self.tracer.forget_stalls(pid);
            }
        }
        for (pid, faults) in kernel.faults {
            model.attribution.set_faults(pid, faults);
        }
        model.attribution.set_rss(kernel.rss);
        model.reclaim.set_stalls(&kernel.stalls.0, &kernel.stalls.1);
        let stalled: Vec<u32> = model.reclaim.stalled_pids().collect();
        for pid in stalled {
            model.attribution.register(pid);
        }
        model.reclaim.wakeups = kernel
            .wakeups
            .into_iter()
            .map(|(pid, w)| {
                let comm = event::comm_string(&w.comm);
                (
                    pid,
                    Wakeups {
                        count: w.count,
                        comm,
                    },
                )
            })
            .collect();
        model.reclaim.scans = kernel.scans;
        model.lost = kernel.lost;
        model.stacks.set_counts(kernel.stacks);
        let retired = model.stacks.retire();
        self.tracer.forget_stack_counts(&retired);
        self.name_stacks();
        self.adopt_children();
    }
}
