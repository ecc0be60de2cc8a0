//! Naming GFP allocation flags. Bit positions move between kernel versions (flags come and
//! go), so the single-bit `__GFP_*` names are taken from this kernel's tracepoint format
//! (`print fmt` of vmscan begin events), with Linux 6.18's table as the fallback.

use std::{fs, path::Path};

/// Single-bit `__GFP_*` flags of Linux 6.18 (`include/linux/gfp_types.h`).
const FALLBACK: &[(u32, &str)] = &[
    (0, "__GFP_DMA"),
    (1, "__GFP_HIGHMEM"),
    (2, "__GFP_DMA32"),
    (3, "__GFP_MOVABLE"),
    (4, "__GFP_RECLAIMABLE"),
    (5, "__GFP_HIGH"),
    (6, "__GFP_IO"),
    (7, "__GFP_FS"),
    (8, "__GFP_ZERO"),
    (10, "__GFP_DIRECT_RECLAIM"),
    (11, "__GFP_KSWAPD_RECLAIM"),
    (12, "__GFP_WRITE"),
    (13, "__GFP_NOWARN"),
    (14, "__GFP_RETRY_MAYFAIL"),
    (15, "__GFP_NOFAIL"),
    (16, "__GFP_NORETRY"),
    (17, "__GFP_MEMALLOC"),
    (18, "__GFP_COMP"),
    (19, "__GFP_NOMEMALLOC"),
    (20, "__GFP_HARDWALL"),
    (21, "__GFP_THISNODE"),
    (22, "__GFP_ACCOUNT"),
    (23, "__GFP_ZEROTAGS"),
];

/// Common composite masks, built from single bits, tried first (as the kernel's own
/// `show_gfp_flags` does) so `GFP_HIGHUSER_MOVABLE` reads as such, not as seven bits.
const COMPOSITES: &[(&str, &[&str])] = &[
    (
        "GFP_HIGHUSER_MOVABLE",
        &[
            "__GFP_DIRECT_RECLAIM",
            "__GFP_KSWAPD_RECLAIM",
            "__GFP_IO",
            "__GFP_FS",
            "__GFP_HARDWALL",
            "__GFP_HIGHMEM",
            "__GFP_MOVABLE",
        ],
    ),
    (
        "GFP_HIGHUSER",
        &[
            "__GFP_DIRECT_RECLAIM",
            "__GFP_KSWAPD_RECLAIM",
            "__GFP_IO",
            "__GFP_FS",
            "__GFP_HARDWALL",
            "__GFP_HIGHMEM",
        ],
    ),
    (
        "GFP_USER",
        &[
            "__GFP_DIRECT_RECLAIM",
            "__GFP_KSWAPD_RECLAIM",
            "__GFP_IO",
            "__GFP_FS",
            "__GFP_HARDWALL",
        ],
    ),
    (
        "GFP_KERNEL_ACCOUNT",
        &[
            "__GFP_DIRECT_RECLAIM",
            "__GFP_KSWAPD_RECLAIM",
            "__GFP_IO",
            "__GFP_FS",
            "__GFP_ACCOUNT",
        ],
    ),
    (
        "GFP_KERNEL",
        &[
            "__GFP_DIRECT_RECLAIM",
            "__GFP_KSWAPD_RECLAIM",
            "__GFP_IO",
            "__GFP_FS",
        ],
    ),
    (
        "GFP_NOFS",
        &["__GFP_DIRECT_RECLAIM", "__GFP_KSWAPD_RECLAIM", "__GFP_IO"],
    ),
    (
        "GFP_NOIO",
        &["__GFP_DIRECT_RECLAIM", "__GFP_KSWAPD_RECLAIM"],
    ),
    ("GFP_ATOMIC", &["__GFP_HIGH", "__GFP_KSWAPD_RECLAIM"]),
    ("GFP_NOWAIT", &["__GFP_KSWAPD_RECLAIM", "__GFP_NOWARN"]),
];

/// Names for GFP flag values.
#[derive(Clone, Debug)]
pub struct GfpNames {
    /// `(mask, name)`, composites first.
    masks: Vec<(u64, String)>,
}

impl Default for GfpNames {
    fn default() -> Self {
        let bits = FALLBACK.iter().map(|&(bit, name)| (bit, name.to_owned()));
        Self::from_bits(bits.collect())
    }
}

