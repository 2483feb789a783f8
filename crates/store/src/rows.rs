//! What every implementation agrees on about rows: their keys, the events a mutation
//! appends, and the rules of locks and presences. Kept here so the in-memory fake and
//! the SQL store cannot drift apart.

use model::{Generation, Instance, Lrp, Name, Presence, Task, Timestamp};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{EventKind, Expect, LockKind, LockRecord, LockRequest, Mutation, StoreError};

pub(crate) const LRP: &str = "lrp";
pub(crate) const INSTANCE: &str = "instance";
pub(crate) const TASK: &str = "task";
pub(crate) const DOMAIN: &str = "domain";
pub(crate) const LOCK: &str = "lock";
pub(crate) const EVENT: &str = "event";

/// The key an instance is named by in errors: `web/0/ORDINARY`.
pub(crate) fn instance_key(lrp: &Name, index: u32, presence: Presence) -> String {
    format!("{lrp}/{index}/{presence}")
}

/// The kind and key of the row a mutation touches, for error messages.
pub(crate) fn target(mutation: &Mutation) -> (&'static str, String) {
    match mutation {
        Mutation::PutLrp { lrp, .. } => (LRP, lrp.spec.name.to_string()),
        Mutation::DeleteLrp { name, .. } => (LRP, name.to_string()),
        Mutation::PutInstance { instance: i, .. } => {
            (INSTANCE, instance_key(&i.lrp, i.index, i.presence))
        }
        Mutation::DeleteInstance {
            lrp,
            index,
            presence,
            ..
        } => (INSTANCE, instance_key(lrp, *index, *presence)),
        Mutation::PutTask { task, .. } => (TASK, task.id.to_string()),
        Mutation::DeleteTask { id, .. } => (TASK, id.to_string()),
        Mutation::PutDomain { domain } => (DOMAIN, domain.name.to_string()),
    }
}

/// Serializes a row for storage or an event, once: the text is what the row's `data`
/// column and its event store, and what the event carries. Model rows are plain
/// derived data, so this only fails if a model type gains a serializer that can fail;
/// that is reported, not panicked on.
pub(crate) fn to_json<T: Serialize + ?Sized>(
    kind: &'static str,
    key: &str,
    row: &T,
) -> Result<Box<RawValue>, StoreError> {
    serde_json::value::to_raw_value(row).map_err(|e| StoreError::Corrupt {
        kind,
        key: key.to_owned(),
        reason: format!("cannot encode: {e}"),
    })
}

/// The event data of a removal: the key of the removed row.
pub(crate) fn lrp_removed(name: &Name) -> Box<RawValue> {
    #[derive(Serialize)]
    struct Key<'a> {
        name: &'a Name,
    }
    removed_key(&Key { name })
}

pub(crate) fn instance_removed(lrp: &Name, index: u32, presence: Presence) -> Box<RawValue> {
    #[derive(Serialize)]
    struct Key<'a> {
        lrp: &'a Name,
        index: u32,
        presence: Presence,
    }
    removed_key(&Key {
        lrp,
        index,
        presence,
    })
}

pub(crate) fn task_removed(id: &Name) -> Box<RawValue> {
    #[derive(Serialize)]
    struct Key<'a> {
        id: &'a Name,
    }
    removed_key(&Key { id })
}

fn removed_key<T: Serialize>(key: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(key).expect("a key of names and numbers always encodes")
}

/// A put sets the row's generation from its condition; the caller's value is ignored.
pub(crate) fn with_generation_lrp(lrp: &Lrp, generation: Generation) -> Lrp {
    let mut lrp = lrp.clone();
    lrp.generation = generation;
    lrp
}

pub(crate) fn with_generation_instance(instance: &Instance, generation: Generation) -> Instance {
    let mut instance = instance.clone();
    instance.generation = generation;
    instance
}

pub(crate) fn with_generation_task(task: &Task, generation: Generation) -> Task {
    let mut task = task.clone();
    task.generation = generation;
    task
}

/// The event kind of a put or delete, by whether it created the row.
pub(crate) fn put_event(kind: &'static str, created: bool) -> EventKind {
    match (kind, created) {
        (LRP, true) => EventKind::LrpCreated,
        (LRP, false) => EventKind::LrpChanged,
        (INSTANCE, true) => EventKind::InstanceCreated,
        (INSTANCE, false) => EventKind::InstanceChanged,
        (TASK, true) => EventKind::TaskCreated,
        (TASK, false) => EventKind::TaskChanged,
        _ => EventKind::DomainChanged,
    }
}

