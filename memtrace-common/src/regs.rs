//! Where a system call's arguments are while it runs: x86-64 keeps the caller's registers in a
//! `struct pt_regs` at the top of the task's kernel stack from syscall entry until the return
//! to user mode, so a program that runs at the syscall's exit can read the arguments there
//! instead of a program at its entry parking them (one program per call instead of two).
//!
//! The layout of `struct pt_regs` is fixed by the architecture's entry code (it is what the
//! entry assembly pushes) on every kernel memtrace supports; the syscall numbers are the x86-64
//! ABI's. The memory syscalls memtrace traces do not change the argument registers.

use crate::events::EventKind;

/// `struct pt_regs` on x86-64, in 8-byte words: r15 … r10 (0–7), r9, r8, ax, cx, dx, si, di
/// (8–14), orig_ax (15), then ip, cs, flags, sp, ss.
pub const PT_REGS_WORDS: usize = 21;
/// Its size in bytes.
pub const PT_REGS_SIZE: u32 = 8 * PT_REGS_WORDS as u32;

/// Indices in `pt_regs` (in words) of the syscall arguments, in order: di, si, dx, r10, r8, r9.
pub const ARG_WORDS: [usize; 6] = [14, 13, 12, 7, 9, 8];
/// Index of `orig_ax`: the syscall number, kept there for the whole call.
pub const ORIG_AX_WORD: usize = 15;

/// The words of `pt_regs` the exit programs read: r10 (7) up to orig_ax (15). One read covers
/// every argument register and the syscall number.
pub const READ_FIRST_WORD: usize = 7;
pub const READ_WORDS: usize = ORIG_AX_WORD + 1 - READ_FIRST_WORD;

/// `THREAD_SIZE` on x86-64 kernels built without KASAN (`PAGE_SIZE << 2`; Debian's): the kernel
/// stack, at whose top `pt_regs` sits. A KASAN kernel doubles it; the programs then find
/// another syscall number where `orig_ax` should be, and say so rather than read wrong
/// arguments.
pub const THREAD_SIZE: u32 = 16 << 10;

/// Bytes the kernel leaves unused above `pt_regs` at the top of the stack
/// (`TOP_OF_KERNEL_STACK_PADDING`): 0 on x86-64, 16 on kernels built with FRED (6.9+,
/// `CONFIG_X86_FRED`).
pub const STACK_PADDING: u32 = 0;
pub const STACK_PADDING_FRED: u32 = 16;

impl EventKind {
    /// The x86-64 syscall number of a syscall record's kind
    /// (`arch/x86/entry/syscalls/syscall_64.tbl`).
    pub const fn syscall_nr(self) -> Option<u64> {
        Some(match self {
            Self::Mmap => 9,
            Self::Munmap => 11,
            Self::Brk => 12,
            Self::Mremap => 25,
            Self::Madvise => 28,
            Self::ProcessMadvise => 440,
            _ => return None,
        })
    }
}

named_enum! {
    /// How the syscall exit programs get the call's arguments on this kernel.
    pub enum ArgsAt {
        /// From the slot the entry program parked them in: two programs per call.
        Parked = 0 => "parked",
        /// From `pt_regs`, found with `bpf_task_pt_regs` (Linux 5.15+).
        TaskPtRegs = 1 => "task_pt_regs",
        /// From `pt_regs`, found at `task_struct.stack` + `Config::pt_regs_offset` (before
        /// 5.15).
        KernelStack = 2 => "kernel_stack",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_covers_every_argument_and_the_number() {
        for word in ARG_WORDS.into_iter().chain([ORIG_AX_WORD]) {
            assert!((READ_FIRST_WORD..READ_FIRST_WORD + READ_WORDS).contains(&word));
        }
        assert_eq!(PT_REGS_SIZE, 168);
    }
}
