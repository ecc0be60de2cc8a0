//! Tracepoint record layouts from tracefs (`events/<group>/<name>/format`): where each field
//! sits on the running kernel.

use std::{
    fs,
    path::{Path, PathBuf},
};

use memtrace_common::hooks::Tracepoint;

/// The directory holding tracepoint definitions, where tracefs is mounted.
pub fn events_dir() -> Option<PathBuf> {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|dir| dir.is_dir())
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

    #[test]
    fn finds_offsets() {
        assert_eq!(parse_field_offset(FORK, "child_pid"), Some(32));
        assert_eq!(parse_field_offset(FORK, "parent_pid"), Some(12));
        assert_eq!(parse_field_offset(FORK, "child_comm"), Some(16));
        assert_eq!(parse_field_offset(FORK, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(FORK, "pid"), None);
    }
}
