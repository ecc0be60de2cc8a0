//! The event pump: drains the ring buffer into attribution until a stop condition, refreshes
//! the kernel-side counters and /proc samples once a second, then reports.

use std::{
    collections::BTreeMap,
    io::{self, IsTerminal as _},
    os::fd::{FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    attribution::Attribution,
    cli::{Cli, GoArgs, SortKey},
    events::{self, Event},
    golang::{
        self, Target,
        verdict::{self, Facts, Verdict},
    },
    live::Live,
    output::Stdout,
    procfs::{self, SmapsRollup},
    prometheus::{self, Exporter},
    report::{self, ReportOptions, StartLine, StopReason, Summary},
    tracer::{Focus, Options, Tracer},
};

/// How often the ring buffer is drained when the kernel has not woken us (it wakes us only once
/// a batch has accumulated, to keep the traced workload fast).
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);
/// Records decoded per drain before the loop serves its timers again.
const MAX_DRAIN: usize = 16_384;
/// Processes kept when tracing every process: past this, exited ones are forgotten, so a
/// DaemonSet running for weeks keeps bounded memory (and the kernel's fault table has room).
const MAX_PROCESSES: usize = 4096;
/// How often kernel counters (faults, RSS) and smaps_rollup are read.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// `memtrace go` stops this long after the last release it saw, so a burst (debug.FreeOSMemory
/// issues dozens of calls) is counted whole rather than cut after its first call.
const RELEASE_SETTLE: Duration = Duration::from_millis(500);

/// What to trace, when to stop and what to print.
struct Session {
    pids: Vec<u32>,
    ring_kib: u32,
    fault_events: bool,
    follow: bool,
    json: bool,
    duration: Option<Duration>,
    comms: Vec<String>,
    sort: SortKey,
    top: usize,
    /// `memtrace go`: stop once releases are seen and print only the verdict.
    go_verdict: bool,
    /// Live view refresh (not with --json or `memtrace go`).
    interval: Duration,
    prometheus: Option<std::net::SocketAddr>,
}

/// `memtrace [--pid …]`: trace, then print the report.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    trace(Session {
        pids: cli.pid,
        ring_kib: cli.ring_size,
        fault_events: cli.fault_events,
        follow: cli.follow,
        json: cli.json,
        duration: cli.duration,
        comms: cli.comm,
        sort: cli.sort,
        top: cli.top,
        go_verdict: false,
        interval: cli.interval,
        prometheus: cli.prometheus,
    })
    .await
}

/// `memtrace go --pid N`: trace one process until it releases memory (or `--wait` ends),
/// then print the verdict.
pub async fn run_go(args: GoArgs) -> anyhow::Result<()> {
    trace(Session {
        pids: vec![args.pid],
        ring_kib: 4096,
        fault_events: false,
        follow: false,
        json: args.json,
        duration: Some(args.wait),
        comms: Vec::new(),
        sort: SortKey::Released,
        top: 10,
        go_verdict: true,
        interval: Duration::from_secs(1),
        prometheus: None,
    })
    .await
}

