//! Which processes a report shows, and in which order (`--pid`, `--comm`, `--cgroup`,
//! `--container`, `--sort`).

use crate::{
    cli::{GroupBy, SortKey},
    model::{Model, attribution::ProcessStats},
};

/// Which processes a report shows, in which order.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Only processes with one of these names (none: all).
    pub comms: Vec<String>,
    /// Only processes in one of these containers (full ids or prefixes; none: all).
    pub containers: Vec<String>,
    /// Only processes in one of these cgroups or below (none: all).
    pub cgroups: Vec<String>,
    /// How the report groups processes.
    pub by: GroupBy,
    pub sort: SortKey,
    /// The named targets (`--pid`), whose LazyFree the reclaim report follows.
    pub targets: Vec<u32>,
    /// Whether user-mode faults were counted (else they are shown as unavailable).
    pub counts_user_faults: bool,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            comms: Vec::new(),
            containers: Vec::new(),
            cgroups: Vec::new(),
            by: GroupBy::Process,
            sort: SortKey::Released,
            targets: Vec::new(),
            counts_user_faults: true,
        }
    }
}

impl Selection {
    /// Whether a process passes the `--comm`, `--container` and `--cgroup` filters.
    pub fn shows(&self, process: Option<&ProcessStats>) -> bool {
        let by_comm =
            self.comms.is_empty() || process.is_some_and(|p| self.comms.contains(&p.comm));
        let container = process.and_then(|p| p.whereabouts.placement.container.as_ref());
        let by_container = self.containers.is_empty()
            || container.is_some_and(|c| self.containers.iter().any(|id| c.id.starts_with(id)));
        let cgroup = process.and_then(|p| p.whereabouts.cgroup.as_deref());
        let by_cgroup = self.cgroups.is_empty()
            || cgroup.is_some_and(|path| self.cgroups.iter().any(|c| within(path, c)));
        by_comm && by_container && by_cgroup
    }

    /// The processes to report, best first by `--sort` (ties in the order kept: earlier
    /// holders of reused pids, then by pid).
    pub(super) fn select<'a>(&self, model: &'a Model) -> Vec<&'a ProcessStats> {
        let mut processes: Vec<&ProcessStats> = model
            .attribution
            .processes()
            .filter(|p| self.shows(Some(p)))
            .collect();
        processes.sort_by_key(|p| std::cmp::Reverse(p.rank(self.sort)));
        processes
    }
}

/// Whether cgroup `path` is `ancestor` or below it.
fn within(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}
