//! The verdict on how a process gives memory back: what its Go build and settings make the
//! runtime do, what the process was seen doing, and what its memory looks like now.
//!
//! Pure: fed facts gathered elsewhere (build info, GODEBUG, kernel release, madvise totals,
//! smaps_rollup), so every rule of the decision table is unit-tested.
//!
//! The Go rules (runtime/mem_linux.go, runtime/runtime1.go; how settings are read is in
//! `godebug.rs`):
//! - Go < 1.12 always releases with MADV_DONTNEED.
//! - Go 1.12–1.15 default to MADV_FREE (`madvdontneed=0`); Go ≥ 1.16 default to MADV_DONTNEED
//!   (`madvdontneed=1`). `madvdontneed=0` selects FREE, any other number DONTNEED.
//! - Go ≥ 1.21 applies its compiled-in default first, then `GODEBUG` from the environment it
//!   was started with: the environment wins. The setting is read once, at start.
//! - When a MADV_FREE call fails (Linux < 4.5 has none), the runtime switches to MADV_DONTNEED
//!   for good.

use std::{collections::BTreeMap, fmt::Write as _};

use memtrace_common::advice;
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    buildinfo::version_number,
    godebug::{Compiled, Lookup, Source, Syntax, lookup},
    reconcile::RuntimeView,
};
use crate::{
    analysis::advice::{AdviceView, advice_views},
    kernel::procfs::SmapsRollup,
    model::counts::AdviceTotals,
    units::human_bytes,
};

/// The GODEBUG setting that picks the release advice.
pub const SETTING: &str = "madvdontneed";
/// The first Linux with MADV_FREE.
const KERNEL_WITH_FREE: (u32, u32) = (4, 5);

/// The two ways memory is given back that this verdict is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Mode {
    #[serde(rename = "DONTNEED")]
    DontNeed,
    #[serde(rename = "FREE")]
    Free,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Self::DontNeed => "MADV_DONTNEED",
            Self::Free => "MADV_FREE",
        }
    }
}

/// What the Go binary says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBuild {
    /// e.g. `go1.19.8`.
    pub version: String,
    /// The DefaultGODEBUG build setting (Go ≥ 1.21), if any.
    pub default_godebug: Option<String>,
    /// The GODEBUG default the runtime was compiled with, as far as the build info tells.
    pub compiled: Compiled,
}

/// Everything the verdict is made from.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub pid: u32,
    pub comm: String,
    /// `Some` for a Go binary.
    pub go: Option<GoBuild>,
    /// Why `go` is `None` (e.g. "no Go build information found").
    pub not_go_reason: String,
    /// `GODEBUG` from /proc/PID/environ; `None` when unset.
    pub godebug: Option<String>,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// madvise totals seen during the window, by advice.
    pub madvise: BTreeMap<u32, AdviceTotals>,
    /// smaps_rollup at the end of the window, if it could be read.
    pub smaps: Option<SmapsRollup>,
    /// How long memtrace watched.
    pub watched_ns: u64,
    /// The Go runtime's own view, read when the verdict is made; `None` when not Go.
    pub runtime: Option<RuntimeView>,
}

/// The mode the binary and its settings should produce, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// `None` when it cannot be known (not Go, or an unreadable version).
    pub mode: Option<Mode>,
    pub reason: String,
}

/// The memory picture from smaps_rollup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub rss: u64,
    pub anonymous: u64,
    pub lazy_free: u64,
    /// What the numbers mean, in one sentence.
    pub meaning: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Observed what was expected.
    Confirmed,
    /// Nothing released yet; the expectation stands.
    Expected,
    /// Observed the other mode.
    Conflict,
    /// Not a Go binary: only the observed mode is reported.
    NotGo,
    /// A Go binary whose expected mode is unknown; only the observed mode is reported.
    Observed,
    /// Neither known nor seen.
    Unknown,
}

/// The verdict, as printed (text) or serialised (`{"type":"go_verdict",…}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub pid: u32,
    pub comm: String,
    pub go: bool,
    pub go_version: Option<String>,
    pub default_godebug: Option<String>,
    /// The runtime's compiled-in GODEBUG default (`runtime.godebugDefault`); `None` when not Go.
    pub compiled_godebug: Option<Compiled>,
    pub godebug: Option<String>,
    pub kernel: String,
    pub expected: Expectation,
    /// The release mode that covered the most bytes; `None` before any release.
    pub observed: Option<Mode>,
    pub released_bytes: u64,
    /// Every advice seen, hints included (they are never counted as releases).
    pub madvise: Vec<AdviceView>,
    pub memory: Option<Memory>,
    pub watched_ns: u64,
    pub verdict: Outcome,
    /// The one-line verdict, e.g. `CONFIRMED MADV_FREE`.
    pub summary: String,
    /// Why the observation may differ from the expectation, or other caveats.
    pub notes: Vec<String>,
    pub fix: Option<String>,
    /// What the Go runtime itself says about its memory, reconciled with RSS; `None` when not
    /// a Go binary.
    pub runtime: Option<RuntimeView>,
}

