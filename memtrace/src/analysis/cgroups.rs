//! Totals per cgroup and for the machine: what the processes counted, the ones kept and the
//! ones let go (folded), as reports, JSON and the metrics page show them. A cgroup's counts
//! only grow: a process is counted in one cgroup for good, once memtrace has settled which.

use std::collections::BTreeMap;

use memtrace_common::events::{rss::RssMember, stall::ReclaimKind};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    advice::{AdviceView, advice_views},
    by_name::ByName,
    process::{MappingsView, StallView},
    selection::Selection,
};
use crate::model::{
    Model,
    attribution::ProcessStats,
    totals::{CgroupKey, Totals},
};

/// What a set of processes counted, summed.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TotalsView {
    /// Processes counted, those let go to bound memory included.
    pub processes: u64,
    /// Of those, the ones alive at the latest look.
    pub live_processes: u64,
    /// Bytes given back by releasing advice.
    pub released_bytes: u64,
    pub madvise: Vec<AdviceView>,
    pub mappings: MappingsView,
    pub faults: TotalFaultsView,
    /// Resident memory of the live processes, from the kernel's RSS counters, bytes: each
    /// process's counters summed, so pages shared between processes count once per process.
    pub rss: ByName<RssMember, u64>,
    /// Whether some live process has a resident member (file, anon, shmem) whose counter did
    /// not change while traced, so `rss` counts less than is resident.
    #[serde(skip)]
    pub rss_partial: bool,
    /// Taken from the processes by other tasks (reclaim, OOM reaper), bytes.
    pub rss_taken: ByName<RssMember, u64>,
    pub reclaim: ByName<ReclaimKind, Option<StallView>>,
}

/// Page faults summed over processes.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TotalFaultsView {
    /// From the kernel's per-task counters, of the processes whose counters were read.
    pub minor: u64,
    pub major: u64,
    /// Taken in user mode; null when not counted (without `--fault-events`).
    pub user: Option<u64>,
    pub user_write: Option<u64>,
}

/// One cgroup's totals.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CgroupView {
    /// The path in the hierarchy that holds the memory controller (cgroup v1's `memory`, else
    /// v2); null for processes whose cgroup memtrace could not learn.
    pub cgroup: Option<String>,
    #[serde(flatten)]
    pub totals: TotalsView,
}

impl CgroupView {
    /// As a metrics label: the path, or `unknown` (a path always starts with `/`).
    pub fn label(&self) -> &str {
        self.cgroup.as_deref().unwrap_or("unknown")
    }
}

/// A sum under construction: counts, and the live processes' RSS.
#[derive(Default)]
pub(super) struct Sum {
    totals: Totals,
    live: u64,
    rss: [u64; memtrace_common::events::rss::RSS_MEMBERS],
    rss_partial: bool,
}

impl Sum {
    /// Adds a kept process (its stalls are the kernel's per-pid ones if it is the current
    /// holder of its pid).
    pub(super) fn add(&mut self, model: &Model, p: &ProcessStats) {
        let current = model.attribution.serial_of(p.pid) == Some(p.serial);
        let stalls = ReclaimKind::ALL.iter().filter_map(|&kind| {
            let stats = model.reclaim.stalls.get(&(p.pid, kind))?;
            current.then_some((kind, stats))
        });
        p.sum_here_into(&mut self.totals, stalls);
        if !p.exited {
            self.live += 1;
            for (sum, size) in self.rss.iter_mut().zip(p.rss.size) {
                *sum += size.unwrap_or(0);
            }
            let resident = [RssMember::File, RssMember::Anon, RssMember::Shmem];
            self.rss_partial |= resident.iter().any(|&m| p.rss.size[m as usize].is_none());
        }
    }

    pub(super) fn add_folded(&mut self, folded: &Totals) {
        self.totals.add(folded);
    }

    /// The view; `counts_user_faults` says whether user-mode faults were counted, `taken_known`
    /// whether the bytes taken by reclaim are shown (else withheld, as zero).
    pub(super) fn view(&self, counts_user_faults: bool, taken_known: bool) -> TotalsView {
        let t = &self.totals;
        TotalsView {
            processes: t.processes,
            live_processes: self.live,
            released_bytes: t.released_bytes(),
            madvise: advice_views(&t.madvise),
            mappings: MappingsView::from(&t.mappings),
            faults: TotalFaultsView {
                minor: t.minor_faults,
                major: t.major_faults,
                user: counts_user_faults.then_some(t.user_faults.user),
                user_write: counts_user_faults.then_some(t.user_faults.write),
            },
            rss: ByName::from_fn(|m: RssMember| self.rss[m as usize]),
            rss_partial: self.rss_partial,
            rss_taken: ByName::from_fn(
                |m: RssMember| {
                    if taken_known { t.taken[m as usize] } else { 0 }
                },
            ),
            reclaim: ByName::from_fn(|kind| {
                t.stalls
                    .get(&kind)
                    .filter(|s| s.count > 0)
                    .map(StallView::from)
            }),
        }
    }
}

