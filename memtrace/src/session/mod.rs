//! The event session: one loop for every mode. It attaches the hooks the mode needs, drains
//! the ring buffer into the model in bounded batches, samples kernel counters and /proc on one
//! tick, stops on one set of reasons, and hands the mode its snapshot to print. Modes
//! ([`trace`], [`reclaim`], [`go`]) differ in which hooks they attach and what they print.
//!
//! Here: the session, the loop and its stop; in the modules beside it, what the loop does in
//! its turns — [`ring`] drains records, [`maps`] reads the kernel's maps, [`looks`] asks the
//! /proc worker ([`sampler`]) and applies its answers, [`stacks`] places and names stacks,
//! [`views`] builds what modes print and the metrics page.

pub mod go;
mod looks;
mod maps;
pub mod reclaim;
mod ring;
mod sampler;
pub mod signals;
mod stacks;
pub mod trace;
mod views;

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use memtrace_common::{
    hooks::{Program, Run},
    stacks::StackRef,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
    time::MissedTickBehavior,
};

use crate::{
    analysis::{golang::Target, selection::Selection},
    kernel::{
        Options, Tracer,
        cgroup::Cgroups,
        check_privileges,
        clock::monotonic_ns,
        log::KernelLog,
        namer::Namer,
        pidns,
        procfs::{self, PidKind},
        symbols::Symbols,
        system,
    },
    model::{
        Model,
        attribution::{AtAttach, Bound},
        container::Whereabouts,
        event::{Event, OomKill},
    },
    output::{exporter::Exporter, lost, stdout::Stdout},
    stop::StopReason,
};
use sampler::{FirstSight, Sampler};
use signals::Signals;

/// How often the ring buffer is drained when the kernel has not woken us (it wakes us only once
/// a batch has accumulated, to keep the traced workload fast).
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);
/// Records decoded per drain before the loop serves its timers and signals again.
pub const MAX_DRAIN: usize = 16_384;
/// The fewest bytes a record takes in the ring: the kernel's 8-byte header, and at least a
/// kind and a pid, rounded up to the ring's 8-byte alignment.
const MIN_RECORD_BYTES: usize = 16;
/// Processes kept when tracing every process: past this, exited ones are folded into their
/// cgroup's totals and let go, so a DaemonSet running for weeks keeps bounded memory (and the
/// kernel's fault table has room). `--max-processes` changes it.
pub const MAX_PROCESSES: usize = 4096;
/// How long the end of a run waits for stacks still being named (`--stacks`).
const NAMING_PATIENCE: Duration = Duration::from_secs(30);
/// How often kernel counters (faults, RSS, stalls) and /proc are sampled, at most.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// When tracing every process, how often it looks at each one's /proc entries (alive? fault
/// counters) at most, unless the live view's frames come more often.
const SYSTEM_LOOK_INTERVAL: Duration = Duration::from_secs(5);
/// At the end, how long memtrace waits for the worker's last answers (a last look at /proc,
/// the names of processes just met) before it reports without them.
const LAST_ANSWERS: Duration = Duration::from_secs(5);

/// What a mode does with the session: what it attaches, prints and waits for.
pub trait Mode {
    /// Which hooks to attach.
    fn run(&self) -> Run;
    /// The "memtrace: attached; …" line, given what is traced ("pid 7 (app)").
    fn attached(&self, what: &str) -> String;
    /// How often [`Mode::interval`] is called, if at all (the live view, interval lines).
    fn every(&self) -> Option<Duration> {
        None
    }
    /// Whether the mode prints JSON Lines: the session then writes the start line (what is
    /// traced, and how) before the first event.
    fn json(&self) -> bool {
        false
    }
    /// One event, after the model took it into account.
    fn event(&mut self, _session: &mut Session, _event: &Event) {}
    /// Every [`Mode::every`].
    fn interval(&mut self, _session: &mut Session) {}
    /// Whether to stop now, for a reason of the mode's own.
    fn stop(&mut self, _session: &Session) -> Option<StopReason> {
        None
    }
    /// The final output.
    fn finish(&mut self, session: &mut Session, reason: StopReason) -> anyhow::Result<()>;
}

