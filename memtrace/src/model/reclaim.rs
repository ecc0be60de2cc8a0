//! Reclaim over the window: stall statistics and log2 latency histograms, kswapd active
//! periods, who woke kswapd, OOM kills and /proc/vmstat deltas. Pure: fed decoded events and
//! kernel map values, never touches the kernel or /proc, so every rule here is unit-tested.

use std::collections::{BTreeMap, VecDeque};

use memtrace_common::events::stall::{
    ReclaimKind, STALL_BUCKETS, ScanCounts, ScanSlot, StallHist, StallKey,
};

use super::event::{Event, Kswapd, OomKill, Stall};
use crate::model::event::VictimFacts;

/// OOM kills kept in full, the most recent ones; older ones are counted.
pub const RECENT_OOM_KILLS: usize = 64;
#[cfg(test)]
use super::event::{OomReaper, ReaperOutcome};

/// The log2 bucket of a latency in microseconds, as the kernel programs compute it: the bit
/// length of `usecs | 1`, so 0 and 1 µs share bucket 1 and bucket `b` holds
/// `2^(b-1) ..= 2^b - 1` µs.
pub fn bucket_of(usecs: u64) -> usize {
    let bits = (u64::BITS - (usecs | 1).leading_zeros()) as usize;
    bits.min(STALL_BUCKETS - 1)
}

/// The microseconds bucket `b` covers, as bcc prints them (`0 -> 1`, `2 -> 3`, `4 -> 7`, …).
pub fn bucket_bounds(bucket: usize) -> (u64, u64) {
    let high = (1u64 << bucket) - 1;
    let low = if bucket <= 1 { 0 } else { 1u64 << (bucket - 1) };
    (low, high)
}

/// Stalls of one process (or the whole system) in one kind of reclaim: the kernel's per-CPU
/// [`StallHist`] summed over CPUs, with what userspace derives from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallStats(StallHist);

impl std::ops::Deref for StallStats {
    type Target = StallHist;

    fn deref(&self) -> &StallHist {
        &self.0
    }
}

impl From<StallHist> for StallStats {
    fn from(hist: StallHist) -> Self {
        Self(hist)
    }
}

impl StallStats {
    /// Adds one stall (userspace twin of the kernel programs' update).
    pub fn add(&mut self, latency_ns: u64, nr_reclaimed: u64, nr_scanned: u64) {
        let h = &mut self.0;
        h.count += 1;
        h.total_ns += latency_ns;
        h.max_ns = h.max_ns.max(latency_ns);
        h.nr_reclaimed += nr_reclaimed;
        h.nr_scanned += nr_scanned;
        h.buckets[bucket_of(latency_ns / 1000)] += 1;
    }

    /// Adds another process's (or CPU's) stalls.
    pub fn merge(&mut self, other: &Self) {
        let (h, o) = (&mut self.0, &other.0);
        h.count += o.count;
        h.total_ns += o.total_ns;
        h.max_ns = h.max_ns.max(o.max_ns);
        h.nr_reclaimed += o.nr_reclaimed;
        h.nr_scanned += o.nr_scanned;
        for (sum, n) in h.buckets.iter_mut().zip(o.buckets) {
            *sum += n;
        }
    }

    /// Takes out stalls `other` counted earlier, which `self` includes (a process's stalls
    /// before it moved to another cgroup). The maximum stays: the largest of all, an upper
    /// bound for what is left.
    pub fn remove(&mut self, other: &Self) {
        let (h, o) = (&mut self.0, &other.0);
        h.count = h.count.saturating_sub(o.count);
        h.total_ns = h.total_ns.saturating_sub(o.total_ns);
        h.nr_reclaimed = h.nr_reclaimed.saturating_sub(o.nr_reclaimed);
        h.nr_scanned = h.nr_scanned.saturating_sub(o.nr_scanned);
        for (sum, n) in h.buckets.iter_mut().zip(o.buckets) {
            *sum = sum.saturating_sub(n);
        }
    }

