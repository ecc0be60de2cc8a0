//! A memory cgroup's own accounting: what the kernel charges to it (page cache included), its
//! limit, and what reclaim did in it — the numbers next to its processes' RSS that tell "at its
//! limit because of page cache" from "its processes hold the memory".
//!
//! cgroup v2 keeps them in `memory.current`, `memory.max`, `memory.high`, `memory.stat`,
//! `memory.events` and `memory.swap.current`; v1 in `memory.usage_in_bytes`,
//! `memory.limit_in_bytes`, `memory.failcnt`, `memory.oom_control` and `memory.stat`, whose
//! hierarchical `total_*` lines match `usage_in_bytes` (which counts descendants too). A value
//! this kernel's files lack is `None`, never 0.

use std::{collections::BTreeMap, fs, path::Path};

/// Which cgroup hierarchy the accounting comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A memory cgroup's accounting at one moment. Sizes in bytes, events as counts since the
/// cgroup was created.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemcgUsage {
    pub version: CgroupVersion,
    /// Every page charged to the cgroup and its descendants: anonymous, page cache, kernel.
    pub usage: u64,
    /// The hard limit (`memory.max`, `memory.limit_in_bytes`); `None` when unlimited.
    pub limit: Option<u64>,
    /// cgroup v2's throttling limit (`memory.high`); `None` when unlimited or on v1.
    pub high: Option<u64>,
    /// Anonymous memory (v2 `anon`, v1 `rss`): what only swap or an exit frees.
    pub anon: Option<u64>,
    /// Page cache, tmpfs and shared memory included (v2 `file`, v1 `cache`).
    pub file: Option<u64>,
    pub shmem: Option<u64>,
    pub file_mapped: Option<u64>,
    pub file_dirty: Option<u64>,
    pub file_writeback: Option<u64>,
    pub active_anon: Option<u64>,
    pub inactive_anon: Option<u64>,
    pub active_file: Option<u64>,
    /// The cache reclaim takes first.
    pub inactive_file: Option<u64>,
    pub swap: Option<u64>,
    /// Pages reclaim scanned and took in this cgroup (v2 only).
    pub pgscan: Option<u64>,
    pub pgsteal: Option<u64>,
    /// Evicted pages faulted back in soon after: reclaim took memory that was still in use.
    pub refault_anon: Option<u64>,
    pub refault_file: Option<u64>,
    /// Pages marked MADV_FREE, and those reclaim then freed (v2 only).
    pub pglazyfree: Option<u64>,
    pub pglazyfreed: Option<u64>,
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
    /// Times usage hit the limit (v1 `memory.failcnt`, v2 `memory.events` `max`).
    pub limit_hits: Option<u64>,
    /// Processes the OOM killer killed in this cgroup (`oom_kill` in v2 `memory.events`, v1
    /// `memory.oom_control`).
    pub oom_kills: Option<u64>,
}

impl MemcgUsage {
    /// Reads the memory cgroup whose directory is `dir` (under a v1 memory or a v2 mount).
    /// `None` when it is gone or has no memory accounting (the v2 root has no
    /// `memory.current`).
    pub fn read(dir: &Path) -> Option<Self> {
        let file = |name: &str| fs::read_to_string(dir.join(name)).ok();
        if let Some(current) = file("memory.current") {
            return Self::from_v2(V2Files {
                current: &current,
                max: file("memory.max").as_deref(),
                high: file("memory.high").as_deref(),
                stat: file("memory.stat").as_deref().unwrap_or_default(),
                events: file("memory.events").as_deref(),
                swap_current: file("memory.swap.current").as_deref(),
            });
        }
        let usage = file("memory.usage_in_bytes")?;
        Self::from_v1(V1Files {
            usage: &usage,
            limit: file("memory.limit_in_bytes").as_deref(),
            stat: file("memory.stat").as_deref().unwrap_or_default(),
            failcnt: file("memory.failcnt").as_deref(),
            oom_control: file("memory.oom_control").as_deref(),
        })
    }