/// Every cgroup's totals (cgroup order, unknown last) and the machine's, over the processes
/// `selection` shows. A process whose cgroup is not settled yet counts in the machine's
/// totals and joins its cgroup's once settled (within a sample).
pub fn totals(
    model: &Model,
    selection: &Selection,
    taken_known: bool,
) -> (Vec<CgroupView>, TotalsView) {
    let mut by_cgroup: BTreeMap<&CgroupKey, Sum> = BTreeMap::new();
    let mut machine = Sum::default();
    for (key, folded) in &model.attribution.folded {
        by_cgroup.entry(key).or_default().add_folded(folded);
        machine.add_folded(folded);
    }
    for p in model.attribution.processes() {
        if !selection.shows(Some(p)) {
            continue;
        }
        machine.add(model, p);
        if let Some(key) = &p.cgroup {
            by_cgroup.entry(key).or_default().add(model, p);
        }
    }
    // A process that moved is counted in each cgroup it was in, once on the machine.
    machine.totals.processes = machine
        .totals
        .processes
        .saturating_sub(model.attribution.moves);
    let counts = selection.counts_user_faults;
    let cgroups = by_cgroup
        .into_iter()
        .map(|(key, sum)| CgroupView {
            cgroup: key.path().map(str::to_owned),
            totals: sum.view(counts, taken_known),
        })
        .collect();
    (cgroups, machine.view(counts, taken_known))
}

#[cfg(test)]
mod tests {
    use memtrace_common::advice;

    use super::*;
    use crate::{
        cli::SortKey,
        model::{
            attribution::{Bound, Identity, Reading},
            event::{Event, Exec, test_madvise},
        },
    };

    fn settle(model: &mut Model, pid: u32, cgroup: &str) {
        let serial = model.attribution.serial_of(pid).unwrap();
        model
            .attribution
            .settle_cgroup(pid, serial, Some(cgroup.to_owned()));
    }

    fn exit(model: &mut Model, pid: u32) {
        let serial = model.attribution.serial_of(pid).unwrap();
        model.attribution.read(pid, serial, Reading::default());
    }

    /// Processes let go keep counting in their cgroup and in the machine's totals: the sums
    /// are the same before and after.
    #[test]
    fn totals_keep_what_processes_let_go_counted() {
        let mut model = Model::default();
        for pid in 1..=4 {
            model.record(&test_madvise(pid, advice::DONTNEED, 4096, None));
            settle(&mut model, pid, if pid % 2 == 0 { "/even" } else { "/odd" });
        }
        let mut stall = crate::model::reclaim::StallStats::default();
        stall.add(10_000, 1, 1);
        model.reclaim.stalls.insert((3, ReclaimKind::Memcg), stall);
        model.record(&test_madvise(5, advice::FREE, 4096, None));
        let selection = Selection::default();
        let before = totals(&model, &selection, true);
        assert_eq!(
            before
                .0
                .iter()
                .map(|c| (c.label().to_owned(), c.totals.released_bytes))
                .collect::<Vec<_>>(),
            [("/even".to_owned(), 8192), ("/odd".to_owned(), 8192)]
        );
        // pid 5's cgroup is not settled yet: in the machine's totals only.
        assert_eq!(before.1.released_bytes, 5 * 4096);
        for pid in 1..=3 {
            exit(&mut model, pid);
        }
        let bound = Bound {
            max_processes: 2,
            keep_top: 0,
            sort: SortKey::Released,
        };
        assert_eq!(model.bound(&bound, |_| true), vec![1, 2, 3]);
        let after = totals(&model, &selection, true);
        assert_eq!(after.1.released_bytes, before.1.released_bytes);
        assert_eq!(after.1.processes, 5);
        assert_eq!(after.1.live_processes, 2);
        let odd = &after.0[1];
        assert_eq!((odd.label(), odd.totals.processes), ("/odd", 2));
        assert_eq!(odd.totals.released_bytes, 8192);
        let memcg = odd
            .totals
            .reclaim
            .iter()
            .find(|(k, _)| *k == ReclaimKind::Memcg);
        assert_eq!(
            memcg.and_then(|(_, s)| s.as_ref()).map(|s| s.count),
            Some(1)
        );
        assert!(model.reclaim.stalls.is_empty(), "moved with the process");
    }

