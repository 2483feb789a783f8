//! Commits prepared for the writer. Everything about a mutation that does not depend on
//! the database is worked out here, in the caller's task, before the request is queued:
//! a put's new generation follows from its condition alone, so its row is stamped,
//! encoded to JSON and broken into the column values the writer binds; the event each
//! mutation appends is built here too. Callers run in parallel; the writer, which
//! applies one group at a time, is left to bind, execute and commit.
//!
//! Each row is encoded once, straight to text. The column values the writer binds are
//! shared strings (`Arc<str>`), so binding one, even twice (the row's `data` and its
//! event's), copies nothing on the writer's serial path.

use std::sync::Arc;

use model::{Domain, Generation, Instance, Lrp, Name, Presence, Task, Timestamp};
use serde_json::value::RawValue;

use super::{instance_state_name, int, presence_number, task_state_name};
use crate::rows::{self, DOMAIN, INSTANCE, LRP, TASK};
use crate::{Commit, EventKind, Expect, Fence, Mutation, Result};

/// A commit whose mutations are ready to write.
#[derive(Debug)]
pub(super) struct PreparedCommit {
    pub changes: Vec<Change>,
    pub fence: Option<Fence>,
    pub now: Timestamp,
}

/// One mutation, ready to write, with what it will have done once written.
#[derive(Debug)]
pub(super) struct Change {
    pub write: Write,
    pub applied: Applied,
    /// The row's kind and key, as errors name them.
    pub kind: &'static str,
    pub key: String,
}

/// What a mutation wrote, for its commit's answer and its event.
#[derive(Debug)]
pub(super) struct Applied {
    pub generation: Generation,
    pub kind: EventKind,
    /// The event's data, for the caller.
    pub data: Box<RawValue>,
    /// The same text as stored: the row's `data` column and the event's.
    pub text: Arc<str>,
}

#[derive(Debug)]
pub(super) enum Write {
    /// Written many per statement.
    Put(Put),
    /// A delete at an exact generation; `keys` are the values of [`Table::keys`].
    Delete {
        table: Table,
        keys: Vec<Column>,
        expect: Generation,
    },
    /// An unconditional upsert.
    Domain(Domain),
}

#[derive(Debug)]
pub(super) struct Put {
    pub table: Table,
    pub expect: Expect,
    /// The values of [`Table::keys`] then [`Table::values`], but for the last value,
    /// `data`, which is the change's [`Applied::text`].
    pub columns: Vec<Column>,
    /// The row's key as the put statements return it ([`Table::returning`]).
    pub returned: String,
}

/// A value to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Column {
    Text(Arc<str>),
    MaybeText(Option<Arc<str>>),
    Int(i64),
}

/// The tables whose rows are put under a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Table {
    Lrps,
    Instances,
    Tasks,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Lrps, Table::Instances, Table::Tasks];

    pub fn name(self) -> &'static str {
        match self {
            Table::Lrps => "lrps",
            Table::Instances => "instances",
            Table::Tasks => "tasks",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Table::Lrps => LRP,
            Table::Instances => INSTANCE,
            Table::Tasks => TASK,
        }
    }

    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Table::Lrps => &["name"],
            Table::Instances => &["lrp", "idx", "presence"],
            Table::Tasks => &["id"],
        }
    }

    /// The other columns, in the order [`Put::columns`] holds them; `data` is last.
    pub fn values(self) -> &'static [&'static str] {
        match self {
            Table::Lrps => &["domain", "generation", "data"],
            Table::Instances => &["domain", "state", "cell_id", "generation", "data"],
            Table::Tasks => &[
                "domain",
                "state",
                "cell_id",
                "created_at",
                "generation",
                "data",
            ],
        }
    }

    /// The key of a written row as one string, as [`Put::returned`] spells it.
    pub fn returning(self) -> &'static str {
        match self {
            Table::Lrps => "name",
            Table::Instances => "lrp || '/' || CAST(idx AS TEXT) || '/' || CAST(presence AS TEXT)",
            Table::Tasks => "id",
        }
    }
}

impl PreparedCommit {
    pub fn new(commit: Commit) -> Result<PreparedCommit> {
        Ok(PreparedCommit {
            changes: commit
                .mutations
                .into_iter()
                .map(Change::new)
                .collect::<Result<_>>()?,
            fence: commit.fence,
            now: commit.now,
        })
    }
}

fn text(name: &Name) -> Column {
    Column::Text(Arc::from(name.as_str()))
}

fn lrp_keys(name: &Name) -> Vec<Column> {
    vec![text(name)]
}

fn instance_keys(lrp: &Name, index: u32, presence: Presence) -> Vec<Column> {
    vec![
        text(lrp),
        Column::Int(i64::from(index)),
        Column::Int(presence_number(presence)),
    ]
}

