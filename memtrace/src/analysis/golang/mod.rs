//! Go binaries: which Go built them and with which settings, and the verdict on how the
//! runtime gives memory back (`memtrace go`, and the Go part of the default report).

pub mod binary;
pub mod buildinfo;
mod debugfile;
pub mod dwarf;
pub mod godebug;
pub mod heap;
pub mod layout;
mod layouts;
pub mod ldflags;
pub mod locate;
mod pclntab;
pub mod reconcile;
mod release;
mod symtab;
pub mod table;
pub mod verdict;

use std::{cell::OnceCell, fs, io, path::PathBuf};

use binary::Binary;
use buildinfo::BuildInfo;
use godebug::Compiled;
use heap::{Figures, Located, Reason, ReasonCode};
use reconcile::RuntimeView;
use verdict::GoBuild;

use crate::kernel::procfs::SmapsRollup;

/// A Go target's runtime figures at the latest sample, with what names its process on every
/// other view (the start time and the cgroup too, so that Prometheus series join).
pub struct GoProcess<'a> {
    pub pid: u32,
    pub start_time: Option<u64>,
    pub comm: String,
    pub cgroup: Option<String>,
    pub figures: &'a Figures,
}

/// What memtrace reads about a process before tracing it (the executable and the environment
/// cannot be read once it has exited).
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `Some` for a Go binary.
    pub go: Option<GoBuild>,
    /// Why the executable is not a Go binary, when it is not.
    pub not_go_reason: String,
    /// `GODEBUG` from the process's environment, if set.
    pub godebug: Option<String>,
    /// For a Go binary, its build information, to locate the runtime's figures with.
    build: Option<BuildInfo>,
    /// Where the runtime keeps the heap figures, or why that is unknown: located on first use,
    /// after attaching (reading DWARF must not delay tracing), while the process lives (its
    /// figures can only be read then anyway).
    runtime: OnceCell<Result<Located, Reason>>,
    /// The runtime's figures at the latest sample, for the live view and /metrics.
    pub sampled: Option<Figures>,
}

impl Target {
    /// Reads /proc/PID/exe and GODEBUG from /proc/PID/environ. Fails only when the
    /// executable cannot be read (no such process, a kernel thread, no permission).
    pub fn inspect(pid: u32) -> Result<Self, String> {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let binary = Binary::open(&exe).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                format!(
                    "cannot read {}: no such process, or a kernel thread",
                    exe.display()
                )
            }
            _ => format!("cannot read {}: {e}", exe.display()),
        })?;
        let (go, not_go_reason, build) = match buildinfo::read(&binary) {
            Ok(info) => (
                Some(GoBuild {
                    default_godebug: info.default_godebug().map(str::to_owned),
                    compiled: Compiled::of(&info),
                    version: info.go_version.clone(),
                }),
                String::new(),
                Some(info),
            ),
            Err(e) => (None, e.to_string(), None),
        };
        Ok(Self {
            go,
            not_go_reason,
            godebug: godebug(pid),
            build,
            runtime: OnceCell::new(),
            sampled: None,
        })
    }

    /// Where the runtime keeps the heap figures (located on the first call); `None` when not
    /// a Go binary.
    fn runtime(&self, pid: u32) -> Option<&Result<Located, Reason>> {
        let build = self.build.as_ref()?;
        Some(self.runtime.get_or_init(|| {
            let exe = PathBuf::from(format!("/proc/{pid}/exe"));
            match Binary::open(&exe) {
                Ok(binary) => locate::locate(pid, &binary, build),
                Err(e) => Err(Reason::new(
                    ReasonCode::Exited,
                    format!("cannot read {}: {e}", exe.display()),
                )),
            }
        }))
    }

    /// Reads the runtime's figures once (no retries: the loop must not wait), keeping them
    /// for the live view and /metrics; a failed read leaves none rather than stale ones.
    pub fn sample_runtime(&mut self, pid: u32) {
        if let Some(Ok(located)) = self.runtime(pid) {
            self.sampled = heap::read_once(pid, located).ok();
        }
    }

    /// The runtime's figures read now, next to `smaps` (read at the same moment) and the
    /// MADV_FREE bytes seen; `None` when not a Go binary.
    pub fn runtime_view(
        &self,
        pid: u32,
        smaps: Option<SmapsRollup>,
        madv_free_seen: u64,
    ) -> Option<RuntimeView> {
        let view = match self.runtime(pid)? {
            Ok(located) => reconcile::view(
                Some(located.located_by.clone()),
                located.note.clone(),
                heap::read(pid, located),
                smaps,
                madv_free_seen,
            ),
            Err(reason) => reconcile::view(None, None, Err(reason.clone()), smaps, 0),
        };
        Some(view)
    }
}

/// `GODEBUG` in /proc/PID/environ: the environment the process was started with, which is
/// what the Go runtime reads its settings from at start. Only this variable is extracted; the
/// rest of the environment is neither kept nor shown. Like the Go runtime's `gogetenv`, the
/// first entry wins.
fn godebug(pid: u32) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ_var(&environ, "GODEBUG")
}

fn environ_var(environ: &[u8], name: &str) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_godebug_is_taken_from_the_environment() {
        let environ = b"HOME=/root\0GODEBUGX=1\0GODEBUG=madvdontneed=0,gctrace=1\0GODEBUG=x=1\0SECRET=hunter2\0";
        assert_eq!(
            environ_var(environ, "GODEBUG").as_deref(),
            Some("madvdontneed=0,gctrace=1")
        );
        assert_eq!(environ_var(b"GODEBUG=\0", "GODEBUG").as_deref(), Some(""));
        assert_eq!(environ_var(b"HOME=/\0", "GODEBUG"), None);
        assert_eq!(environ_var(b"", "GODEBUG"), None);
    }

    #[test]
    fn inspects_itself_and_fails_clearly() {
        let me = Target::inspect(std::process::id()).unwrap();
        assert!(me.go.is_none());
        assert_eq!(me.not_go_reason, "no Go build information found");
        let missing = Target::inspect(u32::MAX).unwrap_err();
        assert!(missing.contains("no such process"), "{missing}");
        assert!(verdict::kernel_version(&kernel_release()).is_some());
    }
}