/// Judges the facts.
pub fn judge(facts: &Facts) -> Verdict {
    let expected = match &facts.go {
        Some(go) => expect(go, facts.godebug.as_deref(), &facts.kernel),
        None => Expectation {
            mode: None,
            reason: format!("not a Go binary ({})", facts.not_go_reason),
        },
    };
    let seen = Releases::from(&facts.madvise);
    let observed = seen.mode();
    let verdict = outcome(facts.go.is_some(), expected.mode, observed);
    let mut notes = Vec::new();
    if verdict == Outcome::Conflict
        && let (Some(expected), Some(observed)) = (expected.mode, observed)
    {
        notes.push(conflict_reason(expected, observed, &seen));
    }
    if let Some(minority) = seen.minority() {
        notes.push(minority);
    }
    if facts.go.is_none() && observed.is_some() {
        notes.push(
            "glibc malloc, jemalloc, tcmalloc and other allocators also release with \
             MADV_DONTNEED or MADV_FREE; the observed mode is what this process does"
                .to_owned(),
        );
    }
    let fix = facts
        .go
        .as_ref()
        .and_then(|go| fix(go, facts.godebug.as_deref(), expected.mode, observed));
    Verdict {
        pid: facts.pid,
        comm: facts.comm.clone(),
        go: facts.go.is_some(),
        go_version: facts.go.as_ref().map(|go| go.version.clone()),
        default_godebug: facts.go.as_ref().and_then(|go| go.default_godebug.clone()),
        compiled_godebug: facts.go.as_ref().map(|go| go.compiled.clone()),
        godebug: facts.godebug.clone(),
        kernel: facts.kernel.clone(),
        summary: summary_line(verdict, expected.mode, observed, facts.watched_ns),
        expected,
        observed,
        released_bytes: seen.released,
        madvise: advice_views(&facts.madvise),
        memory: facts.smaps.map(|smaps| memory(smaps, seen.released)),
        watched_ns: facts.watched_ns,
        verdict,
        notes,
        fix,
        runtime: facts.runtime.clone(),
    }
}

/// The mode a Go binary should use, from its version, its settings and the kernel.
pub fn expect(go: &GoBuild, godebug: Option<&str>, kernel: &str) -> Expectation {
    let kernel_short = kernel_version(kernel).map_or_else(
        || format!("Linux {kernel}"),
        |(major, minor)| format!("Linux {major}.{minor}"),
    );
    let on = format!("{} on {kernel_short}", go.version);
    let Some(version) = version_number(&go.version) else {
        return Expectation {
            mode: None,
            reason: format!("{on}: the Go version cannot be read, so the mode cannot be known"),
        };
    };
    if version < (1, 12) {
        return Expectation {
            mode: Some(Mode::DontNeed),
            reason: format!("{on} → MADV_DONTNEED: Go before 1.12 always releases with it"),
        };
    }
    let syntax = Syntax::of(version);
    let env = godebug.map(|g| lookup(g, SETTING, syntax));
    let decider = decide(&go.compiled, &env, syntax);
    let default = if version < (1, 16) {
        Mode::Free
    } else {
        Mode::DontNeed
    };
    let wanted = decider.mode(default);
    // Without MADV_FREE in the kernel every setting ends in MADV_DONTNEED.
    let old_kernel = kernel_version(kernel).is_some_and(|k| k < KERNEL_WITH_FREE);
    let mode = if old_kernel {
        Some(Mode::DontNeed)
    } else {
        wanted
    };
    let settings = decider.describe(&go.compiled, &env, syntax);
    let conclusion = conclusion(&decider, default, mode, wanted, old_kernel);
    Expectation {
        mode,
        reason: format!("{on}, {settings}{conclusion}"),
    }
}

/// The end of an expectation's reason: the mode, and what made it.
fn conclusion(
    decider: &Decider,
    default: Mode,
    mode: Option<Mode>,
    wanted: Option<Mode>,
    old_kernel: bool,
) -> String {
    let Some(mode) = mode else {
        return format!(
            ", so the mode cannot be known ({} by default; the compiled-in default may change \
             it)",
            default.name()
        );
    };
    let mut text = format!(" → {}", mode.name());
    if matches!(decider, Decider::VersionDefault) {
        let range = match default {
            Mode::Free => "1.12–1.15",
            Mode::DontNeed => "≥ 1.16",
        };
        let _ = write!(text, " by default (Go {range})");
    }
    if old_kernel && wanted != Some(Mode::DontNeed) {
        text.push_str(": MADV_FREE needs Linux ≥ 4.5, so the runtime falls back to MADV_DONTNEED");
    }
    text
}

/// The setting that decides `madvdontneed`, in the order the runtime applies them: the
/// environment last, so it wins.
#[derive(Debug)]
enum Decider {
    Environment {
        value: i32,
        written: String,
    },
    Compiled {
        value: i32,
        written: String,
        from: Source,
    },
    /// Neither sets it: the version's default.
    VersionDefault,
    /// The environment does not set it and the compiled-in default cannot be read.
    Unreadable {
        reason: String,
    },
}

fn decide(compiled: &Compiled, env: &Option<Lookup>, syntax: Syntax) -> Decider {
    if let Some(Lookup::Set { value, written }) = env {
        return Decider::Environment {
            value: *value,
            written: written.clone(),
        };
    }
    match compiled {
        Compiled::Known { value, from } => match lookup(value, SETTING, syntax) {
            Lookup::Set { value, written } => Decider::Compiled {
                value,
                written,
                from: *from,
            },
            Lookup::Absent | Lookup::Skipped { .. } => Decider::VersionDefault,
        },
        Compiled::None => Decider::VersionDefault,
        Compiled::Unreadable { reason } => Decider::Unreadable {
            reason: reason.clone(),
        },
    }
}

impl Decider {
    /// The mode it selects, given the version's `default`; `None` when it cannot be known.
    fn mode(&self, default: Mode) -> Option<Mode> {
        match self {
            Self::Environment { value: 0, .. } | Self::Compiled { value: 0, .. } => {
                Some(Mode::Free)
            }
            Self::Environment { .. } | Self::Compiled { .. } => Some(Mode::DontNeed),
            Self::VersionDefault => Some(default),
            Self::Unreadable { .. } => None,
        }
    }