/// The generation a put gives its row, or why the put's condition fails.
pub(crate) fn next_generation(
    kind: &'static str,
    key: &str,
    current: Option<Generation>,
    expect: Expect,
) -> Result<Generation, StoreError> {
    match (expect, current) {
        (Expect::Absent, None) => Ok(1),
        (Expect::Absent, Some(_)) => Err(StoreError::AlreadyExists {
            kind,
            key: key.to_owned(),
        }),
        (Expect::Generation(expected), Some(actual)) if expected == actual => Ok(actual + 1),
        (Expect::Generation(expected), Some(actual)) => Err(StoreError::StaleGeneration {
            kind,
            key: key.to_owned(),
            expected,
            actual,
        }),
        (Expect::Generation(_), None) => Err(StoreError::NotFound {
            kind,
            key: key.to_owned(),
        }),
    }
}

/// Whether a delete's condition holds.
pub(crate) fn check_delete(
    kind: &'static str,
    key: &str,
    current: Option<Generation>,
    expected: Generation,
) -> Result<(), StoreError> {
    next_generation(kind, key, current, Expect::Generation(expected)).map(|_| ())
}

/// Whether the lock `record` is still held at `now`.
pub(crate) fn is_live(record: &LockRecord, now: Timestamp) -> bool {
    now < record.expires_at
}

/// What an acquire does, decided from the row as it is now. Both implementations read
/// the row (inside their write transaction), call this, and write what it says.
#[derive(Debug)]
pub(crate) struct Acquired {
    /// The row to store.
    pub record: LockRecord,
    /// Whether `record.fence` is a new token, so the global counter moved on to it.
    pub new_token: bool,
    /// Presence events to append, in order.
    pub events: Vec<(EventKind, Box<RawValue>)>,
}

/// The rules of locks: the same owner renews and keeps its token; another owner waits
/// until the holder's TTL has passed, then takes over with `next_fence`.
pub(crate) fn acquire(
    current: Option<&LockRecord>,
    request: &LockRequest,
    next_fence: u64,
) -> Result<Acquired, StoreError> {
    let expires_at = request.now.plus_millis(request.ttl_ms);
    let mut events = Vec::new();
    let (fence, new_token) = match current {
        Some(held) if held.owner == request.owner => (held.fence, false),
        Some(held) if is_live(held, request.now) => {
            return Err(StoreError::LockHeld {
                key: held.key.clone(),
                owner: held.owner.clone(),
            });
        }
        Some(expired) => {
            // The old holder's TTL passed without a sweep: it expires now, as it would
            // have in `expire_locks`, so watchers see it go before the new one comes.
            if expired.kind == LockKind::Presence {
                events.push((
                    EventKind::PresenceExpired,
                    to_json(LOCK, &expired.key, expired)?,
                ));
            }
            (next_fence, true)
        }
        None => (next_fence, true),
    };
    let record = LockRecord {
        key: request.key.clone(),
        owner: request.owner.clone(),
        kind: request.kind,
        value: request.value.clone(),
        fence,
        expires_at,
    };
    if record.kind == LockKind::Presence {
        let event = match current {
            Some(held) if !new_token => (held.value != record.value || held.kind != record.kind)
                .then_some(EventKind::PresenceChanged),
            _ => Some(EventKind::PresenceCreated),
        };
        if let Some(kind) = event {
            events.push((kind, to_json(LOCK, &record.key, &record)?));
        }
    }
    Ok(Acquired {
        record,
        new_token,
        events,
    })
}

/// The event of a released or expired lock: presences only, with the whole record so a
/// watcher knows which cell went away.
pub(crate) fn lock_gone(
    record: &LockRecord,
    kind: EventKind,
) -> Result<Option<(EventKind, Box<RawValue>)>, StoreError> {
    if record.kind != LockKind::Presence {
        return Ok(None);
    }
    Ok(Some((kind, to_json(LOCK, &record.key, record)?)))
}

/// The fence check of a commit: the lock must still be held with this token at `now`.
pub(crate) fn check_fence(
    fence: &crate::Fence,
    current: Option<&LockRecord>,
    now: Timestamp,
) -> Result<(), StoreError> {
    match current {
        Some(held) if held.fence == fence.token && is_live(held, now) => Ok(()),
        _ => Err(StoreError::Fenced {
            key: fence.key.clone(),
            token: fence.token,
        }),
    }
}

/// The wall clock, for the one write that carries no `now`: a release's event time.
pub(crate) fn wall_clock() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp(ms)
}
