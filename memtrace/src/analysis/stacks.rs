//! A process's caller stacks (`--stacks`) as reports show them: the top stacks by bytes and by
//! calls, each with its frames named, or why not.

use memtrace_common::stacks::{Change, StackCounts, StackKey, StackRef, StackSite};
use schemars::JsonSchema;
use serde::Serialize;

use super::advice::advice_name;
use crate::{
    kernel::symbols::{Frame, Stack},
    model::stacks::Stacks,
    units::human_bytes,
};

/// How many stacks a process shows: this many by bytes, and this many by calls.
pub const TOP_STACKS: usize = 10;

/// A process's stacks.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StacksView {
    /// The top stacks by bytes, then those by calls not among them; most bytes first, then
    /// most calls.
    pub top: Vec<StackView>,
    /// Stacks counted but not shown.
    pub others: u64,
}

/// One stack and what was counted on it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StackView {
    /// What the stack led to: `madvise`, `process_madvise`, `mmap`, `munmap`, `mremap`, `brk`,
    /// `direct_reclaim` or `memcg_reclaim`.
    pub call: String,
    /// The madvise advice (`DONTNEED`, `FREE`, …); `grow`, `shrink`, `query` (brk(0)) or
    /// `unknown` (a brk whose earlier break was not seen) for mremap and brk; null otherwise.
    pub detail: Option<String>,
    pub calls: u64,
    pub failed: u64,
    /// Bytes the successful calls covered (page-rounded); for mremap and brk, by how much
    /// they moved the mapping or the break.
    pub bytes: u64,
    /// Reclaim stalls only: time stalled and pages reclaimed.
    pub stall_ns: Option<u64>,
    pub reclaimed_pages: Option<u64>,
    /// The user stack, innermost frame first; null for a kernel thread's stall or when the
    /// kernel could not walk it.
    pub user: Option<FramesView>,
    /// The kernel stack of a reclaim stall; null for system calls.
    pub kernel: Option<FramesView>,
}

/// The frames of one stack.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FramesView {
    pub frames: Vec<FrameView>,
    /// The walk filled every slot memtrace keeps (63): the outermost callers are missing.
    pub truncated: bool,
    /// Why frames may be missing or wrong, when they may: a function without a frame pointer
    /// (the frame-pointer walk skips its caller or goes astray), a process that exited before
    /// its memory map could be read, frames not stored because the stack table was full.
    pub doubts: Vec<String>,
}

/// One frame.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameView {
    pub address: u64,
    /// Demangled; null when it cannot be named (`unknown` says why).
    pub function: Option<String>,
    /// Bytes into the function.
    pub offset: u64,
    /// The executable or library as the process maps it, or `[kernel]`.
    pub module: Option<String>,
    /// Source file and line, where the module has DWARF line information.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub unknown: Option<String>,
    /// Not walked by the kernel: the return address a frameless function (a system-call
    /// wrapper) left at the stack top, confirmed by its unwind information.
    pub recovered: bool,
    /// A function the compiler inlined into the next frame: same address, no frame of its own.
    pub inlined: bool,
}

impl FrameView {
    /// A frame, preceded by the functions inlined at its address (innermost first).
    fn all(f: &Frame) -> impl Iterator<Item = Self> + '_ {
        let inlined = f.inlined.iter().map(|(function, file, line)| Self {
            address: f.address,
            function: Some(function.clone()),
            offset: 0,
            module: f.module.clone(),
            file: file.clone(),
            line: *line,
            unknown: None,
            recovered: f.recovered,
            inlined: true,
        });
        inlined.chain(std::iter::once(Self {
            address: f.address,
            function: f.function.clone(),
            offset: f.offset,
            module: f.module.clone(),
            file: f.file.clone(),
            line: f.line,
            unknown: f.unknown.clone(),
            recovered: f.recovered,
            inlined: false,
        }))
    }
}

impl From<&Stack> for FramesView {
    fn from(s: &Stack) -> Self {
        Self {
            frames: s.frames.iter().flat_map(FrameView::all).collect(),
            truncated: s.truncated,
            doubts: s.doubts.clone(),
        }
    }
}

/// Which of a process's stacks a view shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sites {
    /// Memory calls and reclaim stalls: the top by bytes, then by calls.
    All,
    /// Reclaim stalls only (`memtrace reclaim`): the top by time stalled, then by stalls.
    Stalls,
}

impl StacksView {
    /// The stacks of process `pid` started at `start_ticks` (see [`Stacks::of`]); None when
    /// stacks are not counted in this run.
    pub fn of(stacks: &Stacks, pid: u32, start_ticks: Option<u64>, sites: Sites) -> Option<Self> {
        if !stacks.enabled {
            return None;
        }
        let counted = stacks.of(pid, start_ticks);
        let mut all: Vec<(&StackKey, &StackCounts)> = counted
            .iter()
            .filter(|(k, _)| sites == Sites::All || is_stall(k))
            .collect();
        // Bytes for calls, time for stalls: a stall covers no bytes, a call takes no time here.
        let amount = |c: &StackCounts| match sites {
            Sites::All => c.bytes,
            Sites::Stalls => c.stall_ns,
        };
        let rank = |(k, c): &(&StackKey, &StackCounts)| {
            (
                std::cmp::Reverse(amount(c)),
                std::cmp::Reverse(c.calls),
                **k,
            )
        };
        all.sort_by_key(rank);
        let mut shown: Vec<(&StackKey, &StackCounts)> =
            all.iter().take(TOP_STACKS).copied().collect();
        let mut by_calls = all.clone();
        by_calls.sort_by_key(|(k, c)| (std::cmp::Reverse(c.calls), **k));
        for entry in by_calls.into_iter().take(TOP_STACKS) {
            if !shown.iter().any(|(k, _)| *k == entry.0) {
                shown.push(entry);
            }
        }
        shown.sort_by_key(rank);
        Some(Self {
            others: (all.len() - shown.len()) as u64,
            top: shown
                .into_iter()
                .map(|(key, counts)| StackView::new(stacks, key, counts))
                .collect(),
        })
    }
}

