//! The event session: one loop for every mode. It attaches the hooks the mode needs, drains
//! the ring buffer into the model in bounded batches, samples kernel counters and /proc on one
//! tick, stops on one set of reasons, and hands the mode its snapshot to print. Modes
//! ([`trace`], [`reclaim`], [`go`]) differ in which hooks they attach and what they print.

pub mod go;
pub mod reclaim;
mod sampler;
pub mod signals;
pub mod trace;

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use memtrace_common::{
    events::{
        fault::FaultCounts,
        kswapd::KswapdWakeups,
        stall::{ReclaimKind, ScanCounts, ScanSlot, StallHist, StallKey},
        totals::SyscallTotals,
    },
    hooks::{Program, Run},
    stacks::{StackCounts, StackKey, StackRef},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
    time::MissedTickBehavior,
};

use crate::{
    analysis::{
        golang::{
            self, GoProcess, Target,
            verdict::{self, Facts, Verdict},
        },
        groups,
        selection::Selection,
        snapshot::{Detail, Snapshot, Window},
    },
    cli::GroupBy,
    kernel::{
        LostCounts, Options, Tracer,
        cgroup::Cgroups,
        check_privileges,
        clock::monotonic_ns,
        log::KernelLog,
        namer::Namer,
        pidns,
        procfs::{self, PidKind, SmapsRollup},
        status::Resident,
        symbols::Symbols,
    },
    model::{
        Model,
        attribution::{AtAttach, Bound, Rss},
        container::Whereabouts,
        event::{self, Event, OomKill},
        reclaim::Wakeups,
    },
    output::{
        exporter::Exporter,
        json::{Start, SyscallHooks},
        lost, prometheus,
        stdout::Stdout,
    },
    stop::StopReason,
};
use sampler::{Answer, FirstSight, Probe, Request, Sampler};
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
    /// Before the first event (the JSON start line).
    fn start(&mut self, _session: &mut Session) {}
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
    mode.start(&mut session);
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

type StallMaps = (Vec<(StallKey, StallHist)>, Vec<(ReclaimKind, StallHist)>);

/// The kernel's maps at one sampling instant, read before the ring is drained and applied after.
struct KernelSample {
    faults: BTreeMap<u32, FaultCounts>,
    rss: BTreeMap<u32, Rss>,
    /// Per process and kind, and for every process per kind.
    stalls: StallMaps,
    wakeups: Vec<(u32, KswapdWakeups)>,
    scans: [ScanCounts; ScanSlot::COUNT],
    lost: LostCounts,
    /// Memory syscalls counted per process, when the kernel counts them.
    totals: Vec<(u32, SyscallTotals)>,
    stacks: Vec<(StackKey, StackCounts)>,
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
            page_size: procfs::page_size(),
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

