//! The Go release-mode verdict, as people read it.

use std::fmt::Write as _;

use crate::{
    analysis::golang::{
        buildinfo::version_number,
        godebug::{Compiled, FIRST_WITH_COMPILED_DEFAULT, Lookup, Source, Syntax, lookup},
        reconcile::RuntimeView,
        verdict::{SETTING, Verdict},
    },
    units::human_bytes,
};

/// The verdict for people.
pub fn text(v: &Verdict) -> String {
    let mut out = String::new();
    let what = match &v.go_version {
        Some(version) => format!("Go binary built with {version}"),
        None => "not a Go binary".to_owned(),
    };
    let _ = writeln!(out, "pid {} ({}): {what}", v.pid, v.comm);
    if let Some(compiled) = &v.compiled_godebug {
        let syntax = v
            .go_version
            .as_deref()
            .and_then(version_number)
            .map(Syntax::of);
        let _ = writeln!(
            out,
            "  DefaultGODEBUG  {}",
            describe_compiled(compiled, syntax)
        );
        let env = v.godebug.as_deref().unwrap_or("unset");
        let _ = writeln!(
            out,
            "  GODEBUG         {env} (from /proc/{}/environ)",
            v.pid
        );
    }
    let _ = writeln!(out, "  kernel          Linux {}", v.kernel);
    let _ = writeln!(out, "  expected        {}", v.expected.reason);
    let watched = v.watched_ns as f64 / 1e9;
    match v.observed {
        Some(mode) => {
            let _ = writeln!(out, "  observed        {} (in {watched:.1} s)", mode.name());
        }
        None => {
            let _ = writeln!(out, "  observed        no release in {watched:.1} s");
        }
    }
    for seen in &v.madvise {
        let kind = if seen.release {
            "release"
        } else {
            "hint, not a release"
        };
        let failed = if seen.failed > 0 {
            format!(", {} failed", seen.failed)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    {:<14} {:>7} calls{failed} {:>12}  {kind}",
            seen.name,
            seen.calls,
            human_bytes(seen.bytes)
        );
    }
    if let Some(memory) = &v.memory {
        let _ = writeln!(
            out,
            "  memory          RSS {}, anonymous {}, LazyFree {}",
            human_bytes(memory.rss),
            human_bytes(memory.anonymous),
            human_bytes(memory.lazy_free),
        );
        let _ = writeln!(out, "                  {}", memory.meaning);
    }
    if let Some(runtime) = &v.runtime {
        out.push_str(&runtime_text(runtime));
    }
    let _ = writeln!(out, "  verdict         {}", v.summary);
    for note in &v.notes {
        let _ = writeln!(out, "  note            {note}");
    }
    if let Some(fix) = &v.fix {
        let _ = writeln!(out, "  fix             {fix}");
    }
    out
}

/// The Go runtime's own figures and their reconciliation with RSS.
pub fn runtime_text(runtime: &RuntimeView) -> String {
    let mut out = String::new();
    let Some(f) = &runtime.figures else {
        if let Some(reason) = &runtime.reason {
            let _ = writeln!(
                out,
                "  Go runtime      unknown ({}): {}",
                reason.code.name(),
                reason.text
            );
        }
        return out;
    };
    let by = runtime.located_by.as_deref().unwrap_or("?");
    let _ = writeln!(
        out,
        "  Go runtime      its own figures, read from the live process (located by {by})"
    );
    let figures = [
        ("HeapInuse", f.heap_inuse),
        ("HeapIdle", f.heap_idle),
        ("HeapReleased", f.heap_released),
        ("HeapSys", f.heap_sys),
        ("StackInuse", f.stack_inuse),
        ("StackSys", f.stack_sys),
        ("MSpanSys", f.mspan_sys),
        ("MCacheSys", f.mcache_sys),
        ("BuckHashSys", f.buck_hash_sys),
        ("GCSys", f.gc_sys),
        ("OtherSys", f.other_sys),
        ("Sys", f.sys),
        ("Sys−Released", f.ready),
        ("HeapAlloc", f.heap_alloc),
        ("NextGC", f.next_gc),
    ];
    for (name, figure) in figures {
        let amount = if name == "NextGC" && f.gogc.is_none() && f.gomemlimit.is_none() {
            // GOGC=off without a limit: the goal is out of reach.
            "none".to_owned()
        } else {
            human_bytes(figure.bytes)
        };
        let _ = writeln!(out, "    {name:<14} {amount:>11}  {}", figure.how.word());
    }
    let gogc = f.gogc.map_or_else(|| "off".to_owned(), |p| p.to_string());
    let limit = f.gomemlimit.map_or_else(|| "none".to_owned(), human_bytes);
    let _ = writeln!(
        out,
        "    GC             GOGC {gogc}, GOMEMLIMIT {limit}, {} GCs so far",
        f.num_gc
    );
    if let Some(note) = &runtime.note {
        let _ = writeln!(out, "    note           {note}");
    }
    if let Some(r) = &runtime.reconciliation {
        let _ = writeln!(
            out,
            "  RSS             {} = anonymous {} + file-backed {}; LazyFree {}; MADV_FREE seen {}",
            human_bytes(r.rss),
            human_bytes(r.anonymous),
            human_bytes(r.file),
            human_bytes(r.lazy_free),
            human_bytes(r.madv_free_seen),
        );
        let _ = writeln!(out, "                  {}", r.arithmetic);
        let _ = writeln!(out, "                  {}", r.residual_meaning);
        let _ = writeln!(out, "  why             {}", r.verdict);
    }
    out
}

