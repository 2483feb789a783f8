//! The control plane stepped by hand: the same API, scheduler, converger and expiry
//! sweep that a running server uses, without their timers, sockets or threads, so a
//! deterministic simulation can drive them tick by tick with a fake clock.
//!
//! Nothing here is a separate implementation: requests go through the real router,
//! placements through the real scheduler (its work is collected instead of pushed to
//! cells over HTTP), corrections through the real converger.

use std::sync::Arc;

use api::WorkItem;
use store::{Fence, LockKind, LockRequest, Store, StoreError};

use crate::scheduler::{Outbox, Scheduler};
use crate::{AppState, Clock, Timings, converger, leader, router};

/// A control plane whose leader's loops are stepped by the caller.
pub struct SteppedControlPlane {
    state: AppState,
    fence: Fence,
    scheduler: Scheduler,
}

impl std::fmt::Debug for SteppedControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SteppedControlPlane")
            .field("fence", &self.fence)
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl SteppedControlPlane {
    /// Takes the leader lock in `store` and loads the scheduler's view. Container ids
    /// come from `ids`, so a simulation can make them deterministic.
    pub async fn lead(
        store: Arc<dyn Store>,
        token: String,
        clock: Arc<dyn Clock>,
        timings: Timings,
        ids: Box<dyn FnMut() -> String + Send>,
    ) -> Result<SteppedControlPlane, StoreError> {
        let mut state = AppState::new(store, token, clock);
        state.timings = Arc::new(timings);
        let lease = state
            .store
            .acquire(LockRequest {
                key: leader::LOCK.to_owned(),
                owner: "stepped".to_owned(),
                kind: LockKind::Lock,
                value: String::new(),
                // The simulation's clock only moves when it says so: the lease must not
                // lapse between steps.
                ttl_ms: u64::MAX / 4,
                now: state.now(),
            })
            .await?;
        let fence = lease.fence();
        let scheduler = Scheduler::load(
            state.clone(),
            fence.clone(),
            Outbox::Collect(Vec::new()),
            ids,
        )
        .await?;
        Ok(SteppedControlPlane {
            state,
            fence,
            scheduler,
        })
    }

    /// The HTTP API over the same store and clock, for users' and cells' requests.
    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }

    /// Follows the event log and places everything waiting; returns the work that a
    /// running server would push to the cells.
    pub async fn schedule(&mut self) -> Result<Vec<WorkItem>, StoreError> {
        self.scheduler.step().await?;
        Ok(self.scheduler.take_work())
    }

    /// One expiry sweep; whether a cell's presence expired (a running server then
    /// converges at once).
    pub async fn expire(&self) -> Result<bool, StoreError> {
        let expired = self.state.store.expire_locks(self.state.now()).await?;
        Ok(expired
            .iter()
            .any(|r| r.key.starts_with(crate::cells::PREFIX)))
    }

    /// One convergence pass.
    pub async fn converge(&self) -> Result<(), StoreError> {
        converger::pass(&self.state, &self.fence).await
    }
}