    /// "pid 7 (app), pid 9 (db)", or "every process".
    fn describe_targets(&self) -> String {
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

    /// Applies what memtrace read of a target when it first saw it.
    fn learn_first_sight(&mut self, pid: u32, first: FirstSight) {
        let attribution = &mut self.model.attribution;
        if let Some(comm) = &first.identity.comm {
            attribution.name(pid, comm);
        }
        if let Some(ticks) = first.identity.start_ticks {
            attribution.set_start_time(pid, ticks);
        }
        if let Some(brk) = first.program_break {
            attribution.set_initial_brk(pid, brk);
            self.tracer.seed_program_break(pid, brk);
        }
        if let Some(sample) = first.resident {
            if let Resident::Status(_, why) = sample {
                eprintln!("memtrace: warning: pid {pid}: {why}");
            }
            attribution.sample_resident(pid, sample);
        }
        attribution.sample_task_faults(pid, &first.threads);
        // Its cgroup (and so its container and pod) and its pid inside its namespace.
        if first.identity.cgroup.is_some()
            && let Some(serial) = attribution.serial_of(pid)
        {
            attribution.identify(pid, serial, first.identity);
        }
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

    /// Decodes what waits in the ring buffer into the model, and shows each event to the mode.
    /// At most [`MAX_DRAIN`] records a call (see [`drain_bounded`]).
    fn drain(&mut self, mode: &mut impl Mode) -> usize {
        let page_size = self.page_size;
        let ring = self.events.get_mut();
        // Until the window ends, a stopping signal cuts the drain short: the loop then stops
        // at once, and what is left is drained after the programs are detached.
        let cut = !self.window_over;
        let batch = drain_bounded(|| {
            if cut && signals::requested() {
                return None;
            }
            ring.next().map(|record| event::decode(&record, page_size))
        });
        let drained = batch.len();
        for decoded in batch {
            match decoded {
                Ok(mut event) => {
                    self.enrich(&mut event);
                    self.model.record(&event);
                    if let Event::OomKill(kill) = event {
                        // Shown once the worker has read what /proc still says of the victim.
                        self.sampler.ask(Request::OomVictim {
                            tid: kill.tid,
                            ts_ns: kill.ts_ns,
                            trigger_memcg_id: kill.trigger_memcg_id,
                        });
                        self.pending_ooms.push(*kill);
                    } else {
                        if let Event::Totals(flush) = &event {
                            self.start_from_totals(flush.tgid, flush.totals.start_ns);
                        }
                        mode.event(self, &event);
                    }
                }
                Err(_) => self.model.undecodable += 1,
            }
        }
        let fresh = self.model.attribution.take_fresh();
        if !fresh.is_empty() {
            self.sampler.ask(Request::Identify(fresh));
        }
        self.out.flush();
        drained
    }

    /// Drains what was committed before a sample: at most what the ring can hold, so a flood
    /// that refills it meanwhile cannot keep memtrace from sampling (64 batches once took tens
    /// of seconds under a flood, with signals and scrapes waiting).
    fn drain_remaining(&mut self, mode: &mut impl Mode) {
        let mut left = self.ring_records;
        while left > 0 {
            let drained = self.drain(mode);
            if drained < MAX_DRAIN {
                return;
            }
            left = left.saturating_sub(drained);
        }
    }

    /// Adds what the kernel record lacks: the target of a process_madvise, read at once from
    /// the caller's fdinfo (a rare call, whose pidfd the caller may close any moment); the
    /// start time the kernel gave at exit.
    fn enrich(&mut self, event: &mut Event) {
        if let Event::Spawn(spawn) = event
            && spawn.followed != 0
        {
            self.followed.push(spawn.child);
        }
        // process_madvise advises another process's memory: charge the target.
        if let Event::Madvise(m) = event
            && let Some(target) = m.pidfd.and_then(|fd| procfs::pidfd_target(m.caller, fd))
        {
            m.tgid = target;
            m.target_known = true;
        }
        if let Event::ThreadExit(exit) = event
            && exit.process_start_ns != 0
            && let Some(ticks) = procfs::boot_ns_to_ticks(exit.process_start_ns)
        {
            self.model
                .attribution
                .set_start_time_from_kernel(exit.tgid, ticks);
        }
        if let Event::StackSeen(stack) = event {
            self.locate_stack(*stack);
        }
    }

    /// Places a new user stack in the process's files now: its addresses mean something only
    /// with the process's memory map, gone once the process exits. Naming its frames (reading
    /// symbols and DWARF) is left to the naming thread, so the loop is never held up by it.
    fn locate_stack(&mut self, stack: StackRef) {
        let (Some(symbols), Some(namer)) = (self.symbols.as_mut(), self.namer.as_mut()) else {
            return;
        };
        if self.model.stacks.is_named(&stack) || self.naming.contains(&stack) {
            return;
        }
        let Some(frames) = self.tracer.frames(&stack) else {
            return;
        };
        if stack.kernel != 0 {
            namer.kernel(stack, frames);
        } else {
            namer.user(stack, symbols.locate(stack.tgid, &frames));
        }
        self.naming.insert(stack);
    }

    /// Takes the names the naming thread has ready, after sending it any stack the counts
    /// refer to that was never announced (a full ring buffer).
    fn name_stacks(&mut self) {
        for stack in self.model.stacks.unnamed() {
            self.locate_stack(stack);
        }
        let names = self.namer.as_mut().map(Namer::ready).unwrap_or_default();
        self.learn_names(names);
    }

    fn learn_names(&mut self, names: Vec<(StackRef, crate::kernel::symbols::Stack)>) {
        for (stack, named) in names {
            self.naming.remove(&stack);
            self.model.stacks.name(stack, named);
        }
    }

    /// When a process started, from the kernel's copy of its syscall totals just taken in (the
    /// model checked the copy is of the process it holds for the pid).
    fn start_from_totals(&mut self, pid: u32, start_ns: u64) {
        let attribution = &mut self.model.attribution;
        let taken = attribution
            .process_by_pid(pid)
            .and_then(|p| p.kernel.as_ref())
            .is_some_and(|k| k.start_ns() == start_ns);
        if start_ns != 0
            && taken
            && let Some(ticks) = procfs::boot_ns_to_ticks(start_ns)
        {
            attribution.set_start_time_from_kernel(pid, ticks);
        }
    }

    /// The memory cgroups of the report's groups (`--by container|cgroup`), whose own
    /// accounting the worker reads; none by process.
    fn memcg_paths(&self) -> Vec<String> {
        /// A node has hundreds of cgroups; past this many, the rest wait for a later sample.
        const MAX_CGROUPS: usize = 1024;
        if self.selection.by == GroupBy::Process {
            return Vec::new();
        }
        let paths: BTreeSet<String> = self
            .model
            .attribution
            .processes()
            .filter(|p| self.selection.shows(Some(p)))
            .filter_map(|p| {
                let w = &p.whereabouts;
                groups::key_of(
                    self.selection.by,
                    w.cgroup.as_deref(),
                    w.placement.container.as_ref(),
                )?
                .1
            })
            .collect();
        paths.into_iter().take(MAX_CGROUPS).collect()
    }

    /// The sampling tick: the kernel's counters now, then a look at /proc on the worker when
    /// one is due (one at a time: a tick that finds one under way leaves it be). The metrics
    /// page follows the look when one is asked, else the kernel's counters at once.
    fn sample(&mut self, mode: &mut impl Mode) {
        let kernel = self.read_kernel();
        // Every record committed before those reads, in ring order: a pid that passed to a new
        // process meanwhile is the new one's by now, so the values below go to the right entry.
        self.drain_remaining(mode);
        self.apply_kernel(kernel);
        // The Go runtime's own figures of the named Go targets: a few reads of each one's
        // memory, on this thread (the targets' located runtimes live here).
        for (&pid, target) in &mut self.targets {
            target.sample_runtime(pid);
        }
        if self.sampling {
            return;
        }
        // System-wide, reading every process's /proc entries is most of memtrace's own cost:
        // at most every SYSTEM_LOOK_INTERVAL, unless a frame needs fresh counters.
        let due = !self.system_wide
            || self.frame_due
            || self
                .last_look
                .is_none_or(|at| at.elapsed() >= SYSTEM_LOOK_INTERVAL);
        if due {
            self.sampling = true;
            self.last_look = Some(Instant::now());
            self.sampler.ask(Request::Sample {
                probes: self.probes(),
                memcg: self.memcg_paths(),
            });
        } else {
            self.publish_metrics();
        }
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

    /// What the periodic look reads: every process not known to have exited (system-wide) or
    /// the named targets and followed children; their smaps_rollup for the latter.
    fn probes(&self) -> Vec<Probe> {
        let attribution = &self.model.attribution;
        let probe = |pid: u32, serial: u64| Probe {
            pid,
            serial,
            faults: self.memory,
            smaps: !self.system_wide,
        };
        if self.system_wide {
            attribution
                .processes()
                .filter(|p| !p.exited && attribution.serial_of(p.pid) == Some(p.serial))
                .map(|p| probe(p.pid, p.serial))
                .collect()
        } else {
            self.sampled
                .iter()
                .filter_map(|&pid| Some(probe(pid, attribution.serial_of(pid)?)))
                .collect()
        }
    }

    /// Applies what the worker found; says whether to stop (with --follow, tracing goes on
    /// while any followed child lives).
    fn answered(&mut self, mode: &mut impl Mode, answer: Answer) -> Option<StopReason> {
        // Before a periodic look is applied, what was committed to the ring before it: a pid
        // that passed to a new process is the new one's by then, and the entry serials tell.
        // (Looks at processes just met come often, and check start times instead.)
        if matches!(answer, Answer::Sampled { .. }) {
            self.drain_remaining(mode);
        }
        let attribution = &mut self.model.attribution;
        match answer {
            Answer::Identified(found) => {
                let selection = &self.selection;
                for (pid, serial, identity) in found {
                    let shows =
                        |p: &crate::model::attribution::ProcessStats| selection.shows(Some(p));
                    if let Some(id) = self.model.identify((pid, serial, identity), shows) {
                        self.sampler.ask(Request::NameMemcg { pid, serial, id });
                    }
                }
            }
            Answer::NamedMemcg { pid, serial, path } => {
                attribution.named_memcg(pid, serial, path);
            }
            Answer::Adopted(children) => {
                self.adopting = self.adopting.saturating_sub(children.len());
                for (pid, first) in children {
                    if let Some(first) = first.filter(|_| !self.sampled.contains(&pid)) {
                        self.model.attribution.born_while_traced(pid);
                        self.sampled.push(pid);
                        self.learn_first_sight(pid, first);
                    }
                }
            }
            Answer::OomVictim { tid, ts_ns, facts } => {
                self.model.reclaim.ooms.learn(tid, ts_ns, facts.clone());
                if let Some(at) = self
                    .pending_ooms
                    .iter()
                    .position(|k| k.tid == tid && k.ts_ns == ts_ns)
                {
                    let mut kill = self.pending_ooms.swap_remove(at);
                    kill.learn(facts);
                    mode.event(self, &Event::OomKill(Box::new(kill)));
                    self.out.flush();
                }
            }
            Answer::Sampled {
                readings,
                vmstat,
                memcg,
            } => {
                for (pid, serial, reading) in readings {
                    attribution.read(pid, serial, reading);
                }
                self.model.reclaim.sample_vmstat(vmstat);
                // A cgroup removed since (its container ended) keeps its last reading.
                self.model.memcg.extend(memcg);
                self.sampling = false;
                self.publish_metrics();
                if std::mem::take(&mut self.frame_due) {
                    mode.interval(self);
                }
                return (self.targets_gone && self.follow && self.live_targets() == 0)
                    .then_some(StopReason::TargetExited);
            }
        }
        None
    }

    /// A fresh metrics page for `--prometheus`.
    fn publish_metrics(&self) {
        if let Some(metrics) = &self.metrics {
            let detail = Detail::Metrics {
                processes: self.metrics_processes,
            };
            let page = prometheus::render(&self.snapshot_with(Vec::new(), detail));
            let go = prometheus::go_runtime(&self.go_runtime());
            metrics.send_replace(Bytes::from([&page[..], go.as_bytes()].concat()));
        }
    }

    /// The window ends here: with the programs detached the ring stops filling, so draining it
    /// whole ends, and a flood cannot hold the report back.
    fn end_window(&mut self, mode: &mut impl Mode) {
        self.tracer.detach();
        self.window_over = true;
        while self.drain(mode) == MAX_DRAIN {}
    }

    /// At the end: the kernel's maps (which outlive the programs), a last look at /proc, and
    /// the answers still due (processes just met, OOM victims), waiting at most
    /// [`LAST_ANSWERS`].
    async fn last_answers(&mut self, mode: &mut impl Mode) {
        let kernel = self.read_kernel();
        self.drain_remaining(mode);
        self.apply_kernel(kernel);
        self.sampler.ask(Request::Sample {
            probes: self.probes(),
            memcg: self.memcg_paths(),
        });
        self.sampling = true;
        let deadline = tokio::time::Instant::now() + LAST_ANSWERS;
        while self.sampler.outstanding() > 0 {
            match tokio::time::timeout_at(deadline, self.sampler.next()).await {
                Ok(answer) => {
                    // A frame is not drawn now: the report follows.
                    self.frame_due = false;
                    self.answered(mode, answer);
                }
                Err(_) => break,
            }
        }
        // Kills whose victim could not be read in time are shown as they are.
        for kill in std::mem::take(&mut self.pending_ooms) {
            mode.event(self, &Event::OomKill(Box::new(kill)));
        }
    }

    /// The kernel's maps, read at one instant.
    fn read_kernel(&mut self) -> KernelSample {
        let tracer = &mut self.tracer;
        KernelSample {
            faults: tracer.faults(),
            rss: Rss::by_process(&tracer.rss()),
            stalls: (tracer.stalls(), tracer.stalls_all()),
            wakeups: tracer.kswapd_wakeups(),
            scans: tracer.lru_scan(),
            lost: tracer.lost(),
            stacks: match self.symbols {
                Some(_) => tracer.stack_counts(),
                None => Vec::new(),
            },
            totals: match tracer.counts_syscalls() {
                true => tracer.syscall_totals(),
                false => Vec::new(),
            },
        }
    }

    fn apply_kernel(&mut self, kernel: KernelSample) {
        // First: a copy of a process that exited must find it before it may be forgotten.
        for (pid, totals) in &kernel.totals {
            self.model.attribution.kernel_totals(*pid, totals, false);
            self.start_from_totals(*pid, totals.start_ns);
        }
        let model = &mut self.model;
        if self.system_wide {
            let selection = &self.selection;
            for pid in model.bound(&self.bound, |p| selection.shows(Some(p))) {
                self.tracer.forget_faults(pid);
                self.tracer.forget_stalls(pid);
            }
        }
        for (pid, faults) in kernel.faults {
            model.attribution.set_faults(pid, faults);
        }
        model.attribution.set_rss(kernel.rss);
        model.reclaim.set_stalls(&kernel.stalls.0, &kernel.stalls.1);
        let stalled: Vec<u32> = model.reclaim.stalled_pids().collect();
        for pid in stalled {
            model.attribution.register(pid);
        }
        model.reclaim.wakeups = kernel
            .wakeups
            .into_iter()
            .map(|(pid, w)| {
                let comm = event::comm_string(&w.comm);
                (
                    pid,
                    Wakeups {
                        count: w.count,
                        comm,
                    },
                )
            })
            .collect();
        model.reclaim.scans = kernel.scans;
        model.lost = kernel.lost;
        model.stacks.set_counts(kernel.stacks);
        self.name_stacks();
        self.adopt_children();
    }

    /// With --follow: children forked after memtrace started, whose faults all count. The
    /// kernel put them in its filter and said so in their spawn records; threads are forks
    /// too, and the worker passes them over.
    fn adopt_children(&mut self) {
        if !self.followed.is_empty() {
            let children = std::mem::take(&mut self.followed);
            self.adopting += children.len();
            self.sampler.ask(Request::Adopt(children));
        }
    }

    /// Traced processes that may still live: the targets and followed children not known to
    /// have exited, and children whose adoption is under way.
    fn live_targets(&self) -> usize {
        let attribution = &self.model.attribution;
        let alive = self
            .sampled
            .iter()
            .filter(|&&pid| attribution.process_by_pid(pid).is_some_and(|p| !p.exited))
            .count();
        alive + self.followed.len() + self.adopting
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

    fn snapshot_with(&self, go_verdicts: Vec<Verdict>, detail: Detail) -> Snapshot {
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

/// Takes decoded records until `MAX_DRAIN` were taken or none is left: under a flood the
/// producers can outpace us, and an unbounded loop would starve the timers (samples, live
/// view, stop conditions) and signals, and grow the batch without limit.
fn drain_bounded<T>(mut next: impl FnMut() -> Option<T>) -> Vec<T> {
    let mut batch = Vec::new();
    while batch.len() < MAX_DRAIN
        && let Some(item) = next()
    {
        batch.push(item);
    }
    batch
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain stops at its bound whatever waits (the `memtrace reclaim` loop once drained
    /// without one, so a flood could starve its timers and signals); it is the only drain.
    #[test]
    fn a_drain_is_bounded() {
        let mut flood = 0..3 * MAX_DRAIN;
        assert_eq!(drain_bounded(|| flood.next()).len(), MAX_DRAIN);
        assert_eq!(
            flood.len(),
            2 * MAX_DRAIN,
            "records beyond the bound stay in the ring"
        );
        let mut few = 0..3;
        assert_eq!(drain_bounded(|| few.next()).len(), 3);
    }
}
