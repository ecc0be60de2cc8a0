//! One boot of a guest that runs a job's steps: waits for it to boot, follows each step with a
//! time limit, and gathers each step's exit status, time and output. Every wait is bounded, so
//! a guest that never boots, hangs or dies ends the session with a reason instead of hanging.

use std::time::{Duration, Instant};

use super::{
    job::step_index,
    qemu::{Event, Machine, Silence},
};

/// A cold boot takes 2–5 s under TCG; much more means it is stuck.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// On top of a step's own limit (enforced in the guest), before the host gives up on it.
const STEP_GRACE: Duration = Duration::from_secs(60);
/// From "done" to QEMU's exit.
const POWER_OFF_GRACE: Duration = Duration::from_secs(60);

pub struct StepResult {
    /// Its exit status; `None` if it never finished (the guest stopped or hung).
    pub status: Option<i32>,
    pub duration: Duration,
    pub output: String,
}

pub struct Session {
    /// `uname -r` in the guest, once booted.
    pub release: Option<String>,
    /// From starting QEMU to init's "booted".
    pub boot: Option<Duration>,
    /// From "booted" to the end.
    pub run: Duration,
    /// One per step of the job, in order (unfinished ones included).
    pub steps: Vec<StepResult>,
    /// Why the session ended early or badly.
    pub problem: Option<String>,
}

/// What the caller may watch as it happens.
pub enum Progress<'a> {
    Line(&'a str),
    Finished(usize, &'a StepResult),
}

/// Boots `machine` and runs its job's `steps` steps, each given `step_timeout` in the guest.
pub fn run(
    machine: &Machine,
    steps: usize,
    step_timeout: Duration,
    watch: impl FnMut(Progress),
) -> anyhow::Result<Session> {
    let mut guest = machine.start()?;
    let mut follower = Follower::new(steps, guest.started, watch);
    loop {
        // Until it boots, the guest gets the boot's time; then each step its own plus grace.
        let timeout = if follower.booted_at.is_none() {
            BOOT_TIMEOUT
        } else {
            step_timeout + STEP_GRACE
        };
        match guest.next(timeout) {
            Ok(Event::Done) => {
                if let Err(e) = guest.finish(POWER_OFF_GRACE) {
                    follower.session.problem = Some(format!("{e:#}"));
                }
                break;
            }
            Ok(Event::Error(message)) => {
                follower.session.problem = Some(format!("guest setup failed: {message}"));
                break;
            }
            Ok(event) => follower.on(event),
            Err(silence) => {
                follower.session.problem = Some(follower.explain(silence, timeout));
                break;
            }
        }
    }
    Ok(follower.finish())
}

/// What is known of a session while it runs.
struct Follower<W> {
    session: Session,
    started: Instant,
    booted_at: Option<Instant>,
    /// The step running, and since when.
    current: Option<(usize, Instant)>,
    watch: W,
}

impl<W: FnMut(Progress)> Follower<W> {
    fn new(steps: usize, started: Instant, watch: W) -> Self {
        let unfinished = || StepResult {
            status: None,
            duration: Duration::ZERO,
            output: String::new(),
        };
        Self {
            session: Session {
                release: None,
                boot: None,
                run: Duration::ZERO,
                steps: (0..steps).map(|_| unfinished()).collect(),
                problem: None,
            },
            started,
            booted_at: None,
            current: None,
            watch,
        }
    }

    fn on(&mut self, event: Event) {
        match event {
            Event::Booted { release } => {
                self.booted_at = Some(Instant::now());
                self.session.boot = Some(self.started.elapsed());
                self.session.release = Some(release);
            }
            Event::Start(name) => {
                let steps = self.session.steps.len();
                self.current = step_index(&name)
                    .filter(|&i| i < steps)
                    .map(|i| (i, Instant::now()));
            }
            Event::Output(line) => {
                (self.watch)(Progress::Line(&line));
                if let Some((index, _)) = self.current {
                    let output = &mut self.session.steps[index].output;
                    output.push_str(&line);
                    output.push('\n');
                }
            }
            Event::End { status, .. } => {
                if let Some((index, started)) = self.current.take() {
                    let step = &mut self.session.steps[index];
                    step.status = Some(status);
                    step.duration = started.elapsed();
                    (self.watch)(Progress::Finished(index, step));
                }
            }
            Event::Done | Event::Error(_) => {}
        }
    }

    /// Why nothing came for `waited`.
    fn explain(&self, silence: Silence, waited: Duration) -> String {
        match (silence, self.booted_at) {
            (Silence::Stopped, None) => "the guest stopped before it booted".into(),
            (Silence::Stopped, Some(_)) => "the guest stopped before finishing".into(),
            (Silence::TimedOut, None) => format!("no boot within {waited:?}"),
            (Silence::TimedOut, Some(_)) => {
                format!("the guest stopped answering (nothing for {waited:?})")
            }
        }
    }

    fn finish(mut self) -> Session {
        if let Some((index, started)) = self.current {
            self.session.steps[index].duration = started.elapsed();
        }
        self.session.run = self.booted_at.map_or(Duration::ZERO, |at| at.elapsed());
        self.session
    }
}
