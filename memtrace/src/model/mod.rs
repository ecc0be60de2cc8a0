//! The model: everything memtrace knows about the traced window, built from decoded events and
//! kernel map values. Pure: it never touches the kernel or /proc (the session reads those and
//! hands the values in), so every rule in it is unit-tested.

pub mod attribution;
pub mod container;
pub mod counts;
pub mod event;
pub mod kernel_totals;
pub mod reclaim;
pub mod stacks;
pub mod totals;

use attribution::{Attribution, Bound, Identity, ProcessStats};
use event::Event;
use memtrace_common::events::stall::ReclaimKind;
use reclaim::Reclaim;
use stacks::Stacks;

use std::collections::BTreeMap;

use crate::kernel::{LostCounts, memcg::MemcgUsage};

/// What the window has shown so far.
#[derive(Debug, Default)]
pub struct Model {
    /// Per process: releases, mappings, faults, RSS.
    pub attribution: Attribution,
    /// Reclaim stalls, kswapd, OOM kills: the system's, and per process.
    pub reclaim: Reclaim,
    /// Caller stacks (`--stacks`).
    pub stacks: Stacks,
    /// Records the kernel side dropped, as of the latest sample.
    pub lost: LostCounts,
    /// Records that could not be decoded (a kernel/userspace mismatch; never expected).
    pub undecodable: u64,
    /// Memory cgroups' own accounting at the latest sample, by cgroup path (read for the
    /// groups of `--by container|cgroup`).
    pub memcg: BTreeMap<String, MemcgUsage>,
}

impl Model {
    /// Takes one event into account.
    pub fn record(&mut self, event: &Event) {
        self.attribution.record(event);
        self.reclaim.record(event);
        self.stacks.record(event);
    }

    /// Applies what /proc said about entry `serial` of `pid` (see [`Attribution::identify`]);
    /// a process it showed in another cgroup moves there, with its stalls so far staying
    /// where they were counted, if `shows` selects it. Returns the kernel's memory-cgroup id
    /// to name, if any.
    pub fn identify(
        &mut self,
        (pid, serial, identity): (u32, u64, Identity),
        shows: impl Fn(&ProcessStats) -> bool,
    ) -> Option<u64> {
        let id = self.attribution.identify(pid, serial, identity);
        for seen in self.attribution.take_seen_elsewhere() {
            let pid = seen.0;
            // The kernel keeps stalls per pid: they are the current holder's.
            let current = self.attribution.serial_of(pid) == Some(seen.1);
            let held = &self.reclaim.stalls;
            let stalls = ReclaimKind::ALL.iter().filter_map(move |&kind| {
                let stats = held.get(&(pid, kind))?;
                current.then_some((kind, stats))
            });
            self.attribution.moved(seen, stalls, &shows);
        }
        id
    }

    /// Lets go of exited processes past `bound` (see [`Attribution::take_for_bound`]), folding
    /// each that `shows` selects, with its stalls, into its cgroup's totals. Returns the pids
    /// whose kernel entries (fault counts, stall histograms: kept per pid) the caller frees.
    pub fn bound(&mut self, bound: &Bound, shows: impl Fn(&ProcessStats) -> bool) -> Vec<u32> {
        let mut freed = Vec::new();
        for (process, current) in self.attribution.take_for_bound(bound, &shows) {
            // The kernel keeps stalls per pid: they are the current holder's.
            let stalls = if current {
                freed.push(process.pid);
                self.reclaim.take_stalls(process.pid)
            } else {
                Vec::new()
            };
            if shows(&process) {
                self.attribution
                    .fold(&process, stalls.iter().map(|(kind, s)| (*kind, s)));
            }
            self.stacks.forget(process.pid, process.start_time);
        }
        freed
    }
}