    /// Which settings say what, e.g. `GODEBUG madvdontneed=0 (overrides the compiled-in
    /// madvdontneed=1)`.
    fn describe(&self, compiled: &Compiled, env: &Option<Lookup>, syntax: Syntax) -> String {
        match self {
            Self::Environment { value, written } => {
                let mut text = format!("GODEBUG {SETTING}={written}{}", read_as(*value, written));
                if let Some(bin) = compiled
                    .settings()
                    .and_then(|settings| lookup(settings, SETTING, syntax).value())
                {
                    let _ = write!(text, " (overrides the compiled-in {SETTING}={bin})");
                }
                text
            }
            Self::Compiled {
                value,
                written,
                from,
            } => {
                let read = read_as(*value, written);
                match from {
                    Source::DefaultGodebug => {
                        format!("DefaultGODEBUG {SETTING}={written}{read} (compiled in)")
                    }
                    Source::Ldflags => format!(
                        "-X runtime.godebugDefault {SETTING}={written}{read} (compiled in via \
                         -ldflags)"
                    ),
                }
            }
            Self::VersionDefault => environment(env, syntax),
            Self::Unreadable { reason } => format!(
                "{}: the compiled-in GODEBUG default cannot be read: {reason}",
                environment(env, syntax)
            ),
        }
    }
}

/// `" (read as 0)"` when a value is written unusually (`+0`, `-`, `00`).
fn read_as(value: i32, written: &str) -> String {
    if value.to_string() == written {
        String::new()
    } else {
        format!(" (read as {value})")
    }
}

/// What the environment says when it does not decide (`None`: GODEBUG unset).
fn environment(env: &Option<Lookup>, syntax: Syntax) -> String {
    match env {
        None => "GODEBUG unset".to_owned(),
        Some(Lookup::Absent) => format!("GODEBUG without {SETTING}"),
        Some(Lookup::Skipped { written }) => format!(
            "GODEBUG {SETTING}={written} skipped as not a number ({})",
            syntax.describe()
        ),
        Some(Lookup::Set { .. }) => "GODEBUG".to_owned(),
    }
}

/// How `go`'s runtime reads GODEBUG numbers; `None` when its version cannot be read.
pub fn syntax_of(go: &GoBuild) -> Option<Syntax> {
    version_number(&go.version).map(Syntax::of)
}

/// `(major, minor)` of a kernel release such as `6.18.0-1-amd64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Successful release bytes by kind, from the madvise totals.
#[derive(Debug, Default)]
struct Releases {
    free: u64,
    dontneed: u64,
    /// Every successful release (FREE, DONTNEED and the rest).
    released: u64,
    /// MADV_FREE calls the kernel refused (old kernel, or not private anonymous memory).
    free_failed: u64,
}

impl From<&BTreeMap<u32, AdviceTotals>> for Releases {
    fn from(madvise: &BTreeMap<u32, AdviceTotals>) -> Self {
        let bytes = |value| madvise.get(&value).map_or(0, |t| t.bytes);
        Self {
            free: bytes(advice::FREE),
            dontneed: bytes(advice::DONTNEED),
            released: madvise
                .iter()
                .filter(|(value, _)| advice::is_release(**value))
                .map(|(_, t)| t.bytes)
                .sum(),
            free_failed: madvise.get(&advice::FREE).map_or(0, |t| t.failed),
        }
    }
}

impl Releases {
    /// The mode that covered the most bytes (FREE wins a tie: it is the one worth knowing).
    fn mode(&self) -> Option<Mode> {
        match (self.free, self.dontneed) {
            (0, 0) => None,
            (free, dontneed) if free >= dontneed => Some(Mode::Free),
            _ => Some(Mode::DontNeed),
        }
    }

    /// A note when both modes were seen.
    fn minority(&self) -> Option<String> {
        let (mode, bytes) = match self.mode()? {
            Mode::Free => (Mode::DontNeed, self.dontneed),
            Mode::DontNeed => (Mode::Free, self.free),
        };
        (bytes > 0).then(|| {
            format!(
                "also {} released with {}: other code in the process (cgo, a C allocator) or a \
                 runtime path that always uses it",
                human_bytes(bytes),
                mode.name()
            )
        })
    }
}

fn outcome(is_go: bool, expected: Option<Mode>, observed: Option<Mode>) -> Outcome {
    match (is_go, expected, observed) {
        (false, _, _) => Outcome::NotGo,
        (true, Some(e), Some(o)) if e == o => Outcome::Confirmed,
        (true, Some(_), Some(_)) => Outcome::Conflict,
        (true, Some(_), None) => Outcome::Expected,
        (true, None, Some(_)) => Outcome::Observed,
        (true, None, None) => Outcome::Unknown,
    }
}

fn summary_line(
    verdict: Outcome,
    expected: Option<Mode>,
    observed: Option<Mode>,
    watched_ns: u64,
) -> String {
    let name = |mode: Option<Mode>| mode.map_or("nothing", Mode::name);
    let watched = format!("{:.1} s", watched_ns as f64 / 1e9);
    match verdict {
        Outcome::Confirmed => format!("CONFIRMED {}", name(observed)),
        Outcome::Expected => format!(
            "EXPECTED {} (not yet observed: no release in {watched})",
            name(expected)
        ),
        Outcome::Conflict => format!(
            "CONFLICT: expected {}, observed {}",
            name(expected),
            name(observed)
        ),
        Outcome::NotGo => match observed {
            Some(mode) => format!("NOT A GO BINARY; observed {}", mode.name()),
            None => format!("NOT A GO BINARY; no release observed in {watched}"),
        },
        Outcome::Observed => format!("OBSERVED {} (expected mode unknown)", name(observed)),
        Outcome::Unknown => format!("UNKNOWN: expected mode unknown and no release in {watched}"),
    }
}

