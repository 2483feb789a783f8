//! Builders for the rows, commits and lock requests the tests use.

use model::{
    Action, Checks, CrashPolicy, Instance, InstanceKey, InstanceState, Lrp, LrpSpec, Name,
    Resources, Rootfs, Routes, Task, TaskSpec, Timestamp,
};
use store::{Commit, Event, Expect, LockKind, LockRequest, Mutation, StoreError};

use crate::Backend;

pub(crate) fn name(s: &str) -> Name {
    Name::parse("name", s).expect("test names are valid")
}

pub(crate) fn t(ms: u64) -> Timestamp {
    Timestamp(ms)
}

/// An event's data, parsed, to look into or compare whatever the order of its keys.
pub(crate) fn data(event: &Event) -> serde_json::Value {
    serde_json::from_str(event.data.get()).expect("event data is JSON")
}

pub(crate) fn lrp(n: &str, domain: &str) -> Lrp {
    Lrp {
        spec: LrpSpec {
            image_credentials: None,
            name: name(n),
            domain: name(domain),
            rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("valid rootfs"),
            instances: 2,
            resources: Resources::default(),
            setup: None,
            action: Action::run("sleep", ["1000"]),
            env: vec![("PORT".into(), "8080".into())],
            ports: vec![8080],
            checks: Checks::default(),
            routes: Routes::default(),
            placement_tags: vec![],
            crash_policy: CrashPolicy::default(),
            annotation: String::new(),
        },
        generation: 0,
        created_at: t(1),
        updated_at: t(1),
    }
}

pub(crate) fn instance(
    lrp: &str,
    index: u32,
    state: InstanceState,
    cell: Option<&str>,
) -> Instance {
    let mut i = Instance::unclaimed(name(lrp), index, name("d1"), t(1));
    i.state = state;
    i.key = cell.map(|c| InstanceKey {
        instance_id: format!("{lrp}-{index}"),
        cell_id: name(c),
    });
    i
}

pub(crate) fn task(id: &str, domain: &str, created: u64) -> Task {
    let spec = TaskSpec {
        image_credentials: None,
        domain: name(domain),
        rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("valid rootfs"),
        resources: Resources::default(),
        action: Action::run("true", Vec::<String>::new()),
        env: vec![],
        result_file: None,
        completion_callback_url: None,
        placement_tags: vec![],
        annotation: String::new(),
    };
    Task::new(name(id), spec, t(created))
}

pub(crate) fn put_lrp(l: Lrp, expect: Expect) -> Mutation {
    Mutation::PutLrp {
        lrp: Box::new(l),
        expect,
    }
}

pub(crate) fn put_task(task: Task, expect: Expect) -> Mutation {
    Mutation::PutTask {
        task: Box::new(task),
        expect,
    }
}

pub(crate) fn put_instance(instance: Instance, expect: Expect) -> Mutation {
    Mutation::PutInstance { instance, expect }
}

pub(crate) async fn commit(
    b: &Backend,
    now: u64,
    mutations: Vec<Mutation>,
) -> Result<Vec<u64>, StoreError> {
    b.store
        .commit(Commit::new(t(now), mutations))
        .await
        .map(|c| c.generations)
}

pub(crate) async fn all_events(b: &Backend) -> Vec<Event> {
    b.store.events_after(0, 10_000).await.expect("read events")
}

pub(crate) fn lock(
    key: &str,
    owner: &str,
    kind: LockKind,
    value: &str,
    ttl: u64,
    now: u64,
) -> LockRequest {
    LockRequest {
        key: key.into(),
        owner: owner.into(),
        kind,
        value: value.into(),
        ttl_ms: ttl,
        now: t(now),
    }
}

pub(crate) fn stale(kind: &'static str, key: &str, expected: u64, actual: u64) -> StoreError {
    StoreError::StaleGeneration {
        kind,
        key: key.into(),
        expected,
        actual,
    }
}
