//! Naming stacks off the event loop. Reading a module's symbols and DWARF the first time can
//! take a while; meanwhile the loop must go on placing new stacks in their processes' files
//! before those processes exit (see [`super::symbols`]). A thread of its own names what the
//! loop placed and hands the names back.

use std::{
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use memtrace_common::stacks::{Frames, StackRef};

use super::symbols::{Located, Stack, Symbols};

/// What to name.
enum Job {
    User(StackRef, Box<Located>),
    Kernel(StackRef, Box<Frames>),
}

/// The naming thread: jobs in, names out.
pub struct Namer {
    jobs: Option<Sender<Job>>,
    names: Receiver<(StackRef, Stack)>,
    thread: Option<JoinHandle<()>>,
    /// Jobs sent whose names have not come back.
    pending: usize,
}

impl Namer {
    /// Starts the thread; None when no thread can be started (stacks then stay unnamed, and
    /// say so).
    pub fn start() -> Option<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, names) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("memtrace-names".to_owned())
            .spawn(move || {
                let mut symbols = Symbols::default();
                for job in inbox {
                    let named = match job {
                        Job::User(stack, located) => (stack, symbols.name(&located)),
                        Job::Kernel(stack, frames) => (stack, symbols.kernel(&frames)),
                    };
                    if outbox.send(named).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Self {
            jobs: Some(jobs),
            names,
            thread: Some(thread),
            pending: 0,
        })
    }

    /// Queues a user stack placed in its process's files.
    pub fn user(&mut self, stack: StackRef, located: Located) {
        self.send(Job::User(stack, Box::new(located)));
    }

    /// Queues a kernel stack.
    pub fn kernel(&mut self, stack: StackRef, frames: Frames) {
        self.send(Job::Kernel(stack, Box::new(frames)));
    }

    fn send(&mut self, job: Job) {
        if let Some(jobs) = &self.jobs
            && jobs.send(job).is_ok()
        {
            self.pending += 1;
        }
    }

    /// The names ready now.
    pub fn ready(&mut self) -> Vec<(StackRef, Stack)> {
        let names: Vec<_> = self.names.try_iter().collect();
        self.pending = self.pending.saturating_sub(names.len());
        names
    }

    /// Every name still to come, waiting at most `patience` for them.
    pub fn rest(&mut self, patience: Duration) -> Vec<(StackRef, Stack)> {
        let deadline = Instant::now() + patience;
        let mut names = self.ready();
        while self.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.names.recv_timeout(left) {
                Ok(named) => {
                    self.pending -= 1;
                    names.push(named);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        names
    }
}

impl Drop for Namer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once its current job is done; it is not waited
        // for beyond that.
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && thread.is_finished()
        {
            let _ = thread.join();
        }
    }
}
