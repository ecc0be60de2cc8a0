//! Caller stacks (`--stacks`): the user stack of each memory syscall and the kernel and user
//! stacks of each reclaim stall, counted in the kernel per process, stack and call. No record
//! per call crosses to userspace: only one [`StackSeen`] per new stack, so userspace can
//! symbolize it while the process still lives.
//!
//! A stack is identified by a 64-bit hash of its frames (its [`StackRef::id`]). The kernel's
//! own stack-trace map (`BPF_MAP_TYPE_STACK_TRACE`) was not used: it keeps one stack per hash
//! bucket and refuses a second stack landing in a taken bucket, so with a few dozen stacks one
//! is lost every few runs; distinct stacks sharing a 64-bit hash are as likely as two random
//! 64-bit numbers being equal.

use crate::{
    events::{EventKind, Record},
    pod,
};

/// Frames kept per stack. `bpf_get_stack` is asked for one more: when it fills that slot too,
/// the stack was deeper and is marked truncated.
pub const MAX_FRAMES: usize = 63;
/// Frames asked of `bpf_get_stack`.
pub const WALK_FRAMES: usize = MAX_FRAMES + 1;

/// The segment selectors every entry from user mode saves in `pt_regs` (`__USER_CS`,
/// `__USER_DS`; where `pt_regs` is: `crate::regs`): what tells the registers found there from
/// anything else (a KASAN kernel's larger stack puts them elsewhere, and the check fails).
pub const USER_CS: u64 = 0x33;
pub const USER_SS: u64 = 0x2b;

/// `kernel.perf_event_max_stack` also caps every walk (the default is 127); below
/// [`WALK_FRAMES`] a stack that reaches it may be truncated without the kernel saying so.
pub const MAX_STACK_SYSCTL: &str = "/proc/sys/kernel/perf_event_max_stack";

named_enum! {
    /// What a counted stack led to.
    pub enum StackSite {
        Madvise = 0 => "madvise",
        /// Counted for the caller, whose code asked; the memory advised is another process's.
        ProcessMadvise = 1 => "process_madvise",
        Mmap = 2 => "mmap",
        Munmap = 3 => "munmap",
        Mremap = 4 => "mremap",
        Brk = 5 => "brk",
        /// A direct reclaim stall: kernel and user stack at its end.
        DirectReclaim = 6 => "direct_reclaim",
        MemcgReclaim = 7 => "memcg_reclaim",
    }
}

named_enum! {
    /// How an `mremap` or `brk` call changed the address space ([`StackKey::detail`]).
    pub enum Change {
        Grow = 0 => "grow",
        Shrink = 1 => "shrink",
        /// `brk(0)`: asks for the break, changes nothing.
        Query = 2 => "query",
        /// `brk` whose earlier break was not seen: by how much it moved is unknown.
        Unknown = 3 => "unknown",
    }
}

/// What the counts are kept per: a process, what it called (with the advice, or how the
/// mapping changed) and from where. The process is its tgid and start time, so a pid that
/// passes to another process starts new counts rather than adding to the old one's.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct StackKey {
    pub tgid: u32,
    /// A [`StackSite`] as `u32`.
    pub site: u32,
    /// madvise's advice; a [`Change`] for mremap and brk; 0 otherwise.
    pub detail: u32,
    pub _pad: u32,
    /// When the process started: its leader's `start_boottime` (ns); 0 when unknown here
    /// (no BTF).
    pub start_ns: u64,
    /// [`StackRef::id`] of the user stack; 0 when there is none (a kernel thread) or it could
    /// not be read.
    pub user: u64,
    /// [`StackRef::id`] of the kernel stack (reclaim stalls); 0 otherwise.
    pub kernel: u64,
}

/// What was counted for one [`StackKey`]. Updated with atomic adds from every CPU.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct StackCounts {
    /// Calls (or stalls).
    pub calls: u64,
    /// Calls that returned an error.
    pub failed: u64,
    /// Bytes covered by the calls that succeeded (page-rounded as the kernel does); for brk
    /// and mremap, by how much they moved the break or the mapping.
    pub bytes: u64,
    /// Reclaim stalls: time stalled and pages reclaimed.
    pub stall_ns: u64,
    pub reclaimed_pages: u64,
}

/// A stored stack: whose (a process: tgid and start time), which, and whether kernel or user.
/// The same frames in another process are another stack: the addresses mean something only
/// with its memory map.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct StackRef {
    pub tgid: u32,
    /// 1 for a kernel stack.
    pub kernel: u32,
    /// As [`StackKey::start_ns`].
    pub start_ns: u64,
    /// A hash of the frames, never 0.
    pub id: u64,
}

/// [`Frames::flags`]: the stack top held a return address ([`Frames::leaf`]).
pub const LEAF_READ: u32 = 1;
/// [`Frames::flags`]: the thread's saved user registers could not be found, so the word at
/// the top of its stack was not read.
pub const NO_REGISTERS: u32 = 2;

/// The frames of one stack, innermost first.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct Frames {
    /// Frames the walk returned: up to [`WALK_FRAMES`]; more than [`MAX_FRAMES`] means the
    /// stack was deeper than what is kept.
    pub len: u32,
    pub flags: u32,
    /// User stacks: the word at the user stack pointer when the thread entered the kernel,
    /// if it follows a call instruction. A function that makes its system call without
    /// setting up a frame (libc's and Go's syscall wrappers) leaves its caller out of the
    /// frame-pointer chain; its return address is this word, which userspace adds back once
    /// the function's unwind information confirms it (`kernel/unwind.rs`).
    pub leaf: u64,
    pub ips: [u64; MAX_FRAMES],
}

impl Default for Frames {
    fn default() -> Self {
        Self {
            len: 0,
            flags: 0,
            leaf: 0,
            ips: [0; MAX_FRAMES],
        }
    }
}

impl Frames {
    /// Whether the walk filled every slot and one more: the outermost frames are missing.
    pub fn truncated(&self) -> bool {
        self.len as usize > MAX_FRAMES
    }

    /// The frames kept, innermost first.
    pub fn ips(&self) -> &[u64] {
        &self.ips[..(self.len as usize).min(MAX_FRAMES)]
    }
}

/// A new stack was stored: userspace symbolizes it now, while the process lives.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct StackSeen {
    /// [`EventKind::StackSeen`] as `u32`.
    pub kind: u32,
    pub _pad: u32,
    pub stack: StackRef,
}

impl Record for StackSeen {
    const KINDS: &'static [EventKind] = &[EventKind::StackSeen];
}

pod!(StackKey, StackCounts, StackRef, Frames, StackSeen);
