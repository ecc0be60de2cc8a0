//! How lost records read: the line that ends every report and the end-of-run warning.

use std::fmt::Write as _;

use crate::kernel::LostCounts;

/// The line that ends every report: how many records the kernel side dropped, why, on which
/// CPUs, and what to do about it.
pub fn lost_text(out: &mut String, lost: &LostCounts) {
    if lost.total() == 0 {
        let _ = writeln!(out, "lost events: 0");
        return;
    }
    let _ = writeln!(
        out,
        "lost events: {} — totals above are undercounts{}",
        lost_summary(lost),
        remedies(lost)
    );
}

/// `N (reason: n [cpuX=n]; …)`, every reason with a count.
pub fn lost_summary(lost: &LostCounts) -> String {
    let per_cpu = |counts: &[u64]| {
        counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(cpu, n)| format!("cpu{cpu}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let parts: Vec<String> = lost
        .iter()
        .filter(|(_, counts)| counts.iter().sum::<u64>() > 0)
        .map(|(why, counts)| {
            format!(
                "{}: {} [{}]",
                why.describe(),
                counts.iter().sum::<u64>(),
                per_cpu(counts)
            )
        })
        .collect();
    format!("{} ({})", lost.total(), parts.join("; "))
}

/// `; retry with …` for each reason with a count and a remedy.
pub fn remedies(lost: &LostCounts) -> String {
    lost.iter()
        .filter(|(_, counts)| counts.iter().sum::<u64>() > 0)
        .filter_map(|(why, _)| why.remedy())
        .map(|remedy| format!("; {remedy}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use memtrace_common::lost::Lost;

    use super::*;

    /// Every lost reason appears in the text with its count, by construction; only a full ring
    /// buffer asks for a larger one (a report once read `lost events: N ()` and advised it).
    #[test]
    fn every_lost_reason_is_named() {
        for &why in Lost::ALL {
            let lost = LostCounts::default().with(why, vec![2, 0]);
            let mut out = String::new();
            lost_text(&mut out, &lost);
            assert!(
                out.contains(&format!("({}: 2 [cpu0=2])", why.describe())),
                "{why:?}: {out}"
            );
            assert_eq!(
                out.contains("--ring-size"),
                why == Lost::RingFull,
                "{why:?}: {out}"
            );
        }
    }
}
