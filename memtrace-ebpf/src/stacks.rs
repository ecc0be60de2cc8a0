//! Caller stacks (`--stacks`, `memtrace_common::stacks`): counted per process, stack and call
//! in kernel maps, with one record per new stack only. The syscall exit paths call
//! [`syscall`], the reclaim stall path [`stall`], one line each; without `--stacks` both
//! return at once on a global the verifier knows, so the rest is pruned.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user, generated::bpf_get_stack,
    },
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use memtrace_common::{
    events::{EventKind, stall::ReclaimKind, syscall::SYSCALL_ARGS, totals::page_round_up},
    lost::Lost,
    members::Member,
    regs::CS_WORD,
    stacks::{
        Change, Frames, LEAF_READ, MAX_FRAMES, NO_REGISTERS, StackCounts, StackKey, StackRef,
        StackSeen, StackSite, USER_CS, USER_SS, WALK_FRAMES,
    },
};

use crate::{
    config::{config, member, setting},
    ring::{count_lost, emit},
    task,
};

/// Sized by the loader with `--stacks` (one entry each without).
#[map]
static STACK_COUNTS: HashMap<StackKey, StackCounts> = HashMap::with_max_entries(1, 0);

#[map]
static STACKS: HashMap<StackRef, Frames> = HashMap::with_max_entries(1, 0);

/// Each process's break after its last brk, to tell by how much the next one moves it.
#[map]
static LAST_BREAK: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1, 0);

/// One walk: [`Frames`] plus the extra slot that tells a truncated stack. Too big for the
/// program's 512-byte stack, so per CPU: slot 0 for the user stack, 1 for the kernel's.
#[repr(C)]
struct Walk {
    len: u32,
    flags: u32,
    leaf: u64,
    ips: [u64; WALK_FRAMES],
}

#[map]
static WALKS: PerCpuArray<Walk> = PerCpuArray::with_max_entries(2, 0);

const USER: u32 = 0;
const KERNEL: u32 = 1;
const EEXIST: i32 = 17;

#[inline(always)]
fn enabled() -> bool {
    setting(&config().stacks) != 0
}

/// Counts a completed memory syscall under its caller's user stack: `args` are the raw
/// arguments, `ret` the result. Each program passes its own syscall as a constant, so the
/// compiler keeps only that syscall's arm of [`classify`] (the verifier then walks one).
#[inline(always)]
pub fn syscall<C: EbpfContext>(
    ctx: &C,
    tgid: u32,
    kind: EventKind,
    args: &[u64; SYSCALL_ARGS],
    ret: i64,
) {
    if !enabled() {
        return;
    }
    let Some((site, detail, bytes, failed)) = classify(tgid, kind, args, ret) else {
        return;
    };
    let key = StackKey {
        tgid,
        site: site as u32,
        detail,
        _pad: 0,
        start_ns: task::process_start_ns(task::current()),
        user: walk(ctx, USER),
        kernel: 0,
    };
    let counts = StackCounts {
        calls: 1,
        failed: u64::from(failed),
        bytes,
        stall_ns: 0,
        reclaimed_pages: 0,
    };
    count(&key, &counts);
}

/// Counts a finished reclaim stall under the kernel stack that stalled and the user stack
/// that led there (none for a kernel thread).
#[inline(always)]
pub fn stall<C: EbpfContext>(ctx: &C, tgid: u32, kind: u32, latency_ns: u64, reclaimed: u64) {
    if !enabled() {
        return;
    }
    let site = if kind == ReclaimKind::Direct as u32 {
        StackSite::DirectReclaim
    } else {
        StackSite::MemcgReclaim
    };
    let key = StackKey {
        tgid,
        site: site as u32,
        detail: 0,
        _pad: 0,
        start_ns: task::process_start_ns(task::current()),
        user: walk(ctx, USER),
        kernel: walk(ctx, KERNEL),
    };
    let counts = StackCounts {
        calls: 1,
        failed: 0,
        bytes: 0,
        stall_ns: latency_ns,
        reclaimed_pages: reclaimed,
    };
    count(&key, &counts);
}

/// Forgets a pid's last break when the pid passes to a new process.
#[inline(always)]
pub fn forget(pid: u32) {
    if enabled() {
        let _ = LAST_BREAK.remove(pid);
    }
}

/// `(site, detail, bytes, failed)` of a call, counted as the report counts it
/// (`memtrace/src/model/event.rs`): lengths rounded up to pages, bytes only for calls that
/// succeeded.
#[inline(always)]
fn classify(
    tgid: u32,
    kind: EventKind,
    args: &[u64; SYSCALL_ARGS],
    ret: i64,
) -> Option<(StackSite, u32, u64, bool)> {
    let failed = ret < 0;
    let ok = |bytes: u64| if failed { 0 } else { bytes };
    Some(match kind {
        EventKind::Madvise => (
            StackSite::Madvise,
            args[2] as u32,
            ok(pages(args[1])),
            failed,
        ),
        // Returns the bytes advised.
        EventKind::ProcessMadvise => (
            StackSite::ProcessMadvise,
            args[3] as u32,
            ok(ret as u64),
            failed,
        ),
        EventKind::Mmap => (StackSite::Mmap, 0, ok(pages(args[1])), failed),
        EventKind::Munmap => (StackSite::Munmap, 0, ok(pages(args[1])), failed),
        EventKind::Mremap => {
            let (old, new) = (pages(args[1]), pages(args[2]));
            let (change, bytes) = if new >= old {
                (Change::Grow, new - old)
            } else {
                (Change::Shrink, old - new)
            };
            (StackSite::Mremap, change as u32, ok(bytes), failed)
        }
        EventKind::Brk => brk(tgid, args[0], ret as u64),
        _ => return None,
    })
}

