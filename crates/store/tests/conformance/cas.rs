//! Compare-and-set: generations, conflicts, atomic commits, and concurrent writers
//! racing or sharing groups.

use std::collections::BTreeSet;
use std::sync::Arc;

use model::{InstanceState, Presence, TaskState};
use store::{
    Commit, EventKind, Expect, InstanceFilter, LockKind, Mutation, Store, StoreError, TaskFilter,
};

use crate::Backend;
use crate::fixtures::*;

pub(crate) async fn updates_compare_and_set_the_generation(b: &Backend) {
    commit(b, 1, vec![put_task(task("t1", "d1", 1), Expect::Absent)])
        .await
        .expect("create");
    let mut next = task("t1", "d1", 1);
    next.state = TaskState::Running;
    // The generation on the row is ignored: the condition decides.
    next.generation = 77;
    let gens = commit(b, 2, vec![put_task(next.clone(), Expect::Generation(1))])
        .await
        .expect("update at generation 1");
    assert_eq!(gens, vec![2]);
    let stored = b
        .store
        .get_task(&name("t1"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((stored.state, stored.generation), (TaskState::Running, 2));

    let err = commit(b, 3, vec![put_task(next.clone(), Expect::Generation(1))])
        .await
        .expect_err("generation 1 is stale");
    assert_eq!(err, stale("task", "t1", 1, 2));
    let gens = commit(b, 3, vec![put_task(next, Expect::Generation(2))])
        .await
        .expect("update at generation 2");
    assert_eq!(gens, vec![3]);

    // Instances are keyed by (lrp, index, presence) and named so in errors.
    commit(
        b,
        4,
        vec![put_instance(
            instance("web", 0, InstanceState::Unclaimed, None),
            Expect::Absent,
        )],
    )
    .await
    .expect("create instance");
    let claimed = instance("web", 0, InstanceState::Claimed, Some("cell-a"));
    let err = commit(
        b,
        5,
        vec![put_instance(claimed.clone(), Expect::Generation(4))],
    )
    .await
    .expect_err("stale instance");
    assert_eq!(err, stale("instance", "web/0/ORDINARY", 4, 1));
    commit(b, 5, vec![put_instance(claimed, Expect::Generation(1))])
        .await
        .expect("claim");

    // LRPs too.
    commit(b, 6, vec![put_lrp(lrp("web", "d1"), Expect::Absent)])
        .await
        .expect("create lrp");
    let mut scaled = lrp("web", "d1");
    scaled.spec.instances = 5;
    commit(b, 7, vec![put_lrp(scaled.clone(), Expect::Generation(1))])
        .await
        .expect("scale");
    let err = commit(b, 8, vec![put_lrp(scaled, Expect::Generation(1))])
        .await
        .expect_err("stale lrp");
    assert_eq!(err, stale("lrp", "web", 1, 2));
    let got = b
        .store
        .get_lrp(&name("web"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((got.spec.instances, got.generation), (5, 2));
}

pub(crate) async fn creating_an_existing_row_fails(b: &Backend) {
    commit(
        b,
        1,
        vec![
            put_task(task("t1", "d1", 1), Expect::Absent),
            put_lrp(lrp("web", "d1"), Expect::Absent),
            put_instance(
                instance("web", 3, InstanceState::Unclaimed, None),
                Expect::Absent,
            ),
        ],
    )
    .await
    .expect("create");
    let exists = |kind, key: &str| StoreError::AlreadyExists {
        kind,
        key: key.into(),
    };
    assert_eq!(
        commit(b, 2, vec![put_task(task("t1", "d1", 1), Expect::Absent)]).await,
        Err(exists("task", "t1"))
    );
    assert_eq!(
        commit(b, 2, vec![put_lrp(lrp("web", "d1"), Expect::Absent)]).await,
        Err(exists("lrp", "web"))
    );
    assert_eq!(
        commit(
            b,
            2,
            vec![put_instance(
                instance("web", 3, InstanceState::Unclaimed, None),
                Expect::Absent
            )]
        )
        .await,
        Err(exists("instance", "web/3/ORDINARY"))
    );
    // Another presence at the same index is another row.
    let mut suspect = instance("web", 3, InstanceState::Running, Some("cell-a"));
    suspect.presence = Presence::Suspect;
    assert_eq!(
        commit(b, 2, vec![put_instance(suspect, Expect::Absent)]).await,
        Ok(vec![1])
    );
}

pub(crate) async fn updating_or_deleting_a_missing_row_fails(b: &Backend) {
    let missing = |kind, key: &str| StoreError::NotFound {
        kind,
        key: key.into(),
    };
    assert_eq!(
        commit(
            b,
            1,
            vec![put_task(task("t1", "d1", 1), Expect::Generation(1))]
        )
        .await,
        Err(missing("task", "t1"))
    );
    assert_eq!(
        commit(
            b,
            1,
            vec![Mutation::DeleteTask {
                id: name("t1"),
                expect: 1
            }]
        )
        .await,
        Err(missing("task", "t1"))
    );
    assert_eq!(
        commit(
            b,
            1,
            vec![Mutation::DeleteLrp {
                name: name("web"),
                expect: 1
            }]
        )
        .await,
        Err(missing("lrp", "web"))
    );
    assert_eq!(
        commit(
            b,
            1,
            vec![Mutation::DeleteInstance {
                lrp: name("web"),
                index: 0,
                presence: Presence::Evacuating,
                expect: 1
            }]
        )
        .await,
        Err(missing("instance", "web/0/EVACUATING"))
    );
    assert_eq!(
        commit(b, 1, vec![put_lrp(lrp("web", "d1"), Expect::Generation(3))]).await,
        Err(missing("lrp", "web"))
    );
    assert!(
        all_events(b).await.is_empty(),
        "failed commits append no events"
    );
}

pub(crate) async fn deletes_need_the_exact_generation(b: &Backend) {
    commit(
        b,
        1,
        vec![
            put_task(task("t1", "d1", 1), Expect::Absent),
            put_lrp(lrp("web", "d1"), Expect::Absent),
            put_instance(
                instance("web", 0, InstanceState::Unclaimed, None),
                Expect::Absent,
            ),
        ],
    )
    .await
    .expect("create");
    commit(
        b,
        2,
        vec![put_task(task("t1", "d1", 1), Expect::Generation(1))],
    )
    .await
    .expect("update");
    assert_eq!(
        commit(
            b,
            3,
            vec![Mutation::DeleteTask {
                id: name("t1"),
                expect: 1
            }]
        )
        .await,
        Err(stale("task", "t1", 1, 2))
    );
    assert_eq!(
        commit(
            b,
            3,
            vec![Mutation::DeleteTask {
                id: name("t1"),
                expect: 3
            }]
        )
        .await,
        Err(stale("task", "t1", 3, 2))
    );
    assert_eq!(
        commit(
            b,
            3,
            vec![
                Mutation::DeleteTask {
                    id: name("t1"),
                    expect: 2
                },
                Mutation::DeleteLrp {
                    name: name("web"),
                    expect: 1
                },
                Mutation::DeleteInstance {
                    lrp: name("web"),
                    index: 0,
                    presence: Presence::Ordinary,
                    expect: 1
                },
            ]
        )
        .await,
        Ok(vec![0, 0, 0])
    );
    assert_eq!(b.store.get_task(&name("t1")).await.expect("get"), None);
    assert_eq!(b.store.get_lrp(&name("web")).await.expect("get"), None);
    assert!(
        b.store
            .list_instances(&InstanceFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    // A deleted row can be created again, from generation 1.
    assert_eq!(
        commit(b, 4, vec![put_task(task("t1", "d1", 4), Expect::Absent)]).await,
        Ok(vec![1])
    );
}

pub(crate) async fn later_mutations_see_earlier_ones_in_the_same_commit(b: &Backend) {
    let mut running = task("t1", "d1", 1);
    running.state = TaskState::Running;
    let gens = commit(
        b,
        1,
        vec![
            put_task(task("t1", "d1", 1), Expect::Absent),
            put_task(running, Expect::Generation(1)),
            put_lrp(lrp("web", "d1"), Expect::Absent),
            Mutation::DeleteLrp {
                name: name("web"),
                expect: 1,
            },
            put_lrp(lrp("web", "d2"), Expect::Absent),
        ],
    )
    .await
    .expect("create then update in one commit");
    assert_eq!(gens, vec![1, 2, 1, 0, 1]);
    let t1 = b
        .store
        .get_task(&name("t1"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((t1.state, t1.generation), (TaskState::Running, 2));
    let web = b
        .store
        .get_lrp(&name("web"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((web.spec.domain.as_str(), web.generation), ("d2", 1));
    let kinds: Vec<EventKind> = all_events(b).await.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::TaskCreated,
            EventKind::TaskChanged,
            EventKind::LrpCreated,
            EventKind::LrpRemoved,
            EventKind::LrpCreated
        ]
    );

    // And a later mutation that conflicts with an earlier one fails the whole commit.
    assert_eq!(
        commit(
            b,
            2,
            vec![
                put_task(task("t2", "d1", 2), Expect::Absent),
                put_task(task("t2", "d1", 2), Expect::Absent),
            ]
        )
        .await,
        Err(StoreError::AlreadyExists {
            kind: "task",
            key: "t2".into()
        })
    );
    assert_eq!(b.store.get_task(&name("t2")).await.expect("get"), None);
}

pub(crate) async fn a_failed_commit_writes_nothing(b: &Backend) {
    commit(b, 1, vec![put_task(task("t1", "d1", 1), Expect::Absent)])
        .await
        .expect("create");
    let before = all_events(b).await;

    let mut running = task("t1", "d1", 1);
    running.state = TaskState::Running;
    let err = commit(
        b,
        2,
        vec![
            put_task(task("t2", "d1", 2), Expect::Absent),
            put_task(running.clone(), Expect::Generation(1)),
            put_lrp(lrp("web", "d1"), Expect::Absent),
            Mutation::DeleteTask {
                id: name("t9"),
                expect: 1,
            },
        ],
    )
    .await
    .expect_err("the 4th mutation fails");
    assert_eq!(
        err,
        StoreError::NotFound {
            kind: "task",
            key: "t9".into()
        }
    );
    assert_eq!(b.store.get_task(&name("t2")).await.expect("get"), None);
    assert_eq!(b.store.get_lrp(&name("web")).await.expect("get"), None);
    let t1 = b
        .store
        .get_task(&name("t1"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((t1.state, t1.generation), (TaskState::Pending, 1));
    assert_eq!(all_events(b).await, before, "no event appended");

    // The next commit gets the next sequence number: nothing was used up.
    let committed = b
        .store
        .commit(Commit::new(
            t(3),
            vec![put_task(running, Expect::Generation(1))],
        ))
        .await
        .expect("update");
    assert_eq!(committed.events[0].seq, before[0].seq + 1);
}

pub(crate) async fn racing_updates_from_one_generation_have_one_winner(b: &Backend) {
    commit(b, 1, vec![put_task(task("t1", "d1", 1), Expect::Absent)])
        .await
        .expect("create");
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let store = b.store.clone();
            tokio::spawn(async move {
                let mut next = task("t1", "d1", 1);
                next.state = TaskState::Running;
                next.cell_id = Some(name(&format!("cell-{i}")));
                store
                    .commit(Commit::new(
                        t(2),
                        vec![put_task(next, Expect::Generation(1))],
                    ))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        match racer.await.expect("racer task") {
            Ok(committed) => {
                assert_eq!(committed.generations, vec![2]);
                winners.push(i);
            }
            Err(e) => assert_eq!(e, stale("task", "t1", 1, 2)),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer wins");
    let stored = b
        .store
        .get_task(&name("t1"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.cell_id, Some(name(&format!("cell-{}", winners[0]))));
    assert_eq!(stored.generation, 2);
    let changed = all_events(b)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::TaskChanged)
        .count();
    assert_eq!(changed, 1, "only the winner appends an event");
}

pub(crate) async fn concurrent_independent_commits_all_succeed(b: &Backend) {
    const N: usize = 200;
    let groups_before = b.sql.as_ref().map(|s| s.stats());
    let writers: Vec<_> = (0..N)
        .map(|i| {
            let store = b.store.clone();
            tokio::spawn(async move {
                let id = format!("t{i:03}");
                let created = store
                    .commit(Commit::new(
                        t(1),
                        vec![put_task(task(&id, "d1", 1), Expect::Absent)],
                    ))
                    .await?;
                let mut next = task(&id, "d1", 1);
                next.state = TaskState::Running;
                let changed = store
                    .commit(Commit::new(
                        t(2),
                        vec![put_task(next, Expect::Generation(1))],
                    ))
                    .await?;
                Ok::<_, StoreError>((created, changed))
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for writer in writers {
        let (created, changed) = writer.await.expect("writer task").expect("commit succeeds");
        assert_eq!(
            (created.generations.clone(), changed.generations.clone()),
            (vec![1], vec![2])
        );
        assert!(created.events[0].seq < changed.events[0].seq);
        seqs.insert(created.events[0].seq);
        seqs.insert(changed.events[0].seq);
    }
    let expected: BTreeSet<u64> = (1..=2 * N as u64).collect();
    assert_eq!(
        seqs, expected,
        "every commit got its own sequence number, densely"
    );
    let tasks = b
        .store
        .list_tasks(&TaskFilter::default())
        .await
        .expect("list");
    assert_eq!(tasks.len(), N);
    assert!(
        tasks
            .iter()
            .all(|t| t.state == TaskState::Running && t.generation == 2)
    );
    assert_eq!(all_events(b).await.len(), 2 * N);

    if let (Some(sql), Some(before)) = (&b.sql, groups_before) {
        let after = sql.stats();
        let requests = after.requests - before.requests;
        let transactions = after.transactions - before.transactions;
        assert_eq!(requests, 2 * N as u64);
        assert!(
            transactions < requests,
            "concurrent commits are grouped: {requests} requests in {transactions} transactions"
        );
    }
}

pub(crate) async fn failed_commits_do_not_disturb_their_group(b: &Backend) {
    commit(b, 1, vec![put_task(task("taken", "d1", 1), Expect::Absent)])
        .await
        .expect("create");
    // Good single-row commits, good multi-row commits and commits whose last mutation
    // fails, all at once, so they share groups.
    let writers: Vec<_> = (0..60)
        .map(|i| {
            let store = b.store.clone();
            tokio::spawn(async move {
                let mutations = match i % 3 {
                    0 => vec![put_task(task(&format!("one-{i}"), "d1", 2), Expect::Absent)],
                    1 => vec![
                        put_task(task(&format!("pair-{i}-a"), "d1", 2), Expect::Absent),
                        put_task(task(&format!("pair-{i}-b"), "d1", 2), Expect::Absent),
                    ],
                    _ => vec![
                        put_task(task(&format!("doomed-{i}"), "d1", 2), Expect::Absent),
                        put_task(task("taken", "d1", 2), Expect::Absent),
                    ],
                };
                (i, store.commit(Commit::new(t(2), mutations)).await)
            })
        })
        .collect();
    for writer in writers {
        let (i, result) = writer.await.expect("writer task");
        match i % 3 {
            2 => assert_eq!(
                result,
                Err(StoreError::AlreadyExists {
                    kind: "task",
                    key: "taken".into()
                })
            ),
            _ => assert!(result.is_ok(), "commit {i}: {result:?}"),
        }
    }
    let ids: BTreeSet<String> = b
        .store
        .list_tasks(&TaskFilter::default())
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids.len(), 1 + 20 + 40, "{ids:?}");
    assert!(ids.iter().all(|id| !id.starts_with("doomed")), "{ids:?}");
    let events = all_events(b).await;
    assert_eq!(events.len(), 1 + 20 + 40);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=61).collect::<Vec<_>>(),
        "no gaps from failed commits"
    );
}

pub(crate) async fn two_handles_on_one_database_stay_consistent(b: &Backend) {
    let (other, other_sql) = b.second_handle().await;
    // Both race for one lock at the same instant: exactly one wins.
    let race = |store: Arc<dyn Store>, owner: &'static str| {
        tokio::spawn(async move {
            store
                .acquire(lock("leader", owner, LockKind::Lock, owner, 1000, 0))
                .await
        })
    };
    let (a, c) = (race(b.store.clone(), "a"), race(other.clone(), "c"));
    let outcomes = [a.await.expect("task a"), c.await.expect("task c")];
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "one winner: {outcomes:?}"
    );
    // Both write at once: every commit gets its own sequence number, in one order.
    let writers: Vec<_> = (0..100)
        .map(|i| {
            let store = if i % 2 == 0 {
                b.store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                store
                    .commit(Commit::new(
                        t(5),
                        vec![put_task(task(&format!("t{i}"), "d1", 5), Expect::Absent)],
                    ))
                    .await
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task").expect("commit");
    }
    let seqs: Vec<u64> = all_events(b).await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    let from_other: Vec<u64> = other
        .events_after(0, 1000)
        .await
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(from_other, seqs, "both handles see one log");
    // Fence tokens stay unique across handles.
    let mut fences = BTreeSet::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { &b.store } else { &other };
        let lease = store
            .acquire(lock(&format!("k{i}"), "x", LockKind::Lock, "", 1000, 0))
            .await
            .expect("acquire");
        assert!(fences.insert(lease.fence), "fence {} repeated", lease.fence);
    }
    if let Some(sql) = other_sql {
        sql.close().await;
    }
}
