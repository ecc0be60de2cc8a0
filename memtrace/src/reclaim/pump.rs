//! `memtrace reclaim`: drains reclaim, kswapd and OOM records, prints a line per interval and a
//! final report built from the kernel's histograms.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli::ReclaimArgs,
    events::{self, Event},
    gfp::GfpNames,
    output::Stdout,
    procfs::{self, SmapsRollup},
    pump::{open_pidfd, watch},
    reclaim::Reclaim,
    reclaim::report::{self as reclaim_report, LazyFree, ReclaimWindow},
    report::{StartLine, StopReason},
    tracer::{Focus, Options, Tracer},
};

/// How often the ring buffer is drained when the kernel has not woken us.
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

pub async fn run(args: ReclaimArgs) -> anyhow::Result<()> {
    let exits = args
        .pid
        .iter()
        .map(|&pid| open_pidfd(pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let system_wide = args.pid.is_empty();
    let mut tracer = Tracer::attach(&Options {
        focus: Focus::Reclaim,
        pids: (!system_wide).then(|| args.pid.clone()),
        ring_bytes: args.ring_size * 1024,
        fault_events: false,
        follow: false,
    })?;
    for warning in &tracer.warnings {
        eprintln!("memtrace: warning: {warning}");
    }
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let events = tracer
        .take_events()
        .context("events ring buffer already taken")?;
    let events = watch(events).context("cannot watch the events ring buffer")?;

    let mut session = Session {
        events,
        reclaim: Reclaim::default(),
        json: args.json,
        out: Stdout::new(),
        page_size: procfs::page_size(),
        undecodable: 0,
        interval_wakes: 0,
        started: Instant::now(),
        gfp: tracer.gfp.clone(),
        targets: args
            .pid
            .iter()
            .map(|&pid| LazyFree {
                pid,
                ..LazyFree::default()
            })
            .collect(),
    };
    session.sample_targets();
    session.reclaim.kswapd.window_start_ns = monotonic_ns();
    session.reclaim.sample_vmstat(procfs::vmstat());
    for &pid in &args.pid {
        if let Some(comm) = procfs::comm(pid) {
            session.reclaim.comms.insert(pid, comm);
        }
    }
    let what = if system_wide {
        "every process".to_owned()
    } else {
        args.pid
            .iter()
            .map(|pid| {
                let comm = session.reclaim.comms.get(pid).map_or("?", String::as_str);
                format!("pid {pid} ({comm})")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!("memtrace: attached; tracing reclaim of {what}; Ctrl-C to stop");
    if args.json {
        let start = serde_json::to_string(&StartLine::new(&args.pid))?;
        session.out.line(&start);
        session.out.flush();
    }

    let deadline = tokio::time::sleep(args.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let targets_exited = async {
        for exit in &exits {
            let _ = exit.readable().await;
        }
    };
    tokio::pin!(targets_exited);
    let mut drain_timer = tokio::time::interval(DRAIN_INTERVAL);
    let mut interval_timer = tokio::time::interval(args.interval);
    interval_timer.tick().await;
    let reason = loop {
        let reason = tokio::select! {
            guard = session.events.readable_mut() => {
                let mut guard = guard.context("waiting on the events ring buffer")?;
                guard.clear_ready();
                None
            }
            _ = drain_timer.tick() => None,
            _ = interval_timer.tick() => {
                session.drain();
                session.interval_line();
                None
            }
            _ = interrupt.recv() => Some(StopReason::Interrupted),
            _ = terminate.recv() => Some(StopReason::Interrupted),
            () = &mut deadline, if args.duration.is_some() => Some(StopReason::Duration),
            () = &mut targets_exited, if !exits.is_empty() => Some(StopReason::TargetExited),
        };
        session.drain();
        if session.out.closed() {
            break StopReason::OutputClosed;
        }
        if let Some(reason) = reason {
            break reason;
        }
    };
    session.finish(&tracer, reason, system_wide)
}

struct Session {
    events: AsyncFd<RingBuf<MapData>>,
    reclaim: Reclaim,
    json: bool,
    out: Stdout,
    page_size: u64,
    undecodable: u64,
    /// kswapd wake events since the last interval line.
    interval_wakes: u64,
    started: Instant,
    gfp: GfpNames,
    /// LazyFree of the `--pid` targets, sampled every interval.
    targets: Vec<LazyFree>,
}

impl Session {
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
            match &mut event {
                Event::OomKill(oom) => {
                    procfs::enrich_oom_kill(oom);
                    // On stderr too, at once: an OOM kill must not wait for the report.
                    eprintln!(
                        "memtrace: OOM KILL: pid {} ({}) anon-rss {} kB, memory cgroup {}",
                        oom.pid,
                        oom.comm,
                        oom.anon_rss_kb
                            .map_or_else(|| "?".into(), |kb| kb.to_string()),
                        oom.cgroup.as_deref().unwrap_or("?")
                    );
                }
                Event::Kswapd(k) if k.awake => self.interval_wakes += 1,
                _ => {}
            }
            self.reclaim.record(&event);
            if self.json && !matches!(event, Event::Kswapd(_)) {
                // kswapd state changes are summed up, not streamed.
                match crate::report::event_json(&event, &self.gfp) {
                    Ok(line) => self.out.line(&line),
                    Err(_) => self.undecodable += 1,
                }
            }
        }
        self.out.flush();
    }

    fn sample_targets(&mut self) {
        for target in &mut self.targets {
            target.sample(SmapsRollup::read(target.pid).as_ref());
        }
    }

    fn interval_line(&mut self) {
        self.sample_targets();
        let interval = self.reclaim.take_interval();
        let wakes = std::mem::take(&mut self.interval_wakes);
        let line = if self.json {
            let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            reclaim_report::interval_json(&interval, &self.reclaim.comms, elapsed, wakes)
                .to_string()
        } else {
            reclaim_report::interval_text(&clock(), &interval, &self.reclaim.comms, wakes)
        };
        self.out.line(line.trim_end());
        self.out.flush();
    }

    fn finish(
        mut self,
        tracer: &Tracer,
        reason: StopReason,
        system_wide: bool,
    ) -> anyhow::Result<()> {
        self.drain();
        // The last, partial interval: its stalls get their line like every other interval's.
        if self.reclaim.has_interval_stalls() {
            self.interval_line();
        }
        let now = monotonic_ns();
        self.reclaim.stalls = tracer.stalls();
        self.reclaim.system = tracer.stalls_all();
        self.reclaim.wakeups = tracer.kswapd_wakeups();
        (self.reclaim.scan_in_stalls, self.reclaim.scan_background) = tracer.lru_scan();
        self.reclaim.sample_vmstat(procfs::vmstat());
        for pid in self
            .reclaim
            .stalls
            .keys()
            .map(|&(pid, _)| pid)
            .collect::<Vec<_>>()
        {
            if !self.reclaim.comms.contains_key(&pid)
                && let Some(comm) = procfs::comm(pid)
            {
                self.reclaim.comms.insert(pid, comm);
            }
        }
        // A target that has exited keeps its last interval's sample.
        self.sample_targets();
        let lost = tracer.lost();
        if lost.total() > 0 {
            eprintln!(
                "memtrace: warning: {} records were lost in the kernel; streamed stalls are undercounts (the histograms are not)",
                lost.total()
            );
        }
        if self.undecodable > 0 {
            eprintln!(
                "memtrace: warning: {} records could not be decoded",
                self.undecodable
            );
        }
        let window = ReclaimWindow {
            reclaim: &self.reclaim,
            kswapd: self.reclaim.kswapd.at(now),
            targets: &self.targets,
            system_wide,
            lost: &lost,
            duration_ns: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            stop_reason: if self.out.closed() {
                StopReason::OutputClosed
            } else {
                reason
            },
        };
        let report = if self.json {
            reclaim_report::summary_json(&window).to_string()
        } else {
            reclaim_report::text(&window)
        };
        self.out.report(&report);
        Ok(())
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, so kernel timestamps compare.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Wall-clock `HH:MM:SS` (UTC) for interval lines.
fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}