/// The compiled-in GODEBUG default in a few words. DefaultGODEBUG lists dozens of unrelated
/// settings, so only the count and the one that matters here are shown (the JSON has it all).
/// `syntax` is how the binary's Go reads numbers, `None` when its version is unknown.
fn describe_compiled(compiled: &Compiled, syntax: Option<Syntax>) -> String {
    let (settings, from) = match compiled {
        Compiled::None => {
            let (major, minor) = FIRST_WITH_COMPILED_DEFAULT;
            return format!("none (Go before {major}.{minor} has no compiled-in GODEBUG)");
        }
        Compiled::Unreadable { reason } => return format!("cannot be read: {reason}"),
        Compiled::Known { value, from } => (value, from),
    };
    let source = match from {
        Source::DefaultGodebug => "",
        Source::Ldflags => "replaced by -X runtime.godebugDefault in -ldflags: ",
    };
    let count = settings.split(',').filter(|s| !s.is_empty()).count();
    if count == 0 {
        return format!("{source}none");
    }
    let plural = if count == 1 { "" } else { "s" };
    let about = match syntax.map(|syntax| lookup(settings, SETTING, syntax)) {
        Some(Lookup::Set { written, .. } | Lookup::Skipped { written }) => {
            format!("including {SETTING}={written}")
        }
        Some(Lookup::Absent) => format!("none about {SETTING}"),
        None => format!("{SETTING} unknown"),
    };
    format!("{source}{count} setting{plural}, {about}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use memtrace_common::advice;

    use super::*;
    use crate::{
        analysis::golang::verdict::{Facts, GoBuild, judge},
        kernel::procfs::SmapsRollup,
        model::counts::AdviceTotals,
    };

    const MIB: u64 = 1 << 20;

    fn verdict(go: Option<(&str, Option<&str>)>, seen: &[(u32, u64)]) -> Verdict {
        judge(&Facts {
            pid: 42,
            comm: "svc".to_owned(),
            go: go.map(|(version, default_godebug)| GoBuild {
                version: version.to_owned(),
                default_godebug: default_godebug.map(str::to_owned),
                compiled: if version_number(version) < Some(FIRST_WITH_COMPILED_DEFAULT) {
                    Compiled::None
                } else {
                    Compiled::Known {
                        value: default_godebug.unwrap_or_default().to_owned(),
                        from: Source::DefaultGodebug,
                    }
                },
            }),
            not_go_reason: "no Go build information found".to_owned(),
            kernel: "6.18.0-1-amd64".to_owned(),
            madvise: seen
                .iter()
                .map(|&(advice, bytes)| {
                    let totals = AdviceTotals {
                        calls: 1,
                        failed: 0,
                        bytes,
                    };
                    (advice, totals)
                })
                .collect::<BTreeMap<_, _>>(),
            smaps: Some(SmapsRollup {
                rss: 432 * MIB,
                anonymous: 430 * MIB,
                lazy_free: 412 * MIB,
                ..SmapsRollup::default()
            }),
            watched_ns: 2_500_000_000,
            ..Facts::default()
        })
    }

    #[test]
    fn hints_are_marked_and_memory_is_shown() {
        let v = verdict(Some(("go1.19.8", None)), &[(advice::NOHUGEPAGE, 16 * MIB)]);
        let text = text(&v);
        assert!(text.contains("hint, not a release"), "{text}");
        assert!(
            text.contains("RSS 432.0 MiB, anonymous 430.0 MiB, LazyFree 412.0 MiB"),
            "{text}"
        );
        assert!(text.contains("DefaultGODEBUG  none"), "{text}");
    }

    #[test]
    fn the_json_line_is_typed() {
        let v = verdict(Some(("go1.22.1", None)), &[(advice::FREE, 2 * MIB)]);
        let line = crate::output::json::Line::GoVerdict(&v).to_json();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["type"], "go_verdict");
        assert_eq!(json["observed"], "FREE");
        assert_eq!(json["pid"], 42);
    }

    #[test]
    fn not_go_has_no_godebug_lines() {
        let v = verdict(None, &[(advice::DONTNEED, 3 * MIB)]);
        let text = text(&v);
        assert!(text.contains("not a Go binary"), "{text}");
        assert!(!text.contains("GODEBUG"), "{text}");
    }

    #[test]
    fn the_compiled_in_default_is_summarised() {
        let (old, new) = (Some(Syntax::Atoi32), Some(Syntax::ParseInt));
        let recorded = |value: &str| Compiled::Known {
            value: value.to_owned(),
            from: Source::DefaultGodebug,
        };
        assert_eq!(
            describe_compiled(&recorded("panicnil=1,httpmuxgo121=1"), new),
            "2 settings, none about madvdontneed"
        );
        assert_eq!(describe_compiled(&recorded(""), new), "none");
        assert_eq!(
            describe_compiled(&recorded("panicnil=1"), None),
            "1 setting, madvdontneed unknown"
        );
        let linked = Compiled::Known {
            value: "madvdontneed=+0".to_owned(),
            from: Source::Ldflags,
        };
        for syntax in [old, new] {
            assert_eq!(
                describe_compiled(&linked, syntax),
                "replaced by -X runtime.godebugDefault in -ldflags: 1 setting, including \
                 madvdontneed=+0"
            );
        }
        assert_eq!(
            describe_compiled(&Compiled::None, old),
            "none (Go before 1.21 has no compiled-in GODEBUG)"
        );
        let trimmed = Compiled::Unreadable {
            reason: "built with -trimpath".to_owned(),
        };
        assert_eq!(
            describe_compiled(&trimmed, new),
            "cannot be read: built with -trimpath"
        );
        let v = verdict(Some(("go1.27.3", Some("panicnil=1,x=2"))), &[]);
        assert!(text(&v).contains("DefaultGODEBUG  2 settings, none about madvdontneed"));
    }
}
