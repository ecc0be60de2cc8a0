//! What the session shows: the targets it describes, snapshots, verdicts, the Go runtime's
//! figures, and the metrics page it publishes.

use bytes::Bytes;

use super::Session;
use crate::{
    analysis::{
        golang::{
            self, GoProcess,
            verdict::{self, Facts, Verdict},
        },
        snapshot::{Detail, Snapshot, Window},
    },
    kernel::{clock::monotonic_ns, procfs::SmapsRollup},
    output::{
        json::{Start, SyscallHooks},
        prometheus,
    },
};

impl Session {
    /// "pid 7 (app), pid 9 (db)", or "every process".
    pub(super) fn describe_targets(&self) -> String {
        if self.system_wide {
            return "every process".to_owned();
        }
        self.sampled
            .iter()
            .map(|&pid| {
                let comm = self
                    .model
                    .attribution
                    .process_by_pid(pid)
                    .map_or("?", |p| p.comm.as_str());
                format!("pid {pid} ({comm})")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The Go runtime's figures of the named Go targets at the latest sample, with their names.
    pub fn go_runtime(&self) -> Vec<GoProcess<'_>> {
        self.targets
            .iter()
            .filter_map(|(&pid, target)| {
                let process = self.model.attribution.process_by_pid(pid)?;
                Some(GoProcess {
                    pid,
                    start_time: process.start_time,
                    comm: process.comm.clone(),
                    cgroup: process
                        .cgroup
                        .as_ref()
                        .and_then(|c| c.path())
                        .map(str::to_owned),
                    figures: target.sampled.as_ref()?,
                })
            })
            .collect()
    }

    /// A fresh metrics page for `--prometheus`.
    pub(super) fn publish_metrics(&self) {
        if let Some(metrics) = &self.metrics {
            let detail = Detail::Metrics {
                processes: self.metrics_processes,
            };
            let page = prometheus::render(&self.snapshot_with(Vec::new(), detail));
            let go = prometheus::go_runtime(&self.go_runtime());
            metrics.send_replace(Bytes::from([&page[..], go.as_bytes()].concat()));
        }
    }

    /// The JSON start line, written at once (before the first event line).
    pub fn json_start(&mut self, pids: &[u32]) {
        let line = Start::line(pids, self.syscall_hooks()).to_json();
        self.out.line(&line);
        self.out.flush();
    }

    /// How the memory syscalls are hooked in this run.
    pub fn syscall_hooks(&self) -> SyscallHooks {
        match self.tracer.syscall_hooks() {
            (0, 0) => SyscallHooks::None,
            (_, 0) => SyscallHooks::Trampolines,
            (0, _) => SyscallHooks::Tracepoints,
            _ => SyscallHooks::Mixed,
        }
    }

    /// Names of this kernel's GFP flags.
    pub fn gfp(&self) -> &crate::kernel::gfp::GfpNames {
        &self.tracer.gfp
    }

    /// Nanoseconds since tracing began.
    pub fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The model as reports show it now.
    pub fn snapshot(&self, go_verdicts: Vec<Verdict>) -> Snapshot {
        self.snapshot_with(go_verdicts, Detail::Report)
    }

    /// The model as a frame of the live view shows it now (no prose): the top `rows`
    /// processes, or every one.
    pub fn frame_snapshot(&self, rows: Option<usize>) -> Snapshot {
        self.snapshot_with(Vec::new(), Detail::Frame { rows })
    }

    pub(super) fn snapshot_with(&self, go_verdicts: Vec<Verdict>, detail: Detail) -> Snapshot {
        Snapshot::new(
            &self.model,
            &self.selection,
            Window {
                elapsed_ns: self.elapsed_ns(),
                now_ns: monotonic_ns(),
                system_wide: self.system_wide,
                go_verdicts,
                detail,
            },
        )
    }

    /// Release-mode verdicts for the named targets; with `only_go`, for Go binaries only.
    pub fn verdicts(&self, only_go: bool) -> Vec<Verdict> {
        let kernel = golang::kernel_release();
        let watched_ns = self.elapsed_ns();
        self.targets
            .iter()
            .filter(|(_, target)| !only_go || target.go.is_some())
            .map(|(&pid, target)| {
                let process = self.model.attribution.process_by_pid(pid);
                // Read now, not the last periodic sample: that may predate the release.
                // None once the process has exited.
                let smaps = SmapsRollup::read(pid);
                let madv_free = process.and_then(|p| p.madvise.get(&memtrace_common::advice::FREE));
                let runtime = target.runtime_view(pid, smaps, madv_free.map_or(0, |a| a.bytes));
                verdict::judge(&Facts {
                    pid,
                    comm: process.map(|p| p.comm.clone()).unwrap_or_default(),
                    go: target.go.clone(),
                    not_go_reason: target.not_go_reason.clone(),
                    godebug: target.godebug.clone(),
                    kernel: kernel.clone(),
                    madvise: process.map(|p| p.madvise.clone()).unwrap_or_default(),
                    smaps,
                    watched_ns,
                    runtime,
                })
            })
            .collect()
    }

    /// Bytes the named targets have released so far.
    pub fn targets_released(&self) -> u64 {
        self.sampled
            .iter()
            .filter_map(|&pid| self.model.attribution.process_by_pid(pid))
            .map(|p| p.released_bytes())
            .sum()
    }
}
