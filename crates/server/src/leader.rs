//! Leader election: the one server holding the `leader` lock runs the scheduler, the
//! converger and the expiry sweep; the others serve the API and stand by.
//!
//! The lock has a TTL and is renewed every third of it. Everything the leader writes is
//! fenced with the lock's token, so a leader that stalls past its TTL and wakes up after
//! another server took over cannot change anything: its commits fail, and it stops.

use std::sync::Arc;
use std::time::Duration;

use model::{Domain, Name};
use store::{Commit, Lease, LockKind, LockRequest, Mutation, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::{AppState, converger, scheduler};

/// The key of the leader lock.
pub(crate) const LOCK: &str = "leader";

/// Competes for leadership until the task is aborted.
pub(crate) async fn run(state: AppState, owner: String) {
    let renewal = state.timings.leader_renewal();
    loop {
        match acquire(&state, &owner).await {
            Ok(lease) => {
                tracing::info!(owner = %owner, fence = lease.fence, "this server leads: scheduling and converging");
                lead(&state, &owner, lease).await;
            }
            Err(StoreError::LockHeld { owner: holder, .. }) => {
                tracing::debug!(leader = %holder, "another server leads");
            }
            Err(e) => tracing::warn!(error = %e, "could not compete for leadership"),
        }
        tokio::time::sleep(renewal).await;
    }
}

async fn acquire(state: &AppState, owner: &str) -> Result<Lease, StoreError> {
    state
        .store
        .acquire(LockRequest {
            key: LOCK.to_owned(),
            owner: owner.to_owned(),
            kind: LockKind::Lock,
            value: String::new(),
            ttl_ms: state.timings.leader_ttl_ms,
            now: state.now(),
        })
        .await
}

/// Runs the leader's loops while the lease lasts. Returns when a renewal fails, or
/// when one of the loops stops (the store failed): the caller competes again, and a
/// renewed lease starts them afresh from the store.
async fn lead(state: &AppState, owner: &str, lease: Lease) {
    let fence = lease.fence();
    let mut loops = JoinSet::new();
    let trigger = Arc::new(Notify::new());
    if let Err(e) = keep_default_domain_fresh(state, &lease).await {
        tracing::warn!(error = %e, "could not declare the default domain fresh");
    }
    loops.spawn(named(
        "scheduler",
        scheduler::run(state.clone(), fence.clone()),
    ));
    loops.spawn(named(
        "converger",
        converger::run(state.clone(), fence.clone(), trigger.clone()),
    ));
    loops.spawn(named("expiry", converger::expire(state.clone(), trigger)));
    let renewal = state.timings.leader_renewal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(renewal) => {
                match acquire(state, owner).await {
                    Ok(renewed) if renewed.fence == lease.fence => {}
                    Ok(_) => {
                        tracing::warn!("the leader lock was lost and taken again; restarting the leader's loops");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lost leadership");
                        break;
                    }
                }
            }
            Some(ended) = loops.join_next() => {
                match ended {
                    Ok((name, Err(e))) => tracing::warn!(name, error = %e, "a leader loop stopped"),
                    Ok((name, Ok(()))) => tracing::warn!(name, "a leader loop ended"),
                    Err(e) => tracing::warn!(error = %e, "a leader loop panicked"),
                }
                break;
            }
        }
    }
    loops.abort_all();
    while loops.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn named<F>(name: &'static str, f: F) -> (&'static str, Result<(), StoreError>)
where
    F: std::future::Future<Output = Result<(), StoreError>>,
{
    (name, f.await)
}

/// The default domain belongs to Corral itself, so it never goes stale: extra and
/// orphaned instances in it are always cleaned up.
async fn keep_default_domain_fresh(state: &AppState, lease: &Lease) -> Result<(), StoreError> {
    let name =
        Name::parse("domain", api::DEFAULT_DOMAIN).expect("the default domain is a valid name");
    let domains = state.store.list_domains().await?;
    if domains
        .iter()
        .any(|d| d.name == name && d.expires_at.is_none())
    {
        return Ok(());
    }
    let commit = Commit::new(
        state.now(),
        vec![Mutation::PutDomain {
            domain: Domain {
                name,
                expires_at: None,
            },
        }],
    )
    .fenced(lease.fence());
    let committed = state.store.commit(commit).await?;
    state.hub.committed(&committed);
    Ok(())
}
