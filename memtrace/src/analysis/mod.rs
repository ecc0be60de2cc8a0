//! Analysis: what the model's numbers mean. The plain-English explanation under each process,
//! the Go release-mode verdict, and the [`snapshot::Snapshot`] every output renders.

pub mod advice;
mod by_name;
pub mod cgroups;
pub mod explain;
pub mod golang;
pub mod groups;
pub mod process;
pub mod selection;
pub mod snapshot;
pub mod stacks;

pub use by_name::{ByName, Name};
