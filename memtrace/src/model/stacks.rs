//! Caller stacks counted with `--stacks`: the kernel's counts per process, call and stack, and
//! each stack's frames as named while its process lived. Pure: the session reads the kernel's
//! maps and symbolizes; this keeps what they gave.

use std::collections::BTreeMap;

use memtrace_common::stacks::{StackCounts, StackKey, StackRef};

use crate::kernel::symbols::Stack;

/// Everything `--stacks` gathered.
#[derive(Debug, Default)]
pub struct Stacks {
    /// Whether stacks are counted in this run.
    pub enabled: bool,
    /// The kernel's counts, as of the latest sample (they only grow).
    counts: BTreeMap<StackKey, StackCounts>,
    /// Frames of each stack, named when the kernel announced it.
    named: BTreeMap<StackRef, Stack>,
}

impl Stacks {
    /// Takes the kernel's latest counts.
    pub fn set_counts(&mut self, counts: impl IntoIterator<Item = (StackKey, StackCounts)>) {
        self.counts.extend(counts);
    }

    /// Keeps a stack's named frames; the first naming stands (the process may be gone when
    /// asked again).
    pub fn name(&mut self, stack: StackRef, frames: Stack) {
        self.named.entry(stack).or_insert(frames);
    }

    pub fn is_named(&self, stack: &StackRef) -> bool {
        self.named.contains_key(stack)
    }

    /// Stacks the counts refer to that have no names yet (their announcement was lost, or
    /// arrived before the counts).
    pub fn unnamed(&self) -> Vec<StackRef> {
        let mut missing: Vec<StackRef> = self
            .counts
            .keys()
            .flat_map(|k| {
                [(k.user, 0), (k.kernel, 1)]
                    .into_iter()
                    .filter(|&(id, _)| id != 0)
                    .map(|(id, kernel)| StackRef {
                        tgid: k.tgid,
                        kernel,
                        id,
                    })
            })
            .filter(|r| !self.named.contains_key(r))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// One process's counts, per key.
    pub fn of(&self, pid: u32) -> impl Iterator<Item = (&StackKey, &StackCounts)> {
        let first = StackKey {
            tgid: pid,
            ..StackKey::default()
        };
        self.counts
            .range(first..)
            .take_while(move |(k, _)| k.tgid == pid)
    }

    /// A stack's frames, if named.
    pub fn frames(&self, stack: &StackRef) -> Option<&Stack> {
        self.named.get(stack)
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::stacks::StackSite;

    use super::*;

    fn key(tgid: u32, user: u64) -> StackKey {
        StackKey {
            tgid,
            site: StackSite::Madvise as u32,
            detail: 4,
            user,
            ..StackKey::default()
        }
    }

    #[test]
    fn counts_per_process_and_unnamed_stacks() {
        let mut stacks = Stacks::default();
        let counts = |calls| StackCounts {
            calls,
            ..StackCounts::default()
        };
        stacks.set_counts([(key(7, 11), counts(1)), (key(8, 12), counts(2))]);
        // A later sample replaces a key's counts and keeps keys no longer listed.
        stacks.set_counts([(key(7, 11), counts(3))]);
        let of_7: Vec<u64> = stacks.of(7).map(|(_, c)| c.calls).collect();
        assert_eq!(of_7, [3]);
        assert_eq!(stacks.of(8).count(), 1);
        assert_eq!(stacks.unnamed().len(), 2);
        let named = StackRef {
            tgid: 7,
            kernel: 0,
            id: 11,
        };
        stacks.name(named, Stack::default());
        assert_eq!(
            stacks.unnamed(),
            [StackRef {
                tgid: 8,
                kernel: 0,
                id: 12
            }]
        );
    }
}
