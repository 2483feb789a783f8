//! An in-memory store with exactly the semantics of the SQL one: the fake that tests and
//! the simulation run against.
//!
//! One mutex around ordered maps. A commit applies its mutations one by one while
//! keeping an undo log, so later mutations see earlier ones (a create then an update of
//! the same row in one commit works), and a failure puts every touched row back before
//! anything is visible to another caller.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use model::{Domain, Generation, Instance, Lrp, Name, Presence, Task, Timestamp};
use serde_json::value::RawValue;

use crate::rows::{self, INSTANCE, LRP, TASK, check_delete, next_generation};
use crate::{
    Commit, Committed, Event, EventKind, InstanceFilter, Lease, LockRecord, LockRequest, LrpFilter,
    Mutation, Result, Store, TaskFilter,
};

type InstanceId = (Name, u32, Presence);

/// The in-memory store. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    lrps: BTreeMap<Name, Lrp>,
    instances: BTreeMap<InstanceId, Instance>,
    tasks: BTreeMap<Name, Task>,
    domains: BTreeMap<Name, Domain>,
    locks: BTreeMap<String, LockRecord>,
    events: VecDeque<Event>,
    /// The last event sequence number handed out; never reused, even after pruning.
    last_seq: u64,
    /// The last fencing token handed out, across all keys.
    last_fence: u64,
}

/// How to put one row back if a later mutation of the same commit fails.
enum Undo {
    Lrp(Name, Option<Box<Lrp>>),
    Instance(InstanceId, Option<Box<Instance>>),
    Task(Name, Option<Box<Task>>),
    Domain(Name, Option<Domain>),
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied commit (commits
        // undo before returning), so the data behind a poisoned lock is still sound.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn append(&mut self, at: Timestamp, events: Vec<(EventKind, Box<RawValue>)>) -> Vec<Event> {
        events
            .into_iter()
            .map(|(kind, data)| {
                self.last_seq += 1;
                let event = Event {
                    seq: self.last_seq,
                    kind,
                    at,
                    data,
                };
                self.events.push_back(event.clone());
                event
            })
            .collect()
    }

    /// Applies one mutation, recording how to undo it; returns the new generation and
    /// the event to append.
    fn apply(
        &mut self,
        mutation: Mutation,
        undo: &mut Vec<Undo>,
    ) -> Result<(Generation, (EventKind, Box<RawValue>))> {
        let (kind, key) = rows::target(&mutation);
        match mutation {
            Mutation::PutLrp { lrp, expect } => {
                let name = lrp.spec.name.clone();
                let current = self.lrps.get(&name).map(|l| l.generation);
                let generation = next_generation(kind, &key, current, expect)?;
                let row = rows::with_generation_lrp(&lrp, generation);
                let data = rows::to_json(LRP, &key, &row)?;
                undo.push(Undo::Lrp(
                    name.clone(),
                    self.lrps.insert(name, row).map(Box::new),
                ));
                Ok((generation, (rows::put_event(LRP, current.is_none()), data)))
            }
            Mutation::DeleteLrp { name, expect } => {
                let current = self.lrps.get(&name).map(|l| l.generation);
                check_delete(kind, &key, current, expect)?;
                let data = rows::lrp_removed(&name);
                undo.push(Undo::Lrp(
                    name.clone(),
                    self.lrps.remove(&name).map(Box::new),
                ));
                Ok((0, (EventKind::LrpRemoved, data)))
            }
            Mutation::PutInstance { instance, expect } => {
                let id = (instance.lrp.clone(), instance.index, instance.presence);
                let current = self.instances.get(&id).map(|i| i.generation);
                let generation = next_generation(kind, &key, current, expect)?;
                let row = rows::with_generation_instance(&instance, generation);
                let data = rows::to_json(INSTANCE, &key, &row)?;
                undo.push(Undo::Instance(
                    id.clone(),
                    self.instances.insert(id, row).map(Box::new),
                ));
                Ok((
                    generation,
                    (rows::put_event(INSTANCE, current.is_none()), data),
                ))
            }
            Mutation::DeleteInstance {
                lrp,
                index,
                presence,
                expect,
            } => {
                let id = (lrp, index, presence);
                let current = self.instances.get(&id).map(|i| i.generation);
                check_delete(kind, &key, current, expect)?;
                let data = rows::instance_removed(&id.0, index, presence);
                undo.push(Undo::Instance(
                    id.clone(),
                    self.instances.remove(&id).map(Box::new),
                ));
                Ok((0, (EventKind::InstanceRemoved, data)))
            }
            Mutation::PutTask { task, expect } => {
                let id = task.id.clone();
                let current = self.tasks.get(&id).map(|t| t.generation);
                let generation = next_generation(kind, &key, current, expect)?;
                let row = rows::with_generation_task(&task, generation);
                let data = rows::to_json(TASK, &key, &row)?;
                undo.push(Undo::Task(
                    id.clone(),
                    self.tasks.insert(id, row).map(Box::new),
                ));
                Ok((generation, (rows::put_event(TASK, current.is_none()), data)))
            }
            Mutation::DeleteTask { id, expect } => {
                let current = self.tasks.get(&id).map(|t| t.generation);
                check_delete(kind, &key, current, expect)?;
                let data = rows::task_removed(&id);
                undo.push(Undo::Task(id.clone(), self.tasks.remove(&id).map(Box::new)));
                Ok((0, (EventKind::TaskRemoved, data)))
            }
            Mutation::PutDomain { domain } => {
                let data = rows::to_json(kind, &key, &domain)?;
                let name = domain.name.clone();
                undo.push(Undo::Domain(
                    name.clone(),
                    self.domains.insert(name, domain),
                ));
                Ok((0, (EventKind::DomainChanged, data)))
            }
        }
    }