/// Why the process released with the other mode. What cannot be the reason: a later change
/// of GODEBUG (the runtime reads `madvdontneed` once, at start, from the same initial
/// environment /proc/PID/environ shows), so it is not offered.
fn conflict_reason(expected: Mode, observed: Mode, seen: &Releases) -> String {
    const NON_GO: &str = "non-Go code in the process (cgo, a C allocator: jemalloc, for one, \
                          releases with MADV_FREE) releases memory too";
    match (expected, observed) {
        (Mode::Free, Mode::DontNeed) if seen.free_failed > 0 => format!(
            "{} MADV_FREE calls failed, so the runtime switched to MADV_DONTNEED for good (a \
             kernel without MADV_FREE, or a seccomp filter that rejects it)",
            seen.free_failed
        ),
        (Mode::Free, Mode::DontNeed) => format!(
            "MADV_DONTNEED instead of MADV_FREE: the runtime switches to MADV_DONTNEED for good \
             after one MADV_FREE call fails (a kernel without MADV_FREE, or a seccomp filter \
             that rejects it), which may have happened before memtrace attached; or {NON_GO}"
        ),
        _ => format!(
            "{} instead of {}: the Go runtime reads {SETTING} once, at start, so {NON_GO}",
            observed.name(),
            expected.name()
        ),
    }
}

/// How to make the process release with MADV_DONTNEED, when it releases (or is set to
/// release) with MADV_FREE.
fn fix(
    go: &GoBuild,
    godebug: Option<&str>,
    expected: Option<Mode>,
    observed: Option<Mode>,
) -> Option<String> {
    if observed.or(expected) != Some(Mode::Free) {
        return None;
    }
    let decider = syntax_of(go).map(|syntax| {
        let env = godebug.map(|g| lookup(g, SETTING, syntax));
        decide(&go.compiled, &env, syntax)
    });
    let old = version_number(&go.version).is_some_and(|v| v < (1, 16));
    let restart = "start the process with GODEBUG=madvdontneed=1 in its own environment";
    let how = match decider {
        // The settings do not select FREE: whatever releases with it, the setting is all the
        // runtime offers.
        _ if expected != Some(Mode::Free) => {
            format!("{restart} (it changes only what the Go runtime does)")
        }
        Some(Decider::Environment { written, .. }) => format!(
            "remove {SETTING}={written} from GODEBUG in the process's environment (or set \
             {SETTING}=1)"
        ),
        Some(Decider::Compiled {
            from: Source::Ldflags,
            written,
            ..
        }) => format!(
            "{restart}, or rebuild without {SETTING}={written} in -X runtime.godebugDefault"
        ),
        Some(Decider::Compiled { written, .. }) => {
            format!("{restart} (the binary was built with {SETTING}={written})")
        }
        _ if old => format!("{restart}, or rebuild with Go ≥ 1.16"),
        _ => restart.to_owned(),
    };
    Some(format!(
        "MADV_FREE keeps released pages in RSS until memory pressure; if RSS must fall at \
         once: {how}"
    ))
}