    /// The `p`-th percentile (0 < p <= 100) in microseconds, from the log2 buckets: the upper
    /// bound of the bucket holding the rank-`ceil(p% × count)` stall, capped at the maximum
    /// seen. An upper bound, exact to within a factor of two; `None` without stalls.
    pub fn percentile_us(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_bounds(bucket).1.min(self.max_ns.div_ceil(1000)));
            }
        }
        Some(self.max_ns.div_ceil(1000))
    }

    pub fn mean_ns(&self) -> u64 {
        self.total_ns.checked_div(self.count).unwrap_or(0)
    }
}

/// kswapd of one node over the trace window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KswapdNode {
    /// Active periods (wake … sleep); one still open at the end counts.
    pub periods: u64,
    /// `mm_vmscan_kswapd_wake` events: kswapd also re-fires wake when it loops to balance again
    /// without sleeping, so wakes >= periods.
    pub wakes: u64,
    pub active_ns: u64,
    pub longest_ns: u64,
    /// Start of the open period, if kswapd is awake.
    pub awake_since: Option<u64>,
}

/// Pairs kswapd wake/sleep events into active periods per node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KswapdPeriods {
    /// When tracing started (CLOCK_MONOTONIC ns): a sleep with no wake seen means kswapd was
    /// already awake then.
    pub window_start_ns: u64,
    pub nodes: BTreeMap<u32, KswapdNode>,
}

impl KswapdPeriods {
    pub fn record(&mut self, k: &Kswapd) {
        let start = self.window_start_ns;
        let node = self.nodes.entry(k.nid).or_default();
        if k.awake {
            node.wakes += 1;
            if node.awake_since.is_none() {
                node.awake_since = Some(k.ts_ns);
                node.periods += 1;
            }
            return;
        }
        let since = match node.awake_since.take() {
            Some(since) => since,
            // Awake since before tracing started: a period clipped to the window.
            None => {
                node.periods += 1;
                start
            }
        };
        close(node, since, k.ts_ns);
    }

    /// Per-node totals at `now_ns`, counting open periods up to now.
    pub fn at(&self, now_ns: u64) -> BTreeMap<u32, KswapdNode> {
        self.nodes
            .iter()
            .map(|(&nid, node)| {
                let mut node = *node;
                if let Some(since) = node.awake_since {
                    close(&mut node, since, now_ns);
                    node.awake_since = Some(since);
                }
                (nid, node)
            })
            .collect()
    }
}

fn close(node: &mut KswapdNode, since: u64, until: u64) {
    let length = until.saturating_sub(since);
    node.active_ns += length;
    node.longest_ns = node.longest_ns.max(length);
}

/// Processes that asked kswapd to wake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wakeups {
    pub count: u64,
    pub comm: String,
}

/// OOM kills over the window: how many, and the most recent ones in full. A node with a
/// container OOM-looping for weeks keeps a bounded record, and a snapshot copies at most
/// [`RECENT_OOM_KILLS`] of them.
#[derive(Clone, Debug)]
pub struct OomKills {
    pub total: u64,
    /// Kills by the cgroup each names once /proc answered ([`OomKill::cgroup`]): bounded by
    /// the cgroups, where `recent` keeps only the last kills. Those whose cgroup was never
    /// learnt make up the rest of `total`.
    pub by_cgroup: BTreeMap<String, u64>,
    /// Oldest first.
    pub recent: VecDeque<OomKill>,
    /// The RSS (anon + file + shmem, kB) the victims no longer in `recent` had at their kill;
    /// `None` once one of them had a size this kernel does not report.
    dropped_rss_kb: Option<u64>,
}

impl Default for OomKills {
    fn default() -> Self {
        Self {
            total: 0,
            by_cgroup: BTreeMap::new(),
            recent: VecDeque::new(),
            dropped_rss_kb: Some(0),
        }
    }
}

