//! How madvise totals read in every output: one entry per advice value.

use std::collections::BTreeMap;

use memtrace_common::advice;
use schemars::JsonSchema;
use serde::Serialize;

use crate::model::counts::AdviceTotals;

/// One advice value's totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdviceView {
    pub advice: u32,
    /// FREE, DONTNEED, …; the number as text when Linux does not define it.
    pub name: String,
    /// True for DONTNEED, DONTNEED_LOCKED, FREE, REMOVE, PAGEOUT.
    pub release: bool,
    /// Every call, failed ones included.
    pub calls: u64,
    pub failed: u64,
    /// Covered by the calls that succeeded.
    pub bytes: u64,
}

/// `FREE`, `DONTNEED`, …; a value Linux does not define is shown as its number.
pub fn advice_name(value: u32) -> String {
    advice::name(value).map_or_else(|| value.to_string(), str::to_owned)
}

/// Totals by advice value, in advice order.
pub fn advice_views(by_advice: &BTreeMap<u32, AdviceTotals>) -> Vec<AdviceView> {
    by_advice
        .iter()
        .map(|(&value, t)| AdviceView {
            advice: value,
            name: advice_name(value),
            release: advice::is_release(value),
            calls: t.calls,
            failed: t.failed,
            bytes: t.bytes,
        })
        .collect()
}
