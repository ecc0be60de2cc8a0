//! Output: everything memtrace prints or serves, rendered from [`crate::analysis::snapshot`]
//! (reports, the live view, the metrics page) or from decoded events (JSON event lines).

pub mod exporter;
pub mod groups;
pub mod json;
pub mod live;
pub mod lost;
pub mod placement;
pub mod prometheus;
pub mod reclaim;
pub mod stacks;
pub mod stdout;
pub mod text;
pub mod verdict;
