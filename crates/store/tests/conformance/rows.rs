//! Rows: creating, reading and listing LRPs, instances and tasks with their filters.

use model::{InstanceState, Lrp, Presence, TaskState};
use store::{Expect, InstanceFilter, LrpFilter, TaskFilter};

use crate::Backend;
use crate::fixtures::*;

pub(crate) async fn lrps_are_created_read_and_listed_by_domain(b: &Backend) {
    let gens = commit(
        b,
        5,
        vec![
            put_lrp(lrp("web", "d1"), Expect::Absent),
            put_lrp(lrp("api", "d2"), Expect::Absent),
            put_lrp(lrp("db", "d1"), Expect::Absent),
        ],
    )
    .await
    .expect("create LRPs");
    assert_eq!(gens, vec![1, 1, 1]);

    let got = b.store.get_lrp(&name("web")).await.expect("get");
    let mut want = lrp("web", "d1");
    want.generation = 1;
    assert_eq!(got, Some(want));
    assert_eq!(b.store.get_lrp(&name("nope")).await.expect("get"), None);

    let names = |lrps: Vec<Lrp>| {
        lrps.into_iter()
            .map(|l| l.spec.name.to_string())
            .collect::<Vec<_>>()
    };
    let all = b
        .store
        .list_lrps(&LrpFilter::default())
        .await
        .expect("list");
    assert_eq!(names(all), ["api", "db", "web"]);
    let d1 = b
        .store
        .list_lrps(&LrpFilter {
            domain: Some(name("d1")),
        })
        .await
        .expect("list d1");
    assert_eq!(names(d1), ["db", "web"]);
    let none = b
        .store
        .list_lrps(&LrpFilter {
            domain: Some(name("d9")),
        })
        .await
        .expect("list d9");
    assert!(none.is_empty());
}

pub(crate) async fn instances_are_listed_by_lrp_cell_and_state(b: &Backend) {
    use InstanceState::*;
    let mut evacuating = instance("web", 0, Running, Some("cell-b"));
    evacuating.presence = Presence::Evacuating;
    let rows = vec![
        instance("web", 1, Running, Some("cell-a")),
        instance("web", 0, Running, Some("cell-a")),
        evacuating,
        instance("web", 2, Unclaimed, None),
        instance("api", 0, Claimed, Some("cell-b")),
        instance("web-2", 0, Running, Some("cell-a")),
    ];
    commit(
        b,
        5,
        rows.into_iter()
            .map(|i| put_instance(i, Expect::Absent))
            .collect(),
    )
    .await
    .expect("create instances");

    let list = |filter: InstanceFilter| async move {
        b.store
            .list_instances(&filter)
            .await
            .expect("list instances")
            .into_iter()
            .map(|i| format!("{}/{}/{}", i.lrp, i.index, i.presence))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(InstanceFilter::default()).await,
        [
            "api/0/ORDINARY",
            "web/0/ORDINARY",
            "web/0/EVACUATING",
            "web/1/ORDINARY",
            "web/2/ORDINARY",
            "web-2/0/ORDINARY"
        ]
    );
    assert_eq!(
        list(InstanceFilter {
            lrp: Some(name("web")),
            ..Default::default()
        })
        .await,
        [
            "web/0/ORDINARY",
            "web/0/EVACUATING",
            "web/1/ORDINARY",
            "web/2/ORDINARY"
        ]
    );
    assert_eq!(
        list(InstanceFilter {
            cell: Some(name("cell-a")),
            ..Default::default()
        })
        .await,
        ["web/0/ORDINARY", "web/1/ORDINARY", "web-2/0/ORDINARY"]
    );
    let index = |lrp: &'static str, index: u32| async move {
        b.store
            .get_instances(&name(lrp), index)
            .await
            .expect("get instances")
            .into_iter()
            .map(|i| format!("{}/{}/{}", i.lrp, i.index, i.presence))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        index("web", 0).await,
        ["web/0/ORDINARY", "web/0/EVACUATING"]
    );
    assert_eq!(index("web", 2).await, ["web/2/ORDINARY"]);
    assert!(index("web", 3).await.is_empty());
    assert!(index("web-", 0).await.is_empty());
    assert_eq!(
        list(InstanceFilter {
            state: Some(Claimed),
            ..Default::default()
        })
        .await,
        ["api/0/ORDINARY"]
    );
    assert_eq!(
        list(InstanceFilter {
            lrp: Some(name("web")),
            cell: Some(name("cell-b")),
            state: Some(Running),
        })
        .await,
        ["web/0/EVACUATING"]
    );
    assert_eq!(
        list(InstanceFilter {
            lrp: Some(name("web")),
            state: Some(Crashed),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
}

pub(crate) async fn tasks_are_listed_by_state_domain_and_cell_in_creation_order(b: &Backend) {
    let mut running = task("t-b", "d1", 20);
    running.state = TaskState::Running;
    running.cell_id = Some(name("cell-a"));
    let mut done = task("t-c", "d2", 10);
    done.state = TaskState::Completed;
    done.cell_id = Some(name("cell-b"));
    let rows = vec![
        task("t-z", "d1", 30),
        running,
        done,
        task("t-a", "d2", 30),
        task("t-y", "d1", 5),
    ];
    commit(
        b,
        40,
        rows.into_iter()
            .map(|r| put_task(r, Expect::Absent))
            .collect(),
    )
    .await
    .expect("create tasks");

    let list = |filter: TaskFilter| async move {
        b.store
            .list_tasks(&filter)
            .await
            .expect("list tasks")
            .into_iter()
            .map(|t| t.id.to_string())
            .collect::<Vec<_>>()
    };
    // Creation time first, then id.
    assert_eq!(
        list(TaskFilter::default()).await,
        ["t-y", "t-c", "t-b", "t-a", "t-z"]
    );
    assert_eq!(
        list(TaskFilter {
            state: Some(TaskState::Pending),
            ..Default::default()
        })
        .await,
        ["t-y", "t-a", "t-z"]
    );
    assert_eq!(
        list(TaskFilter {
            domain: Some(name("d2")),
            ..Default::default()
        })
        .await,
        ["t-c", "t-a"]
    );
    assert_eq!(
        list(TaskFilter {
            cell: Some(name("cell-a")),
            ..Default::default()
        })
        .await,
        ["t-b"]
    );
    assert_eq!(
        list(TaskFilter {
            domain: Some(name("d2")),
            state: Some(TaskState::Completed),
            cell: Some(name("cell-b")),
        })
        .await,
        ["t-c"]
    );
    let got = b.store.get_task(&name("t-b")).await.expect("get task");
    assert_eq!(
        got.map(|t| (t.state, t.generation)),
        Some((TaskState::Running, 1))
    );
    assert_eq!(b.store.get_task(&name("t-q")).await.expect("get"), None);
}