    fn from_v2(files: V2Files<'_>) -> Option<Self> {
        let stat = keyed(files.stat);
        let events = files.events.map(keyed).unwrap_or_default();
        let get = |key: &str| stat.get(key).copied();
        Some(Self {
            version: CgroupVersion::V2,
            usage: files.current.trim().parse().ok()?,
            limit: files.max.and_then(v2_limit),
            high: files.high.and_then(v2_limit),
            anon: get("anon"),
            file: get("file"),
            shmem: get("shmem"),
            file_mapped: get("file_mapped"),
            file_dirty: get("file_dirty"),
            file_writeback: get("file_writeback"),
            active_anon: get("active_anon"),
            inactive_anon: get("inactive_anon"),
            active_file: get("active_file"),
            inactive_file: get("inactive_file"),
            swap: files.swap_current.and_then(|s| s.trim().parse().ok()),
            pgscan: get("pgscan"),
            pgsteal: get("pgsteal"),
            refault_anon: get("workingset_refault_anon"),
            refault_file: get("workingset_refault_file"),
            pglazyfree: get("pglazyfree"),
            pglazyfreed: get("pglazyfreed"),
            pgfault: get("pgfault"),
            pgmajfault: get("pgmajfault"),
            limit_hits: events.get("max").copied(),
            oom_kills: events.get("oom_kill").copied(),
        })
    }

    fn from_v1(files: V1Files<'_>) -> Option<Self> {
        let stat = keyed(files.stat);
        // The hierarchical totals, which usage_in_bytes matches.
        let total = |key: &str| stat.get(&format!("total_{key}")).copied();
        Some(Self {
            version: CgroupVersion::V1,
            usage: files.usage.trim().parse().ok()?,
            limit: files.limit.and_then(v1_limit),
            high: None,
            anon: total("rss"),
            file: total("cache"),
            shmem: total("shmem"),
            file_mapped: total("mapped_file"),
            file_dirty: total("dirty"),
            file_writeback: total("writeback"),
            active_anon: total("active_anon"),
            inactive_anon: total("inactive_anon"),
            active_file: total("active_file"),
            inactive_file: total("inactive_file"),
            swap: total("swap"),
            pgscan: None,
            pgsteal: None,
            refault_anon: total("workingset_refault_anon"),
            refault_file: total("workingset_refault_file"),
            pglazyfree: None,
            pglazyfreed: None,
            pgfault: total("pgfault"),
            pgmajfault: total("pgmajfault"),
            limit_hits: files.failcnt.and_then(|s| s.trim().parse().ok()),
            oom_kills: files
                .oom_control
                .and_then(|text| keyed(text).get("oom_kill").copied()),
        })
    }
}

struct V2Files<'a> {
    current: &'a str,
    max: Option<&'a str>,
    high: Option<&'a str>,
    stat: &'a str,
    events: Option<&'a str>,
    swap_current: Option<&'a str>,
}

struct V1Files<'a> {
    usage: &'a str,
    limit: Option<&'a str>,
    stat: &'a str,
    failcnt: Option<&'a str>,
    oom_control: Option<&'a str>,
}

