//! The event pump: drains the ring buffer into attribution until a stop condition, refreshes
//! the kernel-side counters and /proc samples once a second, then reports.

use std::{
    io::{self, IsTerminal as _, Write as _},
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
    cli::Cli,
    events::{self, Event},
    live::Live,
    procfs::{self, SmapsRollup},
    prometheus::{self, Exporter},
    report::{self, ReportOptions, StartLine, StopReason, Summary},
    tracer::{Focus, Options, Tracer},
};

/// How often the ring buffer is drained when the kernel has not woken us (it wakes us only once
/// a batch has accumulated, to keep the traced workload fast).
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);
/// Processes kept when tracing every process: past this, exited ones are forgotten, so a
/// DaemonSet running for weeks keeps bounded memory (and the kernel's fault table has room).
const MAX_PROCESSES: usize = 4096;
/// How often kernel counters (faults, RSS) and smaps_rollup are read.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Open pidfds first: they pin the identity of each target, so a pid reused after an early
    // exit cannot be mistaken for it, and they become readable when the process exits.
    let exits = cli
        .pid
        .iter()
        .map(|&pid| open_pidfd(pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let system_wide = cli.pid.is_empty();
    // Bound before loading eBPF: a port in use fails cleanly with nothing attached.
    let exporter = match cli.prometheus {
        Some(addr) => Some(Exporter::bind(addr).await?),
        None => None,
    };

    let options = Options {
        focus: Focus::Memory,
        pids: (!system_wide).then(|| cli.pid.clone()),
        ring_bytes: cli.ring_size * 1024,
        fault_events: cli.fault_events,
        follow: cli.follow,
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
    let mut pump = Pump::new(tracer, &cli)?;
    pump.metrics = exporter.map(Exporter::start);
    for &pid in &cli.pid {
        pump.first_sight(pid);
    }
    let what = if system_wide {
        "every process".to_owned()
    } else {
        describe_targets(&pump.attribution, &cli.pid)
    };
    eprintln!("memtrace: attached; tracing {what}; Ctrl-C to stop");
    if cli.json {
        pump.write_line(&serde_json::to_string(&StartLine::new(&cli.pid))?);
        pump.flush();
    }

    let reason = pump
        .run_until_stopped(signals, cli.duration, &exits)
        .await?;
    pump.finish(reason)
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
    out: io::BufWriter<io::Stdout>,
    /// Set once stdout is gone (e.g. `memtrace | head` exited): stop, and report to stderr.
    output_closed: bool,
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
}

impl Pump {
    fn new(mut tracer: Tracer, cli: &Cli) -> anyhow::Result<Self> {
        let events = tracer
            .take_events()
            .context("events ring buffer already taken")?;
        let events = watch(events).context("cannot watch the events ring buffer")?;
        Ok(Self {
            events,
            report: ReportOptions {
                comms: cli.comm.clone(),
                sort: cli.sort,
                top: (cli.pid.is_empty()).then_some(cli.top),
                counts_faults: tracer.counts_faults,
            },
            tracer,
            attribution: Attribution::default(),
            json: cli.json,
            follow: cli.follow,
            system_wide: cli.pid.is_empty(),
            sampled: cli.pid.clone(),
            out: io::BufWriter::new(io::stdout()),
            output_closed: false,
            page_size: procfs::page_size(),
            started: Instant::now(),
            attached_ticks: procfs::now_ticks(),
            undecodable: 0,
            metrics: None,
            live: (!cli.json).then(|| (Live::default(), io::stdout().is_terminal())),
            interval: cli.interval,
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
        let mut sample_timer = tokio::time::interval(SAMPLE_INTERVAL);
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
                _ = sample_timer.tick() => {
                    self.sample();
                    // With --follow, tracing goes on while any followed child lives.
                    (targets_gone && self.follow && self.live_targets() == 0).then_some(StopReason::TargetExited)
                }
                _ = live_timer.tick(), if self.live.is_some() => {
                    self.drain();
                    self.sample();
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
            self.drain();
            if self.output_closed {
                return Ok(StopReason::OutputClosed);
            }
            if let Some(reason) = reason {
                return Ok(reason);
            }
        }
    }

    /// Decodes and attributes everything waiting in the ring buffer.
    fn drain(&mut self) {
        let mut batch = Vec::new();
        let ring = self.events.get_mut();
        while let Some(record) = ring.next() {
            match events::decode(&record, self.page_size) {
                Ok(event) => batch.push(event),
                Err(_) => self.undecodable += 1,
            }
        }
        for mut event in batch {
            self.enrich(&mut event);
            self.attribution.record(&event);
            // An OOM kill is always shown, whoever it hit.
            let shown = matches!(event, Event::OomKill(_))
                || self.report.shows(&self.attribution, event.tgid());
            if self.json && !self.output_closed && shown {
                match report::event_json(&event, &self.tracer.gfp) {
                    Ok(line) => self.write_line(&line),
                    Err(_) => self.undecodable += 1,
                }
            }
        }
        self.flush();
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
        self.write_line(text.trim_end());
        self.flush();
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

    fn write_line(&mut self, line: &str) {
        if self.output_closed {
            return;
        }
        if let Err(e) = writeln!(self.out, "{line}") {
            self.output_failed(&e);
        }
    }

    fn flush(&mut self) {
        if !self.output_closed
            && let Err(e) = self.out.flush()
        {
            self.output_failed(&e);
        }
    }

    fn output_failed(&mut self, error: &io::Error) {
        self.output_closed = true;
        if error.kind() == io::ErrorKind::BrokenPipe {
            eprintln!("memtrace: stdout closed; stopping and writing the report to stderr");
        } else {
            eprintln!(
                "memtrace: cannot write to stdout ({error}); stopping and writing the report to stderr"
            );
        }
    }

    fn finish(mut self, reason: StopReason) -> anyhow::Result<()> {
        // Whatever arrived after the stop condition still counts.
        self.drain();
        self.sample();
        let reason = if self.output_closed {
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
        let report = if self.json {
            serde_json::to_string(&Summary::new(
                &self.attribution,
                &self.report,
                &lost,
                elapsed,
                reason,
            ))?
        } else {
            report::text(&self.attribution, &self.report, &lost, elapsed, reason)
        };
        self.write_line(report.trim_end());
        self.flush();
        if self.output_closed {
            // Nothing gathered is lost: the report goes where it can still be read.
            eprintln!("{}", report.trim_end());
        }
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
