//! Caller stacks (`--stacks`): placed in their processes' files as they are announced, and
//! named on a thread of their own.

use memtrace_common::stacks::StackRef;

use super::Session;
use crate::kernel::namer::Namer;

impl Session {
    /// Places a new user stack in the process's files now: its addresses mean something only
    /// with the process's memory map, gone once the process exits. Naming its frames (reading
    /// symbols and DWARF) is left to the naming thread, so the loop is never held up by it.
    pub(super) fn locate_stack(&mut self, stack: StackRef) {
        let (Some(symbols), Some(namer)) = (self.symbols.as_mut(), self.namer.as_mut()) else {
            return;
        };
        // Deleted from the kernel even when known (a stack stored again for another key of the
        // same process would wait there for ever), but read only when new.
        if self.model.stacks.is_named(&stack) || self.naming.contains(&stack) {
            self.tracer.drop_frames(&stack);
            return;
        }
        let Some(frames) = self.tracer.take_frames(&stack) else {
            return;
        };
        if stack.kernel != 0 {
            namer.kernel(stack, frames);
        } else {
            namer.user(stack, symbols.locate(stack.tgid, &frames));
        }
        self.naming.insert(stack);
    }

    /// Takes the names the naming thread has ready, after sending it any stack the counts
    /// refer to that was never announced (a full ring buffer).
    pub(super) fn name_stacks(&mut self) {
        for stack in self.model.stacks.unnamed() {
            self.locate_stack(stack);
        }
        let names = self.namer.as_mut().map(Namer::ready).unwrap_or_default();
        self.learn_names(names);
    }

    pub(super) fn learn_names(&mut self, names: Vec<(StackRef, crate::kernel::symbols::Stack)>) {
        for (stack, named) in names {
            self.naming.remove(&stack);
            self.model.stacks.name(stack, named);
        }
    }
}
