//! The event log: kinds and data of every change, paging, bounds and pruning.

use model::{Domain, InstanceState, Presence, TaskState};
use serde_json::json;
use store::{Commit, EventKind, Expect, Mutation};

use crate::Backend;
use crate::fixtures::*;

pub(crate) async fn events_record_every_change_in_order(b: &Backend) {
    let committed = b
        .store
        .commit(Commit::new(
            t(10),
            vec![
                put_lrp(lrp("web", "d1"), Expect::Absent),
                put_instance(
                    instance("web", 0, InstanceState::Unclaimed, None),
                    Expect::Absent,
                ),
                put_task(task("t1", "d1", 10), Expect::Absent),
                Mutation::PutDomain {
                    domain: Domain {
                        name: name("d1"),
                        expires_at: Some(t(100)),
                    },
                },
            ],
        ))
        .await
        .expect("create");
    assert_eq!(committed.generations, vec![1, 1, 1, 0]);
    let mut changed_task = task("t1", "d1", 10);
    changed_task.state = TaskState::Running;
    b.store
        .commit(Commit::new(
            t(20),
            vec![
                put_task(changed_task.clone(), Expect::Generation(1)),
                put_instance(
                    instance("web", 0, InstanceState::Claimed, Some("cell-a")),
                    Expect::Generation(1),
                ),
                put_lrp(lrp("web", "d1"), Expect::Generation(1)),
            ],
        ))
        .await
        .expect("change");
    b.store
        .commit(Commit::new(
            t(30),
            vec![
                Mutation::DeleteInstance {
                    lrp: name("web"),
                    index: 0,
                    presence: Presence::Ordinary,
                    expect: 2,
                },
                Mutation::DeleteTask {
                    id: name("t1"),
                    expect: 2,
                },
                Mutation::DeleteLrp {
                    name: name("web"),
                    expect: 2,
                },
            ],
        ))
        .await
        .expect("delete");

    let events = all_events(b).await;
    let summary: Vec<(u64, EventKind, u64)> = events
        .iter()
        .map(|e| (e.seq, e.kind, e.at.as_millis()))
        .collect();
    use EventKind::*;
    assert_eq!(
        summary,
        [
            (1, LrpCreated, 10),
            (2, InstanceCreated, 10),
            (3, TaskCreated, 10),
            (4, DomainChanged, 10),
            (5, TaskChanged, 20),
            (6, InstanceChanged, 20),
            (7, LrpChanged, 20),
            (8, InstanceRemoved, 30),
            (9, TaskRemoved, 30),
            (10, LrpRemoved, 30),
        ]
    );
    assert_eq!(
        committed.events,
        events[..4].to_vec(),
        "the commit returns its events"
    );

    // Puts carry the whole row, with the generation the store gave it.
    let mut created_lrp = lrp("web", "d1");
    created_lrp.generation = 1;
    assert_eq!(
        data(&events[0]),
        serde_json::to_value(&created_lrp).expect("json")
    );
    let mut created_instance = instance("web", 0, InstanceState::Unclaimed, None);
    created_instance.generation = 1;
    assert_eq!(
        data(&events[1]),
        serde_json::to_value(&created_instance).expect("json")
    );
    assert_eq!(data(&events[3]), json!({"name": "d1", "expires_at": 100}));
    changed_task.generation = 2;
    assert_eq!(
        data(&events[4]),
        serde_json::to_value(&changed_task).expect("json")
    );
    assert_eq!(data(&events[4])["generation"], 2);
    // Removals carry the key.
    assert_eq!(
        data(&events[7]),
        json!({"lrp": "web", "index": 0, "presence": "ORDINARY"})
    );
    assert_eq!(data(&events[8]), json!({"id": "t1"}));
    assert_eq!(data(&events[9]), json!({"name": "web"}));
}