fn memory(smaps: SmapsRollup, released: u64) -> Memory {
    let meaning = if smaps.lazy_free > 0 {
        format!(
            "{} of RSS is LazyFree: reclaimable on pressure, not a leak",
            human_bytes(smaps.lazy_free)
        )
    } else if released > 0 {
        "no LazyFree: released memory has left RSS".to_owned()
    } else {
        "no LazyFree".to_owned()
    };
    Memory {
        rss: smaps.rss,
        anonymous: smaps.anonymous,
        lazy_free: smaps.lazy_free,
        meaning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX: &str = "6.18.0-1-amd64";
    const MIB: u64 = 1 << 20;

    const TRIMPATH: &str = "built with -trimpath, so the go command did not record -ldflags";

    /// A plain `go build` of `version`: no DefaultGODEBUG recorded, no -ldflags.
    fn go(version: &str) -> GoBuild {
        let newer = version_number(version).is_some_and(|v| v >= (1, 21));
        GoBuild {
            version: version.to_owned(),
            default_godebug: None,
            compiled: if newer {
                known("", Source::DefaultGodebug)
            } else {
                Compiled::None
            },
        }
    }

    fn known(value: &str, from: Source) -> Compiled {
        Compiled::Known {
            value: value.to_owned(),
            from,
        }
    }

    /// Built with a DefaultGODEBUG and no -ldflags.
    fn compiled(version: &str, default_godebug: &str) -> GoBuild {
        GoBuild {
            version: version.to_owned(),
            default_godebug: Some(default_godebug.to_owned()),
            compiled: known(default_godebug, Source::DefaultGodebug),
        }
    }

    /// Built with `-ldflags=-X=runtime.godebugDefault=<value>`.
    fn linked(version: &str, value: &str) -> GoBuild {
        GoBuild {
            compiled: known(value, Source::Ldflags),
            ..compiled(version, "panicnil=1")
        }
    }

    /// Built with -trimpath: the compiled-in default cannot be read.
    fn trimmed(version: &str) -> GoBuild {
        GoBuild {
            compiled: Compiled::Unreadable {
                reason: TRIMPATH.to_owned(),
            },
            ..go(version)
        }
    }

    fn mode(build: &GoBuild, godebug: Option<&str>, kernel: &str) -> Option<Mode> {
        expect(build, godebug, kernel).mode
    }

    fn totals(calls: &[(u32, u64, u64, u64)]) -> BTreeMap<u32, AdviceTotals> {
        calls
            .iter()
            .map(|&(advice, calls, failed, bytes)| {
                (
                    advice,
                    AdviceTotals {
                        calls,
                        failed,
                        bytes,
                    },
                )
            })
            .collect()
    }

    fn facts(
        build: Option<GoBuild>,
        godebug: Option<&str>,
        seen: &[(u32, u64, u64, u64)],
    ) -> Facts {
        Facts {
            pid: 42,
            comm: "svc".to_owned(),
            go: build,
            not_go_reason: "no Go build information found".to_owned(),
            godebug: godebug.map(str::to_owned),
            kernel: LINUX.to_owned(),
            madvise: totals(seen),
            smaps: None,
            watched_ns: 2_500_000_000,
            runtime: None,
        }
    }

    #[test]
    fn defaults_by_version() {
        use Mode::{DontNeed, Free};
        for (version, expected) in [
            ("go1.5.4", DontNeed),
            ("go1.11.13", DontNeed),
            ("go1.12", Free),
            ("go1.12.17", Free),
            ("go1.14.15", Free),
            ("go1.15.15", Free),
            ("go1.16", DontNeed),
            ("go1.16rc1", DontNeed),
            ("go1.19.8", DontNeed),
            ("go1.22.0 X:nocoverageredesign", DontNeed),
            ("devel go1.24-abc123 Tue Jan 2", DontNeed),
        ] {
            assert_eq!(mode(&go(version), None, LINUX), Some(expected), "{version}");
        }
        assert_eq!(mode(&go("devel +b2f1b07"), None, LINUX), None);
    }

    #[test]
    fn reason_reads_like_the_issue() {
        assert_eq!(
            expect(&go("go1.14.15"), None, LINUX).reason,
            "go1.14.15 on Linux 6.18, GODEBUG unset → MADV_FREE by default (Go 1.12–1.15)"
        );
        assert_eq!(
            expect(&go("go1.19.8"), Some("gctrace=1"), LINUX).reason,
            "go1.19.8 on Linux 6.18, GODEBUG without madvdontneed → MADV_DONTNEED by default \
             (Go ≥ 1.16)"
        );
        assert_eq!(
            expect(&go("go1.19.8"), Some("madvdontneed=0"), LINUX).reason,
            "go1.19.8 on Linux 6.18, GODEBUG madvdontneed=0 → MADV_FREE"
        );
        assert_eq!(
            expect(&go("go1.11.13"), Some("madvdontneed=0"), LINUX).reason,
            "go1.11.13 on Linux 6.18 → MADV_DONTNEED: Go before 1.12 always releases with it"
        );
    }

    #[test]
    fn godebug_selects_the_mode() {
        use Mode::{DontNeed, Free};
        for version in ["go1.12.17", "go1.14.15", "go1.16.15", "go1.21.0"] {
            let build = go(version);
            assert_eq!(mode(&build, Some("madvdontneed=0"), LINUX), Some(Free));
            assert_eq!(mode(&build, Some("madvdontneed=1"), LINUX), Some(DontNeed));
            // Any non-zero number means DONTNEED.
            assert_eq!(mode(&build, Some("madvdontneed=2"), LINUX), Some(DontNeed));
        }
        // Go < 1.12 has no such setting.
        assert_eq!(
            mode(&go("go1.11"), Some("madvdontneed=0"), LINUX),
            Some(DontNeed)
        );
    }

    #[test]
    fn later_godebug_settings_win_and_bad_ones_are_skipped() {
        for version in ["go1.19.8", "go1.27.3"] {
            let build = go(version);
            let mode = |godebug| mode(&build, Some(godebug), LINUX);
            assert_eq!(mode("madvdontneed=0,madvdontneed=1"), Some(Mode::DontNeed));
            assert_eq!(mode("madvdontneed=1,madvdontneed=0"), Some(Mode::Free));
            assert_eq!(mode("madvdontneed=0,madvdontneed=yes"), Some(Mode::Free));
            assert_eq!(
                mode("madvdontneed=0,madvdontneed=99999999999"),
                Some(Mode::Free)
            );
            assert_eq!(mode("gctrace=1,,madvdontneed=0,"), Some(Mode::Free));
        }
    }

    /// `+0` and `-` read differently before and after Go 1.26 (seen with strace on real
    /// go1.19.8 and go1.27.3 binaries).
    #[test]
    fn odd_values_depend_on_the_go_version() {
        use Mode::{DontNeed, Free};
        for (version, plus_zero, minus) in [
            ("go1.19.8", DontNeed, Free),
            ("go1.25.5", DontNeed, Free),
            ("go1.26rc1", Free, DontNeed),
            ("go1.26.0", Free, DontNeed),
            ("go1.27.3", Free, DontNeed),
        ] {
            let build = go(version);
            assert_eq!(
                mode(&build, Some("madvdontneed=+0"), LINUX),
                Some(plus_zero)
            );
            assert_eq!(mode(&build, Some("madvdontneed=-"), LINUX), Some(minus));
            for same in ["madvdontneed=00", "madvdontneed=-0"] {
                assert_eq!(
                    mode(&build, Some(same), LINUX),
                    Some(Free),
                    "{version} {same}"
                );
            }
            for skipped in ["madvdontneed=", "madvdontneed=1x", "madvdontneed= 0"] {
                assert_eq!(mode(&build, Some(skipped), LINUX), Some(DontNeed));
            }
        }
        assert_eq!(
            expect(&go("go1.19.8"), Some("madvdontneed=+0"), LINUX).reason,
            "go1.19.8 on Linux 6.18, GODEBUG madvdontneed=+0 skipped as not a number (Go ≤ 1.25 \
             reads an optional '-' and digits) → MADV_DONTNEED by default (Go ≥ 1.16)"
        );
        assert_eq!(
            expect(&go("go1.26.0"), Some("madvdontneed=+0"), LINUX).reason,
            "go1.26.0 on Linux 6.18, GODEBUG madvdontneed=+0 (read as 0) → MADV_FREE"
        );
        assert_eq!(
            expect(&go("go1.27.3"), Some("madvdontneed=-"), LINUX).reason,
            "go1.27.3 on Linux 6.18, GODEBUG madvdontneed=- skipped as not a number (Go ≥ 1.26 \
             reads an optional '+' or '-' and digits) → MADV_DONTNEED by default (Go ≥ 1.16)"
        );
    }

    #[test]
    fn ldflags_replace_the_compiled_in_default() {
        let free = linked("go1.27.3", "madvdontneed=0");
        assert_eq!(
            expect(&free, None, LINUX).reason,
            "go1.27.3 on Linux 6.18, -X runtime.godebugDefault madvdontneed=0 (compiled in via \
             -ldflags) → MADV_FREE"
        );
        assert_eq!(mode(&free, Some("gctrace=1"), LINUX), Some(Mode::Free));
        // A value this Go skips leaves the compiled-in one in force.
        assert_eq!(mode(&free, Some("madvdontneed=x"), LINUX), Some(Mode::Free));
        let overridden = expect(&free, Some("madvdontneed=1"), LINUX);
        assert_eq!(overridden.mode, Some(Mode::DontNeed));
        assert_eq!(
            overridden.reason,
            "go1.27.3 on Linux 6.18, GODEBUG madvdontneed=1 (overrides the compiled-in \
             madvdontneed=0) → MADV_DONTNEED"
        );
        // Go ≤ 1.25 reads "+0" in the binary as it does in the environment: not at all.
        assert_eq!(
            mode(&linked("go1.21.13", "madvdontneed=+0"), None, LINUX),
            Some(Mode::DontNeed)
        );
        assert_eq!(
            mode(&linked("go1.26.6", "madvdontneed=+0"), None, LINUX),
            Some(Mode::Free)
        );
        assert_eq!(
            mode(&linked("go1.22.1", "panicnil=1"), None, LINUX),
            Some(Mode::DontNeed)
        );
    }

    #[test]
    fn an_unreadable_compiled_in_default_is_said_not_guessed() {
        let build = trimmed("go1.27.3");
        let unknown = expect(&build, None, LINUX);
        assert_eq!(unknown.mode, None);
        assert_eq!(
            unknown.reason,
            format!(
                "go1.27.3 on Linux 6.18, GODEBUG unset: the compiled-in GODEBUG default cannot \
                 be read: {TRIMPATH}, so the mode cannot be known (MADV_DONTNEED by default; the \
                 compiled-in default may change it)"
            )
        );
        assert_eq!(mode(&build, Some("gctrace=1"), LINUX), None);
        // The environment is applied last, so a valid value settles it.
        let set = expect(&build, Some("madvdontneed=0"), LINUX);
        assert_eq!(set.mode, Some(Mode::Free));
        assert_eq!(
            set.reason,
            "go1.27.3 on Linux 6.18, GODEBUG madvdontneed=0 → MADV_FREE"
        );
        assert_eq!(
            mode(&build, Some("madvdontneed=1"), LINUX),
            Some(Mode::DontNeed)
        );
        // Without MADV_FREE every setting ends in MADV_DONTNEED.
        let old = expect(&build, None, "4.4.0");
        assert_eq!(old.mode, Some(Mode::DontNeed));
        assert!(
            old.reason.ends_with("falls back to MADV_DONTNEED"),
            "{}",
            old.reason
        );
        // Observed releases are reported, not judged.
        let v = judge(&facts(Some(build), None, &[(advice::FREE, 3, 0, 3 * MIB)]));
        assert_eq!(v.verdict, Outcome::Observed);
        assert_eq!(v.summary, "OBSERVED MADV_FREE (expected mode unknown)");
        assert_eq!(
            v.fix.as_deref(),
            Some(
                "MADV_FREE keeps released pages in RSS until memory pressure; if RSS must fall \
                 at once: start the process with GODEBUG=madvdontneed=1 in its own environment \
                 (it changes only what the Go runtime does)"
            )
        );
    }

    #[test]
    fn environment_overrides_default_godebug() {
        let free_build = compiled("go1.22.1", "madvdontneed=0,panicnil=1");
        assert_eq!(mode(&free_build, None, LINUX), Some(Mode::Free));
        assert_eq!(
            expect(&free_build, None, LINUX).reason,
            "go1.22.1 on Linux 6.18, DefaultGODEBUG madvdontneed=0 (compiled in) → MADV_FREE"
        );
        assert_eq!(
            mode(&free_build, Some("gctrace=1"), LINUX),
            Some(Mode::Free)
        );
        let overridden = expect(&free_build, Some("madvdontneed=1"), LINUX);
        assert_eq!(overridden.mode, Some(Mode::DontNeed));
        assert_eq!(
            overridden.reason,
            "go1.22.1 on Linux 6.18, GODEBUG madvdontneed=1 (overrides the compiled-in \
             madvdontneed=0) → MADV_DONTNEED"
        );
        let unrelated = compiled("go1.22.1", "panicnil=1");
        assert_eq!(mode(&unrelated, None, LINUX), Some(Mode::DontNeed));
    }

    #[test]
    fn old_kernels_fall_back_to_dontneed() {
        for kernel in ["4.4.0-210-generic", "3.10.0-1160.el7.x86_64"] {
            let e = expect(&go("go1.14.15"), None, kernel);
            assert_eq!(e.mode, Some(Mode::DontNeed), "{kernel}");
            assert!(e.reason.contains("needs Linux ≥ 4.5"), "{}", e.reason);
            assert_eq!(
                mode(&go("go1.19.8"), Some("madvdontneed=0"), kernel),
                Some(Mode::DontNeed)
            );
        }
        assert_eq!(mode(&go("go1.14.15"), None, "4.5.0"), Some(Mode::Free));
        assert_eq!(mode(&go("go1.14.15"), None, "5.4.0"), Some(Mode::Free));
        // An unreadable kernel release does not change the expectation.
        assert_eq!(mode(&go("go1.14.15"), None, "weird"), Some(Mode::Free));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(kernel_version("4.4.0"), Some((4, 4)));
        assert_eq!(kernel_version("5.10"), Some((5, 10)));
        assert_eq!(kernel_version("6"), None);
        assert_eq!(kernel_version(""), None);
    }

    #[test]
    fn confirmed_when_observed_matches() {
        let v = judge(&facts(
            Some(go("go1.19.8")),
            None,
            &[
                (advice::DONTNEED, 71, 0, 256 * MIB),
                (advice::NOHUGEPAGE, 8, 0, 16 * MIB),
            ],
        ));
        assert_eq!(v.verdict, Outcome::Confirmed);
        assert_eq!(v.observed, Some(Mode::DontNeed));
        assert_eq!(v.summary, "CONFIRMED MADV_DONTNEED");
        assert_eq!(v.released_bytes, 256 * MIB);
        assert_eq!(v.fix, None);
        assert!(v.notes.is_empty());

        let v = judge(&facts(
            Some(go("go1.19.8")),
            Some("madvdontneed=0"),
            &[(advice::FREE, 71, 0, 256 * MIB)],
        ));
        assert_eq!(v.summary, "CONFIRMED MADV_FREE");
        let fix = v.fix.unwrap();
        assert!(fix.contains("remove madvdontneed=0 from GODEBUG"), "{fix}");

        let v = judge(&facts(
            Some(go("go1.14.15")),
            None,
            &[(advice::FREE, 3, 0, MIB)],
        ));
        assert_eq!(v.summary, "CONFIRMED MADV_FREE");
        let fix = v.fix.unwrap();
        assert!(
            fix.contains("GODEBUG=madvdontneed=1") && fix.contains("Go ≥ 1.16"),
            "{fix}"
        );
    }

    #[test]
    fn hints_are_never_releases() {
        let hints = [
            (advice::HUGEPAGE, 5, 0, 64 * MIB),
            (advice::NOHUGEPAGE, 8, 0, 16 * MIB),
            (advice::COLLAPSE, 1, 0, 2 * MIB),
        ];
        let v = judge(&facts(Some(go("go1.19.8")), None, &hints));
        assert_eq!(v.verdict, Outcome::Expected);
        assert_eq!(v.observed, None);
        assert_eq!(v.released_bytes, 0);
        assert_eq!(
            v.summary,
            "EXPECTED MADV_DONTNEED (not yet observed: no release in 2.5 s)"
        );
        // Shown, marked as hints.
        assert_eq!(v.madvise.len(), 3);
        assert!(v.madvise.iter().all(|a| !a.release));
    }

    #[test]
    fn failed_calls_release_nothing() {
        // Failed calls carry no bytes (attribution counts bytes of successful calls only).
        let v = judge(&facts(
            Some(go("go1.14.15")),
            None,
            &[(advice::FREE, 4, 4, 0), (advice::DONTNEED, 4, 0, 4 * MIB)],
        ));
        assert_eq!(v.verdict, Outcome::Conflict);
        assert_eq!(
            v.summary,
            "CONFLICT: expected MADV_FREE, observed MADV_DONTNEED"
        );
        assert_eq!(
            v.notes,
            [
                "4 MADV_FREE calls failed, so the runtime switched to MADV_DONTNEED for good (a \
              kernel without MADV_FREE, or a seccomp filter that rejects it)"
            ]
        );
        // It already releases with MADV_DONTNEED: nothing to fix.
        assert_eq!(v.fix, None);
    }

    #[test]
    fn conflicts_say_which_and_why() {
        let v = judge(&facts(
            Some(go("go1.19.8")),
            None,
            &[(advice::FREE, 10, 0, 40 * MIB)],
        ));
        assert_eq!(v.verdict, Outcome::Conflict);
        assert_eq!(
            v.summary,
            "CONFLICT: expected MADV_DONTNEED, observed MADV_FREE"
        );
        // GODEBUG cannot have changed: the runtime reads the setting once, at start.
        assert_eq!(
            v.notes,
            [
                "MADV_FREE instead of MADV_DONTNEED: the Go runtime reads madvdontneed once, at \
              start, so non-Go code in the process (cgo, a C allocator: jemalloc, for one, \
              releases with MADV_FREE) releases memory too"
            ]
        );
        assert_eq!(
            v.fix.as_deref(),
            Some(
                "MADV_FREE keeps released pages in RSS until memory pressure; if RSS must fall \
                 at once: start the process with GODEBUG=madvdontneed=1 in its own environment \
                 (it changes only what the Go runtime does)"
            )
        );

        let v = judge(&facts(
            Some(go("go1.14.15")),
            Some("madvdontneed=0"),
            &[(advice::DONTNEED, 10, 0, 40 * MIB)],
        ));
        assert_eq!(
            v.summary,
            "CONFLICT: expected MADV_FREE, observed MADV_DONTNEED"
        );
        assert_eq!(
            v.notes,
            [
                "MADV_DONTNEED instead of MADV_FREE: the runtime switches to MADV_DONTNEED for good \
              after one MADV_FREE call fails (a kernel without MADV_FREE, or a seccomp filter \
              that rejects it), which may have happened before memtrace attached; or non-Go \
              code in the process (cgo, a C allocator: jemalloc, for one, releases with \
              MADV_FREE) releases memory too"
            ]
        );
        assert_eq!(v.fix, None);
    }

    #[test]
    fn the_mode_with_most_bytes_is_observed() {
        let v = judge(&facts(
            Some(go("go1.19.8")),
            Some("madvdontneed=0"),
            &[
                (advice::FREE, 70, 0, 250 * MIB),
                (advice::DONTNEED, 1, 0, MIB),
            ],
        ));
        assert_eq!(v.verdict, Outcome::Confirmed);
        assert_eq!(v.observed, Some(Mode::Free));
        assert_eq!(v.released_bytes, 251 * MIB);
        assert!(v.notes[0].starts_with("also 1.0 MiB released with MADV_DONTNEED"));
        // Other releases count as released but pick no mode.
        let v = judge(&facts(
            Some(go("go1.19.8")),
            None,
            &[(advice::REMOVE, 1, 0, MIB)],
        ));
        assert_eq!((v.observed, v.released_bytes), (None, MIB));
        assert_eq!(v.verdict, Outcome::Expected);
    }

    #[test]
    fn not_go_still_reports_the_observed_mode() {
        let v = judge(&facts(None, None, &[(advice::DONTNEED, 3, 0, 3 * MIB)]));
        assert_eq!(v.verdict, Outcome::NotGo);
        assert!(!v.go);
        assert_eq!(v.observed, Some(Mode::DontNeed));
        assert_eq!(v.summary, "NOT A GO BINARY; observed MADV_DONTNEED");
        assert_eq!(v.expected.mode, None);
        assert_eq!(
            v.expected.reason,
            "not a Go binary (no Go build information found)"
        );
        assert_eq!(v.fix, None);
        assert!(v.notes.iter().any(|n| n.contains("glibc malloc")));

        let v = judge(&facts(None, None, &[]));
        assert_eq!(v.summary, "NOT A GO BINARY; no release observed in 2.5 s");
        let v = judge(&facts(None, None, &[(advice::FREE, 3, 0, 3 * MIB)]));
        assert_eq!(v.summary, "NOT A GO BINARY; observed MADV_FREE");
    }

    #[test]
    fn unknown_versions() {
        let v = judge(&facts(Some(go("devel +abc")), None, &[]));
        assert_eq!(v.verdict, Outcome::Unknown);
        let v = judge(&facts(
            Some(go("devel +abc")),
            None,
            &[(advice::FREE, 1, 0, MIB)],
        ));
        assert_eq!(v.verdict, Outcome::Observed);
        assert_eq!(v.summary, "OBSERVED MADV_FREE (expected mode unknown)");
        assert!(v.fix.is_some());
    }

    #[test]
    fn memory_picture() {
        let mut f = facts(Some(go("go1.19.8")), Some("madvdontneed=0"), &[]);
        f.smaps = Some(SmapsRollup {
            rss: 432 * MIB,
            anonymous: 430 * MIB,
            lazy_free: 412 * MIB,
            ..SmapsRollup::default()
        });
        let v = judge(&f);
        let memory = v.memory.clone().unwrap();
        assert_eq!(
            memory.meaning,
            "412.0 MiB of RSS is LazyFree: reclaimable on pressure, not a leak"
        );
        assert_eq!((memory.rss, memory.lazy_free), (432 * MIB, 412 * MIB));
        f.smaps = Some(SmapsRollup {
            rss: 10 * MIB,
            ..SmapsRollup::default()
        });
        assert_eq!(judge(&f).memory.unwrap().meaning, "no LazyFree");
        f.madvise = totals(&[(advice::DONTNEED, 1, 0, MIB)]);
        assert_eq!(
            judge(&f).memory.unwrap().meaning,
            "no LazyFree: released memory has left RSS"
        );
    }

    #[test]
    fn json_shape() {
        let v = judge(&facts(
            Some(compiled("go1.22.1", "panicnil=1")),
            Some("madvdontneed=0"),
            &[(advice::FREE, 2, 0, 2 * MIB)],
        ));
        // The JSON line adds `"type":"go_verdict"` (output::json).
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["verdict"], "confirmed");
        assert_eq!(json["observed"], "FREE");
        assert_eq!(json["expected"]["mode"], "FREE");
        assert_eq!(json["go_version"], "go1.22.1");
        assert_eq!(json["default_godebug"], "panicnil=1");
        assert_eq!(
            json["compiled_godebug"],
            serde_json::json!({"state": "known", "value": "panicnil=1", "from": "default_godebug"})
        );
        assert_eq!(json["godebug"], "madvdontneed=0");
        assert_eq!(json["madvise"][0]["name"], "FREE");
        assert_eq!(json["released_bytes"], 2 * MIB);
        assert_eq!(json["memory"], serde_json::Value::Null);
    }
}