fn is_stall(key: &StackKey) -> bool {
    matches!(
        StackSite::from_u32(key.site),
        Some(StackSite::DirectReclaim | StackSite::MemcgReclaim)
    )
}

impl StackView {
    fn new(stacks: &Stacks, key: &StackKey, counts: &StackCounts) -> Self {
        let site = StackSite::from_u32(key.site);
        let stall = is_stall(key);
        let detail = match site {
            Some(StackSite::Madvise | StackSite::ProcessMadvise) => Some(advice_name(key.detail)),
            Some(StackSite::Mremap | StackSite::Brk) => {
                Change::from_u32(key.detail).map(|c| c.name().to_owned())
            }
            _ => None,
        };
        let frames = |id: u64, kernel: u32| {
            (id != 0).then(|| {
                let stack = StackRef {
                    tgid: key.tgid,
                    kernel,
                    start_ns: key.start_ns,
                    id,
                };
                stacks.frames(&stack).map_or_else(
                    || FramesView {
                        frames: Vec::new(),
                        truncated: false,
                        doubts: vec![
                            "frames unknown: not stored (stack table full) or not read in time"
                                .to_owned(),
                        ],
                    },
                    FramesView::from,
                )
            })
        };
        Self {
            call: site.map_or_else(|| key.site.to_string(), |s| s.name().to_owned()),
            detail,
            calls: counts.calls,
            failed: counts.failed,
            bytes: counts.bytes,
            stall_ns: stall.then_some(counts.stall_ns),
            reclaimed_pages: stall.then_some(counts.reclaimed_pages),
            user: frames(key.user, 0),
            kernel: frames(key.kernel, 1),
        }
    }

    /// One line for the live view: what, how much, and the first named callers.
    pub fn brief(&self, callers: usize) -> String {
        let amount = match self.stall_ns {
            Some(ns) => format!("{} stalls, {:.1} ms", self.calls, ns as f64 / 1e6),
            None => format!("{} calls, {}", self.calls, human_bytes(self.bytes)),
        };
        let names: Vec<&str> = self
            .user
            .iter()
            .chain(&self.kernel)
            .flat_map(|f| &f.frames)
            .filter_map(|f| f.function.as_deref())
            .take(callers)
            .collect();
        let path = if names.is_empty() {
            "frames unknown".to_owned()
        } else {
            names.join(" ← ")
        };
        format!("{} ({amount}): {path}", self.what())
    }

    /// "madvise DONTNEED", "brk grow", "direct_reclaim".
    pub fn what(&self) -> String {
        match &self.detail {
            Some(detail) => format!("{} {detail}", self.call),
            None => self.call.clone(),
        }
    }
}

impl FrameView {
    /// `release_a+0x1c (t) t.c:5`, or the address and why it has no name.
    pub fn describe(&self) -> String {
        let module = self
            .module
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m));
        let mut text = match &self.function {
            Some(function) if self.inlined => format!("{function} (inlined)"),
            Some(function) => format!("{function}+{:#x}", self.offset),
            None => format!("{:#x}", self.address),
        };
        if let Some(module) = module {
            text.push_str(&format!(" ({module})"));
        }
        if let (Some(file), Some(line)) = (&self.file, self.line) {
            let file = file.rsplit('/').next().unwrap_or(file);
            text.push_str(&format!(" {file}:{line}"));
        }
        if let Some(why) = &self.unknown {
            text.push_str(&format!(" [{why}]"));
        }
        if self.recovered {
            text.push_str(" [from the stack top]");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_by_bytes_then_calls() {
        let mut stacks = Stacks::default();
        stacks.enabled = true;
        let entries = (0..25u64).map(|i| {
            (
                StackKey {
                    tgid: 5,
                    site: StackSite::Munmap as u32,
                    user: i + 1,
                    ..StackKey::default()
                },
                StackCounts {
                    // Few bytes on many calls for the first five.
                    calls: if i < 5 { 1000 + i } else { 1 },
                    bytes: if i < 5 { 0 } else { i * 4096 },
                    ..StackCounts::default()
                },
            )
        });
        stacks.set_counts(entries);
        let view = StacksView::of(&stacks, 5, None, Sites::All).expect("enabled");
        // Ten by bytes; ten by calls: the five many-call ones and five of the rest (ties go
        // in key order), none of them among the ten by bytes.
        assert_eq!(view.top.len(), 20);
        assert_eq!(view.others, 5);
        assert_eq!(view.top[0].bytes, 24 * 4096);
        // The five many-call stacks are there too, after the byte ranking.
        assert_eq!(view.top.iter().filter(|s| s.calls >= 1000).count(), 5);
        let user = view.top[0].user.as_ref().expect("a user stack id");
        assert!(user.frames.is_empty() && !user.doubts.is_empty());
        assert!(StacksView::of(&Stacks::default(), 5, None, Sites::All).is_none());
    }
}