impl GfpNames {
    /// From a vmscan tracepoint's format file; the 6.18 table if it cannot be read or parsed.
    pub fn from_format_file(events: &Path) -> Self {
        let format = events.join("vmscan/mm_vmscan_direct_reclaim_begin/format");
        fs::read_to_string(format)
            .ok()
            .map(|text| parse_single_bits(&text))
            .filter(|bits| bits.len() >= 8)
            .map_or_else(Self::default, Self::from_bits)
    }

    fn from_bits(bits: Vec<(u32, String)>) -> Self {
        let mask_of = |name: &str| {
            bits.iter()
                .find(|(_, n)| n == name)
                .map(|&(bit, _)| 1u64 << bit)
        };
        let mut masks: Vec<(u64, String)> = COMPOSITES
            .iter()
            .filter_map(|&(name, parts)| {
                let mask = parts
                    .iter()
                    .map(|part| mask_of(part))
                    .try_fold(0u64, |acc, m| m.map(|m| acc | m))?;
                Some((mask, name.to_owned()))
            })
            .collect();
        masks.extend(bits.into_iter().map(|(bit, name)| (1u64 << bit, name)));
        Self { masks }
    }

    /// `GFP_HIGHUSER_MOVABLE|__GFP_COMP`-style text; unknown bits as hex; `none` for 0.
    pub fn name(&self, flags: u64) -> String {
        if flags == 0 {
            return "none".to_owned();
        }
        let mut left = flags;
        let mut parts = Vec::new();
        for (mask, name) in &self.masks {
            if left & mask == *mask && left & mask != 0 {
                parts.push(name.clone());
                left &= !mask;
            }
        }
        if left != 0 {
            parts.push(format!("{left:#x}"));
        }
        parts.join("|")
    }
}

/// `(bit, name)` of every `{( unsigned long)(( gfp_t)((((1UL))) << (N))), "__GFP_X"}` entry.
fn parse_single_bits(format: &str) -> Vec<(u32, String)> {
    let mut bits = Vec::new();
    for entry in format.split('{').skip(1) {
        let Some((value, name)) = entry.split_once(", \"") else {
            continue;
        };
        let Some(name) = name.split('"').next() else {
            continue;
        };
        // A single bit is exactly one shift of 1UL and no `|` or `&`.
        if !name.starts_with("__GFP_") || value.contains('|') || value.contains('&') {
            continue;
        }
        let Some(shift) = value
            .rsplit("<< (")
            .next()
            .and_then(|s| s.split(')').next())
        else {
            continue;
        };
        if let Ok(bit) = shift.trim().parse::<u32>()
            && bit < 64
            && value.matches("<<").count() == 1
        {
            bits.push((bit, name.to_owned()));
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    const FMT: &str = r#"print fmt: "order=%d gfp_flags=%s", REC->order, (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7)))), "GFP_KERNEL"}, {( unsigned long)(( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))), "__GFP_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (6))), "__GFP_IO"}, {( unsigned long)(( gfp_t)((((1UL))) << (7))), "__GFP_FS"}, {( unsigned long)(( gfp_t)((((1UL))) << (10))), "__GFP_DIRECT_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (11))), "__GFP_KSWAPD_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (18))), "__GFP_COMP"}, { 0, ((void *)0) } ) : "none""#;

    #[test]
    fn parses_single_bits_only() {
        let bits = parse_single_bits(FMT);
        assert_eq!(
            bits,
            vec![
                (6, "__GFP_IO".to_owned()),
                (7, "__GFP_FS".to_owned()),
                (10, "__GFP_DIRECT_RECLAIM".to_owned()),
                (11, "__GFP_KSWAPD_RECLAIM".to_owned()),
                (18, "__GFP_COMP".to_owned()),
            ]
        );
    }

    #[test]
    fn names_composites_first() {
        let names = GfpNames::default();
        // GFP_HIGHUSER_MOVABLE on 6.18: 0x100cca.
        assert_eq!(names.name(0x10_0cca), "GFP_HIGHUSER_MOVABLE");
        assert_eq!(names.name(0x14_0cca), "GFP_HIGHUSER_MOVABLE|__GFP_COMP");
        assert_eq!(names.name(0xcc0), "GFP_KERNEL");
        assert_eq!(names.name(0), "none");
        assert_eq!(names.name(1 << 40), "0x10000000000");
    }
}
