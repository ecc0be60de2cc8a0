//! How reports name where a process runs, for every report that says it.

use crate::model::container::{Container, Pod};

/// `podman container 4f797c539e6c`, `pod <uid> (burstable)`: what a cgroup's path names.
pub fn placement_notes(container: Option<&Container>, pod: Option<&Pod>) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(container) = container {
        notes.push(container.to_string());
    }
    if let Some(pod) = pod {
        notes.push(format!("pod {} ({})", pod.uid, pod.qos.name()));
    }
    notes
}
