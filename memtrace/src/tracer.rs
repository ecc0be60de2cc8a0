//! Loading and attaching the kernel programs, and the handles userspace keeps on them.

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use memtrace_common::maps::{self, LOST_COUNTERS, Lost};

use crate::procfs;

/// The kernel programs' object file, built by build.rs.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// A kernel hook: which program runs on which tracepoint, and whether memtrace can do without it.
struct Hook {
    program: &'static str,
    category: &'static str,
    name: &'static str,
    required: bool,
}

const HOOKS: &[Hook] = &[
    Hook {
        program: "madvise_enter",
        category: "syscalls",
        name: "sys_enter_madvise",
        required: true,
    },
    Hook {
        program: "madvise_exit",
        category: "syscalls",
        name: "sys_exit_madvise",
        required: true,
    },
    // process_madvise appeared in Linux 5.10.
    Hook {
        program: "process_madvise_enter",
        category: "syscalls",
        name: "sys_enter_process_madvise",
        required: false,
    },
    Hook {
        program: "process_madvise_exit",
        category: "syscalls",
        name: "sys_exit_process_madvise",
        required: false,
    },
];

pub struct Options {
    /// `None` traces every process; otherwise only these.
    pub pids: Option<Vec<u32>>,
    pub ring_bytes: u32,
}

/// Attached programs and the maps userspace reads. Dropping it detaches everything.
pub struct Tracer {
    _ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    targets: HashMap<MapData, u32, u8>,
    /// Warnings about parts that could not be attached.
    pub warnings: Vec<String>,
}

impl Tracer {
    /// Checks privileges and tracefs, loads and attaches the programs, then starts tracing
    /// `options.pids`.
    pub fn attach(options: &Options) -> anyhow::Result<Self> {
        if !procfs::can_trace() {
            bail!(
                "memtrace needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
            );
        }
        let Some(events_dir) = procfs::tracefs_events() else {
            bail!(
                "tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` (as root) and retry"
            );
        };
        raise_memlock_limit();

        let filter = u8::from(options.pids.is_some());
        let self_tgid = std::process::id();
        // Userspace is woken once a quarter of the ring is full; a timer drains the rest.
        let wakeup_bytes = u64::from(options.ring_bytes / 4);
        let mut ebpf = EbpfLoader::new()
            .override_global(maps::FILTER_BY_TGID, &filter, true)
            .override_global(maps::SELF_TGID, &self_tgid, true)
            .override_global(maps::WAKEUP_BYTES, &wakeup_bytes, true)
            .map_max_entries(maps::EVENTS, options.ring_bytes)
            .load(PROGRAMS)
            .map_err(|e| anyhow!("loading the eBPF programs failed: {}", error_chain(&e)))?;

        let mut warnings = Vec::new();
        for hook in HOOKS {
            let path = events_dir.join(hook.category).join(hook.name);
            let result = if path.is_dir() {
                attach_one(&mut ebpf, hook)
            } else {
                Err(anyhow!(
                    "tracepoint {}/{} does not exist on this kernel",
                    hook.category,
                    hook.name
                ))
            };
            match result {
                Ok(()) => {}
                Err(e) if hook.required => return Err(e),
                Err(e) => warnings.push(format!("{e}; that part is not traced")),
            }
        }

        let events = RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)?;
        let lost = PerCpuArray::try_from(take_map(&mut ebpf, maps::LOST)?)?;
        let targets = HashMap::try_from(take_map(&mut ebpf, maps::TARGETS)?)?;
        let mut tracer = Self {
            _ebpf: ebpf,
            events: Some(events),
            lost,
            targets,
            warnings,
        };
        // Only now that everything is attached does the filter let the targets through: no
        // other process can slip in between attaching and choosing whom to trace.
        for &pid in options.pids.iter().flatten() {
            tracer.add_target(pid)?;
        }
        Ok(tracer)
    }

    /// The events ring buffer, handed over once to the event pump.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    pub fn add_target(&mut self, pid: u32) -> anyhow::Result<()> {
        self.targets
            .insert(pid, 1, 0)
            .with_context(|| format!("cannot add pid {pid} to the kernel filter"))
    }

    /// Records dropped in the kernel so far, per reason, per CPU.
    pub fn lost(&self) -> LostCounts {
        let mut counts = LostCounts::default();
        for index in 0..LOST_COUNTERS {
            let per_cpu: Vec<u64> = self
                .lost
                .get(&index, 0)
                .map(|values| values.iter().copied().collect())
                .unwrap_or_default();
            match index {
                i if i == Lost::RingFull as u32 => counts.ring_full = per_cpu,
                i if i == Lost::PendingFull as u32 => counts.pending_full = per_cpu,
                _ => {}
            }
        }
        counts
    }
}

/// Dropped-record counters, one entry per possible CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LostCounts {
    /// Events dropped because the ring buffer was full.
    pub ring_full: Vec<u64>,
    /// Syscalls missed because the entry/exit pairing table was full.
    pub pending_full: Vec<u64>,
}

impl LostCounts {
    pub fn total(&self) -> u64 {
        self.ring_full.iter().chain(&self.pending_full).sum()
    }
}

fn attach_one(ebpf: &mut Ebpf, hook: &Hook) -> anyhow::Result<()> {
    let what = || format!("attaching to tracepoint {}/{}", hook.category, hook.name);
    let program: &mut TracePoint = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| anyhow!("program {} missing from the eBPF object", hook.program))?
        .try_into()?;
    program
        .load()
        .map_err(|e| anyhow!("{}: {}", what(), error_chain(&e)))?;
    program
        .attach(hook.category, hook.name)
        .map_err(|e| anyhow!("{}: {}", what(), error_chain(&e)))?;
    Ok(())
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; raise it rather than fail there.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid struct. Failure only matters on old kernels, where
    // loading then reports the real error.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