/// brk returns the break after the call; it fails by leaving it where it was.
#[inline(always)]
fn brk(tgid: u32, requested: u64, result: u64) -> (StackSite, u32, u64, bool) {
    // SAFETY: a map value copied out at once.
    let previous = unsafe { LAST_BREAK.get(tgid) }.copied();
    let _ = LAST_BREAK.insert(tgid, result, 0);
    if requested == 0 {
        return (StackSite::Brk, Change::Query as u32, 0, false);
    }
    let failed = result != requested;
    let (change, bytes) = match previous {
        Some(before) if result >= before => (Change::Grow, result - before),
        Some(before) => (Change::Shrink, before - result),
        None => (Change::Unknown, 0),
    };
    (StackSite::Brk, change as u32, bytes, failed)
}

#[inline(always)]
fn pages(len: u64) -> u64 {
    page_round_up(len, u64::from(setting(&config().page_size)))
}

/// Walks the current thread's user (`USER`) or kernel (`KERNEL`) stack into its per-CPU slot
/// and returns its id, or 0 when there is none.
#[inline(always)]
fn walk<C: EbpfContext>(ctx: &C, which: u32) -> u64 {
    let Some(slot) = WALKS.get_ptr_mut(which) else {
        return 0;
    };
    // SAFETY: this CPU's slot; preemption is off while the program runs.
    let w = unsafe { &mut *slot };
    let flags = if which == USER {
        u64::from(BPF_F_USER_STACK)
    } else {
        0
    };
    // SAFETY: the buffer is the slot's `ips`, of exactly the size passed. The kernel zeroes
    // what it does not fill, so equal stacks leave equal slots.
    let copied = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            w.ips.as_mut_ptr().cast(),
            (WALK_FRAMES * 8) as u32,
            flags,
        )
    };
    if copied <= 0 {
        return 0;
    }
    let len = (copied as usize / 8).min(WALK_FRAMES);
    w.len = len as u32;
    w.flags = 0;
    w.leaf = 0;
    if which == USER {
        read_leaf(w);
    }
    // Stored only when its counts are first inserted (`count`); it waits in the slot.
    hash(w, len) | 1
}

/// A 64-bit hash of the frames and the leaf word (FNV-1a's multiply with an extra shift).
///
/// Straight-line code: the frames are hashed in blocks of 16, written out, the slots past
/// `len` being zero (the kernel clears them), so a partly used block hashes the same every
/// time. A loop that stopped at `len` made the verifier walk the rest of the program once per
/// possible length (minutes of loading under QEMU on Debian's 6.1), and Debian's 5.10 refused
/// a loop over the blocks (EINVAL): it could not bound it.
#[inline(always)]
fn hash(w: &Walk, len: usize) -> u64 {
    let h = 0xcbf2_9ce4_8422_2325u64 ^ (len as u64) ^ w.leaf.rotate_left(17);
    let h = block(h, &w.ips, 0);
    if len <= 16 {
        return h;
    }
    let h = block(h, &w.ips, 16);
    if len <= 32 {
        return h;
    }
    let h = block(h, &w.ips, 32);
    if len <= 48 {
        return h;
    }
    block(h, &w.ips, 48)
}

/// Mixes the 16 frames from `first` into `h`, unrolled by hand: no back-edge for the verifier.
#[inline(always)]
fn block(mut h: u64, ips: &[u64; WALK_FRAMES], first: usize) -> u64 {
    macro_rules! mix {
        ($($i:literal)+) => {
            $(
                h = (h ^ ips[first + $i]).wrapping_mul(0x0000_0100_0000_01b3);
                h ^= h >> 29;
            )+
        };
    }
    mix!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    h
}

const _: () = assert!(WALK_FRAMES == 64);

