//! Messages of the event stream (`GET /v1/events`, Server-Sent Events).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The `data` of one Server-Sent Event. The SSE `id` is `seq` (the cursor to resume
/// from with `Last-Event-ID`) and the SSE `event` is `kind`.
///
/// Kinds: `lrp_created|changed|removed`, `instance_created|changed|removed`,
/// `task_created|changed|removed`, `domain_changed`, `cell_appeared|changed|removed|expired`,
/// and `resync`, sent first when the cursor is older than the oldest event kept: the
/// reader missed events and must list what it needs afresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMessage {
    pub seq: u64,
    pub kind: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// The row after the change; for removals, its key. Kept as JSON text, so the
    /// server passes on what the store wrote without decoding it; parse `data.get()`
    /// for its fields.
    pub data: Box<RawValue>,
}

/// Messages are equal when they say the same thing in the same words.
impl PartialEq for EventMessage {
    fn eq(&self, other: &EventMessage) -> bool {
        self.seq == other.seq
            && self.kind == other.kind
            && self.at == other.at
            && self.data.get() == other.data.get()
    }
}
