//! The signals that stop tracing with a report instead of killing memtrace: SIGINT (Ctrl-C),
//! SIGTERM, and SIGHUP (the terminal or ssh session went away).
//!
//! They are blocked from the first instruction of `main` ([`block`]) until the session listens
//! for them ([`Signals::listen`]): one that arrives while memtrace starts or attaches waits, and
//! then ends the run with its report instead of killing it or being lost.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

const STOPPING: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Set by the signal handler itself, not by the runtime.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether a stopping signal has arrived. The runtime learns of a signal only when it polls
/// its driver, which a loop busy draining a flood may not let it do for a long while: this is
/// read between records instead (a Ctrl-C under a flood once waited for minutes).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Holds SIGINT, SIGTERM and SIGHUP pending until [`Signals::listen`]. Call first in `main`,
/// before any thread exists (threads inherit the mask).
pub fn block() {
    set_mask(libc::SIG_BLOCK);
}

fn set_mask(how: libc::c_int) {
    // SAFETY: a zeroed sigset_t is a valid argument to sigemptyset; plain libc calls on it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in STOPPING {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Created once: re-creating signal streams per loop iteration can miss a signal.
pub struct Signals {
    pub interrupt: Signal,
    pub terminate: Signal,
    pub hangup: Signal,
}

impl Signals {
    /// Installs the handlers, then lets the held signals in: one already pending is delivered
    /// now and stops the session at its first turn.
    pub fn listen() -> anyhow::Result<Self> {
        for signal in STOPPING {
            // SAFETY: the action only stores to an atomic, which is async-signal-safe; the
            // registry chains it with the runtime's handler for the same signal.
            unsafe {
                signal_hook_registry::register(signal, || REQUESTED.store(true, Ordering::Relaxed))
            }
            .with_context(|| format!("cannot handle signal {signal}"))?;
        }
        let signals = Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        };
        set_mask(libc::SIG_UNBLOCK);
        Ok(signals)
    }
}

/// After the first stop: a second Ctrl-C (or SIGTERM) ends memtrace at once, without waiting
/// for the report.
pub fn second_one_kills() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: restores the default disposition; no handler of ours is involved.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}
