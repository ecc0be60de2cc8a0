//! The memory syscalls on BPF trampolines (fentry/fexit on the x86-64 syscall entry points),
//! where the kernel allows them: the same records as the tracepoint programs in
//! [`crate::syscalls`], which they replace, without putting every other syscall on the slow
//! path (see `memtrace_common::hooks::Trampoline`).
//!
//! Each entry point takes the caller's saved registers, `struct pt_regs *`; the arguments are
//! read from there (`memtrace_common::regs`), at entry or, where only totals are printed and
//! only the exit is attached, at exit.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use memtrace_common::{events::EventKind, regs::ArgsAt};

use crate::{
    config::{config, empty_programs, setting},
    filter::current_traced,
    regs,
    syscalls::{finish, park, read_args, take_parked},
};

/// Parks the syscall's arguments as its tracepoint twin does. Attached only where each call
/// is sent as a record with its latency.
#[inline(always)]
fn entry(ctx: &FEntryContext, kind: EventKind) -> u32 {
    if empty_programs() {
        return 0;
    }
    let Some((_, tid)) = current_traced() else {
        return 0;
    };
    // The entry point's one argument: the caller's saved registers.
    if let Some(call) = read_args(ctx, tid, kind, regs::args_from(ctx.arg(0), kind)) {
        park(ctx, tid, kind, &call.args);
    }
    0
}

/// The call completed with the value the entry point returned (the argument slot after its one
/// argument; `bpf_get_func_ret` would need 5.17). Where only totals are printed there is no
/// entry program: the arguments are still in the saved registers, the entry point's argument.
#[inline(always)]
fn exit(ctx: &FExitContext, kind: EventKind) -> u32 {
    if empty_programs() {
        return 0;
    }
    let Some((tgid, tid)) = current_traced() else {
        return 0;
    };
    let ret: i64 = ctx.arg(1);
    let call = if setting(&config().args_at) == ArgsAt::Parked as u8 {
        take_parked(tid, kind)
    } else {
        read_args(ctx, tid, kind, regs::args_from(ctx.arg(0), kind))
    };
    if let Some(call) = call {
        finish(tgid, tid, kind, &call, ret);
    }
    0
}

#[fentry(function = "__x64_sys_madvise")]
pub fn madvise_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Madvise)
}

#[fexit(function = "__x64_sys_madvise")]
pub fn madvise_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Madvise)
}

#[fentry(function = "__x64_sys_process_madvise")]
pub fn process_madvise_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::ProcessMadvise)
}

#[fexit(function = "__x64_sys_process_madvise")]
pub fn process_madvise_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::ProcessMadvise)
}

#[fentry(function = "__x64_sys_mmap")]
pub fn mmap_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Mmap)
}

#[fexit(function = "__x64_sys_mmap")]
pub fn mmap_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Mmap)
}

#[fentry(function = "__x64_sys_munmap")]
pub fn munmap_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Munmap)
}

#[fexit(function = "__x64_sys_munmap")]
pub fn munmap_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Munmap)
}

#[fentry(function = "__x64_sys_mremap")]
pub fn mremap_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Mremap)
}

#[fexit(function = "__x64_sys_mremap")]
pub fn mremap_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Mremap)
}

#[fentry(function = "__x64_sys_brk")]
pub fn brk_fentry(ctx: FEntryContext) -> u32 {
    entry(&ctx, EventKind::Brk)
}

#[fexit(function = "__x64_sys_brk")]
pub fn brk_fexit(ctx: FExitContext) -> u32 {
    exit(&ctx, EventKind::Brk)
}
