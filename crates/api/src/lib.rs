//! The wire types of Corral's HTTP API (`/v1`) and their conversion into model types.
//!
//! Requests are parsed strictly (unknown fields are refused) and then validated into
//! model types exactly once, here; errors name the field. Responses are model types
//! serialized as they are, wrapped in a list or error envelope.
//!
//! This crate knows the shape of the API, not how it is served or called: no HTTP, no
//! IO.

#![forbid(unsafe_code)]

mod auth;
mod cell;
mod error;
mod event;
pub mod exec;
mod logs;
mod lrp;
mod task;

pub use auth::{bearer_token, same_token};
pub use cell::{
    AssignmentsRequest, CellUsage, ContainerUsage, Heartbeat, HeartbeatReply, Report, ReportResult,
    Reports, ReportsReply, WorkBatch, WorkItem, Workload, task_container_id,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::EventMessage;
pub use logs::{LogEntry, LogSource, LogTail, MAX_LOG_TAIL, format_millis};
pub use lrp::{InstanceUsage, LrpCreate, LrpPatch, LrpStatus, Pulling, ResourcesInput};
pub use task::{DomainUpsert, TaskCreate};

use serde::{Deserialize, Serialize};

/// The domain work lands in when the request names none.
pub const DEFAULT_DOMAIN: &str = "default";
/// The rootfs work gets when the request names none: the cell's own root, read-only.
pub const DEFAULT_ROOTFS: &str = "preloaded:host";
/// Largest request body the server accepts. Bigger than any valid LRP (routes 128 KB,
/// annotation 10 KB, a bounded action tree) so the field limits, not this, report.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A list response. `items` is complete; the envelope leaves room for paging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
}

/// The action a create request gives, or the image's own command when it gives none
/// and its rootfs is an image; without either there is nothing to run.
fn default_action(
    action: Option<model::Action>,
    rootfs: &model::Rootfs,
) -> Result<model::Action, model::ValidationError> {
    match action {
        Some(action) => Ok(action),
        None if !matches!(rootfs, model::Rootfs::Preloaded(_)) => Ok(model::Action::run_image()),
        None => Err(model::ValidationError::new(
            "action",
            format!("is required: {rootfs} has no command of its own (a docker:// image does)"),
        )),
    }
}