pub(crate) async fn events_page_from_a_cursor(b: &Backend) {
    assert_eq!(b.store.event_bounds().await.expect("bounds"), None);
    assert!(
        b.store
            .events_after(0, 10)
            .await
            .expect("events")
            .is_empty()
    );
    for i in 0..25 {
        commit(
            b,
            i,
            vec![put_task(task(&format!("t{i}"), "d1", i), Expect::Absent)],
        )
        .await
        .expect("create");
    }
    assert_eq!(b.store.event_bounds().await.expect("bounds"), Some((1, 25)));
    let mut cursor = 0;
    let mut pages = Vec::new();
    loop {
        let page = b.store.events_after(cursor, 10).await.expect("page");
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        pages.push(page.iter().map(|e| e.seq).collect::<Vec<_>>());
    }
    assert_eq!(
        pages,
        [
            (1..=10).collect::<Vec<_>>(),
            (11..=20).collect(),
            (21..=25).collect()
        ]
    );
    let tail = b.store.events_after(23, 100).await.expect("tail");
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [24, 25]);
    assert_eq!(data(&tail[0])["id"], "t23");
    assert!(b.store.events_after(25, 10).await.expect("none").is_empty());
    assert!(b.store.events_after(99, 10).await.expect("none").is_empty());
    assert!(b.store.events_after(0, 0).await.expect("none").is_empty());
}

pub(crate) async fn pruning_keeps_the_newest_events(b: &Backend) {
    assert_eq!(b.store.prune_events(5).await.expect("prune empty"), 0);
    for i in 0..12 {
        commit(
            b,
            i,
            vec![put_task(task(&format!("t{i}"), "d1", i), Expect::Absent)],
        )
        .await
        .expect("create");
    }
    assert_eq!(b.store.prune_events(5).await.expect("prune"), 7);
    assert_eq!(b.store.event_bounds().await.expect("bounds"), Some((8, 12)));
    assert_eq!(b.store.prune_events(5).await.expect("prune again"), 0);
    // A cursor older than the oldest kept event sees what is left.
    let seqs: Vec<u64> = b
        .store
        .events_after(2, 100)
        .await
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [8, 9, 10, 11, 12]);
    assert_eq!(b.store.prune_events(0).await.expect("prune all"), 5);
    assert_eq!(b.store.event_bounds().await.expect("bounds"), None);
    // Sequence numbers are never reused after pruning.
    let committed = b
        .store
        .commit(Commit::new(
            t(50),
            vec![put_task(task("t99", "d1", 50), Expect::Absent)],
        ))
        .await
        .expect("create");
    assert_eq!(committed.events[0].seq, 13);
    assert_eq!(
        b.store.event_bounds().await.expect("bounds"),
        Some((13, 13))
    );
}

pub(crate) async fn domains_are_upserted(b: &Backend) {
    let domain = |n: &str, expires: Option<u64>| Domain {
        name: name(n),
        expires_at: expires.map(t),
    };
    assert!(b.store.list_domains().await.expect("list").is_empty());
    commit(
        b,
        1,
        vec![
            Mutation::PutDomain {
                domain: domain("d2", Some(100)),
            },
            Mutation::PutDomain {
                domain: domain("d1", None),
            },
        ],
    )
    .await
    .expect("upsert");
    commit(
        b,
        2,
        vec![Mutation::PutDomain {
            domain: domain("d2", Some(200)),
        }],
    )
    .await
    .expect("upsert again");
    commit(
        b,
        3,
        vec![Mutation::PutDomain {
            domain: domain("d1", Some(50)),
        }],
    )
    .await
    .expect("upsert with a TTL");
    assert_eq!(
        b.store.list_domains().await.expect("list"),
        vec![domain("d1", Some(50)), domain("d2", Some(200))]
    );
    commit(
        b,
        4,
        vec![Mutation::PutDomain {
            domain: domain("d1", None),
        }],
    )
    .await
    .expect("fresh forever again");
    assert_eq!(
        b.store.list_domains().await.expect("list"),
        vec![domain("d1", None), domain("d2", Some(200))]
    );
    let kinds: Vec<EventKind> = all_events(b).await.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::DomainChanged; 5]);
}