impl OomKills {
    pub fn push(&mut self, kill: OomKill) {
        self.total += 1;
        self.recent.push_back(kill);
        while self.recent.len() > RECENT_OOM_KILLS {
            if let Some(old) = self.recent.pop_front() {
                self.dropped_rss_kb = self.dropped_rss_kb.zip(rss_kb(&old)).map(|(a, b)| a + b);
            }
        }
    }

    /// The RSS every victim had at its kill, kB: the most the OOM reaper can have taken.
    /// `None` when one of them had a size this kernel does not report.
    pub fn victims_rss_kb(&self) -> Option<u64> {
        self.recent
            .iter()
            .map(rss_kb)
            .chain([self.dropped_rss_kb])
            .sum()
    }

    /// Completes a kill with what /proc still said about its victim; returns the kill, if it
    /// is still among the recent ones.
    pub fn learn(&mut self, tid: u32, ts_ns: u64, facts: VictimFacts) -> Option<&OomKill> {
        let kill = self
            .recent
            .iter_mut()
            .rev()
            .find(|k| k.tid == tid && k.ts_ns == ts_ns)?;
        let known = kill.cgroup.is_some();
        kill.learn(facts);
        if let Some(cgroup) = kill.cgroup.as_ref().filter(|_| !known) {
            *self.by_cgroup.entry(cgroup.clone()).or_default() += 1;
        }
        Some(kill)
    }
}

fn rss_kb(kill: &OomKill) -> Option<u64> {
    [kill.anon_rss_kb, kill.file_rss_kb, kill.shmem_rss_kb]
        .into_iter()
        .sum()
}

/// Stalls and kswapd wakes received as events since the last interval line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// Per process and kind.
    pub stalls: BTreeMap<(u32, ReclaimKind), StallStats>,
    pub kswapd_wakes: u64,
}

/// Everything memtrace knows about reclaim over the window.
#[derive(Clone, Debug, Default)]
pub struct Reclaim {
    /// Per process and kind, from the kernel's histograms (lossless).
    pub stalls: BTreeMap<(u32, ReclaimKind), StallStats>,
    /// Every stall of traced processes, per kind, from the kernel.
    pub system: BTreeMap<ReclaimKind, StallStats>,
    /// Since the last interval line.
    interval: Interval,
    pub ooms: OomKills,
    pub kswapd: KswapdPeriods,
    pub wakeups: BTreeMap<u32, Wakeups>,
    /// Inactive-LRU scans per [`ScanSlot`]: inside traced stalls, and in the background.
    pub scans: [ScanCounts; ScanSlot::COUNT],
    /// /proc/vmstat reclaim counters at the start and at the latest sample.
    pub vmstat_first: Option<BTreeMap<String, u64>>,
    pub vmstat_last: Option<BTreeMap<String, u64>>,
}

impl Reclaim {
    /// Replaces the histograms with the kernel's latest totals.
    pub fn set_stalls(
        &mut self,
        per_process: &[(StallKey, StallHist)],
        system: &[(ReclaimKind, StallHist)],
    ) {
        self.stalls = per_process
            .iter()
            .filter_map(|&(key, hist)| {
                let kind = ReclaimKind::from_u32(key.reclaim_kind)?;
                Some(((key.tgid, kind), StallStats::from(hist)))
            })
            .collect();
        self.system = system
            .iter()
            .map(|&(kind, hist)| (kind, StallStats::from(hist)))
            .collect();
    }

    /// Removes a process's stalls (it is let go: the caller frees the kernel's entries too).
    pub fn take_stalls(&mut self, pid: u32) -> Vec<(ReclaimKind, StallStats)> {
        ReclaimKind::ALL
            .iter()
            .filter_map(|&kind| Some((kind, self.stalls.remove(&(pid, kind))?)))
            .collect()
    }

