//! What /proc says about processes, the system and memtrace itself.

use std::fs;

use memtrace_common::members::PF_KTHREAD;

/// A process's name (`/proc/PID/comm`), if it still exists.
pub fn comm(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// Memory totals from `/proc/PID/smaps_rollup`, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmapsRollup {
    pub rss: u64,
    pub pss: u64,
    pub anonymous: u64,
    pub lazy_free: u64,
    pub anon_huge_pages: u64,
    pub swap: u64,
}

impl SmapsRollup {
    /// `None` once the process is gone (or for kernel threads, which have no memory).
    pub fn read(pid: u32) -> Option<Self> {
        parse_smaps_rollup(&fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
    }
}

fn parse_smaps_rollup(text: &str) -> Option<SmapsRollup> {
    let mut rollup = SmapsRollup::default();
    let mut seen = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Some(kb) = value
            .trim()
            .strip_suffix("kB")
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let slot = match key {
            "Rss" => &mut rollup.rss,
            "Pss" => &mut rollup.pss,
            "Anonymous" => &mut rollup.anonymous,
            "LazyFree" => &mut rollup.lazy_free,
            "AnonHugePages" => &mut rollup.anon_huge_pages,
            "Swap" => &mut rollup.swap,
            _ => continue,
        };
        *slot = kb * 1024;
        seen = true;
    }
    seen.then_some(rollup)
}

/// The current program break of a process: the end of its `[heap]` mapping, or `start_brk`
/// (field 47 of /proc/PID/stat) when the heap was never grown. `None` without ptrace access
/// to the process: /proc/PID/maps is refused then, and the kernel writes 0 for `start_brk`.
pub fn program_break(pid: u32) -> Option<u64> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let heap_end = maps
        .lines()
        .filter(|l| l.ends_with("[heap]"))
        .find_map(|l| {
            let range = l.split_whitespace().next()?;
            u64::from_str_radix(range.split_once('-')?.1, 16).ok()
        });
    heap_end.or_else(|| stat_field(pid, 47).filter(|&start_brk| start_brk != 0))
}

/// A numeric field of /proc/PID/stat, numbered from 1 as in proc(5).
pub fn stat_field(pid: u32, field: usize) -> Option<u64> {
    stat_value(
        &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
        field,
    )
}

/// A numeric field (from 3 on) of a stat line.
fn stat_value(stat: &str, field: usize) -> Option<u64> {
    // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace()
        .nth(field.checked_sub(3)?)?
        .parse()
        .ok()
}

/// Whether `pid` is a kernel thread (`PF_KTHREAD` in /proc/PID/stat's flags): it has no user
/// memory.
pub fn is_kernel_thread(pid: u32) -> bool {
    stat_field(pid, 9).is_some_and(|flags| flags & u64::from(PF_KTHREAD) != 0)
}

/// A process's start time (as [`start_ticks`]) and whether it still runs (neither a zombie nor
/// dead), from one read of /proc/PID/stat; `None` once the pid is gone.
pub fn start_and_running(pid: u32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
    Some((stat_value(&stat, 22)?, !matches!(state, "Z" | "X" | "x")))
}

/// When a process started, in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat_field(pid, 22)
}

/// A CLOCK_BOOTTIME instant in ns (a task's `start_boottime`) in the clock ticks of
/// [`start_ticks`], rounded down as the kernel's `nsec_to_clock_t` does.
pub fn boot_ns_to_ticks(ns: u64) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(ns / (1_000_000_000 / hz.max(1)))
}

/// Per-thread fault counters of a process: `(tid, minflt, majflt)` from
/// /proc/PID/task/TID/stat (fields 10 and 12). Empty once the process is gone.
pub fn thread_faults(pid: u32) -> Vec<(u32, u64, u64)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            let (minflt, majflt) = (stat_value(&stat, 10)?, stat_value(&stat, 12)?);
            Some((tid, minflt, majflt))
        })
        .collect()
}

/// The pids /proc lists: every process (threads are under /proc/PID/task).
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
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

/// What a pid names, as /proc/PID/status says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidKind {
    /// A live process: a thread group leader that has not exited.
    Process,
    /// A thread of process `tgid`.
    Thread { tgid: u32 },
    /// A process that has exited but that its parent has not reaped yet.
    Zombie,
}

