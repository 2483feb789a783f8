//! The cell protocol's calls: heartbeats, assignments and reports.
//!
//! Cells (and processes that simulate many of them) are clients of the same API as the
//! CLI and send the same bearer token. Every call names cells by id, so one request can
//! speak for many cells: see `api::cell` for the protocol itself.

use api::{AssignmentsRequest, Heartbeat, HeartbeatReply, Reports, ReportsReply, WorkBatch};
use reqwest::Method;

use crate::{Client, ClientError};

impl Client {
    /// `POST /v1/cells/heartbeat`: renews the presence of every cell listed, and says
    /// how long a presence lives and how often to send the next heartbeat.
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<HeartbeatReply, ClientError> {
        self.call(Method::POST, &["cells", "heartbeat"], &[], Some(heartbeat))
            .await
    }

    /// `POST /v1/cells/assignments`: everything currently assigned to these cells, as
    /// start work, for a cell to reconcile what it runs against.
    pub async fn assignments(
        &self,
        request: &AssignmentsRequest,
    ) -> Result<WorkBatch, ClientError> {
        self.call(Method::POST, &["cells", "assignments"], &[], Some(request))
            .await
    }

    /// `POST /v1/cells/reports`: what happened on cells, applied in order; the reply
    /// has one result per report, in the same order.
    pub async fn report(&self, reports: &Reports) -> Result<ReportsReply, ClientError> {
        self.call(Method::POST, &["cells", "reports"], &[], Some(reports))
            .await
    }
}
