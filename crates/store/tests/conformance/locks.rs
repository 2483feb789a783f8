//! Locks and presences: TTLs, renewal, release, expiry, presence events, and fencing
//! of stale holders.

use std::collections::BTreeSet;

use store::{Commit, Event, EventKind, Expect, LockKind, Mutation, StoreError};

use crate::Backend;
use crate::fixtures::*;

pub(crate) async fn a_lock_is_held_until_its_ttl_passes(b: &Backend) {
    let a = b
        .store
        .acquire(lock("leader", "a", LockKind::Lock, "server-a", 1000, 0))
        .await
        .expect("a takes the lock");
    assert_eq!(a.expires_at, t(1000));
    assert_eq!((a.key.as_str(), a.owner.as_str()), ("leader", "a"));
    for now in [0, 500, 999] {
        assert_eq!(
            b.store
                .acquire(lock("leader", "b", LockKind::Lock, "server-b", 1000, now))
                .await,
            Err(StoreError::LockHeld {
                key: "leader".into(),
                owner: "a".into()
            }),
            "at {now}"
        );
    }
    let lease = b
        .store
        .acquire(lock("leader", "b", LockKind::Lock, "server-b", 1000, 1000))
        .await
        .expect("b takes over once a's TTL has passed");
    assert!(lease.fence > a.fence, "{} > {}", lease.fence, a.fence);
    assert_eq!(lease.expires_at, t(2000));
    let live = b.store.list_locks("leader", t(1500)).await.expect("list");
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].owner.as_str(), live[0].value.as_str()),
        ("b", "server-b")
    );
    assert_eq!(live[0].fence, lease.fence);
}

pub(crate) async fn renewal_keeps_the_fence_and_replaces_the_value(b: &Backend) {
    let first = b
        .store
        .acquire(lock("leader", "a", LockKind::Lock, "v1", 1000, 0))
        .await
        .expect("acquire");
    let renewed = b
        .store
        .acquire(lock("leader", "a", LockKind::Lock, "v2", 3000, 800))
        .await
        .expect("renew");
    assert_eq!(renewed.fence, first.fence);
    assert_eq!(renewed.expires_at, t(3800));
    let held = b.store.list_locks("", t(3000)).await.expect("list");
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].value.as_str(), held[0].expires_at),
        ("v2", t(3800))
    );
    assert_eq!(
        b.store
            .acquire(lock("leader", "b", LockKind::Lock, "v", 1000, 3000))
            .await,
        Err(StoreError::LockHeld {
            key: "leader".into(),
            owner: "a".into()
        }),
        "the renewal extended the TTL"
    );
}

pub(crate) async fn release_frees_only_the_owners_lock(b: &Backend) {
    let a = b
        .store
        .acquire(lock("leader", "a", LockKind::Lock, "", 10_000, 0))
        .await
        .expect("acquire");
    b.store
        .release("leader", "b")
        .await
        .expect("not b's: a no-op");
    b.store
        .release("nothing", "a")
        .await
        .expect("no lock: a no-op");
    assert_eq!(b.store.list_locks("", t(1)).await.expect("list").len(), 1);
    b.store.release("leader", "a").await.expect("release");
    assert!(b.store.list_locks("", t(1)).await.expect("list").is_empty());
    let lease = b
        .store
        .acquire(lock("leader", "b", LockKind::Lock, "", 10_000, 2))
        .await
        .expect("b takes the released lock before a's TTL");
    assert!(lease.fence > a.fence);
    // The old holder's token is dead for good.
    let fenced = b
        .store
        .commit(
            Commit::new(t(3), vec![put_task(task("t1", "d1", 3), Expect::Absent)])
                .fenced(a.fence()),
        )
        .await;
    assert_eq!(
        fenced,
        Err(StoreError::Fenced {
            key: "leader".into(),
            token: a.fence
        })
    );
}

