//! Draining the ring buffer: bounded batches into the model, each record shown to the mode,
//! cut short by a stopping signal until the window ends, then drained whole.

use super::{MAX_DRAIN, Mode, Session, sampler::Request, signals};
use crate::{
    kernel::procfs,
    model::event::{self, Event},
};

impl Session {
    /// Decodes what waits in the ring buffer into the model, and shows each event to the mode.
    /// At most [`MAX_DRAIN`] records a call (see [`drain_bounded`]).
    pub(super) fn drain(&mut self, mode: &mut impl Mode) -> usize {
        let page_size = self.page_size;
        let ring = self.events.get_mut();
        // Until the window ends, a stopping signal cuts the drain short: the loop then stops
        // at once, and what is left is drained after the programs are detached.
        let cut = !self.window_over;
        let batch = drain_bounded(|| {
            if cut && signals::requested() {
                return None;
            }
            ring.next().map(|record| event::decode(&record, page_size))
        });
        let drained = batch.len();
        for decoded in batch {
            match decoded {
                Ok(mut event) => {
                    self.enrich(&mut event);
                    self.model.record(&event);
                    if let Event::OomKill(kill) = event {
                        // Shown once the worker has read what /proc still says of the victim.
                        self.sampler.ask(Request::OomVictim {
                            tid: kill.tid,
                            ts_ns: kill.ts_ns,
                            trigger_memcg_id: kill.trigger_memcg_id,
                        });
                        self.pending_ooms.push(*kill);
                    } else {
                        if let Event::Totals(flush) = &event {
                            self.start_from_totals(flush.tgid, flush.totals.start_ns);
                        }
                        mode.event(self, &event);
                    }
                }
                Err(_) => self.model.undecodable += 1,
            }
        }
        let fresh = self.model.attribution.take_fresh();
        if !fresh.is_empty() {
            self.sampler.ask(Request::Identify(fresh));
        }
        self.out.flush();
        drained
    }

    /// Drains what was committed before a sample: at most what the ring can hold, so a flood
    /// that refills it meanwhile cannot keep memtrace from sampling (64 batches once took tens
    /// of seconds under a flood, with signals and scrapes waiting).
    pub(super) fn drain_remaining(&mut self, mode: &mut impl Mode) {
        let mut left = self.ring_records;
        while left > 0 {
            let drained = self.drain(mode);
            if drained < MAX_DRAIN {
                return;
            }
            left = left.saturating_sub(drained);
        }
    }

    /// Adds what the kernel record lacks: the target of a process_madvise, read at once from
    /// the caller's fdinfo (a rare call, whose pidfd the caller may close any moment); the
    /// start time the kernel gave at exit.
    pub(super) fn enrich(&mut self, event: &mut Event) {
        if let Event::Spawn(spawn) = event
            && spawn.followed != 0
        {
            self.followed.push(spawn.child);
        }
        // process_madvise advises another process's memory: charge the target.
        if let Event::Madvise(m) = event
            && let Some(target) = m.pidfd.and_then(|fd| procfs::pidfd_target(m.caller, fd))
        {
            m.tgid = target;
            m.target_known = true;
        }
        if let Event::ThreadExit(exit) = event
            && exit.process_start_ns != 0
            && let Some(ticks) = procfs::boot_ns_to_ticks(exit.process_start_ns)
        {
            self.model
                .attribution
                .set_start_time_from_kernel(exit.tgid, ticks);
        }
        if let Event::StackSeen(stack) = event {
            self.locate_stack(*stack);
        }
    }

    /// The window ends here: with the programs detached the ring stops filling, so draining it
    /// whole ends, and a flood cannot hold the report back.
    pub(super) fn end_window(&mut self, mode: &mut impl Mode) {
        self.tracer.detach();
        self.window_over = true;
        while self.drain(mode) == MAX_DRAIN {}
    }
}

/// Takes decoded records until `MAX_DRAIN` were taken or none is left: under a flood the
/// producers can outpace us, and an unbounded loop would starve the timers (samples, live
/// view, stop conditions) and signals, and grow the batch without limit.
pub(super) fn drain_bounded<T>(mut next: impl FnMut() -> Option<T>) -> Vec<T> {
    let mut batch = Vec::new();
    while batch.len() < MAX_DRAIN
        && let Some(item) = next()
    {
        batch.push(item);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain stops at its bound whatever waits (the `memtrace reclaim` loop once drained
    /// without one, so a flood could starve its timers and signals); it is the only drain.
    #[test]
    fn a_drain_is_bounded() {
        let mut flood = 0..3 * MAX_DRAIN;
        assert_eq!(drain_bounded(|| flood.next()).len(), MAX_DRAIN);
        assert_eq!(
            flood.len(),
            2 * MAX_DRAIN,
            "records beyond the bound stay in the ring"
        );
        let mut few = 0..3;
        assert_eq!(drain_bounded(|| few.next()).len(), 3);
    }
}
