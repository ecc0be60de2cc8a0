//! The signals that stop tracing with a report instead of killing memtrace.

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Created once, before anything is attached: a signal sent right after "attached" is printed
/// must stop tracing with a report, and re-creating signal streams per loop iteration can miss
/// a signal.
pub struct Signals {
    pub interrupt: Signal,
    pub terminate: Signal,
}

impl Signals {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }
}