pub(crate) async fn locks_are_listed_by_prefix_skipping_expired_ones(b: &Backend) {
    for (key, ttl) in [
        ("cells/c2", 1000),
        ("cells/c1", 1000),
        ("cells/c3", 100),
        ("cellsx", 1000),
        ("leader", 1000),
    ] {
        b.store
            .acquire(lock(key, key, LockKind::Presence, "{}", ttl, 0))
            .await
            .expect("acquire");
    }
    let keys =
        |records: Vec<store::LockRecord>| records.into_iter().map(|r| r.key).collect::<Vec<_>>();
    assert_eq!(
        keys(b.store.list_locks("cells/", t(50)).await.expect("list")),
        ["cells/c1", "cells/c2", "cells/c3"]
    );
    assert_eq!(
        keys(b.store.list_locks("cells/", t(100)).await.expect("list")),
        ["cells/c1", "cells/c2"],
        "c3 expired at 100"
    );
    assert_eq!(
        keys(b.store.list_locks("cells", t(100)).await.expect("list")),
        ["cells/c1", "cells/c2", "cellsx"]
    );
    assert_eq!(
        keys(b.store.list_locks("", t(100)).await.expect("list")),
        ["cells/c1", "cells/c2", "cellsx", "leader"]
    );
    assert!(
        b.store
            .list_locks("cells/", t(1000))
            .await
            .expect("list")
            .is_empty()
    );
    // Prefixes are literal: LIKE wildcards match nothing special.
    assert!(
        b.store
            .list_locks("cells%", t(0))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        b.store
            .list_locks("cells_c", t(0))
            .await
            .expect("list")
            .is_empty()
    );
}

pub(crate) async fn expiry_deletes_and_returns_expired_locks(b: &Backend) {
    for (key, kind, ttl) in [
        ("cells/c1", LockKind::Presence, 100),
        ("cells/c2", LockKind::Presence, 500),
        ("leader", LockKind::Lock, 100),
    ] {
        b.store
            .acquire(lock(key, "owner", kind, "cell", ttl, 0))
            .await
            .expect("acquire");
    }
    assert!(
        b.store
            .expire_locks(t(99))
            .await
            .expect("expire")
            .is_empty()
    );
    let before = all_events(b).await.len();
    let expired = b.store.expire_locks(t(100)).await.expect("expire");
    let keys: BTreeSet<String> = expired.iter().map(|r| r.key.clone()).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["cells/c1".to_owned(), "leader".to_owned()])
    );
    let c1 = expired
        .iter()
        .find(|r| r.key == "cells/c1")
        .expect("c1 expired");
    assert_eq!(
        (c1.kind, c1.expires_at, c1.value.as_str()),
        (LockKind::Presence, t(100), "cell")
    );

    let events = all_events(b).await;
    let new: Vec<&Event> = events[before..].iter().collect();
    assert_eq!(new.len(), 1, "only the presence emits an event: {new:?}");
    assert_eq!(new[0].kind, EventKind::PresenceExpired);
    assert_eq!(new[0].at, t(100));
    assert_eq!(data(new[0])["key"], "cells/c1");
    assert_eq!(data(new[0])["owner"], "owner");

    assert!(
        b.store
            .expire_locks(t(100))
            .await
            .expect("again")
            .is_empty()
    );
    let keys: Vec<String> = b
        .store
        .list_locks("", t(0))
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["cells/c2"], "expired rows are deleted");
}

