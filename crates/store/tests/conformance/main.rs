//! One conformance suite for every `Store`: each test below runs against the in-memory
//! fake, SQLite (a file in a temporary directory) and PostgreSQL (a fresh database per
//! test, on the server named by `CORRAL_TEST_POSTGRES_URL`).
//!
//! Time is an input (`now`), so expiry is tested by passing later times, never by
//! sleeping.

mod cas;
mod events;
mod fixtures;
mod locks;
mod rows;

use std::sync::Arc;

use store::memory::MemoryStore;
use store::sql::SqlStore;
use store::{Commit, Expect, LockKind, Store};

use cas::*;
use events::*;
use fixtures::*;
use locks::*;
use rows::*;

// --- Backends ----------------------------------------------------------------------------

/// A store under test and what keeps it alive (a temporary directory, a database).
struct Backend {
    store: Arc<dyn Store>,
    /// Set for the SQL stores, whose writer groups commits.
    sql: Option<SqlStore>,
    /// The database URL of a SQL store, to open a second handle on it.
    url: Option<String>,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<pg::TestDatabase>,
}

impl Backend {
    fn memory() -> Backend {
        Backend {
            store: Arc::new(MemoryStore::new()),
            sql: None,
            url: None,
            _dir: None,
            postgres: None,
        }
    }

    async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite:{}", dir.path().join("corral.db").display());
        let store = SqlStore::connect(&url).await.expect("open SQLite store");
        Backend {
            store: Arc::new(store.clone()),
            sql: Some(store),
            url: Some(url),
            _dir: Some(dir),
            postgres: None,
        }
    }

    async fn postgres() -> Option<Backend> {
        let db = pg::TestDatabase::create().await?;
        let store = SqlStore::connect(&db.url)
            .await
            .expect("open PostgreSQL store");
        Some(Backend {
            store: Arc::new(store.clone()),
            sql: Some(store),
            url: Some(db.url.clone()),
            _dir: None,
            postgres: Some(db),
        })
    }

    /// Another handle on the same data, as a second server would have: a new
    /// connection to the same database, or for the in-memory store, a clone.
    async fn second_handle(&self) -> (Arc<dyn Store>, Option<SqlStore>) {
        match &self.url {
            Some(url) => {
                let store = SqlStore::connect(url).await.expect("open a second handle");
                (Arc::new(store.clone()), Some(store))
            }
            None => (self.store.clone(), None),
        }
    }

    async fn finish(self) {
        if let Some(sql) = &self.sql {
            sql.close().await;
        }
        drop(self.store);
        if let Some(db) = self.postgres {
            db.drop_database().await;
        }
    }
}

mod pg {
    //! A fresh PostgreSQL database per test, so tests run in parallel.

    use sqlx::Connection;

    pub struct TestDatabase {
        server: String,
        name: String,
        pub url: String,
    }

    impl TestDatabase {
        /// `None` when the PostgreSQL tests are skipped on purpose.
        pub async fn create() -> Option<TestDatabase> {
            let server = match std::env::var("CORRAL_TEST_POSTGRES_URL") {
                Ok(url) => url,
                Err(_) if std::env::var("CORRAL_TEST_POSTGRES").as_deref() == Ok("skip") => {
                    return None;
                }
                Err(_) => panic!(
                    "CORRAL_TEST_POSTGRES_URL is not set: run the tests with scripts/test \
                     (which starts PostgreSQL), set it to a server such as \
                     postgres://postgres@127.0.0.1:5432/postgres, or set \
                     CORRAL_TEST_POSTGRES=skip to skip the PostgreSQL tests explicitly"
                ),
            };
            let name = format!("corral_test_{:016x}", rand_u64());
            let mut conn = sqlx::PgConnection::connect(&server)
                .await
                .unwrap_or_else(|e| panic!("connect to {server}: {e}"));
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("create database {name}: {e}"));
            let _ = conn.close().await;
            let url = with_database(&server, &name);
            Some(TestDatabase { server, name, url })
        }

        pub async fn drop_database(self) {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&self.server).await {
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        }
    }

    /// The server URL with its database path replaced by `name`.
    fn with_database(server: &str, name: &str) -> String {
        let (base, query) = match server.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (server, None),
        };
        let authority_end = base
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| base[start..].find('/').map(|i| start + i))
            .unwrap_or(base.len());
        let mut url = format!("{}/{}", &base[..authority_end], name);
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        url
    }

    /// Unique enough for database names: the clock, the process and a counter, mixed.
    fn rand_u64() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.finish()
    }
}

/// Instantiates every test for every backend.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let backend = super::Backend::memory();
                    super::$test(&backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let backend = super::Backend::sqlite().await;
                    super::$test(&backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(backend) = super::Backend::postgres().await else {
                        return;
                    };
                    super::$test(&backend).await;
                    backend.finish().await;
                }
            )*
        }
    };
}

conformance!(
    lrps_are_created_read_and_listed_by_domain,
    instances_are_listed_by_lrp_cell_and_state,
    tasks_are_listed_by_state_domain_and_cell_in_creation_order,
    updates_compare_and_set_the_generation,
    creating_an_existing_row_fails,
    updating_or_deleting_a_missing_row_fails,
    deletes_need_the_exact_generation,
    later_mutations_see_earlier_ones_in_the_same_commit,
    a_failed_commit_writes_nothing,
    racing_updates_from_one_generation_have_one_winner,
    concurrent_independent_commits_all_succeed,
    failed_commits_do_not_disturb_their_group,
    two_handles_on_one_database_stay_consistent,
    events_record_every_change_in_order,
    events_page_from_a_cursor,
    pruning_keeps_the_newest_events,
    domains_are_upserted,
    a_lock_is_held_until_its_ttl_passes,
    renewal_keeps_the_fence_and_replaces_the_value,
    release_frees_only_the_owners_lock,
    locks_are_listed_by_prefix_skipping_expired_ones,
    expiry_deletes_and_returns_expired_locks,
    presences_emit_events_and_locks_do_not,
    a_stale_lock_holder_is_fenced,
    fence_tokens_never_repeat,
);

// --- SQLite only -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite:{}", dir.path().join("nested-name.db").display());
    let lease;
    {
        let store = SqlStore::connect(&url).await.expect("open");
        store
            .commit(Commit::new(
                t(1),
                vec![
                    put_lrp(lrp("web", "d1"), Expect::Absent),
                    put_task(task("t1", "d1", 1), Expect::Absent),
                ],
            ))
            .await
            .expect("write");
        lease = store
            .acquire(lock("leader", "a", LockKind::Lock, "", 1000, 0))
            .await
            .expect("lock");
        store.close().await;
    }
    let store = SqlStore::connect(&url).await.expect("reopen");
    assert_eq!(
        store
            .get_lrp(&name("web"))
            .await
            .expect("get")
            .map(|l| l.generation),
        Some(1)
    );
    assert!(store.get_task(&name("t1")).await.expect("get").is_some());
    assert_eq!(store.event_bounds().await.expect("bounds"), Some((1, 2)));
    let next = store
        .acquire(lock("other", "b", LockKind::Lock, "", 1000, 0))
        .await
        .expect("lock");
    assert!(next.fence > lease.fence, "the fence counter survives too");
    let committed = store
        .commit(Commit::new(
            t(2),
            vec![put_task(task("t2", "d1", 2), Expect::Absent)],
        ))
        .await
        .expect("write");
    assert_eq!(committed.events[0].seq, 3);
    store.close().await;
}
