//! Caller stacks (`--stacks`) as text: the top stacks of a process, each with what was counted
//! on it and its frames, innermost first. Shared by the default report and `memtrace reclaim`.

use std::fmt::Write as _;

use crate::{
    analysis::stacks::{FramesView, StacksView},
    units::human_bytes,
};

/// The top stacks, each with what was counted on it and its frames, innermost first.
pub fn stacks_text(out: &mut String, stacks: &StacksView, ranked: &str) {
    if stacks.top.is_empty() {
        out.push_str("  stacks: none counted\n");
        return;
    }
    let _ = writeln!(
        out,
        "  stacks (top {ranked}; {} more not shown):",
        stacks.others
    );
    for stack in &stacks.top {
        let unit = if stack.stall_ns.is_some() {
            "stalls"
        } else {
            "calls"
        };
        let mut counted = format!("{} {unit}", stack.calls);
        if stack.failed > 0 {
            let _ = write!(counted, " ({} failed)", stack.failed);
        }
        match (stack.stall_ns, stack.reclaimed_pages) {
            (Some(ns), Some(pages)) => {
                let _ = write!(
                    counted,
                    ", {:.3} ms stalled, {pages} pages reclaimed",
                    ns as f64 / 1e6
                );
            }
            _ => {
                let _ = write!(counted, ", {}", human_bytes(stack.bytes));
            }
        }
        let _ = writeln!(out, "    {}: {counted}", stack.what());
        for (label, frames) in [("kernel", &stack.kernel), ("user", &stack.user)] {
            match frames {
                Some(frames) => frames_text(out, label, frames, stack.kernel.is_some()),
                None if label == "user" => out.push_str("      (no user stack)\n"),
                None => {}
            }
        }
    }
}

fn frames_text(out: &mut String, label: &str, frames: &FramesView, labelled: bool) {
    if labelled {
        let _ = writeln!(out, "      {label}:");
    }
    for frame in &frames.frames {
        let _ = writeln!(out, "      {}", frame.describe());
    }
    if frames.truncated {
        out.push_str("      … truncated: deeper callers were not recorded\n");
    }
    for doubt in &frames.doubts {
        let _ = writeln!(out, "      ? {doubt}");
    }
}