async fn trace(session: Session) -> anyhow::Result<()> {
    // Open pidfds first: they pin the identity of each target, so a pid reused after an early
    // exit cannot be mistaken for it, and they become readable when the process exits.
    let exits = session
        .pids
        .iter()
        .map(|&pid| open_pidfd(pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let system_wide = session.pids.is_empty();
    // Bound before loading eBPF: a port in use fails cleanly with nothing attached.
    let exporter = match session.prometheus {
        Some(addr) => Some(Exporter::bind(addr).await?),
        None => None,
    };
    // The executable and environment are read now: they are gone once a process exits. For
    // `memtrace go` an unreadable executable is an error; otherwise it only means no verdict.
    let mut targets = BTreeMap::new();
    for &pid in &session.pids {
        match Target::inspect(pid) {
            Ok(target) => {
                targets.insert(pid, target);
            }
            Err(e) if session.go_verdict => bail!("{e}"),
            Err(_) => {}
        }
    }

    let options = Options {
        focus: Focus::Memory,
        pids: (!system_wide).then(|| session.pids.clone()),
        ring_bytes: session.ring_kib * 1024,
        fault_events: session.fault_events,
        follow: session.follow,
    };
    let tracer = Tracer::attach(&options)?;
    for warning in &tracer.warnings {
        eprintln!("memtrace: warning: {warning}");
    }

    // Handle Ctrl-C/SIGTERM from before "attached" is printed: a signal sent right after it
    // must stop tracing with a report, not kill memtrace. Created once: re-creating signal
    // streams per loop iteration can miss a signal.
    let signals = Signals {
        interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
    };
    let mut pump = Pump::new(tracer, &session, targets)?;
    pump.metrics = exporter.map(Exporter::start);
    for &pid in &session.pids {
        pump.first_sight(pid);
    }
    let what = if system_wide {
        "every process".to_owned()
    } else {
        describe_targets(&pump.attribution, &session.pids)
    };
    if session.go_verdict {
        let wait = session.duration.unwrap_or_default().as_secs_f64();
        eprintln!(
            "memtrace: attached; watching {what} for memory releases (up to {wait:.1} s); Ctrl-C to stop"
        );
    } else {
        eprintln!("memtrace: attached; tracing {what}; Ctrl-C to stop");
    }
    if session.json && !session.go_verdict {
        pump.out
            .line(&serde_json::to_string(&StartLine::new(&session.pids))?);
        pump.out.flush();
    }

    let reason = pump
        .run_until_stopped(signals, session.duration, &exits)
        .await?;
    if session.go_verdict {
        pump.finish_go(reason)
    } else {
        pump.finish(reason)
    }
}

struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

struct Pump {
    events: AsyncFd<RingBuf<MapData>>,
    tracer: Tracer,
    attribution: Attribution,
    report: ReportOptions,
    json: bool,
    follow: bool,
    system_wide: bool,
    /// Processes whose smaps_rollup is sampled: the named targets and, with --follow, children.
    sampled: Vec<u32>,
    /// Stops the trace when it goes away; the report then goes to stderr.
    out: Stdout,
    page_size: u64,
    started: Instant,
    /// When tracing began, in clock ticks since boot: processes started later were born while
    /// traced, so all their faults count (system-wide, where they are met by their events).
    attached_ticks: Option<u64>,
    undecodable: u64,
    /// The live view, unless --json: `Some(true)` draws a screen (stdout is a terminal),
    /// `Some(false)` prints one line per interval.
    live: Option<(Live, bool)>,
    interval: Duration,
    /// Publishes each sample's metrics page to the `--prometheus` server.
    metrics: Option<watch::Sender<String>>,
    /// What was read about each named target at start (Go build info, GODEBUG).
    targets: BTreeMap<u32, Target>,
    /// `memtrace go`: stop once releases were seen and have settled; print only the verdict.
    go_verdict: bool,
    /// Bytes the named targets had released at the last check, and when that last changed.
    last_release: (u64, Option<Instant>),
}

impl Pump {
    fn new(
        mut tracer: Tracer,
        session: &Session,
        targets: BTreeMap<u32, Target>,
    ) -> anyhow::Result<Self> {
        let events = tracer
            .take_events()
            .context("events ring buffer already taken")?;
        let events = watch(events).context("cannot watch the events ring buffer")?;
        Ok(Self {
            events,
            report: ReportOptions {
                comms: session.comms.clone(),
                sort: session.sort,
                top: (session.pids.is_empty()).then_some(session.top),
                counts_faults: tracer.counts_faults,
            },
            tracer,
            attribution: Attribution::default(),
            json: session.json,
            follow: session.follow,
            system_wide: session.pids.is_empty(),
            sampled: session.pids.clone(),
            out: Stdout::new(),
            page_size: procfs::page_size(),
            started: Instant::now(),
            attached_ticks: procfs::now_ticks(),
            undecodable: 0,
            metrics: None,
            live: (!session.json && !session.go_verdict)
                .then(|| (Live::default(), io::stdout().is_terminal())),
            interval: session.interval,
            targets,
            go_verdict: session.go_verdict,
            last_release: (0, None),
        })
    }

    /// What /proc says about a process when memtrace first meets it.
    fn first_sight(&mut self, pid: u32) {
        if let Some(comm) = procfs::comm(pid) {
            self.attribution.name(pid, &comm);
        }
        if let Some(brk) = procfs::program_break(pid) {
            self.attribution.set_initial_brk(pid, brk);
        }
        if let Some(sample) = SmapsRollup::read(pid) {
            self.attribution.sample_smaps(pid, sample);
        }
        self.attribution
            .sample_task_faults(pid, &procfs::thread_faults(pid));
    }

    async fn run_until_stopped(
        &mut self,
        signals: Signals,
        duration: Option<Duration>,
        exits: &[AsyncFd<OwnedFd>],
    ) -> anyhow::Result<StopReason> {
        let Signals {
            mut interrupt,
            mut terminate,
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
        let mut targets_gone = exits.is_empty();
        let mut drain_timer = tokio::time::interval(DRAIN_INTERVAL);
        let mut backlog = false;
        // A live view refreshed faster than once a second samples as often as it refreshes;
        // it never samples on its own tick, which would double the /proc reads.
        let sample_every = match self.live {
            Some(_) => SAMPLE_INTERVAL.min(self.interval),
            None => SAMPLE_INTERVAL,
        };
        let mut sample_timer = tokio::time::interval(sample_every);
        let mut live_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);

        loop {
            let reason = tokio::select! {
                guard = self.events.readable_mut() => {
                    let mut guard = guard.context("waiting on the events ring buffer")?;
                    guard.clear_ready();
                    None
                }
                _ = drain_timer.tick() => None,
                // The last drain stopped at its limit: more is waiting, come straight back (but
                // through select!, so timers and signals get their turn).
                () = std::future::ready(()), if backlog => None,
                _ = sample_timer.tick() => {
                    self.sample();
                    // With --follow, tracing goes on while any followed child lives.
                    (targets_gone && self.follow && self.live_targets() == 0).then_some(StopReason::TargetExited)
                }
                _ = live_timer.tick(), if self.live.is_some() => {
                    self.drain();
                    self.show_live();
                    None
                }
                _ = interrupt.recv() => Some(StopReason::Interrupted),
                _ = terminate.recv() => Some(StopReason::Interrupted),
                () = &mut deadline, if duration.is_some() => Some(StopReason::Duration),
                () = &mut targets_exited, if !targets_gone => {
                    targets_gone = true;
                    (!self.follow || self.live_targets() == 0).then_some(StopReason::TargetExited)
                }
            };
            backlog = self.drain() == MAX_DRAIN;
            if self.out.closed() {
                return Ok(StopReason::OutputClosed);
            }
            if let Some(reason) = reason {
                return Ok(reason);
            }
            if self.go_verdict && self.releases_settled() {
                return Ok(StopReason::ReleaseSeen);
            }
        }
    }

    /// Whether the named targets released memory and then nothing more for
    /// [`RELEASE_SETTLE`].
    fn releases_settled(&mut self) -> bool {
        let released: u64 = self
            .sampled
            .iter()
            .filter_map(|&pid| self.attribution.process_by_pid(pid))
            .map(|p| p.released_bytes())
            .sum();
        if released != self.last_release.0 {
            self.last_release = (released, Some(Instant::now()));
        }
        self.last_release
            .1
            .is_some_and(|at| at.elapsed() >= RELEASE_SETTLE)
    }

    /// Decodes and attributes everything waiting in the ring buffer.
    ///
    /// At most [`MAX_DRAIN`] records a call: under a flood the producers can outpace us, and an
    /// unbounded loop would starve the timers (samples, live view, stop conditions) and grow the
    /// batch without limit. The ring is still readable afterwards, so the loop comes back.
    fn drain(&mut self) -> usize {
        let mut batch = Vec::new();
        let mut drained = 0;
        let ring = self.events.get_mut();
        while drained < MAX_DRAIN
            && let Some(record) = ring.next()
        {
            drained += 1;
            match events::decode(&record, self.page_size) {
                Ok(event) => batch.push(event),
                Err(_) => self.undecodable += 1,
            }
        }
        for mut event in batch {
            self.enrich(&mut event);
            self.attribution.record(&event);
            // An OOM kill is always shown, whoever it hit. `memtrace go --json` prints one
            // verdict object, not the event stream.
            let shown = matches!(event, Event::OomKill(_))
                || self.report.shows(&self.attribution, event.tgid());
            if self.json && !self.go_verdict && !self.out.closed() && shown {
                match report::event_json(&event, &self.tracer.gfp) {
                    Ok(line) => self.out.line(&line),
                    Err(_) => self.undecodable += 1,
                }
            }
        }
        self.out.flush();
        drained
    }

    /// Drains what is left after the stop condition, in bounded batches; gives up after a
    /// few rings' worth so a flood cannot keep memtrace from reporting.
    fn drain_remaining(&mut self) {
        for _ in 0..64 {
            if self.drain() < MAX_DRAIN {
                return;
            }
        }
    }

    /// Adds what the kernel record lacks, from /proc.
    fn enrich(&mut self, event: &mut Event) {
        // process_madvise advises another process's memory: charge the target.
        if let Event::Madvise(m) = event
            && let Some(target) = m.pidfd.and_then(|fd| procfs::pidfd_target(m.caller, fd))
        {
            m.tgid = target;
            m.target_known = true;
        }
        if let Event::OomKill(oom) = event {
            procfs::enrich_oom_kill(oom);
        }
        let Some(pid) = event.process() else {
            return;
        };
        if self.attribution.unnamed(pid)
            && let Some(comm) = procfs::comm(pid)
        {
            self.attribution.name(pid, &comm);
        }
    }

    /// Reads the kernel-side counters and samples smaps_rollup of the sampled processes.
    fn sample(&mut self) {
        if self.system_wide && self.attribution.len() > MAX_PROCESSES {
            let forgotten = self
                .attribution
                .forget_exited(MAX_PROCESSES, procfs::is_live_process);
            for pid in forgotten {
                self.tracer.forget_faults(pid);
            }
        }
        for (pid, faults) in self.tracer.faults() {
            self.attribution.set_faults(pid, faults);
        }
        for (pid, rss) in self.tracer.rss() {
            self.attribution.set_rss(pid, rss);
        }
        self.attribution.reclaim.stalls = self.tracer.stalls();
        self.attribution.reclaim.system = self.tracer.stalls_all();
        for pid in self.attribution.pids() {
            if self.attribution.unnamed(pid)
                && let Some(comm) = procfs::comm(pid)
            {
                self.attribution.name(pid, &comm);
            }
        }
        if self.follow {
            for pid in self.tracer.targets() {
                if !self.sampled.contains(&pid) && procfs::is_live_process(pid) {
                    // Forked after memtrace started: all its faults are in the window.
                    self.attribution.born_while_traced(pid);
                    self.sampled.push(pid);
                    self.first_sight(pid);
                }
            }
        }
        for &pid in &self.sampled {
            if let Some(sample) = SmapsRollup::read(pid) {
                self.attribution.sample_smaps(pid, sample);
            }
        }
        // Task fault counters: the sampled targets, or every process seen when tracing all
        // (those count from memtrace's first sight of them).
        let pids = if self.system_wide {
            self.attribution.pids()
        } else {
            self.sampled.clone()
        };
        for pid in pids {
            if self.system_wide
                && !self.attribution.task_faults_known(pid)
                && self.born_while_traced(pid)
            {
                self.attribution.born_while_traced(pid);
            }
            let threads = procfs::thread_faults(pid);
            if !threads.is_empty() {
                self.attribution.sample_task_faults(pid, &threads);
            }
        }
        if let Some(metrics) = &self.metrics {
            let page = prometheus::render(&self.attribution, &self.report, &self.tracer.lost());
            metrics.send_replace(page);
        }
    }

    /// Draws the live screen or prints the interval line.
    fn show_live(&mut self) {
        let Some((live, terminal)) = &mut self.live else {
            return;
        };
        let lost = self.tracer.lost().total();
        let elapsed = self.started.elapsed();
        let text = if *terminal {
            live.screen(
                &self.attribution,
                &self.report,
                lost,
                elapsed,
                self.interval,
            )
        } else {
            live.line(
                &self.attribution,
                &self.report,
                lost,
                elapsed,
                self.interval,
            )
        };
        self.out.line(text.trim_end());
        self.out.flush();
    }

    /// Whether a process started after tracing began (strictly: one started in the same clock
    /// tick is taken as older, so its earlier faults are never over-counted).
    fn born_while_traced(&self, pid: u32) -> bool {
        match (self.attached_ticks, procfs::start_ticks(pid)) {
            (Some(attached), Some(started)) => started > attached,
            _ => false,
        }
    }

    /// Live processes in the kernel filter; drops entries that are gone or are threads (forks
    /// of threads land there too).
    fn live_targets(&mut self) -> usize {
        let mut live = 0;
        for pid in self.tracer.targets() {
            if procfs::is_live_process(pid) {
                live += 1;
            } else {
                self.tracer.remove_target(pid);
            }
        }
        live
    }

    fn finish(mut self, reason: StopReason) -> anyhow::Result<()> {
        // Whatever arrived after the stop condition still counts.
        self.drain_remaining();
        self.sample();
        let reason = if self.out.closed() {
            StopReason::OutputClosed
        } else {
            reason
        };
        let lost = self.tracer.lost();
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if lost.total() > 0 {
            eprintln!(
                "memtrace: warning: {} events were lost in the kernel; totals are undercounts (try a larger --ring-size)",
                lost.total()
            );
        }
        if self.undecodable > 0 {
            eprintln!(
                "memtrace: warning: {} records could not be decoded",
                self.undecodable
            );
        }
        let verdicts = self.go_verdicts(elapsed, true);
        let report = if self.json {
            let mut summary = Summary::new(&self.attribution, &self.report, &lost, elapsed, reason);
            summary.go_verdicts = verdicts;
            serde_json::to_string(&summary)?
        } else {
            let sections: Vec<String> = verdicts
                .iter()
                .map(|v| format!("Go release mode\n{}", v.text()))
                .collect();
            report::text(
                &self.attribution,
                &self.report,
                &lost,
                elapsed,
                reason,
                &sections,
            )
        };
        self.out.report(&report);
        Ok(())
    }
}

impl Pump {
    /// Verdicts for the named targets; with `only_go`, for Go binaries only.
    fn go_verdicts(&self, watched_ns: u64, only_go: bool) -> Vec<Verdict> {
        let kernel = golang::kernel_release();
        self.targets
            .iter()
            .filter(|(_, target)| !only_go || target.go.is_some())
            .map(|(&pid, target)| {
                let process = self.attribution.process_by_pid(pid);
                verdict::judge(&Facts {
                    pid,
                    comm: process.map(|p| p.comm.clone()).unwrap_or_default(),
                    go: target.go.clone(),
                    not_go_reason: target.not_go_reason.clone(),
                    godebug: target.godebug.clone(),
                    kernel: kernel.clone(),
                    madvise: process.map(|p| p.madvise.clone()).unwrap_or_default(),
                    // Read now, not the last periodic sample: that may predate the release.
                    // None once the process has exited.
                    smaps: SmapsRollup::read(pid),
                    watched_ns,
                })
            })
            .collect()
    }

    /// `memtrace go`: prints the verdict (text or one JSON object).
    fn finish_go(mut self, reason: StopReason) -> anyhow::Result<()> {
        self.drain_remaining();
        self.sample();
        let lost = self.tracer.lost().total();
        if lost > 0 {
            eprintln!(
                "memtrace: warning: {lost} events were lost in the kernel; the observed totals are undercounts"
            );
        }
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let verdicts = self.go_verdicts(elapsed, false);
        let [verdict] = verdicts.as_slice() else {
            bail!(
                "internal error: expected one target, found {}",
                verdicts.len()
            );
        };
        if reason == StopReason::TargetExited && verdict.released_bytes == 0 {
            let expected = if verdict.go {
                format!("expected: {}", verdict.expected.reason)
            } else {
                "not a Go binary".to_owned()
            };
            bail!(
                "pid {} exited after {:.1} s before releasing any memory ({expected})",
                verdict.pid,
                elapsed as f64 / 1e9,
            );
        }
        let out = if self.json {
            serde_json::to_string(verdict)?
        } else {
            verdict.text()
        };
        self.out.report(&out);
        Ok(())
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
    watch(fd).with_context(|| format!("cannot watch pid {pid}"))
}

/// Registers an owned fd with the runtime for readability.
pub(crate) fn watch<T: std::os::fd::AsRawFd>(owner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `owner` owns its fd (a map fd or an OwnedFd) and keeps it open, unchanged, for as
    // long as the AsyncFd that takes it lives.
    unsafe { AsyncFd::register_with_interest(owner, Interest::READABLE) }.map_err(io::Error::from)
}

fn describe_targets(attribution: &Attribution, pids: &[u32]) -> String {
    let names: Vec<String> = attribution
        .processes()
        .filter(|p| pids.contains(&p.pid))
        .map(|p| format!("pid {} ({})", p.pid, p.comm))
        .collect();
    names.join(", ")
}
