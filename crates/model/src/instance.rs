//! The actual LRP: one instance of an LRP at an index, and its state machine.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::task::truncate;
use crate::validate::limits;
use crate::{CrashPolicy, Generation, Name, Restart, Timestamp};

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
    /// On a draining cell, kept (and routable) until its replacement runs or crashes,
    /// or the cell goes.
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

/// The lifecycle moves of an instance row, as the server applies them. Each returns the
/// next row (generation unchanged: the store sets it) or why the move is not allowed
/// from the row as it is.
impl Instance {
    /// A cell takes the instance: the scheduler records this before sending the work.
    pub fn claim(&self, key: InstanceKey, now: Timestamp) -> Result<Instance, InvalidTransition> {
        let mut next = self.clone();
        next.state = InstanceState::Claimed;
        next.key = Some(key);
        next.placement_error = None;
        next.since = now;
        self.check_transition(&next)?;
        Ok(next)
    }

    /// The cell holding the instance reports it running at `address`.
    pub fn run(
        &self,
        instance_id: &str,
        address: String,
        ports: Vec<PortMapping>,
        routable: bool,
        now: Timestamp,
    ) -> Result<Instance, InvalidTransition> {
        self.require_key(instance_id)?;
        let mut next = self.clone();
        if next.state != InstanceState::Running {
            next.since = now;
        }
        next.state = InstanceState::Running;
        next.address = Some(address);
        next.ports = ports;
        next.routable = routable;
        self.check_transition(&next)?;
        Ok(next)
    }

    /// The cell holding the instance reports that it crashed. The crash count rises (or
    /// starts over after a long healthy run) and the policy decides: restart now (the
    /// row goes back to UNCLAIMED for placement) or later (CRASHED until convergence
    /// sees the backoff over) or never (CRASHED for good). The container is gone either
    /// way, so the key and network details are cleared.
    pub fn crash(
        &self,
        instance_id: &str,
        reason: &str,
        policy: &CrashPolicy,
        now: Timestamp,
    ) -> Result<Instance, InvalidTransition> {
        self.require_key(instance_id)?;
        let ran_for = (self.state == InstanceState::Running).then(|| now.millis_since(self.since));
        let mut next = self.clone();
        next.crash_count = policy.next_crash_count(self.crash_count, ran_for);
        next.crash_reason = Some(truncate(reason, limits::REASON_BYTES));
        next.state = match policy.restart(next.crash_count) {
            Restart::Now => InstanceState::Unclaimed,
            Restart::AfterMillis(_) | Restart::Never => InstanceState::Crashed,
        };
        // A move to CRASHED is checked with the key of the container that crashed (the
        // actor, as in Diego's CrashActualLRP), a move to UNCLAIMED without one; either
        // way the stored row then forgets the key.
        if next.state == InstanceState::Unclaimed {
            next.key = None;
        }
        self.check_transition(&next)?;
        next.key = None;
        next.address = None;
        next.ports = Vec::new();
        next.routable = false;
        next.since = now;
        Ok(next)
    }

    /// The cell holding this RUNNING ordinary instance drains (Diego's
    /// `EvacuateRunningActualLRP`): returns the EVACUATING copy, which keeps the
    /// container's key, address, ports and readiness so it stays routable while it waits,
    /// and the ordinary row back to UNCLAIMED (crash count kept) for a replacement
    /// elsewhere. The server writes both in one commit; the copy goes when the
    /// replacement runs.
    pub fn evacuate(
        &self,
        instance_id: &str,
        now: Timestamp,
    ) -> Result<(Instance, Instance), InvalidTransition> {
        self.require_key(instance_id)?;
        if (self.presence, self.state) != (Presence::Ordinary, InstanceState::Running) {
            return Err(InvalidTransition {
                what: "instance",
                from: format!("{} {}", self.presence, self.state),
                to: format!(
                    "{} (only a running ordinary instance hands over)",
                    Presence::Evacuating
                ),
            });
        }
        let mut evacuating = self.clone();
        evacuating.presence = Presence::Evacuating;
        self.check_transition(&evacuating)?;
        Ok((evacuating, self.unclaim(now)?))
    }