    fn undo(&mut self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::Lrp(k, v) => restore(&mut self.lrps, k, v.map(|b| *b)),
                Undo::Instance(k, v) => restore(&mut self.instances, k, v.map(|b| *b)),
                Undo::Task(k, v) => restore(&mut self.tasks, k, v.map(|b| *b)),
                Undo::Domain(k, v) => restore(&mut self.domains, k, v),
            }
        }
    }
}

fn restore<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

#[async_trait]
impl Store for MemoryStore {
    async fn get_lrp(&self, name: &Name) -> Result<Option<Lrp>> {
        Ok(self.state().lrps.get(name).cloned())
    }

    async fn list_lrps(&self, filter: &LrpFilter) -> Result<Vec<Lrp>> {
        Ok(self
            .state()
            .lrps
            .values()
            .filter(|l| filter.domain.as_ref().is_none_or(|d| *d == l.spec.domain))
            .cloned()
            .collect())
    }

    async fn get_instances(&self, lrp: &Name, index: u32) -> Result<Vec<Instance>> {
        let state = self.state();
        Ok(state
            .instances
            .range(
                (lrp.clone(), index, Presence::Ordinary)..=(lrp.clone(), index, Presence::Suspect),
            )
            .map(|(_, i)| i.clone())
            .collect())
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        let state = self.state();
        let matches = |i: &&Instance| {
            filter.lrp.as_ref().is_none_or(|l| *l == i.lrp)
                && filter
                    .cell
                    .as_ref()
                    .is_none_or(|c| i.key.as_ref().is_some_and(|k| k.cell_id == *c))
                && filter.state.is_none_or(|s| s == i.state)
        };
        Ok(match &filter.lrp {
            // The map is ordered by (lrp, index, presence): one LRP is a range.
            Some(lrp) => state
                .instances
                .range((lrp.clone(), 0, Presence::Ordinary)..)
                .take_while(|((l, _, _), _)| l == lrp)
                .map(|(_, i)| i)
                .filter(matches)
                .cloned()
                .collect(),
            None => state.instances.values().filter(matches).cloned().collect(),
        })
    }

