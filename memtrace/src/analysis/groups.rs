//! Processes grouped by container or by cgroup (`--by`), with each group's memory cgroup's
//! own accounting beside its processes' sum: "at its limit although its processes' RSS is
//! small — it is page cache" reads at a glance.

use std::collections::BTreeMap;

use memtrace_common::events::{rss::RssMember, stall::ReclaimKind};
use schemars::JsonSchema;
use serde::Serialize;

use super::process::ProcessView;
use crate::{
    cli::GroupBy,
    kernel::memcg::MemcgUsage,
    model::{
        container::{Container, Placement, Pod},
        event::OomKill,
    },
};

/// One container (or cgroup) and what its processes did.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupView {
    /// The cgroup path (by cgroup), the container id (by container), or `host` for the
    /// processes of no container; `?` for those whose cgroup was never read.
    pub key: String,
    /// The cgroup whose accounting `memcg` is: the group's own, or its container's.
    pub cgroup: Option<String>,
    pub container: Option<Container>,
    pub pod: Option<Pod>,
    /// Its processes (host pids), in the order of the process list.
    pub pids: Vec<u32>,
    pub released_bytes: u64,
    pub madvise_calls: u64,
    pub mapped_bytes: u64,
    /// Task-counter faults of the processes whose counters are known.
    pub minor_faults: u64,
    pub major_faults: u64,
    /// Resident memory of its live processes, where every one's is known: smaps_rollup's or
    /// /proc/PID/status's Rss, else the kernel counters'. Null when one is unknown.
    pub rss_bytes: Option<u64>,
    /// Memory-cgroup reclaim stalls of its processes.
    pub memcg_stalls: u64,
    pub memcg_stall_ns: u64,
    pub memcg_reclaimed_pages: u64,
    /// OOM kills whose victim's cgroup is this group's.
    pub oom_kills: u64,
    /// The memory cgroup's own accounting at the end; null when unread (no cgroup, or the
    /// cgroup was gone).
    pub memcg: Option<MemcgUsage>,
}

/// The groups of `processes` by `by` (none for [`GroupBy::Process`]), biggest releasers first;
/// `ooms` are the OOM kills kept (the recent ones); `memcg` holds the accounting memtrace read
/// per cgroup path.
pub fn group<'a>(
    by: GroupBy,
    processes: &[ProcessView],
    ooms: impl IntoIterator<Item = &'a OomKill>,
    memcg: &BTreeMap<String, MemcgUsage>,
) -> Vec<GroupView> {
    let mut groups: BTreeMap<String, GroupView> = BTreeMap::new();
    for p in processes {
        let Some((key, cgroup)) = key_of(by, p.cgroup.as_deref(), p.container.as_ref()) else {
            continue;
        };
        let group = groups.entry(key.clone()).or_insert_with(|| GroupView {
            key,
            memcg: cgroup.as_ref().and_then(|c| memcg.get(c)).cloned(),
            cgroup,
            container: p.container.clone(),
            pod: p.pod.clone(),
            pids: Vec::new(),
            released_bytes: 0,
            madvise_calls: 0,
            mapped_bytes: 0,
            minor_faults: 0,
            major_faults: 0,
            rss_bytes: Some(0),
            memcg_stalls: 0,
            memcg_stall_ns: 0,
            memcg_reclaimed_pages: 0,
            oom_kills: 0,
        });
        add(group, p);
    }
    for kill in ooms {
        let Some((key, _)) = key_of(by, kill.cgroup.as_deref(), kill.container.as_ref()) else {
            continue;
        };
        if let Some(group) = groups.get_mut(&key) {
            group.oom_kills += 1;
        }
    }
    let mut groups: Vec<GroupView> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.released_bytes));
    groups
}

/// A process's group key and the cgroup that group's accounting is read from.
pub fn key_of(
    by: GroupBy,
    cgroup: Option<&str>,
    container: Option<&Container>,
) -> Option<(String, Option<String>)> {
    match by {
        GroupBy::Process => None,
        GroupBy::Cgroup => Some(match cgroup {
            Some(path) => (path.to_owned(), Some(path.to_owned())),
            None => ("?".to_owned(), None),
        }),
        GroupBy::Container => Some(match (container, cgroup) {
            (Some(container), Some(path)) => {
                (container.id.clone(), Placement::container_cgroup(path))
            }
            (Some(container), None) => (container.id.clone(), None),
            (None, Some(_)) => ("host".to_owned(), None),
            (None, None) => ("?".to_owned(), None),
        }),
    }
}

fn add(group: &mut GroupView, p: &ProcessView) {
    group.pids.push(p.pid);
    group.released_bytes += p.released_bytes;
    group.madvise_calls += p.madvise.iter().map(|a| a.calls).sum::<u64>();
    group.mapped_bytes += p.mappings.totals.mapped_bytes();
    group.minor_faults += p.faults.minor.unwrap_or(0);
    group.major_faults += p.faults.major.unwrap_or(0);
    group.rss_bytes = group.rss_bytes.zip(resident(p)).map(|(a, b)| a + b);
    if let Some(memcg) = p.reclaim.get(ReclaimKind::Memcg) {
        group.memcg_stalls += memcg.count;
        group.memcg_stall_ns += memcg.total_ns;
        group.memcg_reclaimed_pages += memcg.nr_reclaimed;
    }
}

/// A process's resident bytes: none once exited; smaps_rollup's or status's Rss where read;
/// else the kernel counters' when all three resident members are known.
fn resident(p: &ProcessView) -> Option<u64> {
    if p.exited {
        return Some(0);
    }
    if let Some(smaps) = p.smaps_rollup.last {
        return Some(smaps.rss);
    }
    if let Some(status) = p.smaps_rollup.status {
        return Some(status.rss);
    }
    [RssMember::File, RssMember::Anon, RssMember::Shmem]
        .iter()
        .map(|&member| *p.rss.size.get(member))
        .sum()
}
