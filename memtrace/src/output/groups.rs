//! The report grouped by container or cgroup (`--by`): per group what its processes did, and
//! its memory cgroup's own accounting beside their RSS.

use std::fmt::Write as _;

use super::placement::placement_notes;
use crate::{
    analysis::groups::GroupView,
    kernel::memcg::{CgroupVersion, MemcgUsage},
    units::{human_bytes, ms},
};

/// Each group (the first `top`), then how many more.
pub fn text(out: &mut String, groups: &[GroupView], top: Option<usize>) {
    let shown = top.unwrap_or(usize::MAX).min(groups.len());
    for group in &groups[..shown] {
        out.push('\n');
        group_text(out, group);
    }
    if shown < groups.len() {
        let _ = writeln!(
            out,
            "\n… and {} more groups (see --top or --json)",
            groups.len() - shown
        );
    }
}

/// The live view's table of the groups, under its processes: what each did, its processes'
/// RSS, and its memory cgroup's own use and limit. Empty without `--by`.
pub fn screen(groups: &[GroupView], rows: usize) -> String {
    let mut out = String::new();
    if groups.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<40} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>4}",
        "GROUP", "PROCS", "RELEASED", "MAPPED", "RSS", "MEMCG", "LIMIT", "STALLS", "OOM"
    );
    for g in groups.iter().take(rows) {
        let memcg = g.memcg.as_ref();
        let _ = writeln!(
            out,
            "{:<40} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>4}",
            title(g),
            g.pids.len(),
            human_bytes(g.released_bytes),
            human_bytes(g.mapped_bytes),
            g.rss_bytes.map_or_else(|| "?".to_owned(), human_bytes),
            memcg.map_or_else(|| "?".to_owned(), |m| human_bytes(m.usage)),
            memcg.map_or_else(
                || "?".to_owned(),
                |m| m.limit.map_or_else(|| "none".to_owned(), human_bytes)
            ),
            g.memcg_stalls,
            g.oom_kills,
        );
    }
    if groups.len() > rows {
        let _ = writeln!(out, "… {} more groups", groups.len() - rows);
    }
    out
}

/// What names a group: its container or pod, else its cgroup.
fn title(g: &GroupView) -> String {
    let title = placement_notes(g.container.as_ref(), g.pod.as_ref()).join(", ");
    if !title.is_empty() {
        return title;
    }
    match g.key.as_str() {
        "host" => "no container".to_owned(),
        "?" => "cgroup unknown (gone before memtrace looked)".to_owned(),
        path => format!("cgroup {path}"),
    }
}

fn group_text(out: &mut String, g: &GroupView) {
    let title = title(g);
    let pids: Vec<String> = g.pids.iter().map(u32::to_string).collect();
    let _ = writeln!(
        out,
        "{title}: {} processes (pids {})",
        g.pids.len(),
        pids.join(", ")
    );
    if let Some(cgroup) = &g.cgroup
        && g.container.is_some()
    {
        let _ = writeln!(out, "  cgroup {cgroup}");
    }
    let _ = writeln!(
        out,
        "  released {} in {} madvise calls; mapped {}; faults {} minor, {} major",
        human_bytes(g.released_bytes),
        g.madvise_calls,
        human_bytes(g.mapped_bytes),
        g.minor_faults,
        g.major_faults
    );
    let rss = g.rss_bytes.map_or_else(|| "?".to_owned(), human_bytes);
    let _ = writeln!(out, "  rss of its live processes: {rss}");
    if let Some(memcg) = &g.memcg {
        memcg_text(out, memcg, g.rss_bytes);
    }
    if g.memcg_stalls > 0 {
        let _ = writeln!(
            out,
            "  memcg reclaim: {} stalls, {:.3} ms total, {} pages reclaimed",
            g.memcg_stalls,
            ms(g.memcg_stall_ns),
            g.memcg_reclaimed_pages
        );
    }
    if g.oom_kills > 0 {
        let _ = writeln!(out, "  OOM kills: {}", g.oom_kills);
    }
}

/// `memory cgroup (v2): 127.9 MiB of 128.0 MiB (99.9 %) …` and, when the cgroup is near its
/// limit with its processes holding little of it, what holds the rest.
fn memcg_text(out: &mut String, m: &MemcgUsage, rss: Option<u64>) {
    let version = match m.version {
        CgroupVersion::V1 => "v1",
        CgroupVersion::V2 => "v2",
    };
    let opt = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), human_bytes);
    let limit = match m.limit {
        Some(limit) => format!(
            " of {} ({:.1} %)",
            human_bytes(limit),
            m.usage as f64 * 100.0 / limit.max(1) as f64
        ),
        None => " (no limit)".to_owned(),
    };
    let _ = writeln!(
        out,
        "  memory cgroup ({version}): {}{limit}: anon {}, page cache {} (inactive {}), shmem {}",
        human_bytes(m.usage),
        opt(m.anon),
        opt(m.file),
        opt(m.inactive_file),
        opt(m.shmem)
    );
    let mut events = Vec::new();
    if let Some(hits) = m.limit_hits.filter(|&n| n > 0) {
        events.push(format!("limit hit {hits} times"));
    }
    if let (Some(scan), Some(steal)) = (m.pgscan, m.pgsteal) {
        events.push(format!("reclaim scanned {scan} pages, took {steal}"));
    }
    if let Some(refaults) = m.refault_file.filter(|&n| n > 0) {
        events.push(format!("{refaults} page cache refaults"));
    }
    if let Some(kills) = m.oom_kills.filter(|&n| n > 0) {
        events.push(format!("{kills} OOM kills since it was created"));
    }
    if !events.is_empty() {
        let _ = writeln!(out, "    {}", events.join("; "));
    }
    if let Some(reading) = page_cache_reading(m, rss) {
        let _ = writeln!(out, "    {reading}");
    }
}