    async fn get_task(&self, id: &Name) -> Result<Option<Task>> {
        Ok(self.state().tasks.get(id).cloned())
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        let mut tasks: Vec<Task> = self
            .state()
            .tasks
            .values()
            .filter(|t| {
                filter.domain.as_ref().is_none_or(|d| *d == t.spec.domain)
                    && filter.state.is_none_or(|s| s == t.state)
                    && filter
                        .cell
                        .as_ref()
                        .is_none_or(|c| t.cell_id.as_ref() == Some(c))
            })
            .cloned()
            .collect();
        tasks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tasks)
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        Ok(self.state().domains.values().cloned().collect())
    }

    async fn commit(&self, commit: Commit) -> Result<Committed> {
        let mut state = self.state();
        if let Some(fence) = &commit.fence {
            rows::check_fence(fence, state.locks.get(&fence.key), commit.now)?;
        }
        let mut undo = Vec::with_capacity(commit.mutations.len());
        let mut generations = Vec::with_capacity(commit.mutations.len());
        let mut events = Vec::with_capacity(commit.mutations.len());
        for mutation in commit.mutations {
            match state.apply(mutation, &mut undo) {
                Ok((generation, event)) => {
                    generations.push(generation);
                    events.push(event);
                }
                Err(e) => {
                    state.undo(undo);
                    return Err(e);
                }
            }
        }
        let events = state.append(commit.now, events);
        Ok(Committed {
            generations,
            events,
        })
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let state = self.state();
        // Sequence numbers are dense within the kept log, so the start is arithmetic.
        let start = match state.events.front() {
            Some(first) => {
                usize::try_from(after.saturating_sub(first.seq - 1)).unwrap_or(usize::MAX)
            }
            None => return Ok(Vec::new()),
        };
        Ok(state
            .events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn event_bounds(&self) -> Result<Option<(u64, u64)>> {
        let state = self.state();
        Ok(state
            .events
            .front()
            .zip(state.events.back())
            .map(|(first, last)| (first.seq, last.seq)))
    }

    async fn prune_events(&self, keep: u64) -> Result<u64> {
        let mut state = self.state();
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        let excess = state.events.len().saturating_sub(keep);
        state.events.drain(..excess);
        Ok(excess as u64)
    }

    async fn acquire(&self, request: LockRequest) -> Result<Lease> {
        let mut state = self.state();
        let acquired = rows::acquire(
            state.locks.get(&request.key),
            &request,
            state.last_fence + 1,
        )?;
        if acquired.new_token {
            state.last_fence = acquired.record.fence;
        }
        let record = acquired.record;
        state.append(request.now, acquired.events);
        let lease = Lease {
            key: record.key.clone(),
            owner: record.owner.clone(),
            fence: record.fence,
            expires_at: record.expires_at,
        };
        state.locks.insert(record.key.clone(), record);
        Ok(lease)
    }

    async fn release(&self, key: &str, owner: &str) -> Result<()> {
        let mut state = self.state();
        if state.locks.get(key).is_none_or(|held| held.owner != owner) {
            return Ok(());
        }
        if let Some(record) = state.locks.remove(key) {
            let event = rows::lock_gone(&record, EventKind::PresenceRemoved)?;
            state.append(rows::wall_clock(), event.into_iter().collect());
        }
        Ok(())
    }

    async fn list_locks(&self, prefix: &str, now: Timestamp) -> Result<Vec<LockRecord>> {
        Ok(self
            .state()
            .locks
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r)
            .filter(|r| rows::is_live(r, now))
            .cloned()
            .collect())
    }

    async fn expire_locks(&self, now: Timestamp) -> Result<Vec<LockRecord>> {
        let mut state = self.state();
        let expired: Vec<LockRecord> = state
            .locks
            .values()
            .filter(|r| !rows::is_live(r, now))
            .cloned()
            .collect();
        let mut events = Vec::new();
        for record in &expired {
            events.extend(rows::lock_gone(record, EventKind::PresenceExpired)?);
        }
        for record in &expired {
            state.locks.remove(&record.key);
        }
        state.append(now, events);
        Ok(expired)
    }
}