/// What to trace and when to stop, whatever the mode.
pub struct Config {
    /// `--pid`; empty traces every process.
    pub pids: Vec<u32>,
    pub ring_kib: u32,
    pub fault_events: bool,
    /// Programs that return at once (`--bench-empty-programs`).
    pub empty_programs: bool,
    /// Syscall programs on BPF trampolines where the kernel allows.
    pub trampolines: bool,
    /// Entry programs park syscall arguments even where the exit could read them
    /// (`--bench-entry-programs`).
    pub entry_programs: bool,
    pub follow: bool,
    pub duration: Option<Duration>,
    pub prometheus: Option<SocketAddr>,
    pub verbose: bool,
    pub selection: Selection,
    /// Whether a target that is not a readable executable is an error (`memtrace go`).
    pub need_targets: bool,
    /// Count caller stacks (`--stacks`).
    pub stacks: bool,
    /// Processes kept system-wide before exited ones are folded and let go.
    pub max_processes: usize,
    /// How many processes the outputs list at most (the report's `--top`, the metrics'
    /// per-process series): exited ones ranking there are never let go.
    pub keep_top: usize,
    /// Per-process series on the metrics page: the top this many by `--sort` (0: none).
    pub metrics_processes: usize,
}

impl Config {
    /// Every process, no extras: the base the subcommands fill in.
    pub fn quiet() -> Self {
        Self {
            pids: Vec::new(),
            ring_kib: 4096,
            fault_events: false,
            empty_programs: false,
            trampolines: true,
            entry_programs: false,
            follow: false,
            duration: None,
            prometheus: None,
            verbose: false,
            selection: Selection::default(),
            need_targets: false,
            stacks: false,
            max_processes: MAX_PROCESSES,
            keep_top: 10,
            metrics_processes: 0,
        }
    }
}

