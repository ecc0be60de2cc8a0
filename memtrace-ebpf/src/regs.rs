//! A syscall's arguments read at its exit from the caller's saved registers
//! (`memtrace_common::regs`), so one program per call does the work of an entry and an exit.

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs,
};
use memtrace_common::{
    events::{EventKind, syscall::SYSCALL_ARGS},
    members::Member,
    regs::{ARG_WORDS, ArgsAt, ORIG_AX_WORD, READ_FIRST_WORD, READ_WORDS},
};

use crate::config::{config, member, setting};

/// The words of `pt_regs` from r10 to orig_ax.
type Words = [u64; READ_WORDS];

/// The current syscall's arguments, from the registers saved at `regs` (a `struct pt_regs *`
/// in kernel memory); `Err` when they hold another syscall's number (the registers are not
/// where this kernel was taken to keep them).
#[inline(always)]
pub fn args_from(regs: u64, kind: EventKind) -> Result<[u64; SYSCALL_ARGS], ()> {
    if regs == 0 {
        return Err(());
    }
    let at = regs + 8 * READ_FIRST_WORD as u64;
    // SAFETY: an address in kernel memory; the read is checked.
    let words: Words = unsafe { bpf_probe_read_kernel(at as *const Words) }.map_err(|_| ())?;
    let word = |index: usize| words[index - READ_FIRST_WORD];
    if Some(word(ORIG_AX_WORD)) != kind.syscall_nr() {
        return Err(());
    }
    Ok(ARG_WORDS.map(word))
}

/// Where the current task's saved user registers are, as this kernel allows finding them
/// (`Config::args_at`); 0 when not known.
#[inline(always)]
pub fn current_regs() -> u64 {
    let at = u32::from(setting(&config().args_at));
    if at == ArgsAt::TaskPtRegs as u32 {
        // SAFETY: helpers without preconditions beyond a valid task, which the first returns.
        return unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    }
    if at == ArgsAt::KernelStack as u32 {
        let stack_at = member(Member::TaskStack);
        if stack_at == 0 {
            return 0;
        }
        // SAFETY: the current task plus an offset from this kernel's BTF; the read is checked.
        let stack =
            unsafe { bpf_probe_read_kernel((bpf_get_current_task() + stack_at) as *const u64) };
        return match stack {
            Ok(stack) if stack != 0 => stack + u64::from(setting(&config().pt_regs_offset)),
            _ => 0,
        };
    }
    0
}
