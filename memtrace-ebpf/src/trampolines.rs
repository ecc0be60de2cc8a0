//! The memory syscalls on BPF trampolines (fentry/fexit on the x86-64 syscall entry points),
//! where the kernel allows them: the same records as the tracepoint programs in
//! [`crate::syscalls`], which they replace, without putting every other syscall on the slow
//! path (see `memtrace_common::hooks::Trampoline`).
//!
//! Each entry point takes the caller's saved registers, `struct pt_regs *`; the arguments are
//! read from there in the syscall ABI's order.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use memtrace_common::events::{EventKind, syscall::SYSCALL_ARGS};

use crate::{
    config::empty_programs,
    filter::current_traced,
    syscalls::{complete, park},
};

/// `struct pt_regs` on x86-64 up to `di`: 15 saved registers of 8 bytes, a layout fixed by
/// the architecture's entry code.
type SavedRegisters = [u64; 15];

/// Indices in [`SavedRegisters`] of the syscall arguments, in order: di, si, dx, r10, r8, r9.
const ARG_REGISTERS: [usize; SYSCALL_ARGS] = [14, 13, 12, 7, 9, 8];

/// Parks the syscall's arguments as its tracepoint twin does.
#[inline(always)]
fn entry(ctx: &FEntryContext, kind: EventKind, nargs: usize) -> u32 {
    if empty_programs() {
        return 0;
    }
    let Some((_, tid)) = current_traced() else {
        return 0;
    };
    let regs: *const SavedRegisters = ctx.arg(0);
    // SAFETY: the entry point's one argument, the caller's saved registers; the read is
    // checked.
    let Ok(saved) = (unsafe { bpf_probe_read_kernel(regs) }) else {
        return 0;
    };
    let args = ARG_REGISTERS.map(|r| saved[r]);
    park(ctx, tid, kind, &args, nargs);
    0
}

/// Emits the parked call with the value the entry point returned (the argument slot after
/// its one argument; `bpf_get_func_ret` would need 5.17).
#[inline(always)]
fn exit(ctx: &FExitContext, kind: EventKind) -> u32 {
    if empty_programs() {
        return 0;
    }
    let Some((tgid, tid)) = current_traced() else {
        return 0;
    };
    let ret: i64 = ctx.arg(1);
    complete(ctx, kind, tgid, tid, ret);
    0
}

#[fentry(function = "__x64_sys_madvise")]
pub fn madvise_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Madvise, 3)
}

#[fexit(function = "__x64_sys_madvise")]
pub fn madvise_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Madvise)
}

#[fentry(function = "__x64_sys_process_madvise")]
pub fn process_madvise_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::ProcessMadvise, 5)
}

#[fexit(function = "__x64_sys_process_madvise")]
pub fn process_madvise_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::ProcessMadvise)
}

#[fentry(function = "__x64_sys_mmap")]
pub fn mmap_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Mmap, 6)
}

#[fexit(function = "__x64_sys_mmap")]
pub fn mmap_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Mmap)
}

#[fentry(function = "__x64_sys_munmap")]
pub fn munmap_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Munmap, 2)
}

#[fexit(function = "__x64_sys_munmap")]
pub fn munmap_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Munmap)
}

#[fentry(function = "__x64_sys_mremap")]
pub fn mremap_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Mremap, 5)
}

#[fexit(function = "__x64_sys_mremap")]
pub fn mremap_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Mremap)
}

#[fentry(function = "__x64_sys_brk")]
pub fn brk_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Brk, 1)
}

#[fexit(function = "__x64_sys_brk")]
pub fn brk_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Brk)
}
