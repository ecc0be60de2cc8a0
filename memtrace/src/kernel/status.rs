//! A process's resident memory where /proc/PID/smaps_rollup is refused: /proc/PID/status is
//! readable by anyone, smaps_rollup only with ptrace access to the process (the same user and
//! no more capabilities than the reader, or CAP_SYS_PTRACE). An agent with just CAP_BPF and
//! CAP_PERFMON (the DaemonSet's) reads status; LazyFree, Pss and AnonHugePages are in
//! smaps_rollup alone.

use std::{fs, io};

use super::procfs::SmapsRollup;

/// Resident memory from /proc/PID/status (the kernel's per-mm counters), in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusMemory {
    /// `VmRSS`: `anon` + `file` + `shmem`.
    pub rss: u64,
    /// `RssAnon`, `RssFile`, `RssShmem`.
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    /// `VmSwap`.
    pub swap: u64,
}

impl StatusMemory {
    /// `None` once the process is gone, or for a kernel thread (no memory lines).
    pub fn read(pid: u32) -> Option<Self> {
        parse(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }
}

fn parse(status: &str) -> Option<StatusMemory> {
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    Some(StatusMemory {
        rss: kb("VmRSS:")?,
        anon: kb("RssAnon:")?,
        file: kb("RssFile:")?,
        shmem: kb("RssShmem:")?,
        swap: kb("VmSwap:").unwrap_or(0),
    })
}

/// A process's resident memory, from the best file /proc lets memtrace read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resident {
    Smaps(SmapsRollup),
    /// smaps_rollup was refused (the reason); /proc/PID/status was read instead.
    Status(StatusMemory, &'static str),
}

impl Resident {
    /// `None` once the process is gone.
    pub fn read(pid: u32) -> Option<Self> {
        if let Some(smaps) = SmapsRollup::read(pid) {
            return Some(Self::Smaps(smaps));
        }
        let why = smaps_refused(pid)?;
        StatusMemory::read(pid).map(|status| Self::Status(status, why))
    }
}

/// Why /proc/PID/smaps_rollup cannot be read, when the process is there but refuses it: the
/// one line a report shows in place of LazyFree.
pub fn smaps_refused(pid: u32) -> Option<&'static str> {
    match fs::File::open(format!("/proc/{pid}/smaps_rollup")) {
        Err(e) if refused(&e) => Some(SMAPS_REFUSED),
        _ => None,
    }
}

/// What the user loses without ptrace access, and how to get it.
pub const SMAPS_REFUSED: &str = "smaps_rollup needs ptrace access to the process \
    (CAP_SYS_PTRACE, or the same user): LazyFree, Pss and AnonHugePages unknown, RSS from \
    /proc/PID/status";

fn refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text = "Name:\tcat\nVmPeak:\t    8336 kB\nVmRSS:\t    1920 kB\nRssAnon:\t      96 kB\n\
            RssFile:\t    1824 kB\nRssShmem:\t       0 kB\nVmSwap:\t       4 kB\nThreads:\t1\n";
        assert_eq!(
            parse(text),
            Some(StatusMemory {
                rss: 1920 * 1024,
                anon: 96 * 1024,
                file: 1824 * 1024,
                shmem: 0,
                swap: 4096,
            })
        );
        // A kernel thread has no memory lines.
        assert_eq!(parse("Name:\tkthreadd\nThreads:\t1\n"), None);
        let me = StatusMemory::read(std::process::id()).expect("own status");
        assert!(me.rss > 0 && me.anon > 0, "{me:?}");
        assert_eq!(StatusMemory::read(2), None, "kthreadd");
        assert_eq!(smaps_refused(std::process::id()), None);
        assert!(matches!(
            Resident::read(std::process::id()),
            Some(Resident::Smaps(_))
        ));
    }
}
