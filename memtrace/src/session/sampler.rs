//! The session's blocking worker: every read of /proc and cgroupfs made while tracing happens
//! on its own thread, never on the runtime thread that drains the ring buffer and serves
//! /metrics. The loop asks, goes on, and applies each answer when it comes back; an answer
//! says which entry it is about (pid and entry serial) and what start time /proc showed, so
//! the model applies it only if it still concerns that process.
//!
//! Requests about one process at a time (a process just met, an OOM victim before it is reaped)
//! are urgent: the worker answers them between the processes of a long periodic look too.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::mpsc,
    thread,
};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::{
    kernel::{
        cgroup::Cgroups, clock::monotonic_ns, memcg::MemcgUsage, pidns, procfs, status::Resident,
        system,
    },
    model::{
        attribution::{Fresh, Identity, Reading},
        event::{CgroupOf, VictimFacts},
    },
};

/// Urgent requests are looked at after every this many processes of a periodic look.
const URGENT_EVERY: usize = 16;

/// A process of a periodic look, and what to read of it.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub pid: u32,
    pub serial: u64,
    /// Its threads' fault counters.
    pub faults: bool,
    /// Its smaps_rollup, or status where that is refused (named targets).
    pub smaps: bool,
}

/// What the loop asks.
#[derive(Debug)]
pub enum Request {
    /// Processes just met: name, start time, cgroup (or their parent's, if they are gone).
    Identify(Vec<Fresh>),
    /// Children a traced process forked (`--follow`): which are processes (forks of threads
    /// are not), and what memtrace reads of a target when it first sees it.
    Adopt(Vec<u32>),
    /// The periodic look at each process, /proc/vmstat, and the own accounting of the memory
    /// cgroups at `memcg` (paths; `--by container|cgroup`).
    Sample {
        probes: Vec<Probe>,
        memcg: Vec<String>,
    },
    /// An OOM victim task, read before it is reaped (see `procfs::oom_victim`).
    OomVictim {
        tid: u32,
        ts_ns: u64,
        trigger_memcg_id: Option<u64>,
    },
    /// A memory-cgroup id a kernel program reported for entry `serial` of `pid`.
    NameMemcg { pid: u32, serial: u64, id: u64 },
}

impl Request {
    fn urgent(&self) -> bool {
        !matches!(self, Self::Sample { .. })
    }
}

/// What a target is when memtrace first sees it.
#[derive(Clone, Debug)]
pub struct FirstSight {
    pub identity: Identity,
    pub program_break: Option<u64>,
    pub resident: Option<Resident>,
    pub threads: Vec<(u32, u64, u64)>,
}

/// What the worker found.
#[derive(Debug)]
pub enum Answer {
    Identified(Vec<(u32, u64, Identity)>),
    /// Per pid asked, what it is if it is a live process.
    Adopted(Vec<(u32, Option<FirstSight>)>),
    Sampled {
        readings: Vec<(u32, u64, Reading)>,
        vmstat: BTreeMap<String, u64>,
        /// Per memory cgroup path asked, its accounting (those still there).
        memcg: Vec<(String, MemcgUsage)>,
    },
    OomVictim {
        tid: u32,
        ts_ns: u64,
        facts: VictimFacts,
    },
    NamedMemcg {
        pid: u32,
        serial: u64,
        path: Option<String>,
    },
}

/// The loop's handle on the worker.
pub struct Sampler {
    requests: mpsc::Sender<Request>,
    answers: UnboundedReceiver<Answer>,
    /// Requests not answered yet.
    outstanding: usize,
}

impl Sampler {
    /// Starts the worker thread; it ends when the handle is dropped.
    pub fn start(cgroups: Cgroups) -> std::io::Result<Self> {
        let (requests, inbox) = mpsc::channel();
        let (outbox, answers) = unbounded_channel();
        thread::Builder::new()
            .name("memtrace-proc".into())
            .spawn(move || {
                Worker {
                    inbox,
                    outbox,
                    cgroups,
                }
                .run()
            })?;
        Ok(Self {
            requests,
            answers,
            outstanding: 0,
        })
    }

    pub fn ask(&mut self, request: Request) {
        if self.requests.send(request).is_ok() {
            self.outstanding += 1;
        }
    }

