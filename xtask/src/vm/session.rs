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
    mut watch: impl FnMut(Progress),
) -> anyhow::Result<Session> {
    let mut guest = machine.start()?;
    let mut session = Session {
        release: None,
        boot: None,
        run: Duration::ZERO,
        steps: (0..steps)
            .map(|_| StepResult {
                status: None,
                duration: Duration::ZERO,
                output: String::new(),
            })
            .collect(),
        problem: None,
    };
    let mut current: Option<(usize, Instant)> = None;
    let mut booted_at = None;
    loop {
        let timeout = if booted_at.is_none() {
            BOOT_TIMEOUT
        } else {
            step_timeout + STEP_GRACE
        };
        let event = match guest.next(timeout) {
            Ok(event) => event,
            Err(silence) => {
                session.problem = Some(match (silence, booted_at) {
                    (Silence::Stopped, None) => "the guest stopped before it booted".into(),
                    (Silence::Stopped, Some(_)) => "the guest stopped before finishing".into(),
                    (Silence::TimedOut, None) => format!("no boot within {BOOT_TIMEOUT:?}"),
                    (Silence::TimedOut, Some(_)) => {
                        format!("the guest stopped answering (nothing for {timeout:?})")
                    }
                });
                break;
            }
        };
        match event {
            Event::Booted { release } => {
                booted_at = Some(Instant::now());
                session.boot = Some(guest.started.elapsed());
                session.release = Some(release);
            }
            Event::Start(name) => {
                current = step_index(&name)
                    .filter(|&i| i < steps)
                    .map(|i| (i, Instant::now()));
            }
            Event::Output(line) => {
                watch(Progress::Line(&line));
                if let Some((index, _)) = current {
                    let output = &mut session.steps[index].output;
                    output.push_str(&line);
                    output.push('\n');
                }
            }
            Event::End { status, .. } => {
                if let Some((index, started)) = current.take() {
                    let step = &mut session.steps[index];
                    step.status = Some(status);
                    step.duration = started.elapsed();
                    watch(Progress::Finished(index, step));
                }
            }
            Event::Done => {
                if let Err(e) = guest.finish(POWER_OFF_GRACE) {
                    session.problem = Some(format!("{e:#}"));
                }
                break;
            }
            Event::Error(message) => {
                session.problem = Some(format!("guest setup failed: {message}"));
                break;
            }
        }
    }
    if let Some((index, started)) = current {
        session.steps[index].duration = started.elapsed();
    }
    session.run = booted_at.map_or(Duration::ZERO, |at| at.elapsed());
    Ok(session)
}
