//! The Go runtime's view next to the kernel's: what of RSS the runtime accounts for, what it
//! released that is still resident (MADV_FREE leaves it as LazyFree), what is left over, and one
//! line saying why RSS is what it is.
//!
//! The runtime tracks what it has mapped and not released (`ready` = Sys − HeapReleased), never
//! residency. So, for anonymous memory:
//!
//! ```text
//! Anonymous = ready (resident part)
//!           + released by the runtime but still resident (≤ min(LazyFree, HeapReleased))
//!           + residual: anonymous memory the runtime does not know of (cgo/C malloc, C thread
//!             stacks, written .data/.bss, other MADV_FREE users) when > 0; ready memory
//!             never touched or swapped out when < 0
//! ```
//!
//! File-backed and shared pages (the binary's text and data) are outside the runtime's figures
//! and shown on their own.

use schemars::JsonSchema;
use serde::Serialize;

use super::heap::{Figures, Reason};
use crate::{
    kernel::procfs::SmapsRollup,
    units::{human_bytes, signed_bytes},
};

/// A part other than the heap in use this large a share of RSS is what makes RSS high.
const DOMINANT_PERCENT: u64 = 25;

/// The Go runtime's own view of a process: its figures (or why there are none) and their
/// reconciliation with the kernel's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeView {
    /// How the runtime's globals and fields were found (`DWARF`, …); `None` when they were not.
    pub located_by: Option<String>,
    /// Something to know about how they were found.
    pub note: Option<String>,
    /// `None` with a `reason`.
    pub figures: Option<Figures>,
    pub reason: Option<Reason>,
    /// `None` without figures, or without the kernel's view (the process exited).
    pub reconciliation: Option<Reconciliation>,
}

/// The runtime's figures next to smaps_rollup, with the arithmetic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reconciliation {
    pub rss: u64,
    pub anonymous: u64,
    /// Rss − Anonymous: file-backed and shared pages (the binary, mapped files, shmem).
    pub file: u64,
    pub lazy_free: u64,
    pub swap: u64,
    /// The runtime's Sys − HeapReleased.
    pub ready: u64,
    /// Released by the runtime and still resident: min(LazyFree, HeapReleased).
    pub released_resident: u64,
    /// Anonymous − ready − released_resident.
    pub residual: i64,
    /// Bytes released with MADV_FREE while memtrace watched.
    pub madv_free_seen: u64,
    /// The arithmetic, in words.
    pub arithmetic: String,
    /// What the residual's sign means here.
    pub residual_meaning: String,
    /// One line: why RSS is what it is.
    pub verdict: String,
}

/// The runtime view from what was read (`figures`) and the kernel's view at the same moment.
pub fn view(
    located_by: Option<String>,
    note: Option<String>,
    figures: Result<Figures, Reason>,
    smaps: Option<SmapsRollup>,
    madv_free_seen: u64,
) -> RuntimeView {
    match figures {
        Ok(figures) => RuntimeView {
            located_by,
            note,
            reconciliation: smaps.map(|smaps| reconcile(&figures, smaps, madv_free_seen)),
            figures: Some(figures),
            reason: None,
        },
        Err(reason) => RuntimeView {
            located_by,
            note,
            figures: None,
            reason: Some(reason),
            reconciliation: None,
        },
    }
}

/// The arithmetic and the verdict.
pub fn reconcile(f: &Figures, smaps: SmapsRollup, madv_free_seen: u64) -> Reconciliation {
    let ready = f.ready.bytes;
    let released_resident = smaps.lazy_free.min(f.heap_released.bytes);
    let residual = i128::from(smaps.anonymous) - i128::from(ready) - i128::from(released_resident);
    let residual =
        i64::try_from(residual).unwrap_or(if residual < 0 { i64::MIN } else { i64::MAX });
    let file = smaps.rss.saturating_sub(smaps.anonymous);
    let arithmetic = format!(
        "anonymous {} = Go ready (Sys − HeapReleased) {} + released by Go, still resident {} \
         + residual {}",
        human_bytes(smaps.anonymous),
        human_bytes(ready),
        human_bytes(released_resident),
        signed_bytes(residual.into()),
    );
    Reconciliation {
        rss: smaps.rss,
        anonymous: smaps.anonymous,
        file,
        lazy_free: smaps.lazy_free,
        swap: smaps.swap,
        ready,
        released_resident,
        residual,
        madv_free_seen,
        arithmetic,
        residual_meaning: residual_meaning(residual, smaps, released_resident),
        verdict: verdict(f, smaps, released_resident, residual),
    }
}