    /// The next answer; never resolves while none is due.
    pub async fn next(&mut self) -> Answer {
        if self.outstanding == 0 {
            return std::future::pending().await;
        }
        match self.answers.recv().await {
            Some(answer) => {
                self.outstanding -= 1;
                answer
            }
            // The worker is gone (it never panics on bad input; this is a bug): nothing more
            // will come.
            None => {
                self.outstanding = 0;
                std::future::pending().await
            }
        }
    }

    /// Requests not answered yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }
}

struct Worker {
    inbox: mpsc::Receiver<Request>,
    outbox: UnboundedSender<Answer>,
    cgroups: Cgroups,
}

impl Worker {
    fn run(mut self) {
        let mut queued: VecDeque<Request> = VecDeque::new();
        loop {
            let request = match queued.pop_front() {
                Some(request) => request,
                None => match self.inbox.recv() {
                    Ok(request) => request,
                    Err(_) => return,
                },
            };
            let answer = match request {
                Request::Sample { probes, memcg } => self.sample(&probes, &memcg, &mut queued),
                other => self.answer(other),
            };
            if self.outbox.send(answer).is_err() {
                return;
            }
        }
    }

    /// The periodic look, answering urgent requests that arrive meanwhile.
    fn sample(
        &mut self,
        probes: &[Probe],
        memcg: &[String],
        queued: &mut VecDeque<Request>,
    ) -> Answer {
        let mut readings = Vec::with_capacity(probes.len());
        for (i, probe) in probes.iter().enumerate() {
            if i % URGENT_EVERY == 0 {
                self.serve_urgent(queued);
            }
            readings.push((probe.pid, probe.serial, read(probe)));
        }
        self.serve_urgent(queued);
        let hierarchy = self.cgroups.hierarchy();
        let memcg = memcg
            .iter()
            .filter_map(|path| {
                let usage = MemcgUsage::read(&hierarchy?.dir(path))?;
                Some((path.clone(), usage))
            })
            .collect();
        Answer::Sampled {
            readings,
            vmstat: system::vmstat(),
            memcg,
        }
    }

    fn serve_urgent(&mut self, queued: &mut VecDeque<Request>) {
        while let Ok(request) = self.inbox.try_recv() {
            if request.urgent() {
                let answer = self.answer(request);
                let _ = self.outbox.send(answer);
            } else {
                queued.push_back(request);
            }
        }
    }

    fn answer(&mut self, request: Request) -> Answer {
        match request {
            Request::Identify(fresh) => Answer::Identified(
                fresh
                    .into_iter()
                    .map(|f| {
                        let mut identity = identify(f.pid, &mut self.cgroups);
                        if identity.cgroup.is_none() {
                            // Gone already: where the kernel saw it exec, if it did.
                            identity.cgroup =
                                f.memcg_at_exec.and_then(|id| self.cgroups.path_of(id).ok());
                        }
                        if identity.cgroup.is_none() {
                            identity.parent_cgroup =
                                f.parent.and_then(|parent| self.cgroups.of_process(parent));
                        }
                        (f.pid, f.serial, identity)
                    })
                    .collect(),
            ),
            Request::Adopt(pids) => Answer::Adopted(
                pids.into_iter()
                    .map(|pid| (pid, first_sight(pid, &mut self.cgroups)))
                    .collect(),
            ),
            Request::Sample { probes, memcg } => {
                let mut none = VecDeque::new();
                self.sample(&probes, &memcg, &mut none)
            }
            Request::OomVictim {
                tid,
                ts_ns,
                trigger_memcg_id,
            } => Answer::OomVictim {
                tid,
                ts_ns,
                facts: oom_victim(tid, trigger_memcg_id, &mut self.cgroups),
            },
            Request::NameMemcg { pid, serial, id } => Answer::NamedMemcg {
                pid,
                serial,
                path: self.cgroups.path_of(id).ok(),
            },
        }
    }
}

/// What /proc says about an OOM victim task while it is (at best) a zombie: its process, and
/// its memory cgroup, or once it is reaped the triggering task's (`trigger_memcg_id`, the
/// kernfs id the kernel program read).
fn oom_victim(tid: u32, trigger_memcg_id: Option<u64>, cgroups: &mut Cgroups) -> VictimFacts {
    let cgroup = match cgroups.of_process(tid) {
        Some(path) => Some((path, CgroupOf::Victim)),
        None => trigger_memcg_id
            .and_then(|id| cgroups.path_of(id).ok())
            .map(|path| (path, CgroupOf::Trigger)),
    };
    VictimFacts {
        tgid: procfs::tgid_of(tid),
        cgroup,
    }
}

