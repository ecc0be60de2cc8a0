//! `madvise(2)` advice values (`MADV_*` from `include/uapi/asm-generic/mman-common.h`).

pub const NORMAL: u32 = 0;
pub const RANDOM: u32 = 1;
pub const SEQUENTIAL: u32 = 2;
pub const WILLNEED: u32 = 3;
pub const DONTNEED: u32 = 4;
pub const FREE: u32 = 8;
pub const REMOVE: u32 = 9;
pub const DONTFORK: u32 = 10;
pub const DOFORK: u32 = 11;
pub const MERGEABLE: u32 = 12;
pub const UNMERGEABLE: u32 = 13;
pub const HUGEPAGE: u32 = 14;
pub const NOHUGEPAGE: u32 = 15;
pub const DONTDUMP: u32 = 16;
pub const DODUMP: u32 = 17;
pub const WIPEONFORK: u32 = 18;
pub const KEEPONFORK: u32 = 19;
pub const COLD: u32 = 20;
pub const PAGEOUT: u32 = 21;
pub const POPULATE_READ: u32 = 22;
pub const POPULATE_WRITE: u32 = 23;
pub const DONTNEED_LOCKED: u32 = 24;
pub const COLLAPSE: u32 = 25;
pub const HWPOISON: u32 = 100;
pub const SOFT_OFFLINE: u32 = 101;
pub const GUARD_INSTALL: u32 = 102;
pub const GUARD_REMOVE: u32 = 103;

/// The name of an advice value without its `MADV_` prefix, or `None` for a value Linux does not
/// define.
pub const fn name(advice: u32) -> Option<&'static str> {
    Some(match advice {
        NORMAL => "NORMAL",
        RANDOM => "RANDOM",
        SEQUENTIAL => "SEQUENTIAL",
        WILLNEED => "WILLNEED",
        DONTNEED => "DONTNEED",
        FREE => "FREE",
        REMOVE => "REMOVE",
        DONTFORK => "DONTFORK",
        DOFORK => "DOFORK",
        MERGEABLE => "MERGEABLE",
        UNMERGEABLE => "UNMERGEABLE",
        HUGEPAGE => "HUGEPAGE",
        NOHUGEPAGE => "NOHUGEPAGE",
        DONTDUMP => "DONTDUMP",
        DODUMP => "DODUMP",
        WIPEONFORK => "WIPEONFORK",
        KEEPONFORK => "KEEPONFORK",
        COLD => "COLD",
        PAGEOUT => "PAGEOUT",
        POPULATE_READ => "POPULATE_READ",
        POPULATE_WRITE => "POPULATE_WRITE",
        DONTNEED_LOCKED => "DONTNEED_LOCKED",
        COLLAPSE => "COLLAPSE",
        HWPOISON => "HWPOISON",
        SOFT_OFFLINE => "SOFT_OFFLINE",
        GUARD_INSTALL => "GUARD_INSTALL",
        GUARD_REMOVE => "GUARD_REMOVE",
        _ => return None,
    })
}

/// The advice value for a name, with or without the `MADV_` prefix, in any case.
pub fn from_name(name: &str) -> Option<u32> {
    let name = match name.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("MADV_") => &name[5..],
        _ => name,
    };
    (0..=GUARD_REMOVE)
        .find(|&advice| self::name(advice).is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

/// Whether a successful call with this advice gives pages back to the system.
///
/// DONTNEED, DONTNEED_LOCKED and REMOVE free pages at once; FREE marks them lazily freeable
/// (they stay in RSS until reclaim); PAGEOUT reclaims them. Hints such as HUGEPAGE or COLD
/// release nothing by themselves and must never be counted as releases.
pub const fn is_release(advice: u32) -> bool {
    matches!(advice, DONTNEED | DONTNEED_LOCKED | FREE | REMOVE | PAGEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for advice in 0..200 {
            if let Some(n) = name(advice) {
                assert_eq!(from_name(n), Some(advice));
            }
        }
        assert_eq!(from_name("madv_free"), Some(FREE));
        assert_eq!(from_name("MADV_DONTNEED"), Some(DONTNEED));
        assert_eq!(from_name("bogus"), None);
        assert_eq!(name(7), None);
    }

    #[test]
    fn hints_are_not_releases() {
        for hint in [
            HUGEPAGE,
            NOHUGEPAGE,
            COLLAPSE,
            COLD,
            WILLNEED,
            POPULATE_WRITE,
        ] {
            assert!(!is_release(hint), "{hint}");
        }
        for release in [DONTNEED, FREE, REMOVE, PAGEOUT] {
            assert!(is_release(release), "{release}");
        }
    }
}
