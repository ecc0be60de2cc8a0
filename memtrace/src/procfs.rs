//! What /proc and tracefs say about processes and about memtrace itself.

use std::{fs, path::PathBuf};

/// A process's name (`/proc/PID/comm`), if it still exists.
pub fn comm(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
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

/// The directory holding tracepoint definitions, where tracefs is mounted.
pub fn tracefs_events() -> Option<PathBuf> {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|dir| dir.is_dir())
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

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
