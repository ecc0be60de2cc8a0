//! The Go release-mode verdict, as people read it.

use std::fmt::Write as _;

use crate::{
    analysis::golang::verdict::{SETTING, Verdict, madvdontneed},
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
    if v.go {
        let compiled = v
            .default_godebug
            .as_deref()
            .map_or_else(|| "none".to_owned(), describe_default_godebug);
        let _ = writeln!(out, "  DefaultGODEBUG  {compiled}");
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
    let _ = writeln!(out, "  verdict         {}", v.summary);
    for note in &v.notes {
        let _ = writeln!(out, "  note            {note}");
    }
    if let Some(fix) = &v.fix {
        let _ = writeln!(out, "  fix             {fix}");
    }
    out
}

/// DefaultGODEBUG in a few words: it lists dozens of unrelated settings, so only the count and
/// the one that matters here are shown (the JSON has it all).
fn describe_default_godebug(settings: &str) -> String {
    let count = settings.split(',').filter(|s| !s.is_empty()).count();
    let plural = if count == 1 { "" } else { "s" };
    match madvdontneed(settings) {
        Some(value) => format!("{count} setting{plural}, including {SETTING}={value}"),
        None => format!("{count} setting{plural}, none about {SETTING}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use memtrace_common::advice;

    use super::*;
    use crate::{
        analysis::golang::verdict::{Facts, GoBuild, judge},
        kernel::procfs::SmapsRollup,
        model::attribution::AdviceTotals,
    };

    const MIB: u64 = 1 << 20;

    fn verdict(go: Option<(&str, Option<&str>)>, seen: &[(u32, u64)]) -> Verdict {
        judge(&Facts {
            pid: 42,
            comm: "svc".to_owned(),
            go: go.map(|(version, default_godebug)| GoBuild {
                version: version.to_owned(),
                default_godebug: default_godebug.map(str::to_owned),
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
    fn default_godebug_is_summarised() {
        assert_eq!(
            describe_default_godebug("panicnil=1,httpmuxgo121=1"),
            "2 settings, none about madvdontneed"
        );
        assert_eq!(
            describe_default_godebug("madvdontneed=0"),
            "1 setting, including madvdontneed=0"
        );
        let v = verdict(Some(("go1.27.3", Some("panicnil=1,x=2"))), &[]);
        assert!(text(&v).contains("DefaultGODEBUG  2 settings, none about madvdontneed"));
    }
}