/// The classic diagnosis: near its limit, its processes' RSS small, the rest page cache.
fn page_cache_reading(m: &MemcgUsage, rss: Option<u64>) -> Option<String> {
    let limit = m.limit?;
    let file = m.file?;
    let near_limit = m.usage * 10 >= limit * 9;
    let mostly_cache = file * 2 > m.usage;
    (near_limit && mostly_cache).then(|| {
        let rss = rss.map_or_else(|| "unknown".to_owned(), human_bytes);
        format!(
            "at its limit with page cache: {} of its {} is file pages ({} inactive, the first \
             reclaim takes), its processes' RSS is {rss}",
            human_bytes(file),
            human_bytes(m.usage),
            m.inactive_file.map_or_else(|| "?".to_owned(), human_bytes),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> MemcgUsage {
        MemcgUsage {
            version: CgroupVersion::V1,
            usage: 127 << 20,
            limit: Some(128 << 20),
            high: None,
            anon: Some(4 << 20),
            file: Some(120 << 20),
            shmem: Some(0),
            file_mapped: Some(0),
            file_dirty: Some(0),
            file_writeback: Some(0),
            active_anon: Some(0),
            inactive_anon: Some(4 << 20),
            active_file: Some(8 << 20),
            inactive_file: Some(112 << 20),
            swap: Some(0),
            pgscan: None,
            pgsteal: None,
            refault_anon: Some(0),
            refault_file: Some(0),
            pglazyfree: None,
            pglazyfreed: None,
            pgfault: Some(10),
            pgmajfault: Some(0),
            limit_hits: Some(311),
            oom_kills: Some(0),
        }
    }

    #[test]
    fn a_cgroup_at_its_limit_with_page_cache_says_so() {
        let mut out = String::new();
        memcg_text(&mut out, &usage(), Some(5 << 20));
        assert_eq!(
            out,
            "  memory cgroup (v1): 127.0 MiB of 128.0 MiB (99.2 %): anon 4.0 MiB, page cache 120.0 MiB (inactive 112.0 MiB), shmem 0 B\n\
             \x20   limit hit 311 times\n\
             \x20   at its limit with page cache: 120.0 MiB of its 127.0 MiB is file pages (112.0 MiB inactive, the first reclaim takes), its processes' RSS is 5.0 MiB\n"
        );
        // Far from its limit, or mostly anonymous: no such reading.
        let anon = MemcgUsage {
            anon: Some(120 << 20),
            file: Some(4 << 20),
            ..usage()
        };
        assert_eq!(page_cache_reading(&anon, Some(120 << 20)), None);
        let unlimited = MemcgUsage {
            limit: None,
            ..usage()
        };
        assert_eq!(page_cache_reading(&unlimited, None), None);
    }

    /// The live screen's table: a row per group, its cgroup's use and limit beside its
    /// processes' RSS, and how many more groups there are.
    #[test]
    fn the_live_table_lists_the_groups() {
        use crate::model::container::{Container, Runtime};
        assert_eq!(screen(&[], 8), "");
        let group = |key: &str, container: Option<Container>| GroupView {
            key: key.to_owned(),
            cgroup: Some(key.to_owned()),
            container,
            pod: None,
            pids: vec![7, 8],
            released_bytes: 8 << 20,
            madvise_calls: 3,
            mapped_bytes: 16 << 20,
            minor_faults: 0,
            major_faults: 0,
            rss_bytes: Some(5 << 20),
            memcg_stalls: 319,
            memcg_stall_ns: 1,
            memcg_reclaimed_pages: 1,
            oom_kills: 1,
            memcg: Some(usage()),
        };
        let podman = Container {
            runtime: Some(Runtime::Podman),
            id: "4f797c539e6c".repeat(5) + "abcd",
        };
        let table = screen(&[group("/a", Some(podman)), group("/b", None)], 1);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].starts_with("GROUP "), "{table}");
        assert!(
            lines[2].starts_with("podman container 4f797c539e6c"),
            "{table}"
        );
        for column in [
            "8.0 MiB",
            "16.0 MiB",
            "5.0 MiB",
            "127.0 MiB",
            "128.0 MiB",
            "319",
        ] {
            assert!(lines[2].contains(column), "{column} in {table}");
        }
        assert_eq!(lines[3], "… 1 more groups");
    }
}
