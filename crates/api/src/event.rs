//! Messages of the event stream (`GET /v1/events`, Server-Sent Events).

use serde::{Deserialize, Serialize};

/// The `data` of one Server-Sent Event. The SSE `id` is `seq` (the cursor to resume
/// from with `Last-Event-ID`) and the SSE `event` is `kind`.
///
/// Kinds: `lrp_created|changed|removed`, `instance_created|changed|removed`,
/// `task_created|changed|removed`, `domain_changed`, `cell_appeared|changed|removed|expired`,
/// and `resync`, sent first when the cursor is older than the oldest event kept: the
/// reader missed events and must list what it needs afresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub seq: u64,
    pub kind: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// The row after the change; for removals, its key.
    pub data: serde_json::Value,
}
