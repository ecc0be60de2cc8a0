//! The plain-English paragraph under each process in the final report: what its numbers mean,
//! in the words an engineer in an incident would use ("RSS stays high because …").
//!
//! Pure: built from one process's totals, so every sentence is unit-tested.

use memtrace_common::{
    advice,
    events::{
        rss::{RSS_MEMBERS, RssMember},
        stall::ReclaimKind,
    },
};

use crate::{
    model::{attribution::ProcessStats, reclaim::Reclaim},
    units::human_bytes,
};

/// LazyFree below this share of RSS is not worth a sentence.
const NOTABLE_LAZYFREE_PERCENT: u64 = 10;
/// RSS changes smaller than this are noise in an incident.
const NOTABLE_RSS_CHANGE: u64 = 1 << 20;

/// What a sentence may be said from: one process's totals, the reclaim report, and what
/// reclaim and the OOM reaper took per RSS member (None when it is not known).
struct Facts<'a> {
    p: &'a ProcessStats,
    reclaim: &'a Reclaim,
    taken: Option<[u64; RSS_MEMBERS]>,
}

impl Facts<'_> {
    /// Bytes released with one madvise advice.
    fn released(&self, advice: u32) -> u64 {
        self.p.madvise.get(&advice).map_or(0, |t| t.bytes)
    }
}

/// The rules, most important first: each says one thing, or nothing.
const RULES: [fn(&Facts) -> Option<String>; 9] = [
    memcg_stalls,
    direct_stalls,
    madv_free,
    madv_dontneed,
    taken_while_not_running,
    exec,
    failed_madvise,
    major_faults,
    rss_change,
];

/// Sentences explaining a process's memory over the traced window, most important first.
/// `taken`: what reclaim and the OOM reaper took per RSS member, None when it is not known.
pub fn explain(
    p: &ProcessStats,
    reclaim: &Reclaim,
    taken: Option<[u64; RSS_MEMBERS]>,
) -> Vec<String> {
    let facts = Facts { p, reclaim, taken };
    let sentences: Vec<String> = RULES.iter().filter_map(|rule| rule(&facts)).collect();
    if sentences.is_empty() {
        return vec!["No memory was released, and RSS did not change, while traced.".to_owned()];
    }
    sentences
}

fn memcg_stalls(f: &Facts) -> Option<String> {
    stalls(f, ReclaimKind::Memcg, "its memory cgroup was at its limit")
}

fn direct_stalls(f: &Facts) -> Option<String> {
    stalls(
        f,
        ReclaimKind::Direct,
        "free memory fell below the min watermark",
    )
}

fn stalls(f: &Facts, kind: ReclaimKind, why: &str) -> Option<String> {
    let s = f.reclaim.of(f.p.pid, kind)?;
    Some(format!(
        "Its allocations stalled {} times in {} reclaim ({why}), {:.3} ms in all, the longest \
         {:.3} ms.",
        s.count,
        kind.name(),
        s.total_ns as f64 / 1e6,
        s.max_ns as f64 / 1e6,
    ))
}

/// MADV_FREE: whether its pages are still in RSS as LazyFree, as far as that is known.
fn madv_free(f: &Facts) -> Option<String> {
    let free = f.released(advice::FREE);
    let last = f.p.smaps_last;
    let rss = last.map_or(0, |s| s.rss);
    let lazy = last.map_or(0, |s| s.lazy_free);
    if lazy > 0 && lazy * 100 >= rss * NOTABLE_LAZYFREE_PERCENT {
        let released = if free > 0 {
            format!(
                "{} was released with MADV_FREE while traced",
                human_bytes(free)
            )
        } else {
            "it was released with MADV_FREE (before tracing started)".to_owned()
        };
        return Some(format!(
            "RSS {} is high partly because {released}: {} of it is LazyFree, which the kernel \
             takes back only under memory pressure. That is reclaimable memory, not a leak.",
            human_bytes(rss),
            human_bytes(lazy),
        ));
    }
    match (free, last) {
        (0, _) => None,
        (free, None) => Some(free_without_smaps(f.p, free)),
        (free, Some(_)) => Some(format!(
            "{} was released with MADV_FREE; little of it is still LazyFree (it was reclaimed, \
             written to again or unmapped).",
            human_bytes(free)
        )),
    }
}

