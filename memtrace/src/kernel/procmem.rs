//! Another process's memory, read without stopping it: `process_vm_readv` gathers many small
//! ranges in one call, and /proc/PID/auxv says where the kernel loaded the executable.
//!
//! Both need ptrace access to the process (`PTRACE_MODE_ATTACH` for the read, `_READ` for
//! auxv), which root has unless a policy forbids it: Yama's `kernel.yama.ptrace_scope = 3`, or
//! an LSM such as SELinux's `deny_ptrace`. That refusal is its own error, so it can be named.

use std::{fs, io};

/// `AT_ENTRY` in the auxiliary vector: the program's entry point as loaded.
const AT_ENTRY: u64 = 9;
/// `process_vm_readv` takes at most `IOV_MAX` ranges per call.
pub const MAX_RANGES: usize = 1024;

/// Why another process's memory could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("the process has exited")]
    Gone,
    /// EPERM: no ptrace access although memtrace runs as root.
    #[error("ptrace access to the process is denied{}", policy_hint())]
    Denied,
    /// Fewer bytes than asked: a range is not mapped in the process.
    #[error("address {addr:#x} is not mapped in the process")]
    Unmapped { addr: u64 },
    #[error("cannot read the process's memory: {0}")]
    Other(String),
}

/// One range of the other process: its address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub addr: u64,
    pub len: usize,
}

/// Reads `ranges` of process `pid` into `out`, one after another, in one `process_vm_readv`
/// call (the kernel copies them back to back; there is no atomicity across ranges, only
/// little time between them). `out` must be as long as the ranges together.
pub fn read_ranges(pid: u32, ranges: &[Range], out: &mut [u8]) -> Result<(), ReadError> {
    let total: usize = ranges.iter().map(|r| r.len).sum();
    if total != out.len() || ranges.len() > MAX_RANGES {
        return Err(ReadError::Other(format!(
            "internal error: {} ranges of {total} bytes into {} bytes",
            ranges.len(),
            out.len()
        )));
    }
    let remote: Vec<libc::iovec> = ranges
        .iter()
        .map(|range| libc::iovec {
            // The other process's address, never dereferenced here.
            iov_base: range.addr as usize as *mut libc::c_void,
            iov_len: range.len,
        })
        .collect();
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    let pid = libc::pid_t::try_from(pid).map_err(|_| ReadError::Gone)?;
    // SAFETY: `local` covers exactly `out`, which we own mutably; the remote iovecs are
    // addresses in the other process, which the kernel checks.
    let read =
        unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), remote.len() as _, 0) };
    if read < 0 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ESRCH) => ReadError::Gone,
            Some(libc::EPERM | libc::EACCES) => ReadError::Denied,
            Some(libc::EFAULT) => ReadError::Unmapped {
                addr: ranges.first().map_or(0, |r| r.addr),
            },
            _ => ReadError::Other(error.to_string()),
        });
    }
    // A partial read stops at the first range that is not (wholly) mapped.
    let read = usize::try_from(read).unwrap_or(0);
    if read < total {
        let mut at = 0;
        let first_short = ranges.iter().find(|range| {
            at += range.len;
            at > read
        });
        return Err(ReadError::Unmapped {
            addr: first_short.map_or(0, |r| r.addr),
        });
    }
    Ok(())
}

/// Where the kernel put the program's entry point (`AT_ENTRY` of /proc/PID/auxv). With the
/// executable's own `e_entry` it gives the load bias: 0 for a fixed-address executable, the
/// ASLR offset for a position-independent one.
pub fn entry_point(pid: u32) -> Result<u64, ReadError> {
    let auxv = fs::read(format!("/proc/{pid}/auxv")).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ReadError::Gone,
        io::ErrorKind::PermissionDenied => ReadError::Denied,
        _ => ReadError::Other(format!("cannot read /proc/{pid}/auxv: {e}")),
    })?;
    auxv_value(&auxv, AT_ENTRY)
        .ok_or_else(|| ReadError::Other(format!("/proc/{pid}/auxv has no AT_ENTRY")))
}

/// The value of `key` in an auxiliary vector of native 64-bit (type, value) pairs.
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let word = |at: usize| {
            let bytes: [u8; 8] = pair.get(at..at + 8)?.try_into().ok()?;
            Some(u64::from_ne_bytes(bytes))
        };
        (word(0)? == key).then(|| word(8)).flatten()
    })
}

/// What may have denied access, from the one policy /proc shows.
fn policy_hint() -> String {
    match fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(scope) if scope.trim() == "3" => {
            " (kernel.yama.ptrace_scope = 3 forbids it, even for root)".to_owned()
        }
        _ => " (a security policy such as SELinux deny_ptrace, or a missing CAP_SYS_PTRACE)"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_in_ranges() {
        let words: [u64; 4] = [1, 0x1122_3344_5566_7788, 3, u64::MAX];
        let base = words.as_ptr() as u64;
        let ranges = [
            Range {
                addr: base + 8,
                len: 8,
            },
            Range {
                addr: base + 24,
                len: 4,
            },
        ];
        let mut out = [0u8; 12];
        read_ranges(std::process::id(), &ranges, &mut out).unwrap();
        assert_eq!(out[..8], 0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(out[8..], [0xff; 4]);
    }

    #[test]
    fn unmapped_and_gone_are_named() {
        let mut out = [0u8; 8];
        let unmapped = [Range { addr: 8, len: 8 }];
        assert_eq!(
            read_ranges(std::process::id(), &unmapped, &mut out),
            Err(ReadError::Unmapped { addr: 8 })
        );
        assert_eq!(
            read_ranges(u32::MAX >> 1, &unmapped, &mut out),
            Err(ReadError::Gone)
        );
        let word = 7u64;
        let partial = [
            Range {
                addr: &raw const word as u64,
                len: 8,
            },
            Range { addr: 16, len: 8 },
        ];
        let mut out = [0u8; 16];
        assert_eq!(
            read_ranges(std::process::id(), &partial, &mut out),
            Err(ReadError::Unmapped { addr: 16 })
        );
        assert!(read_ranges(std::process::id(), &partial, &mut [0u8; 3]).is_err());
    }

    #[test]
    fn entry_point_of_itself() {
        // Our own entry point as loaded, against the ELF header's, shifted by the same bias
        // as any code address of ours.
        let entry = entry_point(std::process::id()).unwrap();
        assert_ne!(entry, 0);
        assert_eq!(entry_point(u32::MAX >> 1), Err(ReadError::Gone));
        let auxv = [[3u64, 0x40], [AT_ENTRY, 0x1234], [0, 0]]
            .concat()
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect::<Vec<u8>>();
        assert_eq!(auxv_value(&auxv, AT_ENTRY), Some(0x1234));
        assert_eq!(auxv_value(&auxv[..20], AT_ENTRY), None);
    }
}
