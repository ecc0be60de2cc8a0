//! Pid namespaces: the pid a process has inside its own namespace (a container's view), and
//! whether memtrace itself sees the host's pids, which are the only ones the kernel programs
//! and tracepoints report.

use std::fs;

use anyhow::bail;

/// The inode number of the initial (host) pid namespace: a constant of the kernel's
/// (`PROC_PID_INIT_INO` in include/linux/proc_ns.h, since Linux 3.8).
const HOST_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

/// A process's pid in each pid namespace it is in, from the one /proc was mounted in down to
/// its own (`NSpid` in /proc/PID/status, Linux ≥ 4.1). `None` once the process is gone.
pub fn ns_pids(pid: u32) -> Option<Vec<u32>> {
    parse_ns_pids(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// A process's pid inside its own pid namespace: what `ps` shows in its container. The same
/// as `pid` for a process of the host's namespace.
pub fn pid_in_own_namespace(pid: u32) -> Option<u32> {
    ns_pids(pid)?.last().copied()
}

fn parse_ns_pids(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let pids: Option<Vec<u32>> = line.split_whitespace().map(|p| p.parse().ok()).collect();
    pids.filter(|p| !p.is_empty())
}

/// Fails with one line unless memtrace runs in the host's pid namespace and /proc shows that
/// namespace's pids. The kernel programs filter and report processes by their host pids; in
/// another namespace (a container without `--pid=host`) `--pid N` would name another process,
/// and every system-wide count would go to pids /proc cannot show.
pub fn check_host_pid_namespace() -> anyhow::Result<()> {
    let own = fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|link| namespace_inode(&link.to_string_lossy()));
    let proc_self = fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_string_lossy().parse::<u32>().ok());
    match verdict(own, proc_self, std::process::id()) {
        Ok(()) => Ok(()),
        Err(why) => bail!(
            "{why}: the kernel names processes by their host pids, so every count would go to \
             the wrong process. Run memtrace in the host's pid namespace, with its /proc \
             (docker/podman run --pid=host; hostPID: true in Kubernetes)"
        ),
    }
}

/// Why memtrace cannot trust the pids it sees.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum ForeignPids {
    #[error("not in the host's pid namespace (in pid:[{0}])")]
    OtherNamespace(u64),
    #[error("cannot tell which pid namespace this is")]
    UnknownNamespace,
    /// In the host's namespace yet missing from /proc: a container's /proc mounted here.
    #[error("/proc is not the host's (/proc/self is not memtrace)")]
    ForeignProc,
}

/// Why memtrace cannot trust its pids, if it cannot: its own namespace's inode (from
/// `/proc/self/ns/pid`), the pid `/proc/self` names, and its own pid.
fn verdict(own: Option<u64>, proc_self: Option<u32>, pid: u32) -> Result<(), ForeignPids> {
    match own {
        Some(HOST_PID_NAMESPACE) => {}
        Some(inode) => return Err(ForeignPids::OtherNamespace(inode)),
        None => return Err(ForeignPids::UnknownNamespace),
    }
    match proc_self {
        Some(p) if p == pid => Ok(()),
        _ => Err(ForeignPids::ForeignProc),
    }
}

/// The inode of a namespace link's target: `pid:[4026531836]` → 4026531836.
fn namespace_inode(link: &str) -> Option<u64> {
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ns_pids() {
        let status = "Name:\tsh\nTgid:\t4242\nNgid:\t0\nPid:\t4242\nPPid:\t1\nNSpid:\t4242\t7\t1\n";
        assert_eq!(parse_ns_pids(status), Some(vec![4242, 7, 1]));
        assert_eq!(parse_ns_pids("NSpid:\t12\n"), Some(vec![12]));
        assert_eq!(parse_ns_pids("Pid:\t12\n"), None, "before Linux 4.1");
        assert_eq!(parse_ns_pids("NSpid:\t12 x\n"), None);
        let me = std::process::id();
        assert_eq!(ns_pids(me).and_then(|p| p.first().copied()), Some(me));
        assert_eq!(ns_pids(0), None);
    }

    #[test]
    fn namespace_verdicts() {
        assert_eq!(
            namespace_inode("pid:[4026531836]"),
            Some(HOST_PID_NAMESPACE)
        );
        assert_eq!(namespace_inode("net:[4026531836]"), None);
        assert_eq!(verdict(Some(HOST_PID_NAMESPACE), Some(10), 10), Ok(()));
        let child = verdict(Some(4_026_532_001), Some(3), 3).unwrap_err();
        assert!(child.to_string().contains("pid:[4026532001]"), "{child}");
        // `unshare -p` without --mount-proc: the namespace alone refuses it.
        assert_eq!(
            verdict(Some(4_026_532_001), Some(900), 3),
            Err(ForeignPids::OtherNamespace(4_026_532_001))
        );
        assert_eq!(
            verdict(Some(HOST_PID_NAMESPACE), None, 10),
            Err(ForeignPids::ForeignProc)
        );
        assert_eq!(
            verdict(None, Some(10), 10),
            Err(ForeignPids::UnknownNamespace)
        );
    }
}