    /// Back to UNCLAIMED without a crash: its container stopped or its placement is to be
    /// retried (a stale claim, a crash whose backoff is over).
    pub fn unclaim(&self, now: Timestamp) -> Result<Instance, InvalidTransition> {
        let mut next = self.clone();
        next.state = InstanceState::Unclaimed;
        next.key = None;
        next.address = None;
        next.ports = Vec::new();
        next.routable = false;
        next.since = now;
        self.check_transition(&next)?;
        Ok(next)
    }

    /// Placement failed: the instance stays UNCLAIMED with the reason a user can read.
    pub fn unplaceable(&self, reason: &str) -> Instance {
        let mut next = self.clone();
        next.placement_error = Some(truncate(reason, limits::REASON_BYTES));
        next
    }

    /// When a CRASHED instance may be placed again under `policy`, or `None` if never.
    pub fn restart_at(&self, policy: &CrashPolicy) -> Option<Timestamp> {
        match policy.restart(self.crash_count) {
            Restart::Now => Some(self.since),
            Restart::AfterMillis(ms) => Some(self.since.plus_millis(ms)),
            Restart::Never => None,
        }
    }

    fn require_key(&self, instance_id: &str) -> Result<(), InvalidTransition> {
        match &self.key {
            Some(key) if key.instance_id == instance_id => Ok(()),
            _ => Err(InvalidTransition {
                what: "instance",
                from: format!("{}/{} {}", self.lrp, self.index, self.state),
                to: format!("a report for container {instance_id}, which no longer holds it"),
            }),
        }
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
    fn lifecycle() {
        let lrp = Name::parse("lrp", "web").unwrap();
        let domain = Name::parse("domain", "default").unwrap();
        let policy = CrashPolicy::default();
        let fresh = Instance::unclaimed(lrp, 0, domain, Timestamp(0));
        let key = key("cell-a", "i1").unwrap();
        let claimed = fresh.claim(key.clone(), Timestamp(10)).unwrap();
        assert_eq!((claimed.state, claimed.since), (Claimed, Timestamp(10)));
        assert!(
            claimed
                .run("other", "10.0.0.1".into(), vec![], true, Timestamp(20))
                .is_err()
        );
        let running = claimed
            .run("i1", "10.0.0.1".into(), vec![], true, Timestamp(20))
            .unwrap();
        assert_eq!((running.state, running.since), (Running, Timestamp(20)));
        // Crashes 1 and 2 restart at once (UNCLAIMED), crash 3 waits 30 s.
        let first = running
            .crash("i1", "exit 1", &policy, Timestamp(30))
            .unwrap();
        assert_eq!(
            (first.state, first.crash_count, first.key.clone()),
            (Unclaimed, 1, None)
        );
        let again = first.claim(key.clone(), Timestamp(31)).unwrap();
        let second = again.crash("i1", "exit 1", &policy, Timestamp(32)).unwrap();
        assert_eq!((second.state, second.crash_count), (Unclaimed, 2));
        let third = second
            .claim(key.clone(), Timestamp(33))
            .unwrap()
            .crash("i1", "exit 1", &policy, Timestamp(34))
            .unwrap();
        assert_eq!((third.state, third.crash_count), (Crashed, 3));
        assert_eq!(third.restart_at(&policy), Some(Timestamp(30_034)));
        // A long healthy run starts the count over.
        let long = third
            .unclaim(Timestamp(40_000))
            .unwrap()
            .claim(key.clone(), Timestamp(40_001))
            .unwrap()
            .run("i1", "a".into(), vec![], true, Timestamp(40_002))
            .unwrap()
            .crash("i1", "oom", &policy, Timestamp(40_002 + 300_000))
            .unwrap();
        assert_eq!((long.state, long.crash_count), (Unclaimed, 1));
        let unplaceable = fresh.unplaceable("insufficient resources: memory");
        assert_eq!(
            unplaceable.placement_error.as_deref(),
            Some("insufficient resources: memory")
        );
        assert_eq!(
            claimed.claim(key, Timestamp(11)).unwrap().placement_error,
            None
        );
    }

    #[test]
    fn only_a_running_ordinary_instance_evacuates() {
        use Presence::*;
        let lrp = Name::parse("lrp", "web").unwrap();
        let domain = Name::parse("domain", "default").unwrap();
        // (presence, state, the reporting container holds it, allowed)
        let table = [
            (Ordinary, Running, true, true),
            (Ordinary, Running, false, false),
            (Ordinary, Claimed, true, false),
            (Ordinary, Unclaimed, false, false),
            (Ordinary, Crashed, false, false),
            (Evacuating, Running, true, false),
            (Suspect, Running, true, false),
        ];
        for (presence, state, holds, allowed) in table {
            let mut row = Instance::unclaimed(lrp.clone(), 2, domain.clone(), Timestamp(5));
            row.presence = presence;
            row.state = state;
            row.crash_count = 1;
            row.generation = 7;
            if state != Unclaimed && state != Crashed {
                row.key = key("cell-a", if holds { "i1" } else { "i9" });
                row.address = Some("10.0.0.1".into());
                row.routable = true;
            }
            let got = row.evacuate("i1", Timestamp(50));
            assert_eq!(got.is_ok(), allowed, "{presence} {state}: {got:?}");
            let Ok((evacuating, replacement)) = got else {
                continue;
            };
            // The copy is the container as it was, still routable; the ordinary row
            // waits for a new placement, crash count kept.
            assert_eq!(
                evacuating,
                Instance {
                    presence: Evacuating,
                    ..row.clone()
                }
            );
            assert_eq!(
                (
                    replacement.presence,
                    replacement.state,
                    replacement.key.clone(),
                    replacement.address.clone(),
                    replacement.routable,
                    replacement.crash_count,
                    replacement.since,
                ),
                (Ordinary, Unclaimed, None, None, false, 1, Timestamp(50))
            );
            assert!(row.check_transition(&replacement).is_ok());
        }
    }

    #[test]
    fn a_running_report_updates_readiness_and_address_in_place() {
        let lrp = Name::parse("lrp", "web").unwrap();
        let domain = Name::parse("domain", "default").unwrap();
        let ports = vec![PortMapping {
            container_port: 8080,
            host_port: 61000,
        }];
        let running = Instance::unclaimed(lrp, 0, domain, Timestamp(0))
            .claim(key("cell-a", "i1").unwrap(), Timestamp(1))
            .unwrap()
            .run("i1", "10.0.0.1".into(), ports.clone(), false, Timestamp(2))
            .unwrap();
        // The same report again changes nothing, not even `since`: the server skips
        // the write.
        let again = running
            .run("i1", "10.0.0.1".into(), ports.clone(), false, Timestamp(9))
            .unwrap();
        assert_eq!(again, running);
        // Readiness passes: the row changes, RUNNING since the same moment.
        let ready = running
            .run("i1", "10.0.0.1".into(), ports.clone(), true, Timestamp(9))
            .unwrap();
        assert_eq!((ready.routable, ready.since), (true, Timestamp(2)));
        let moved = ready
            .run("i1", "10.0.0.2".into(), vec![], true, Timestamp(10))
            .unwrap();
        assert_eq!(
            (moved.address.as_deref(), moved.ports.len()),
            (Some("10.0.0.2"), 0)
        );
        // An evacuating copy's readiness is updated the same way.
        let (evacuating, _) = ready.evacuate("i1", Timestamp(11)).unwrap();
        let unready = evacuating
            .run("i1", "10.0.0.1".into(), ports, false, Timestamp(12))
            .unwrap();
        assert_eq!(
            (unready.presence, unready.routable),
            (Presence::Evacuating, false)
        );
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