fn madv_dontneed(f: &Facts) -> Option<String> {
    let dontneed = f.released(advice::DONTNEED);
    (dontneed > 0).then(|| {
        format!(
            "{} was released with MADV_DONTNEED: those pages left RSS at once.",
            human_bytes(dontneed)
        )
    })
}

fn taken_while_not_running(f: &Facts) -> Option<String> {
    let taken = f.taken.map_or(0, |t| {
        t[RssMember::Anon as usize] + t[RssMember::File as usize]
    });
    (taken > 0).then(|| {
        format!(
            "Reclaim or the OOM reaper took {} of its resident memory while it was not running.",
            human_bytes(taken)
        )
    })
}

fn exec(f: &Facts) -> Option<String> {
    let p = f.p;
    let first = p.exec_from.first()?;
    let names: Vec<&str> = p.exec_from[1..]
        .iter()
        .map(String::as_str)
        .chain([p.comm.as_str()])
        .collect();
    // Empty: memtrace met the process first at its exec, after its old name was gone.
    let first = match first.as_str() {
        "" => "a process whose earlier name memtrace did not see",
        name => name,
    };
    Some(format!(
        "It called exec while traced: {first} became {} (a new program and address space).",
        names.join(", then ")
    ))
}

fn failed_madvise(f: &Facts) -> Option<String> {
    let failed: u64 = f.p.madvise.values().map(|t| t.failed).sum();
    (failed > 0).then(|| format!("{failed} madvise calls failed and released nothing."))
}

fn major_faults(f: &Facts) -> Option<String> {
    let major = f.p.task_faults.major();
    (major > 0)
        .then(|| format!("It waited on I/O for {major} major page faults (file or swap reads)."))
}

fn rss_change(f: &Facts) -> Option<String> {
    let (first, last) = (f.p.smaps_first?, f.p.smaps_last?);
    if first.rss.abs_diff(last.rss) < NOTABLE_RSS_CHANGE {
        return None;
    }
    let (verb, change) = if last.rss > first.rss {
        ("grew", last.rss - first.rss)
    } else {
        ("fell", first.rss - last.rss)
    };
    Some(format!(
        "RSS {verb} by {} over the window ({} → {}).",
        human_bytes(change),
        human_bytes(first.rss),
        human_bytes(last.rss)
    ))
}