/// Name, start time, cgroup and pid in its own namespace of a process. The start time is read
/// before and after: if the pid passed to another process in between, nothing but that later
/// start time is kept.
pub fn identify(pid: u32, cgroups: &mut Cgroups) -> Identity {
    let Some(start) = procfs::start_ticks(pid) else {
        return Identity::default();
    };
    // Taken before the name is read: an exec later than this is later than the name.
    let comm_read_ns = monotonic_ns();
    let comm = procfs::comm(pid);
    let cgroup = cgroups.of_process(pid);
    let nspid = pidns::pid_in_own_namespace(pid);
    if procfs::start_ticks(pid) != Some(start) {
        return Identity {
            start_ticks: procfs::start_ticks(pid),
            ..Identity::default()
        };
    }
    Identity {
        comm,
        comm_read_ns,
        start_ticks: Some(start),
        cgroup,
        parent_cgroup: None,
        nspid,
    }
}

/// What memtrace reads of a target when it first sees it; `None` unless `pid` is a live
/// process (a forked thread's tid is not one).
pub fn first_sight(pid: u32, cgroups: &mut Cgroups) -> Option<FirstSight> {
    procfs::is_live_process(pid).then(|| read_first_sight(pid, cgroups))
}

/// What memtrace reads of a target when it first sees it (as far as it still can).
pub fn read_first_sight(pid: u32, cgroups: &mut Cgroups) -> FirstSight {
    FirstSight {
        identity: identify(pid, cgroups),
        program_break: procfs::program_break(pid),
        resident: Resident::read(pid),
        threads: procfs::thread_faults(pid),
    }
}

/// One process of a periodic look.
fn read(probe: &Probe) -> Reading {
    let Some((start, running)) = procfs::start_and_running(probe.pid) else {
        return Reading::default();
    };
    Reading {
        start_ticks: Some(start),
        alive: running,
        threads: probe.faults.then(|| procfs::thread_faults(probe.pid)),
        resident: probe.smaps.then(|| Resident::read(probe.pid)).flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker answers on its own thread; an urgent request is not held up by a long look.
    #[tokio::test(flavor = "current_thread")]
    async fn the_worker_answers_about_this_process() {
        let me = std::process::id();
        let mut sampler = Sampler::start(Cgroups::new()).expect("worker thread");
        let probe = Probe {
            pid: me,
            serial: 7,
            faults: true,
            smaps: true,
        };
        sampler.ask(Request::Sample {
            probes: vec![probe; 200],
            memcg: Vec::new(),
        });
        let fresh = |pid, serial| Fresh {
            pid,
            serial,
            parent: Some(me),
            memcg_at_exec: None,
        };
        sampler.ask(Request::Identify(vec![fresh(me, 3), fresh(0, 4)]));
        let mut identified = None;
        let mut sampled = None;
        while sampler.outstanding() > 0 {
            match sampler.next().await {
                Answer::Identified(list) => identified = Some(list),
                Answer::Sampled { readings, .. } => sampled = Some(readings),
                other => panic!("unexpected {other:?}"),
            }
        }
        let identified = identified.expect("identified");
        assert_eq!(identified[0].2.comm, procfs::comm(me));
        assert_eq!(identified[0].2.start_ticks, procfs::start_ticks(me));
        let gone = &identified[1];
        assert_eq!((gone.0, gone.1, &gone.2.comm), (0, 4, &None), "no such pid");
        assert_eq!(
            gone.2.parent_cgroup,
            Cgroups::new().of_process(me),
            "its parent's"
        );
        let (pid, serial, reading) = &sampled.expect("sampled")[0];
        assert_eq!((*pid, *serial, reading.alive), (me, 7, true));
        assert!(reading.threads.as_ref().is_some_and(|t| !t.is_empty()));
        assert!(reading.resident.is_some());
        assert!(first_sight(me, &mut Cgroups::new()).is_some());
    }
}
