//! Writes: a commit is a list of conditional mutations applied all or nothing.

use model::{Domain, Generation, Instance, Lrp, Name, Presence, Task, Timestamp};

use crate::{Event, Fence};

/// The condition a put is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The row must not exist: a create. The row gets generation 1.
    Absent,
    /// The row must exist at this generation: an update. It gets generation + 1.
    Generation(Generation),
}

/// One conditional change to one row. The `generation` field of a put row is ignored:
/// the store sets it from the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    PutLrp {
        lrp: Box<Lrp>,
        expect: Expect,
    },
    DeleteLrp {
        name: Name,
        expect: Generation,
    },
    PutInstance {
        instance: Instance,
        expect: Expect,
    },
    DeleteInstance {
        lrp: Name,
        index: u32,
        presence: Presence,
        expect: Generation,
    },
    PutTask {
        task: Box<Task>,
        expect: Expect,
    },
    DeleteTask {
        id: Name,
        expect: Generation,
    },
    /// Unconditional upsert.
    PutDomain {
        domain: Domain,
    },
}

/// Mutations applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub mutations: Vec<Mutation>,
    /// When set, the commit applies only if this lock is still held with this token.
    pub fence: Option<Fence>,
    /// The time recorded on the events, and against which the fence's TTL is checked.
    pub now: Timestamp,
}

impl Commit {
    pub fn new(now: Timestamp, mutations: Vec<Mutation>) -> Commit {
        Commit {
            mutations,
            fence: None,
            now,
        }
    }

    pub fn fenced(mut self, fence: Fence) -> Commit {
        self.fence = Some(fence);
        self
    }
}

/// What a successful commit did.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The new generation of each mutated row, in mutation order (0 for deletes and
    /// domains).
    pub generations: Vec<Generation>,
    /// The events appended, in order.
    pub events: Vec<Event>,
}
