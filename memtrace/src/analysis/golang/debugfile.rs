//! Separate debug files, found as gdb finds them: by build id under
//! `/usr/lib/debug/.build-id/xx/yyyy.debug` (what Debian's `-dbgsym` packages install), then by
//! the `.gnu_debuglink` name (checked by its CRC-32) next to the executable, in its `.debug/`
//! directory, and under `/usr/lib/debug/` plus the executable's directory. Both are looked for
//! in the process's own filesystem (/proc/PID/root, a container's) and then in the host's.

use std::path::{Path, PathBuf};

use super::binary::Binary;

const DEBUG_DIR: &str = "usr/lib/debug";

/// The first debug file that belongs to `binary` (process `pid`'s executable), with its path.
pub fn find(pid: u32, binary: &Binary) -> Option<(Binary, PathBuf)> {
    let roots = [
        PathBuf::from(format!("/proc/{pid}/root")),
        PathBuf::from("/"),
    ];
    if let Some(id) = binary.build_id() {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let (dir, file) = hex.split_at(2);
        for root in &roots {
            let path = root
                .join(DEBUG_DIR)
                .join(".build-id")
                .join(dir)
                .join(format!("{file}.debug"));
            if let Some(found) = open_matching(&path, |debug| debug.build_id() == Some(id.clone()))
            {
                return Some(found);
            }
        }
    }
    let (name, crc) = binary.debuglink()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let exe_dir = exe.parent()?.strip_prefix("/").ok()?.to_owned();
    for root in &roots {
        let candidates = [
            root.join(&exe_dir).join(&name),
            root.join(&exe_dir).join(".debug").join(&name),
            root.join(DEBUG_DIR).join(&exe_dir).join(&name),
        ];
        for path in candidates {
            if let Some(found) = open_matching(&path, |debug| debug.crc32().ok() == Some(crc)) {
                return Some(found);
            }
        }
    }
    None
}

fn open_matching(path: &Path, matches: impl Fn(&Binary) -> bool) -> Option<(Binary, PathBuf)> {
    let debug = Binary::open(path).ok()?;
    (debug.elf64 && matches(&debug)).then(|| (debug, path.to_owned()))
}
