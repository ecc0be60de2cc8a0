//! The periodic look at /proc and the worker's answers: what the session asks the sampler,
//! and how each answer lands in the model.

use std::{collections::BTreeSet, time::Instant};

use super::{
    LAST_ANSWERS, Mode, SYSTEM_LOOK_INTERVAL, Session,
    sampler::{Answer, FirstSight, Probe, Request},
};
use crate::{
    analysis::groups,
    cli::GroupBy,
    kernel::{procfs, status::Resident},
    model::event::Event,
    stop::StopReason,
};

impl Session {
    /// Applies what memtrace read of a target when it first saw it.
    pub(super) fn learn_first_sight(&mut self, pid: u32, first: FirstSight) {
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
            let selection = &self.selection;
            self.model
                .identify((pid, serial, first.identity), |p| selection.shows(Some(p)));
        }
    }

    /// When a process started, from the kernel's copy of its syscall totals just taken in (the
    /// model checked the copy is of the process it holds for the pid).
    pub(super) fn start_from_totals(&mut self, pid: u32, start_ns: u64) {
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
    pub(super) fn memcg_paths(&self) -> Vec<String> {
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
    pub(super) fn sample(&mut self, mode: &mut impl Mode) {
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

    /// What the periodic look reads: every process not known to have exited (system-wide) or
    /// the named targets and followed children; their smaps_rollup for the latter.
    pub(super) fn probes(&self) -> Vec<Probe> {
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
    pub(super) fn answered(&mut self, mode: &mut impl Mode, answer: Answer) -> Option<StopReason> {
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

    /// At the end: the kernel's maps (which outlive the programs), a last look at /proc, and
    /// the answers still due (processes just met, OOM victims), waiting at most
    /// [`LAST_ANSWERS`].
    pub(super) async fn last_answers(&mut self, mode: &mut impl Mode) {
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

    /// With --follow: children forked after memtrace started, whose faults all count. The
    /// kernel put them in its filter and said so in their spawn records; threads are forks
    /// too, and the worker passes them over.
    pub(super) fn adopt_children(&mut self) {
        if !self.followed.is_empty() {
            let children = std::mem::take(&mut self.followed);
            self.adopting += children.len();
            self.sampler.ask(Request::Adopt(children));
        }
    }

    /// Traced processes that may still live: the targets and followed children not known to
    /// have exited, and children whose adoption is under way.
    pub(super) fn live_targets(&self) -> usize {
        let attribution = &self.model.attribution;
        let alive = self
            .sampled
            .iter()
            .filter(|&&pid| attribution.process_by_pid(pid).is_some_and(|p| !p.exited))
            .count();
        alive + self.followed.len() + self.adopting
    }
}
