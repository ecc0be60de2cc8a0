//! What the machine says about itself, as opposed to one process: page size, clock ticks,
//! `pid_max`, this process's capabilities, perf and cgroup settings, /proc/vmstat.

use std::fs;

/// Clock ticks per second of /proc's times (`_SC_CLK_TCK`, 100 on x86-64).
pub fn clock_hz() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()
}

/// The largest pid plus one (`kernel.pid_max`); the kernel's limit on 64-bit machines
/// (`PID_MAX_LIMIT`) when it cannot be read, so every pid is covered either way.
pub fn pid_max() -> u32 {
    const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;
    fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(PID_MAX_LIMIT)
}

/// The effective capability set of this process (`CapEff` in /proc/self/status).
pub fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Whether this process may load tracing programs: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
pub fn can_trace() -> bool {
    let Some(caps) = effective_capabilities() else {
        // No /proc/self/status: let the kernel decide.
        return true;
    };
    let has = |cap: u32| caps & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Whether a /proc/vmstat counter is about reclaim (what reclaim reports show).
pub fn is_reclaim_counter(name: &str) -> bool {
    ["pgscan", "pgsteal", "allocstall", "pglazyfree", "oom_kill"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name == "pgrefill"
        || name.starts_with("kswapd_")
}

/// The reclaim counters of /proc/vmstat (see [`is_reclaim_counter`]).
pub fn vmstat() -> std::collections::BTreeMap<String, u64> {
    fs::read_to_string("/proc/vmstat")
        .map(|text| parse_vmstat(&text))
        .unwrap_or_default()
}

fn parse_vmstat(text: &str) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            is_reclaim_counter(name).then(|| Some((name.to_owned(), value.trim().parse().ok()?)))?
        })
        .collect()
}

/// The memory controller's index among the kernel's cgroup subsystems: /proc/cgroups lists
/// them in id order.
pub fn memory_controller_index() -> Option<u32> {
    let text = fs::read_to_string("/proc/cgroups").ok()?;
    let index = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .position(|line| line.split_whitespace().next() == Some("memory"))?;
    u32::try_from(index).ok()
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// `kernel.perf_event_paranoid`: above 2, Debian's kernels (and Android's) let only
/// CAP_SYS_ADMIN open perf events, in older releases whatever CAP_PERFMON says.
pub fn perf_event_paranoid() -> Option<i32> {
    fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vmstat() {
        let vmstat = parse_vmstat("nr_free_pages 5\npglazyfreed 7\npgscan_direct 9\n");
        assert_eq!(vmstat.len(), 2);
        assert_eq!(vmstat["pglazyfreed"], 7);
        assert!(is_reclaim_counter("pgsteal_kswapd"));
        assert!(is_reclaim_counter("allocstall_normal"));
        assert!(!is_reclaim_counter("nr_free_pages"));
    }
}
