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

/// The current syscall's arguments from the current task's saved user registers, as this
/// kernel allows finding them (`Config::args_at`); `Err` where it does not, or when they hold
/// another syscall's number.
#[inline(always)]
pub fn current_args(kind: EventKind) -> Result<[u64; SYSCALL_ARGS], ()> {
    let at = u32::from(setting(&config().args_at));
    if at == ArgsAt::TaskPtRegs as u32 {
        // SAFETY: helpers without preconditions beyond a valid task, which the first returns.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u64;
        if regs.is_null() {
            return Err(());
        }
        // A typed kernel pointer (`struct pt_regs *`): the verifier checks each load against
        // the struct's members and makes it fault-safe, so no helper call is needed per read.
        // SAFETY: word indices within `struct pt_regs`.
        let word = |index: usize| unsafe { core::ptr::read_volatile(regs.add(index)) };
        if Some(word(ORIG_AX_WORD)) != kind.syscall_nr() {
            return Err(());
        }
        return Ok(ARG_WORDS.map(word));
    }
    if at == ArgsAt::KernelStack as u32 {
        let stack_at = member(Member::TaskStack);
        if stack_at == 0 {
            return Err(());
        }
        // SAFETY: the current task plus an offset from this kernel's BTF; the read is checked.
        let stack =
            unsafe { bpf_probe_read_kernel((bpf_get_current_task() + stack_at) as *const u64) };
        return match stack {
            Ok(stack) if stack != 0 => {
                args_from(stack + u64::from(setting(&config().pt_regs_offset)), kind)
            }
            _ => Err(()),
        };
    }
    Err(())
}
