//! Tracepoint record layouts from tracefs (`events/<group>/<name>/format`): where each field
//! sits on the running kernel.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use memtrace_common::hooks::Tracepoint;

/// Where tracefs is mounted: its own mount point, then the older one inside debugfs.
const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why memtrace cannot read the tracepoint definitions.
#[derive(Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// tracefs is mounted at neither place.
    NotMounted,
    /// tracefs (or debugfs, above it) is there, but this user may not read it (EACCES or
    /// EPERM). tracefs is root's alone by default: its root directory is mode 0700 and its
    /// files belong to root; CAP_BPF and CAP_PERFMON do not bypass file permissions.
    NotReadable(&'static str),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotMounted => write!(
                f,
                "tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` (as root) and retry"
            ),
            Self::NotReadable(mount) => write!(
                f,
                "tracefs at {mount} is not readable by this user (permission denied): run memtrace as root, or let a group of yours read tracefs (as root: `{}`)",
                grant_group(mount)
            ),
        }
    }
}

/// The mount command that lets members of a group read tracefs: `gid=` hands its files to the
/// group (their group bits allow reading), `mode=0750` opens its root directory to it.
fn grant_group(mount: &str) -> &'static str {
    if mount == MOUNTS[0] {
        "mount -o remount,gid=GROUP,mode=0750 /sys/kernel/tracing"
    } else {
        // Under debugfs, debugfs itself (mode 0700) would still be in the way: mount tracefs
        // at its own place instead, where memtrace looks first.
        "mount -t tracefs -o gid=GROUP,mode=0750 nodev /sys/kernel/tracing"
    }
}

/// The directory holding tracepoint definitions, where tracefs is mounted and readable.
pub fn events_dir() -> Result<PathBuf, Unavailable> {
    let mount = first_readable(MOUNTS.into_iter().map(|mount| (mount, probe(mount))))?;
    Ok(Path::new(mount).join("events"))
}

/// Reads `events/header_page`, a file every tracefs has: a mount whose directories can be
/// searched but whose files cannot be read is refused here, instead of passing for a kernel
/// without the tracepoints later.
fn probe(mount: &str) -> io::Result<()> {
    fs::File::open(Path::new(mount).join("events/header_page")).map(drop)
}

/// The first mount that could be read; else the first one refused for permission, else none.
fn first_readable(
    probes: impl IntoIterator<Item = (&'static str, io::Result<()>)>,
) -> Result<&'static str, Unavailable> {
    let mut denied = None;
    for (mount, result) in probes {
        match result {
            Ok(()) => return Ok(mount),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                denied.get_or_insert(mount);
            }
            Err(_) => {}
        }
    }
    Err(denied.map_or(Unavailable::NotMounted, Unavailable::NotReadable))
}

/// Whether the running kernel has this tracepoint.
pub fn exists(events: &Path, tracepoint: Tracepoint) -> bool {
    dir(events, tracepoint).is_dir()
}

/// The byte offset of `field` in the tracepoint's record, if the tracepoint and field exist.
pub fn field_offset(events: &Path, tracepoint: Tracepoint, field: &str) -> Option<u32> {
    let format = fs::read_to_string(dir(events, tracepoint).join("format")).ok()?;
    parse_field_offset(&format, field)
}

fn dir(events: &Path, tracepoint: Tracepoint) -> PathBuf {
    events.join(tracepoint.group).join(tracepoint.name)
}

/// Finds `field:<type> <field>;\toffset:N;` in a format file.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        // The name is the last word, without any array suffix (`char comm[16]`).
        let name = declaration.rsplit(' ').next()?.split('[').next()?;
        if name != field {
            return None;
        }
        parts.next()?.strip_prefix("offset:")?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK: &str = "name: sched_process_fork
ID: 366
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:16;\tsize:16;\tsigned:0;
\tfield:pid_t child_pid;\toffset:32;\tsize:4;\tsigned:1;
";

    fn denied() -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EACCES))
    }

    fn absent() -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    }

    #[test]
    fn a_refused_mount_is_not_taken_for_a_missing_one() {
        let [tracing, debug] = MOUNTS;
        assert_eq!(
            first_readable([(tracing, Ok(())), (debug, denied())]),
            Ok(tracing)
        );
        assert_eq!(
            first_readable([(tracing, absent()), (debug, Ok(()))]),
            Ok(debug)
        );
        assert_eq!(
            first_readable([(tracing, denied()), (debug, absent())]),
            Err(Unavailable::NotReadable(tracing))
        );
        assert_eq!(
            first_readable([(tracing, absent()), (debug, denied())]),
            Err(Unavailable::NotReadable(debug))
        );
        let eperm = Err(io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            first_readable([(tracing, eperm), (debug, absent())]),
            Err(Unavailable::NotReadable(tracing))
        );
        assert_eq!(
            first_readable([(tracing, absent()), (debug, absent())]),
            Err(Unavailable::NotMounted)
        );
    }

    #[test]
    fn finds_offsets() {
        assert_eq!(parse_field_offset(FORK, "child_pid"), Some(32));
        assert_eq!(parse_field_offset(FORK, "parent_pid"), Some(12));
        assert_eq!(parse_field_offset(FORK, "child_comm"), Some(16));
        assert_eq!(parse_field_offset(FORK, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(FORK, "pid"), None);
    }
}