fn task_keys(id: &Name) -> Vec<Column> {
    vec![text(id)]
}

impl Change {
    fn new(mutation: Mutation) -> Result<Change> {
        let (kind, key) = rows::target(&mutation);
        let (write, applied) = match mutation {
            Mutation::PutLrp { mut lrp, expect } => {
                lrp.generation = next_generation(expect);
                lrp_put(&lrp, expect, &key)?
            }
            Mutation::PutInstance {
                mut instance,
                expect,
            } => {
                instance.generation = next_generation(expect);
                instance_put(&instance, expect, &key)?
            }
            Mutation::PutTask { mut task, expect } => {
                task.generation = next_generation(expect);
                task_put(&task, expect, &key)?
            }
            Mutation::DeleteLrp { name, expect } => (
                Write::Delete {
                    table: Table::Lrps,
                    keys: lrp_keys(&name),
                    expect,
                },
                removed(EventKind::LrpRemoved, rows::lrp_removed(&name)),
            ),
            Mutation::DeleteInstance {
                lrp,
                index,
                presence,
                expect,
            } => (
                Write::Delete {
                    table: Table::Instances,
                    keys: instance_keys(&lrp, index, presence),
                    expect,
                },
                removed(
                    EventKind::InstanceRemoved,
                    rows::instance_removed(&lrp, index, presence),
                ),
            ),
            Mutation::DeleteTask { id, expect } => (
                Write::Delete {
                    table: Table::Tasks,
                    keys: task_keys(&id),
                    expect,
                },
                removed(EventKind::TaskRemoved, rows::task_removed(&id)),
            ),
            Mutation::PutDomain { domain } => {
                let data = rows::to_json(DOMAIN, &key, &domain)?;
                (
                    Write::Domain(domain),
                    applied(0, EventKind::DomainChanged, data),
                )
            }
        };
        Ok(Change {
            write,
            applied,
            kind,
            key,
        })
    }
}

/// The generation a put gives its row.
fn next_generation(expect: Expect) -> Generation {
    match expect {
        Expect::Absent => 1,
        Expect::Generation(g) => g + 1,
    }
}

fn lrp_put(lrp: &Lrp, expect: Expect, key: &str) -> Result<(Write, Applied)> {
    let mut columns = lrp_keys(&lrp.spec.name);
    columns.extend([text(&lrp.spec.domain), Column::Int(int(lrp.generation))]);
    let put = Put {
        table: Table::Lrps,
        expect,
        columns,
        returned: lrp.spec.name.to_string(),
    };
    encoded(put, lrp.generation, rows::to_json(LRP, key, lrp)?)
}

fn instance_put(i: &Instance, expect: Expect, key: &str) -> Result<(Write, Applied)> {
    let mut columns = instance_keys(&i.lrp, i.index, i.presence);
    columns.extend([
        text(&i.domain),
        Column::Text(Arc::from(instance_state_name(i.state))),
        Column::MaybeText(i.key.as_ref().map(|k| Arc::from(k.cell_id.as_str()))),
        Column::Int(int(i.generation)),
    ]);
    let put = Put {
        table: Table::Instances,
        expect,
        columns,
        returned: format!("{}/{}/{}", i.lrp, i.index, presence_number(i.presence)),
    };
    encoded(put, i.generation, rows::to_json(INSTANCE, key, i)?)
}

fn task_put(task: &Task, expect: Expect, key: &str) -> Result<(Write, Applied)> {
    let mut columns = task_keys(&task.id);
    columns.extend([
        text(&task.spec.domain),
        Column::Text(Arc::from(task_state_name(task.state))),
        Column::MaybeText(task.cell_id.as_ref().map(|c| Arc::from(c.as_str()))),
        Column::Int(int(task.created_at.0)),
        Column::Int(int(task.generation)),
    ]);
    let put = Put {
        table: Table::Tasks,
        expect,
        columns,
        returned: task.id.to_string(),
    };
    encoded(put, task.generation, rows::to_json(TASK, key, task)?)
}

fn encoded(put: Put, generation: Generation, data: Box<RawValue>) -> Result<(Write, Applied)> {
    let created = put.expect == Expect::Absent;
    let kind = rows::put_event(put.table.kind(), created);
    Ok((Write::Put(put), applied(generation, kind, data)))
}

fn removed(kind: EventKind, data: Box<RawValue>) -> Applied {
    applied(0, kind, data)
}

fn applied(generation: Generation, kind: EventKind, data: Box<RawValue>) -> Applied {
    Applied {
        generation,
        kind,
        text: Arc::from(data.get()),
        data,
    }
}