    /// Processes with stalls in the kernel's histograms.
    pub fn stalled_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.stalls.keys().map(|&(pid, _)| pid)
    }

    pub fn record(&mut self, event: &Event) {
        match event {
            Event::Stall(s) => self.record_stall(s),
            Event::OomKill(o) => self.ooms.push(OomKill::clone(o)),
            Event::OomReaper(r) => {
                // The latest kill of that task: the reaper follows it.
                if let Some(kill) = self.ooms.recent.iter_mut().rev().find(|k| k.tid == r.pid) {
                    kill.reaper.record(r.phase, r.ts_ns);
                }
            }
            Event::Kswapd(k) => {
                self.interval.kswapd_wakes += u64::from(k.awake);
                self.kswapd.record(k);
            }
            // A process's own events: the attribution's business.
            _ => {}
        }
    }

    fn record_stall(&mut self, s: &Stall) {
        self.interval
            .stalls
            .entry((s.tgid, s.kind))
            .or_default()
            .add(s.latency_ns, s.nr_reclaimed, s.nr_scanned);
    }

    /// Stalls and wakes received since the previous call; resets them.
    pub fn take_interval(&mut self) -> Interval {
        std::mem::take(&mut self.interval)
    }

    /// Whether stalls arrived since the last interval line.
    pub fn has_interval_stalls(&self) -> bool {
        !self.interval.stalls.is_empty()
    }

    /// A process's stalls of one kind (kernel totals).
    pub fn of(&self, pid: u32, kind: ReclaimKind) -> Option<&StallStats> {
        self.stalls.get(&(pid, kind)).filter(|s| s.count > 0)
    }

    pub fn sample_vmstat(&mut self, sample: BTreeMap<String, u64>) {
        if self.vmstat_first.is_none() {
            self.vmstat_first = Some(sample.clone());
        }
        self.vmstat_last = Some(sample);
    }

    /// Change of each /proc/vmstat counter over the window.
    pub fn vmstat_delta(&self) -> BTreeMap<String, i64> {
        let (Some(first), Some(last)) = (&self.vmstat_first, &self.vmstat_last) else {
            return BTreeMap::new();
        };
        last.iter()
            .map(|(name, &value)| {
                let before = first.get(name).copied().unwrap_or(0);
                let delta = i128::from(value) - i128::from(before);
                (name.clone(), i64::try_from(delta).unwrap_or(i64::MAX))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_the_kernel_rule() {
        assert_eq!(bucket_of(0), 1);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(2), 2);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(4), 3);
        assert_eq!(bucket_of(1023), 10);
        assert_eq!(bucket_of(1024), 11);
        assert_eq!(bucket_of(u64::MAX), STALL_BUCKETS - 1);
        assert_eq!(bucket_bounds(1), (0, 1));
        assert_eq!(bucket_bounds(2), (2, 3));
        assert_eq!(bucket_bounds(11), (1024, 2047));
        for usecs in [0, 1, 5, 100, 4096, 70_000] {
            let (low, high) = bucket_bounds(bucket_of(usecs));
            assert!(low <= usecs && usecs <= high, "{usecs}");
        }
    }

    #[test]
    fn stats_and_percentiles() {
        let mut s = StallStats::default();
        // 98 stalls of 10 µs, one of 100 µs, one of 5 ms.
        for _ in 0..98 {
            s.add(10_000, 32, 40);
        }
        s.add(100_000, 1, 2);
        s.add(5_000_000, 0, 0);
        assert_eq!(s.count, 100);
        assert_eq!(s.total_ns, 98 * 10_000 + 100_000 + 5_000_000);
        assert_eq!(s.max_ns, 5_000_000);
        assert_eq!(s.nr_reclaimed, 98 * 32 + 1);
        assert_eq!(s.buckets[bucket_of(10)], 98);
        // p50 lies in the 8..=15 µs bucket; p99 is the 99th stall (100 µs: 64..=127).
        assert_eq!(s.percentile_us(50.0), Some(15));
        assert_eq!(s.percentile_us(99.0), Some(127));
        // p100 is capped at the maximum (5000 µs, in the 4096..=8191 bucket).
        assert_eq!(s.percentile_us(100.0), Some(5000));
        assert_eq!(StallStats::default().percentile_us(50.0), None);
        assert_eq!(s.mean_ns(), s.total_ns / 100);
    }

    fn k(nid: u32, awake: bool, ts_ns: u64) -> Kswapd {
        Kswapd {
            nid,
            awake,
            order: 0,
            ts_ns,
        }
    }

    #[test]
    fn kswapd_periods_pair_per_node() {
        let mut p = KswapdPeriods {
            window_start_ns: 1_000,
            ..KswapdPeriods::default()
        };
        // Node 0: awake before tracing, sleeps at 1500 (500 ns clipped period); wakes at 2000,
        // re-fires wake at 2100 (same period), sleeps at 5000; wakes at 9000, still awake.
        // Node 1: one period 3000..3200.
        for e in [
            k(0, false, 1_500),
            k(0, true, 2_000),
            k(1, true, 3_000),
            k(0, true, 2_100),
            k(1, false, 3_200),
            k(0, false, 5_000),
            k(0, true, 9_000),
        ] {
            p.record(&e);
        }
        let at = p.at(10_000);
        let n0 = at[&0];
        assert_eq!((n0.periods, n0.wakes), (3, 3));
        assert_eq!(n0.active_ns, 500 + 3_000 + 1_000);
        assert_eq!(n0.longest_ns, 3_000);
        assert_eq!(n0.awake_since, Some(9_000));
        let n1 = at[&1];
        assert_eq!((n1.periods, n1.active_ns, n1.longest_ns), (1, 200, 200));
        // Reading totals does not close the open period.
        assert_eq!(p.nodes[&0].active_ns, 3_500);
    }

    fn stall(tgid: u32, kind: ReclaimKind, latency_ns: u64) -> Event {
        Event::Stall(Stall {
            tgid,
            tid: tgid + 1,
            thread_comm: format!("p{tgid}"),
            kind,
            order: 0,
            gfp_flags: 0,
            start_ns: 0,
            latency_ns,
            nr_reclaimed: 3,
            nr_scanned: 4,
        })
    }

    #[test]
    fn interval_stalls_by_process_and_kind() {
        let mut r = Reclaim::default();
        r.record(&stall(5, ReclaimKind::Memcg, 10_000));
        r.record(&stall(5, ReclaimKind::Memcg, 30_000));
        r.record(&stall(5, ReclaimKind::Direct, 1_000));
        r.record(&stall(6, ReclaimKind::Memcg, 2_000));
        assert!(r.has_interval_stalls());
        let interval = r.take_interval().stalls;
        let m5 = interval[&(5, ReclaimKind::Memcg)];
        assert_eq!(
            (m5.count, m5.total_ns, m5.max_ns, m5.nr_reclaimed),
            (2, 40_000, 30_000, 6)
        );
        assert_eq!(interval[&(5, ReclaimKind::Direct)].count, 1);
        assert_eq!(interval[&(6, ReclaimKind::Memcg)].count, 1);
        assert!(!r.has_interval_stalls());
        assert!(r.take_interval().stalls.is_empty());
    }

    fn oom_kill(tid: u32) -> Event {
        Event::OomKill(Box::new(OomKill {
            pid: tid,
            tid,
            comm: String::new(),
            trigger_pid: tid,
            trigger_tid: tid,
            trigger_comm: String::new(),
            uid: None,
            oom_score_adj: None,
            total_vm_kb: None,
            anon_rss_kb: Some(1000),
            file_rss_kb: Some(10),
            shmem_rss_kb: Some(0),
            pgtables_kb: None,
            ts_ns: u64::from(tid),
            cgroup: None,
            cgroup_of: None,
            container: None,
            pod: None,
            trigger_memcg_id: None,
            reaper: ReaperOutcome::default(),
        }))
    }

    /// An OOM-looping container for weeks: a count, and the latest kills in full.
    #[test]
    fn oom_kills_are_counted_and_the_latest_kept() {
        let mut r = Reclaim::default();
        for tid in 1..=100 {
            r.record(&oom_kill(tid));
        }
        assert_eq!(r.ooms.total, 100);
        assert_eq!(r.ooms.recent.len(), RECENT_OOM_KILLS);
        assert_eq!(r.ooms.recent[0].tid, 100 - RECENT_OOM_KILLS as u32 + 1);
        // What the reaper can have taken still counts every victim.
        assert_eq!(r.ooms.victims_rss_kb(), Some(100 * 1010));
        let facts = VictimFacts {
            tgid: Some(7),
            cgroup: Some(("/jobs".into(), crate::model::event::CgroupOf::Victim)),
        };
        assert_eq!(r.ooms.learn(99, 99, facts.clone()).map(|k| k.pid), Some(7));
        assert!(
            r.ooms.learn(1, 1, facts.clone()).is_none(),
            "no longer kept"
        );
        // Told twice, counted once.
        r.ooms.learn(99, 99, facts.clone());
        r.ooms.learn(98, 98, facts);
        assert_eq!(r.ooms.by_cgroup, BTreeMap::from([("/jobs".to_owned(), 2)]));
        let Event::OomKill(mut unknown) = oom_kill(101) else {
            unreachable!()
        };
        unknown.anon_rss_kb = None;
        r.record(&Event::OomKill(unknown));
        assert_eq!(r.ooms.victims_rss_kb(), None);
    }

    #[test]
    fn reaper_steps_attach_to_their_kill() {
        use memtrace_common::events::oom::ReaperPhase;
        let kill = |tid: u32| {
            Event::OomKill(Box::new(OomKill {
                pid: tid,
                tid,
                comm: String::new(),
                trigger_pid: tid,
                trigger_tid: tid,
                trigger_comm: String::new(),
                uid: None,
                oom_score_adj: None,
                total_vm_kb: None,
                anon_rss_kb: None,
                file_rss_kb: None,
                shmem_rss_kb: None,
                pgtables_kb: None,
                ts_ns: 0,
                cgroup: None,
                cgroup_of: None,
                container: None,
                pod: None,
                trigger_memcg_id: None,
                reaper: ReaperOutcome::default(),
            }))
        };
        let step = |pid, phase, ts_ns| Event::OomReaper(OomReaper { pid, phase, ts_ns });
        let mut r = Reclaim::default();
        r.record(&kill(10));
        r.record(&kill(11));
        r.record(&step(10, ReaperPhase::Woken, 100));
        r.record(&step(11, ReaperPhase::Woken, 110));
        r.record(&step(10, ReaperPhase::Start, 2_000));
        r.record(&step(10, ReaperPhase::Finish, 2_500));
        r.record(&step(11, ReaperPhase::Skip, 2_100));
        // A step for a task memtrace saw no kill of is ignored.
        r.record(&step(99, ReaperPhase::Skip, 1));
        assert_eq!(r.ooms.recent[0].reaper.reap_ns(), Some(500));
        assert_eq!(r.ooms.recent[0].reaper.woken_ns, Some(100));
        assert_eq!(r.ooms.recent[1].reaper.reap_ns(), None);
        assert_eq!(r.ooms.recent[1].reaper.skipped_ns, Some(2_100));
    }

    #[test]
    fn vmstat_deltas() {
        let mut r = Reclaim::default();
        let sample = |lazy: u64, scan: u64| {
            BTreeMap::from([
                ("pglazyfreed".to_owned(), lazy),
                ("pgscan_direct".to_owned(), scan),
            ])
        };
        r.sample_vmstat(sample(10, 100));
        r.sample_vmstat(sample(15, 100));
        r.sample_vmstat(sample(25, 130));
        let d = r.vmstat_delta();
        assert_eq!((d["pglazyfreed"], d["pgscan_direct"]), (15, 30));
    }
}