/// `key value` lines (memory.stat, memory.events, memory.oom_control).
fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A v2 limit file: a byte count, or `max`.
fn v2_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A v1 limit file: unlimited is the largest page count in bytes (`PAGE_COUNTER_MAX`, about
/// 2^63 rounded down to a page).
fn v1_limit(text: &str) -> Option<u64> {
    const UNLIMITED_FROM: u64 = 1 << 62;
    text.trim()
        .parse()
        .ok()
        .filter(|&limit| limit < UNLIMITED_FROM)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container at its 128 MiB limit (v2, Linux 6.12): 12 MiB of it anonymous, 110 MiB
    /// page cache of which 100 MiB inactive.
    const V2_STAT: &str = "anon 12582912\nfile 115343360\nkernel 1994752\nshmem 0\n\
        file_mapped 2097152\nfile_dirty 0\nfile_writeback 0\ninactive_anon 12582912\n\
        active_anon 0\ninactive_file 104857600\nactive_file 10485760\n\
        workingset_refault_anon 0\nworkingset_refault_file 2048\npgscan 190000\n\
        pgsteal 188000\npgfault 4000\npgmajfault 12\npglazyfree 0\npglazyfreed 0\n";

    #[test]
    fn reads_v2_files() {
        let usage = MemcgUsage::from_v2(V2Files {
            current: "134201344\n",
            max: Some("134217728\n"),
            high: Some("max\n"),
            stat: V2_STAT,
            events: Some("low 0\nhigh 0\nmax 311\noom 1\noom_kill 1\noom_group_kill 0\n"),
            swap_current: Some("0\n"),
        })
        .unwrap();
        assert_eq!(usage.version, CgroupVersion::V2);
        assert_eq!((usage.usage, usage.limit), (134_201_344, Some(134_217_728)));
        assert_eq!(usage.high, None);
        assert_eq!(
            (usage.anon, usage.file),
            (Some(12_582_912), Some(115_343_360))
        );
        assert_eq!(usage.inactive_file, Some(104_857_600));
        assert_eq!(
            (usage.pgscan, usage.pgsteal),
            (Some(190_000), Some(188_000))
        );
        assert_eq!(
            (usage.refault_anon, usage.refault_file),
            (Some(0), Some(2048))
        );
        assert_eq!((usage.limit_hits, usage.oom_kills), (Some(311), Some(1)));
        assert_eq!(usage.swap, Some(0));
        // A kernel without swap accounting or memory.events: unknown, not zero.
        let bare = MemcgUsage::from_v2(V2Files {
            current: "4096",
            max: Some("max"),
            high: None,
            stat: "anon 4096\n",
            events: None,
            swap_current: None,
        })
        .unwrap();
        assert_eq!((bare.limit, bare.swap, bare.oom_kills), (None, None, None));
        assert_eq!((bare.file, bare.refault_file), (None, None));
    }

    #[test]
    fn reads_v1_files() {
        // This machine's own kernel (6.18, cgroup v1): own and hierarchical lines.
        let stat = "cache 0\nrss 0\nshmem 0\nmapped_file 0\ninactive_file 0\n\
            hierarchical_memory_limit 104857600\ntotal_cache 94371840\ntotal_rss 8388608\n\
            total_rss_huge 0\ntotal_shmem 0\ntotal_mapped_file 1048576\ntotal_dirty 0\n\
            total_writeback 0\ntotal_workingset_refault_anon 0\ntotal_workingset_refault_file 77\n\
            total_swap 0\ntotal_pgfault 3000\ntotal_pgmajfault 5\ntotal_inactive_anon 8388608\n\
            total_active_anon 0\ntotal_inactive_file 90177536\ntotal_active_file 4194304\n";
        let usage = MemcgUsage::from_v1(V1Files {
            usage: "104792064\n",
            limit: Some("104857600\n"),
            stat,
            failcnt: Some("2291\n"),
            oom_control: Some("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
        })
        .unwrap();
        assert_eq!(usage.version, CgroupVersion::V1);
        assert_eq!((usage.usage, usage.limit), (104_792_064, Some(104_857_600)));
        assert_eq!(
            (usage.anon, usage.file),
            (Some(8_388_608), Some(94_371_840))
        );
        assert_eq!(usage.inactive_file, Some(90_177_536));
        assert_eq!(usage.refault_file, Some(77));
        assert_eq!(
            (usage.pgscan, usage.pglazyfree, usage.high),
            (None, None, None)
        );
        assert_eq!((usage.limit_hits, usage.oom_kills), (Some(2291), Some(2)));
        assert_eq!(v1_limit("9223372036854771712\n"), None, "unlimited");
    }

    #[test]
    fn reads_a_live_memory_cgroup() {
        let hierarchy = crate::kernel::cgroup::Hierarchy::find().expect("a cgroup hierarchy");
        let path = hierarchy
            .of_process(std::process::id())
            .expect("own cgroup");
        let usage = MemcgUsage::read(&hierarchy.dir(&path));
        // The root of a v2 hierarchy has no memory.current: nothing is charged to it alone.
        if let Some(usage) = usage {
            assert!(usage.usage > 0, "{usage:?}");
            assert!(usage.anon.is_some() && usage.file.is_some(), "{usage:?}");
        } else {
            assert_eq!(path, "/", "no accounting read for {path}");
        }
        assert_eq!(MemcgUsage::read(Path::new("/nonexistent")), None);
    }
}