/// What `pid` names, or `None` when no task has it.
pub fn pid_kind(pid: u32) -> Option<PidKind> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let tgid: u32 = field("Tgid:")?.parse().ok()?;
    Some(if tgid != pid {
        PidKind::Thread { tgid }
    } else if field("State:").is_some_and(|s| s.starts_with('Z')) {
        PidKind::Zombie
    } else {
        PidKind::Process
    })
}

/// Whether `pid` is a live process (a thread group leader), not a thread or a zombie.
pub fn is_live_process(pid: u32) -> bool {
    pid_kind(pid) == Some(PidKind::Process)
}

/// The pid a caller's pidfd refers to, from `/proc/CALLER/fdinfo/FD` (`Pid:` line). `None` once
/// the caller closed the fd or exited, or if the fd is not a pidfd.
pub fn pidfd_target(caller: u32, fd: i32) -> Option<u32> {
    let info = fs::read_to_string(format!("/proc/{caller}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|pid| pid.trim().parse::<i64>().ok())
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|&pid| pid > 0)
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

/// Whether a task has begun to exit (PF_EXITING in /proc/PID/stat's flags) or is gone: cgroup
/// v1 then shows it in the root cgroup whatever its real one.
pub fn exiting(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    stat_field(pid, 9).is_none_or(|flags| flags & PF_EXITING != 0)
}

/// The process (thread group) a task belongs to, from `/proc/TID/status`.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whose memory cgroup an OOM kill names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CgroupOf {
    /// The victim's own, read while it was (at best) a zombie.
    Victim,
    /// The victim was already reaped: the triggering task's, as the kernel side read it.
    Trigger,
}

/// What /proc still says about an OOM victim task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VictimFacts {
    /// The victim's process (its thread group), while /proc shows it.
    pub tgid: Option<u32>,
    /// Its memory cgroup, or the triggering task's once the victim is reaped.
    pub cgroup: Option<(String, CgroupOf)>,
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
        assert_eq!(tgid_of(std::process::id()), Some(std::process::id()));
        assert!(!exiting(std::process::id()));
    }

    #[test]
    fn reads_own_comm() {
        let me = std::process::id();
        assert_eq!(
            comm(me),
            fs::read_to_string("/proc/self/comm")
                .ok()
                .map(|c| c.trim().to_owned())
        );
        assert_eq!(comm(0), None);
    }

    #[test]
    fn parses_smaps_rollup() {
        let text =
            "55d0c1c9a000-7ffd4a5f8000 ---p 00000000 00:00 0                          [rollup]
Rss:              272856 kB
Pss:              270000 kB
Anonymous:        271492 kB
LazyFree:         262268 kB
AnonHugePages:         0 kB
Swap:                  0 kB
";
        let r = parse_smaps_rollup(text).unwrap();
        assert_eq!(
            (r.rss, r.pss, r.lazy_free),
            (272_856 * 1024, 270_000 * 1024, 262_268 * 1024)
        );
        assert_eq!(parse_smaps_rollup("garbage"), None);
        assert!(SmapsRollup::read(std::process::id()).unwrap().rss > 0);
    }

    #[test]
    fn reads_own_stat_and_break() {
        let me = std::process::id();
        // SAFETY: no preconditions.
        let parent = unsafe { libc::getppid() };
        assert_eq!(stat_field(me, 4), u64::try_from(parent).ok());
        assert_eq!(stat_field(me, 2), None); // comm is not numeric and precedes the fields
        assert!(stat_field(me, 10).is_some()); // minflt
        assert!(program_break(me).is_some());
        assert!(is_live_process(me));
        assert_eq!(
            start_and_running(me),
            Some((start_ticks(me).unwrap(), true))
        );
        assert_eq!(start_and_running(0), None);
        assert!(!is_kernel_thread(me));
        assert!(is_kernel_thread(2), "pid 2 is kthreadd");
        let threads = thread_faults(me);
        assert!(
            threads
                .iter()
                .any(|&(tid, minflt, _)| tid == me && minflt > 0)
        );
        assert!(!is_live_process(0));
    }

    #[test]
    fn resolves_a_pidfd() {
        let me = std::process::id();
        // SAFETY: plain syscall; the fd is closed below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, me as libc::pid_t, 0) } as i32;
        assert!(fd >= 0, "pidfd_open failed");
        assert_eq!(pidfd_target(me, fd), Some(me));
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        assert_eq!(pidfd_target(me, fd), None);
    }
}
