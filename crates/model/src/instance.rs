//! The actual LRP: one instance of an LRP at an index, and its state machine.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Generation, Name, Timestamp};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Wanted, not yet placed on a cell (or placement failed; see `placement_error`).
    Unclaimed,
    /// A cell has taken it and is starting its container.
    Claimed,
    /// Its container runs and passed its startup check.
    Running,
    /// It exited or failed a check; the crash policy decides when it starts again.
    Crashed,
}

/// Why a row exists next to the ordinary one for the same index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Presence {
    Ordinary,
    /// On a draining cell, kept until its replacement runs.
    Evacuating,
    /// On a cell whose presence expired, kept until its replacement runs or the cell
    /// returns.
    Suspect,
}

/// Which container on which cell an instance is: set when a cell claims it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceKey {
    pub instance_id: String,
    pub cell_id: Name,
}

/// A host port a cell mapped to a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
}

/// One instance: the row for (lrp, index, presence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub lrp: Name,
    pub index: u32,
    pub domain: Name,
    pub presence: Presence,
    pub state: InstanceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<InstanceKey>,
    /// The address the cell reaches the container at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// Whether the readiness check passes, so routers may send it traffic.
    #[serde(default)]
    pub routable: bool,
    #[serde(default)]
    pub crash_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_reason: Option<String>,
    /// Why the last placement failed, in words for a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_error: Option<String>,
    /// When the instance entered its current state.
    pub since: Timestamp,
    pub generation: Generation,
}

/// A change the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} may not go from {from} to {to}")]
pub struct InvalidTransition {
    pub what: &'static str,
    pub from: String,
    pub to: String,
}

impl Instance {
    /// A new UNCLAIMED ordinary instance.
    pub fn unclaimed(lrp: Name, index: u32, domain: Name, now: Timestamp) -> Instance {
        Instance {
            lrp,
            index,
            domain,
            presence: Presence::Ordinary,
            state: InstanceState::Unclaimed,
            key: None,
            address: None,
            ports: Vec::new(),
            routable: false,
            crash_count: 0,
            crash_reason: None,
            placement_error: None,
            since: now,
            generation: 0,
        }
    }

    /// Checks that this row may become `next`: the state machine on the state and its
    /// instance key, and the presence machine. Both are Diego's (`AllowsTransitionTo`).
    pub fn check_transition(&self, next: &Instance) -> Result<(), InvalidTransition> {
        if (&self.lrp, self.index) != (&next.lrp, next.index) {
            return Err(InvalidTransition {
                what: "instance",
                from: format!("{}/{}", self.lrp, self.index),
                to: format!("{}/{}", next.lrp, next.index),
            });
        }
        self.state
            .check_transition(self.key.as_ref(), next.state, next.key.as_ref())?;
        self.presence.check_transition(next.presence)?;
        if next.presence != Presence::Ordinary
            && !matches!(next.state, InstanceState::Claimed | InstanceState::Running)
        {
            return Err(InvalidTransition {
                what: "instance",
                from: format!("{:?} {:?}", self.presence, self.state),
                to: format!(
                    "{:?} {:?} (only claimed or running instances are {:?})",
                    next.presence, next.state, next.presence
                ),
            });
        }
        Ok(())
    }
}

impl InstanceState {
    /// The instance-state table. `key` is the instance key before and after: some moves
    /// are only allowed by the cell that holds the instance, and UNCLAIMED never has a
    /// key.
    pub fn check_transition(
        self,
        key: Option<&InstanceKey>,
        to: InstanceState,
        to_key: Option<&InstanceKey>,
    ) -> Result<(), InvalidTransition> {
        use InstanceState::*;
        let same_key = key == to_key;
        let allowed = match (self, to) {
            (_, Unclaimed) => to_key.is_none(),
            (Unclaimed, Claimed | Running) => to_key.is_some(),
            (Claimed, Claimed | Crashed) => same_key,
            (Claimed, Running) => to_key.is_some(),
            (Running, Claimed | Running | Crashed) => same_key,
            (Crashed, Claimed | Running) => to_key.is_some() && (key.is_none() || same_key),
            (Unclaimed, Crashed) | (Crashed, Crashed) => false,
        };
        if allowed {
            Ok(())
        } else {
            let show = |state: InstanceState, key: Option<&InstanceKey>| match key {
                Some(k) => format!("{state} on {} ({})", k.cell_id, k.instance_id),
                None => state.to_string(),
            };
            Err(InvalidTransition {
                what: "instance",
                from: show(self, key),
                to: show(to, to_key),
            })
        }
    }
}

