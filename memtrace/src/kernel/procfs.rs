//! What /proc says about processes: names, start times, fault counters, memory, pids and
//! what they name. The machine's own facts are in `system.rs`.

use std::fs;

use memtrace_common::members::PF_KTHREAD;

use super::system;

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
    Some(ns_to_ticks(ns, system::clock_hz()?))
}

/// Nanoseconds in clock ticks of `clock_hz`, rounded down as the kernel's `nsec_to_clock_t`
/// does.
pub fn ns_to_ticks(ns: u64, clock_hz: u64) -> u64 {
    ns / (1_000_000_000 / clock_hz.max(1))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_tgid() {
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