/// MADV_FREE bytes of a process whose LazyFree is not read (smaps_rollup is read for `--pid`
/// targets only): what can be said for sure. LazyFree pages are anonymous pages, so the
/// kernel's anonymous RSS counter bounds them; an exited process holds none.
fn free_without_smaps(p: &ProcessStats, free: u64) -> String {
    let free_text = human_bytes(free);
    match (p.exited, p.rss.size[RssMember::Anon as usize]) {
        (true, _) => format!(
            "{free_text} was released with MADV_FREE; the process has exited, so none of it is \
             resident any more."
        ),
        (false, Some(anon)) if anon < free => format!(
            "{free_text} was released with MADV_FREE; at most {} of it can still be in RSS as \
             LazyFree (its anonymous RSS now): the rest was reclaimed, written to again or \
             unmapped.",
            human_bytes(anon)
        ),
        _ => format!(
            "{free_text} was released with MADV_FREE: such pages stay in RSS as LazyFree until \
             memory pressure reclaims them, unless they are written to again or unmapped (how \
             much is still LazyFree is read only for --pid targets)."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::procfs::SmapsRollup,
        model::{attribution::Attribution, event::test_madvise},
    };

    fn traced(calls: &[(u32, u64, Option<i32>)], first_rss: u64, last: SmapsRollup) -> Vec<String> {
        let mut a = Attribution::default();
        for &(advice, len, errno) in calls {
            a.record(&test_madvise(1, advice, len, errno));
        }
        a.sample_smaps(
            1,
            SmapsRollup {
                rss: first_rss,
                ..SmapsRollup::default()
            },
        );
        a.sample_smaps(1, last);
        explain(
            a.process_by_pid(1).expect("process"),
            &Reclaim::default(),
            Some([0; 4]),
        )
    }

    #[test]
    fn lazyfree_explains_a_high_rss() {
        let last = SmapsRollup {
            rss: 528 << 20,
            lazy_free: 512 << 20,
            ..SmapsRollup::default()
        };
        let text = traced(&[(advice::FREE, 512 << 20, None)], 528 << 20, last);
        assert_eq!(
            text,
            [
                "RSS 528.0 MiB is high partly because 512.0 MiB was released with MADV_FREE while \
              traced: 512.0 MiB of it is LazyFree, which the kernel takes back only under memory \
              pressure. That is reclaimable memory, not a leak."
            ]
        );
    }

    #[test]
    fn dontneed_drops_rss_and_failures_are_named() {
        let last = SmapsRollup {
            rss: 16 << 20,
            ..SmapsRollup::default()
        };
        let text = traced(
            &[
                (advice::DONTNEED, 512 << 20, None),
                (advice::FREE, 4096, Some(libc::EINVAL)),
                (advice::NOHUGEPAGE, 4 << 20, None),
            ],
            528 << 20,
            last,
        );
        assert_eq!(
            text,
            [
                "512.0 MiB was released with MADV_DONTNEED: those pages left RSS at once.",
                "1 madvise calls failed and released nothing.",
                "RSS fell by 512.0 MiB over the window (528.0 MiB → 16.0 MiB).",
            ]
        );
    }

    #[test]
    fn reclaim_stalls_come_first() {
        // Per-process stall totals come from the kernel's histograms.
        let mut stalls = crate::model::reclaim::StallStats::default();
        for latency_ns in [40_000, 1_500_000, 60_000] {
            stalls.add(latency_ns, 32, 32);
        }
        let mut reclaim = Reclaim::default();
        reclaim.stalls.insert((1, ReclaimKind::Memcg), stalls);
        let mut a = Attribution::default();
        a.name(1, "reader");
        let text = explain(
            a.process_by_pid(1).expect("process"),
            &reclaim,
            Some([0; 4]),
        );
        assert_eq!(
            text,
            [
                "Its allocations stalled 3 times in memcg reclaim (its memory cgroup was at its \
              limit), 1.600 ms in all, the longest 1.500 ms."
            ]
        );
    }

    #[test]
    fn exec_is_named() {
        let mut a = Attribution::default();
        a.name(1, "sh");
        for comm in ["env", "worker"] {
            a.record(&crate::model::event::Event::Exec(
                crate::model::event::Exec {
                    tgid: 1,
                    comm: comm.into(),
                    ts_ns: 0,
                    memory_cgroup_id: None,
                },
            ));
        }
        let text = explain(
            a.process_by_pid(1).expect("process"),
            &Reclaim::default(),
            Some([0; 4]),
        );
        assert_eq!(
            text,
            [
                "It called exec while traced: sh became env, then worker (a new program and \
              address space)."
            ]
        );
    }

    /// Without smaps_rollup (system-wide), the sentence says only what the kernel's counters
    /// bound: 576 MiB freed then unmapped is not "in RSS as LazyFree" with 92 KiB of anon RSS.
    #[test]
    fn free_without_smaps_says_only_what_is_known() {
        let explain_free = |anon: Option<u64>, exited: bool| {
            let mut a = Attribution::default();
            a.record(&test_madvise(1, advice::FREE, 576 << 20, None));
            let mut rss = crate::model::attribution::Rss::default();
            rss.size[RssMember::Anon as usize] = anon;
            a.set_rss([(1, rss)].into());
            if exited {
                a.exited(1);
            }
            explain(
                a.process_by_pid(1).expect("process"),
                &Reclaim::default(),
                Some([0; 4]),
            )
        };
        assert_eq!(
            explain_free(Some(92 << 10), false),
            [
                "576.0 MiB was released with MADV_FREE; at most 92.0 KiB of it can still be in RSS \
                 as LazyFree (its anonymous RSS now): the rest was reclaimed, written to again or \
                 unmapped."
            ]
        );
        assert!(
            explain_free(None, false)[0]
                .contains("how much is still LazyFree is read only for --pid targets")
        );
        assert!(
            explain_free(Some(600 << 20), false)[0].contains("unless they are written to again")
        );
        assert!(explain_free(Some(600 << 20), true)[0].contains("the process has exited"));
    }

    #[test]
    fn quiet_process() {
        let last = SmapsRollup {
            rss: 4 << 20,
            ..SmapsRollup::default()
        };
        assert_eq!(
            traced(&[], 4 << 20, last),
            ["No memory was released, and RSS did not change, while traced."]
        );
    }
}