impl Presence {
    /// ORDINARY may become EVACUATING (its cell drains) or SUSPECT (its cell vanished);
    /// a SUSPECT row is promoted back when the cell returns; an EVACUATING row only
    /// ever goes away.
    pub fn check_transition(self, to: Presence) -> Result<(), InvalidTransition> {
        use Presence::*;
        let allowed = matches!(
            (self, to),
            (Ordinary, _) | (Suspect, Suspect | Ordinary) | (Evacuating, Evacuating)
        );
        if allowed {
            Ok(())
        } else {
            Err(InvalidTransition {
                what: "instance presence",
                from: format!("{self:?}"),
                to: format!("{to:?}"),
            })
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::Unclaimed => "UNCLAIMED",
            InstanceState::Claimed => "CLAIMED",
            InstanceState::Running => "RUNNING",
            InstanceState::Crashed => "CRASHED",
        })
    }
}

impl fmt::Display for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Presence::Ordinary => "ORDINARY",
            Presence::Evacuating => "EVACUATING",
            Presence::Suspect => "SUSPECT",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::*;

    fn key(cell: &str, id: &str) -> Option<InstanceKey> {
        Some(InstanceKey {
            instance_id: id.into(),
            cell_id: Name::parse("cell", cell).unwrap(),
        })
    }

    #[test]
    fn state_table() {
        let none = None;
        let a = key("cell-a", "i1");
        let b = key("cell-b", "i2");
        // (from, from key, to, to key, allowed): Diego's AllowsTransitionTo.
        let table = [
            (Unclaimed, &none, Unclaimed, &none, true),
            (Unclaimed, &none, Claimed, &a, true),
            (Unclaimed, &none, Running, &a, true),
            (Unclaimed, &none, Claimed, &none, false),
            (Unclaimed, &none, Crashed, &none, false),
            (Claimed, &a, Unclaimed, &none, true),
            (Claimed, &a, Unclaimed, &a, false),
            (Claimed, &a, Claimed, &a, true),
            (Claimed, &a, Claimed, &b, false),
            (Claimed, &a, Running, &a, true),
            (Claimed, &a, Running, &b, true),
            (Claimed, &a, Crashed, &a, true),
            (Claimed, &a, Crashed, &b, false),
            (Running, &a, Unclaimed, &none, true),
            (Running, &a, Claimed, &a, true),
            (Running, &a, Claimed, &b, false),
            (Running, &a, Running, &a, true),
            (Running, &a, Running, &b, false),
            (Running, &a, Crashed, &a, true),
            (Running, &a, Crashed, &b, false),
            (Crashed, &none, Unclaimed, &none, true),
            (Crashed, &none, Claimed, &a, true),
            (Crashed, &none, Running, &a, true),
            (Crashed, &a, Running, &b, false),
            (Crashed, &none, Crashed, &none, false),
        ];
        for (from, from_key, to, to_key, allowed) in table {
            let got = from.check_transition(from_key.as_ref(), to, to_key.as_ref());
            assert_eq!(
                got.is_ok(),
                allowed,
                "{from} {from_key:?} -> {to} {to_key:?}: {got:?}"
            );
        }
    }

    #[test]
    fn presence_table() {
        use Presence::*;
        let all = [Ordinary, Evacuating, Suspect];
        let allowed = [
            (Ordinary, Ordinary),
            (Ordinary, Evacuating),
            (Ordinary, Suspect),
            (Suspect, Suspect),
            (Suspect, Ordinary),
            (Evacuating, Evacuating),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.check_transition(to).is_ok(),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn only_placed_instances_evacuate_or_turn_suspect() {
        let lrp = Name::parse("lrp", "web").unwrap();
        let domain = Name::parse("domain", "default").unwrap();
        let unclaimed = Instance::unclaimed(lrp, 0, domain, Timestamp(1));
        let mut running = unclaimed.clone();
        running.state = Running;
        running.key = key("cell-a", "i1");
        assert!(unclaimed.check_transition(&running).is_ok());
        let mut evacuating = running.clone();
        evacuating.presence = Presence::Evacuating;
        assert!(running.check_transition(&evacuating).is_ok());
        let mut bad = unclaimed.clone();
        bad.presence = Presence::Suspect;
        assert!(unclaimed.check_transition(&bad).is_err());
        let mut other_index = running.clone();
        other_index.index = 1;
        assert!(running.check_transition(&other_index).is_err());
    }

    #[test]
    fn wire_names() {
        assert_eq!(serde_json::to_string(&Unclaimed).unwrap(), r#""UNCLAIMED""#);
        assert_eq!(
            serde_json::to_string(&Presence::Evacuating).unwrap(),
            r#""EVACUATING""#
        );
    }
}