/// Runs one session of `mode` to its end.
pub async fn run(config: Config, mut mode: impl Mode) -> anyhow::Result<()> {
    let signals = Signals::listen()?;
    check_privileges()?;
    check_targets(&config.pids)?;
    // Open pidfds first: they pin the identity of each target, so a pid reused after an early
    // exit cannot be mistaken for it, and they become readable when the process exits.
    let exits = config
        .pids
        .iter()
        .map(|&pid| open_pidfd(pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Bound before loading eBPF: a port in use fails cleanly with nothing attached.
    let exporter = match config.prometheus {
        Some(addr) => Some(Exporter::bind(addr).await?),
        None => None,
    };
    let targets = inspect_targets(&config)?;
    let run = Run {
        fault_events: config.fault_events,
        ..mode.run()
    };
    let mut session = Session::attach(&config, run, targets)?;
    session.metrics = exporter.map(Exporter::start);
    eprintln!("memtrace: {}", mode.attached(&session.describe_targets()));
    if mode.json() {
        session.json_start(&config.pids);
    }
    let reason = session
        .run_until_stopped(&mut mode, signals, config.duration, &exits)
        .await?;
    // A signal that stopped the run makes the next one fatal; one that arrives while a run
    // that ended by itself reports is the first, and is held off like any other.
    if reason == StopReason::Interrupted {
        signals::second_one_kills();
    }
    session.end_window(&mut mode);
    session.last_answers(&mut mode).await;
    session.finish(&mut mode, reason)
}

/// Refuses targets memtrace cannot trace: itself, kernel threads (no user memory), a thread id
/// given for its process, and a zombie (exited, its memory gone).
fn check_targets(pids: &[u32]) -> anyhow::Result<()> {
    for &pid in pids {
        if pid == std::process::id() {
            bail!("pid {pid} is memtrace itself, which it never traces");
        }
        let comm = |pid| procfs::comm(pid).unwrap_or_default();
        if procfs::is_kernel_thread(pid) {
            bail!(
                "pid {pid} ({}) is a kernel thread: it has no user memory to trace",
                comm(pid)
            );
        }
        match procfs::pid_kind(pid) {
            Some(PidKind::Thread { tgid }) => bail!(
                "pid {pid} is a thread of process {tgid} ({}): trace --pid {tgid}, which covers all its threads",
                comm(tgid)
            ),
            Some(PidKind::Zombie) => bail!(
                "pid {pid} ({}) has exited (a zombie its parent has not reaped): it has no memory left to trace",
                comm(pid)
            ),
            Some(PidKind::Process) | None => {}
        }
    }
    Ok(())
}

/// The executable and environment of each target, read now: they are gone once a process
/// exits. An unreadable executable means no verdict, or an error where one is needed.
fn inspect_targets(config: &Config) -> anyhow::Result<BTreeMap<u32, Target>> {
    let mut targets = BTreeMap::new();
    for &pid in &config.pids {
        match Target::inspect(pid) {
            Ok(target) => {
                targets.insert(pid, target);
            }
            Err(e) if config.need_targets => bail!("{e}"),
            Err(_) => {}
        }
    }
    Ok(targets)
}

/// The traced window: the tracer, the model it feeds, and where output goes.
pub struct Session {
    tracer: Tracer,
    events: AsyncFd<RingBuf<MapData>>,
    /// The kernel programs' log (`--verbose`).
    kernel_log: Option<AsyncFd<KernelLog>>,
    pub model: Model,
    pub selection: Selection,
    /// Stops the trace when it goes away; the report then goes to stderr.
    pub out: Stdout,
    page_size: u64,
    started: Instant,
    pub system_wide: bool,
    follow: bool,
    /// Whether the memory hooks are attached (faults, RSS): what sampling reads.
    memory: bool,
    /// Processes whose smaps_rollup is sampled: the named targets and, with --follow, children.
    sampled: Vec<u32>,
    /// Pids the kernel added to its filter (`--follow`) since the last sample.
    followed: Vec<u32>,
    /// Followed pids the worker is looking at.
    adopting: usize,
    /// The most records the ring can hold: its size over the smallest record (an 8-byte
    /// header, and at least a kind and a pid, 8-byte aligned).
    ring_records: usize,
    /// The programs are detached: what the ring holds is all there will be.
    window_over: bool,
    /// Publishes each sample's metrics page to the `--prometheus` server.
    metrics: Option<watch::Sender<Bytes>>,
    /// What was read about each named target at start (Go build info, GODEBUG).
    targets: BTreeMap<u32, Target>,
    /// Places stacks in their processes' files as they are announced (`--stacks`).
    symbols: Option<Symbols>,
    /// Names them, on a thread of its own.
    namer: Option<Namer>,
    /// Stacks placed and sent to be named, not named yet.
    naming: std::collections::HashSet<StackRef>,
    /// Reads /proc and cgroupfs off the loop.
    sampler: Sampler,
    /// A periodic look at /proc is under way.
    sampling: bool,
    /// When the last one was asked.
    last_look: Option<Instant>,
    /// A frame of the mode (`Mode::interval`) waits for the look under way.
    frame_due: bool,
    /// OOM kills whose victim the worker is reading, shown to the mode once it answers.
    pending_ooms: Vec<OomKill>,
    /// Every named target has exited (their pidfds said so).
    targets_gone: bool,
    /// How many exited processes are kept (system-wide).
    bound: Bound,
    /// Per-process series on the metrics page.
    metrics_processes: usize,
}

impl Session {
    fn attach(config: &Config, run: Run, targets: BTreeMap<u32, Target>) -> anyhow::Result<Self> {
        let system_wide = config.pids.is_empty();
        // Read before the programs count anything, so a process's minor and major faults are
        // counted over the kernel's user-mode fault window or a moment more, never less.
        let mut cgroups = Cgroups::new();
        let at_attach = (!run.reclaim).then(|| processes_now(&config.pids, &mut cgroups));
        let mut tracer = Tracer::attach(&Options {
            run,
            pids: (!system_wide).then(|| config.pids.clone()),
            ring_bytes: config.ring_kib * 1024,
            fault_events: config.fault_events,
            empty_programs: config.empty_programs,
            trampolines: config.trampolines,
            entry_programs: config.entry_programs,
            verbose: config.verbose,
            stacks: config.stacks,
        })?;
        for warning in &tracer.warnings {
            eprintln!("memtrace: warning: {warning}");
        }
        if config.verbose
            && let Some(why) = &tracer.trampolines_refused
        {
            eprintln!("memtrace: memory syscalls traced on tracepoints, not trampolines: {why}");
        }
        if config.verbose && tracer.counts_syscalls() {
            eprintln!(
                "memtrace: memory syscalls counted in the kernel; arguments read at exit from {}",
                tracer.args_at.name()
            );
        }
        let events = tracer
            .take_events()
            .context("events ring buffer already taken")?;
        let kernel_log = match config.verbose {
            true => Some(watch_fd(tracer.kernel_log()?).context("cannot watch the kernel log")?),
            false => None,
        };
        let mut selection = config.selection.clone();
        selection.counts_user_faults = tracer.attached(Program::PageFaultUser);
        let mut model = Model::default();
        model.reclaim.kswapd.window_start_ns = monotonic_ns();
        if let Some(at_attach) = at_attach {
            model.attribution.set_at_attach(at_attach);
        }
        model.stacks.enabled = config.stacks;
        model.stacks.clock_hz = system::clock_hz().unwrap_or(0);
        // The named targets as memtrace first sees them, read before the "attached" line: one
        // may exit right after it, before a look from the worker.
        let first_sights: Vec<(u32, FirstSight)> = config
            .pids
            .iter()
            .map(|&pid| (pid, sampler::read_first_sight(pid, &mut cgroups)))
            .collect();
        let mut session = Self {
            events: watch_fd(events).context("cannot watch the events ring buffer")?,
            kernel_log,
            tracer,
            model,
            selection,
            out: Stdout::new(),
            page_size: system::page_size(),
            started: Instant::now(),
            system_wide,
            follow: config.follow,
            memory: !run.reclaim,
            sampled: config.pids.clone(),
            followed: Vec::new(),
            adopting: 0,
            ring_records: config.ring_kib as usize * 1024 / MIN_RECORD_BYTES,
            window_over: false,
            metrics: None,
            targets,
            symbols: config.stacks.then(Symbols::default),
            namer: config.stacks.then(Namer::start).flatten(),
            naming: std::collections::HashSet::new(),
            sampler: Sampler::start(cgroups).context("cannot start the /proc reader")?,
            sampling: false,
            last_look: None,
            frame_due: false,
            pending_ooms: Vec::new(),
            targets_gone: config.pids.is_empty(),
            bound: Bound {
                max_processes: config.max_processes,
                keep_top: config.keep_top.max(config.metrics_processes),
                sort: config.selection.sort,
            },
            metrics_processes: config.metrics_processes,
        };
        for (pid, first) in first_sights {
            session.learn_first_sight(pid, first);
        }
        Ok(session)
    }

    async fn run_until_stopped(
        &mut self,
        mode: &mut impl Mode,
        signals: Signals,
        duration: Option<Duration>,
        exits: &[AsyncFd<OwnedFd>],
    ) -> anyhow::Result<StopReason> {
        let Signals {
            mut interrupt,
            mut terminate,
            mut hangup,
        } = signals;
        let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let targets_exited = async {
            for exit in exits {
                // A pidfd turns readable when its process exits.
                let _ = exit.readable().await;
            }
        };
        tokio::pin!(targets_exited);
        let mut drain_timer = tokio::time::interval(DRAIN_INTERVAL);
        let mut backlog = false;
        let every = mode.every();
        // An interval shorter than a second samples as often as it prints. Each interval
        // samples for itself and restarts this timer, so the timer never reads /proc again
        // right after it.
        let mut sample_timer =
            tokio::time::interval(every.map_or(SAMPLE_INTERVAL, |e| e.min(SAMPLE_INTERVAL)));
        let period = every.unwrap_or(Duration::MAX / 4);
        let mut interval_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // Ticks missed while memtrace was stopped (SIGSTOP) or busy are not made up in a burst:
        // catch-up frames would all carry the same instant, with rates that never happened.
        for timer in [&mut drain_timer, &mut sample_timer, &mut interval_timer] {
            timer.set_missed_tick_behavior(MissedTickBehavior::Skip);
        }

        loop {
            // Biased: what stops the run is looked at first, then the timers, then the ring, so
            // neither a flood of records nor a slow sample keeps a signal waiting.
            let reason = tokio::select! {
                biased;
                _ = interrupt.recv() => Some(StopReason::Interrupted),
                _ = terminate.recv() => Some(StopReason::Interrupted),
                _ = hangup.recv() => Some(StopReason::Interrupted),
                () = &mut deadline, if duration.is_some() => Some(StopReason::Duration),
                () = &mut targets_exited, if !self.targets_gone => {
                    self.targets_gone = true;
                    (!self.follow || self.live_targets() == 0).then_some(StopReason::TargetExited)
                }
                _ = interval_timer.tick(), if every.is_some() => {
                    // The frame is drawn once the look at /proc this starts has answered: a
                    // frame drawn before it would show the counters of a period ago (faults at
                    // 0/s under load).
                    self.frame_due = true;
                    self.sample(mode);
                    sample_timer.reset();
                    None
                }
                _ = sample_timer.tick() => {
                    self.sample(mode);
                    None
                }
                answer = self.sampler.next() => self.answered(mode, answer),
                _ = drain_timer.tick() => {
                    self.out.check_reader();
                    None
                }
                () = kernel_log_ready(&mut self.kernel_log) => None,
                guard = self.events.readable_mut() => {
                    let mut guard = guard.context("waiting on the events ring buffer")?;
                    guard.clear_ready();
                    None
                }
                // The last drain stopped at its limit: more is waiting. Come back after one turn
                // of the runtime, which polls its driver: a branch that is always ready would
                // keep signals, timers and pidfds from ever being seen.
                () = tokio::task::yield_now(), if backlog => None,
            };
            backlog = self.drain(mode) == MAX_DRAIN;
            if self.out.closed() {
                return Ok(StopReason::OutputClosed);
            }
            let signalled = || signals::requested().then_some(StopReason::Interrupted);
            if let Some(reason) = reason.or_else(signalled).or_else(|| mode.stop(self)) {
                return Ok(reason);
            }
        }
    }

    /// Whatever arrived after the stop condition still counts; then the mode reports.
    fn finish(mut self, mode: &mut impl Mode, reason: StopReason) -> anyhow::Result<()> {
        // Records logged just before the stop may not have woken the loop yet.
        if let Some(log) = self.kernel_log.as_mut() {
            log.get_mut().flush();
        }
        // The names still being read: the report shows them.
        let names = self
            .namer
            .as_mut()
            .map(|namer| namer.rest(NAMING_PATIENCE))
            .unwrap_or_default();
        self.learn_names(names);
        let reason = if self.out.closed() {
            StopReason::OutputClosed
        } else {
            reason
        };
        let lost = &self.model.lost;
        if lost.total() > 0 {
            eprintln!(
                "memtrace: warning: {} records were lost in the kernel: what was counted from them is an undercount{}",
                lost::lost_summary(lost),
                lost::remedies(lost)
            );
        }
        if self.model.undecodable > 0 {
            eprintln!(
                "memtrace: warning: {} records could not be decoded",
                self.model.undecodable
            );
        }
        mode.finish(&mut self, reason)?;
        match self.out.error() {
            Some(e) => bail!("the report went to stderr: writing to stdout failed ({e})"),
            None => Ok(()),
        }
    }
}

/// The threads' fault counters and the cgroup of `pids`, or of every process when none is
/// named: a process that exits before memtrace looks again is counted in that cgroup.
fn processes_now(pids: &[u32], cgroups: &mut Cgroups) -> AtAttach {
    let every_process = pids.is_empty();
    let pids = if every_process {
        procfs::all_pids()
    } else {
        pids.to_vec()
    };
    let threads: BTreeMap<u32, _> = pids
        .into_iter()
        .map(|pid| (pid, procfs::thread_faults(pid)))
        .filter(|(_, threads)| !threads.is_empty())
        .collect();
    let whereabouts = threads
        .keys()
        .map(|&pid| {
            let cgroup = cgroups.of_process(pid);
            (
                pid,
                Whereabouts::new(cgroup, pidns::pid_in_own_namespace(pid)),
            )
        })
        .collect();
    AtAttach {
        threads,
        whereabouts,
        every_process,
    }
}

/// Resolves when the kernel log has records, after printing them; never without `--verbose`.
async fn kernel_log_ready(log: &mut Option<AsyncFd<KernelLog>>) {
    let Some(log) = log else {
        return std::future::pending().await;
    };
    if let Ok(mut guard) = log.readable_mut().await {
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

pub(crate) fn open_pidfd(pid: u32) -> anyhow::Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ESRCH) {
            bail!("no process with pid {pid}: check the pid (ps -e) and retry");
        }
        bail!("cannot watch pid {pid}: {error}");
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    watch_fd(fd).with_context(|| format!("cannot watch pid {pid}"))
}

/// Registers an owned fd with the runtime for readability.
fn watch_fd<T: AsRawFd>(owner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `owner` owns its fd (a map fd or an OwnedFd) and keeps it open, unchanged, for as
    // long as the AsyncFd that takes it lives.
    unsafe { AsyncFd::register_with_interest(owner, Interest::READABLE) }.map_err(io::Error::from)
}