/// Reads the word at the top of the thread's user stack, keeping it when it follows a call
/// instruction (see `Frames::leaf`). The user stack pointer comes from the registers the
/// entry code saved at the top of the thread's kernel stack (`Config::pt_regs_offset`, as the
/// syscall exit programs find the arguments); they are checked by their user-mode segment
/// selectors before anything is trusted.
#[inline(always)]
fn read_leaf(w: &mut Walk) {
    let stack_at = member(Member::TaskStack);
    let regs_at = u64::from(setting(&config().pt_regs_offset));
    if stack_at == 0 || regs_at == 0 {
        w.flags |= NO_REGISTERS;
        return;
    }
    // SAFETY: the current task and a member offset from this kernel's BTF; every read is
    // checked by the probe helpers.
    let task = unsafe { bpf_get_current_task() };
    let Ok(stack) = (unsafe { bpf_probe_read_kernel((task + stack_at) as *const u64) }) else {
        w.flags |= NO_REGISTERS;
        return;
    };
    let cs = stack + regs_at + 8 * CS_WORD as u64;
    // cs, flags, sp, ss.
    let Ok(tail) = (unsafe { bpf_probe_read_kernel(cs as *const [u64; 4]) }) else {
        w.flags |= NO_REGISTERS;
        return;
    };
    if tail[0] != USER_CS || tail[3] != USER_SS {
        w.flags |= NO_REGISTERS;
        return;
    }
    // SAFETY: user memory, read with the checked helper.
    let Ok(word) = (unsafe { bpf_probe_read_user(tail[2] as *const u64) }) else {
        return;
    };
    let Ok(code) = (unsafe { bpf_probe_read_user(word.wrapping_sub(8) as *const [u8; 8]) }) else {
        return;
    };
    if follows_call(&code) {
        w.leaf = word;
        w.flags |= LEAF_READ;
    }
}

/// Whether the 8 bytes before an address end with an x86-64 call: `call rel32` (E8), or
/// `call r/m64` (FF /2) through a register, a register with an 8-bit displacement, or a
/// 32-bit displacement (RIP-relative included). A data word passes by chance about once in
/// a hundred; a return address always does.
#[inline(always)]
fn follows_call(code: &[u8; 8]) -> bool {
    let modrm_call = |modrm: u8, mode: u8| modrm & 0xf8 == mode | 0x10;
    code[3] == 0xe8
        || (code[6] == 0xff && (modrm_call(code[7], 0xc0) || modrm_call(code[7], 0x00)))
        || (code[5] == 0xff && modrm_call(code[6], 0x40))
        || (code[2] == 0xff && (code[3] == 0x15 || modrm_call(code[3], 0x80)))
}

/// Adds `add` to the key's counts; a new key also stores its stacks.
#[inline(always)]
fn count(key: &StackKey, add: &StackCounts) {
    if let Some(counts) = STACK_COUNTS.get_ptr_mut(key) {
        add_to(counts, add);
        return;
    }
    store(key, key.user, USER);
    if key.kernel != 0 {
        store(key, key.kernel, KERNEL);
    }
    match STACK_COUNTS.insert(key, add, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Another CPU inserted it meanwhile.
        Err(e) if e == -EEXIST => {
            if let Some(counts) = STACK_COUNTS.get_ptr_mut(key) {
                add_to(counts, add);
            }
        }
        Err(_) => count_lost(Lost::StackTableFull),
    }
}

#[inline(always)]
fn add_to(counts: *mut StackCounts, add: &StackCounts) {
    // SAFETY: a map value shared by every CPU, changed only with atomic adds.
    unsafe {
        add_atomic(&raw mut (*counts).calls, add.calls);
        add_atomic(&raw mut (*counts).failed, add.failed);
        add_atomic(&raw mut (*counts).bytes, add.bytes);
        add_atomic(&raw mut (*counts).stall_ns, add.stall_ns);
        add_atomic(&raw mut (*counts).reclaimed_pages, add.reclaimed_pages);
    }
}

/// The plain atomic add (BPF_XADD) every supported kernel has. Adding a zero is skipped, not
/// just wasted: LLVM turns an atomic add of a known 0 into an atomic OR, which kernels before
/// 5.12 refuse ("BPF_STX uses reserved fields").
///
/// # Safety
/// `to` points into a map value, 8-byte aligned.
#[inline(always)]
unsafe fn add_atomic(to: *mut u64, value: u64) {
    if value != 0 {
        // SAFETY: per the contract; the old value is not used.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(to, value) };
    }
}

/// Stores the stack walked into slot `which` unless it is stored already, and tells
/// userspace about a new one at once, so it can read the process's memory map while the
/// process lives. Userspace deletes the frames once it has read them: the table holds only
/// stacks not yet read, and a stack stored again (for another key) is announced again.
#[inline(always)]
fn store(key: &StackKey, id: u64, which: u32) {
    if id == 0 {
        return;
    }
    let Some(slot) = WALKS.get_ptr(which) else {
        return;
    };
    let stack = StackRef {
        tgid: key.tgid,
        kernel: which,
        start_ns: key.start_ns,
        id,
    };
    // SAFETY: `Walk` starts with a `Frames`; the map copies that many bytes.
    let frames = unsafe { &*slot.cast::<Frames>() };
    match STACKS.insert(stack, frames, u64::from(BPF_NOEXIST)) {
        Ok(()) => announce(stack),
        Err(e) if e == -EEXIST => {}
        Err(_) => count_lost(Lost::StackTableFull),
    }
}

#[inline(always)]
fn announce(stack: StackRef) {
    emit(
        StackSeen {
            kind: EventKind::StackSeen as u32,
            _pad: 0,
            stack,
        },
        true,
    );
}

const _: () =
    assert!(size_of::<Walk>() == size_of::<Frames>() + 8 && MAX_FRAMES + 1 == WALK_FRAMES);