fn residual_meaning(residual: i64, smaps: SmapsRollup, released_resident: u64) -> String {
    let amount = human_bytes(residual.unsigned_abs());
    let mut meaning = match residual {
        0 => "nothing is left over: the Go runtime accounts for all anonymous memory".to_owned(),
        r if r > 0 => format!(
            "{amount} of anonymous memory is not the Go runtime's: cgo/C allocations, C thread \
             stacks, written .data/.bss, or other mappings"
        ),
        _ => format!(
            "{amount} of the runtime's ready memory is not resident: never touched, or swapped \
             out"
        ),
    };
    if smaps.lazy_free > released_resident {
        meaning.push_str(&format!(
            "; {} of LazyFree is more than the runtime released: something else uses \
             MADV_FREE too",
            human_bytes(smaps.lazy_free - released_resident)
        ));
    }
    if smaps.swap > 0 {
        meaning.push_str(&format!("; {} is swapped out", human_bytes(smaps.swap)));
    }
    meaning
}

/// "RSS 900 MiB is high because 450 MiB released with MADV_FREE is still resident as LazyFree;
/// the heap in use is 300 MiB", or whichever part explains RSS.
fn verdict(f: &Figures, smaps: SmapsRollup, released_resident: u64, residual: i64) -> String {
    let heap_idle_kept = f.heap_idle.bytes.saturating_sub(f.heap_released.bytes);
    let metadata = [
        f.mspan_sys,
        f.mcache_sys,
        f.buck_hash_sys,
        f.gc_sys,
        f.other_sys,
    ]
    .iter()
    .map(|x| x.bytes)
    .sum::<u64>();
    let parts: [(u64, &str); 6] = [
        (
            released_resident,
            "released with MADV_FREE is still resident as LazyFree (the kernel reclaims it \
             only under memory pressure)",
        ),
        (
            heap_idle_kept,
            "is idle heap the runtime has not returned to the OS yet (its scavenger returns it \
             over minutes; debug.FreeOSMemory at once)",
        ),
        (
            u64::try_from(residual).unwrap_or(0),
            "is anonymous memory outside the Go runtime (cgo/C allocations, C thread stacks)",
        ),
        (f.stack_sys.bytes, "is goroutine stacks"),
        (
            metadata,
            "is runtime metadata (spans, GC work buffers and bitmaps, profiling buckets, other)",
        ),
        (
            smaps.rss.saturating_sub(smaps.anonymous),
            "is file-backed (the binary and mapped files)",
        ),
    ];
    let heap = human_bytes(f.heap_inuse.bytes);
    let rss = human_bytes(smaps.rss);
    let Some(&(bytes, why)) = parts.iter().max_by_key(|(bytes, _)| *bytes) else {
        return format!("RSS {rss}; the heap in use is {heap}");
    };
    let share = |part: u64| part.saturating_mul(100) / smaps.rss.max(1);
    if share(bytes) >= DOMINANT_PERCENT {
        format!(
            "RSS {rss} is high because {} {why}; the heap in use is {heap}",
            human_bytes(bytes)
        )
    } else if share(f.heap_inuse.bytes) >= 50 {
        format!("RSS {rss} is mostly the Go heap in use ({heap})")
    } else {
        format!(
            "RSS {rss} has no dominant part: the heap in use is {heap}; the largest other part, \
             {} {why}",
            human_bytes(bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::golang::heap::{Figure, How};

    const MIB: u64 = 1 << 20;

    fn figures(heap_inuse: u64, heap_free: u64, heap_released: u64) -> Figures {
        let word = |bytes| Figure {
            bytes,
            how: How::Word,
        };
        let stacks = MIB / 2;
        let sys = heap_inuse + heap_free + heap_released + stacks + 3 * MIB;
        Figures {
            heap_inuse: word(heap_inuse),
            heap_idle: word(heap_free + heap_released),
            heap_released: word(heap_released),
            heap_sys: word(heap_inuse + heap_free + heap_released),
            ready: word(sys - heap_released),
            stack_inuse: word(stacks),
            stack_sys: word(stacks),
            mspan_inuse: word(0),
            mspan_sys: word(MIB),
            mcache_inuse: word(0),
            mcache_sys: word(0),
            buck_hash_sys: word(0),
            gc_sys: word(MIB),
            other_sys: word(MIB),
            sys: word(sys),
            heap_alloc: word(heap_inuse),
            heap_live: word(heap_inuse),
            heap_marked: word(heap_inuse),
            next_gc: word(2 * heap_inuse),
            gogc: Some(100),
            gomemlimit: None,
            num_gc: 3,
            last_gc_unix_ns: None,
        }
    }

    fn smaps(rss: u64, anonymous: u64, lazy_free: u64) -> SmapsRollup {
        SmapsRollup {
            rss,
            anonymous,
            lazy_free,
            ..SmapsRollup::default()
        }
    }

    #[test]
    fn madv_free_left_in_rss_is_the_verdict() {
        // 300 MiB in use, 450 MiB released with MADV_FREE and still resident.
        let f = figures(300 * MIB, 0, 450 * MIB);
        let r = reconcile(&f, smaps(900 * MIB, 895 * MIB, 450 * MIB), 450 * MIB);
        assert_eq!(r.released_resident, 450 * MIB);
        assert_eq!(r.ready, 300 * MIB + MIB / 2 + 3 * MIB);
        assert_eq!(
            r.residual,
            (895 * MIB) as i64 - (r.ready + 450 * MIB) as i64
        );
        assert_eq!(
            r.verdict,
            "RSS 900.0 MiB is high because 450.0 MiB released with MADV_FREE is still resident \
             as LazyFree (the kernel reclaims it only under memory pressure); the heap in use is \
             300.0 MiB"
        );
        assert!(
            r.residual_meaning
                .starts_with("141.5 MiB of anonymous memory is not"),
            "{}",
            r.residual_meaning
        );
        assert_eq!(r.file, 5 * MIB);
    }

    #[test]
    fn a_heap_in_use_explains_itself() {
        let f = figures(200 * MIB, 2 * MIB, 8 * MIB);
        let r = reconcile(&f, smaps(210 * MIB, 205 * MIB, 0), 0);
        assert_eq!(
            r.verdict,
            "RSS 210.0 MiB is mostly the Go heap in use (200.0 MiB)"
        );
        assert_eq!(r.residual, (205 * MIB) as i64 - r.ready as i64);
        assert!(r.residual < 0);
        assert!(r.residual_meaning.contains("not resident"));
    }

    #[test]
    fn memory_outside_the_runtime_is_named() {
        // cgo: 100 MiB of C malloc the runtime never sees.
        let f = figures(20 * MIB, 0, 0);
        let r = reconcile(&f, smaps(130 * MIB, 126 * MIB, 0), 0);
        assert!(r.residual > 100 * MIB as i64);
        assert!(
            r.verdict.contains("outside the Go runtime"),
            "{}",
            r.verdict
        );
        // Someone else's MADV_FREE: more LazyFree than the runtime released.
        let r = reconcile(
            &figures(20 * MIB, 0, MIB),
            smaps(60 * MIB, 58 * MIB, 30 * MIB),
            0,
        );
        assert_eq!(r.released_resident, MIB);
        assert!(r.residual_meaning.contains("something else uses MADV_FREE"));
    }

    #[test]
    fn no_figures_means_a_reason_and_no_numbers() {
        let reason = Reason::new(super::super::heap::ReasonCode::Stripped, "stripped");
        let v = view(None, None, Err(reason.clone()), Some(smaps(1, 1, 0)), 0);
        assert_eq!(v.figures, None);
        assert_eq!(v.reconciliation, None);
        assert_eq!(v.reason, Some(reason));
    }
}