pub(crate) async fn presences_emit_events_and_locks_do_not(b: &Backend) {
    let presence = |owner: &str, value: &str, now| {
        lock("cells/c1", owner, LockKind::Presence, value, 100, now)
    };
    let first = b
        .store
        .acquire(presence("rep-1", "v1", 0))
        .await
        .expect("announce");
    b.store
        .acquire(presence("rep-1", "v1", 50))
        .await
        .expect("renew unchanged");
    b.store
        .acquire(presence("rep-1", "v2", 100))
        .await
        .expect("renew changed");
    // rep-1's presence lapses (expires at 200) and rep-2 takes the key.
    let second = b
        .store
        .acquire(presence("rep-2", "v3", 250))
        .await
        .expect("take over");
    assert!(second.fence > first.fence);
    b.store.release("cells/c1", "rep-2").await.expect("release");
    // Locks are silent.
    b.store
        .acquire(lock("leader", "a", LockKind::Lock, "x", 100, 0))
        .await
        .expect("lock");
    b.store
        .acquire(lock("leader", "a", LockKind::Lock, "y", 100, 10))
        .await
        .expect("renew lock with a new value");
    b.store.release("leader", "a").await.expect("release lock");
    b.store
        .acquire(lock("leader", "a", LockKind::Lock, "x", 100, 1000))
        .await
        .expect("lock");
    b.store.expire_locks(t(5000)).await.expect("expire");

    let events = all_events(b).await;
    let summary: Vec<(EventKind, String, String)> = events
        .iter()
        .map(|e| {
            (
                e.kind,
                data(e)["owner"].as_str().unwrap_or_default().to_owned(),
                data(e)["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    use EventKind::*;
    let s = |k, o: &str, v: &str| (k, o.to_owned(), v.to_owned());
    assert_eq!(
        summary,
        [
            s(PresenceCreated, "rep-1", "v1"),
            s(PresenceChanged, "rep-1", "v2"),
            s(PresenceExpired, "rep-1", "v2"),
            s(PresenceCreated, "rep-2", "v3"),
            s(PresenceRemoved, "rep-2", "v3"),
        ]
    );
    assert_eq!(events[0].at, t(0));
    assert_eq!(events[1].at, t(100));
    assert_eq!(events[2].at, t(250));
    let created: store::LockRecord =
        serde_json::from_str(events[3].data.get()).expect("the data is a lock record");
    assert_eq!(
        created,
        store::LockRecord {
            key: "cells/c1".into(),
            owner: "rep-2".into(),
            kind: LockKind::Presence,
            value: "v3".into(),
            fence: second.fence,
            expires_at: t(350),
        }
    );
}

pub(crate) async fn a_stale_lock_holder_is_fenced(b: &Backend) {
    let a = b
        .store
        .acquire(lock("leader", "a", LockKind::Lock, "", 1000, 0))
        .await
        .expect("a leads");
    let write =
        |n: &str, now: u64| Commit::new(t(now), vec![put_task(task(n, "d1", now), Expect::Absent)]);
    b.store
        .commit(write("by-a", 500).fenced(a.fence()))
        .await
        .expect("a writes while it holds the lock");
    // Past its TTL a is fenced even before anyone takes over.
    assert_eq!(
        b.store
            .commit(write("late-a", 1000).fenced(a.fence()))
            .await,
        Err(StoreError::Fenced {
            key: "leader".into(),
            token: a.fence
        })
    );
    let b_lease = b
        .store
        .acquire(lock("leader", "b", LockKind::Lock, "", 1000, 1200))
        .await
        .expect("b takes over");
    assert!(b_lease.fence > a.fence);
    let events_before = all_events(b).await;
    assert_eq!(
        b.store
            .commit(
                Commit::new(
                    t(1300),
                    vec![
                        put_task(task("stale-a", "d1", 1300), Expect::Absent),
                        Mutation::DeleteTask {
                            id: name("by-a"),
                            expect: 1
                        },
                    ]
                )
                .fenced(a.fence())
            )
            .await,
        Err(StoreError::Fenced {
            key: "leader".into(),
            token: a.fence
        })
    );
    assert_eq!(b.store.get_task(&name("stale-a")).await.expect("get"), None);
    assert!(
        b.store
            .get_task(&name("by-a"))
            .await
            .expect("get")
            .is_some()
    );
    assert_eq!(
        all_events(b).await,
        events_before,
        "the fenced commit appended nothing"
    );
    b.store
        .commit(write("by-b", 1300).fenced(b_lease.fence()))
        .await
        .expect("b writes");
    assert_eq!(
        b.store
            .acquire(lock("leader", "a", LockKind::Lock, "", 1000, 1400))
            .await,
        Err(StoreError::LockHeld {
            key: "leader".into(),
            owner: "b".into()
        }),
        "a's renewal fails"
    );
    // A fence on a lock that never existed fails too.
    assert_eq!(
        b.store
            .commit(write("ghost", 1400).fenced(store::Fence {
                key: "nothing".into(),
                token: b_lease.fence
            }))
            .await,
        Err(StoreError::Fenced {
            key: "nothing".into(),
            token: b_lease.fence
        })
    );
}

pub(crate) async fn fence_tokens_never_repeat(b: &Backend) {
    let mut seen = BTreeSet::new();
    let mut last = 0;
    for round in 0..5u64 {
        for key in ["a", "b"] {
            let lease = b
                .store
                .acquire(lock(
                    key,
                    &format!("owner-{round}"),
                    LockKind::Lock,
                    "",
                    10,
                    round * 100,
                ))
                .await
                .expect("acquire");
            assert!(lease.fence > last, "tokens grow across keys");
            last = lease.fence;
            assert!(seen.insert(lease.fence), "token {} repeated", lease.fence);
        }
        // Alternate release and expiry: neither may reset the counter.
        if round % 2 == 0 {
            b.store
                .release("a", &format!("owner-{round}"))
                .await
                .expect("release");
            b.store
                .release("b", &format!("owner-{round}"))
                .await
                .expect("release");
        } else {
            b.store
                .expire_locks(t(round * 100 + 50))
                .await
                .expect("expire");
        }
    }
}
