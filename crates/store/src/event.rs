//! The event log: every change to the store, in commit order.

use std::fmt;
use std::str::FromStr;

use model::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One change. `seq` orders all events and is the cursor a reader resumes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
    pub at: Timestamp,
    /// The row after the change (the whole LRP, instance, task, domain or lock record);
    /// for removals, the key of the removed row. Kept as the JSON text the store wrote,
    /// encoded once when the row was written: the event stream passes it through, and
    /// a reader that needs the fields parses `data.get()`.
    pub data: Box<RawValue>,
}

/// Events are equal when they say the same thing: the same text, as the store wrote it.
impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.seq == other.seq
            && self.kind == other.kind
            && self.at == other.at
            && self.data.get() == other.data.get()
    }
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LrpCreated,
    LrpChanged,
    LrpRemoved,
    InstanceCreated,
    InstanceChanged,
    InstanceRemoved,
    TaskCreated,
    TaskChanged,
    TaskRemoved,
    DomainChanged,
    PresenceCreated,
    PresenceChanged,
    PresenceRemoved,
    PresenceExpired,
}

/// The kind of row an event is about, for filtering a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    Lrp,
    Instance,
    Task,
    Domain,
    Presence,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::LrpCreated,
        EventKind::LrpChanged,
        EventKind::LrpRemoved,
        EventKind::InstanceCreated,
        EventKind::InstanceChanged,
        EventKind::InstanceRemoved,
        EventKind::TaskCreated,
        EventKind::TaskChanged,
        EventKind::TaskRemoved,
        EventKind::DomainChanged,
        EventKind::PresenceCreated,
        EventKind::PresenceChanged,
        EventKind::PresenceRemoved,
        EventKind::PresenceExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LrpCreated => "lrp_created",
            EventKind::LrpChanged => "lrp_changed",
            EventKind::LrpRemoved => "lrp_removed",
            EventKind::InstanceCreated => "instance_created",
            EventKind::InstanceChanged => "instance_changed",
            EventKind::InstanceRemoved => "instance_removed",
            EventKind::TaskCreated => "task_created",
            EventKind::TaskChanged => "task_changed",
            EventKind::TaskRemoved => "task_removed",
            EventKind::DomainChanged => "domain_changed",
            EventKind::PresenceCreated => "presence_created",
            EventKind::PresenceChanged => "presence_changed",
            EventKind::PresenceRemoved => "presence_removed",
            EventKind::PresenceExpired => "presence_expired",
        }
    }

    pub fn topic(self) -> Topic {
        use EventKind::*;
        match self {
            LrpCreated | LrpChanged | LrpRemoved => Topic::Lrp,
            InstanceCreated | InstanceChanged | InstanceRemoved => Topic::Instance,
            TaskCreated | TaskChanged | TaskRemoved => Topic::Task,
            DomainChanged => Topic::Domain,
            PresenceCreated | PresenceChanged | PresenceRemoved | PresenceExpired => {
                Topic::Presence
            }
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<EventKind, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind {s:?}"))
    }
}

impl Topic {
    pub const ALL: [Topic; 5] = [
        Topic::Lrp,
        Topic::Instance,
        Topic::Task,
        Topic::Domain,
        Topic::Presence,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Lrp => "lrp",
            Topic::Instance => "instance",
            Topic::Task => "task",
            Topic::Domain => "domain",
            Topic::Presence => "presence",
        }
    }
}

impl FromStr for Topic {
    type Err = String;

    fn from_str(s: &str) -> Result<Topic, String> {
        Topic::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown event topic {s:?} (one of lrp, instance, task, domain, presence)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert!(kind.as_str().starts_with(kind.topic().as_str()));
        }
    }
}
