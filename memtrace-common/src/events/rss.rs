//! RSS per address space, from `kmem/rss_stat`.

use crate::pod;

named_enum! {
    /// The RSS counters the kernel keeps per mm (`MM_FILEPAGES`, `MM_ANONPAGES`,
    /// `MM_SWAPENTS`, `MM_SHMEMPAGES`): `rss_stat`'s `member` field.
    pub enum RssMember {
        File = 0 => "file",
        Anon = 1 => "anon",
        Swap = 2 => "swap",
        Shmem = 3 => "shmem",
    }
}

/// Number of [`RssMember`]s. A power of two: the kernel programs mask indices with it.
pub const RSS_MEMBERS: usize = RssMember::COUNT;
const _: () = assert!(RSS_MEMBERS.is_power_of_two());

/// RSS of one address space (mm), keyed by the tracepoint's `mm_id`.
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
pub struct RssState {
    /// The process owning the mm: learnt from its own updates (`curr` = 1).
    pub tgid: u32,
    pub _pad: u32,
    /// Latest size in bytes per member; -1 until first seen.
    pub size: [i64; RSS_MEMBERS],
    /// Bytes removed per member by other tasks (kswapd, another process's reclaim, the OOM
    /// reaper) while the owner did not run: memory taken away, not given back.
    pub external_drop: [u64; RSS_MEMBERS],
}

pod!(RssState);

/// Every RSS counter of an address space went back to zero without reclaim: it was torn down
/// (its process exited, or exec replaced it). Its state is dropped so that a new mm allocated
/// at the same address, which gets the same `mm_id`, is never taken for it; what reclaim had
/// taken from it travels here.
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
pub struct AddressSpaceGone {
    /// [`super::EventKind::AddressSpaceGone`] as `u32`.
    pub kind: u32,
    /// The process that owned it.
    pub tgid: u32,
    /// [`RssState::external_drop`] at the end.
    pub taken: [u64; RSS_MEMBERS],
}

impl super::Record for AddressSpaceGone {
    const KINDS: &'static [super::EventKind] = &[super::EventKind::AddressSpaceGone];
}

pod!(AddressSpaceGone);