    /// Far over the bound, exited processes are let go before /proc was read for them (a
    /// burst of short children, /proc lagging behind): each counts where it was born, not in
    /// `unknown`.
    #[test]
    fn a_process_let_go_before_its_cgroup_was_read_counts_where_it_was_born() {
        let mut model = Model::default();
        model.record(&test_madvise(1, advice::DONTNEED, 4096, None));
        settle(&mut model, 1, "/jobs");
        for child in 2..=5 {
            model.record(&Event::Spawn(memtrace_common::events::spawn::Spawn {
                kind: 15,
                parent: 1,
                child,
                followed: 0,
            }));
            model.record(&test_madvise(child, advice::DONTNEED, 4096, None));
            exit(&mut model, child);
        }
        let bound = Bound {
            max_processes: 1,
            keep_top: 0,
            sort: SortKey::Released,
        };
        assert_eq!(model.bound(&bound, |_| true), vec![2, 3, 4, 5]);
        let (cgroups, machine) = totals(&model, &Selection::default(), true);
        let by_cgroup: Vec<_> = cgroups
            .iter()
            .map(|c| {
                (
                    c.label().to_owned(),
                    c.totals.processes,
                    c.totals.released_bytes,
                )
            })
            .collect();
        assert_eq!(by_cgroup, [("/jobs".to_owned(), 5, 5 * 4096)]);
        assert_eq!(machine.released_bytes, 5 * 4096);
    }

    /// A container's runtime moves its first process into the container's cgroup, then execs:
    /// what it counted before stays in the cgroup it left, what comes after counts in the
    /// container's, the machine counts it once, and letting it go changes no sum.
    #[test]
    fn a_process_that_moves_counts_in_each_cgroup_it_was_in() {
        let mut model = Model::default();
        model.record(&test_madvise(7, advice::DONTNEED, 4096, None));
        settle(&mut model, 7, "/runtime");
        let mut stall = crate::model::reclaim::StallStats::default();
        stall.add(10_000, 1, 1);
        model.reclaim.stalls.insert((7, ReclaimKind::Memcg), stall);
        model.record(&Event::Exec(Exec {
            tgid: 7,
            comm: "app".into(),
            ts_ns: 5,
            memory_cgroup_id: None,
        }));
        let fresh = model.attribution.take_fresh();
        assert_eq!(fresh.len(), 1, "looked up again at exec");
        // The new program's first call, before /proc has answered: counted where it runs.
        model.record(&test_madvise(7, advice::DONTNEED, 8192, None));
        let seen = Identity {
            cgroup: Some("/ctr".into()),
            ..Identity::default()
        };
        model.identify((7, fresh[0].serial, seen.clone()), |_| true);
        // One more stall, after the move.
        model.reclaim.stalls.insert((7, ReclaimKind::Memcg), {
            stall.add(30_000, 1, 1);
            stall
        });
        let selection = Selection::default();
        let sums = |model: &Model| {
            let (cgroups, machine) = totals(model, &selection, true);
            let cgroups: Vec<_> = cgroups
                .iter()
                .map(|c| {
                    let stalls = c
                        .totals
                        .reclaim
                        .iter()
                        .find(|(k, _)| *k == ReclaimKind::Memcg);
                    let stalls = stalls.and_then(|(_, s)| s.as_ref()).map_or(0, |s| s.count);
                    (
                        c.label().to_owned(),
                        c.totals.processes,
                        c.totals.released_bytes,
                        stalls,
                    )
                })
                .collect();
            (cgroups, machine.processes, machine.released_bytes)
        };
        let expected = (
            vec![
                ("/ctr".to_owned(), 1, 8192, 1),
                ("/runtime".to_owned(), 1, 4096, 1),
            ],
            1,
            12288,
        );
        assert_eq!(sums(&model), expected);
        let p = model.attribution.process_by_pid(7).unwrap();
        assert_eq!(
            (p.released_bytes(), p.whereabouts.cgroup.as_deref()),
            (12288, Some("/ctr")),
            "the process's own counts are whole"
        );
        // Seen there again: no second move.
        model.identify((7, fresh[0].serial, seen), |_| true);
        assert_eq!(sums(&model), expected);
        exit(&mut model, 7);
        let bound = Bound {
            max_processes: 0,
            keep_top: 0,
            sort: SortKey::Released,
        };
        assert_eq!(model.bound(&bound, |_| true), vec![7]);
        assert_eq!(sums(&model), expected);
    }
}
